"""One part-2 cell on more runs (issue 15, item 4): the stored runs of each seed pooled with
new runs of the same cell (``bench_concept.py --part synth --synth-first-run F
--synth-streams ... --peer-params-from`` the stored .json: runs F, F + 1, ... of the same
generators, the peers at the stored run's tuned values), per seed and over the seeds.

Ours is the default mixture grid throughout: on the stored runs its delays and null alarms
are read from ``--ours-from`` (``concept_synth_ours.py``'s rerun of ours on the stored draws,
its ``default`` grid; the stored .json has the grid of its day), on the new runs from their
.json.  The peers' delays on the stored runs are the stored .json's, on the new runs the new
.json's (each peer at the same parameter in both, checked).  Each run's reference rate is
checked against the stored one where both exist, and the new runs must start where the
stored ones (or the previous new file) end.

Band (the band rule of part 1, ``concept_report.band_rule``): each peer at its (stored)
parameter on ``--band-streams`` (8) independent Bernoulli null streams at the seed's
reference rate pooled over ALL its runs (stored + new; ``concept_band.null_chunks``, the same
draws for every peer), its own reset after each alarm; in band only if the pooled ARL0 (all
events over all alarms) is within ±30 % of the target at horizon L = 40 targets *and* at 4L.
(``--band-streams 0``: the rule before, one stream of ``--recheck-events`` events, rng
``[seed, 16]``, in band if within ±30 %.)  The stored run's own check in brackets.  Pooled
over seeds: in band in every seed.

``--ours-from stored``: ours read from the stored .json itself (a run of
``bench_concept.py --detector sr`` at the default grid, checked on its .md's command line),
e.g. when the "stored" runs are the first chunk of a new protocol, whose peers were tuned by
bisection there and held for the later chunks (``--peer-params-from`` it).  Ratio: median(ours) / median(peer), each over the runs it did not false-alarm in
before the change, 95 % CI paired (the runs resampled jointly, ``paired_ci``).

    PYTHONPATH=$PWD nice -n 15 .venv/bin/python bench/concept_synth_more.py --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from concept_report import NAMES, _ci, band_rule, early_arl, fmt, median, ratio  # noqa: E402
from concept_synth_pool import _in_band, paired_ci  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = ("warm", "ref", "pre", "after", "n_values", "null_factor")


def pool_seed(seed: int, stored: dict[str, Any], ours: dict[str, Any],
              more: list[dict[str, Any]], mode: str, stream: str,
              target: int) -> dict[str, Any]:
    """The seed's runs in order: p_ref, every detector's delays, ours' null alarms and
    events, the peers' parameters and stored ARL0s; ``first``: each part's first run."""
    t = str(target)
    row, st = stored["synth"]["modes"][mode][stream], stored["synth"]["settings"][mode]
    cell = row["targets"][t]
    n0 = len(row["p_ref"])
    if len(ours["delays"]["default"]) != n0 or [round(p, 4) for p in ours["p_ref"]] != [
            round(p, 4) for p in row["p_ref"]]:
        raise SystemExit(f"seed {seed}: --ours-from is not ours on the stored runs")
    out: dict[str, Any] = {
        "p_ref": list(row["p_ref"]), "first": [0],
        "delays": {"ours": list(ours["delays"]["default"]),
                   **{k: list(cell["delays"][k]) for k in NAMES}},
        "alarms": int(ours["alarms"]["default"]), "null_events": int(ours["null_events"]),
        "values": {k: cell["peers"][k]["value"] for k in NAMES},
        "stored_arl0": {k: cell["peers"][k]["arl0"] for k in NAMES}, "settings": st}
    for res in sorted(more, key=lambda r: r["synth"]["settings"][mode]["first_run"]):
        ms = res["synth"]["settings"][mode]
        bad = [k for k in SETTINGS if ms[k] != st[k]]
        if bad or ms["first_run"] != len(out["p_ref"]):
            raise SystemExit(f"seed {seed}: new runs from {ms['first_run']} with "
                             f"{', '.join(bad) or 'a gap'}: not the stored cell's next runs")
        r, c = res["synth"]["modes"][mode][stream], res["synth"]["modes"][mode][stream][
            "targets"][t]
        if any(c["peers"][k]["value"] != out["values"][k] for k in NAMES):
            raise SystemExit(f"seed {seed}: the new runs' peers are not at the stored values")
        out["first"].append(ms["first_run"])
        out["p_ref"] += r["p_ref"]
        for k in out["delays"]:
            out["delays"][k] += c["delays"][k]
        out["alarms"] += int(c["ours"]["alarms"])
        out["null_events"] += int(c["ours"]["events_per_run"]) * len(r["p_ref"])
    return out


def stored_ours(stored: dict[str, Any], md: str, mode: str, stream: str,
                target: int) -> dict[str, Any]:
    """``--ours-from stored``: ours on the stored runs, from the stored .json itself, in
    ``concept_synth_ours.py``'s shape; ``md``, its .md, must show the default grid ran."""
    from detectors.concept_sr import SR_SHIFTS, SR_WEIGHTS
    grid = (f"--detector sr --sr-shifts {' '.join(map(str, SR_SHIFTS))} --sr-weights "
            f"{' '.join(map(str, SR_WEIGHTS))}")
    if grid not in md:
        raise SystemExit(f"--ours-from stored: the stored run's .md does not show `{grid}`; "
                         "rerun ours on it with concept_synth_ours.py")
    row = stored["synth"]["modes"][mode][stream]
    cell = row["targets"][str(target)]
    return {"delays": {"default": list(cell["delays"]["ours"])},
            "alarms": {"default": int(cell["ours"]["alarms"])},
            "null_events": int(cell["ours"]["events_per_run"]) * len(row["p_ref"]),
            "p_ref": list(row["p_ref"])}


