"""Ours only, on part 2's frozen-tree error streams, against the peers of an earlier run
(issue 15, item 4): is a grid of the mixture faster on one generator's cell, on the same
draws?

``bench_concept.py --part synth`` runs the Hoeffding trees, tunes every peer and runs them;
this script regenerates one stream's error streams of an earlier run's seeds (the generator
seeds are ``seed * 1000 + run``, so the draws are the same: each run's reference error rate
is checked against the stored one), calibrates ours per run with each ``--variant`` grid (the
default first) at that run's settings, and reads the peers' delays from the stored ``.json``
(the peers use no random numbers of ours). Each grid's delays are compared with the stored
ones of ours (all equal for the grid the stored run had: the same calibration seeds).
Ours' ARL0: each run's detector on ``events_per_run`` Bernoulli null events at that run's
reference rate (other draws than the stored run's: its generator is not reproducible here),
pooled. Ratios: median over the runs without a false alarm before the change; 95 % CI
paired (the runs resampled jointly, ``concept_synth_pool.paired_ci``).

    PYTHONPATH=$PWD nice -n 15 .venv/bin/python bench/concept_synth_ours.py \\
        --seeds 1 2 3 --variant 'E20=0.02,0.08,0.20,-0.02,-0.08:0.30,0.30,0.30,0.05,0.05'
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
from concept_report import NAMES, _ci, delay_of, median, ratio  # noqa: E402
from concept_sr_variant import parse_variant  # noqa: E402
from concept_synth import error_stream, synth_streams  # noqa: E402
from concept_synth_pool import _in_band, paired_ci  # noqa: E402

from detectors.concept_sr import SR_SHIFTS, SR_WEIGHTS, concept_sr  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_seed(seed: int, stored: dict[str, Any], stream: str, target: int,
             variants: dict[str, tuple[tuple[float, ...], tuple[float, ...]]],
             runs: int | None) -> dict[str, Any]:
    st = stored["synth"]["settings"]["frozen"]
    row = stored["synth"]["modes"]["frozen"][stream]
    cell = row["targets"][str(target)]
    n = len(cell["delays"]["ours"]) if runs is None else min(runs, len(cell["delays"]["ours"]))
    ns = argparse.Namespace(warm=st["warm"], online_warm=0, synth_ref=st["ref"],
                            synth_pre=st["pre"], synth_after=st["after"])
    nref, pre, per_run = st["ref"], st["pre"], cell["ours"]["events_per_run"]
    out: dict[str, Any] = {"delays": {v: [] for v in variants}, "alarms": dict.fromkeys(variants, 0),
                           "null_events": 0, "p_ref": []}
    for r in range(n):
        a, b = synth_streams(seed * 1000 + r)[stream]
        e = error_stream(a, b, "frozen", ns).astype(float)
        p = float(e[:nref].mean())
        if round(p, 4) != round(row["p_ref"][r], 4):
            raise SystemExit(f"seed {seed} run {r}: reference rate {p:.4f}, stored "
                             f"{row['p_ref'][r]:.4f}: not the stored draws")
        out["p_ref"].append(p)
        null = (np.random.default_rng([seed, r, 15]).random(per_run) < p).astype(float)
        out["null_events"] += per_run
        for name, (sh, w) in variants.items():
            det = concept_sr(e[:nref], target, sh, w, n_values=st["n_values"],
                             seed=seed * 1000 + r)
            out["alarms"][name] += len(det.fresh().update(null))
            out["delays"][name].append(delay_of(det.fresh().update(e[nref:]), pre))
        if r % 10 == 9:
            log(f"seed {seed}: {r + 1} of {n} runs; medians " + ", ".join(
                f"{k} {median(v):.0f}" for k, v in out["delays"].items()))
    out["peers"] = {k: cell["delays"][k][:n] for k in NAMES}
    out["peer_arl0"] = {k: cell["peers"][k]["arl0"] for k in NAMES}
    out["stored_ours"] = cell["delays"]["ours"][:n]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--from-pattern", default=str(RESULTS / "concept-sr-synth-2000-seed{seed}.json"),
                    help="the earlier run's results per seed ({seed} replaced)")
    ap.add_argument("--stream", default="Hyperplane (new plane)")
    ap.add_argument("--target", type=int, default=2_000)
    ap.add_argument("--runs", type=int, default=None, help="at most this many runs per seed")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=S,..:W,..")
    ap.add_argument("--boot", type=int, default=2_000)
    ap.add_argument("--out", type=Path, default=RESULTS / "concept-sr-synth-ours.md")
    args = ap.parse_args()
    variants = {"default": (tuple(SR_SHIFTS), tuple(SR_WEIGHTS)),
                **dict(parse_variant(v) for v in args.variant)}
    t0 = time.perf_counter()
    per_seed = {}
    for seed in args.seeds:
        stored = json.loads(Path(args.from_pattern.format(seed=seed)).read_text())
        per_seed[seed] = run_seed(seed, stored, args.stream, args.target, variants, args.runs)
    names = list(variants)
    in_band = [k for k in NAMES if all(_in_band(s["peer_arl0"][k], args.target)
                                       for s in per_seed.values())]
    lines = [f"# Ours only on the frozen tree's {args.stream} cell, ARL0 {args.target:,}", "",
             "`PYTHONPATH=$PWD .venv/bin/python bench/concept_synth_ours.py "
             + " ".join(shlex.quote(a) for a in sys.argv[1:]) + "`. Grids: " + "; ".join(
                 f"{k}: shifts {', '.join(map(str, s))}, weights {', '.join(map(str, w))}"
                 for k, (s, w) in variants.items())
             + f". Peers' delays and ARL0s from `{Path(args.from_pattern).name}` (the same "
             f"draws). Peers in band (bench's null ARL0 within ±30 % in every seed): "
             f"{', '.join(in_band) or 'none'}.", "",
             "| seeds | runs | grid | ARL0 | delay (FA/censored) | / default (paired 95 % CI) | "
             + " | ".join(f"/ {k} (paired CI)" for k in NAMES) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(NAMES)]

    def rows(label: str, seeds: list[int]) -> None:
        ds = {k: [x for s in seeds for x in per_seed[s]["delays"][k]] for k in names}
        ps = {k: [x for s in seeds for x in per_seed[s]["peers"][k]] for k in NAMES}
        nev = sum(per_seed[s]["null_events"] for s in seeds)
        for k in names:
            al = sum(per_seed[s]["alarms"][k] for s in seeds)
            m = median(ds[k])
            vs = "-" if k == "default" else (
                f"{ratio(m, median(ds['default'])):.2f} "
                f"({_ci(*paired_ci(ds[k], ds['default'], args.boot))})")
            lines.append(
                f"| {label} | {len(ds[k])} | {k} | {nev / al if al else math.inf:.0f} | "
                f"{m:.0f} ({ds[k].count(-2)}/{ds[k].count(-1)}) | {vs} | " + " | ".join(
                    f"{ratio(m, median(ps[p])):.2f} ({_ci(*paired_ci(ds[k], ps[p], args.boot))})"
                    for p in NAMES) + " |")

    for s in args.seeds:
        rows(str(s), [s])
    if len(args.seeds) > 1:
        rows(" + ".join(map(str, args.seeds)), list(args.seeds))
    lines += ["", "Peers' medians, pooled: " + ", ".join(
        f"{k} {median([x for s in per_seed.values() for x in s['peers'][k]]):.0f}"
        for k in NAMES) + "; their ARL0 per seed: " + "; ".join(
        f"{k} " + " / ".join(f"{s['peer_arl0'][k]:.0f}" for s in per_seed.values())
        for k in NAMES) + ".",
        "Delays equal to the stored run's ours (all of them for the grid it ran): " + "; ".join(
            f"{k} " + ", ".join(
                f"seed {s}: {sum(a == b for a, b in zip(v['delays'][k], v['stored_ours'], strict=True))}"
                f" of {len(v['stored_ours'])}" for s, v in per_seed.items()) for k in names)
        + " runs.",
        "", f"Wall time {time.perf_counter() - t0:.0f} s.", ""]
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(
        {"variants": {k: list(map(list, v)) for k, v in variants.items()},
         "seeds": {str(k): v for k, v in per_seed.items()}}))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
