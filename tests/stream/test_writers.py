"""The first stage with several writers (writers.py): the assignment, the writer block
and watermark of its frames, and its heartbeats."""

from __future__ import annotations

import dataclasses
import time
from collections import namedtuple
from typing import Any

import numpy as np
import pytest
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from stream.config import parse_config
from stream.engine.figures import merge_health
from stream.runtime.frames import VERSION, WRITER_VERSION, WriterHeader, pack, unpack
from stream.runtime.mergerun import PartitionMerges
from stream.runtime.onewriter import STRATEGY, OneWriterAssignor
from stream.runtime.repartition import Repartitioner, merge_plan
from stream.runtime.twostage import TwoStageRunner
from stream.runtime.writermerge import WriterMerge
from stream.runtime.writers import (
    ALIGN_IN_FLIGHT,
    ALIGN_MAX_S,
    ALIGN_SHARE,
    UNALIGNED_AFTER_S,
    Alignment,
    Role,
    Roles,
    SeveralWritersAssignor,
    Writer,
    caught_up,
    strategy,
    tick,
)
from stream.sinks.merge_metrics import WriterMergeCollector
from stream.sources.groupjoin import rejoining
from tests.stream.test_onewriter import Cluster, Member, Meta, _assigned
from tests.support.configs import minimal_config

KAFKA = {"bootstrap_servers": "k:9092", "topics": ["events"], "group_id": "g"}
Rec = namedtuple("Rec", "topic partition offset timestamp key value")
TP = namedtuple("TP", "topic partition")


def _stage(**rp: Any) -> Repartitioner:
    config = parse_config(minimal_config(source={
        "kafka": KAFKA, "repartition": {"writers": "several", **rp}}), "/cfg")
    return Repartitioner(config, pipeline=None)  # type: ignore[arg-type]


def _roles(assignor: SeveralWritersAssignor, out: dict[str, Any], gen: int) -> dict[str, Any]:
    got = {}
    for m, a in out.items():
        assignor.on_assignment(a, gen)
        got[m] = assignor.roles.current
    return got


# -- the assignment ----------------------------------------------------------------------
@pytest.mark.parametrize(("members", "parts"), [(2, 4), (3, 8), (4, 4), (3, 2), (5, 11)])
def test_every_partition_once_in_ranges_of_nearly_equal_size(members: int, parts: int,
                                                             ) -> None:
    ms = [Member(f"m-{i}", None, Meta(["a", "b"])) for i in range(members)]
    a = SeveralWritersAssignor()
    out = a.assign(Cluster({"a": parts, "b": 3}), ms)
    got = _assigned(out)
    pairs = [(t, p) for ps in got.values() for t, pl in ps for p in pl]
    assert sorted(pairs) == [("a", p) for p in range(parts)] + [("b", p) for p in range(3)]
    sizes = sorted(sum(len(pl) for _, pl in ps) for ps in got.values())
    assert sizes[-1] - sizes[0] <= 1, got
    # a range: each member's share of the flattened list is contiguous
    flat = [("a", p) for p in range(parts)] + [("b", p) for p in range(3)]
    for ps in got.values():
        idx = sorted(flat.index((t, p)) for t, pl in ps for p in pl)
        assert idx == list(range(idx[0], idx[0] + len(idx))) if idx else True
    # every member is a writer, told the count and its index (static members, then ids)
    roles = _roles(a, out, 7)
    assert sorted(r.index for r in roles.values()) == list(range(members))
    assert {(r.generation, r.writers, r.several) for r in roles.values()} == {
        (7, members, True)}
    assert roles["m-0"].index == 0


def test_static_members_come_first_and_more_members_than_partitions_still_write() -> None:
    ms = [Member("a", None, Meta(["t"])), Member("z", "pod-0", Meta(["t"])),
          Member("b", None, Meta(["t"]))]
    a = SeveralWritersAssignor()
    out = a.assign(Cluster({"t": 2}), ms)
    roles = _roles(a, out, 3)
    assert [roles[m].index for m in ("z", "a", "b")] == [0, 1, 2]
    assert _assigned(out) == {"z": [("t", [0])], "a": [("t", [1])], "b": []}
    assert roles["b"].writers == 3 and roles["b"].several  # no partitions: heartbeats


