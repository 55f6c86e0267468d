"""The first stage's hold of the newest records (catchup.Lateness): a producer's batch of
one partition that reaches the broker after the other partitions' records of the same
milliseconds still merges in time order; and a millisecond is merged whole, never split
between two batches (catchup.merge_plan's ``complete``)."""

from __future__ import annotations

import time
from collections import namedtuple
from typing import Any

import numpy as np
import pytest

from stream.config import parse_config
from stream.runtime import catchup
from stream.runtime.catchup import Lateness
from stream.runtime.repartition import Repartitioner, merge_plan
from tests.support.configs import minimal_config

KAFKA = {"bootstrap_servers": "k:9092", "topics": ["events"], "group_id": "g"}
Rec = namedtuple("Rec", "topic partition offset timestamp key value")


def test_merge_plan_stops_at_the_cap() -> None:
    stamps = [np.array([1, 2, 5, 9]), np.array([2, 3, 8])]
    assert merge_plan(stamps)[0] == [3, 3]
    assert merge_plan(stamps, cap=None)[0] == [3, 3]
    assert merge_plan(stamps, cap=3)[0] == [2, 2]
    counts, order = merge_plan(stamps, cap=0)
    assert counts == [0, 0] and not len(order)


def test_the_cap_is_the_clock_minus_lateness_unless_records_waited_twice_as_long(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catchup, "wall_ms", lambda: 10_000)
    late = Lateness(2_000)
    assert late.cap({}, 100.0) == 8_000
    stamps = {"a": np.array([9_500, 9_600, 9_700]), "b": np.array([9_550])}
    late.arrived("a", 2, 100.0)
    late.arrived("a", 1, 103.0)
    late.arrived("b", 1, 103.0)
    assert late.cap(stamps, 103.5) == 8_000  # nothing buffered for 4 s yet
    # records buffered for more than 2 x lateness go whatever their timestamps (a producer
    # clock ahead of ours): up to the newest of them
    assert late.cap(stamps, 104.5) == 9_600
    late.taken("a", 2)
    stamps["a"] = stamps["a"][2:]
    assert late.cap(stamps, 104.5) == 8_000
    late.forget("a")
    assert "a" not in late.arrivals
    assert Lateness(0).cap(stamps, 104.5) is None  # lateness_ms 0: no hold


class Script:
    """A consumer that hands out scripted polls; ``ends``: each partition's end offset as
    the broker has it at that moment (a partition at its end is caught up)."""

    def __init__(self) -> None:
        self.polls: list[dict[str, list[Rec]]] = []
        self.pos: dict[str, int] = {"x": 0, "y": 0}
        self.ends: dict[str, int] = {"x": 0, "y": 0}

    def poll(self, **_: Any) -> dict[str, list[Rec]]:
        got = self.polls.pop(0) if self.polls else {}
        for tp, recs in got.items():
            self.pos[tp] = recs[-1].offset + 1
        return got

    def position(self, tp: str, timeout_ms: int = 0) -> int:
        return self.pos[tp]

    def highwater(self, tp: str) -> int:
        return self.ends[tp]

    def end_offsets(self, tps: list[str], timeout_ms: int = 0) -> dict[str, int]:
        return {tp: self.ends[tp] for tp in tps}

    def commit(self, offsets: Any, timeout_ms: int = 0) -> None:
        pass


