"""A group leader's join that kafka-python 3.0 leaves unfinished (stream/sources/groupjoin.py).

Two members share a topic (tests/support/joinrace.py). Then its partition count grows, so the leader starts a
rebalance because the metadata changed. The leader then spends a while away from
``poll()``, as the runner does while it processes a batch, and the JoinGroup response
arrives in that window.

Without the mend, kafka-python never applies that join: the leader stays rebalancing,
owns nothing, and is expelled; the other member ends up owning every partition. With the
mend (the consumers ``subscribed_consumer`` builds), the leader joins again: the two members
share the partitions, and each partition belongs to exactly one of them.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from stream.config import KafkaConfig
from stream.sources.groupjoin import REBALANCING, mend_join, rejoining
from stream.sources.kafka import subscribed_consumer
from tests.support.joinrace import provoke, shared

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

#: a member that left the group's join unfinished is expelled after this
SESSION_MS = 6_000


def _member(bootstrap: str, topic: str, group: str, mend: bool,
            metadata_max_age_ms: int | None = 500) -> Any:
    """A group member; ``metadata_max_age_ms`` 500 makes it see a partition count grow
    soon (None: kafka-python's default)."""
    options: dict[str, Any] = {"session_timeout_ms": SESSION_MS, "heartbeat_interval_ms": 500}
    if metadata_max_age_ms is not None:
        options["metadata_max_age_ms"] = metadata_max_age_ms
    k = KafkaConfig(bootstrap_servers=(bootstrap,), topics=(topic,), group_id=group,
                    options=options)
    # the mend alone: without the join watchdog that kafka_python_consumer wraps it in
    consumer = subscribed_consumer(k, 1_000_000, lambda _: None, lambda _: None,
                                    lambda _: None)
    if not mend:  # the plain kafka-python poll, to show the race
        consumer.poll = super(type(consumer), consumer).poll
    return consumer


def _owned(consumer: Any) -> set[int]:
    if consumer._coordinator.state == REBALANCING:
        return set()  # revoked, waiting for the join's outcome
    return {tp.partition for tp in consumer.assignment()}


def _run(bootstrap: str, topic: str, mend: bool) -> tuple[set[int], set[int], int]:
    group = f"join-{topic}-{mend}"
    leader = _member(bootstrap, topic, group, mend)
    other = None
    try:
        other = _member(bootstrap, topic, group, mend)
        mine, theirs = provoke(bootstrap, topic, leader, other, _owned,
                               settle_s=3 * SESSION_MS / 1000 + 10)
        return mine, theirs, getattr(leader, "joins_mended", 0)
    finally:
        for c in (leader, other):
            if c is not None:
                c.close(autocommit=False)


def test_a_leader_whose_join_finished_between_polls_joins_again(make_topic, kafka_bootstrap):
    mine, theirs, mended = _run(kafka_bootstrap, make_topic(partitions=2), mend=True)
    print(f"\n[group join, mended] leader {sorted(mine)}, other {sorted(theirs)}, "
          f"joins mended {mended}")
    assert mended >= 1
    assert shared(mine, theirs)


def test_without_the_mend_kafka_python_leaves_the_leader_out(make_topic, kafka_bootstrap):
    """The race itself, with kafka-python's own poll: if this starts failing, kafka-python
    has fixed it and groupjoin.py can go."""
    mine, theirs, _ = _run(kafka_bootstrap, make_topic(partitions=2), mend=False)
    print(f"\n[group join, plain kafka-python] leader {sorted(mine)}, other {sorted(theirs)}")
    assert not mine, "kafka-python finished the leader's join on its own"
    assert theirs == {0, 1, 2, 3}


def test_the_mend_leaves_a_member_alone_while_its_join_is_pending() -> None:
    class Coordinator:
        def __init__(self, state: str, need: bool) -> None:
            self.state, self.need, self.rejoins = state, need, 0

        def need_rejoin(self) -> bool:
            return self.need

        def request_rejoin(self) -> None:
            self.rejoins += 1

    class Consumer:
        def __init__(self, coordinator: Coordinator) -> None:
            self._coordinator = coordinator

    for state, need, mended in [(REBALANCING, False, True), (REBALANCING, True, False),
                                ("<stable>", False, False), ("<unjoined>", True, False)]:
        c = Coordinator(state, need)
        assert mend_join(Consumer(c)) is mended
        assert c.rejoins == int(mended)
    assert mend_join(object()) is False  # not a kafka-python group consumer


def test_a_member_away_from_poll_learns_of_a_rebalance_from_its_heartbeats(
        make_topic, kafka_bootstrap):
    """groupjoin.rejoining: a first-stage writer holding back (writers.Alignment) does
    not poll; it must see, without polling, that the group waits for it to rejoin, or the
    group's rebalance waits the whole hold (up to ALIGN_MAX_S)."""
    topic = make_topic(partitions=2)
    group = f"rejoin-{topic}"

    def member() -> Any:
        return _member(kafka_bootstrap, topic, group, mend=True, metadata_max_age_ms=None)

    first, second = member(), None
    try:
        # stable with both partitions for 2 s of polling (a topic just created may make
        # the first join's metadata change once more)
        deadline, since = time.monotonic() + 30, None
        while time.monotonic() < deadline:
            first.poll(timeout_ms=200)
            if rejoining(first) or len(first.assignment()) < 2:
                since = None
            elif since is None:
                since = time.monotonic()
            elif time.monotonic() - since > 2:
                break
        assert len(first.assignment()) == 2 and not rejoining(first)  # a stable member
        time.sleep(1.5)  # heartbeats (every 500 ms) while away from poll: still stable
        assert not rejoining(first)
        second = member()
        second.poll(timeout_ms=100)  # sends its JoinGroup: the group rebalances
        t0 = time.monotonic()
        while not rejoining(first) and time.monotonic() - t0 < 10:
            second.poll(timeout_ms=100)  # (the first stays away from poll)
        seen = time.monotonic() - t0
        print(f"\n[rejoining] a member away from poll saw the rebalance after {seen:.2f} s")
        assert rejoining(first), "the heartbeats did not tell of the rebalance in 10 s"
        assert seen < 5  # a heartbeat interval (0.5 s) and the join's round trip
        # polling, it joins; both end up stable with the partitions shared
        deadline = time.monotonic() + 30
        while (rejoining(first) or rejoining(second) or not first.assignment()
               or not second.assignment()) and time.monotonic() < deadline:
            first.poll(timeout_ms=100)
            second.poll(timeout_ms=100)
        assert not rejoining(first) and not rejoining(second)
        assert {tp.partition for tp in first.assignment()} | \
            {tp.partition for tp in second.assignment()} == {0, 1}
    finally:
        for c in (first, second):
            if c is not None:
                c.close(autocommit=False)