def test_a_topic_a_member_does_not_subscribe_goes_to_one_that_does() -> None:
    ms = [Member("a", None, Meta(["t"])), Member("b", None, Meta(["t", "u"]))]
    got = _assigned(SeveralWritersAssignor().assign(Cluster({"t": 1, "u": 3}), ms))
    assert ("u", [0, 1, 2]) in got["b"] and all(t == "t" for t, _ in got["a"])


def test_a_group_mixing_releases_agrees_and_knows_what_it_writes_as() -> None:
    roles = Roles()
    several, one, rng, rr = strategy(roles)
    assert isinstance(several, SeveralWritersAssignor)
    assert (one.name, rng.name, rr.name) == (OneWriterAssignor.name, "range", "roundrobin")
    # a member of writers: one (or of the release before) offers the one-writer, range
    # and round-robin protocols: every one of them is also ours
    assert {s.name for s in STRATEGY} <= {s.name for s in (several, one, rng, rr)}
    assert isinstance(rng, RangePartitionAssignor)
    assert isinstance(rr, RoundRobinPartitionAssignor)
    members = [Member("a", None, Meta(["t"])), Member("b", None, Meta(["t"]))]
    # under one writer: the writer is writer 0 of 1, the other stands by (writes nothing)
    out = OneWriterAssignor().assign(Cluster({"t": 4}), members)
    one.on_assignment(out["a"], 5)
    assert roles.current == Role(5, 1, 0, True)
    one.on_assignment(out["b"], 5)
    assert roles.current is not None and not roles.current.several
    # under range the writer count is unknown: version-2 frames
    rng.on_assignment(RangePartitionAssignor.assign(Cluster({"t": 4}), members)["a"], 6)
    assert roles.current is not None and roles.current.generation == 6
    assert not roles.current.several
    # an assignment without our user data (not possible from our leader) is not trusted
    several.on_assignment(out["a"], 8)
    assert not roles.current.several and roles.history[-1].generation == 8


def test_the_stage_uses_the_several_writers_strategy_only_when_configured() -> None:
    stage = _stage()
    assert stage.writer is not None
    assert isinstance(stage.writer.strategy[0], SeveralWritersAssignor)
    other = _stage().writer
    assert other is not None
    assert len(stage.writer.writer_id) == 16 and other.writer_id != stage.writer.writer_id
    one = Repartitioner(parse_config(minimal_config(source={
        "kafka": KAFKA, "repartition": {}}), "/cfg"), pipeline=None)  # type: ignore[arg-type]
    assert one.writer is None


# -- frames and watermarks -----------------------------------------------------------------
def _assign(stage: Repartitioner, gen: int, writers: int, index: int) -> None:
    members = [Member(f"m-{i}", None, Meta(["events"])) for i in range(writers)]
    a = stage.writer.strategy[0]  # type: ignore[union-attr]
    a.on_assignment(a.assign(Cluster({"events": 4}), members)[f"m-{index}"], gen)


