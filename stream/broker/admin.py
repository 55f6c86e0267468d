"""Topic helpers for any Kafka broker (kafka-python, imported lazily so that fetching the
classpath works without it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stream.broker.errors import BrokerError


def admin_client(
    bootstrap_servers: str, timeout: float = 30.0, client_config: Mapping[str, Any] | None = None
):
    """A kafka-python KafkaAdminClient whose bootstrap and requests give up after ``timeout``."""
    from kafka import KafkaAdminClient

    ms = max(1000, int(timeout * 1000))
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "client_id": "streamdrift-local-broker",
        "request_timeout_ms": ms,
        "bootstrap_timeout_ms": ms,
    }
    config.update(client_config or {})
    return KafkaAdminClient(**config)


def create_topic(
    bootstrap_servers: str,
    name: str,
    partitions: int = 1,
    *,
    replication_factor: int = 1,
    timeout: float = 30.0,
    client_config: Mapping[str, Any] | None = None,
) -> str:
    """Create a topic on any broker and wait until every partition has a leader.

    An existing topic is fine (its partition count is then left as it is).  Returns the name.
    """
    from kafka.errors import TopicAlreadyExistsError

    admin = admin_client(bootstrap_servers, timeout, client_config)
    try:
        result = admin.create_topics(
            {
                name: {
                    "num_partitions": int(partitions),
                    "replication_factor": int(replication_factor),
                }
            },
            timeout_ms=int(timeout * 1000),
            raise_errors=False,
        )
        for topic in result.get("topics", []):
            code = topic.get("error_code", 0)
            if code not in (0, TopicAlreadyExistsError.errno):
                raise BrokerError(
                    f"creating topic {name!r} failed: error {code} {topic.get('error_message')}"
                )
        admin.wait_for_topics([name], timeout_ms=int(timeout * 1000))
    finally:
        admin.close()
    return name


def delete_topics(
    bootstrap_servers: str,
    names: list[str],
    *,
    timeout: float = 30.0,
    client_config: Mapping[str, Any] | None = None,
) -> None:
    """Delete topics; missing ones are ignored."""
    if not names:
        return
    admin = admin_client(bootstrap_servers, timeout, client_config)
    try:
        admin.delete_topics(list(names), timeout_ms=int(timeout * 1000), raise_errors=False)
    finally:
        admin.close()
