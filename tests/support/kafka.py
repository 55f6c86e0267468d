"""A real Kafka broker for tests, and producing to it.

:func:`kafka_bootstrap_servers` yields the "host:port" of a broker, from the first of:

1. an external broker named by ``STREAMDRIFT_TEST_KAFKA`` (e.g. ``127.0.0.1:9092``);
2. the Docker-free local broker of :mod:`stream.broker` (needs ``java`` 17+, and the
   cached classpath in ``.cache/kafka/`` or ``mvn`` to fetch it);
3. testcontainers' ``KafkaContainer``, only where a Docker engine is reachable.

When none works the test FAILS under CI and is skipped elsewhere, with the reasons
(:func:`tests.support.policy.unavailable`).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import stream.broker
from tests.support.events import clipped_m1_events
from tests.support.policy import unavailable

EXTERNAL_ENV = "STREAMDRIFT_TEST_KAFKA"


def local_broker_module() -> Any:
    """:mod:`stream.broker` when a LocalBroker can run here; otherwise :func:`unavailable`."""
    why_not = stream.broker.local_broker_unavailable_reason()
    if why_not is not None:
        unavailable(f"the local Kafka broker cannot run here: {why_not}")
    return stream.broker


# -- the three sources of a broker ----------------------------------------------------------


def _check_external(bootstrap: str) -> None:
    try:
        admin = stream.broker.admin_client(bootstrap, timeout=15.0)
        try:
            info = admin.describe_cluster()
        finally:
            admin.close()
    except Exception as exc:
        # The variable says which broker to use: never silently skip or fall back.
        pytest.fail(
            f"{EXTERNAL_ENV}={bootstrap} but that broker does not answer: {type(exc).__name__}: {exc}",
            pytrace=False,
        )
    if not info.get("brokers"):
        pytest.fail(
            f"{EXTERNAL_ENV}={bootstrap}: metadata lists no brokers ({info})", pytrace=False
        )


def _start_local(workdir: Path, partitions: int, reasons: list[str]) -> Any:
    why_not = stream.broker.local_broker_unavailable_reason()
    if why_not is not None:
        reasons.append(f"local broker: {why_not}")
        return None
    broker = stream.broker.LocalBroker(workdir=workdir, partitions=partitions)
    try:
        broker.start()
    except stream.broker.BrokerError as exc:
        reasons.append(f"local broker failed to start: {exc}")
        return None
    return broker


def _start_container(reasons: list[str]) -> Any:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:
        try:
            from testcontainers.kafka import KafkaContainer
        except ImportError as exc:
            reasons.append(f"testcontainers: not installed ({exc})")
            return None
    try:
        container = KafkaContainer()  # raises when no Docker engine is reachable
    except Exception as exc:
        reasons.append(f"testcontainers: no Docker engine reachable ({type(exc).__name__}: {exc})")
        return None
    try:
        container.start()
    except Exception as exc:
        reasons.append(
            f"testcontainers: KafkaContainer failed to start ({type(exc).__name__}: {exc})"
        )
        with contextlib.suppress(Exception):
            container.stop()
        return None
    return container


@contextlib.contextmanager
def kafka_bootstrap_servers(workdir: Path, *, partitions: int = 1) -> Iterator[str]:
    """Bootstrap servers ("host:port") of a real Kafka broker while the block runs; a local
    broker keeps its data and logs in ``workdir`` and creates topics with ``partitions``."""
    external = os.environ.get(EXTERNAL_ENV, "").strip()
    if external:
        _check_external(external)
        yield external
        return

    reasons: list[str] = []
    local = _start_local(workdir, partitions, reasons)
    if local is not None:
        try:
            yield local.bootstrap_servers
        finally:
            local.stop()
        return

    container = _start_container(reasons)
    if container is not None:
        try:
            yield container.get_bootstrap_server()
        finally:
            container.stop()
        return

    unavailable(
        "no Kafka broker for the integration tests:\n  - "
        + "\n  - ".join(reasons)
        + f"\nSet {EXTERNAL_ENV}=host:port to use a running broker."
    )


def topic_name(request: pytest.FixtureRequest) -> str:
    """A unique topic name made of the test's name."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-")[:60] or "test"
    return f"sd-{stem}-{uuid.uuid4().hex[:12]}"


