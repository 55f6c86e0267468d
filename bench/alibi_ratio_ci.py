"""Issue 19: how sure is "ours / best Alibi" per seed?  Reads the outputs of
``bench/bench_alibi.py`` (``*-raw.json``: Alibi's workers, ``*-ours.json``: ours) and gives,
per seed and pooled over the seeds, each method's median delay and the ratio of ours to the
best Alibi median with a 95 % bootstrap interval, and the same ratio with "best" chosen on
the other half of the runs.

* Bootstrap: run ``r`` of a seed is the same stream for every method, so runs are resampled
  jointly (paired); in each resample each method's median is over its surviving runs (first
  alarm at or after the change, as the bench counts them), best = the smaller Alibi median,
  and the interval is the 2.5 / 97.5 % percentiles of the ratio.  Pooled: runs resampled
  within each seed.
* Selection bias: the minimum of two noisy medians is biased low, which biases the bench's
  ratio high.  Split-half: the runs are split at random into halves A and B, the Alibi
  detector with the smaller median on A is the "best", and the ratio is ours / that
  detector on B (and the other way round); reported as the median over random splits.  As
  each half has half the runs this is noisier; it is extra information, the headline stays
  the bench's definition.

Usage::

    python bench/alibi_ratio_ci.py bench/results/alibi-cluster-240-raw.json \\
        bench/results/alibi-cluster-240-ours.json --scenario cluster --ours 100,10
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np

CHANGE = 500  # as bench_alibi.CHANGE (not imported: this stays free of its set-up)


def delays_by_run(first: list[int | None]) -> np.ndarray:
    """Per run: first alarm - CHANGE, NaN if the run alarmed before the change or never."""
    return np.array([np.nan if f is None or f < CHANGE else float(f - CHANGE) for f in first])


def alibi_runs(row: dict[str, object], scenario: str) -> dict[int, int | None]:
    first = row["first"]
    assert isinstance(first, dict)
    return {int(k[len(scenario):]): v for k, v in first.items()
            if k.rstrip("0123456789") == scenario}


def seed_matrix(alibi: list[dict[str, object]], ours: list[dict[str, object]], seed: int,
                scenario: str, window: int, cadence: int,
                ) -> tuple[list[str], np.ndarray]:
    """Names and a (methods, runs) array of delays for the runs every method has: the
    Alibi detectors (sorted), then ours."""
    al = sorted((r for r in alibi if int(r["seed"]) == seed),  # type: ignore[call-overload]
                key=lambda r: str(r["detector"]))
    mine = [r for r in ours if int(r["seed"]) == seed  # type: ignore[call-overload]
            and r["window"] == window and r["cadence"] == cadence]
    if len(mine) != 1 or not al:
        raise SystemExit(f"seed {seed}: {len(al)} Alibi rows, {len(mine)} of ours "
                         f"(window {window}, cadence {cadence})")
    runs_al = [alibi_runs(r, scenario) for r in al]
    ours_first = list(mine[0][scenario])  # type: ignore[call-overload]
    common = sorted(set.intersection(*(set(d) for d in runs_al),
                                     set(range(len(ours_first)))))
    rows = [delays_by_run([d[i] for i in common]) for d in runs_al]
    rows.append(delays_by_run([ours_first[i] for i in common]))
    return [f"Alibi {str(r['detector']).upper()}" for r in al] + ["ours"], np.vstack(rows)


def ratio(d: np.ndarray) -> float:
    """ours (last row) median / the smallest Alibi median (NaN if a median is missing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(d, axis=-1)
    return float(med[-1] / np.min(med[:-1]))


def bootstrap_ratio(mats: list[np.ndarray], n_boot: int = 2_000, seed: int = 0,
                    ) -> tuple[float, float, float]:
    """The ratio on all runs and its 95 % percentile interval from a paired bootstrap of
    runs, stratified by the matrices given (one per seed: pooled when several)."""
    rng = np.random.default_rng(seed)
    point = ratio(np.hstack(mats))
    meds = []
    for m in mats:
        idx = rng.integers(0, m.shape[1], size=(n_boot, m.shape[1]))
        meds.append(m[:, idx].transpose(1, 0, 2))  # (boot, methods, runs)
    sample = np.concatenate(meds, axis=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(sample, axis=2)
    r = med[:, -1] / med[:, :-1].min(axis=1)
    lo, hi = np.nanpercentile(r, [2.5, 97.5])
    return point, float(lo), float(hi)


def split_half_ratio(mats: list[np.ndarray], n_splits: int = 500, seed: int = 0,
                     ) -> tuple[float, float]:
    """Ours / the Alibi detector chosen on the other half of the runs: the median over
    random halvings (each seed halved on its own; both directions), and the fraction of
    halvings in which the detector chosen on A is not the one best on B."""
    rng = np.random.default_rng(seed)
    out, flips = [], 0
    for _ in range(n_splits):
        a_parts, b_parts = [], []
        for m in mats:
            perm = rng.permutation(m.shape[1])
            a_parts.append(m[:, perm[: m.shape[1] // 2]])
            b_parts.append(m[:, perm[m.shape[1] // 2:]])
        a, b = np.hstack(a_parts), np.hstack(b_parts)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ma, mb = np.nanmedian(a, axis=1), np.nanmedian(b, axis=1)
        for sel, ev in ((ma, mb), (mb, ma)):
            k = int(np.argmin(sel[:-1]))
            out.append(ev[-1] / ev[k])
            flips += int(k != int(np.argmin(ev[:-1])))
    return float(np.median(out)), flips / len(out)


def table(alibi: list[dict[str, object]], ours: list[dict[str, object]], scenario: str,
          window: int, cadence: int, n_boot: int = 2_000) -> list[str]:
    seeds = sorted({int(r["seed"]) for r in alibi})  # type: ignore[call-overload]
    names: list[str] = []
    mats = []
    for s in seeds:
        names, m = seed_matrix(alibi, ours, s, scenario, window, cadence)
        mats.append(m)
    head = ("| seed | runs | " + " | ".join(f"{n} median (surviving runs)" for n in names)
            + " | ours / best Alibi [95 % CI] | ours / Alibi chosen on the other half "
            "(median of 500 halvings; choice flips) |")
    lines = [head, "|" + " --- |" * (len(names) + 4)]
    for label, ms in [*((str(s), [m]) for s, m in zip(seeds, mats, strict=True)), ("pooled", mats)]:
        d = np.hstack(ms)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(d, axis=1)
        surv = np.sum(~np.isnan(d), axis=1)
        point, lo, hi = bootstrap_ratio(ms, n_boot)
        half, flip = split_half_ratio(ms)
        cells = " | ".join(f"{m:.0f} ({n})" for m, n in zip(med, surv, strict=True))
        lines.append(f"| {label} | {d.shape[1]} | {cells} | {point:.2f} [{lo:.2f}, {hi:.2f}] "
                     f"| {half:.2f}; {flip:.0%} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("raw", type=Path, help="Alibi's worker outputs (*-raw.json)")
    ap.add_argument("ours", type=Path, help="ours (*-ours.json)")
    ap.add_argument("--scenario", default="cluster")
    ap.add_argument("--ours-config", default="100,10", help="window,cadence of ours")
    ap.add_argument("--boot", type=int, default=2_000)
    args = ap.parse_args(argv)
    w, c = (int(x) for x in args.ours_config.split(","))
    alibi = json.loads(args.raw.read_text())
    mine = json.loads(args.ours.read_text())
    print("\n".join(table(alibi, mine, args.scenario, w, c, args.boot)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
