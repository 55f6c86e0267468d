"""The monitors' merge of several first-stage writers (stream/runtime/writermerge.py) and
the version-3 frames it reads (stream/runtime/frames.py), without a broker."""

from __future__ import annotations

import json
import logging
from collections import Counter, namedtuple
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.runtime.frames import (
    MAGIC,
    Frame,
    FrameError,
    WriterHeader,
    heartbeat,
    pack,
    unpack,
)
from stream.runtime.writermerge import MergeState, Released, WriterMerge
from tests.stream.test_frames import cut_or_damaged_is_a_frame_error

Rec = namedtuple("Rec", "topic partition offset timestamp key value")
WID = [bytes([65 + i]) * 16 for i in range(8)]
FAR = 10**9  # a watermark past every timestamp of a test


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def header(i: int, n: int, wm: int, gen: int = 1) -> WriterHeader:
    return WriterHeader(WID[i], gen, n, i, wm)


def frame(i: int, n: int, msgs: list[tuple[int, int]], wm: int | None = None,
          gen: int = 1) -> Frame:
    """Writer ``i`` of ``n``'s frame of messages (timestamp, position), through bytes; each
    from source partition ``i`` at offset ``gen`` x 1e6 + its position (a record of its
    own: the merge releases one copy of a source record only)."""
    recs = [Rec("src", i, gen * 10**6 + p, t, None, b"%d:%d:%d" % (gen, i, p))
            for t, p in msgs]
    if wm is None:
        wm = max(t for t, _ in msgs)
    return unpack(pack(recs, [p for _, p in msgs], header(i, n, wm, gen)))


def beat(i: int, n: int, wm: int, gen: int = 1) -> Frame:
    return unpack(heartbeat(header(i, n, wm, gen)))


Out = tuple[tuple[int, int, int, int], bool, bytes]


def rows(r: Released) -> list[Out]:
    for o, j, v in zip(r.column("offset").tolist(), r.column("row").tolist(), r.values,
                       strict=True):
        assert r.frames[o].values[j] == v  # each message with its frame and row
    return [(k, bool(late), v or b"") for k, late, v in
            zip(r.keys(), r.late.tolist(), r.values, strict=True)]


def feed(m: WriterMerge, frames: list[tuple[int, Frame]]) -> list[Out]:
    out: list[Out] = []
    for offset, f in frames:
        out += rows(m.add(offset, f))
    return out


def key_of(f: Frame, j: int) -> tuple[int, int, int, int]:
    w = f.writer
    assert w is not None and f.positions is not None
    return (int(f.timestamps[j]), w.generation, w.index, int(f.positions[j]))


def scenario(seed: int, writers: int, broken: float = 0.0, gen: int = 1,
             t0: int = 0) -> list[tuple[int, Frame]]:
    """Each writer's messages (few distinct timestamps: ties across writers), cut into
    frames of random sizes with heartbeats between, its watermark the running maximum
    (``broken``: the share of messages moved below it), a last heartbeat far ahead; the
    writers' frames interleaved at random on the partition (each writer's in order), at
    increasing offsets with gaps."""
    rng = np.random.default_rng(seed)
    streams = []
    for i in range(writers):
        m = int(rng.integers(0, 80))
        ts = t0 + np.sort(rng.integers(0, 30, m))
        if broken:
            low = rng.random(m) < broken
            ts[low] -= rng.integers(0, 15, int(low.sum()))
        pos = np.sort(rng.choice(8 * m + 1, m, replace=False))
        fs: list[Frame] = []
        j, wm = 0, t0
        while j < m:
            if rng.random() < 0.2:
                fs.append(beat(i, writers, wm, gen))
            k = int(rng.integers(1, 16))
            msgs = list(zip(ts[j:j + k].tolist(), pos[j:j + k].tolist(), strict=True))
            wm = max(wm, max(t for t, _ in msgs))
            fs.append(frame(i, writers, msgs, wm, gen))
            j += k
        fs.append(beat(i, writers, FAR, gen))
        streams.append(fs)
    order = np.concatenate([np.full(len(s), i) for i, s in enumerate(streams)])
    rng.shuffle(order)
    nxt = [0] * writers
    out = []
    offset = int(rng.integers(0, 100))
    for i in order.tolist():
        out.append((offset, streams[i][nxt[i]]))
        nxt[i] += 1
        offset += int(rng.integers(1, 4))
    return out


