"""The group assignment of the first stage of ``source.repartition``: one writer at a time.

With the default assignors, two processes split the source partitions, and each first
stage forwards only the keys of its own partitions, at its own pace.  On the internal
topic the two streams then follow each other in blocks: whenever one first stage is ahead
of the other (a backlog, a burst, a group join), a monitor sees hundreds of events of one
half of the keys in a row, and the key column, and the columns that depend on it, alarm
on clean data (8-20 ``c1`` episodes over 5 bursts of 3,000 events in
``bench/bench_scaleout.py``; none with a single first stage).  Mixing at a finer grain
cannot help: each first stage only *has* its own half of the keys.

:class:`OneWriterAssignor` gives every source partition to one member of the first
stage's group (the first in the order of kafka-python's range assignor: static members,
then member ids) and none to the others, which stand by: when the writer leaves or dies,
the rebalance hands everything to the next, which starts at the committed offsets (the
at-least-once path of any rebalance).  The monitors, in their own group, still spread
over the processes.  Listed before ``range`` so that a group with members of an older
release (which only offer range and round-robin) still agrees on a protocol.
"""

from __future__ import annotations

from typing import Any

from kafka.coordinator.assignors.abstract import (
    AbstractPartitionAssignor,
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
)
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor


class OneWriterAssignor(AbstractPartitionAssignor):
    """Every partition of every subscribed topic to one member; nothing to the others.

    The writer stays the writer while it is in the group: each member says in its
    subscription whether it holds partitions (``user_data`` :data:`WRITING`), and the
    assignment keeps them with that member, so a process that joins does not move the
    first stage (kafka-python makes one instance per consumer)."""

    name = "streamdrift-one-writer"
    version = 0

    def __init__(self) -> None:
        self.writing = False

    @staticmethod
    def writer(members: list[Any]) -> Any:
        """The member that gets everything: the one that holds the partitions now, else
        (or if several say so, after a split) the first of the static members, then of
        the member ids."""
        def order(ms: list[Any]) -> list[str]:
            return sorted(m.member_id for m in ms if m.group_instance_id is not None) + \
                sorted(m.member_id for m in ms if m.group_instance_id is None)

        holding = [m for m in members if getattr(m.metadata, "user_data", b"") == WRITING]
        return order(holding or members)[0]

    def assign(self, cluster: Any, members: list[Any]) -> dict[str, Any]:
        writer = self.writer(members)
        topics = sorted({t for m in members for t in m.metadata.topics})
        mine = []
        for topic in topics:
            parts = cluster.partitions_for_topic(topic)
            if parts:
                mine.append((topic, sorted(parts)))
        return {m.member_id: ConsumerProtocolAssignment(
            self.version, mine if m.member_id == writer else [], b"") for m in members}

    def metadata(self, topics: Any) -> Any:
        return ConsumerProtocolSubscription(self.version, list(topics),
                                            WRITING if self.writing else b"")

    def on_assignment(self, assignment: Any, generation: Any = None) -> None:
        self.writing = any(ps for _, ps in assignment.assigned_partitions)


#: the subscription's user data of the member that holds the partitions
WRITING = b"writing"


#: the first stage's ``partition_assignment_strategy``
STRATEGY = (OneWriterAssignor, RangePartitionAssignor, RoundRobinPartitionAssignor)