def _merged(lateness_ms: int, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Partition y's batch of 200 records (ms 1,000-1,199) arrives while x, caught up at
    that moment, has its batch of the same milliseconds still on the way; the next poll
    brings it.  The partitions of the records forwarded, in the order forwarded."""
    config = parse_config(minimal_config(source={
        "kafka": KAFKA, "repartition": {"lateness_ms": lateness_ms}}), "/cfg")
    stage = Repartitioner(config, pipeline=None)  # type: ignore[arg-type]
    consumer = Script()
    stage.consumer = consumer
    for tp in ("x", "y"):
        stage.buffers[tp], stage.stamps[tp] = [], np.empty(0, dtype=np.int64)
    out: list[str] = []

    def send(records: list[Rec]) -> bool:
        out.extend(("x", "y")[r.partition] for r in records)
        return True

    stage._send = send  # type: ignore[method-assign]
    batch = {p: [Rec("events", i, o, 1_000 + o, None, b"{}") for o in range(200)]
             for i, p in enumerate(("x", "y"))}
    clock = [1_300]
    monkeypatch.setattr(catchup, "wall_ms", lambda: clock[0])
    consumer.ends["y"] = 200
    consumer.polls = [{"y": batch["y"]}]
    stage._iteration()
    consumer.ends["x"] = 200  # x's batch reaches the broker 100 ms later
    consumer.polls = [{"x": batch["x"]}]
    clock[0] = 1_400
    stage._iteration()
    clock[0] = 1_300 + 2 * lateness_ms + 1_000  # then time passes: everything may go
    for _ in range(2):
        stage._iteration()
    assert sorted(out) == ["x"] * 200 + ["y"] * 200
    return out


def _longest_run(seq: list[str]) -> int:
    best = run = 1
    for a, b in zip(seq, seq[1:], strict=False):
        run = run + 1 if a == b else 1
        best = max(best, run)
    return best


def test_a_late_batch_of_a_caught_up_partition_merges_in_time_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert _longest_run(_merged(2_000, monkeypatch)) <= 2
    # without the hold, y's batch went alone: a block of one partition's keys
    assert _longest_run(_merged(0, monkeypatch)) >= 200


def test_an_old_backlog_is_not_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catchup, "wall_ms", lambda: int(time.time() * 1000))
    late = Lateness(2_000)
    late.arrived("a", 3, time.monotonic())
    stamps = {"a": np.array([1_000, 2_000, 3_000])}  # 1970: far older than the clock
    counts, _ = merge_plan([stamps["a"]], cap=late.cap(stamps, time.monotonic()))
    assert counts == [3]


# -- a millisecond merged whole ------------------------------------------------------------
def _backlog(whole: bool) -> list[str]:
    """A backlog (old timestamps: no lateness hold) of two partitions, 10 records per ms
    over ms 1,000-1,009, but 60 of x in ms 1,005; the first poll brings all of y and x up
    to the middle of ms 1,005, the second the rest of x.  ``whole``: the stage as it is;
    else with the check of the limit's millisecond answering "complete" (the merge before
    it).  The partitions of the records forwarded, in the order forwarded."""
    config = parse_config(minimal_config(source={"kafka": KAFKA, "repartition": {}}), "/cfg")
    stage = Repartitioner(config, pipeline=None)  # type: ignore[arg-type]
    consumer = Script()
    stage.consumer = consumer
    for tp in ("x", "y"):
        stage.buffers[tp], stage.stamps[tp] = [], np.empty(0, dtype=np.int64)
    if not whole:
        stage.tail.waiting = lambda *a, **k: False  # type: ignore[method-assign]
    out: list[str] = []

    def send(records: list[Rec]) -> bool:
        out.extend(("x", "y")[r.partition] for r in records)
        return True

    stage._send = send  # type: ignore[method-assign]
    ms_x = [ms for ms in range(1_000, 1_010) for _ in range(60 if ms == 1_005 else 10)]
    ms_y = [ms for ms in range(1_000, 1_010) for _ in range(10)]
    x = [Rec("events", 0, o, ms, None, b"{}") for o, ms in enumerate(ms_x)]
    y = [Rec("events", 1, o, ms, None, b"{}") for o, ms in enumerate(ms_y)]
    consumer.ends = {"x": len(x), "y": len(y)}
    cut = 50 + 30  # x: ms 1,000-1,004 and half of ms 1,005
    consumer.polls = [{"x": x[:cut], "y": y}, {"x": x[cut:]}]
    for _ in range(3):
        stage._iteration()
    assert sorted(out) == ["x"] * len(x) + ["y"] * len(y)
    return out


def test_a_millisecond_split_between_polls_merges_whole() -> None:
    merged = _backlog(whole=True)
    # ms 1,005: 60 of x and 10 of y, interleaved (6 x for each y)
    assert _longest_run(merged) <= 7, merged
    # merged as before: x's half of ms 1,005 polled later followed as a block of its keys
    assert _longest_run(_backlog(whole=False)) >= 30