def merge_order(msgs: list[tuple[tuple[int, int, int, int], bytes]]
                ) -> list[tuple[tuple[int, int, int, int], bytes]]:
    """``msgs`` (key, value) in the merge's release order, exactly (fractions): by
    timestamp, then each (timestamp, generation, writer)'s messages spread evenly over
    the millisecond (rank + 1/2 over their count, in key order), then generation, writer,
    position."""
    groups: dict[tuple[int, int, int], list[tuple[tuple[int, int, int, int], bytes]]] = {}
    for k, v in sorted(msgs):
        groups.setdefault(k[:3], []).append((k, v))
    spread = [((k[0], Fraction(2 * r + 1, 2 * len(g)), k[1], k[2], k[3]), k, v)
              for g in groups.values() for r, (k, v) in enumerate(g)]
    return [(k, v) for _, k, v in sorted(spread)]


def everything(frames: list[tuple[int, Frame]]) -> list[Out]:
    """Every message of ``frames`` in the merge's order, none late."""
    return [(k, False, v) for k, v in merge_order(
        [(key_of(f, j), f.values[j] or b"") for _, f in frames for j in range(len(f))])]


def longest_run(seq: list[int]) -> int:
    best = run = 0
    for a, b in zip([None, *seq], seq, strict=False):
        run = run + 1 if a == b else 1
        best = max(best, run)
    return best


# -- frames, version 3 ---------------------------------------------------------------------

def test_a_version_3_frame_round_trips_with_its_writer_and_a_heartbeat_has_no_messages(
) -> None:
    f = frame(2, 3, [(5, 10), (7, 11), (7, 40)], wm=9, gen=12)
    assert f.writer == WriterHeader(WID[2], 12, 3, 2, 9)
    assert f.timestamps.tolist() == [5, 7, 7] and f.positions.tolist() == [10, 11, 40]
    assert f.values == [b"12:2:10", b"12:2:11", b"12:2:40"]
    hb = beat(0, 2, 123)
    assert len(hb) == 0 and hb.writer == WriterHeader(WID[0], 1, 2, 0, 123)
    assert hb.positions is not None and len(hb.positions) == 0


def test_version_1_and_2_frames_still_unpack_without_a_writer() -> None:
    recs = [Rec("t", 0, 1, 2, b"k", b"v"), Rec("t", 1, 3, 4, None, None)]
    v1, v2 = unpack(pack(recs)), unpack(pack(recs, [7, 8]))
    assert v1.positions is None and v1.writer is None and v1.values == [b"v", None]
    assert v2.positions.tolist() == [7, 8] and v2.writer is None
    assert pack(recs)[4] == 1 and pack(recs, [7, 8])[4] == 2
    assert pack(recs, [7, 8], header(0, 1, 4))[4] == 3


@pytest.mark.parametrize("bad", [
    WriterHeader(WID[0][:15], 1, 2, 0, 0),   # an id of 15 bytes
    WriterHeader(WID[0], 1, 2, 2, 0),        # index past the writers
    WriterHeader(WID[0], 1, 0, 0, 0),        # no writers
    WriterHeader(WID[0], -1, 1, 0, 0),       # a negative generation
])
def test_a_writer_block_out_of_range_is_refused(bad: WriterHeader) -> None:
    with pytest.raises(FrameError):
        pack([Rec("t", 0, 1, 0, None, b"v")], [0], bad)


def test_a_version_3_frame_that_breaks_its_own_promises_is_a_frame_error() -> None:
    recs = [Rec("t", 0, 1, 5, None, b"a"), Rec("t", 0, 2, 6, None, b"b")]
    good = pack(recs, [3, 4], header(0, 2, 6))
    # positions not increasing, a timestamp past the watermark: patched in the bytes
    # (pack refuses to write them)
    with pytest.raises(FrameError):
        pack(recs, [4, 3], header(0, 2, 6))
    with pytest.raises(FrameError):
        pack(recs, [3, 4], header(0, 2, 5))
    head = 4 + 1 + 4 + 2 + 16 + 4 + 2 + 2
    low_wm = good[:head] + (5).to_bytes(8, "little", signed=True) + good[head + 8:]
    with pytest.raises(FrameError, match="watermark"):
        unpack(low_wm)
    at = good.index((3).to_bytes(8, "little") + (4).to_bytes(8, "little"))
    swapped = good[:at] + (4).to_bytes(8, "little") + (3).to_bytes(8, "little") + \
        good[at + 16:]
    with pytest.raises(FrameError, match="positions"):
        unpack(swapped)
    bad_index = good[:head - 4] + (2).to_bytes(2, "little") + (2).to_bytes(2, "little") + \
        good[head:]
    with pytest.raises(FrameError, match="index"):
        unpack(bad_index)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 40), st.data())
