"""Frames of the repartition topic (stream/runtime/frames.py) and their unpacking by the
monitors (stream/runtime/monitors.py), without a broker."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.runtime.frames import BAD_FRAME, MAGIC, FrameError, frames, is_frame, pack, unpack
from stream.runtime.monitors import FramedRunner, Messages, SourceRecord
from stream.runtime.pooltap import PoolTap

Rec = namedtuple("Rec", "topic partition offset timestamp key value")
TP = namedtuple("TP", "topic partition")

records = st.lists(st.builds(
    Rec, st.sampled_from(["events", "évènements", "t2"]), st.integers(0, 2**31 - 1),
    st.integers(0, 2**63 - 1), st.integers(-1, 2**62), st.none() | st.binary(max_size=20),
    st.none() | st.binary(max_size=60)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(records)
def test_round_trip(recs: list[Rec]) -> None:
    f = unpack(pack(recs))
    assert len(f) == len(recs)
    got = [Rec(f.topics[int(f.topic_index[i])], int(f.partitions[i]), int(f.offsets[i]),
               int(f.timestamps[i]), f.keys[i], f.values[i]) for i in range(len(f))]
    assert got == recs


@settings(max_examples=300, deadline=None)
@given(records.filter(bool), st.data())
def test_a_truncated_or_damaged_frame_is_a_frame_error(recs: list[Rec], data: Any) -> None:
    cut_or_damaged_is_a_frame_error(pack(recs), data)


def cut_or_damaged_is_a_frame_error(raw: bytes, data: Any) -> None:
    """``raw`` cut short or lengthened is a FrameError; with any byte changed it is a
    FrameError or a frame (never another exception)."""
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(FrameError):
        unpack(raw[:cut])
    with pytest.raises(FrameError):
        unpack(raw + b"x")
    i = data.draw(st.integers(0, len(raw) - 1))
    damaged = raw[:i] + bytes([raw[i] ^ data.draw(st.integers(1, 255))]) + raw[i + 1:]
    try:
        unpack(damaged)
    except FrameError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_crashes(raw: bytes) -> None:
    for data in (raw, MAGIC + raw, MAGIC + b"\x01" + raw, MAGIC + b"\x02" + raw):
        try:
            unpack(data)
        except FrameError:
            pass


def test_json_is_never_taken_for_a_frame() -> None:
    assert not is_frame(b'{"model": "m1"}') and not is_frame(b"") and not is_frame(None)
    assert is_frame(pack([Rec("t", 0, 1, 2, None, b"{}")]))


def test_frames_cut_by_count_and_bytes() -> None:
    recs = [Rec("t", 0, i, 0, None, b"x" * 10) for i in range(25)]
    assert [len(r) for r in frames(recs, 10)] == [10, 10, 5]
    assert [len(r) for r in frames(recs, 100, max_bytes=35)] == [3] * 8 + [1]
    big = [Rec("t", 0, 0, 0, None, b"x" * 100), *recs[:2]]
    assert [len(r) for r in frames(big, 100, max_bytes=35)] == [1, 2]  # alone when larger
    assert [sum(len(f) for f in frames(recs, 7))] == [25]


def test_messages_map_each_message_to_its_frame_offset_and_source() -> None:
    a = [Rec("src", 3, 100 + i, 5, b"k", b'{"i": %d}' % i) for i in range(3)]
    m = Messages("rp", 1)
    m.add_frame(40, unpack(pack(a)))
    m.add_record(Rec("rp", 1, 41, 7, None, b"legacy"))
    m.add_frame(42, unpack(pack(a[:1], [9])))
    assert m.merge_positions().tolist() == [-1, -1, -1, -1, 9]
    assert m.values == [r.value for r in a] + [b"legacy", a[0].value]
    assert [x.offset for x in m] == [40, 40, 40, 41, 42]
    assert m[1].source == SourceRecord("src", 3, 101, 5, b"k", a[1].value)
    assert m[3].source.topic == "rp" and m[3].source.offset == 41
    assert m[-1].offset == 42 and len(m[1:3]) == 2
    with pytest.raises(IndexError):
        m[5]


class _Pipeline:
    def __init__(self) -> None:
        self.rejected: dict[str, int] = {}

    def count_rejected(self, invalid: dict[str, int]) -> None:
        for k, v in invalid.items():
            self.rejected[k] = self.rejected.get(k, 0) + v


def test_framed_runner_unpacks_counts_bad_frames_and_dead_letters_at_the_source(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from stream.runtime.runner import KafkaRunner

    seen: dict[Any, list[bytes]] = {}

    def process(self: Any, polled: dict[Any, Any]) -> Any:
        for tp, recs in polled.items():
            seen[tp] = recs.values
        # the runner names poison messages by their records: here the second of the frame
        return {}, [(polled[tp][1], "invalid_json") for tp in polled if len(polled[tp]) > 1], []

    monkeypatch.setattr(KafkaRunner, "_process", process)
    runner = FramedRunner.__new__(FramedRunner)
    runner.pipeline = _Pipeline()  # type: ignore[assignment]
    runner.tap, runner.pool_out = PoolTap(False, {}), None
    runner.config = type("C", (), {"source": type("S", (), {"dead_letter": object()})()})()
    tp = TP("rp", 0)
    src = [Rec("src", 2, 7 + i, 1, b"US", b"{bad" if i else b"{}") for i in range(2)]
    polled = {tp: [Rec("rp", 0, 10, 1, None, pack(src)),
                   Rec("rp", 0, 11, 1, None, MAGIC + b"\x01garbage")],
              TP("rp", 1): [Rec("rp", 1, 3, 1, None, MAGIC)]}
    done, poison, _ = runner._process(polled)  # type: ignore[arg-type]
    assert seen[tp] == [b"{}", b"{bad"] and seen[TP("rp", 1)] == []
    assert done == {tp: 12, TP("rp", 1): 4}  # bad frames are passed, never read again
    assert runner.pipeline.rejected == {BAD_FRAME: 2}  # type: ignore[attr-defined]
    assert sorted(why for _, why in poison) == [BAD_FRAME, BAD_FRAME, "invalid_json"]
    written: list[Any] = []
    monkeypatch.setattr(KafkaRunner, "_write_dead_letters",
                        lambda self, entries: written.extend(entries) or [])
    runner._write_dead_letters(poison)
    sources = {(r.topic, r.partition, r.offset, r.key) for r, _ in written}
    assert ("src", 2, 8, b"US") in sources and ("rp", 0, 11, None) in sources


@settings(max_examples=200, deadline=None)
@given(records, st.data())
def test_round_trip_with_merge_positions(recs: list[Rec], data: Any) -> None:
    pos = data.draw(st.lists(st.integers(0, 2**62), min_size=len(recs), max_size=len(recs)))
    raw = pack(recs, pos)
    assert raw[4] == 2  # version 2
    f = unpack(raw)
    assert f.positions is not None and f.positions.tolist() == pos
    got = [Rec(f.topics[int(f.topic_index[i])], int(f.partitions[i]), int(f.offsets[i]),
               int(f.timestamps[i]), f.keys[i], f.values[i]) for i in range(len(f))]
    assert got == recs
    with pytest.raises(FrameError):  # a cut anywhere, the positions included
        unpack(raw[:-1] if recs and any(r.key or r.value for r in recs) else raw + b"x")


def test_version_1_frames_are_still_read() -> None:
    # the bytes a first stage of the previous release wrote (version 1, no positions)
    v1 = (MAGIC + bytes([1]) + (2).to_bytes(4, "little") + (1).to_bytes(2, "little")
          + (1).to_bytes(2, "little") + b"t"
          + bytes(4)                                            # topic index u16 x 2
          + (3).to_bytes(4, "little") + (3).to_bytes(4, "little")  # partitions
          + (7).to_bytes(8, "little") + (8).to_bytes(8, "little")  # offsets
          + (100).to_bytes(8, "little") + (101).to_bytes(8, "little")  # timestamps
          + (-1).to_bytes(4, "little", signed=True) + (1).to_bytes(4, "little")  # keys
          + (2).to_bytes(4, "little") + (2).to_bytes(4, "little")  # values
          + b"k" + b"{}" + b"[]")
    f = unpack(v1)
    assert f.positions is None
    assert f.keys == [None, b"k"] and f.values == [b"{}", b"[]"]
    assert f.offsets.tolist() == [7, 8] and f.timestamps.tolist() == [100, 101]
    assert pack([Rec("t", 3, 7, 100, None, b"{}"), Rec("t", 3, 8, 101, b"k", b"[]")]) == v1


def test_an_unknown_version_or_a_position_count_mismatch_is_refused() -> None:
    raw = bytearray(pack([Rec("t", 0, 1, 2, None, b"{}")], [5]))
    raw[4] = 4
    with pytest.raises(FrameError, match="version 4"):
        unpack(bytes(raw))
    raw[4] = 3  # a version-2 frame read as version 3: no writer block
    with pytest.raises(FrameError):
        unpack(bytes(raw))
    with pytest.raises(ValueError):
        pack([Rec("t", 0, 1, 2, None, b"{}")], [1, 2])
