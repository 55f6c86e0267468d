"""Ours only: the Shiryaev-Roberts mixture's default grid against variants with a larger
rise component, on Bernoulli error streams (issue 15, item 4: do large jumps, like
Hyperplane's +16.5 points from 10 % at ARL0 2,000 (group 7) or Agrawal's +35, want a bigger
component, and what does it cost the 2-, 5- and 10-point cells of part 1?).  The mixtures:
:data:`VARIANTS`, or the default and each ``--variant NAME=S1,S2,..:W1,W2,..``.

Per (p0, target) group: ``--refs`` references of ``--ref-size`` errors at p0 calibrate each
mixture (``concept_sr``, ``--n-values``); its ARL0 is measured on ``--arl-factor`` × target
null events per reference, pooled.  Per rise: ``--runs`` runs of ``--pre`` null events then
p0 + rise until ``--cap`` events after the change, the same draws for every mixture (run i
uses reference i mod refs); a run with an alarm before the change is discarded for that
mixture.  The table gives each mixture's median delay and its ratio to the default's with
a 95 % percentile-bootstrap interval (the runs resampled, paired).

Run from the repository root::

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python bench/concept_sr_variant.py --seed 1
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from detectors.concept_sr import SR_GRID_BEFORE, SR_SHIFTS, SR_WEIGHTS, concept_sr

RESULTS = Path(__file__).resolve().parent / "results"

VARIANTS = {
    "default": (SR_SHIFTS, SR_WEIGHTS),
    # the grid before the +20-point component (issue 15), and the two weights of that
    # component measured first (results/concept-sr-variant-seed1-partial.md)
    "before": SR_GRID_BEFORE,
    "+20 at 0.10": ((0.02, 0.08, 0.20, -0.02, -0.08), (0.40, 0.40, 0.10, 0.05, 0.05)),
}
# (p0, target, rises): part 1's cells, then rises like the River generators' (SEA ~+9 points
# from ~0.02, Hyperplane ~+13 from ~0.11, Agrawal ~+35 from ~0)
GROUPS = [
    (0.10, 2_000, (0.02, 0.05, 0.10)), (0.10, 10_000, (0.02, 0.05, 0.10)),
    (0.25, 2_000, (0.02, 0.05, 0.10)), (0.25, 10_000, (0.02, 0.05, 0.10)),
    (0.02, 10_000, (0.09,)), (0.11, 10_000, (0.13,)), (0.002, 10_000, (0.35,)),
    # the frozen tree's Hyperplane cell at ARL0 2,000 (p_ref 0.100-0.101 in
    # concept-sr-synth-2000-seed*.json, a jump of +16.5 points)
    (0.10, 2_000, (0.165,)),
]


def parse_variant(spec: str) -> tuple[str, tuple[tuple[float, ...], tuple[float, ...]]]:
    """``NAME=S1,S2,...:W1,W2,...`` -> ``(NAME, (shifts, weights))``.

    >>> parse_variant("a=0.02,0.16:0.6,0.4")
    ('a', ((0.02, 0.16), (0.6, 0.4)))
    """
    name, _, rest = spec.partition("=")
    sh, _, w = rest.partition(":")
    shifts = tuple(float(v) for v in sh.split(","))
    weights = tuple(float(v) for v in w.split(","))
    if not name or len(shifts) != len(weights):
        raise SystemExit(f"--variant {spec!r}: want NAME=S1,S2,...:W1,W2,... (one weight "
                         "per shift)")
    return name, (shifts, weights)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def first(alarms: np.ndarray, pre: int) -> float:
    """Delay of the first alarm; nan: before the change (discarded); inf: none."""
    if not alarms.size:
        return math.inf
    return math.nan if alarms[0] < pre else float(alarms[0] - pre)


def med(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(np.median(x)) if x.size else math.nan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--refs", type=int, default=5)
    ap.add_argument("--ref-size", type=int, default=20_000)
    ap.add_argument("--n-values", type=int, default=1_000_000)
    ap.add_argument("--arl-factor", type=float, default=20.0)
    ap.add_argument("--runs", type=int, default=1_000)
    ap.add_argument("--pre", type=int, default=1_000)
    ap.add_argument("--cap", type=int, default=10_000)
    ap.add_argument("--boot", type=int, default=2_000)
    ap.add_argument("--groups", type=int, nargs="+", default=None,
                    help="only these (p0, target) groups, by index in GROUPS (0-3: part 1's "
                         "cells, 4-6: the generators' jumps at 10,000, 7: Hyperplane's at 2,000)")
    ap.add_argument("--variant", action="append", default=None, metavar="NAME=S,..:W,..",
                    help="compare the default against these mixtures instead of VARIANTS' "
                         "(repeatable)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    variants = dict(VARIANTS) if not args.variant else {
        "default": VARIANTS["default"], **dict(parse_variant(v) for v in args.variant)}
    names = list(variants)
    lines = [f"# The mixture's grid: a larger rise component (seed {args.seed})", "",
             "`PYTHONPATH=$PWD .venv/bin/python bench/concept_sr_variant.py "
             + " ".join(shlex.quote(a) for a in sys.argv[1:])
             + f"` (defaults otherwise): {args.refs} references of {args.ref_size:,} errors per "
             f"(p0, target), n_values {args.n_values:,}; ARL0 on {args.arl_factor:g} × target "
             f"null events per reference, pooled; {args.runs} runs per rise, {args.pre:,} null "
             f"events before it, censored at {args.cap:,} after it; the same draws for every "
             "mixture. Mixtures: " + "; ".join(
                 f"{n}: shifts {', '.join(map(str, s))}, weights {', '.join(map(str, w))}"
                 for n, (s, w) in variants.items()) + ".", "",
             "| p0 | target | rise | " + " | ".join(f"{n}: ARL0, delay (FA)" for n in names)
             + " | " + " | ".join(f"{n} / default (95 % CI)" for n in names[1:]) + " |",
             "|---|---|---|" + "---|" * (2 * len(names) - 1)]
    t0 = time.perf_counter()
    out = args.out or RESULTS / f"concept-sr-variant-seed{args.seed}.md"
    for gi, (p0, target, rises) in enumerate(GROUPS):
        if args.groups is not None and gi not in args.groups:
            continue
        rng = np.random.default_rng([args.seed, gi])
        refs = [(rng.random(args.ref_size) < p0).astype(float) for _ in range(args.refs)]
        dets = {n: [concept_sr(r, target, s, w, n_values=args.n_values,
                               seed=args.seed * 100 + i) for i, r in enumerate(refs)]
                for n, (s, w) in variants.items()}
        per = int(args.arl_factor * target)
        arl0 = {}
        nulls = [(rng.random(per) < p0).astype(float) for _ in range(args.refs)]
        for n in names:
            k = sum(len(d.fresh().update(x)) for d, x in zip(dets[n], nulls, strict=True))
            arl0[n] = per * args.refs / k if k else math.inf
        for ri, rise in enumerate(rises):
            d = {n: np.empty(args.runs) for n in names}
            for i in range(args.runs):
                u = rng.random(args.pre + args.cap)
                x = np.concatenate([u[:args.pre] < p0, u[args.pre:] < p0 + rise]).astype(float)
                for n in names:
                    d[n][i] = first(dets[n][i % args.refs].fresh().update(x), args.pre)
            m = {n: med(d[n]) for n in names}
            ci = []
            brng = np.random.default_rng([args.seed, gi, ri])
            for n in names[1:]:
                ok = ~np.isnan(d[n]) & ~np.isnan(d["default"])  # paired: runs both survived
                a, b = d[n][ok], d["default"][ok]
                ii = brng.integers(0, a.size, (args.boot, a.size))
                ma, mb = np.median(a[ii], axis=1), np.median(b[ii], axis=1)
                with np.errstate(divide="ignore", invalid="ignore"):
                    r = np.where(ma == mb, 1.0, ma / mb)
                ci.append(f"{m[n] / m['default']:.2f} ({np.quantile(r, 0.025):.2f}–"
                          f"{np.quantile(r, 0.975):.2f})")
            lines.append(f"| {p0:g} | {target:,} | +{rise:g} | " + " | ".join(
                f"{arl0[n]:.0f}, {m[n]:.0f} ({int(np.isnan(d[n]).sum())})" for n in names)
                + " | " + " | ".join(ci) + " |")
            log(lines[-1])
            out.write_text("\n".join([*lines, "", "(partial: the run goes on)", ""]))
    lines += ["", "CI: the runs both mixtures survived resampled together (the point ratio "
              "is of each mixture's median over its own survivors).",
              "", f"Wall time {time.perf_counter() - t0:.0f} s.", ""]
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
