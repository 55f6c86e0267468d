"""Is a peer's ARL0 a number?  The null run length of each peer of part 1 at its stored tuned
parameter, on K independent Bernoulli null streams, at the horizons L, 4L and 16L (L = the
band check's length in ``bench_concept.py``: ``--null-factor`` 40 × the target), and the
band rule the part-1 verdict tables apply with these measurements (issue 15, item 4).

Why: ``bench_concept.py`` put a peer "in band" when one null stream of L events gave it an
events-per-alarm figure within ±30 % of the target.  A detector whose run-length
distribution has mass at "never" (DDM resets after an alarm; a cycle whose p_min + s_min
settles low may never alarm again on a stationary stream) has no ARL0: events / alarms grows
with the horizon, and "in band at L" is an accident of L.

The band rule (stated before the measurements were made, applied the same way to every peer
in every cell): **a peer is in band in a cell if its pooled ARL0 estimate, all events over
all alarms of K = 8 independent null streams (its own reset after each alarm), is within
±30 % of the target both at horizon L and at horizon 4L.**  Two horizons because an ARL0
that exists does not move with the horizon (a renewal rate's estimate at 4L differs from the
one at L by sampling noise only: at 8 streams × L = 320 targets' worth of events, ~±11 %),
while one with mass at "never" grows with it; pooled over streams because that is the
renewal estimate the single-stream check made.  16L is measured and reported where time
allowed, not used by the rule (it must be the same for every peer and cell).

A cycle "never ended" at a horizon when the stream's open cycle (events since its last
alarm, or since the start) is longer than 10 × the target: a memoryless detector at ARL0
1.3 × target leaves one that long with probability e^-7.7 ≈ 0.05 %.

Run from the repository root (one CPU-heavy process; the HDDMs are pure Python, ~3.4 µs an
event, the rest ~0.2-0.5 µs)::

    PYTHONPATH=$PWD nice -n 15 .venv/bin/python bench/concept_band.py measure \\
        bench/results/concept-sr20-seed1.json bench/results/concept-sr20-seed2.json \\
        --out bench/results/concept-band.json --mult 16
    PYTHONPATH=$PWD .venv/bin/python bench/concept_band.py table bench/results/concept-band.json

``measure`` appends to ``--out`` (a key already measured to ``--mult`` is skipped), so it can
be stopped and rerun with a larger ``--mult``; ``--only DDM`` / ``--cell 0.1 10000`` order
the work.  ``concept_compare.py --band FILE`` applies the rule to the verdict tables.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from concept_report import (  # noqa: E402
    BAND,
    NAMES,
    band_key,
    band_rule,
    median,
    ratio,
    ratio_ci,
)

NULL_FACTOR = 40  # bench_concept.py --null-factor: the band check's L, in targets
STREAMS = 8
MULTS = (1, 4, 16)
NEVER = 10  # an open cycle longer than this many targets "never ended"
CHUNK = 1 << 20


def horizon_stats(alarms: list[int], horizon: int, target: float) -> dict[str, Any]:
    """One stream's figures at ``horizon``: alarms before it, events / alarms, the open
    cycle (events since the last alarm before it, or since the start), whether that cycle
    "never ended" (longer than NEVER × target) and the longest completed cycle."""
    a = [x for x in alarms if x < horizon]
    last = a[-1] + 1 if a else 0
    cycles = np.diff([-1, *a]) if a else np.array([], dtype=np.int64)
    return {"alarms": len(a), "arl": horizon / len(a) if a else math.inf,
            "open": horizon - last, "never": horizon - last > NEVER * target,
            "longest": int(cycles.max()) if a else 0}


def pooled(streams: list[dict[str, Any]], horizon: int) -> float:
    """All events over all alarms of the streams at one horizon (inf: none alarmed)."""
    n = sum(s["alarms"] for s in streams)
    return len(streams) * horizon / n if n else math.inf


def summarise(alarms: list[list[int]], L: int, target: float, mult: int) -> dict[str, Any]:
    out = {}
    for m in MULTS:
        if m > mult:
            break
        hs = [horizon_stats(a, m * L, target) for a in alarms]
        ests = np.array([s["arl"] for s in hs])
        fin = ests[np.isfinite(ests)]
        n_cycles = sum(s["alarms"] for s in hs) + len(hs)  # completed ones plus the open
        out[str(m)] = {"horizon": m * L, "pooled": pooled(hs, m * L),
                       "median": float(np.median(ests)),
                       "min": float(ests.min()), "max": float(ests.max()),
                       "finite": int(fin.size), "never": sum(s["never"] for s in hs),
                       "never_share_cycles": sum(s["never"] for s in hs) / n_cycles,
                       "open": [s["open"] for s in hs], "alarms": [s["alarms"] for s in hs],
                       "longest": max(s["longest"] for s in hs)}
    return out


def null_chunks(p: float, k: int, n: int, seed: int):  # type: ignore[no-untyped-def]
    """Stream ``k`` at rate ``p`` (the same draws for every peer and target: common random
    numbers), in chunks of Python ints."""
    rng = np.random.default_rng([seed, round(p * 1000), k])
    done = 0
    while done < n:
        m = min(CHUNK, n - done)
        yield (rng.random(m) < p).astype(np.int64).tolist()
        done += m


def peer_alarms(make: Any, p: float, k: int, n: int, seed: int) -> list[int]:
    det = make()
    upd = det.update
    out = []
    i = 0
    for chunk in null_chunks(p, k, n, seed):
        for x in chunk:
            upd(x)
            if det.drift_detected:
                out.append(i)
            i += 1
    return out


def ours_alarms(p: float, target: float, k: int, n: int, seed: int) -> list[int]:
    """Ours as part 1 builds it (``--detector sr``, default grid): a reference of 20,000
    errors at ``p`` (one per stream: its rate error is part of what ours promises),
    calibrated to ``target``; every alarm restarts it, as in ``bench_concept.py``."""
    from detectors.concept_sr import concept_sr
    rng = np.random.default_rng([seed, round(p * 1000), k, 7])
    det = concept_sr((rng.random(20_000) < p).astype(float), target, n_values=4_000_000,
                     seed=seed * 100 + k).fresh()
    out: list[int] = []
    i = 0
    for chunk in null_chunks(p, k, n, seed):
        hits = det.update(np.asarray(chunk, dtype=float))
        out += (hits + i).tolist()
        i += len(chunk)
    return out


def measure(args: argparse.Namespace) -> None:
    from bench_concept import _peers
    peers = {pe.name: pe for pe in _peers()}
    res: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    todo: dict[str, dict[str, Any]] = {}
    for f in args.files:
        for c in json.loads(f.read_text())["errors"]["cells"]:
            if args.cell and (abs(c["p"] - args.cell[0]) > 1e-9 or c["target"] != args.cell[1]):
                continue
            names = [n for n in NAMES if not args.only or n in args.only]
            if args.ours:
                names.append("ours")
            for n in names:
                v = c["peers"][n]["value"] if n != "ours" else 0.0
                e = todo.setdefault(band_key(c["p"], c["target"], n, v),
                                    {"p": c["p"], "target": c["target"], "peer": n,
                                     "value": v, "files": []})
                e["files"].append(f.name)
    for k, e in todo.items():
        if res.get(k, {}).get("mult", 0) >= args.mult:
            continue
        L = int(NULL_FACTOR * e["target"])
        n = args.mult * L
        t0, c0 = time.perf_counter(), time.process_time()
        if e["peer"] == "ours":
            alarms = [ours_alarms(e["p"], e["target"], s, n, args.seed)
                      for s in range(args.streams)]
        else:
            pe = peers[e["peer"]]
            alarms = [peer_alarms(lambda pe=pe, v=e["value"]: pe.make(v), e["p"], s, n,
                                  args.seed) for s in range(args.streams)]
        e.update({"streams": args.streams, "mult": args.mult, "L": L, "seed": args.seed,
                  "horizons": summarise(alarms, L, e["target"], args.mult),
                  "cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - t0})
        res[k] = e
        args.out.write_text(json.dumps(res, indent=1) + "\n")
        h = e["horizons"]
        print(f"[{time.strftime('%H:%M:%S')}] {k}: " + "; ".join(
            f"{m}L pooled {h[m]['pooled']:,.0f} median {h[m]['median']:,.0f} "
            f"never {h[m]['never']}/{args.streams}" for m in h)
            + f" ({e['wall_s']:.0f} s)", file=sys.stderr, flush=True)


def _f(x: float) -> str:
    return "never" if not math.isfinite(x) else f"{x:,.0f}"


def trend(e: dict[str, Any]) -> str:
    """The pooled estimate at the longest measured horizon over the one at L: "converges"
    within 0.8-1.25, "grows" above 2 (no ARL0: events per alarm rise with the horizon),
    else "drifts"."""
    h = e["horizons"]
    last = max(h, key=int)
    if last == "1":
        return "-"
    r = h[last]["pooled"] / h["1"]["pooled"] if math.isfinite(h["1"]["pooled"]) else math.nan
    word = ("grows" if r > 2 else "converges" if 0.8 <= r <= 1.25 else "drifts") \
        if math.isfinite(r) else "never alarms"
    return f"{r:.2f} ({last}L / L): {word}"


def table(res: dict[str, Any]) -> list[str]:
    lines = ["| p | target | detector (value; results files) | horizon | pooled | pooled / "
             "target | median (range) of the streams | streams without an alarm | open "
             "cycles > 10 targets (streams) | share of all cycles never ended | in band "
             "(L and 4L) | trend |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in sorted(res.values(), key=lambda e: (e["p"], e["target"], e["peer"] != "ours",
                                                 e["peer"], e["value"])):
        first = True
        for m, h in e["horizons"].items():
            who = (f"{e['peer']} ({e['value']:.4g}; "
                   f"{', '.join(sorted(set(f.split('-')[-1].split('.')[0] for f in e['files'])))})"
                   if first else "")
            lines.append(
                f"| {e['p']:.2f} | {e['target']:,.0f} | {who} | {m}L = {h['horizon']:,} | "
                f"{_f(h['pooled'])} | {h['pooled'] / e['target']:.2f} | "
                f"{_f(h['median'])} ({_f(h['min'])}–{_f(h['max'])}) | "
                f"{e['streams'] - h['finite']} of {e['streams']} | {h['never']} of "
                f"{e['streams']} | {h['never_share_cycles']:.1%} | "
                + ((("yes" if band_rule(e, e["target"]) else "no") + f" | {trend(e)}")
                   if first else " | ") + " |")
            first = False
    return lines


PROTOCOLS = [("delays", "cold start"), ("delays_warm", "after the warm-up")]


def best(d: dict[str, list[int]], fair: list[str]) -> str | None:
    return min(fair, key=lambda n: median(d[n])) if fair else None


def verdicts(runs: list[tuple[str, dict[str, Any]]], band: dict[str, Any],
             boot: int) -> list[dict[str, Any]]:
    """Per (seed file, cell, drop, protocol): the best peer in band and ours / it, by the
    single null stream of the run (the rule before) and by :func:`band_rule` on the horizon
    measurements; the 95 % CI as ``concept_report.delay_table`` draws it."""
    out = []
    for label, res in runs:
        for ci, c in enumerate(res["errors"]["cells"]):
            old = [n for n in NAMES if abs(c["peers"][n]["arl0"] / c["target"] - 1) <= BAND]
            new = []
            for n in NAMES:
                k = band_key(c["p"], c["target"], n, c["peers"][n]["value"])
                if k not in band:
                    raise SystemExit(f"no horizon measurement of {k} ({label})")
                if band_rule(band[k], c["target"]):
                    new.append(n)
            for key, proto in PROTOCOLS:
                for di, (drop, d) in enumerate(c[key].items()):
                    row: dict[str, Any] = {"run": label, "p": c["p"], "target": c["target"],
                                           "drop": float(drop), "protocol": proto,
                                           "ours": median(d["ours"])}
                    for rule, fair in (("before", old), ("now", new)):
                        name = best(d, fair)
                        r = ratio(row["ours"], median(d[name])) if name else math.nan
                        lo, hi = (ratio_ci(d["ours"], d[name], boot, seed=100 * ci + di)
                                  if name else (math.nan, math.nan))
                        row[rule] = {"peer": name, "median": median(d[name]) if name
                                     else math.nan, "ratio": r, "ci": (lo, hi),
                                     "verdict": "no peer in band" if not name
                                     else "met" if r <= 1.15 else "NOT met"}
                    out.append(row)
    return out


def _side(s: dict[str, Any]) -> str:
    if s["peer"] is None:
        return "none | - | no peer in band"
    lo, hi = s["ci"]
    r = f"**{s['ratio']:.2f}**" if s["ratio"] > 1.15 else f"{s['ratio']:.2f}"
    ci = f"{lo:.2f}–{hi:.2f}" if math.isfinite(hi) else f"{lo:.2f}–∞"
    return f"{s['peer']} {s['median']:.0f} | {r} ({ci}) | {s['verdict']}"


def verdict_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| run | protocol | p | target | drop | ours | best in band before (one "
             "stream of L) | ours / it (95 % CI) | verdict before | best in band now (L and "
             "4L, 8 streams) | ours / it (95 % CI) | verdict now |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        changed = (r["before"]["peer"], r["before"]["verdict"]) != (r["now"]["peer"],
                                                                  r["now"]["verdict"])
        mark = " *" if changed else ""
        lines.append(f"| {r['run']} | {r['protocol']}{mark} | {r['p']:.2f} | "
                     f"{r['target']:,.0f} | {r['drop']:.2f} | {r['ours']:.0f} | "
                     f"{_side(r['before'])} | {_side(r['now'])} |")
    lines.append("")
    for rule in ("before", "now"):
        for _, proto in PROTOCOLS:
            sel = [r for r in rows if r["protocol"] == proto]
            runs = sorted({r["run"] for r in sel})
            bits = []
            for run in runs:
                rr = [r[rule] for r in sel if r["run"] == run]
                fair = [s for s in rr if s["peer"]]
                bits.append(f"{run}: {sum(s['verdict'] == 'met' for s in fair)} of {len(fair)}"
                            f" cells with a peer in band met ({len(rr) - len(fair)} without)")
            lines.append(f"- {proto}, rule {rule}: " + "; ".join(bits))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("files", nargs="+", type=Path, help="bench_concept.py results (.json)")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--mult", type=int, default=4, choices=MULTS)
    m.add_argument("--streams", type=int, default=STREAMS)
    m.add_argument("--seed", type=int, default=20261205)
    m.add_argument("--only", nargs="+", default=None, help="these peers only")
    m.add_argument("--ours", action="store_true", help="ours too")
    m.add_argument("--cell", type=float, nargs=2, default=None, metavar=("P", "TARGET"))
    t = sub.add_parser("table", help="the horizon measurements")
    t.add_argument("file", type=Path)
    v = sub.add_parser("verdicts", help="part 1's verdicts by the rule before and now")
    v.add_argument("band", type=Path, help="the measurements (measure --out)")
    v.add_argument("files", nargs="+", type=Path, help="bench_concept.py results (.json)")
    v.add_argument("--boot", type=int, default=2_000)
    args = ap.parse_args()
    if args.cmd == "measure":
        measure(args)
    elif args.cmd == "table":
        print("\n".join(table(json.loads(args.file.read_text()))))
    else:
        band = json.loads(args.band.read_text())
        runs = [(f.stem, json.loads(f.read_text())) for f in args.files]
        print("\n".join(verdict_lines(verdicts(runs, band, args.boot))))


if __name__ == "__main__":
    main()