def band_check(seed: int, p: float, values: dict[str, float], target: int, streams: int,
               cache: dict[str, Any]) -> dict[str, Any]:
    """The band rule's measurements: each peer at its value on ``streams`` Bernoulli(p)
    null streams of 4L events (L = 40 targets), pooled ARL0 at L and 4L, and the verdict;
    ``cache`` (key: seed, rate, target, peer, value, streams) keeps what was measured."""
    from bench_concept import _peers
    from concept_band import NULL_FACTOR, peer_alarms, summarise
    peers = {pe.name: pe for pe in _peers()}
    L = int(NULL_FACTOR * target)
    out = {}
    for n in NAMES:
        key = f"{seed}|{p:.6f}|{target}|{n}|{values[n]:.10g}|{streams}"
        if key not in cache:
            t0 = time.perf_counter()
            alarms = [peer_alarms(functools.partial(peers[n].make, values[n]), p, k, 4 * L,
                                  seed) for k in range(streams)]
            h = summarise(alarms, L, target, 4)
            cache[key] = {"horizons": {m: {"horizon": x["horizon"], "pooled": x["pooled"],
                                           "alarms": x["alarms"], "never": x["never"]}
                                       for m, x in h.items()},
                          "in_band": band_rule({"horizons": h}, target),
                          "wall_s": time.perf_counter() - t0}
            print(f"  band seed {seed} {target} {n}: " + ", ".join(
                f"{m}L {fmt(x['pooled'])}" for m, x in h.items())
                + f" ({cache[key]['wall_s']:.0f} s)", file=sys.stderr, flush=True)
        out[n] = cache[key]
    return out


def recheck(seed: int, p: float, values: dict[str, float], events: int) -> dict[str, float]:
    """Each peer's null ARL0 at its value on ``events`` Bernoulli(p) events."""
    from bench_concept import _peers, arl, count_alarms, null_stream
    peers = {pe.name: pe for pe in _peers()}
    s = null_stream(np.random.default_rng([seed, 16]), p, events)
    out = {}
    for n in NAMES:
        out[n] = arl(events, len(count_alarms(functools.partial(peers[n].make, values[n]), s)))
    return out