@pytest.mark.parametrize("seed", range(6))
def test_frames_carry_the_writer_and_a_watermark_that_never_goes_back(seed: int) -> None:
    """Batches merged as the stage merges them (merge_plan) over partitions whose
    timestamps never go back: every frame is version 3 with the writer's role; on each
    internal partition the watermark is at least the frame's newest timestamp, the merge
    limit (the batch's newest) in the batch's last frame there, never goes back, and no
    later message there is older."""
    rng = np.random.default_rng(seed)
    stage = _stage(partitions=3)
    stage.frame_events = int(rng.integers(3, 50))
    _assign(stage, 4, 3, 1)
    stamps = {p: np.sort(rng.integers(0, 5000, 400)) for p in range(4)}
    offsets = dict.fromkeys(range(4), 0)
    last: dict[int, int] = {}
    seen = 0
    while any(offsets[p] < 400 for p in range(4)):
        # each partition has polled up to a random point
        tops = {p: min(400, offsets[p] + int(rng.integers(1, 60))) for p in range(4)}
        counts, order = merge_plan([stamps[p][offsets[p]:tops[p]] for p in range(4)])
        recs = [Rec("events", p, o, int(stamps[p][o]), None, b"{}")
                for p in range(4) for o in range(offsets[p], offsets[p] + counts[p])]
        recs = [recs[i] for i in order.tolist()]
        if not recs:
            continue
        out = stage._frames(recs)
        limit = max(r.timestamp for r in recs)
        for i, (q, raw, _ts) in enumerate(out):
            f = unpack(raw)
            assert raw[4] == WRITER_VERSION and f.writer is not None
            w = f.writer
            assert (w.generation, w.writers, w.index) == (4, 3, 1)
            assert w.writer_id == stage.writer.writer_id  # type: ignore[union-attr]
            assert w.watermark >= int(f.timestamps.max())
            if all(q2 != q for q2, _, _ in out[i + 1:]):
                assert w.watermark == limit  # the batch's last frame there
            if q in last:
                assert int(f.timestamps.min()) >= last[q] and w.watermark >= last[q]
            last[q] = w.watermark
        stage.seq += len(recs)
        seen += len(recs)
        for p in range(4):
            offsets[p] += counts[p]
    assert seen == 1600


def test_the_watermark_is_kept_within_a_generation_and_starts_afresh_in_the_next() -> None:
    stage = _stage()
    _assign(stage, 2, 2, 0)
    w = stage.writer
    assert w is not None
    assert w.header(0, 100).watermark == 100  # type: ignore[union-attr]
    # a record older than a watermark sent (a timestamp that went back): late at the
    # monitors; the watermark stays
    assert w.header(0, 50).watermark == 100  # type: ignore[union-attr]
    assert w.header(1, 50).watermark == 50  # type: ignore[union-attr]  # per partition
    _assign(stage, 3, 2, 1)
    h = w.header(0, 50)
    assert h is not None and (h.generation, h.index, h.watermark) == (3, 1, 50)


def test_with_one_writer_frames_stay_version_2() -> None:
    stage = Repartitioner(parse_config(minimal_config(source={
        "kafka": KAFKA, "repartition": {"partitions": 2}}), "/cfg"),
        pipeline=None)  # type: ignore[arg-type]
    out = stage._frames([Rec("events", 0, o, o, None, b"{}") for o in range(20)])
    assert {raw[4] for _, raw, _ in out} == {VERSION}
    # several writers under a protocol that does not say the count: version 2 too
    several = _stage(partitions=2)
    several.writer.roles.set(Role(1, 0, 0, False))  # type: ignore[union-attr]
    out = several._frames([Rec("events", 0, o, o, None, b"{}") for o in range(20)])
    assert {raw[4] for _, raw, _ in out} == {VERSION}


# -- heartbeats ----------------------------------------------------------------------------
class Written:
    """What the stage writes, instead of a producer."""

    def __init__(self, ok: bool = True) -> None:
        self.frames: list[tuple[int, bytes, int]] = []
        self.ok = ok

    def __call__(self, make: Any, records: int) -> bool:
        if self.ok:
            self.frames += make()
        return self.ok


class Ends:
    """A consumer whose partitions are at ``pos`` with end offsets ``ends``."""

    def __init__(self, pos: dict[Any, int], ends: dict[Any, int]) -> None:
        self.pos, self.ends = pos, ends

    def position(self, tp: Any, timeout_ms: int = 0) -> int:
        return self.pos[tp]

    def highwater(self, tp: Any) -> int:
        return self.ends[tp]

    def end_offsets(self, tps: list[Any], timeout_ms: int = 0) -> dict[Any, int]:
        return {tp: self.ends[tp] for tp in tps}