def test_a_truncated_or_damaged_version_3_frame_is_a_frame_error(n: int, data: Any) -> None:
    recs = [Rec("t", 0, i, i // 3, None, b"x" * (i % 5)) for i in range(n)]
    cut_or_damaged_is_a_frame_error(pack(recs, list(range(0, 2 * n, 2)), header(1, 3, FAR)),
                                    data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_version_3_garbage_never_crashes(raw: bytes) -> None:
    try:
        unpack(MAGIC + b"\x03" + raw)
    except FrameError:
        pass


# -- the merge -----------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 4))
def test_writers_that_keep_their_watermarks_are_merged_into_the_total_order(
        seed: int, writers: int) -> None:
    frames = scenario(seed, writers)
    m = WriterMerge(clock=Clock())
    got = feed(m, frames)
    assert got == everything(frames)  # nothing lost, twice, or late; in the merge order
    assert m.late == 0 and m.buffered == 0 and m.over_cap == 0


def test_two_writers_of_one_millisecond_are_interleaved_not_in_blocks() -> None:
    """Issue 14: a fast producer puts tens of messages in one millisecond.  In plain key
    order each writer's would follow the other's as a block of its source partitions'
    keys; spread over the millisecond they alternate (runs of at most 2 of one writer
    for 40 and 20 messages)."""
    a = [(t, 100 * t + j) for t in range(5) for j in range(40)]
    b = [(t, 100 * t + j) for t in range(5) for j in range(20)]
    frames = [(0, frame(0, 2, a[:90])), (1, frame(1, 2, b[:50])),
              (2, frame(0, 2, a[90:])), (3, frame(1, 2, b[50:])),
              (4, beat(0, 2, FAR)), (5, beat(1, 2, FAR))]
    m = WriterMerge(clock=Clock())
    got = feed(m, frames)
    assert sorted(got) == sorted(everything(frames))  # nothing lost or twice
    for t in range(5):
        writers = [k[2] for k, _, _ in got if k[0] == t]
        assert len(writers) == 60 and longest_run(writers) <= 2
        # evenly: among the first 3k of the millisecond, 2k of writer 0 (k of writer 1)
        assert all(abs(writers[:3 * k].count(1) - k) <= 1 for k in range(21))
    assert [k[0] for k, _, _ in got] == sorted(k[0] for k, _, _ in got)
    # the frontier is the largest key released, not the last one released
    assert got[-1][0] == (4, 1, 0, 439) and m.frontier == (4, 1, 1, 419)


@pytest.mark.parametrize("seed", range(12))
def test_nothing_is_released_before_every_writer_allows_it(seed: int) -> None:
    """At every step, what is out is a prefix of the final order, and nothing of the
    current generation is at or past the smallest watermark."""
    frames = scenario(seed, 3)
    final = everything(frames)
    m = WriterMerge(clock=Clock())
    got: list[Out] = []
    wms: dict[int, int] = {}
    for offset, f in frames:
        got += rows(m.add(offset, f))
        assert f.writer is not None
        wms[f.writer.index] = f.writer.watermark
        assert got == final[:len(got)]
        if got and len(wms) == 3:
            assert got[-1][0][0] < min(wms.values())
        elif len(wms) < 3:
            assert not got  # a writer not heard from yet blocks


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 4), st.sampled_from([0.05, 0.3]),
       st.sampled_from([5, 40, 10_000]))
def test_late_messages_and_the_cap_lose_nothing_and_keep_the_rest_in_order(
        seed: int, writers: int, broken: float, cap: int) -> None:
    frames = scenario(seed, writers, broken=broken)
    m = WriterMerge(clock=Clock(), max_buffered=cap)
    got: list[Out] = []
    for offset, f in frames:
        got += rows(m.add(offset, f))
        assert m.buffered <= cap
    # each exactly once
    assert sorted((k, v) for k, _, v in got) == \
        sorted((k, v) for k, _, v in everything(frames))
    in_order = [k for k, late, _ in got if not late]
    assert len(set(in_order)) == len(in_order)
    # by timestamp (the milliseconds interleaved: what the cap forced out in key order)
    assert [k[0] for k in in_order] == sorted(k[0] for k in in_order)
    top = None
    for k, late, _ in got:
        if late:
            assert top is not None and k <= top  # late only below the frontier
        else:
            top = k if top is None else max(top, k)
    assert top == m.frontier
    assert m.late == sum(late for _, late, _ in got)


@pytest.mark.parametrize("seed", range(20))
def test_dropping_the_released_values_keeps_each_message_with_its_value(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import stream.runtime.writermerge as wm

    monkeypatch.setattr(wm, "COMPACT_AFTER", 0)  # after every release
    frames = scenario(seed, 3, broken=0.1)
    m = WriterMerge(clock=Clock(), max_buffered=7)
    got = feed(m, frames)
    assert len(m._values) <= 4 * m.buffered
    assert sorted((k, v) for k, _, v in got) == \
        sorted((k, v) for k, _, v in everything(frames))


def test_the_cap_releases_the_oldest_in_order_and_counts_them() -> None:
    c = Clock()
    m = WriterMerge(clock=c, max_buffered=250)
    out: list[Out] = []
    for b in range(10):  # writer 1 never speaks; writer 0 sends 100 a frame
        out += rows(m.add(b, frame(0, 2, [(b * 100 + j, b * 100 + j) for j in range(100)])))
        assert m.buffered <= 250
    assert len(out) == 750 and m.over_cap == 750 and m.buffered == 250
    assert [k[0] for k, _, _ in out] == list(range(750))
    assert m.commit_offset() == 7  # the frames of the 250 still held
    late = rows(m.add(10, frame(1, 2, [(3, 0)], wm=3)))
    assert [(k, lt) for k, lt, _ in late] == [((3, 1, 1, 0), True)] and m.late == 1


def test_a_silent_writer_blocks_then_is_left_out_after_max_wait_and_is_late_after(
        caplog: pytest.LogCaptureFixture) -> None:
    c = Clock()
    m = WriterMerge(clock=c, max_wait_s=30)
    got = feed(m, [(0, frame(0, 2, [(10, 0), (11, 1)])), (1, frame(1, 2, [(9, 0)], 12)),
                   (2, frame(0, 2, [(20, 2), (30, 3)]))])
    assert [k[0] for k, _, _ in got] == [9, 10, 11]  # below 12, writer 1's watermark
    # writer 1 goes quiet (writer 0 does not): 20 and 30 wait
    c.now += 20
    assert len(m.add(3, beat(0, 2, 30))) == 0
    c.now += 9
    assert len(m.poll()) == 0 and m.skips == 0
    c.now += 1
    with caplog.at_level(logging.WARNING, "streamdrift.repartition"):
        got = rows(m.poll())
        assert [k[0] for k, _, _ in got] == [20] and m.skips == 1  # below writer 0's 30
        c.now += 10
        m.poll()
        assert [k[0] for k, _, _ in rows(m.add(4, frame(0, 2, [(40, 4)])))] == [30]
    assert len([r for r in caplog.records if "sent nothing" in r.message]) == 1  # once
    late = rows(m.add(5, frame(1, 2, [(12, 1), (50, 2)], 50)))
    assert [(k[0], lt) for k, lt, _ in late] == [(12, True)] and m.late == 1
    # heard again: in the frontier again, 40 and 50 wait for writer 0's watermark to pass
    assert m.left_out == set() and m.buffered == 2 and m.skips == 1


def test_a_writer_never_heard_from_blocks_until_max_wait() -> None:
    c = Clock()
    m = WriterMerge(clock=c, max_wait_s=5)
    assert len(m.add(0, frame(0, 3, [(1, 0)], 100))) == 0
    assert len(m.add(1, frame(2, 3, [(2, 0)], 100))) == 0  # writer 1 not heard from
    c.now += 4.9
    assert len(m.poll()) == 0
    c.now += 0.1
    assert [k for k, _, _ in rows(m.poll())] == [(1, 1, 0, 0), (2, 1, 2, 0)]


def test_heartbeats_advance_the_release() -> None:
    m = WriterMerge(clock=Clock())
    assert feed(m, [(0, beat(1, 2, 0)), (1, frame(0, 2, [(5, 0), (6, 1)], 9))]) == []
    assert [k[0] for k, _, _ in rows(m.add(2, beat(1, 2, 6)))] == [5]
    assert [k[0] for k, _, _ in rows(m.add(3, beat(1, 2, 8)))] == [6]
    assert m.buffered == 0 and m.commit_offset() == 4
    # a heartbeat never holds the commit back, nor does one of an older watermark count
    assert len(m.add(4, beat(1, 2, 3))) == 0 and m.watermarks[1] == 8


def test_a_new_generation_merges_the_old_ones_rest_by_time_and_a_stale_frame_is_late(
) -> None:
    m = WriterMerge(clock=Clock())
    assert feed(m, [(0, frame(0, 2, [(50, 0), (60, 1)])), (1, frame(1, 2, [(55, 0)]))]) \
        == [((50, 1, 0, 0), False, b"1:0:0")]
    # generation 2, one writer: what generation 1 still holds is complete, and goes by
    # timestamp with the new one's below the new writer's watermark
    got = rows(m.add(2, frame(0, 1, [(52, 0), (58, 1)], 58, gen=2)))
    assert [k for k, _, _ in got] == [(52, 2, 0, 0), (55, 1, 1, 0)]
    assert not any(late for _, late, _ in got) and m.generation == 2 and m.buffered == 2
    stale = rows(m.add(3, frame(1, 2, [(70, 1)], gen=1)))
    assert [(k, lt) for k, lt, _ in stale] == [((70, 1, 1, 1), True)]
    assert m.stale_frames == 1 and m.late == 1
    assert [k for k, _, _ in rows(m.add(4, beat(0, 1, FAR, gen=2)))] == \
        [(58, 2, 0, 1), (60, 1, 0, 1)]
    # a new generation's writer not heard from blocks the older one's rest too
    m = WriterMerge(clock=Clock())
    feed(m, [(0, frame(0, 2, [(50, 0)])), (1, frame(1, 2, [(55, 0)]))])
    got = rows(m.add(2, frame(1, 2, [(5, 0)], 56, gen=3)))  # writer 0 of 3 not heard
    assert got == [] and m.buffered == 3
    stale = rows(m.add(3, frame(0, 2, [(80, 1)], gen=1)))
    assert [(k, lt) for k, lt, _ in stale] == [((80, 1, 0, 1), True)]
    assert m.stale_frames == 1 and m.buffered == 3
    got = rows(m.add(4, beat(0, 2, 60, gen=3)))
    assert [k for k, _, _ in got] == [(5, 3, 1, 0), (50, 1, 0, 0), (55, 1, 1, 0)]


def test_writers_in_two_generations_over_a_backlog_are_interleaved_by_time() -> None:
    """Issue 14: a rebalance of the first stage while its backlog was read left writer
    0's whole share in generation 2 and writer 1's in generation 3.  The generation-first
    order released writer 0's whole stream before writer 1's (a block of half the
    events); by event time they are interleaved."""
    a = [(t, t) for t in range(0, 200, 2)]  # writer 0: even timestamps, generation 2
    b = [(t, t) for t in range(1, 200, 2)]  # writer 1: odd ones, generation 3
    frames: list[tuple[int, Frame]] = []
    for j in range(0, 100, 10):  # writer 0's frames all come before the rebalance
        frames.append((len(frames), frame(0, 2, a[j:j + 10], gen=2)))
    frames.append((len(frames), beat(1, 2, 0, gen=2)))  # writer 1 of gen 2: nothing yet
    for j in range(0, 100, 10):
        frames.append((len(frames), frame(1, 2, b[j:j + 10], gen=3)))
        frames.append((len(frames), beat(0, 2, b[j][0], gen=3)))  # writer 0: idle now
    frames.append((len(frames), beat(0, 2, FAR, gen=3)))
    frames.append((len(frames), beat(1, 2, FAR, gen=3)))
    m = WriterMerge(clock=Clock())
    got = feed(m, frames)
    assert [k[0] for k, _, _ in got] == list(range(200))  # every one, interleaved
    assert [k[1] for k, _, _ in got[:4]] == [2, 3, 2, 3]
    assert m.late == 0 and m.stale_frames == 0 and m.buffered == 0


def test_a_checkpoint_of_the_old_layout_restores_to_the_same_release() -> None:
    """A MergeState written before the key began with the timestamp (no ``version``: the
    key (generation, timestamp, writer, position), every older generation released at its
    change) resumes: the frontier permuted, every re-read older generation skipped."""
    m = WriterMerge(clock=Clock())
    frames = [(0, frame(0, 2, [(50, 0), (60, 1)])), (1, frame(1, 2, [(55, 0)])),
              (2, frame(0, 1, [(10, 0), (20, 1)], 20, gen=2))]
    feed(m, frames)
    # what the old layout wrote here: generation 1 all released, generation 2 below 20
    old = {"commit_offset": 2, "read_to": 2, "frontier": [2, 10, 0, 0], "generation": 2,
           "writers": 1, "watermarks": {"0": 20}}
    state = MergeState.from_dict(json.loads(json.dumps(old)))
    assert state.frontier == (10, 2, 0, 0) and state.starts == ((-1, 2),)
    r = WriterMerge(clock=Clock())
    r.restore(state)
    got = feed(r, [frames[2], (3, beat(0, 1, FAR, gen=2))])
    assert [k for k, _, _ in got] == [(20, 2, 0, 1)] and r.replayed == 1 and r.late == 0
    # re-read from before the generation change: generation 1's frames were released
    r = WriterMerge(clock=Clock())
    r.restore(MergeState.from_dict({**old, "commit_offset": 0}))
    got = feed(r, [*frames, (3, beat(0, 1, FAR, gen=2))])
    assert [k for k, _, _ in got] == [(20, 2, 0, 1)] and r.replayed == 4 and r.late == 0
    assert MergeState.from_dict(r.state().to_dict()) == r.state()


def test_a_restart_while_an_older_generation_is_buffered_tells_it_from_a_zombie() -> None:
    """The older generation's messages still buffered at a checkpoint are merged again
    after the restart, a zombie's frame re-read is skipped (released whole before)."""
    frames = [(0, frame(0, 2, [(50, 0), (60, 1)])), (1, frame(1, 2, [(55, 0)])),
              (2, frame(0, 1, [(52, 0)], 52, gen=2)),
              (3, frame(1, 2, [(70, 2), (90, 3)], gen=1)),  # a zombie
              (4, frame(0, 1, [(65, 1)], 65, gen=2)), (5, beat(0, 1, FAR, gen=2))]
    whole = WriterMerge(clock=Clock())
    expected: list[Out] = []
    states: list[tuple[MergeState, int]] = []
    for o, f in frames:
        states.append((MergeState.from_dict(json.loads(json.dumps(whole.state().to_dict()))),
                       len(expected)))
        expected += rows(whole.add(o, f))
    assert [(k[0], k[1], late) for k, late, _ in expected] == [
        (50, 1, False), (70, 1, True), (90, 1, True), (52, 2, False), (55, 1, False),
        (60, 1, False), (65, 2, False)]
    assert states[4][0].starts == ((0, 1), (2, 2)) and states[4][0].commit_offset == 0
    for state, done in states:
        r = WriterMerge(clock=Clock())
        r.restore(state)
        start = -1 if state.commit_offset is None else state.commit_offset
        assert expected[:done] + feed(r, [(o, f) for o, f in frames if o >= start]) \
            == expected



@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 4), st.sampled_from([0.0, 0.2]),
       st.sampled_from([8, 10_000]), st.booleans())
