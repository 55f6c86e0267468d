"""The monitors' several-writer merge wired into FramedRunner (stream/runtime/monitors.py,
mergerun.py): the order the pipeline sees, the offsets committed and checkpointed, the
restore from a checkpoint, refused frames and idle loops, without a broker (the broker's
side is tests/integration/test_writer_merge.py)."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import numpy as np
import pytest

from stream.runtime.frames import BAD_FRAME, WriterHeader, heartbeat, pack
from stream.runtime.mergerun import MERGE_KEY, PartitionMerges
from stream.runtime.monitors import FramedRunner, Messages
from stream.runtime.pooltap import PoolTap

Rec = namedtuple("Rec", "topic partition offset timestamp key value")
TP = namedtuple("TP", "topic partition")
WID = [bytes([65 + i]) * 16 for i in range(4)]
TPX = TP("rp", 0)
FAR = 10**9


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Pipeline:
    def __init__(self) -> None:
        self.rejected: dict[str, int] = {}
        self.fresh = ("m1", "m2")

    def count_rejected(self, invalid: dict[str, int]) -> None:
        for k, v in invalid.items():
            self.rejected[k] = self.rejected.get(k, 0) + v

    def export_partition(self, key: Any) -> dict[str, dict[str, Any]]:
        return {"m1": {"n": 1}, "m2": {"n": 1}}


def _runner(monkeypatch: pytest.MonkeyPatch, seen: dict[str, list[bytes]],
            clock: Clock | None = None, dead_letter: bool = False) -> FramedRunner:
    """A FramedRunner whose pipeline records what each model is given (after its skip)."""
    from stream.runtime.runner import KafkaRunner

    def process(self: Any, polled: dict[Any, Messages]) -> Any:
        for tp, recs in polled.items():
            if not len(recs):
                continue
            skip = self._skip_for(tp, recs) or {}
            for name in ("m1", "m2"):
                seen.setdefault(name, []).extend(recs.values[skip.get(name, 0):])
        return {tp: -1 for tp, recs in polled.items() if len(recs)}, [], []

    monkeypatch.setattr(KafkaRunner, "_process", process)
    runner = FramedRunner.__new__(FramedRunner)
    runner.pipeline = _Pipeline()  # type: ignore[assignment]
    runner.tap, runner.pool_out = PoolTap(False, {}), None
    runner.config = type("C", (), {"source": type("S", (), {
        "dead_letter": object() if dead_letter else None})()})()
    runner.done, runner.skip_until, runner.checkpointed = {}, {}, {}
    runner.merges = PartitionMerges(clock or Clock())
    return runner


def _v3(offset: int, writer: int, writers: int, msgs: list[tuple[int, int]],
        wm: int | None = None) -> Rec:
    """Writer ``writer``'s frame of (timestamp, position) messages at ``offset``."""
    recs = [Rec("src", writer, p, t, None, b"w%d:%d" % (writer, p)) for t, p in msgs]
    head = WriterHeader(WID[writer], 1, writers, writer,
                        max(t for t, _ in msgs) if wm is None else wm)
    return Rec("rp", 0, offset, 0, None, pack(recs, [p for _, p in msgs], head))


def _beat(offset: int, writer: int, writers: int, wm: int) -> Rec:
    return Rec("rp", 0, offset, 0, None, heartbeat(WriterHeader(WID[writer], 1, writers,
                                                                writer, wm)))


def _v2(offset: int, tag: int) -> Rec:
    src = [Rec("src", 9, tag * 10 + i, 0, None, b"v2:%d:%d" % (tag, i)) for i in range(3)]
    return Rec("rp", 0, offset, 0, None, pack(src, [tag * 10 + i for i in range(3)]))


