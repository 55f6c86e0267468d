"""The monitors' cost of the several-writer merge as wired into FramedRunner (issue 14).

bench_writermerge.py measures :class:`WriterMerge` alone.  Here the whole second stage's
processing of one internal partition, :meth:`FramedRunner._process` (unpacking, the merge,
the released messages' bookkeeping, decoding and detectors, the commit offset), without
Kafka's fetch, on the same events in the same arrival order of frames:

* ``v3``: version-3 frames of 2 writers (``--writers``; each event to a writer at random,
  4 events per ms, the writers' frames in a random interleaving, each writer's in order),
  merged;
* ``v2``: the same frames as version 2, processed at once (today's one-writer path).

Polls of 2 frames (FRAMES_PER_POLL), a fresh runner and pipeline per pass, the two paths
alternating in each round so that a change of the machine's load hits both; process CPU
time per message, median of the rounds (range).  Writes ``bench/results/mergerun.md``.

Usage::

    PYTHONPATH=$PWD python bench/bench_mergerun.py --events 100000 --rounds 5 --seeds 1,2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import namedtuple
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_writermerge import monitors_setup, partition_frames  # noqa: E402

from stream.runtime.monitors import FRAMES_PER_POLL, FramedRunner  # noqa: E402
from tests.support.events import CLEAN, COLUMNS, m1_events  # noqa: E402

Rec = namedtuple("Rec", "topic partition offset timestamp key value")
TP = namedtuple("TP", "topic partition")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_pass(config: Any, baselines: Any, frames: list[bytes], n: int) -> tuple[float, int]:
    """Process CPU µs per message of FramedRunner._process over ``frames``; the messages
    the pipeline was given."""
    from stream.engine.pipeline import Pipeline

    pipeline = Pipeline(config, baselines)
    runner = FramedRunner(config, pipeline)
    tp = TP("rp", 0)
    recs = [Rec("rp", 0, i, 0, None, f) for i, f in enumerate(frames)]
    t = time.process_time()
    for a in range(0, len(recs), FRAMES_PER_POLL):
        done, _, _ = runner._process({tp: recs[a:a + FRAMES_PER_POLL]})
        runner.done.update(done)
    dt = time.process_time() - t
    got = pipeline.consumed
    assert got == n, (got, n)
    assert runner.done[tp] == len(recs)  # everything released: committed to the end
    return dt / n * 1e6, got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--frames", default="250,1000", help="messages per frame")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mergerun.md")
    args = ap.parse_args(argv)

    load0 = os.getloadavg()
    sizes = [int(s) for s in args.frames.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[tuple[int, int], dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="mergerun-") as tmp:
        work = Path(tmp)
        config, baselines = monitors_setup(work)
        for seed in seeds:
            values = m1_events(seed, [(args.events, CLEAN)], COLUMNS)
            data = {s: partition_frames(values, args.writers, s, seed) for s in sizes}
            run_pass(config, baselines, data[sizes[0]][1][:8], 8 * sizes[0])  # numba loaded
            for s in sizes:
                res = results[(seed, s)] = {"v3": [], "v2": []}
                for r in range(args.rounds):
                    v3, _ = run_pass(config, baselines, data[s][0], args.events)
                    v2, _ = run_pass(config, baselines, data[s][1], args.events)
                    res["v3"].append(v3)
                    res["v2"].append(v2)
                    log(f"seed {seed} frames {s} round {r + 1}: v3 merged {v3:.3f} µs, v2 "
                        f"{v2:.3f} µs per message")
    load1 = os.getloadavg()

    def rng(v: list[float]) -> str:
        return f"{statistics.median(v):.3f} ({min(v):.3f}–{max(v):.3f})"

    lines = [
        "# The several-writer merge in FramedRunner: the monitors' cost per message",
        "",
        f"`bench/bench_mergerun.py --events {args.events} --writers {args.writers} "
        f"--frames {args.frames} --rounds {args.rounds} --seeds {args.seeds}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
        f"load {load0[0]:.1f} at the start, {load1[0]:.1f} at the end (shared machine). "
        "`FramedRunner._process` (unpacking, merge, decoding, detectors; no fetch) of one "
        "internal partition, polls of 2 frames; process CPU time per message, median of "
        "the rounds (range); v3 and v2 alternate in each round.",
        "",
        "| seed | messages per frame | v3, 2 writers merged (µs) | v2, at once (µs) | "
        "v3 − v2 (µs) | v3 / v2 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (seed, s), d in results.items():
        diff = [a - b for a, b in zip(d["v3"], d["v2"], strict=True)]
        ratio = [a / b for a, b in zip(d["v3"], d["v2"], strict=True)]
        lines.append(f"| {seed} | {s} | {rng(d['v3'])} | {rng(d['v2'])} | {rng(diff)} | "
                     f"{rng(ratio)} |")
    lines.append("")
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