def _heartbeat_stage(pos: dict[Any, int], ends: dict[Any, int], **rp: Any,
                     ) -> tuple[Repartitioner, Written]:
    stage = _stage(partitions=3, **rp)
    written = Written()
    stage._write = written  # type: ignore[method-assign]
    stage.consumer = Ends(pos, ends)
    for tp in pos:
        stage.buffers[tp], stage.stamps[tp] = [], np.empty(0, dtype=np.int64)
    return stage, written


def test_a_caught_up_idle_writer_heartbeats_every_internal_partition() -> None:
    stage, written = _heartbeat_stage({"p0": 10, "p1": 5}, {"p0": 10, "p1": 5},
                                      heartbeat_ms=1000, lateness_ms=2000)
    _assign(stage, 9, 2, 1)
    stage.writer.header(0, 10)  # type: ignore[union-attr]  # a batch forwarded earlier
    t0 = time.monotonic()
    before = int(time.time() * 1000)
    tick(stage, t0)
    after = int(time.time() * 1000)
    assert sorted(q for q, _, _ in written.frames) == [0, 1, 2]
    for _q, raw, ts in written.frames:
        f = unpack(raw)
        assert len(f) == 0 and f.writer is not None
        assert (f.writer.generation, f.writer.writers, f.writer.index) == (9, 2, 1)
        assert before - 2000 <= f.writer.watermark <= after - 2000 and ts == f.writer.watermark
    # not again before heartbeat_ms; then again, the watermark not below the last
    tick(stage, t0 + 0.5)
    assert len(written.frames) == 3
    tick(stage, t0 + 1.0)
    assert len(written.frames) == 6
    marks = [unpack(raw).writer.watermark for _, raw, _ in written.frames]  # type: ignore
    assert marks[3] >= marks[0]


def test_no_heartbeat_while_behind_buffered_or_failing_and_one_with_no_partitions() -> None:
    behind, written = _heartbeat_stage({"p0": 3}, {"p0": 10})
    _assign(behind, 1, 2, 0)
    tick(behind, time.monotonic())
    assert not written.frames  # a partition behind its end: not idle
    buffered, written = _heartbeat_stage({"p0": 10}, {"p0": 10})
    _assign(buffered, 1, 2, 0)
    buffered.buffers["p0"].append(Rec("events", 0, 9, 5, None, b"{}"))
    assert not caught_up(buffered, time.monotonic())
    tick(buffered, time.monotonic())
    assert not written.frames
    # a writer with no source partitions (more writers than partitions) heartbeats
    none, written = _heartbeat_stage({}, {})
    _assign(none, 1, 5, 4)
    tick(none, time.monotonic())
    assert len(written.frames) == 3
    # a write that fails is retried after the back-off, not every iteration
    failing, written = _heartbeat_stage({}, {})
    written.ok = False
    _assign(failing, 1, 2, 0)
    tick(failing, time.monotonic())
    assert failing.retry_at > time.monotonic() and failing.writer.heartbeats == 0  # type: ignore
    # no role of several writers yet (no assignment): nothing
    idle, written = _heartbeat_stage({}, {})
    tick(idle, time.monotonic())
    assert not written.frames


def test_writer_without_role_sends_no_heartbeat() -> None:
    config = parse_config(minimal_config(source={
        "kafka": KAFKA, "repartition": {"writers": "several"}}), "/cfg")
    rp = config.source.repartition
    assert rp is not None
    w = Writer(rp)
    assert w.beat(time.monotonic() + 10) is None and w.header(0, 5) is None


def test_no_heartbeat_during_a_rebalance_until_the_next_assignment() -> None:
    stage, written = _heartbeat_stage({}, {}, heartbeat_ms=100)
    _assign(stage, 1, 2, 0)
    got: list[set[Any]] = []
    revoked = stage.writer.revoking(got.append)  # type: ignore[union-attr]
    revoked(set())  # kafka-python revokes before it joins, with or without partitions
    assert got == [set()]
    t = time.monotonic()
    tick(stage, t)
    assert not written.frames
    _assign(stage, 2, 2, 1)
    tick(stage, t + 1)
    assert {unpack(raw).writer.generation for _, raw, _ in written.frames} == {2}  # type: ignore[union-attr]


