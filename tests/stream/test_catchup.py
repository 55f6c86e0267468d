"""When the first stage's merge waits for a source partition with nothing buffered
(stream/runtime/catchup.py), against a fake consumer: behind by its watermark, behind by
its end offset only (a stale watermark, or none), idle, unknown position, a failed end-offset
query, no progress for MAX_WAIT_S."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import pytest

from stream.runtime.catchup import MAX_WAIT_S, CatchUp


class TP(NamedTuple):
    topic: str
    partition: int


A, B = TP("t", 0), TP("t", 1)


class FakeConsumer:
    def __init__(self, pos: dict[Any, int | None], high: dict[Any, int | None],
                 end: dict[Any, int]) -> None:
        self.pos, self.high, self.end = pos, high, end
        self.queries: list[list[Any]] = []
        self.fail = False

    def position(self, tp: Any, timeout_ms: int) -> int | None:
        assert timeout_ms == 0  # never blocks the loop
        return self.pos[tp]

    def highwater(self, tp: Any) -> int | None:
        return self.high[tp]

    def end_offsets(self, tps: list[Any], timeout_ms: int) -> dict[Any, int]:
        self.queries.append(list(tps))
        if self.fail:
            raise TimeoutError("no broker")
        return {tp: self.end[tp] for tp in tps}


def _polled(c: CatchUp) -> CatchUp:
    c.polled()
    return c


def test_an_idle_partition_is_not_waited_for() -> None:
    consumer = FakeConsumer({A: 0}, {A: 0}, {A: 0})
    catchup = _polled(CatchUp())
    assert not catchup.waiting(consumer, [A], 0.0)
    assert consumer.queries == [[A]]
    # nothing polled since: the end offset still holds, no second query
    assert not catchup.waiting(consumer, [A], 1.0)
    assert consumer.queries == [[A]]
    # records polled since: asked again (one query for every partition that needs it)
    catchup.polled()
    assert not catchup.waiting(consumer, [A], 2.0)
    assert consumer.queries == [[A], [A]]


def test_a_partition_behind_its_watermark_is_waited_for_without_a_query() -> None:
    consumer = FakeConsumer({A: 10}, {A: 50}, {A: 50})
    assert _polled(CatchUp()).waiting(consumer, [A], 0.0)
    assert consumer.queries == []


def test_a_stale_watermark_is_checked_against_the_end_offset() -> None:
    """kafka-python reads a partition's watermark when it parses its fetch, which may be
    queued behind another partition's records: position == watermark is not enough."""
    consumer = FakeConsumer({A: 10, B: 7}, {A: 10, B: 7}, {A: 40, B: 7})
    catchup = _polled(CatchUp())
    assert catchup.waiting(consumer, [A, B], 0.0)
    assert consumer.queries == [[A, B]]
    # A's records arrive and are forwarded: it reaches its end offset
    consumer.pos[A] = consumer.high[A] = 40
    assert not catchup.waiting(consumer, [A, B], 0.5)


def test_an_unknown_position_is_waited_for() -> None:
    consumer = FakeConsumer({A: None}, {A: 0}, {A: 0})
    assert _polled(CatchUp()).waiting(consumer, [A], 0.0)


def test_a_failed_end_offset_query_is_waited_for_and_retried(
        caplog: pytest.LogCaptureFixture) -> None:
    consumer = FakeConsumer({A: 5}, {A: 5}, {A: 5})
    consumer.fail = True
    catchup = _polled(CatchUp())
    with caplog.at_level(logging.WARNING, "streamdrift.repartition"):
        assert catchup.waiting(consumer, [A], 0.0)
    assert "cannot read the end offsets" in caplog.text
    consumer.fail = False
    assert not catchup.waiting(consumer, [A], 0.1)
    assert len(consumer.queries) == 2


def test_a_partition_is_waited_for_while_it_makes_progress_then_left_behind(
        caplog: pytest.LogCaptureFixture) -> None:
    consumer = FakeConsumer({A: 0}, {A: 100}, {A: 100})
    catchup = _polled(CatchUp())
    t = 0.0
    # progress (its position moves) restarts the clock, however long it takes in all
    for pos in range(0, 100, 10):
        t += MAX_WAIT_S * 0.9
        consumer.pos[A] = pos
        assert catchup.waiting(consumer, [A], t)
    # no progress for MAX_WAIT_S: the merge goes on without it, with one warning
    assert catchup.waiting(consumer, [A], t + MAX_WAIT_S * 0.5)
    with caplog.at_level(logging.WARNING, "streamdrift.repartition"):
        assert not catchup.waiting(consumer, [A], t + MAX_WAIT_S)
        assert not catchup.waiting(consumer, [A], t + 2 * MAX_WAIT_S)
    assert caplog.text.count("made no progress") == 1
    # it moves again: waited for again
    consumer.pos[A] = 95
    assert catchup.waiting(consumer, [A], t + 3 * MAX_WAIT_S)
    # it had records meanwhile (not in the empty ones), then stalls again: warned again
    assert not catchup.waiting(consumer, [], t + 3 * MAX_WAIT_S)
    with caplog.at_level(logging.WARNING, "streamdrift.repartition"):
        assert not catchup.waiting(consumer, [A], t + 5 * MAX_WAIT_S)
    assert caplog.text.count("made no progress") == 2


def test_forget_drops_what_was_known() -> None:
    consumer = FakeConsumer({A: 3}, {A: 3}, {A: 3})
    catchup = _polled(CatchUp())
    assert not catchup.waiting(consumer, [A], 0.0)
    catchup.forget(A)  # sought after an assignment: the end offset is asked again
    assert not catchup.waiting(consumer, [A], 0.1)
    assert consumer.queries == [[A], [A]]


def test_without_a_watermark_the_end_offset_decides() -> None:
    """kafka-python may have no watermark of an idle partition for a long time (none in
    its fetch responses): its end offset says it is caught up, no stall."""
    consumer = FakeConsumer({A: 0, B: 4}, {A: None, B: None}, {A: 0, B: 9})
    catchup = _polled(CatchUp())
    assert catchup.waiting(consumer, [A, B], 0.0)  # B is behind
    assert consumer.queries == [[A, B]]
    assert not catchup.waiting(consumer, [A], 0.1)  # A alone: caught up


def test_a_partition_not_sought_yet_is_waited_for() -> None:
    """Assigned, but its seek to the committed offset failed (retried next iteration):
    nothing of it is read, whatever position the consumer has."""
    consumer = FakeConsumer({A: 5, B: 5}, {A: 5, B: 5}, {A: 5, B: 5})
    catchup = _polled(CatchUp())
    assert catchup.waiting(consumer, [A], 0.0, unsought=[B])
    assert consumer.queries == [[A]]  # never asked about B: its position is not ours
    assert not catchup.waiting(consumer, [A], MAX_WAIT_S, unsought=[B])  # no progress
    assert not catchup.waiting(consumer, [A, B], MAX_WAIT_S + 1)  # sought: caught up