def test_a_restart_from_the_checkpoint_at_any_frame_releases_exactly_the_rest(
        seed: int, writers: int, broken: float, cap: int, two_gens: bool) -> None:
    frames = scenario(seed, writers, broken=broken)
    if two_gens:
        # generation 1 without its last heartbeats: what it buffers is merged by time
        # with generation 2's (whose timestamps overlap it, or are older: late)
        frames = [(o, f) for o, f in frames if len(f) or f.writer is None
                  or f.writer.watermark != FAR]
        last = frames[-1][0]
        frames += [(last + 1 + o, f) for o, f in scenario(
            seed + 1, writers - 1, broken=broken, gen=2, t0=-20 if seed % 2 else 10)]
    whole = WriterMerge(clock=Clock(), max_buffered=cap)
    expected: list[Out] = []
    states: list[MergeState] = []
    cuts: list[int] = []
    for offset, f in frames:
        states.append(MergeState.from_dict(json.loads(json.dumps(whole.state().to_dict()))))
        cuts.append(len(expected))
        expected += rows(whole.add(offset, f))
    for state, done in zip(states, cuts, strict=True):
        m = WriterMerge(clock=Clock(), max_buffered=cap)
        m.restore(state)
        start = state.commit_offset if state.commit_offset is not None else -1
        rest = feed(m, [(o, f) for o, f in frames if o >= start])
        assert expected[:done] + rest == expected
        # the re-read frames' messages at or below the frontier were skipped, no others
        assert m.replayed == sum(
            1 for o, f in frames
            if start <= o <= (-1 if state.read_to is None else state.read_to)
            for j in range(len(f)) if state.frontier and key_of(f, j) <= state.frontier)