def test_a_writer_ahead_waits_at_most_the_limit_and_never_in_a_rebalance() -> None:
    """Watermark alignment (writers.Alignment): while the monitors say this writer is
    ahead, the stage skips its polls, for ALIGN_MAX_S at most in a row; not without a
    role of several writers, not during a rebalance, not once it is no longer ahead."""
    stage = _stage()
    w = stage.writer
    assert w is not None
    asked: list[tuple[int, int]] = []
    ahead = [True]
    now = [100.0]

    def says(generation: int, index: int) -> bool:
        asked.append((generation, index))
        return ahead[0]

    a = Alignment(w, says, clock=lambda: now[0])
    assert not a.hold() and not asked  # no role yet: never waits
    _assign(stage, 4, 2, 1)
    assert a.hold() and asked[-1] == (4, 1) and a.waits == 1
    now[0] += ALIGN_MAX_S - 0.1
    assert a.hold()
    now[0] += 0.2
    assert not a.hold()  # one batch goes all the same
    assert a.hold() and a.waits == 2  # then it waits again
    w.roles.rebalancing = True
    assert not a.hold()
    w.roles.rebalancing = False
    ahead[0] = False
    assert not a.hold() and a.since is None
    assert a.waited_s == pytest.approx(ALIGN_MAX_S + 0.1)


def test_a_writer_ahead_does_not_hold_while_its_group_waits_for_it_to_rejoin() -> None:
    """A writer that holds back does not poll its group consumer; while the group waits
    for it to (re)join (groupjoin.rejoining: a rejoin asked for or a join under way), it
    polls instead, or every other member waits the whole hold."""
    stage = _stage()
    w = stage.writer
    assert w is not None
    _assign(stage, 4, 2, 1)
    now = [100.0]

    class Coordinator:
        rejoin = False
        state = "<stable>"

        def need_rejoin(self) -> bool:
            return self.rejoin

        def group_metadata(self) -> Any:
            return namedtuple("M", "state generation_id")(self.state, 4)

    class Consumer:
        _coordinator = Coordinator()

    consumer = Consumer()
    a = Alignment(w, lambda g, i: True, clock=lambda: now[0],
                  rejoining=lambda: rejoining(consumer))
    assert a.hold() and a.waits == 1
    now[0] += 1.0
    consumer._coordinator.rejoin = True  # a heartbeat's answer: the group rebalances
    assert not a.hold() and a.since is None and a.waited_s == pytest.approx(1.0)
    consumer._coordinator.rejoin, consumer._coordinator.state = False, "<rebalancing>"
    assert not a.hold()  # the join under way
    consumer._coordinator.state = "<stable>"
    assert a.hold() and a.waits == 2
    assert rejoining(object()) is False  # not a kafka-python group consumer


def _merge_of(writers: dict[int, tuple[int, int]], gen: int = 3, cap: int = 10,
              count: int | None = None) -> WriterMerge:
    """A merge fed one frame per writer: index -> (messages, watermark), of ``count``
    writers (default: those given)."""
    m = WriterMerge(max_buffered=cap)
    count = len(writers) if count is None else count
    for off, (i, (n, wm)) in enumerate(sorted(writers.items())):
        recs = [Rec("src", i, p, wm - n + p + 1, None, b"v") for p in range(n)]
        m.add(off, unpack(pack(recs, list(range(n)),
                               WriterHeader(bytes([i]) * 16, gen, count, i, wm))))
    return m


