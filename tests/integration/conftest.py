"""Fixtures that give integration tests a real Kafka broker.

``kafka_bootstrap`` (session) is a "host:port" bootstrap string from
:func:`tests.support.kafka.kafka_bootstrap_servers` (an external broker named by
``STREAMDRIFT_TEST_KAFKA``, else the local broker of :mod:`stream.broker`, else
testcontainers); when none works the tests that need a broker FAIL under CI (``CI`` set)
and are skipped elsewhere, with the reasons.  These fixtures mark nothing: the tests carry
``@pytest.mark.integration`` themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest

import stream.broker
from tests.support.kafka import kafka_bootstrap_servers, local_broker_module, topic_name
from tests.support.runs import AlarmLog, alarm_log_handler


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests whose function has `session_order` "first" / "last" run first / last of the
    whole session, the others keep their order: test_time_to_page.py starts its 10-minute
    clean-stream run in the background first and checks it last, so that it overlaps the
    rest of the session instead of adding 10 minutes to it."""
    rank = {"first": 0, "last": 2}
    items.sort(key=lambda item: rank.get(
        getattr(getattr(item, "function", None), "session_order", None), 1))


@pytest.fixture(scope="session")
def broker_module() -> ModuleType:
    """The module stream.broker, when a LocalBroker can run here."""
    return local_broker_module()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers ("host:port") of a real Kafka broker for this test session."""
    # pytest keeps the last few basetemp folders: the broker's logs stay there to read.
    with kafka_bootstrap_servers(tmp_path_factory.mktemp("kafka")) as bootstrap:
        yield bootstrap


@pytest.fixture
def make_topic(
    kafka_bootstrap: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., str]]:
    """Factory: ``make_topic(partitions=N)`` creates a uniquely named topic and returns its
    name; the topics are deleted (best effort) after the test."""
    created: list[str] = []

    def make(partitions: int = 1) -> str:
        name = stream.broker.create_topic(kafka_bootstrap, topic_name(request), partitions)
        created.append(name)
        return name

    yield make
    # the broker may already be gone; the names are unique anyway
    with contextlib.suppress(Exception):
        stream.broker.delete_topics(kafka_bootstrap, created, timeout=10.0)


@pytest.fixture
def kafka_topic(make_topic: Callable[..., str]) -> str:
    """A fresh, uniquely named topic with one partition."""
    return make_topic(partitions=1)


@pytest.fixture
def alarm_log() -> Iterator[AlarmLog]:
    """The "drift alarm" log lines of in-process runs, per thread, while the test runs."""
    yield from alarm_log_handler()