def row_cells(d: dict[str, list[int]], ours_arl: float, arls: dict[str, float],
              stored: dict[str, list[float]] | None, in_band: list[str], target: int,
              pre: int, boot: int,
              arls_4l: dict[str, float] | None = None) -> tuple[str, dict[str, Any]]:
    """One table row's cells after its label, and its figures."""
    med = {k: median(v) for k, v in d.items()}
    alive = [n for n in in_band if not math.isnan(med[n])]
    best = min(alive, key=lambda n: med[n]) if alive else None
    fig: dict[str, Any] = {"runs": len(d["ours"]), "median": med, "ours_arl0": ours_arl,
                           "peer_arl0": arls, "in_band": in_band, "best": best,
                           "survivors": {k: sum(1 for x in v if x != -2) for k, v in d.items()}}
    for n in sorted({*(["HDDM_W", "ADWIN"]), *([best] if best else [])}):
        fig.setdefault("ratio", {})[n] = (ratio(med["ours"], med[n]),
                                         paired_ci(d["ours"], d[n], boot))
        # the same runs for both: those neither false-alarmed in before the change (each
        # detector's own survivors differ where the pre-change stream is not the null)
        keep = [i for i, (x, y) in enumerate(zip(d["ours"], d[n], strict=True))
                if x != -2 and y != -2]
        a, b = [d["ours"][i] for i in keep], [d[n][i] for i in keep]
        fig.setdefault("joint", {})[n] = (len(keep), ratio(median(a), median(b)),
                                         paired_ci(a, b, boot))

    def det(k: str) -> str:
        v = d[k]
        a = ours_arl if k == "ours" else arls[k]
        ok = (math.isnan(a) or _in_band(a, target)) if k == "ours" else k in in_band
        extra = "" if stored is None or k == "ours" else " [" + " / ".join(
            fmt(x) for x in stored[k]) + "]"
        shown = "" if math.isnan(a) else f"; {fmt(a)}"  # the pooled row: per seed only
        if shown and arls_4l is not None and k != "ours":
            shown += f" / {fmt(arls_4l[k])}"  # the band rule's L / 4L
        return f"{fmt(med[k])} ({v.count(-2)}/{v.count(-1)}){shown}{'' if ok else ' ✗'}{extra}"


    def rat(n: str | None) -> str:
        if n is None:
            return "-"
        r, (lo, hi) = fig["ratio"][n]
        return f"{r:.2f} ({_ci(lo, hi)})"

    def both(n: str | None) -> str:
        if n is None:
            return "-"
        k, r, (lo, hi) = fig["joint"][n]
        return f"{r:.2f} ({_ci(lo, hi)}; {k} runs)"

    met = "-" if best is None else ("yes" if fig["ratio"][best][0] <= 1.15 else "NO")
    cells = (f"{len(d['ours'])} | {fig['survivors']['ours']} | {det('ours')} | "
             f"{fmt(early_arl(d['ours'], pre))} | " + " | ".join(det(n) for n in NAMES)
             + f" | {best or 'none'} | {rat(best)} | {rat('HDDM_W')} | {rat('ADWIN')} | {met} "
             f"| {both(best)} |")
    return cells, fig