def test_the_monitors_say_a_writer_is_ahead_once_their_merge_fills_with_its_messages() -> None:
    """TwoStageRunner.writer_ahead: a merge of the writer's generation holding at least
    ALIGN_SHARE of its bound, and the writer's watermark above another writer's there."""
    class Monitors:
        def __init__(self, *merges: WriterMerge) -> None:
            self.merges = PartitionMerges()
            for q, m in enumerate(merges):
                self.merges.merges[("rp", q)] = m

        def _pm(self) -> PartitionMerges:
            return self.merges

    def ahead(mon: Monitors, gen: int, index: int) -> bool:
        return TwoStageRunner.writer_ahead(mon, gen, index)  # type: ignore[arg-type]

    full = _merge_of({0: (6, 50), 1: (1, 20)})  # 7 wait: none below the bound 20
    assert full.buffered >= ALIGN_SHARE * full.max_buffered
    assert ahead(Monitors(full), 3, 0) and not ahead(Monitors(full), 3, 1)
    assert not ahead(Monitors(full), 4, 0)  # another generation's merge says nothing
    light = _merge_of({0: (3, 50), 1: (1, 20)})
    assert light.buffered < ALIGN_SHARE * light.max_buffered
    assert not ahead(Monitors(light), 3, 0)
    assert ahead(Monitors(light, full), 3, 0)
    unheard = _merge_of({0: (8, 50)}, count=2)  # writer 1 not heard yet (starting)
    assert unheard.buffered == 8 and ahead(Monitors(unheard), 3, 0)
    full.left_out.add(1)  # a writer left out is not waited for
    assert not ahead(Monitors(full), 3, 0)


def test_a_writer_waits_while_too_many_of_its_messages_are_in_flight_to_its_monitors() -> None:
    """The alignment's view is what this process's monitors have read: while more than
    ALIGN_IN_FLIGHT of the writer's messages are forwarded and not read there, it waits
    too (TwoStageRunner.in_flight: from the largest position of its frames read)."""
    stage = _stage()
    w = stage.writer
    assert w is not None
    _assign(stage, 2, 2, 0)
    pm = PartitionMerges()

    class Monitors:
        def _pm(self) -> PartitionMerges:
            return pm

    mon = Monitors()

    def in_flight(forwarded: int) -> int | None:
        def unread(last: int | None) -> int:  # (positions 0.. of this writer, dense)
            return forwarded - (0 if last is None else last + 1)

        return TwoStageRunner.in_flight(mon, w.writer_id, unread)  # type: ignore[arg-type]

    sent = [0]
    a = Alignment(w, lambda g, i: False, in_flight=lambda: in_flight(sent[0]))
    sent[0] = 60_000
    # before the monitors' first assignment everything forwarded is in flight
    assert in_flight(sent[0]) == 60_000 and a.hold()
    a = Alignment(w, lambda g, i: False, in_flight=lambda: in_flight(sent[0]))
    mon.monitors_held = set()  # type: ignore[attr-defined]
    assert in_flight(sent[0]) is None and not a.hold()  # assigned, no view: never waits
    recs = [Rec("src", 0, p, 10 + p, None, b"v") for p in range(3)]
    tp0, tp1 = TP("rp", 0), TP("rp", 1)
    pm.add(tp0, 0, unpack(pack(recs, [100, 101, 102], WriterHeader(
        w.writer_id, 2, 2, 0, 12))))
    pm.add(tp1, 0, unpack(pack(recs, [7, 8, 9], WriterHeader(
        b"x" * 16, 2, 2, 1, 12))))  # another writer's positions say nothing of this one
    assert in_flight(sent[0]) == 60_000 - 1 - 102
    assert a.hold()
    sent[0] = 103 + ALIGN_IN_FLIGHT
    assert not a.hold()
    sent[0] += 1
    assert a.hold()
    pm.drop(tp0)  # the partition went to another process: no view
    assert not a.hold()
    pm.alignment = a  # (a two-stage runner's): its series with the merge's
    got = {m.name: m.samples[0].value for m in WriterMergeCollector(pm).collect()}
    assert got["streamdrift_writer_align_waits"] == a.waits == 2
    _assign(stage, 3, 1, 0)  # one writer: nobody to align with, however much in flight
    pm.add(tp1, 1, unpack(pack(recs, [200, 201, 202], WriterHeader(
        w.writer_id, 3, 1, 0, 12))))
    sent[0] = 10**6
    assert not a.hold()
    assert got["streamdrift_writer_align_wait_seconds"] == a.waited_s >= 0.0


