"""Ours only, on part 2's error streams (frozen or online tree), against the peers of an
earlier run (issue 15, item 4): is a grid of the mixture faster on one generator's cell, on
the same draws?

``bench_concept.py --part synth`` runs the Hoeffding trees, tunes every peer and runs them;
this script regenerates one stream's error streams of an earlier run's seeds for one
``--mode`` (``frozen``, the default, or ``online``: test-then-train; the generator seeds are
``seed * 1000 + run``, +500 online, and the tree's settings -- warm-up, reference, pre- and
post-change windows -- are the stored run's, so the draws are the same: each run's reference
error rate is checked against the stored one), calibrates ours per run with each
``--variant`` grid (the default first) at each ``--target`` (several targets share one set of
trees), and reads the peers' delays from the stored ``.json``
(the peers use no random numbers of ours). Each grid's delays are compared with the stored
ones of ours (all equal for the grid the stored run had: the same calibration seeds).
Ours' ARL0: each run's detector on ``events_per_run`` Bernoulli null events at that run's
reference rate (other draws than the stored run's: its generator is not reproducible here),
pooled. Ratios: median over the runs without a false alarm before the change; 95 % CI
paired (the runs resampled jointly, ``concept_synth_pool.paired_ci``).

    PYTHONPATH=$PWD nice -n 15 .venv/bin/python bench/concept_synth_ours.py \\
        --seeds 1 2 3 --variant 'before=0.02,0.08,-0.02,-0.08:0.45,0.45,0.05,0.05'
    ... --mode online --from-pattern 'bench/results/concept-sr-synth-online-seed{seed}.json' \\
        --target 2000 10000 --variant 'before=...'
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from concept_report import NAMES, _ci, delay_of, early_arl, fmt, median, ratio  # noqa: E402
from concept_sr_variant import parse_variant  # noqa: E402
from concept_synth import error_stream, stream_seed, synth_streams  # noqa: E402
from concept_synth_pool import _in_band, paired_ci  # noqa: E402

from detectors.concept_sr import SR_SHIFTS, SR_WEIGHTS, concept_sr  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stream_args(stored: dict[str, Any], mode: str) -> argparse.Namespace:
    """The options ``concept_synth.error_stream`` reads, from the stored run's settings of
    ``mode`` (its warm-up is ``--warm`` frozen and ``--online-warm`` online)."""
    st = stored["synth"]["settings"][mode]
    return argparse.Namespace(warm=st["warm"] if mode == "frozen" else 0,
                              online_warm=st["warm"] if mode == "online" else 0,
                              synth_ref=st["ref"], synth_pre=st["pre"], synth_after=st["after"])


def run_seed(seed: int, stored: dict[str, Any], stream: str, targets: list[int],
             variants: dict[str, tuple[tuple[float, ...], tuple[float, ...]]],
             runs: int | None, mode: str = "frozen") -> dict[str, dict[str, Any]]:
    """Per target: ours' delays per grid, its null alarms, the stored peers' delays."""
    st = stored["synth"]["settings"][mode]
    row = stored["synth"]["modes"][mode][stream]
    cells = {t: row["targets"][str(t)] for t in targets}
    n = min(len(c["delays"]["ours"]) for c in cells.values())
    n = n if runs is None else min(runs, n)
    ns = stream_args(stored, mode)
    nref, pre = st["ref"], st["pre"]
    outs: dict[str, dict[str, Any]] = {
        str(t): {"delays": {v: [] for v in variants}, "alarms": dict.fromkeys(variants, 0),
                 "null_events": 0, "p_ref": []} for t in targets}
    for r in range(n):
        a, b = synth_streams(stream_seed(seed, r, mode))[stream]
        e = error_stream(a, b, mode, ns).astype(float)
        p = float(e[:nref].mean())
        if round(p, 4) != round(row["p_ref"][r], 4):
            raise SystemExit(f"seed {seed} run {r}: reference rate {p:.4f}, stored "
                             f"{row['p_ref'][r]:.4f}: not the stored draws")
        for t in targets:
            out, per_run = outs[str(t)], cells[t]["ours"]["events_per_run"]
            out["p_ref"].append(p)
            null = (np.random.default_rng([seed, r, 15]).random(per_run) < p).astype(float)
            out["null_events"] += per_run
            for name, (sh, w) in variants.items():
                det = concept_sr(e[:nref], t, sh, w, n_values=st["n_values"],
                                 seed=seed * 1000 + r)
                out["alarms"][name] += len(det.fresh().update(null))
                out["delays"][name].append(delay_of(det.fresh().update(e[nref:]), pre))
        if r % 10 == 9:
            log(f"seed {seed}: {r + 1} of {n} runs; medians " + "; ".join(
                f"{t}: " + ", ".join(f"{k} {median(v):.0f}" for k, v in o["delays"].items())
                for t, o in outs.items()))
    for t in targets:
        out, cell = outs[str(t)], cells[t]
        out["peers"] = {k: cell["delays"][k][:n] for k in NAMES}
        out["peer_arl0"] = {k: cell["peers"][k]["arl0"] for k in NAMES}
        out["stored_ours"] = cell["delays"]["ours"][:n]
    return outs


def report(args: argparse.Namespace, variants: dict[str, Any],
           per_seed: dict[int, dict[str, dict[str, Any]]], wall: float) -> list[str]:
    names, seeds = list(variants), list(per_seed)
    lines = [f"# Ours only on the {args.mode} tree's {args.stream} cell, ARL0 "
             + " and ".join(f"{t:,}" for t in args.target), "",
             "`PYTHONPATH=$PWD .venv/bin/python bench/concept_synth_ours.py "
             + " ".join(shlex.quote(a) for a in sys.argv[1:]) + "`. Grids: " + "; ".join(
                 f"{k}: shifts {', '.join(map(str, s))}, weights {', '.join(map(str, w))}"
                 for k, (s, w) in variants.items())
             + f". Peers' delays and ARL0s from `{Path(args.from_pattern).name}` (the same "
             f"draws). Seeds done: {', '.join(map(str, seeds))}.", ""]
    for t in args.target:
        cell = {s: per_seed[s][str(t)] for s in seeds}
        in_band = [k for k in NAMES if all(_in_band(c["peer_arl0"][k], t) for c in cell.values())]
        lines += [f"## ARL0 {t:,}", "", "Peers in band (bench's null ARL0 within ±30 % in every "
                  f"seed): {', '.join(in_band) or 'none'}.", "",
                  "| seeds | runs | grid | ARL0 | pre-change ARL0 | delay (FA/censored) | "
                  "/ default (paired 95 % CI) | "
                  + " | ".join(f"/ {k} (paired CI)" for k in NAMES) + " |",
                  "|---|---|---|---|---|---|---|" + "---|" * len(NAMES)]

        def rows(label: str, ss: list[int], cell: dict[int, Any] = cell,
                 lines: list[str] = lines) -> None:
            ds = {k: [x for s in ss for x in cell[s]["delays"][k]] for k in names}
            ps = {k: [x for s in ss for x in cell[s]["peers"][k]] for k in NAMES}
            nev = sum(cell[s]["null_events"] for s in ss)
            for k in names:
                al = sum(cell[s]["alarms"][k] for s in ss)
                m = median(ds[k])
                vs = "-" if k == "default" else (
                    f"{ratio(m, median(ds['default'])):.2f} "
                    f"({_ci(*paired_ci(ds[k], ds['default'], args.boot))})")
                lines.append(
                    f"| {label} | {len(ds[k])} | {k} | {nev / al if al else math.inf:.0f} | "
                    f"{fmt(early_arl(ds[k], args.pre))} | "
                    f"{m:.0f} ({ds[k].count(-2)}/{ds[k].count(-1)}) | {vs} | " + " | ".join(
                        f"{ratio(m, median(ps[p])):.2f} "
                        f"({_ci(*paired_ci(ds[k], ps[p], args.boot))})" for p in NAMES) + " |")

        for s in seeds:
            rows(str(s), [s])
        if len(seeds) > 1:
            rows(" + ".join(map(str, seeds)), seeds)
        lines += ["", "Peers' medians, pooled (FA/censored): " + ", ".join(
            f"{k} {median(v):.0f} ({v.count(-2)}/{v.count(-1)})" for k, v in (
                (k, [x for c in cell.values() for x in c["peers"][k]]) for k in NAMES))
            + "; their ARL0 per seed: " + "; ".join(
            f"{k} " + " / ".join(f"{c['peer_arl0'][k]:.0f}" for c in cell.values())
            for k in NAMES) + ".",
            "Delays equal to the stored run's ours (all of them for the grid it ran): " + "; ".join(
                f"{k} " + ", ".join(
                    f"seed {s}: "
                    f"{sum(a == b for a, b in zip(v['delays'][k], v['stored_ours'], strict=True))}"
                    f" of {len(v['stored_ours'])}" for s, v in cell.items()) for k in names)
            + " runs.", ""]
    return [*lines, f"Wall time {wall:.0f} s.", ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--mode", choices=("frozen", "online"), default="frozen")
    ap.add_argument("--from-pattern", default=str(RESULTS / "concept-sr-synth-2000-seed{seed}.json"),
                    help="the earlier run's results per seed ({seed} replaced)")
    ap.add_argument("--stream", default="Hyperplane (new plane)")
    ap.add_argument("--target", type=int, nargs="+", default=[2_000],
                    help="one or more targets, on the same trees")
    ap.add_argument("--runs", type=int, default=None, help="at most this many runs per seed")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=S,..:W,..")
    ap.add_argument("--boot", type=int, default=2_000)
    ap.add_argument("--out", type=Path, default=RESULTS / "concept-sr-synth-ours.md")
    args = ap.parse_args()
    variants = {"default": (tuple(SR_SHIFTS), tuple(SR_WEIGHTS)),
                **dict(parse_variant(v) for v in args.variant)}
    t0 = time.perf_counter()
    per_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for seed in args.seeds:
        stored = json.loads(Path(args.from_pattern.format(seed=seed)).read_text())
        args.pre = stored["synth"]["settings"][args.mode]["pre"]
        per_seed[seed] = run_seed(seed, stored, args.stream, args.target, variants, args.runs,
                                  args.mode)
        # written after every seed: a run stopped early keeps the seeds it finished
        lines = report(args, variants, per_seed, time.perf_counter() - t0)
        args.out.write_text("\n".join(lines))
        args.out.with_suffix(".json").write_text(json.dumps(
            {"mode": args.mode, "stream": args.stream,
             "variants": {k: list(map(list, v)) for k, v in variants.items()},
             "seeds": {str(k): v for k, v in per_seed.items()}}))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
