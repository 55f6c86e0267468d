"""Why ours' null ARL0 reads above target on the online tree's Hyperplane cell at 10,000
(issue 15, item 4): the reference's length, the rate, or the estimate's own noise?

Per reference (i.i.d. Bernoulli at a rate ``p`` taken in turn from the stored runs'
reference rates, ``--from-pattern``; ``--lengths`` events long) ours is calibrated as the
bench does (``concept_sr``, default grid, ``--n-values``) and run on ``--null-events``
Bernoulli events three ways:

- *bench*: the null at the reference's own rate ``p̂`` (what ``bench_concept.py --part synth``
  measures: its null streams are at each run's reference rate);
- *true*: the null at ``p``, the rate the reference was drawn from (the design: the
  calibration's paths carry the reference's rate uncertainty, ``N(0, σ²/n)`` offsets, so
  that over references the alarms average to the target);
- *no offset*: ``calibrate_sr`` with the offsets off (``scale`` 0; a diagnostic, not a
  detector option), the null at ``p̂``: what the threshold would be without them.

``--exact-seeds``: instead, the stored runs' own references (the trees regenerated as
``concept_synth_ours.py`` does, each run's rate checked against the stored one) and ours
calibrated exactly as the bench did (seed ``seed * 1000 + run``): the same detectors whose
ARL0 the bench read on 10 × target null events, now on ``--null-events`` each (other draws,
``[seed, r, 19, way]``), *bench* and *no offset* ways.

ARL0: events over alarms pooled over the references (the detector restarts after each
alarm); per reference too, for the spread.  Rng: references ``[seed, 17, i]``, null streams
``[seed, 18, i, way]``, calibration seed ``seed * 1000 + i`` (as the bench's).

    PYTHONPATH=$PWD nice -n 15 .venv/bin/python bench/concept_sr_refbias.py --refs 16
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from detectors.concept_sr import (  # noqa: E402
    SR_SHIFTS,
    SR_WEIGHTS,
    ConceptSR,
    _increments,
    calibrate_sr,
    concept_sr,
    possible_shifts,
)

RESULTS = Path(__file__).resolve().parent / "results"
WAYS = ("bench", "true", "no offset")


def no_offset(ref: np.ndarray, target: float, n_values: int, seed: int) -> ConceptSR:
    """``concept_sr``'s detector with the calibration's rate offsets off (diagnostic)."""
    sh, w = possible_shifts(ref, SR_SHIFTS, SR_WEIGHTS)
    c, d, binary, lo, hi, mean, scale = _increments(ref, sh)
    log_a = calibrate_sr(ref, target, c, d, np.log(np.array(w)), lo, hi, 0.0,
                         n_values=n_values, seed=seed)
    return ConceptSR(sh, w, c, d, log_a, lo, hi, mean, scale, binary)


def measure(p: float, n: int, target: float, i: int, args: argparse.Namespace
            ) -> dict[str, Any]:
    ref = (np.random.default_rng([args.seed, 17, i, n]).random(n) < p).astype(float)
    p_hat = float(ref.mean())
    det = concept_sr(ref, target, n_values=args.n_values, seed=args.seed * 1000 + i)
    dets = {"bench": det, "true": det,
            "no offset": no_offset(ref, target, args.n_values, args.seed * 1000 + i)}
    rates = {"bench": p_hat, "true": p, "no offset": p_hat}
    out: dict[str, Any] = {"p": p, "p_hat": p_hat, "log_a": {k: v.log_a for k, v in dets.items()},
                           "alarms": {}}
    for w, way in enumerate(WAYS):
        rng = np.random.default_rng([args.seed, 18, i, n, w])
        alarms = 0
        left = args.null_events
        d = dets[way].fresh()
        while left > 0:  # in chunks; the state carries over
            k = min(left, 1_000_000)
            alarms += len(d.update((rng.random(k) < rates[way]).astype(float)))
            left -= k
        out["alarms"][way] = alarms
    return out


def exact(seed: int, target: float, args: argparse.Namespace) -> dict[str, Any]:
    """The stored runs' own detectors on long null streams at their reference rates."""
    from concept_synth import error_stream, stream_seed, synth_streams
    from concept_synth_ours import stream_args
    stored = json.loads(Path(args.from_pattern.format(seed=seed)).read_text())
    st = stored["synth"]["settings"][args.mode]
    row = stored["synth"]["modes"][args.mode][args.stream]
    ns, nref = stream_args(stored, args.mode), st["ref"]
    out: dict[str, Any] = {"alarms": {w: [] for w in ("bench", "no offset")}, "p_ref": []}
    for r in range(len(row["p_ref"]) if args.exact_runs is None else args.exact_runs):
        a, b = synth_streams(stream_seed(seed, r, args.mode))[args.stream]
        ref = error_stream(a, b, args.mode, ns).astype(float)[:nref]
        p = float(ref.mean())
        if round(p, 4) != round(row["p_ref"][r], 4):
            raise SystemExit(f"seed {seed} run {r}: not the stored draws")
        dets = {"bench": concept_sr(ref, target, n_values=st["n_values"], seed=seed * 1000 + r),
                "no offset": no_offset(ref, target, st["n_values"], seed * 1000 + r)}
        out["p_ref"].append(p)
        for w, (way, det) in enumerate(dets.items()):
            rng = np.random.default_rng([seed, r, 19, w])
            d, left, k = det.fresh(), args.null_events, 0
            while left > 0:
                m = min(left, 1_000_000)
                k += len(d.update((rng.random(m) < p).astype(float)))
                left -= m
            out["alarms"][way].append(k)
    n = len(out["p_ref"]) * args.null_events
    out["arl0"] = {w: n / max(sum(v), 1) for w, v in out["alarms"].items()}
    print(f"[{time.strftime('%H:%M:%S')}] exact seed {seed} target {target:.0f}: "
          + "; ".join(f"{w} {a:.0f} ({sum(out['alarms'][w])} alarms)"
                      for w, a in out["arl0"].items()), file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--from-pattern",
                    default=str(RESULTS / "concept-sr-synth-online-seed{seed}.json"))
    ap.add_argument("--rate-seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--stream", default="Hyperplane (new plane)")
    ap.add_argument("--mode", default="online")
    ap.add_argument("--lengths", type=int, nargs="+", default=[5_000, 10_000, 20_000])
    ap.add_argument("--targets", type=float, nargs="+", default=[10_000])
    ap.add_argument("--refs", type=int, default=16)
    ap.add_argument("--null-events", type=int, default=1_000_000)
    ap.add_argument("--n-values", type=int, default=500_000)
    ap.add_argument("--out", type=Path, default=RESULTS / "concept-sr-refbias.json")
    ap.add_argument("--exact-seeds", type=int, nargs="*", default=[])
    ap.add_argument("--exact-runs", type=int, default=None, help="the first N runs only")
    args = ap.parse_args()
    if args.exact_seeds:
        res_e: dict[str, Any] = {"argv": sys.argv[1:], "null_events": args.null_events,
                                 "seeds": {}}
        for s in args.exact_seeds:
            res_e["seeds"][str(s)] = {str(int(t)): exact(s, t, args) for t in args.targets}
            args.out.write_text(json.dumps(res_e, indent=1))
        return
    rates: list[list[float]] = []
    for s in args.rate_seeds:
        d = json.loads(Path(args.from_pattern.format(seed=s)).read_text())
        rates.append(d["synth"]["modes"][args.mode][args.stream]["p_ref"])
    # the references' rates: the stored runs' in turn, seed by seed
    ps = [float(rates[i % len(rates)][i // len(rates)]) for i in range(args.refs)]
    res: dict[str, Any] = {"argv": sys.argv[1:], "null_events": args.null_events,
                           "n_values": args.n_values, "cells": {}}
    t0 = time.perf_counter()
    for t in args.targets:
        for n in args.lengths:
            rows = [measure(p, n, t, i, args) for i, p in enumerate(ps)]
            cell: dict[str, Any] = {"rows": rows}
            for way in WAYS:
                al = sum(r["alarms"][way] for r in rows)
                ev = args.null_events * len(rows)
                per = [args.null_events / max(r["alarms"][way], 1) for r in rows]
                cell[way] = {"alarms": al, "arl0": ev / al if al else math.inf,
                             "per_ref_q": [float(q) for q in np.quantile(per, [0.1, 0.5, 0.9])]}
            res["cells"][f"{int(t)}/{n}"] = cell
            print(f"[{time.strftime('%H:%M:%S')}] target {t:.0f} ref {n}: " + "; ".join(
                f"{w} {cell[w]['arl0']:.0f} ({cell[w]['alarms']} alarms, per ref "
                + "/".join(f"{q:.0f}" for q in cell[w]['per_ref_q']) + ")" for w in WAYS),
                file=sys.stderr, flush=True)
            args.out.write_text(json.dumps(res, indent=1))  # what finished, as it finishes
    res["wall_s"] = time.perf_counter() - t0
    res["command"] = "bench/concept_sr_refbias.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