def _stream(seed: int, mixed: bool = False) -> tuple[list[Rec], list[bytes]]:
    """Two writers' frames (5 messages each) on one internal partition, badly interleaved:
    writer 0 runs several frames ahead of writer 1; the messages' timestamps interleave.
    Closed by both writers' heartbeats.  ``mixed``: version-2 frames among them.  Returns
    the records and the messages in the merge's order: (timestamp, writer, position), as
    each writer has at most one message per millisecond (test_writermerge.py covers the
    interleaving of several)."""
    rng = np.random.default_rng(seed)
    per = {w: np.sort(rng.choice(400, 40, replace=False)) for w in (0, 1)}
    frames = {w: [[(int(t), 5 * k + j) for j, t in enumerate(per[w][5 * k:5 * k + 5])]
                  for k in range(8)] for w in (0, 1)}
    order: list[tuple[int, int]] = [(0, k) for k in range(5)]  # writer 0 five frames ahead
    left = {0: list(range(5, 8)), 1: list(range(8))}  # then at random, each writer in order
    while left[0] or left[1]:
        w = int(rng.integers(0, 2)) if left[0] and left[1] else (0 if left[0] else 1)
        order.append((w, left[w].pop(0)))
    recs: list[Rec] = []
    tags = 0
    for w, k in order:
        if mixed and rng.random() < 0.25:
            recs.append(_v2(len(recs), tags))
            tags += 1
        recs.append(_v3(len(recs), w, 2, frames[w][k]))
    recs += [_beat(len(recs), 0, 2, FAR), _beat(len(recs) + 1, 1, 2, FAR)]
    total = sorted((t, w, p) for w in (0, 1) for fr in frames[w] for t, p in fr)
    return recs, [b"w%d:%d" % (w, p) for _, w, p in total]


def _polls(recs: list[Rec], size: int = 2) -> list[list[Rec]]:
    return [recs[i:i + size] for i in range(0, len(recs), size)]


def _feed(runner: FramedRunner, recs: list[Rec]) -> list[int]:
    """Polls of two records; after each, the offset the runner would commit."""
    dones = []
    for batch in _polls(recs):
        done, _, _ = runner._process({TPX: batch})
        runner.done.update(done)
        dones.append(runner.done[TPX])
    return dones


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_two_writers_are_processed_in_the_total_order_and_committed_behind_it(
        monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    recs, total = _stream(seed)
    seen: dict[str, list[bytes]] = {}
    runner = _runner(monkeypatch, seen)
    dones = _feed(runner, recs)
    assert seen["m1"] == total  # the pipeline saw the total order, each message once
    # the commit offset: the oldest frame with a message the pipeline has not seen yet
    got: list[bytes] = []
    runner2 = _runner(monkeypatch, {"m1": got, "m2": []})
    for batch, done in zip(_polls(recs), dones, strict=True):
        runner2._process({TPX: batch})
        last = batch[-1].offset
        waiting = [r.offset for r in recs[:last + 1] if any(
            v not in got for v in _values(r))]
        assert done == (min(waiting) if waiting else last + 1)
    assert dones[2] < recs[5].offset  # writer 0 ran ahead: its frames were held back


def _values(r: Rec) -> list[bytes]:
    from stream.runtime.frames import unpack

    return [v or b"" for v in unpack(r.value).values]


@pytest.mark.parametrize("seed", [4, 5])
@pytest.mark.parametrize("mixed", [False, True], ids=["v3", "v3+v2"])
def test_a_restore_from_any_checkpoint_processes_each_message_once(
        monkeypatch: pytest.MonkeyPatch, seed: int, mixed: bool) -> None:
    recs, _ = _stream(seed, mixed)
    whole: dict[str, list[bytes]] = {}
    _feed(_runner(monkeypatch, whole), recs)
    polls = _polls(recs)
    for cut in range(1, len(polls)):
        before: dict[str, list[bytes]] = {}
        runner = _runner(monkeypatch, before)
        _feed(runner, [r for p in polls[:cut] for r in p])
        states = runner._export(TPX)
        assert all(MERGE_KEY in s for s in states.values())
        offset = runner.done[TPX]  # the checkpoint's offset
        after: dict[str, list[bytes]] = {}
        again = _runner(monkeypatch, after)
        assert again.merges.restore(TPX, {n: s[MERGE_KEY] for n, s in states.items()}) == {}
        _feed(again, [r for r in recs if r.offset >= offset])
        assert before.get("m1", []) + after["m1"] == whole["m1"], cut


def test_checkpoints_cut_between_models_skip_what_each_state_holds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    recs, total = _stream(6)
    polls = _polls(recs)
    entries = {}
    for name, cut in (("m1", 6), ("m2", 11)):  # m2's checkpoint is the newer
        runner = _runner(monkeypatch, {})
        _feed(runner, [r for p in polls[:cut] for r in p])
        entries[name] = (runner._export(TPX)[name][MERGE_KEY], runner.done[TPX])
    n1, n2 = entries["m1"][0]["delivered"], entries["m2"][0]["delivered"]
    assert 0 < n1 < n2
    after: dict[str, list[bytes]] = {}
    again = _runner(monkeypatch, after)
    skips = again.merges.restore(TPX, {n: e for n, (e, _) in entries.items()})
    assert skips == {"m2": n2 - n1}
    again.skip_until[TPX] = skips
    again.merges.counted.add(TPX)
    _feed(again, [r for r in recs if r.offset >= entries["m1"][1]])  # the oldest offset
    assert after["m1"] == total[n1:] and after["m2"] == total[n2:]
    assert TPX not in again.skip_until


def test_a_refused_frame_is_a_bad_frame_and_the_partition_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, list[bytes]] = {}
    runner = _runner(monkeypatch, seen, dead_letter=True)
    first = _v3(5, 0, 1, [(10, 0)], wm=20)
    back = _v3(3, 0, 1, [(11, 1)], wm=20)  # an offset before one read: after a seek back
    _, poison, _ = runner._process({TPX: [first, back]})
    assert [(r.offset, why) for r, why in poison] == [(3, BAD_FRAME)]
    assert runner.pipeline.rejected == {BAD_FRAME: 1}  # type: ignore[attr-defined]
    runner._process({TPX: [_v3(6, 0, 1, [(12, 2)], wm=FAR)]})
    assert seen["m1"] == [b"w0:0", b"w0:2"]


