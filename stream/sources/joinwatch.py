"""A watchdog on kafka-python's group join: a consumer stuck joining is replaced.

A member that never finishes its join leaves its partitions unread for as long as it runs:
``source_up`` stays 1, lag grows, nothing says why. kafka-python 3.0 has at least one way
into that state (a leader's metadata-triggered join applied by no later poll; see
docs/reliability.md), and a SyncGroup round trip that never finishes would do the same.

The watch starts the clock when the member has a generation it was never stable in: its
JoinGroup succeeded, so what is left is the SyncGroup round trip, which the broker answers
within ``session_timeout_ms`` (the leader's SyncGroup, or its expulsion) and the client
gives up on after ``request_timeout_ms``. A member still not stable after the sum of the two
is stuck. Before the JoinGroup response the clock does not run: the broker may hold a
JoinGroup open for the whole rebalance timeout while another member is slow.

:class:`GuardedConsumer` then logs a warning, counts a consumer restart (reason
``group_join_stalled``), closes the consumer and builds a new one, which joins the group
afresh. Nothing is lost: the member revoked its partitions (and the runner checkpointed
them) when the join began, and the new member's partitions are restored from the
checkpoints as on any rebalance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("streamdrift.run")

#: ``kafka.structs.MemberState.STABLE`` (kafka-python 3.0)
STABLE = "<stable>"
#: the reason a stuck join gives in ``streamdrift_consumer_restarts_total``
JOIN_STALLED = "group_join_stalled"
#: closing a stuck consumer: its LeaveGroup fails (the broker expelled it), do not wait long
CLOSE_TIMEOUT_MS = 5_000


class JoinWatch:
    """Whether a member has been joining for longer than ``limit_s`` since its JoinGroup
    succeeded (:meth:`observe` after each poll)."""

    def __init__(self, limit_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit_s = limit_s
        self._clock = clock
        #: the generation the member was last stable in
        self._stable_gen: int | None = None
        #: the generation seen at the last observation, and since when it is not stable
        self._seen_gen: int | None = None
        self._joined_at: float | None = None

    def observe(self, state: str, generation: int | None) -> bool:
        """True when the member is stuck: not stable, ``limit_s`` after it got a generation
        it was never stable in."""
        if state == STABLE:
            self._stable_gen, self._seen_gen, self._joined_at = generation, generation, None
            return False
        now = self._clock()
        if generation != self._seen_gen:
            self._seen_gen = generation
            joined = generation is not None and generation >= 0 \
                and generation != self._stable_gen
            self._joined_at = now if joined else None
        return self._joined_at is not None and now - self._joined_at > self.limit_s

    def restart(self) -> None:
        """Give the join in progress another ``limit_s`` from now."""
        if self._joined_at is not None:
            self._joined_at = self._clock()

    def stuck_for(self) -> float:
        """Seconds since the JoinGroup response of the join in progress (0 if none)."""
        return 0.0 if self._joined_at is None else self._clock() - self._joined_at


def member_state(consumer: Any) -> tuple[str, int | None] | None:
    """A kafka-python group consumer's member state and generation (None: not one)."""
    coordinator = getattr(consumer, "_coordinator", None)
    metadata = getattr(coordinator, "group_metadata", None)
    if metadata is None:
        return None
    m = metadata()
    return str(m.state), m.generation_id


def join_limit_s(config: dict[str, Any]) -> float:
    """How long a member may stay unstable after its JoinGroup succeeded."""
    return (config["session_timeout_ms"] + config["request_timeout_ms"]) / 1000


class GuardedConsumer:
    """A kafka-python consumer (built by ``factory``, subscribed) that is closed and built
    again when :class:`JoinWatch` finds it stuck joining; everything else is the
    consumer's own (attribute access goes to it)."""

    def __init__(self, factory: Callable[[], Any],
                 on_restart: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._factory = factory
        self._on_restart = on_restart
        self._clock = clock
        self.restarts = 0
        self.consumer = factory()
        self.watch = JoinWatch(join_limit_s(self.consumer.config), clock)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.consumer, name)

    def poll(self, *args: Any, **kwargs: Any) -> Any:
        records = self.consumer.poll(*args, **kwargs)
        self.check()
        return records

    def check(self) -> bool:
        """Replace the consumer if it is stuck joining; True when it did."""
        seen = member_state(self.consumer)
        if seen is None or not self.watch.observe(*seen):
            return False
        state, generation = seen
        self.restarts += 1
        log.warning(
            "the consumer group join has not finished %.0f s after the JoinGroup response "
            "(limit session_timeout_ms + request_timeout_ms = %.0f s): closing the consumer "
            "and joining the group with a new one", self.watch.stuck_for(),
            self.watch.limit_s,
            extra={"group": self.consumer.config.get("group_id"), "member_state": state,
                   "generation": generation, "consumer_restarts": self.restarts})
        if self._on_restart is not None:
            self._on_restart(JOIN_STALLED)
        old = self.consumer
        try:
            self.consumer = self._factory()  # joins on its first poll
        except Exception as exc:  # noqa: BLE001 - brokers away: keep it, try again later
            log.warning("cannot build a new consumer: %s", exc)
            self.watch.restart()
            return False
        try:
            old.close(autocommit=False, timeout_ms=CLOSE_TIMEOUT_MS)
        except Exception as exc:  # noqa: BLE001 - the broker expelled it: LeaveGroup fails
            log.info("closing the stuck consumer: %s", exc)
        self.watch = JoinWatch(join_limit_s(self.consumer.config), self._clock)
        return True