def test_messages_in_flight_are_counted_across_a_jump_of_the_positions() -> None:
    """A writer given a source partition numbers its merge positions on from the
    partition's commit (another writer's, perhaps far ahead): the gap holds no message.
    Counting positions there held a writer back for good (its monitors would never read
    the messages of the gap) in a bench run."""
    stage = _stage()
    assert stage.unread(None) == 0
    stage.forwarded = stage.seq = 100  # positions 0..99
    assert stage.unread(None) == 100 and stage.unread(49) == 50 and stage.unread(99) == 0
    stage.seq = 5_000  # a commit's position, taken over (Repartitioner._seek_assigned)
    stage.segments.append((5_000, stage.forwarded))
    stage.forwarded, stage.seq = 130, 5_030  # positions 5000..5029
    assert stage.unread(99) == 30  # not 4,930
    assert stage.unread(5_009) == 20 and stage.unread(5_029) == 0
    assert stage.unread(49) == 80
    assert stage.unread(1_000) == 30  # (a position in the gap: all of the gap's read)


def test_a_writer_of_several_with_no_view_of_the_merges_is_reported_unaligned(
        caplog: pytest.LogCaptureFixture) -> None:
    """A writer of two or more that forwards while its process's monitors hold no internal
    partition (more processes than internal partitions), or with no monitors at all
    (``--stage repartition``), never holds back (Alignment): after UNALIGNED_AFTER_S it
    is reported, once per episode, with the fix, and exported as
    ``streamdrift_writer_unaligned``; one writer alone, a writer with nothing to forward
    and monitors not assigned yet are not."""
    stage = _stage(partitions=2, topic="rp")
    w = stage.writer
    assert w is not None
    assert stage.health.snapshot().writer_unaligned is None  # no role yet
    w.check_view(False, True, 0.0)
    assert w.unaligned is None
    _assign(stage, 1, 1, 0)  # one writer: nobody to align with
    w.check_view(False, True, 100.0)
    assert w.unaligned is False and stage.health.snapshot().writer_unaligned == 0
    _assign(stage, 2, 3, 2)  # three writers, two internal partitions
    w.check_view(None, True, 0.0)  # the monitors not assigned yet: not known
    w.check_view(True, True, 1.0)
    w.check_view(False, False, 2.0)  # nothing to forward: nothing to run ahead with
    assert w.unaligned is False
    with caplog.at_level("INFO", logger="streamdrift.repartition"):
        w.check_view(False, True, 10.0)  # (a rebalance of the monitors passes by here)
        w.check_view(False, True, 10.0 + UNALIGNED_AFTER_S - 0.01)
        assert w.unaligned is False and not caplog.records
        w.check_view(False, True, 10.0 + UNALIGNED_AFTER_S)
        w.check_view(False, True, 60.0)
        assert w.unaligned is True and stage.health.snapshot().writer_unaligned == 1
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warned) == 1 and "one of 3" in warned[0] and \
            "source.repartition.partitions" in warned[0] and "rp (2 partition(s))" in warned[0]
        w.check_view(True, True, 61.0)  # a partition came back to this process
        assert w.unaligned is False
        assert "sees the monitors' merges again" in caplog.records[-1].getMessage()
        caplog.clear()
        # a process that runs only the first stage (its stage has no view)
        stage.view = None
        w.beat_at = 10**9  # (no heartbeat due)
        for t in (100.0, 100.0 + UNALIGNED_AFTER_S):
            tick(stage, t)
        assert w.unaligned is False  # (nothing assigned to the stage: not forwarding)
        stage.buffers[TP("events", 0)] = []
        for t in (200.0, 200.0 + UNALIGNED_AFTER_S):
            tick(stage, t)
        assert w.unaligned is True
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warned) == 1 and "--stage repartition" in warned[0] and \
            "source.repartition.writers: one" in warned[0]
    # both stages of a process: the first stage's flag is the process's
    own = stage.health.snapshot()
    assert merge_health(own, dataclasses.replace(own, writer_unaligned=None)) \
        .writer_unaligned == 1
    assert merge_health(dataclasses.replace(own, writer_unaligned=None),
                        dataclasses.replace(own, writer_unaligned=None)).writer_unaligned is None
