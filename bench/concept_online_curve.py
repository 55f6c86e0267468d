"""Where the online (test-then-train) Hoeffding tree's error stream is a null: its error per
block of events on each generator's first concept (no change), averaged over runs, and for
each candidate ``--online-warm`` of ``bench_concept.py --part synth`` how far the
pre-change window's error is from its reference's.

Matched ARL0 (part 2's protocol) assumes the events before the change are distributed as
the reference: every detector is tuned or calibrated at the reference's error rate.  A
tree that is still growing breaks that: on Hyperplane its leaves split in waves at nearly
the same event counts in every run (a uniform stream fills every leaf at the same pace),
and each wave raises the error for a few thousand events.  Where a wave falls on the
pre-change window every detector false-alarms there above its null rate, and each
detector's surviving runs differ.  This script measures where the waves are, so the
warm-up can be set where the error is flat.

Each run draws the generator at part 2's online seed (``concept_synth.stream_seed``) and
records the tree's errors on ``--events`` events of the first concept, test-then-train
from the first event.  For each warm-up W: reference = events W … W + ``--ref``, pre-change
window = the next ``--pre``; the table gives the pooled error rates, their difference with
a 95 % interval (bootstrap over runs) and the spread of the runs' pre-change error rates
against the binomial sd at the pooled rate (1.0: i.i.d. Bernoulli).

    PYTHONPATH=$PWD .venv/bin/python bench/concept_online_curve.py --seeds 2 3 --runs 40 \\
        --out bench/results/concept-online-curve.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from concept_synth import error_stream, stream_names, stream_seed, synth_streams  # noqa: E402


def curves(name: str, seeds: list[int], runs: int, events: int) -> np.ndarray:
    """The tree's errors (runs × events), test-then-train from the first event."""
    args = argparse.Namespace(warm=0, online_warm=0, synth_ref=events, synth_pre=0,
                              synth_after=0)
    out = []
    for seed in seeds:
        for r in range(runs):
            a, b = synth_streams(stream_seed(seed, r, "online"))[name]
            out.append(error_stream(a, b, "online", args))
    return np.array(out)


def warm_row(e: np.ndarray, warm: int, ref: int, pre: int, boot: int,
             rng: np.random.Generator) -> str:
    r = e[:, warm:warm + ref].mean(axis=1)
    p = e[:, warm + ref:warm + ref + pre].mean(axis=1)
    d = p - r
    idx = rng.integers(0, len(d), (boot, len(d)))
    lo, hi = np.quantile(d[idx].mean(axis=1), [0.025, 0.975])
    pooled = float(p.mean())
    spread = (float(p.std(ddof=1) / np.sqrt(pooled * (1 - pooled) / pre))
              if 0 < pooled < 1 else np.nan)
    higher = int(np.count_nonzero(d > 0))
    return (f"| {warm:,} | {100 * r.mean():.2f} | {100 * pooled:.2f} | {100 * d.mean():+.2f} "
            f"({100 * lo:+.2f} – {100 * hi:+.2f}) | {higher} of {len(d)} | {spread:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--runs", type=int, default=40, help="runs per seed")
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--block", type=int, default=1_000)
    ap.add_argument("--ref", type=int, default=10_000, help="part 2's --synth-ref")
    ap.add_argument("--pre", type=int, default=2_000, help="part 2's --synth-pre")
    ap.add_argument("--warms", type=int, nargs="+",
                    default=[10_000, 20_000, 30_000, 35_000, 40_000, 45_000])
    ap.add_argument("--synth-streams", nargs="*", default=["SEA", "Hyperplane"])
    ap.add_argument("--boot", type=int, default=2_000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.events % args.block:
        raise SystemExit("--events must be a multiple of --block")
    bad = [w for w in args.warms if w + args.ref + args.pre > args.events]
    if bad:
        raise SystemExit(f"--warms {bad}: the window ends past --events {args.events:,}")
    cmd = "PYTHONPATH=$PWD .venv/bin/python bench/concept_online_curve.py " + " ".join(
        sys.argv[1:])
    lines = ["# The online tree's error stream: where it is a null", "", f"`{cmd}`", "",
             f"Test-then-train Hoeffding tree (River's defaults) from the first event of each "
             f"generator's first concept, part 2's online seeds, {args.runs} runs per seed, "
             f"seeds {', '.join(map(str, args.seeds))}.", ""]
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for name in stream_names(args):
        e = curves(name, args.seeds, args.runs, args.events)
        blocks = e.reshape(len(e), -1, args.block).mean(axis=(0, 2))
        lines += [f"## {name}", "",
                  f"Error (%) per {args.block:,} events, pooled over {len(e)} runs:", "",
                  "| events from | " + " | ".join(f"+{i * args.block // 1000}k"
                                                  for i in range(10)) + " |",
                  "|---|" + "---|" * 10]
        for start in range(0, len(blocks), 10):
            row = blocks[start:start + 10]
            lines.append(f"| {start * args.block:,} | "
                         + " | ".join(f"{100 * x:.1f}" for x in row) + " |")
        lines += ["", f"Reference {args.ref:,} events after the warm-up, then {args.pre:,} "
                  "pre-change events:", "",
                  "| warm-up | reference error % | pre-change error % | pre − reference "
                  "(95 % CI) | runs higher | spread of the pre-change rates / binomial sd |",
                  "|---|---|---|---|---|---|"]
        lines += [warm_row(e, w, args.ref, args.pre, args.boot, rng) for w in args.warms]
        lines.append("")
        print("\n".join(lines[-len(args.warms) - 5:]), flush=True)
    lines.append(f"Wall time {time.perf_counter() - t0:.0f} s.")
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
