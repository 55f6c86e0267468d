"""The cost of the monitors' merge of several first-stage writers (issue 14), per message.

stream/runtime/writermerge.py is what a monitor would add per internal partition when the
first stage has several writers: it buffers each writer's version-3 frames and releases
their messages in one (timestamp, generation, writer, position) order up to the writers'
smallest watermark.  Measured here without Kafka, in one process, next to the monitors' own
work on the same events, in rounds that alternate the two so that a change of the
machine's load hits both:

* ``merge``: :meth:`WriterMerge.add` of every frame of one internal partition: 2 writers
  (``--writers``), each with its own share of a keyed stream (each event to a writer at
  random, 4 events per millisecond: ties across writers), cut into frames of ``--frames``
  messages whose watermark is the writer's running maximum; the writers' frames arrive
  interleaved at random (each writer's in order), as two producers deliver them;
* ``unpack v3 - v2``: what the writer block and its checks add to unpacking a frame;
* ``monitors``: :meth:`Pipeline.process` of the same events in polls of 2 frames (the
  monitors' decoding and detectors, bench_scaleout.py's m1 configuration; without Kafka's
  fetch and the frames' unpacking, so less than the 2.27 µs measured with them in
  docs/benchmarks.md).

The bound it feeds: with several writers each process runs its share of both stages plus
the merge, so 2 processes over 1 is at most 2 (f + m) / (f + m + merge), with f = 5.1 µs
(the first stage with librdkafka's fetch and frames from columns) and m = 2.27 µs
(docs/benchmarks.md, "Scale-out on a keyed topic").  Writes
``bench/results/writermerge.md`` (``--out``).

Usage::

    PYTHONPATH=$PWD python bench/bench_writermerge.py --events 100000 --rounds 5 --seeds 1,2
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stream.runtime.frames import WriterHeader, heartbeat, pack, unpack  # noqa: E402
from stream.runtime.writermerge import WriterMerge  # noqa: E402
from tests.support.configs import m1_config, write_config  # noqa: E402
from tests.support.events import CLEAN, COLUMNS, m1_events  # noqa: E402

#: the first stage's and the monitors' cost per event (docs/benchmarks.md, 2026-12-05)
F_US, M_US = 5.1, 2.27
Rec = namedtuple("Rec", "topic partition offset timestamp key value")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def partition_frames(values: list[bytes], writers: int, size: int, seed: int,
                     ) -> tuple[list[bytes], list[bytes]]:
    """One internal partition's frames, version 3 and the same messages as version 2, in
    the order they arrive (a random interleaving of the writers' frames, each writer's in
    order), then each writer's last heartbeat (far ahead: everything is released)."""
    rng = np.random.default_rng(seed)
    n = len(values)
    stamps = np.arange(n, dtype=np.int64) // 4
    owner = rng.integers(0, writers, n)
    streams: list[list[tuple[bytes, bytes]]] = []
    for w in range(writers):
        idx = np.flatnonzero(owner == w)
        positions = np.arange(len(idx), dtype=np.int64) * 2  # (its other partitions')
        out = []
        for a in range(0, len(idx), size):
            at = idx[a:a + size]
            recs = [Rec("events", w, int(i), int(stamps[i]), None, values[i]) for i in at]
            pos = positions[a:a + size]
            head = WriterHeader(bytes([w]) * 16, 1, writers, w, int(stamps[at].max()))
            out.append((pack(recs, pos, head), pack(recs, pos)))
        streams.append(out)
    order = np.concatenate([np.full(len(s), w) for w, s in enumerate(streams)])
    rng.shuffle(order)
    nxt = [0] * writers
    v3, v2 = [], []
    for w in order.tolist():
        a, b = streams[w][nxt[w]]
        nxt[w] += 1
        v3.append(a)
        v2.append(b)
    v3 += [heartbeat(WriterHeader(bytes([w]) * 16, 1, writers, w, 2**62))
           for w in range(writers)]
    return v3, v2


def monitors_setup(work: Path) -> tuple[Any, dict[str, Any]]:
    """Model m1's configuration and baselines (reference in ``work``), as the monitors
    of the benchmarks here run them."""
    from stream.config import load_config
    from stream.engine.baselines import resolve_baselines
    (work / "reference.jsonl").write_bytes(
        b"\n".join(m1_events(77, [(10_000, CLEAN)], COLUMNS)))
    cfg = m1_config(bootstrap="127.0.0.1:9", topic="t", group="g", port=0,
                    detection={"false_alarm_events": 10_000_000, "window": 1000,
                               "cadence": 50})
    config = load_config(write_config(work / "c.yaml", cfg))
    return config, resolve_baselines(config)


