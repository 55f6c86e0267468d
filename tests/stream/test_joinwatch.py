"""The join watchdog's timing (stream/sources/joinwatch.py); the real stuck join against a
broker is in tests/integration/test_join_watch.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from stream.sources.joinwatch import JOIN_STALLED, STABLE, GuardedConsumer, JoinWatch

REBALANCING, UNJOINED = "<rebalancing>", "<unjoined>"


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_the_clock_runs_only_after_a_joingroup_response() -> None:
    clock = Clock()
    w = JoinWatch(40.0, clock)
    assert not w.observe(STABLE, 3)
    clock.t = 100  # the broker holds the JoinGroup open: generation 3 is the old one
    assert not w.observe(REBALANCING, 3)
    clock.t = 1000
    assert not w.observe(REBALANCING, 3)
    assert not w.observe(UNJOINED, -1)  # reset_generation: joining from scratch
    clock.t = 2000
    assert not w.observe(UNJOINED, -1)
    assert w.stuck_for() == 0.0
    clock.t = 2001  # JoinGroup answered: generation 4, never stable in it
    assert not w.observe(REBALANCING, 4)
    clock.t = 2041
    assert not w.observe(REBALANCING, 4)  # exactly the limit: not yet
    assert w.stuck_for() == 40.0
    clock.t = 2041.5
    assert w.observe(REBALANCING, 4)


def test_stable_resets_and_a_new_generation_restarts_the_clock() -> None:
    clock = Clock()
    w = JoinWatch(10.0, clock)
    w.observe(STABLE, 1)
    clock.t = 1
    assert not w.observe(REBALANCING, 2)
    clock.t = 9
    assert not w.observe(STABLE, 2)  # joined in time
    clock.t = 20
    assert not w.observe(REBALANCING, 2)  # the next rebalance, JoinGroup pending
    clock.t = 25
    assert not w.observe(REBALANCING, 3)  # its JoinGroup answered at 25
    clock.t = 34
    assert not w.observe(REBALANCING, 4)  # retried (e.g. RebalanceInProgress): from 34
    clock.t = 44
    assert not w.observe(REBALANCING, 4)
    clock.t = 44.1
    assert w.observe(REBALANCING, 4)


def test_a_first_join_counts_from_its_first_generation() -> None:
    clock = Clock()
    w = JoinWatch(5.0, clock)
    assert not w.observe(UNJOINED, -1)
    clock.t = 1
    assert not w.observe(REBALANCING, 7)
    clock.t = 7
    assert w.observe(REBALANCING, 7)


class Consumer:
    """What GuardedConsumer uses of a kafka-python consumer (its coordinator's state)."""

    built = 0

    def __init__(self, fail_close: bool = False) -> None:
        Consumer.built += 1
        self.state, self.generation = UNJOINED, -1
        self.config = {"session_timeout_ms": 6000, "request_timeout_ms": 4000, "group_id": "g"}
        self._coordinator = SimpleNamespace(group_metadata=lambda: SimpleNamespace(
            state=self.state, generation_id=self.generation))
        self.closed = False
        self.fail_close = fail_close

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, Any]:
        return {}

    def assignment(self) -> set[int]:
        return {1} if self.state == STABLE else set()

    def close(self, autocommit: bool = True, timeout_ms: int | None = None) -> None:
        self.closed = True
        if self.fail_close:
            raise RuntimeError("UnknownMemberIdError")


def test_a_stuck_consumer_is_closed_and_built_again() -> None:
    clock, reasons = Clock(), []
    made: list[Consumer] = []

    def factory() -> Consumer:
        made.append(Consumer(fail_close=not made))
        return made[-1]

    g = GuardedConsumer(factory, reasons.append, clock)
    first = g.consumer
    assert g.watch.limit_s == 10.0
    first.state, first.generation = STABLE, 1
    assert g.poll(timeout_ms=100) == {} and g.assignment() == {1}  # attributes pass through
    first.state, first.generation = REBALANCING, 2
    clock.t = 5
    g.poll(timeout_ms=100)
    clock.t = 15
    g.poll(timeout_ms=100)
    assert g.consumer is first and not reasons
    clock.t = 15.5
    g.poll(timeout_ms=100)
    assert first.closed and g.consumer is made[1] and reasons == [JOIN_STALLED]
    assert g.restarts == 1 and not made[1].closed
    clock.t = 100  # the new consumer: a fresh watch, nothing stale carried over
    g.poll(timeout_ms=100)
    assert g.consumer is made[1]


def test_when_no_new_consumer_can_be_built_the_old_one_stays() -> None:
    clock, made = Clock(), []

    def factory() -> Consumer:
        if made:
            raise ConnectionError("no broker")
        made.append(Consumer())
        return made[0]

    g = GuardedConsumer(factory, None, clock)
    made[0].state, made[0].generation = REBALANCING, 3
    g.poll()
    clock.t = 11
    assert not g.check()
    assert g.consumer is made[0] and not made[0].closed and g.restarts == 1
    clock.t = 15  # the clock restarted at 11: tried again after another limit
    assert not g.check()
    assert g.watch.stuck_for() == 4