def test_a_restart_mid_replay_still_resumes_exactly() -> None:
    frames = scenario(7, 3, broken=0.1)
    whole = WriterMerge(clock=Clock(), max_buffered=10)
    expected = feed(whole, frames)
    for k in range(0, len(frames), 3):
        a = WriterMerge(clock=Clock(), max_buffered=10)
        got = feed(a, frames[:k])
        s = a.state()
        b = WriterMerge(clock=Clock(), max_buffered=10)
        b.restore(s)
        replay = [(o, f) for o, f in frames if s.commit_offset is None or
                  o >= s.commit_offset]
        half = len(replay) // 3  # a second checkpoint and restart before the replay ends
        got += feed(b, replay[:half])
        c = WriterMerge(clock=Clock(), max_buffered=10)
        c.restore(b.state())
        s2 = b.state()
        got += feed(c, [(o, f) for o, f in frames if s2.commit_offset is None or
                        o >= s2.commit_offset])
        assert got == expected


def sourced(i: int, n: int, msgs: list[tuple[int, int, int]], gen: int) -> Frame:
    """Writer ``i`` of ``n``'s frame in generation ``gen`` of messages (timestamp, position,
    source offset), each from source partition ``timestamp % 2`` at that offset; the
    watermark is the newest timestamp."""
    recs = [Rec("src", t % 2, o, t, None, b"%d:%d" % (t % 2, o)) for t, _, o in msgs]
    wid = bytes([97 + gen]) * 8 + bytes([65 + i]) * 8
    return unpack(pack(recs, [p for _, p, _ in msgs],
                       WriterHeader(wid, gen, n, i, max(t for t, _, _ in msgs))))