def cpu() -> float:
    return time.process_time()


def time_merge(frames: list[Any], n: int) -> tuple[float, int]:
    m = WriterMerge(max_buffered=10 * n)
    t = cpu()
    out = 0
    for offset, f in enumerate(frames):
        out += len(m.add(offset, f))
    dt = cpu() - t
    assert out == n and m.late == 0, (out, n, m.late)
    return dt / n * 1e6, m.buffered


def time_unpack(raw: list[bytes], n: int) -> float:
    t = cpu()
    for r in raw:
        unpack(r)
    return (cpu() - t) / n * 1e6


def time_monitors(pipeline: Any, values: list[bytes], poll: int) -> float:
    t = cpu()
    for a in range(0, len(values), poll):
        pipeline.process(values[a:a + poll], base_index=a)
    return (cpu() - t) / len(values) * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--frames", default="250,500,1000", help="messages per frame")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seeds", default="1,2", help="one table per seed (the events, the "
                    "writers' shares and the arrival order)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "writermerge.md")
    args = ap.parse_args(argv)
    from stream.engine.pipeline import Pipeline

    load0 = os.getloadavg()
    sizes = [int(s) for s in args.frames.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {}
    with tempfile.TemporaryDirectory(prefix="writermerge-") as tmp:
        work = Path(tmp)
        config, baselines = monitors_setup(work)
        for seed in seeds:
            values = m1_events(seed, [(args.events, CLEAN)], COLUMNS)
            Pipeline(config, baselines).process(values[:2000], base_index=0)  # numba loaded
            data = {s: partition_frames(values, args.writers, s, seed) for s in sizes}
            unpacked = {s: [unpack(r) for r in data[s][0]] for s in sizes}
            res: dict[int, dict[str, list[float]]] = {
                s: {"merge": [], "v3": [], "v2": [], "mon": []} for s in sizes}
            for r in range(args.rounds):
                for s in sizes:
                    merge, _ = time_merge(unpacked[s], args.events)
                    v3 = time_unpack(data[s][0], args.events)
                    v2 = time_unpack(data[s][1], args.events)
                    mon = time_monitors(Pipeline(config, baselines), values, 2 * s)
                    for k, v in (("merge", merge), ("v3", v3), ("v2", v2), ("mon", mon)):
                        res[s][k].append(v)
                    log(f"seed {seed} round {r + 1} frames {s}: merge {merge:.3f} µs, unpack "
                        f"v3 {v3:.3f} / v2 {v2:.3f} µs, monitors {mon:.3f} µs per message")
            results[seed] = res
    load1 = os.getloadavg()
    lines = [
        "# The monitors' merge of several writers: cost per message",
        "",
        f"`bench/bench_writermerge.py --events {args.events} --writers {args.writers} "
        f"--frames {args.frames} --rounds {args.rounds} --seeds {args.seeds}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
        f"load {load0[0]:.1f} at the start, {load1[0]:.1f} at the end (shared machine). "
        "Process CPU time per message, median of the rounds (range); the merge and the "
        "monitors alternate in each round.",
        "",
        "| seed | messages per frame | merge (µs) | unpack v3 − v2 (µs) | monitors in "
        "process, m' (µs) | merge / m' | merge / m (2.27) | bound 2 (f+m) / (f+m+merge) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for seed, s in ((seed, s) for seed in seeds for s in sizes):
        d = results[seed][s]
        med = {k: statistics.median(v) for k, v in d.items()}
        extra = [a - b for a, b in zip(d["v3"], d["v2"], strict=True)]
        cost = med["merge"] + max(statistics.median(extra), 0.0)
        bound = 2 * (F_US + M_US) / (F_US + M_US + cost)

        def rng(v: list[float]) -> str:
            return f"{statistics.median(v):.3f} ({min(v):.3f}–{max(v):.3f})"

        lines.append(
            f"| {seed} | {s} | {rng(d['merge'])} | {rng(extra)} | {rng(d['mon'])} | "
            f"{med['merge'] / med['mon']:.3f} | {med['merge'] / M_US:.3f} | {bound:.3f}× |")
    lines += [
        "",
        f"f = {F_US} µs and m = {M_US} µs are docs/benchmarks.md's figures (\"Scale-out on a "
        "keyed topic\", 2026-12-05); the bound counts the merge and the extra unpacking "
        "(when positive). m' is the monitors' decoding and detectors alone (no fetch, no "
        "unpacking), hence below m.",
        ""]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
