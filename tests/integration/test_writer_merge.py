"""The monitors merge several first-stage writers' frames on a real broker (issue 14).

Two fake writers' version-3 frames (frames.py: writer block, watermark, heartbeats) are
written straight into internal partition 0, badly interleaved: writer 0 (the events whose
``c1`` is ``a``) runs 2,000 events ahead of writer 1 (the others), which without the merge
puts writer 0's keys in a block (a false ``c1`` episode).  Internal partition 1 carries
version-2 frames of one writer, read as before.  The monitors (``--stage monitor``, a
subprocess) are killed with -9 mid-stream; a second run in this process takes over from
the checkpoints.  Checked: the pipeline saw partition 0 in the writers' total order
(timestamp, writer), from the checkpoint on exactly the rest of it (nothing the
checkpointed state holds again, nothing lost), partition 1 likewise, and the final
states hold every event once.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.config import load_config
from stream.engine.baselines import resolve_baselines
from stream.runtime.frames import WriterHeader, heartbeat, pack
from stream.runtime.mergerun import MERGE_KEY
from stream.runtime.monitors import FramedRunner, monitor_config
from stream.runtime.repartition import BUFFER_POLLS
from tests.integration.test_keyed_topics import (
    COLUMNS,
    MAX_POLL,
    _config,
    _episodes,
    _two_processes,
)
from tests.support.events import CLEAN, m1_events
from tests.support.kafka import produce
from tests.support.processes import StreamdriftRun
from tests.support.runs import InProcess, cached_baselines, checkpoints
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

_wait = functools.partial(wait_for, interval=0.2, retry=())
T0 = 1_700_000_000_000  # the events' Kafka timestamps: T0 + their number (ms)
FAR = 2**62  # a watermark past every event: the closing heartbeats
FRAME = 100  # messages per frame
WID = (b"W" * 16, b"V" * 16)


class Src:
    """A source record as a writer forwards it."""

    def __init__(self, i: int, value: bytes) -> None:
        self.topic, self.partition, self.offset = "src", i % 4, i
        self.timestamp, self.key, self.value = T0 + i, None, value


def _v3(writer: int, msgs: list[tuple[int, bytes]], first: int) -> bytes:
    """Writer ``writer``'s frame of (event number, value); its positions count from
    ``first``; its watermark: its newest timestamp."""
    head = WriterHeader(WID[writer], 1, 2, writer, T0 + msgs[-1][0])
    return pack([Src(i, v) for i, v in msgs], range(first, first + len(msgs)), head)


def _frames(writer: int, msgs: list[tuple[int, bytes]]) -> list[bytes]:
    return [_v3(writer, msgs[k:k + FRAME], k) for k in range(0, len(msgs), FRAME)]


def _c1(value: bytes) -> str:
    return str(orjson.loads(value)["f"]["c1"])


def _ts(values: Any) -> list[int]:
    return [int(orjson.loads(v)["ts"]) for v in values]


def _state(config: Any, topic: str) -> dict[int, dict[str, Any]]:
    return {p: cp.state for (m, t, p), cp in checkpoints(config).items()
            if m == "m1" and t == topic}


def _setup(bootstrap: str, make_topic: Any, tmp_path: Path, group: str,
           partitions: int) -> tuple[str, Path]:
    """A source topic (nothing reads it here), a repartition topic of ``partitions``, the
    module's reference and a run's configuration: (repartition topic, config path)."""
    topic = make_topic(partitions=1)
    rp_topic = make_topic(partitions=partitions)
    (tmp_path / "reference.jsonl").write_bytes(
        b"\n".join(m1_events(77, [(10_000, CLEAN)], COLUMNS)))
    return rp_topic, _config(tmp_path, bootstrap, topic, f"{group}-{topic}", interval=1,
                             repartition={"topic": rp_topic, "partitions": partitions})


def test_two_writers_merged_in_order_across_a_kill9(kafka_bootstrap, make_topic,
                                                    tmp_path: Path) -> None:
    rp_topic, cfg = _setup(kafka_bootstrap, make_topic, tmp_path, "wm", 2)
    config = load_config(cfg)
    resolve_baselines(config)  # cached before the subprocess starts
    mon = monitor_config(config)
    events = m1_events(21, [(6_000, CLEAN)], COLUMNS)
    mine = {w: [(i, v) for i, v in enumerate(events) if (_c1(v) == "a") == (w == 0)]
            for w in (0, 1)}
    f0, f1 = _frames(0, mine[0]), _frames(1, mine[1])
    # writer 0 runs ahead: its frames up to event 4,000 before writer 1's up to 2,000
    cut0 = next(k for k, f in enumerate(mine[0][::FRAME]) if f[0] >= 4_000)
    cut1 = next(k for k, f in enumerate(mine[1][::FRAME]) if f[0] >= 2_000)
    first = f0[:cut0] + f1[:cut1]
    rest = f1[cut1:] + f0[cut0:] + [heartbeat(WriterHeader(WID[w], 1, 2, w, FAR))
                                    for w in (0, 1)]
    old = m1_events(22, [(3_000, CLEAN)], COLUMNS)  # version 2, one writer, partition 1
    old_frames = [pack([Src(i, v) for i, v in enumerate(old[k:k + FRAME], k)],
                       range(k, min(k + FRAME, len(old))))
                  for k in range(0, len(old), FRAME)]
    send = functools.partial(produce, kafka_bootstrap, rp_topic,
                             max_in_flight_requests_per_connection=1, acks="all")
    send(first, partition=0)
    send(old_frames[:15], partition=1)

    a = StreamdriftRun(cfg, "--stage", "monitor", port=config.metrics.port, name="a")
    try:
        # writer 0's events past writer 1's watermark are held back: at most about 2,000
        a.wait_consumed(1_500 + 1_500, timeout=120)
        _wait(lambda: a.check_alive() is None and len(_state(mon, rp_topic)) == 2, 60,
              "a checkpoint of both partitions")
        consumed = int(a.consumed())
        send(old_frames[15:20], partition=1)  # processed, perhaps not checkpointed: killed
        a.wait_consumed(consumed + 500, timeout=60)
    finally:
        a.kill9()
    saved = _state(mon, rp_topic)  # what the second run restores from
    held = {p: int(s["events"]) for p, s in saved.items()}
    merge = saved[0][MERGE_KEY]
    assert merge["delivered"] == held[0] and MERGE_KEY not in saved[1]
    assert merge["merge"]["commit_offset"] <= merge["merge"]["read_to"]  # frames held

    send(rest, partition=0)
    send(old_frames[20:], partition=1)
    b = InProcess(cfg, cached_baselines(), "wm-b")
    b.runner = FramedRunner(mon, b.pipeline, b.stop_event)
    seen: dict[int, list[bytes]] = {0: [], 1: []}
    process = b.pipeline.process

    def spy(messages: Any, *args: Any, **kwargs: Any) -> Any:
        seen[kwargs["partition"][1]].extend(messages)
        return process(messages, *args, **kwargs)

    b.pipeline.process = spy  # type: ignore[method-assign]
    b.start()
    try:
        todo = len(events) + len(old) - sum(held.values())
        _wait(lambda: b.alive() and b.pipeline.consumed >= todo, 120, "the second run",
              details=b.describe)
    finally:
        b.stop()
    final = {p: int(s["events"]) for p, s in _state(mon, rp_topic).items()}
    figures = b.runner.merges.figures()
    print(f"\n[writer merge] {len(events)} events of 2 writers on partition 0 (writer 0 "
          f"{len(mine[0])}, 2,000 events ahead), {len(old)} in version-2 frames on "
          f"partition 1; killed -9 with states {held}; the second run processed "
          f"{ {p: len(v) for p, v in seen.items()} }; final states {final}; merge {figures}")
    assert _ts(seen[0]) == _ts(events)[held[0]:]  # the total order, from the checkpoint on
    assert _ts(seen[1]) == _ts(old)[held[1]:]
    assert final == {0: len(events), 1: len(old)}  # every event in the state once
    assert figures["late"] == 0 and figures["buffered"] == 0


def test_two_processes_with_several_writers_open_no_episode_on_clean_keyed_data(
        kafka_bootstrap, make_topic, tmp_path: Path) -> None:
    """End to end with the writers' side (``source.repartition.writers: several``): two
    two-stage processes on a 4-partition topic keyed by ``c1``, each first stage writing
    its own source partitions (so each writer's keys differ), the monitors merging them:
    every event processed (a rebalance's batch in flight may be forwarded twice), no
    episode, and the monitors did merge version-3 frames."""
    topic = make_topic(partitions=4)
    (tmp_path / "reference.jsonl").write_bytes(
        b"\n".join(m1_events(77, [(10_000, CLEAN)], COLUMNS)))
    events = m1_events(23, [(6_000, CLEAN)], COLUMNS)
    cfg = _config(tmp_path, kafka_bootstrap, topic, f"sw-{topic}",
                  repartition={"topic": f"{topic}-rp", "partitions": 2, "writers": "several"})
    with _two_processes(kafka_bootstrap, topic, events, cfg, cached_baselines(), "sw",
                        writers=True) as runs:
        figures = [r.runner.merges.figures() for r in runs]
        written = [r.runner.repartitioner.forwarded for r in runs]

    def processed() -> int:
        return sum(r.pipeline.processed["m1"] for r in runs)
    episodes = {f"r{i}:{k}": v for i, r in enumerate(runs, 1) for k, v in _episodes(r).items()}
    print(f"\n[several writers, two processes] {len(events)} events; forwarded by each first "
          f"stage {written}; processed {processed()}; merges {figures}; episodes "
          f"{episodes or 'none'}")
    assert all(written), "a first stage wrote nothing: one writer, nothing to merge"
    assert sum(f["partitions"] for f in figures) >= 2  # every internal partition merged
    assert len(events) <= processed() <= len(events) + 2 * BUFFER_POLLS * MAX_POLL
    assert episodes == {}


def _gen_frames(gen: int, writers: int, index: int, msgs: list[tuple[int, bytes]],
                first: int) -> list[bytes]:
    """Frames of (event number, value) by writer ``index`` of ``writers`` in generation
    ``gen`` (its own writer id), each event from source partition ``number % 2`` at offset
    ``number``, its positions counting from ``first``; watermarks: the newest timestamp."""
    wid = bytes([97 + gen]) * 8 + bytes([65 + index]) * 8
    out = []
    for k in range(0, len(msgs), FRAME):
        chunk = msgs[k:k + FRAME]
        recs = [Src(i, v) for i, v in chunk]
        for r in recs:
            r.partition = r.offset % 2
        out.append(pack(recs, range(first + k, first + k + len(chunk)),
                        WriterHeader(wid, gen, writers, index, T0 + chunk[-1][0])))
    return out


def test_a_successors_copies_of_held_back_messages_are_folded_once(
        kafka_bootstrap, make_topic, tmp_path: Path) -> None:
    """Generation 1: writer 0 (source partition 0, even events) runs 1,000 events ahead of
    writer 1 (odd ones), so the monitors hold writer 0's messages from 1,000 on; writer 0
    crashes before its commit.  Generation 2: one writer takes both partitions and
    forwards partition 0 again from 1,000 (500 copies of held-back messages) and partition
    1 from 1,001.  The monitors fold each event once, in order: before 2026-12-06 the
    copies went side by side with their first copies, 500 values folded twice in a row."""
    rp_topic, cfg = _setup(kafka_bootstrap, make_topic, tmp_path, "cp", 1)
    mon = monitor_config(load_config(cfg))
    events = m1_events(23, [(3_000, CLEAN)], COLUMNS)
    numbered = list(enumerate(events))
    frames = _gen_frames(1, 2, 0, [e for e in numbered[:2_000] if e[0] % 2 == 0], 0)
    frames += _gen_frames(1, 2, 1, [e for e in numbered[:1_000] if e[0] % 2 == 1], 0)
    frames += _gen_frames(2, 1, 0, numbered[1_000:], 0)  # (partition 0 again from 1,000)
    frames.append(heartbeat(WriterHeader(b"c" * 16, 2, 1, 0, FAR)))
    produce(kafka_bootstrap, rp_topic, frames, partition=0,
            max_in_flight_requests_per_connection=1, acks="all")
    run = InProcess(cfg, cached_baselines(), "cp")
    run.runner = FramedRunner(mon, run.pipeline, run.stop_event)
    seen: list[bytes] = []
    process = run.pipeline.process

    def spy(messages: Any, *args: Any, **kwargs: Any) -> Any:
        seen.extend(messages)
        return process(messages, *args, **kwargs)

    run.pipeline.process = spy  # type: ignore[method-assign]
    run.start()
    try:
        _wait(lambda: run.alive() and run.pipeline.consumed >= len(events)
              and run.runner.merges.figures()["buffered"] == 0, 120, "the frames",
              details=run.describe)
        _wait(lambda: run.alive() and _state(mon, rp_topic).get(0, {}).get("events")
              == run.pipeline.consumed, 60, "a checkpoint of every event")
    finally:
        run.stop()
    figures = run.runner.merges.figures()
    print(f"\n[writer merge, copies] {len(events)} events, 500 forwarded again by the "
          f"successor while held back: folded {len(seen)}, merge {figures}")
    assert _ts(seen) == _ts(events)  # each once, in order
    assert figures["duplicates"] == 500 and figures["late"] == 0
    assert int(_state(mon, rp_topic)[0]["events"]) == len(events)