def test_an_idle_loop_releases_what_a_silent_writer_held_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    seen: dict[str, list[bytes]] = {}
    runner = _runner(monkeypatch, seen, clock)
    done, _, _ = runner._process({TPX: [_v3(0, 0, 2, [(10, 0), (11, 1)], wm=50)]})
    runner.done.update(done)
    assert "m1" not in seen and runner.done[TPX] == 0  # writer 1 never heard: held back
    pm = runner.merges
    assert pm.tick({TPX}) == {}
    clock.now += 31  # writer 1 silent for max_wait_s: left out
    assert set(pm.tick({TPX})) == {TPX}
    done, _, _ = runner._process({TPX: []})  # the idle loop's tick
    runner.done.update(done)
    assert seen["m1"] == [b"w0:0", b"w0:1"] and runner.done[TPX] == 1
    assert pm.figures()["skips"] == 2 and pm.figures()["buffered"] == 0


def test_version_2_frames_keep_no_merge(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, list[bytes]] = {}
    runner = _runner(monkeypatch, seen)
    done, _, _ = runner._process({TPX: [_v2(7, 0), _v2(8, 1)]})
    assert done == {TPX: 9} and not runner.merges.merges
    assert runner._export(TPX) == {"m1": {"n": 1}, "m2": {"n": 1}}


def test_the_merge_metrics_are_exported_summed_and_documented(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from stream.sinks.merge_metrics import WriterMergeCollector
    from tests.support.promql import load_contract

    runner = _runner(monkeypatch, {})
    runner._process({TPX: [_v3(0, 0, 2, [(10, 0), (11, 1)], wm=50)]})  # held back
    runner._process({TPX: [_v3(1, 1, 2, [(5, 0)], wm=6)]})  # releases writer 1's (5)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WriterMergeCollector(runner.merges))
    text = generate_latest(registry).decode()
    got = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
           if line.startswith("streamdrift_writer_merge")}
    assert got["streamdrift_writer_merge_buffered_messages"] == 2  # (10, 11) wait for w1
    assert got["streamdrift_writer_merge_partitions"] == 1
    assert got["streamdrift_writer_merge_late_messages_total"] == 0
    runner.merges.drop(TPX)  # the counts stay
    runner.merges.merges[TPX] = runner.merges._new(TPX)
    runner.merges.merges[TPX].late = 3
    assert runner.merges.figures()["late"] == 3
    documented = load_contract().series_names()
    assert {name for name in got} <= set(documented), set(got) - set(documented)
    assert len(got) == 7