def report(args: argparse.Namespace, seeds: dict[int, dict[str, Any]],
           wall: float) -> tuple[list[str], dict[str, Any]]:
    t, pre = args.target, next(iter(seeds.values()))["settings"]["pre"]
    st = next(iter(seeds.values()))["settings"]
    lines = [f"# The {args.mode} tree's {args.stream} cell at ARL0 {t:,} on more runs", "",
             "`PYTHONPATH=$PWD .venv/bin/python bench/concept_synth_more.py "
             + " ".join(shlex.quote(a) for a in sys.argv[1:]) + "`. Stored runs: "
             + (f"`{Path(args.stored_pattern).name}` (peers and ours, default grid)"
                if args.ours_from == "stored" else
                f"`{Path(args.stored_pattern).name}` (peers) and `{Path(args.ours_from).name}` "
                "(ours, default grid, on the same draws)") + "; new runs: `"
             + Path(args.more_pattern).name + "` (`bench_concept.py --part synth "
             "--synth-first-run F --synth-streams Hyperplane --peer-params-from` the stored "
             f".json; command lines in their .md). Settings as stored: warm {st['warm']:,}, "
             f"reference {st['ref']:,}, {pre:,} events before the change, {st['after']:,} "
             f"after; n_values {st['n_values']:,}; the peers at the stored runs' tuned "
             "values (tuned per seed on the stored runs' pooled reference rate, no new "
             "bisection).", "",
             "Per detector: median delay over the runs without a false alarm before the "
             "change (FA/censored); then its null ARL0: ours pooled over its runs' null "
             "streams; a peer's measured again at the seed's reference rate pooled over all "
             "its runs, " + (f"pooled over {args.band_streams} independent null streams at "
                             "L = 40 targets / 4L (the band rule: in band only if both are "
                             "within ±30 %)" if args.band_streams else
                             f"on {args.recheck_events:,} Bernoulli events")
             + " [the stored run's own check; pooled row: per seed, at L]. ✗: out of band. "
             "Best in-band peer: by the recheck (pooled: in band in every seed). Ratios: "
             f"ours / peer, 95 % CI paired over runs ({args.boot} resamples). *Pre-change "
             "ARL0*: ours' false alarms in the pre-change window read as a constant hazard. "
             "*The same runs*: ours / the best in-band peer, both medians over the runs "
             "neither false-alarmed in before the change (where the pre-change stream is not "
             "the null, e.g. the online tree's, each detector's own survivors are other runs), "
             "95 % CI paired over those runs.",
             "",
             "| seed | runs | ours survive | ours: delay; ARL0 | ours pre-change ARL0 | "
             + " | ".join(NAMES) + " | best in-band peer | ours / it | ours / HDDM_W | "
             "ours / ADWIN | ≤ 1.15 | ours / it, the same runs |", "|---|---|---|---|---|"
             + "---|" * len(NAMES) + "---|---|---|---|---|---|"]
    out: dict[str, Any] = {"seeds": {}, "pooled": {}}
    for s, v in seeds.items():
        band = v["in_band"]
        n0 = v["first"][1] if len(v["first"]) > 1 else len(v["p_ref"])
        parts = [("all", slice(None))] + ([(f"stored 0–{n0 - 1}", slice(0, n0)),
                                           (f"new {n0}–{len(v['p_ref']) - 1}",
                                            slice(n0, None))] if len(v["first"]) > 1 else [])
        for label, sl in parts:
            d = {k: x[sl] for k, x in v["delays"].items()}
            a = (v["null_events"] / v["alarms"] if v["alarms"] else math.inf) \
                if label == "all" else math.nan
            cells, fig = row_cells(d, a, v["recheck"], {k: [v["stored_arl0"][k]] for k in NAMES}
                                   if label == "all" else None, band, t, pre, args.boot,
                                   v.get("recheck_4l"))
            name = f"**{s}**" if label == "all" else f"{s}: {label}"
            lines.append(f"| {name} | {cells}")
            if label == "all":
                out["seeds"][str(s)] = {**fig, "p_ref_pooled": float(np.mean(v["p_ref"])),
                                        "recheck_arl0": v["recheck"],
                                        "band": v.get("band"),
                                        "stored_arl0": v["stored_arl0"],
                                        "values": v["values"], "first": v["first"],
                                        "delays": v["delays"], "p_ref": v["p_ref"],
                                        "ours_alarms": v["alarms"],
                                        "ours_null_events": v["null_events"]}
    if len(seeds) > 1:
        band = [n for n in NAMES if all(n in v["in_band"] for v in seeds.values())]
        d = {k: [x for v in seeds.values() for x in v["delays"][k]] for k in ["ours", *NAMES]}
        al = sum(v["alarms"] for v in seeds.values())
        a = sum(v["null_events"] for v in seeds.values()) / al if al else math.inf
        arls = {n: math.nan for n in NAMES}
        cells, fig = row_cells(d, a, arls, {n: [v["recheck"][n] for v in seeds.values()]
                                             for n in NAMES}, band, t, pre, args.boot)
        lines.append(f"| **{' + '.join(map(str, seeds))}** | {cells}")
        out["pooled"] = fig
    lines += ["", "Rows *stored* / *new*: the seed's stored and new runs apart (ours' ARL0 "
              "pooled only). Pooled row: a peer's ARL0 per seed in brackets (the rechecks).",
              "", "Reference error rate pooled per seed (stored runs / all): " + "; ".join(
                  f"{s}: {np.mean(v['p_ref'][:v['first'][1] if len(v['first']) > 1 else None]):.4f}"
                  f" / {np.mean(v['p_ref']):.4f}" for s, v in seeds.items())
              + ". Peers' values: " + "; ".join(
                  f"seed {s}: " + ", ".join(f"{n} {v['values'][n]:.3g}" for n in NAMES)
                  for s, v in seeds.items()) + ".", "", f"Wall time {wall:.0f} s.", ""]
    return lines, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--mode", choices=("frozen", "online"), default="frozen")
    ap.add_argument("--stream", default="Hyperplane (new plane)")
    ap.add_argument("--target", type=int, default=2_000)
    ap.add_argument("--stored-pattern",
                    default=str(RESULTS / "concept-sr-synth-2000-seed{seed}.json"))
    ap.add_argument("--ours-from",
                    default=str(RESULTS / "concept-sr-grid20-synth-hyperplane-2000.json"),
                    help="concept_synth_ours.py's .json: ours (default grid) on the stored runs; "
                         "'stored': ours as the stored .json has it (default grid)")
    ap.add_argument("--more-pattern",
                    default=str(RESULTS / "concept-sr-synth-2000-hyperplane-seed{seed}-runs*.json"),
                    help="the new runs' .json files per seed (a glob; {seed} replaced)")
    ap.add_argument("--recheck-events", type=int, default=2_000_000,
                    help="with --band-streams 0: the one null stream of the rule before")
    ap.add_argument("--band-streams", type=int, default=8,
                    help="the band rule's independent null streams (L = 40 targets and 4L)")
    ap.add_argument("--band-cache", type=Path, default=None,
                    help="a .json keeping the band measurements between runs")
    ap.add_argument("--boot", type=int, default=2_000)
    ap.add_argument("--out", type=Path,
                    default=RESULTS / "concept-sr-synth-2000-hyperplane-more.md")
    args = ap.parse_args()
    t0 = time.perf_counter()
    ours_all = (None if args.ours_from == "stored"
                else json.loads(Path(args.ours_from).read_text())["seeds"])
    cache = (json.loads(args.band_cache.read_text())
             if args.band_cache is not None and args.band_cache.exists() else {})
    seeds: dict[int, dict[str, Any]] = {}
    for s in args.seeds:
        sp = Path(args.stored_pattern.format(seed=s))
        stored = json.loads(sp.read_text())
        pat = Path(args.more_pattern.format(seed=s))
        more = [json.loads(p.read_text()) for p in sorted(pat.parent.glob(pat.name))]
        if ours_all is None:
            ours = stored_ours(stored, sp.with_suffix(".md").read_text(), args.mode,
                               args.stream, args.target)
        else:
            ours = ours_all[str(s)]
            ours = ours.get(str(args.target), ours)  # older files: one target, no key
        v = pool_seed(s, stored, ours, more, args.mode, args.stream, args.target)
        p = float(np.mean(v["p_ref"]))
        if args.band_streams:
            v["band"] = band_check(s, p, v["values"], args.target, args.band_streams, cache)
            if args.band_cache is not None:
                args.band_cache.write_text(json.dumps(cache, indent=1, default=float))
            v["recheck"] = {n: float(b["horizons"]["1"]["pooled"]) for n, b in v["band"].items()}
            v["recheck_4l"] = {n: float(b["horizons"]["4"]["pooled"])
                               for n, b in v["band"].items()}
            v["in_band"] = [n for n in NAMES if v["band"][n]["in_band"]]
        else:
            v["recheck"] = recheck(s, p, v["values"], args.recheck_events)
            v["in_band"] = [n for n in NAMES if _in_band(v["recheck"][n], args.target)]
        seeds[s] = v
        print(f"seed {s}: {len(v['p_ref'])} runs, recheck " + ", ".join(
            f"{k} {a:.0f}" for k, a in v["recheck"].items()), file=sys.stderr, flush=True)
    lines, out = report(args, seeds, time.perf_counter() - t0)
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(
        {"mode": args.mode, "stream": args.stream, "target": args.target, **out},
        default=float))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
