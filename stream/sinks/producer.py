"""What the sinks that write to Kafka share (dead letters, drift events, the state topic).

A sink makes its producer lazily, drops it after a failed write (so the next
attempt connects anew) and flushes and closes it at shutdown; a batch is sent,
flushed and each send awaited, counted by result.  :func:`create_topic`
creates a sink's topic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

log = logging.getLogger("streamdrift.run")

T = TypeVar("T")


class ProducerSink:
    """Owns the producer of a sink writing to ``topic``; ``what`` names it in log lines and
    ``unit`` is the log field that counts what it writes."""

    what = "producer"
    unit = "messages"

    def __init__(self, topic: str, make_producer: Callable[[], Any],
                 count: Callable[[str, int], None]) -> None:
        self.topic = topic
        self.make_producer = make_producer
        self.count = count
        self.producer: Any = None

    def connect(self) -> Any:
        """The producer, made on first use (or after a failure dropped it)."""
        if self.producer is None:
            self.producer = self.make_producer()
        return self.producer

    def send_all(self, items: Sequence[T], send: Callable[[Any, T], Any], timeout: float,
                 on_ok: Callable[[T], None] | None = None) -> list[T]:
        """Send every item (``send(producer, item)`` returns its future), flush, await each;
        count ``ok``/``failed`` per item; returns the items that failed (all of them when
        the producer cannot be made or flushed: it is then dropped)."""
        try:
            producer = self.connect()
            futures = [send(producer, item) for item in items]
            producer.flush(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - counted, retried
            self.count("failed", len(items))
            log.warning("%s write failed: %s: %s", self.what, type(exc).__name__, exc,
                        extra={self.unit: len(items), "topic": self.topic})
            self.drop_producer()
            return list(items)
        failed = []
        error: Exception | None = None
        for item, f in zip(items, futures, strict=True):
            try:
                f.get(timeout=timeout)
                self.count("ok", 1)
                if on_ok is not None:
                    on_ok(item)
            except Exception as exc:  # noqa: BLE001
                self.count("failed", 1)
                failed.append(item)
                error = exc
        if failed:
            log.warning("%s write failed: %s", self.what, error,
                        extra={self.unit: len(failed), "topic": self.topic})
            self.drop_producer()
        return failed

    def drop_producer(self) -> None:
        """Close the producer without waiting (after a failure)."""
        if self.producer is not None:
            try:
                self.producer.close(timeout=1)
            except Exception:  # noqa: BLE001
                pass
            self.producer = None

    def close(self) -> None:
        """Flush and close the producer (at shutdown)."""
        if self.producer is not None:
            try:
                self.producer.flush(timeout=10)
                self.producer.close(timeout=10)
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the %s producer: %s", self.what, exc)
            self.producer = None


def create_topic(admin: Any, topic: str, ms: int,
                 configs: Mapping[str, str] | None = None, partitions: int = 1) -> str | None:
    """Create ``topic`` (``partitions`` partitions, the broker's replication) with ``admin``
    and wait for it; None when done (or it already exists), else the broker's error as
    ``code message``."""
    from kafka.errors import TopicAlreadyExistsError

    spec: dict[str, Any] = {"num_partitions": partitions, "replication_factor": -1}
    if configs:
        spec["configs"] = dict(configs)
    result = admin.create_topics({topic: spec}, timeout_ms=ms, raise_errors=False)
    for t in result.get("topics", []):
        code = t.get("error_code", 0)
        if code not in (0, TopicAlreadyExistsError.errno):
            return f"{code} {t.get('error_message')}"
    admin.wait_for_topics([topic], timeout_ms=ms)
    return None


def send_and_wait(producer: Any, topic: str,
                  items: Iterable[tuple[int, bytes, int | None]], timeout: float) -> None:
    """Produce ``items`` (partition, value, timestamp in ms or None: the producer's clock)
    with a kafka-python ``KafkaProducer`` or a ``confluent_kafka.Producer`` and wait for
    every acknowledgement; raises on the first failed one, or if any is not acknowledged
    within ``timeout`` s."""
    if hasattr(producer, "produce"):  # librdkafka's
        _send_librdkafka(producer, topic, items, timeout)
        return
    futures = [producer.send(topic, value=value, partition=target,
                             **({} if ts is None else {"timestamp_ms": ts}))
               for target, value, ts in items]
    producer.flush(timeout=timeout)
    for f in futures:
        f.get(timeout=timeout)


def _send_librdkafka(producer: Any, topic: str,
                     items: Iterable[tuple[int, bytes, int | None]], timeout: float) -> None:
    errors: list[Any] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    for target, value, ts in items:
        while True:
            try:
                producer.produce(topic, value=value, partition=target,
                                 timestamp=ts or 0, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.05)
    left = producer.flush(timeout)
    if errors or left:
        raise RuntimeError(f"{len(errors)} deliveries failed ({errors[:1]}), {left} not "
                           "acknowledged in time")