def crash(resend_from: int) -> list[tuple[int, Frame]]:
    """Generation 1: writer 0 forwards source partition 0 (even timestamps 0-58, offset =
    timestamp) and runs ahead of writer 1 (partition 1, odd timestamps 1-19), so the merge
    holds writer 0's messages from 20 on; writer 0 crashes.  Generation 2: one writer takes
    both partitions, partition 0 from offset ``resend_from`` (what the crashed writer had
    committed: below 60, it forwards copies) and partition 1 from 21, merged by
    timestamp, up to 99."""
    w0 = [(t, t // 2, t) for t in range(0, 60, 2)]
    w1 = [(t, t // 2, t) for t in range(1, 20, 2)]
    frames = [sourced(0, 2, w0[k:k + 10], 1) for k in range(0, 30, 10)]
    frames += [sourced(1, 2, w1[k:k + 5], 1) for k in range(0, 10, 5)]
    later = sorted([(t, t) for t in range(resend_from, 100, 2)]
                   + [(t, t) for t in range(21, 100, 2)])
    gen2 = [(t, p, o) for p, (t, o) in enumerate(later)]
    frames += [sourced(0, 1, gen2[k:k + 12], 2) for k in range(0, len(gen2), 12)]
    frames.append(unpack(heartbeat(WriterHeader(b"c" * 16, 2, 1, 0, FAR))))
    return list(enumerate(frames))


def test_a_successors_copies_of_held_back_messages_are_released_once() -> None:
    """A successor forwards again what its crashed predecessor had not committed (the
    same source records, a newer generation).  The copies of the messages still held
    back went side by side with their first copies (each millisecond interleaves its
    generations): every value of the batch twice in a row, a CUSUM's steps doubled.  Now
    each source record goes once, in the order of a successor that sent no copy; a copy
    of one released already is late (a repeat, counted), as before."""
    clean = WriterMerge(clock=Clock())
    expected = feed(clean, crash(60))
    assert clean.duplicates == 0 and clean.late == 0
    m = WriterMerge(clock=Clock())
    got = feed(m, crash(20))  # the copies of 20-58: all held back (writer 1 was at 19)
    assert [v for _, _, v in got] == [v for _, _, v in expected]
    assert m.duplicates == 20 and m.late == 0
    values = [v for _, _, v in feed(WriterMerge(clock=Clock()), crash(20))]
    assert len(values) == len(set(values)) == 100
    # from offset 10: the copies of 10-18 were released already (below writer 1's 19):
    # repeated once each.  10-16 come below the frontier (late, at once); 18, of the
    # frontier's own millisecond but a newer generation, comes above it and goes with
    # the next release, uncounted (the merge keeps no record of what it released)
    m = WriterMerge(clock=Clock())
    got = feed(m, crash(10))
    assert [v for _, lt, v in got if lt] == [b"0:%d" % t for t in range(10, 18, 2)]
    assert m.late == 4 and m.duplicates == 20
    twice = Counter(v for _, _, v in got)
    assert {v for v, n in twice.items() if n > 1} == {b"0:%d" % t for t in range(10, 20, 2)}
    assert max(twice.values()) == 2 and set(twice) == {v for _, _, v in expected}


@pytest.mark.parametrize("resend_from", [10, 20, 40])
def test_a_restart_at_any_frame_drops_the_same_copies(resend_from: int) -> None:
    """The frontier passes the copies a release dropped: restored from the checkpoint
    before any frame and fed again from its commit offset, the merge releases exactly the
    rest, with the same copies dropped."""
    frames = crash(resend_from)
    whole = WriterMerge(clock=Clock())
    expected: list[Out] = []
    states: list[tuple[MergeState, int, int]] = []
    for offset, f in frames:
        states.append((MergeState.from_dict(json.loads(json.dumps(whole.state().to_dict()))),
                       len(expected), whole.duplicates))
        expected += rows(whole.add(offset, f))
    for state, done, dropped in states:
        m = WriterMerge(clock=Clock())
        m.restore(state)
        start = state.commit_offset if state.commit_offset is not None else -1
        assert expected[:done] + feed(m, [(o, f) for o, f in frames if o >= start]) \
            == expected
        assert dropped + m.duplicates == whole.duplicates


def test_only_copies_of_one_source_record_are_dropped() -> None:
    """Two messages with one key are one record written twice (a static member that
    rewrites its batch) only when their source records are one too: two writer ids with
    one index in one generation (a conflict) give distinct records equal keys."""
    recs = [Rec("src", 0, 7, 5, None, b"a")]
    first = unpack(pack(recs, [0], header(0, 1, 5)))
    again = unpack(pack(recs, [0], header(0, 1, 5)))
    other = unpack(pack([Rec("src", 3, 7, 5, None, b"b")], [0], WriterHeader(
        WID[4], 1, 1, 0, 5)))
    m = WriterMerge(clock=Clock())
    got = feed(m, [(0, first), (1, again), (2, other), (3, beat(0, 1, FAR))])
    assert [v for _, _, v in got] == [b"a", b"b"] and m.duplicates == 1
    assert m.conflicts == 1 and m.late == 0


def test_two_writer_ids_with_one_index_are_counted_and_both_merged() -> None:
    m = WriterMerge(clock=Clock())
    zombie = unpack(pack([Rec("s", 0, 0, 3, None, b"z")], [9], WriterHeader(
        WID[5], 1, 2, 1, 3)))
    got = feed(m, [(0, frame(0, 2, [(1, 0), (4, 1)])), (1, frame(1, 2, [(2, 0)], 3)),
                   (2, zombie), (3, beat(1, 2, FAR)), (4, beat(0, 2, FAR))])
    assert [v for _, _, v in got] == [b"1:0:0", b"1:1:0", b"z", b"1:0:1"]
    assert m.conflicts == 1 and m.late == 0


def test_frames_out_of_offset_order_and_older_versions_are_refused() -> None:
    m = WriterMerge(clock=Clock())
    m.add(5, beat(0, 1, 0))
    with pytest.raises(ValueError, match="offset"):
        m.add(5, beat(0, 1, 0))
    with pytest.raises(ValueError, match="version-3"):
        m.add(6, unpack(pack([Rec("t", 0, 1, 2, None, b"v")], [0])))
    with pytest.raises(RuntimeError):
        m.restore(m.state())
