"""The first stage of ``source.repartition`` reading its records with librdkafka.

The first stage (repartition.py) must hold every source partition in one process
(onewriter.py), and that takes a custom partition assignor: kafka-python has one,
confluent-kafka's Python client has none.  kafka-python's consumer, though, fetches and
parses every record in Python, about three quarters of the first stage's CPU (and of a
two-stage process's, issue 14).  With ``source.kafka.client: confluent-kafka``,
:class:`LibrdkafkaRepartitioner` splits the work:

- kafka-python's consumer keeps the **group**: membership (it is polled with timeout 0
  every :data:`MEMBERSHIP_POLL_S` while reading, every iteration while idle, so
  heartbeats, ``max_poll_interval_ms`` and the rebalance callbacks go on), the one-writer
  assignment, the committed offsets with the merge position in their
  metadata, the commits, end offsets and lag.  It reads nothing: **every partition it is
  assigned is paused at once** in the assignment callback (and any found unpaused after a
  poll), all of them, never some while others are read (kafka-python 3.0.12 can stall a
  partition paused while others are read, repartition.py).
- a librdkafka consumer (:class:`~stream.sources.confluent.ConfluentConsumer`, never
  subscribed: no group of its own) **fetches**: it is assigned by hand exactly the
  partitions kafka-python holds, each from its committed offset (or the
  ``auto_offset_reset`` end), when the loop takes up the assignment.

kafka-python calls the rebalance callbacks on its IO thread.  A revocation first unassigns
the partitions from the librdkafka consumer (so nothing more of them is read), then is
handed to the loop, like an assignment; the loop takes up both in order before it uses
what it polled, and drops what it polled of a partition revoked or assigned meanwhile: a
partition assigned again to this process starts over at its committed offset (librdkafka,
like kafka-python, would otherwise go on from where it was, past the records buffered and
not forwarded).  Flow control (a partition far ahead of the others) seeks the librdkafka
consumer back to the first record not taken.  The merge's catch-up check (catchup.py)
reads the librdkafka consumer's positions and cached watermarks, kafka-python's end
offsets.  Everything else (merge, frames, commits after acknowledgement, the seq
metadata) is :class:`~stream.runtime.repartition.Repartitioner`'s, so the guarantees are
the same: at-least-once, dense merge positions, and a crash or a rebalance writes again
at most what was forwarded since the last commit.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from typing import Any

from stream.config import Config
from stream.engine.pipeline import Pipeline
from stream.runtime.repartition import Repartitioner
from stream.runtime.writers import tick
from stream.sources.kafka import partition_names

log = logging.getLogger("streamdrift.repartition")

#: seconds between the group consumer's polls while the stage reads: each costs ~0.2 ms of
#: kafka-python's coordinator in Python, and every iteration (hundreds a second while a
#: backlog is read) it was ~4 % of a two-stage process's CPU (py-spy, 2026-12-06); its
#: heartbeat thread and the rebalance timeouts are in seconds
MEMBERSHIP_POLL_S = 0.05


class _Positions:
    """What :class:`~stream.runtime.catchup.CatchUp` asks a consumer, answered from the
    librdkafka consumer (positions, cached watermarks) and kafka-python's (end offsets)."""

    def __init__(self, stage: LibrdkafkaRepartitioner) -> None:
        self.stage = stage

    def position(self, tp: Any, timeout_ms: int = 0) -> int | None:
        rd = self.stage.rd.position(tp, timeout_ms)
        mine = self.stage.fetched.get(tp)
        known = [p for p in (rd, mine) if p is not None]
        return max(known) if known else None

    def highwater(self, tp: Any) -> int | None:
        return self.stage.rd.highwater(tp)

    def end_offsets(self, tps: list[Any], timeout_ms: int) -> dict[Any, int]:
        return dict(self.stage.consumer.end_offsets(tps, timeout_ms=timeout_ms))


