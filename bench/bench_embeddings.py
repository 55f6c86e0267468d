"""Embedding columns (``type: vector``): cost per event by dimension, and detection of the
issue-19 scenario "a change in the share of one embedding cluster".

Cost (one thread, CPU time, best of ``--repeats``): per event, decoding a JSON array of
``dim`` numbers already parsed by orjson into the batch matrix
(:func:`stream.formats.vectors.vector_column`), and the test
(:meth:`detectors.embedding.VectorTest.update`: projection on ``components`` principal
directions + the joint test of the projection, window 1,000, cadence 50, + the share
CUSUM), batches of 1,000.
The JSON parsing of the array itself (orjson) is reported beside them.

Detection: a Gaussian mixture of 8 clusters in 64 dimensions (centres N(0, 1) per
coordinate, unit noise; 10,000 reference vectors); cluster 0's share goes from 12.5 % to
25 % after 1,000 events.  The test (window 500, cadence 50) is calibrated for an ARL0 of
``--arl0`` events (as ``bench_multivariate_peers.py``); the achieved ARL0 is measured on
null streams, the delay (events from the change to the first alarm) over ``--runs`` runs
(runs with a false alarm before the change are left out and counted).  Each run draws its
own mixture (centres) and reference.

Usage::

    PYTHONPATH=$PWD .venv/bin/python bench/bench_embeddings.py            # ~5 min
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import orjson  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from detectors.embedding import (  # noqa: E402
    VectorProfile,
    VectorSpec,
    VectorTest,
    calibrate_vector,
)
from stream.formats.vectors import vector_column  # noqa: E402
from tests.support.embeddings import SHIFTED_SHARE, Mixture  # noqa: E402

RESULTS = HERE / "results" / "embeddings.md"
BATCH = 1_000
DIMS = (64, 384, 768)
CHANGE, AFTER = 1_000, 4_000
WINDOW, CADENCE = 500, 50


def cost(dim: int, components: int, repeats: int, seed: int) -> tuple[float, float, float]:
    """(orjson parse, vector_column decode, VectorTest.update) CPU seconds per event."""
    rng = np.random.default_rng(seed)
    mix = Mixture(seed, clusters=8, dim=dim)
    prof = VectorProfile.from_matrix(VectorSpec("e", dim, components), mix.draw(rng, 5_000))
    x = mix.draw(rng, 20_000).astype(np.float32).astype(np.float64)
    lines = [orjson.dumps(r.tolist()) for r in x]
    best = [float("inf")] * 3
    for _ in range(repeats):
        t0 = time.process_time()
        parsed = [orjson.loads(b) for b in lines]
        t1 = time.process_time()
        mats = [vector_column(parsed[i:i + BATCH], dim).values
                for i in range(0, len(parsed), BATCH)]
        t2 = time.process_time()
        # thresholds no event reaches: the whole cost, with the share CUSUM's
        test = VectorTest(prof, 1_000, 50, 1e300, share_threshold=1e300)
        for m in mats:
            test.update(m)
        t3 = time.process_time()
        n = len(lines)
        best = [min(best[0], (t1 - t0) / n), min(best[1], (t2 - t1) / n),
                min(best[2], (t3 - t2) / n)]
    return best[0], best[1], best[2]


def detection(components: int, arl0: float, runs: int, null_events: int, seed: int,
              ) -> dict[str, object]:
    """Achieved ARL0 and delays of the cluster-share scenario."""
    rng = np.random.default_rng(seed)
    mix = Mixture(seed)
    prof = VectorProfile.from_matrix(VectorSpec("e", 64, components), mix.draw(rng, 10_000))
    t0 = time.process_time()
    cal = calibrate_vector(prof, WINDOW, CADENCE, arl0, release_values=WINDOW, seed=seed)
    cal_s = time.process_time() - t0

    def fresh(p: VectorProfile, threshold: float, share: float) -> VectorTest:
        t = VectorTest(p, WINDOW, CADENCE, threshold, share_threshold=share)
        t.configure_episodes(min(1.0, max(0.5, cal.release_floor / cal.threshold)), WINDOW)
        return t

    null = fresh(prof, cal.threshold, cal.share_threshold)
    alarms = sum(null.update(mix.draw(rng, 50_000)).size
                 for _ in range(null_events // 50_000))
    delays, early, missed = [], 0, 0
    for r in range(runs):
        rr = np.random.default_rng(10_000 + seed * 1_000 + r)
        m = Mixture(10_000 + r)
        p = VectorProfile.from_matrix(VectorSpec("e", 64, components), m.draw(rr, 10_000))
        c = calibrate_vector(p, WINDOW, CADENCE, arl0, release_values=WINDOW, seed=r,
                             n_values=400_000, n_paths=16)
        t = fresh(p, c.threshold, c.share_threshold)
        if t.update(m.draw(rr, CHANGE)).size:
            early += 1
            continue
        hit = t.update(m.draw(rr, AFTER, SHIFTED_SHARE))
        if hit.size:
            delays.append(int(hit[0]) + 1)
        else:
            missed += 1
    return {"components": components, "threshold": cal.threshold, "method": cal.method,
            "alarms": alarms, "null_events": null_events,
            "arl0": null_events / max(alarms, 1), "delays": delays, "early": early,
            "missed": missed, "calibration_s": cal_s, "explained": prof.explained}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arl0", type=float, default=2_000)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--null-events", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--components", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    lines = ["# Embedding columns: cost and detection", "",
             f"`bench/bench_embeddings.py --arl0 {args.arl0:g} --runs {args.runs} "
             f"--null-events {args.null_events} --repeats {args.repeats} --seed {args.seed}` "
             f"at commit {commit} (one thread, CPU time).", "",
             "## Cost per event (components 8, batches of 1,000, window 1,000, cadence 50)",
             "",
             "| dim | orjson parse of the array | decode to the batch matrix | test "
             "(projection + joint test + share CUSUM) | decode + test |",
             "| --- | --- | --- | --- | --- |"]
    for dim in DIMS:
        p, d, t = cost(dim, 8, args.repeats, args.seed)
        print(f"cost dim {dim}: parse {p * 1e6:.2f} decode {d * 1e6:.2f} test {t * 1e6:.2f}",
              file=sys.stderr, flush=True)
        lines.append(f"| {dim} | {p * 1e6:.2f} µs | {d * 1e6:.2f} µs | {t * 1e6:.2f} µs | "
                     f"{(d + t) * 1e6:.2f} µs |")
    lines += ["", "## Detection: one of 8 clusters in 64-d from 12.5 % to 25 %", "",
              f"Window {WINDOW}, cadence {CADENCE}, change after {CHANGE} events, "
              f"{AFTER} events after it; target ARL0 {args.arl0:,.0f}; delay = events from "
              f"the change to the first alarm (median over the runs without a false alarm "
              f"before the change).", "",
              "| components | variance explained | achieved ARL0 (events) | median delay | "
              "p90 delay | missed | left out (early alarm) | calibration |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for k in args.components:
        r = detection(k, args.arl0, args.runs, args.null_events, args.seed)
        d = np.array(r["delays"]) if r["delays"] else np.array([np.nan])
        print(f"detection k={k}: {r}", file=sys.stderr, flush=True)
        lines.append(
            f"| {k} | {float(r['explained']):.0%} | {float(r['arl0']):,.0f} "  # type: ignore[arg-type]
            f"({r['alarms']} episodes in {r['null_events']:,}) | {np.median(d):.0f} | "
            f"{np.percentile(d, 90):.0f} | {r['missed']} of {args.runs} | {r['early']} | "
            f"{r['method']}, {float(r['calibration_s']):.1f} CPU s |")  # type: ignore[arg-type]
    lines += ["", "Alibi Detect's online MMD and LSDD on this scenario: `bench/bench_alibi.py`, "
              "results in `alibi.md`."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
