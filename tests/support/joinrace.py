"""Provoke kafka-python 3.0.12's unfinished group join against the real broker.

Two members share a 2-partition topic; its partition count grows to 4, which makes the
group leader rejoin because its metadata changed. The leader then stays away from
``poll()`` for 3 s, as the runner does while it processes a batch, so the JoinGroup
response arrives between two polls (docs/reliability.md). The other member stays away
from ``poll()`` until the leader's join is in flight: kafka-python rejoins only from
``poll()``, and the broker holds the leader's JoinGroup until every member rejoined, so
the response cannot land inside one of the leader's polls.

Used by tests/integration/test_group_join.py (the mend in groupjoin.py) and
test_join_watch.py (the watchdog in joinwatch.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewPartitions

#: the four partitions after the growth
ALL = {0, 1, 2, 3}


def shared(mine: set[int], theirs: set[int]) -> bool:
    """The two members share the 4 partitions, each owned by exactly one of them."""
    return bool(mine and theirs and mine | theirs == ALL and not mine & theirs)


def provoke(bootstrap: str, topic: str, leader: Any, other: Any,
            owned: Callable[[Any], set[int]], settle_s: float) -> tuple[set[int], set[int]]:
    """Run the race on two subscribed members of one group (``leader`` joins first) and
    return the partitions each owns once they share the 4 partitions, or after
    ``settle_s`` seconds. ``owned`` is a member's partitions, empty while it rebalances.
    The caller closes the members."""
    stop = threading.Event()
    other_polls = threading.Event()
    other_polls.set()

    def poll_other() -> None:
        while not stop.is_set():
            if other_polls.is_set():
                other.poll(timeout_ms=100)
            else:
                time.sleep(0.05)

    try:
        deadline = time.monotonic() + 30
        while not leader.assignment() and time.monotonic() < deadline:
            leader.poll(timeout_ms=100)
        assert leader.assignment(), "the first member did not join"
        thread = threading.Thread(target=poll_other, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not (owned(leader) and owned(other)) and time.monotonic() < deadline:
            leader.poll(timeout_ms=100)
        assert owned(leader) and owned(other), "the two members did not share 2 partitions"

        other_polls.clear()
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.create_partitions({topic: NewPartitions(total_count=4)})
        finally:
            admin.close()
        slow_once = True
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            leader.poll(timeout_ms=100)
            if slow_once and not owned(leader):
                # the leader's metadata-triggered join is in flight: a slow batch keeps the
                # loop away from poll() while the other member rejoins and the JoinGroup
                # response arrives
                slow_once = False
                threading.Timer(1.0, other_polls.set).start()
                time.sleep(3.0)
            if shared(owned(leader), owned(other)):
                break
        assert not slow_once, "the leader did not start the rebalance"
        return owned(leader), owned(other)
    finally:
        stop.set()
        other_polls.set()

