"""The join watchdog (stream/sources/joinwatch.py) against a real stuck join.

kafka-python 3.0.12 leaves a group leader's metadata-triggered join unfinished when its
JoinGroup response arrives while the loop is away from ``poll()`` (docs/reliability.md).
groupjoin.py mends that cause; the watchdog is the safety net for stuck joins not yet
seen. The test provokes the known one on the real broker with kafka-python's own consumer
(no mend), as the watchdog's raw material: two members share a topic, its partition count
grows, and the leader sleeps 3 s while its join is in flight (tests/support/joinrace.py).
Unguarded, the leader stays rebalancing with nothing
(test_group_join.py::test_without_the_mend_kafka_python_leaves_the_leader_out).
Guarded, the watchdog replaces the leader's consumer once the join has been pending for
``session_timeout_ms + request_timeout_ms``; the new member joins and the two share the
partitions, each partition owned by exactly one of them.
"""

from __future__ import annotations

from typing import Any

import pytest
from kafka import KafkaConsumer

from stream.sources.joinwatch import JOIN_STALLED, STABLE, GuardedConsumer, member_state
from tests.support.joinrace import provoke, shared

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SESSION_MS = 6_000
REQUEST_MS = 8_000
#: how long the test waits for the two members to share the 4 partitions after the growth:
#: the watchdog's limit (14 s), a new join, and margin for a loaded 2-core machine
SETTLE_S = 45


def _plain(bootstrap: str, topic: str, group: str) -> Any:
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                      metadata_max_age_ms=500, session_timeout_ms=SESSION_MS,
                      heartbeat_interval_ms=500, request_timeout_ms=REQUEST_MS)
    c.partitions_for_topic(topic)
    c.subscribe([topic])
    return c


def _owned(consumer: Any) -> set[int]:
    seen = member_state(getattr(consumer, "consumer", consumer))
    if seen is None or seen[0] != STABLE:
        return set()  # revoked, waiting for the join's outcome
    return {tp.partition for tp in consumer.assignment()}


def test_a_member_stuck_joining_is_replaced_and_rejoins(make_topic, kafka_bootstrap):
    topic = make_topic(partitions=2)
    group = f"watch-{topic}"
    restarts: list[str] = []
    leader: Any = GuardedConsumer(lambda: _plain(kafka_bootstrap, topic, group), restarts.append)
    other = _plain(kafka_bootstrap, topic, group)
    try:
        mine, theirs = provoke(kafka_bootstrap, topic, leader, other, _owned, SETTLE_S)
    finally:
        for c in (leader, other):
            c.close(autocommit=False)
    print(f"\n[join watch, guarded] leader {sorted(mine)}, other {sorted(theirs)}, "
          f"restarts {restarts}")
    assert restarts == [JOIN_STALLED]
    assert shared(mine, theirs)
