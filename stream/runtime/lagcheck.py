"""The consumer-lag check of ``streamdrift run`` (every ``LAG_INTERVAL_S`` between polls).

It reads the end offset of every assigned partition from the brokers and sets the lag
(and ``source_up``) in :class:`~stream.engine.figures.RunnerHealth`; a failed read sets
``source_up`` to 0.

With kafka-python the reads run in the loop (the consumer is not thread-safe; they take
a millisecond or so).  With confluent-kafka they run on a helper thread: librdkafka sends
its watermark query on the broker connection its fetcher uses, behind the consumer's long
poll (``fetch.wait.max.ms``, 500 ms by default) whenever a fetch asks only for partitions
with nothing new, which is the usual case on a topic whose partitions are unevenly filled.
One read per partition, 8 partitions, took about 4 s and the loop waited through all of
it: the plain runner read 491 events/s from a backlog it reads at 41,000/s without the
check.  On the helper thread a slow read only delays the lag figure; a check that is due
while the previous one is still running is skipped.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from stream.engine.figures import RunnerHealth
from stream.sources.kafka import partition_lag

log = logging.getLogger("streamdrift.run")


class LagCheck:
    """``check(consumer)``: read the lag of ``consumer``'s assignment into ``health``,
    in the caller's thread or (``background``) on a helper thread of its own."""

    def __init__(self, health: RunnerHealth, first_topic: str, timeout_ms: int,
                 background: bool) -> None:
        self.health = health
        self.first_topic = first_topic
        self.timeout_ms = timeout_ms
        self.background = background
        #: checks skipped because the previous one was still running
        self.skipped = 0
        self._pool: ThreadPoolExecutor | None = None
        self._flight: Future[None] | None = None
        self._closed = False

    def __call__(self, consumer: Any) -> None:
        parts = list(consumer.assignment())  # in the loop: callbacks change the assignment
        if not self.background:
            self._read(consumer, parts)
            return
        if self._flight is not None and not self._flight.done():
            self.skipped += 1
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="streamdrift-lag")
        self._flight = self._pool.submit(self._read, consumer, parts)

    def _read(self, consumer: Any, parts: list[Any]) -> None:
        try:
            if not parts:
                from kafka import TopicPartition

                # nothing assigned (yet): still check that the cluster answers
                consumer.end_offsets([TopicPartition(self.first_topic, 0)],
                                     timeout_ms=self.timeout_ms)
                self.health.set_consumer_lag({})
                return
            self.health.set_consumer_lag(partition_lag(consumer, parts, self.timeout_ms))
        except Exception as exc:  # noqa: BLE001 - an outage must not stop the loop
            if self._closed:
                return  # the consumer was closed under a read in flight
            log.warning("cannot read consumer lag: %s", exc)
            self.health.set_source_up(False)

    def wait(self, timeout_s: float | None = None) -> None:
        """Wait for the check in flight, if any (tests; shutdown)."""
        if self._flight is not None:
            self._flight.exception(timeout=timeout_s)

    def close(self) -> None:
        """Stop the helper thread without waiting for a read in flight (it only sets
        figures; a read on the consumer closed meanwhile fails and is logged)."""
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
