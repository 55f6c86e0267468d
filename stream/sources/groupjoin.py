"""A group join that kafka-python 3.0 leaves unfinished, and the mend after every poll.

kafka-python 3.0 runs a consumer group's JoinGroup and SyncGroup round trip as a task on
its IO thread. ``poll()`` awaits that task only for the poll's timeout, and awaits it
again on later polls for as long as ``need_rejoin()`` holds.

A group leader that rejoins because the metadata of the group's topics changed (a
partition count grew, or a subscribed topic appeared) is the exception. That rejoin is
requested by ``need_rejoin()`` comparing the metadata with the snapshot the last
assignment used, not by the coordinator's ``rejoin_needed`` flag. The leader's assignment
runs on the IO thread when the JoinGroup response arrives, and it updates that snapshot.

When the response arrives between two polls (the runner was processing a batch), the
next poll sees ``need_rejoin()`` false:
- the finished join is never applied;
- the member stays ``rebalancing`` with its heartbeats off, owning no partition;
- the broker expels it after ``session_timeout_ms``;
- it polls on forever without partitions, and its peers go on without it.

The kafka-python INFO log shows ``Elected group leader -- performing partition
assignments`` with no ``Updated partition assignment`` after it, and ``LeaveGroup ...
UnknownMemberIdError`` at shutdown.

The mend: after each poll, a member that is still rebalancing while ``need_rejoin()`` is
false is asked to rejoin (``request_rejoin()``). The next poll then awaits the join in
flight, or joins again if that join finished unawaited. Nothing is lost: the member
revoked its partitions (and the runner checkpointed them) before the join began. On a
kafka-python without this race the condition never holds and the mend does nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from stream.sources.joinwatch import member_state

log = logging.getLogger("streamdrift.run")

#: ``kafka.structs.MemberState.REBALANCING`` and ``STABLE`` (kafka-python 3.0)
REBALANCING, STABLE = "<rebalancing>", "<stable>"


def mend_join(consumer: Any) -> bool:
    """Ask a member that kafka-python left rebalancing, with no rejoin pending, to rejoin;
    True when it did."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or getattr(coordinator, "state", None) != REBALANCING:
        return False
    need_rejoin = getattr(coordinator, "need_rejoin", None)
    if need_rejoin is None or need_rejoin():
        return False  # the next poll awaits the join in flight
    coordinator.request_rejoin()
    return True


def holds(consumer: Any, tp: Any) -> bool:
    """Whether ``consumer`` is a stable member of its group with ``tp`` assigned (from a
    kafka-python consumer's :func:`~stream.sources.joinwatch.member_state`; True for one
    without, as librdkafka's, whose rebalance callbacks run inside ``poll()``).  A member
    the race above, or a missed callback, left with a partition another member was given
    since fails it."""
    member = member_state(consumer)
    return member is None or (member[0] == STABLE and tp in consumer.assignment())


def rejoining(consumer: Any) -> bool:
    """Whether ``consumer`` (kafka-python's) must poll to (re)join its group: a rebalance
    it was told of (a heartbeat's answer, a rejoin asked for) or a join under way.  A
    member that does not poll then keeps every other member of the group waiting.  False
    for a consumer without a kafka-python coordinator."""
    coordinator = getattr(consumer, "_coordinator", None)
    need_rejoin = getattr(coordinator, "need_rejoin", None)
    if need_rejoin is None:
        return False
    if need_rejoin():
        return True
    member = member_state(consumer)
    return member is not None and member[0] != STABLE


def group_consumer(**kwargs: Any) -> Any:
    """A ``kafka.KafkaConsumer`` whose ``poll()`` applies :func:`mend_join` after each call
    (its ``joins_mended`` attribute counts the mends)."""
    from kafka import KafkaConsumer

    class GroupConsumer(KafkaConsumer):  # type: ignore[misc]
        joins_mended = 0

        def poll(self, timeout_ms: int = 0, max_records: int | None = None,
                 update_offsets: bool = True) -> Any:
            records = super().poll(timeout_ms=timeout_ms, max_records=max_records,
                                   update_offsets=update_offsets)
            if mend_join(self):
                self.joins_mended += 1
                log.warning(
                    "the consumer group join finished while the loop was not polling and "
                    "kafka-python did not apply it; joining again",
                    extra={"group": self.config.get("group_id"),
                           "joins_mended": self.joins_mended})
            return records

    return GroupConsumer(**kwargs)
