"""``streamdrift run``: the Kafka consumer loop (at-least-once).

Each poll returns a batch of records; the batch is processed as a whole, poison
messages are forwarded to the dead-letter topic (when configured) and only then
are the offsets committed, synchronously.  A crash therefore replays at most the
uncommitted batch.  SIGINT/SIGTERM stop polling, commit and close.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from stream.config import Config, KafkaConfig, require_kafka
from stream.pipeline import Pipeline

log = logging.getLogger("streamdrift.run")

LAG_INTERVAL_S = 1.0


def kafka_client_kwargs(k: KafkaConfig) -> dict[str, Any]:
    """kafka-python connection settings (shared by consumer, producer and admin)."""
    kw: dict[str, Any] = {
        "bootstrap_servers": list(k.bootstrap_servers),
        "client_id": k.client_id,
        "security_protocol": k.security_protocol,
    }
    if k.sasl_mechanism:
        kw["sasl_mechanism"] = k.sasl_mechanism
        kw["sasl_plain_username"] = k.sasl_username
        kw["sasl_plain_password"] = k.sasl_password.reveal() if k.sasl_password else None
    if k.ssl_cafile:
        kw["ssl_cafile"] = str(k.ssl_cafile)
    if k.ssl_certfile:
        kw["ssl_certfile"] = str(k.ssl_certfile)
    if k.ssl_keyfile:
        kw["ssl_keyfile"] = str(k.ssl_keyfile)
    if k.ssl_password:
        kw["ssl_password"] = k.ssl_password.reveal()
    return kw


class KafkaRunner:
    """Consumes the configured topics into a :class:`Pipeline` until stopped."""

    def __init__(self, config: Config, pipeline: Pipeline,
                 stop: threading.Event | None = None) -> None:
        self.config = config
        self.kafka = require_kafka(config)
        self.pipeline = pipeline
        self.stop_event = stop or threading.Event()
        self.consumer: Any = None
        self.producer: Any = None
        self.batches = 0

    def _consumer(self) -> Any:
        from kafka import KafkaConsumer

        k = self.kafka
        kw = kafka_client_kwargs(k)
        kw.update(group_id=k.group_id, enable_auto_commit=False,
                  auto_offset_reset=k.auto_offset_reset, max_poll_records=k.max_poll_records,
                  max_partition_fetch_bytes=max(1_048_576, self.config.source.max_message_bytes))
        kw.update(dict(k.options))
        consumer = KafkaConsumer(**kw)
        self._wait_for_topics(consumer)
        consumer.subscribe(list(k.topics))
        return consumer

    def _wait_for_topics(self, consumer: Any, timeout: float = 30.0) -> None:
        """Fetch the topics' metadata before joining the group.

        A consumer that joins before it knows the topics' partitions is assigned
        nothing ("No partition metadata for topic"), and kafka-python 3.0 does not
        always rejoin when the metadata arrives: it would sit idle.
        """
        deadline = time.monotonic() + timeout
        missing = list(self.kafka.topics)
        while missing and time.monotonic() < deadline and not self.stop_event.is_set():
            missing = [t for t in missing if not consumer.partitions_for_topic(t)]
            if missing:
                self.stop_event.wait(0.2)
        if missing:
            log.warning("topics have no partitions yet; subscribing anyway",
                        extra={"topics": missing})

    def _producer(self) -> Any:
        from kafka import KafkaProducer

        kw = kafka_client_kwargs(self.kafka)
        kw.update(acks="all", retries=5, linger_ms=5)
        return KafkaProducer(**kw)

    def stop(self) -> None:
        self.stop_event.set()

    def _dead_letter(self, records: list[Any], batch: Any) -> None:
        dl = self.config.source.dead_letter
        if dl is None or not len(batch.invalid_positions):
            return
        if self.producer is None:
            self.producer = self._producer()
        futures = []
        for pos, reason in zip(batch.invalid_positions.tolist(), batch.invalid_reasons,
                               strict=True):
            r = records[pos]
            headers = [("source_topic", r.topic.encode()),
                       ("source_partition", str(r.partition).encode()),
                       ("source_offset", str(r.offset).encode()),
                       ("error", reason.encode())]
            futures.append(self.producer.send(dl.topic, value=r.value, key=r.key,
                                              headers=headers))
        self.producer.flush(timeout=30)
        for f in futures:
            try:
                f.get(timeout=30)
                self.pipeline.dead_letter["ok"] += 1
            except Exception as exc:  # noqa: BLE001 - counted, and the batch is retried
                self.pipeline.dead_letter["failed"] += 1
                raise RuntimeError(f"dead-letter write failed: {exc}") from exc

    def _update_lag(self) -> None:
        c = self.consumer
        try:
            parts = list(c.assignment())
            if not parts:
                return
            ends = c.end_offsets(parts)
            lag = {}
            for tp in parts:
                pos = c.position(tp, timeout_ms=2000) if _has_timeout(c) else c.position(tp)
                if pos is not None and tp in ends:
                    lag[(tp.topic, tp.partition)] = max(0, int(ends[tp]) - int(pos))
            with self.pipeline.lock:
                self.pipeline.consumer_lag = lag
                self.pipeline.source_up = 1
        except Exception as exc:  # noqa: BLE001 - an outage must not stop the loop
            log.warning("cannot read consumer lag: %s", exc)
            with self.pipeline.lock:
                self.pipeline.source_up = 0

    def run(self, max_events: int | None = None, idle_timeout: float | None = None) -> int:
        """Consume until stopped (or ``max_events`` processed, or idle for ``idle_timeout`` s).

        Returns the number of messages consumed.
        """
        k = self.kafka
        self.consumer = self._consumer()
        log.info("consuming", extra={"topics": list(k.topics), "group_id": k.group_id,
                                     "bootstrap_servers": list(k.bootstrap_servers)})
        consumed = 0
        last_data = time.monotonic()
        last_lag = 0.0
        try:
            while not self.stop_event.is_set():
                polled = self.consumer.poll(timeout_ms=k.poll_timeout_ms,
                                            max_records=k.max_poll_records)
                records = [r for recs in polled.values() for r in recs]
                if records:
                    found, batch = self.pipeline.process([r.value or b"" for r in records],
                                                         base_index=consumed)
                    for d in found:
                        r = records[d.index - consumed]
                        log.info("drift alarm", extra={**d.to_dict(), "topic": r.topic,
                                                       "partition": r.partition,
                                                       "offset": r.offset})
                    self._dead_letter(records, batch)
                    self.consumer.commit()
                    consumed += len(records)
                    self.batches += 1
                    last_data = time.monotonic()
                else:
                    self.pipeline.heartbeat()
                now = time.monotonic()
                if now - last_lag >= LAG_INTERVAL_S:
                    self._update_lag()
                    last_lag = now
                if max_events is not None and consumed >= max_events:
                    break
                if idle_timeout is not None and now - last_data > idle_timeout:
                    break
        finally:
            self.close()
        log.info("stopped", extra={"consumed": consumed, "batches": self.batches})
        return consumed

    def close(self) -> None:
        if self.producer is not None:
            try:
                self.producer.flush(timeout=10)
                self.producer.close(timeout=10)
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the dead-letter producer: %s", exc)
            self.producer = None
        if self.consumer is not None:
            try:
                self.consumer.commit()
            except Exception as exc:  # noqa: BLE001 - nothing polled, or broker gone
                log.debug("final commit: %s", exc)
            self.consumer.close()
            self.consumer = None


def _has_timeout(consumer: Any) -> bool:
    import inspect

    try:
        return "timeout_ms" in inspect.signature(consumer.position).parameters
    except (TypeError, ValueError):
        return False


def run(config: Config, pipeline: Pipeline, stop: threading.Event | None = None,
        **kwargs: Any) -> int:
    return KafkaRunner(config, pipeline, stop).run(**kwargs)
