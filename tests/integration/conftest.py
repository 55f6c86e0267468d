"""Fixtures that give integration tests a real Kafka broker.

``kafka_bootstrap`` (session) is a "host:port" bootstrap string, from the first of:

1. an external broker named by ``STREAMDRIFT_TEST_KAFKA`` (e.g. ``127.0.0.1:9092``);
2. the Docker-free local broker of :mod:`stream.broker` (needs ``java`` 17+, and the
   cached classpath in ``.cache/kafka/`` or ``mvn`` to fetch it);
3. testcontainers' ``KafkaContainer``, only where a Docker engine is reachable.

When none works the tests that need a broker FAIL under CI (``CI`` set and non-empty)
and are skipped elsewhere, with the reasons.  These fixtures mark nothing: the tests
carry ``@pytest.mark.integration`` themselves.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

EXTERNAL_ENV = "STREAMDRIFT_TEST_KAFKA"


def load_broker_module() -> ModuleType:
    """The local broker launcher, :mod:`stream.broker`."""
    import stream.broker

    return stream.broker


def broker_unavailable(message: str) -> None:
    """Fail under CI (never skip there), skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{message}\n(CI is set: integration tests must not be skipped)", pytrace=False)
    pytest.skip(message)


# -- the three sources of a broker ----------------------------------------------------------


def _check_external(bootstrap: str) -> None:
    broker = load_broker_module()
    try:
        admin = broker.admin_client(bootstrap, timeout=15.0)
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


def _start_local(workdir: Path, reasons: list[str]):
    try:
        broker_mod = load_broker_module()
    except Exception as exc:
        reasons.append(f"local broker: cannot import stream.broker: {type(exc).__name__}: {exc}")
        return None
    why_not = broker_mod.local_broker_unavailable_reason()
    if why_not is not None:
        reasons.append(f"local broker: {why_not}")
        return None
    broker = broker_mod.LocalBroker(workdir=workdir)
    try:
        broker.start()
    except broker_mod.BrokerError as exc:
        reasons.append(f"local broker failed to start: {exc}")
        return None
    return broker


def _start_container(reasons: list[str]):
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
        try:
            container.stop()
        except Exception:
            pass
        return None
    return container


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def broker_module() -> ModuleType:
    """The module stream.broker, when a LocalBroker can run here."""
    module = load_broker_module()
    why_not = module.local_broker_unavailable_reason()
    if why_not is not None:
        broker_unavailable(f"the local Kafka broker cannot run here: {why_not}")
    return module


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers ("host:port") of a real Kafka broker for this test session."""
    external = os.environ.get(EXTERNAL_ENV, "").strip()
    if external:
        _check_external(external)
        yield external
        return

    reasons: list[str] = []
    # pytest keeps the last few basetemp folders: the broker's logs stay there to read.
    local = _start_local(tmp_path_factory.mktemp("kafka"), reasons)
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

    broker_unavailable(
        "no Kafka broker for the integration tests:\n  - "
        + "\n  - ".join(reasons)
        + f"\nSet {EXTERNAL_ENV}=host:port to use a running broker."
    )


def _topic_name(request: pytest.FixtureRequest) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-")[:60] or "test"
    return f"sd-{stem}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_topic(
    kafka_bootstrap: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., str]]:
    """Factory: ``make_topic(partitions=N)`` creates a uniquely named topic and returns its
    name; the topics are deleted (best effort) after the test."""
    broker = load_broker_module()
    created: list[str] = []

    def make(partitions: int = 1) -> str:
        name = broker.create_topic(kafka_bootstrap, _topic_name(request), partitions)
        created.append(name)
        return name

    yield make
    try:
        broker.delete_topics(kafka_bootstrap, created, timeout=10.0)
    except Exception:
        pass  # the broker may already be gone; the names are unique anyway


@pytest.fixture
def kafka_topic(make_topic: Callable[..., str]) -> str:
    """A fresh, uniquely named topic with one partition."""
    return make_topic(partitions=1)