# -- producing ------------------------------------------------------------------------------


def produce(bootstrap: str, topic: str, messages: Iterable[bytes], *,
            partition: int | None = None, keys: Iterable[bytes] | None = None,
            headers: Iterable[list[tuple[str, bytes]]] | None = None,
            **config: Any) -> None:
    """Send ``messages`` in order and wait until every one is acknowledged; ``keys``: the
    message keys (the default partitioner then picks the partition by key); ``headers``:
    each message's headers; ``config`` goes to kafka-python's KafkaProducer (security
    settings, linger_ms, acks...)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, **config)
    try:
        messages = list(messages)
        key_list = [None] * len(messages) if keys is None else list(keys)
        header_list = [None] * len(messages) if headers is None else list(headers)
        futures = [producer.send(topic, m, key=k, partition=partition, headers=h)
                   for m, k, h in zip(messages, key_list, header_list, strict=True)]
        producer.flush(timeout=60)
        for f in futures:
            f.get(timeout=60)
    finally:
        producer.close(timeout=10)


class EventProducer(threading.Thread):
    """Produces :func:`~tests.support.events.clipped_m1_events` at a steady ``rate`` per
    second until stopped or ``total`` are sent.

    Events are clean until ``drift_after`` events have been sent and ``drift_gate`` is set
    (never drifting when ``drift_after`` is None), then x1 is shifted for good. ``partition``:
    every message to that partition (None: the default partitioner's). ``bad_at``
    maps an event count to the poison message sent right after it. ``messages`` counts
    everything sent (events and poison messages).
    """

    def __init__(self, bootstrap: str, topic: str, *, rate: float, seed: int,
                 drift_after: int | None = None, total: int | None = None,
                 bad_at: dict[int, bytes] | None = None,
                 partition: int | None = None) -> None:
        super().__init__(name=f"producer-{topic}", daemon=True)
        self.partition = partition
        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate
        self.rng = np.random.default_rng(seed)
        self.drift_after, self.total = drift_after, total
        self.bad_at = dict(bad_at or {})
        self.halt = threading.Event()
        self.drift_gate = threading.Event()
        self.events = 0
        self.messages = 0
        self.drift_started: float | None = None  # time.monotonic() of the first drifted event
        self.error: BaseException | None = None

    def run(self) -> None:
        from kafka import KafkaProducer

        producer = None
        try:
            producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5,
                                     max_request_size=1_048_576)
            t0 = time.monotonic()
            while not self.halt.is_set() and (self.total is None or self.events < self.total):
                due = int((time.monotonic() - t0) * self.rate) + 1
                if self.total is not None:
                    due = min(due, self.total)
                while self.events < due:
                    drifting = (self.drift_after is not None and self.drift_gate.is_set()
                                and self.events >= self.drift_after)
                    stop_at = due
                    if self.drift_after is not None and self.events < self.drift_after:
                        stop_at = min(stop_at, self.drift_after)
                    stop_at = min([stop_at, *(k for k in self.bad_at if k > self.events)])
                    n = stop_at - self.events
                    batch = clipped_m1_events(self.rng, n, drifting, time.time())
                    if drifting and self.drift_started is None:
                        # before the first drifted event is handed to the client: a
                        # latency measured from here is never too short
                        self.drift_started = time.monotonic()
                    for msg in batch:
                        producer.send(self.topic, msg, partition=self.partition)
                    self.events += n
                    self.messages += n
                    if self.events in self.bad_at:
                        producer.send(self.topic, self.bad_at.pop(self.events))
                        self.messages += 1
                producer.flush(timeout=30)
                self.halt.wait(0.05)
        except BaseException as exc:  # noqa: BLE001 - reported by check()
            self.error = exc
        finally:
            if producer is not None:
                with contextlib.suppress(Exception):
                    producer.flush(timeout=30)
                    producer.close(timeout=10)

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"the event producer failed: {self.error!r}")

    def stop(self) -> None:
        self.halt.set()
        self.join(40)