class LibrdkafkaRepartitioner(Repartitioner):
    """:class:`Repartitioner` whose records are fetched by librdkafka (module docstring)."""

    def __init__(self, config: Config, pipeline: Pipeline,
                 stop: threading.Event | None = None) -> None:
        super().__init__(config, pipeline, stop)
        self.rd: Any = None
        #: rebalance events from kafka-python's IO thread, taken up by the loop in order
        self.events: collections.deque[tuple[str, set[Any]]] = collections.deque()
        #: records read through librdkafka (a test checks that this path ran)
        self.rd_records = 0
        #: records kafka-python's poll returned (ignored): none while every partition
        #: is paused, as it should be
        self.kafka_python_records = 0
        #: when the group consumer is polled next while reading (MEMBERSHIP_POLL_S)
        self.membership_at = 0.0

    # -- clients ---------------------------------------------------------------------
    def _consumer(self) -> Any:
        from stream.sources.confluent import ConfluentConsumer

        if self.rd is None:
            def ignore(_tps: set[Any]) -> None:  # never subscribed: no callbacks
                return None

            self.rd = ConfluentConsumer(self.kafka, self.config.source.max_message_bytes,
                                        ignore, ignore, ignore)
            log.info("the first stage fetches with librdkafka; kafka-python keeps the group",
                     extra={"group_id": self.kafka.group_id})
        return super()._consumer()

    # -- rebalance callbacks (kafka-python's IO thread) ---------------------------------
    def _on_assigned(self, assigned: set[Any]) -> None:
        self._pause_all()
        self.events.append(("assigned", set(assigned)))

    def _on_revoked(self, revoked: set[Any]) -> None:
        if self.rd is not None:  # before anything else: nothing more of them is read
            with contextlib.suppress(Exception):
                self.rd.unassign(revoked)
        self.events.append(("revoked", set(revoked)))

    def _pause_all(self) -> None:
        """Pause every partition kafka-python holds, all at once (it reads none)."""
        c = self.consumer
        if c is None:
            return
        try:
            unpaused = set(c.assignment()) - set(c.paused())
            if unpaused:
                c.pause(*c.assignment())
        except Exception as exc:  # noqa: BLE001 - retried after the next poll
            log.warning("cannot pause the group consumer's partitions: %s", exc)
            return

    def _take_events(self, polled: dict[Any, Any]) -> None:
        """Take up the rebalance events in order; drop what was polled of their
        partitions (polled before the event was taken up: perhaps of the old assignment)."""
        while self.events:
            kind, tps = self.events.popleft()
            for tp in tps:
                polled.pop(tp, None)
            if kind == "revoked":
                self.rd.unassign(tps)  # again: a seek may have assigned one meanwhile
                super()._on_revoked(tps)
            else:
                super()._on_assigned(tps)

    def _start_at(self, tp: Any, committed: int | None) -> int:
        """Assign ``tp`` to the librdkafka consumer from ``committed``, or the
        ``auto_offset_reset`` end resolved to a number (Repartitioner._seek_assigned)."""
        if committed is not None:
            start = committed
        elif self.kafka.auto_offset_reset == "earliest":
            start = int(self.consumer.beginning_offsets([tp], timeout_ms=2000)[tp])
        else:
            start = int(self.consumer.end_offsets([tp], timeout_ms=2000)[tp])
        self.rd.assign_at({tp: start})
        return start

    # -- the loop ---------------------------------------------------------------------
    def _poll_membership(self, reading: bool) -> bool:
        """Poll the group consumer (membership only: every partition is paused, nothing is
        returned), at most every :data:`MEMBERSHIP_POLL_S` while ``reading``; False when
        the poll failed (the iteration ends)."""
        if reading and time.monotonic() < self.membership_at:
            return True
        k = self.kafka
        self.membership_at = time.monotonic() + MEMBERSHIP_POLL_S
        try:
            ignored = self.consumer.poll(timeout_ms=0 if reading else k.poll_timeout_ms,
                                         max_records=1)
        except Exception as exc:  # noqa: BLE001 - broker outage, rebalance errors
            log.warning("poll failed: %s: %s", type(exc).__name__, exc)
            self.health.set_source_up(False)
            self.stop_event.wait(min(1.0, k.poll_timeout_ms / 1000))
            return False
        self.kafka_python_records += sum(len(r) for r in ignored.values())
        self._pause_all()
        return True

    def _iteration(self) -> None:
        k = self.kafka
        if not self._poll_membership(bool(self.buffers)):
            return
        polled: dict[Any, Any] = {}
        self._take_events(polled)
        if self.to_seek:
            self._seek_assigned(polled)
        if not self.buffers:
            if self.writer is not None:  # a writer with no partitions heartbeats too
                tick(self, time.monotonic())
            return
        try:
            got = self.rd.poll(timeout_ms=k.poll_timeout_ms, max_records=k.max_poll_records)
        except Exception as exc:  # noqa: BLE001 - librdkafka errors: retried
            log.warning("fetch failed: %s: %s", type(exc).__name__, exc)
            self.stop_event.wait(min(1.0, k.poll_timeout_ms / 1000))
            return
        polled = {tp: recs for tp, recs in got.items() if len(recs)}
        self._take_events(polled)
        if self.to_seek:
            self._seek_assigned(polled)
        if polled:
            self.health.set_source_up(True)
            self.catchup.polled()
            self.tail.polled()
        for tp, recs in polled.items():
            self._buffer(tp, recs)
        now = time.monotonic()
        if now >= self.retry_at:
            self._forward(now)
        if self.writer is not None:
            tick(self, time.monotonic())

    def _buffer(self, tp: Any, batch: Any) -> None:
        """Add a partition's polled records to its buffer, within the flow-control bound."""
        if tp not in self.buffers:  # not (or no longer) ours
            return
        recs = batch.fetched()
        start = self.fetched.get(tp)
        if start is not None and recs[0].offset < start:
            recs = [r for r in recs if r.offset >= start]  # read twice: kept once
            if not recs:
                return
        self.rd_records += len(recs)
        room = self.buffer_max - len(self.buffers[tp])
        if len(recs) > room:
            # the partition is far ahead of the others: read again later what does not fit
            # (librdkafka drops what it pre-fetched past the seek)
            try:
                self.rd.seek(tp, recs[max(0, room)].offset)
            except Exception as exc:  # noqa: BLE001 - unassigned meanwhile (a revocation)
                log.warning("cannot seek a source partition back; it starts over at its "
                            "committed offset: %s: %s", type(exc).__name__, exc,
                            extra={"partitions": partition_names([tp])})
                self.rd.unassign([tp])
                self._forget(tp)
                self.to_seek.add(tp)
                return
            self.fetched[tp] = recs[max(0, room)].offset
            recs = recs[:max(0, room)]
            if not recs:
                return
        self._append(tp, recs)

    def _positions(self) -> Any:
        return _Positions(self)

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.rd is not None:
                try:
                    self.rd.close()
                except Exception as exc:  # noqa: BLE001
                    log.warning("closing the librdkafka source consumer: %s", exc)
                self.rd = None
