"""The monitors' side of the pooled CUSUM (issue 14; pool.py): the pool records a
:class:`~stream.runtime.monitors.FramedRunner` publishes to the pool topic, kept until
acknowledged."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from stream.config import KafkaConfig
from stream.sinks.producer import create_topic, send_and_wait
from stream.sources.kafka import kafka_client_kwargs

log = logging.getLogger("streamdrift.pool")

PUBLISH_TIMEOUT_S = 10.0
#: the largest request (kafka-python) or message (librdkafka) of the pool producer
POOL_RECORD_MAX_BYTES = 8 * 1024 * 1024


class PoolOutbox:
    """The monitors' pool records waiting to be published (kept until acknowledged).

    ``max_bytes`` (``source.repartition.pool_outbox_max_bytes``) bounds them while
    publishing fails: once :meth:`full`, the monitors take no new batch until a flush
    succeeds (:meth:`FramedRunner._iteration <stream.runtime.monitors.FramedRunner>`), so
    the outbox holds at most ``max_bytes`` plus the record of one poll."""

    def __init__(self, kafka: KafkaConfig, topic: str, health: Any,
                 max_bytes: int = 64 * 1024 * 1024) -> None:
        self.kafka, self.topic, self.health = kafka, topic, health
        self.max_bytes = max_bytes
        self.records: list[bytes] = []
        #: the bytes of ``records``
        self.bytes = 0
        self.producer: Any = None
        self.published = 0
        #: failed flushes since the last that succeeded (the warning is logged once)
        self.failures = 0
        self._failed_since = 0.0

    def full(self) -> bool:
        """Whether the records waiting reach the bound (no new batch is taken)."""
        return self.bytes >= self.max_bytes

    def ensure_topic(self, timeout_s: float = 30.0) -> None:
        from kafka import KafkaAdminClient

        ms = max(1000, int(timeout_s * 1000))
        admin = KafkaAdminClient(**kafka_client_kwargs(self.kafka), request_timeout_ms=ms,
                                 bootstrap_timeout_ms=ms)
        try:
            if self.topic not in set(admin.list_topics()):
                error = create_topic(admin, self.topic, ms, partitions=1)
                if error is not None:
                    log.warning("cannot create the pool topic: %s", error,
                                extra={"topic": self.topic})
        finally:
            admin.close()

    def add(self, record: bytes) -> None:
        self.records.append(record)
        self.bytes += len(record)

    def flush(self, connect: bool = True) -> bool:
        """Publish every waiting record and wait for the acknowledgements; False (logged)
        if any failed: they stay and are published again (the pool drops copies).
        ``connect=False`` (a rebalance callback): no producer is opened, False if none."""
        if not self.records:
            return True
        if self.producer is None and not connect:
            return False
        try:
            if self.producer is None:
                self.producer = self._connect()
            send_and_wait(self.producer, self.topic, [(0, r, None) for r in self.records],
                          PUBLISH_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - retried before the next commit
            if not self.failures:  # once per episode; the retries at debug level
                self._failed_since = time.monotonic()
            (log.debug if self.failures else log.warning)(
                "publishing the pooled values failed; offsets are not committed until it "
                "succeeds: %s: %s", type(exc).__name__, exc,
                extra={"records": len(self.records), "bytes": self.bytes,
                       "max_bytes": self.max_bytes, "topic": self.topic})
            self.failures += 1
            self.close()
            return False
        if self.failures:
            log.info("publishing the pooled values succeeded after retries", extra={
                "attempts": self.failures + 1, "records": len(self.records),
                "bytes": self.bytes, "topic": self.topic,
                "seconds": round(time.monotonic() - self._failed_since, 1)})
        self.failures = 0
        self.published += len(self.records)
        self.records = []
        self.bytes = 0
        return True

    def _connect(self) -> Any:
        """The producer: librdkafka's with ``source.kafka.client: confluent-kafka`` (its
        threads are native: kafka-python's sender thread and producer took 11 % of a
        pooled process's Python samples, on its GIL), else kafka-python's."""
        from kafka import KafkaProducer

        ms = int(PUBLISH_TIMEOUT_S * 1000)
        if self.kafka.client == "confluent-kafka":
            from stream.sources.confluent import librdkafka_producer

            return librdkafka_producer(
                self.kafka, acks="all", linger_ms=2,
                compression_type="lz4", message_timeout_ms=3 * ms,
                message_max_bytes=POOL_RECORD_MAX_BYTES)
        kw = kafka_client_kwargs(self.kafka)
        kw.update(acks="all", linger_ms=2, max_block_ms=ms, request_timeout_ms=ms,
                  delivery_timeout_ms=3 * ms, compression_type="lz4",
                  max_request_size=POOL_RECORD_MAX_BYTES)
        return KafkaProducer(**kw)

    def close(self) -> None:
        if self.producer is not None:
            with contextlib.suppress(Exception):
                if hasattr(self.producer, "close"):  # (librdkafka's: dropped)
                    self.producer.close(timeout=2)
            self.producer = None
