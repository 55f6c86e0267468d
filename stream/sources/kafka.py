"""kafka-python clients of ``streamdrift run``: connection settings, errors, the consumer.

The runner talks to its consumer through the small part of kafka-python's
``KafkaConsumer`` interface listed in :class:`Consumer`; :mod:`stream.sources.confluent`
wraps librdkafka in the same interface.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from detectors.errors import StreamdriftError
from stream.config import KafkaConfig

log = logging.getLogger("streamdrift.run")

#: kafka-python waits up to 30 s between reconnection attempts by default; after a broker
#: restart that is up to 30 s of outage more than needed (source.kafka.options overrides it
#: for the consumer)
RECONNECT_BACKOFF_MAX_MS = 2000


class Consumer(Protocol):
    """What the runner uses of a consumer (kafka-python's names and semantics), as it calls
    it; :class:`stream.sources.confluent.ConfluentConsumer` is checked against it."""

    def poll(self, timeout_ms: int, max_records: int) -> Mapping[Any, Sequence[Any]]: ...

    def assignment(self) -> set[Any]: ...

    def paused(self) -> set[Any]: ...

    def pause(self, *partitions: Any) -> None: ...

    def resume(self, *partitions: Any) -> None: ...

    def seek(self, partition: Any, offset: int) -> None: ...

    def seek_to_beginning(self, *partitions: Any) -> None: ...

    def seek_to_end(self, *partitions: Any) -> None: ...

    def committed(self, partition: Any, timeout_ms: int) -> int | None: ...

    def commit(self, offsets: dict[Any, Any], timeout_ms: int) -> None: ...

    def position(self, partition: Any, timeout_ms: int) -> int | None: ...

    def end_offsets(self, partitions: Any, timeout_ms: int) -> dict[Any, int]: ...

    def close(self, autocommit: bool = ..., timeout_ms: int = ...) -> None: ...


class KafkaConnectError(StreamdriftError):
    """The brokers cannot be reached, or refused the TLS handshake or the SASL login."""


def connection_error(k: KafkaConfig, exc: BaseException) -> KafkaConnectError:
    """A clear error for a failed connection: how we connected and what to check.

    Never holds a secret: the settings named are the protocol, mechanism, user name and
    CA file; ``exc`` comes from kafka-python, whose messages hold no credentials.
    """
    how = [f"security_protocol {k.security_protocol}"]
    checks = ["source.kafka.bootstrap_servers"]
    if k.sasl_mechanism:
        how.append(f"sasl_mechanism {k.sasl_mechanism}, sasl_username {k.sasl_username!r}")
    if k.ssl_cafile:
        how.append(f"ssl_cafile {k.ssl_cafile}")
    if k.security_protocol.endswith("SSL"):
        checks.append("ssl_cafile (the CA that signed the brokers' certificates)")
    if k.sasl_mechanism:
        checks.append("sasl_mechanism, sasl_username and sasl_password (a broker closes the "
                      "connection on wrong credentials and logs 'Failed authentication')")
    detail = str(exc) or type(exc).__name__
    if not detail.startswith(type(exc).__name__):
        detail = f"{type(exc).__name__}: {detail}"
    return KafkaConnectError(
        f"cannot connect to Kafka at {', '.join(k.bootstrap_servers)} ({'; '.join(how)}): "
        f"{detail}; check {', '.join(checks)}")


def kafka_client_kwargs(k: KafkaConfig) -> dict[str, Any]:
    """kafka-python connection settings (shared by consumer, producer and admin)."""
    kw = k.connection_kwargs()
    kw["reconnect_backoff_max_ms"] = RECONNECT_BACKOFF_MAX_MS
    # TLS/SASL settings given under options (ssl_check_hostname, ssl_crlfile, ssl_ciphers,
    # sasl_kerberos_*, ...) apply to every client: the dead-letter producer and the state
    # store connect to the same brokers as the consumer
    kw.update({key: value for key, value in k.options.items()
               if key.startswith(("ssl_", "sasl_"))})
    return kw


def kafka_python_consumer(config_kafka: KafkaConfig, max_message_bytes: int,
                          on_assigned: Callable[[set[Any]], None],
                          on_revoked: Callable[[set[Any]], None],
                          on_lost: Callable[[set[Any]], None],
                          on_restart: Callable[[str], None] | None = None) -> Any:
    """A subscribed kafka-python consumer whose rebalance callbacks call the given functions
    (on the consumer's IO thread: they must only record what changed and return), whose
    ``poll()`` finishes a group join kafka-python left unfinished (groupjoin.py), and which
    is replaced by a new one when it is still stuck in a group join (joinwatch.py;
    ``on_restart`` gets the reason)."""
    from stream.sources.joinwatch import GuardedConsumer

    return GuardedConsumer(
        lambda: subscribed_consumer(config_kafka, max_message_bytes, on_assigned, on_revoked,
                                    on_lost), on_restart)


def subscribed_consumer(config_kafka: KafkaConfig, max_message_bytes: int,
                        on_assigned: Callable[[set[Any]], None],
                        on_revoked: Callable[[set[Any]], None],
                        on_lost: Callable[[set[Any]], None]) -> Any:
    """The consumer :func:`kafka_python_consumer` guards, built and subscribed: its
    ``poll()`` mends an unfinished group join (groupjoin.py), no watchdog around it."""
    from kafka import ConsumerRebalanceListener

    from stream.sources.groupjoin import group_consumer

    class _Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked: Any) -> None:
            on_revoked(set(revoked))

        def on_partitions_assigned(self, assigned: Any) -> None:
            on_assigned(set(assigned))

        def on_partitions_lost(self, lost: Any) -> None:
            on_lost(set(lost))

    k = config_kafka
    kw = kafka_client_kwargs(k)
    kw.update(group_id=k.group_id, enable_auto_commit=False,
              auto_offset_reset=k.auto_offset_reset, max_poll_records=k.max_poll_records,
              max_partition_fetch_bytes=max(1_048_576, max_message_bytes))
    kw.update(dict(k.options))
    consumer = group_consumer(**kw)
    try:
        # have the topics' partitions in the metadata before the first join: a group leader
        # that joins without them assigns nothing, and only a later metadata refresh
        # (up to metadata_max_age_ms) would fix that
        for topic in k.topics:
            consumer.partitions_for_topic(topic)
    except Exception as exc:  # noqa: BLE001 - the join copes, only later
        log.warning("cannot read the metadata of the topics: %s", exc)
    consumer.subscribe(list(k.topics), listener=_Listener())
    return consumer


def record_values(recs: list[Any]) -> list[bytes]:
    """kafka-python: the records' values, ``b""`` for a null value."""
    return [r.value or b"" for r in recs]


def record_offsets(recs: list[Any]) -> list[int]:
    """kafka-python: the records' offsets."""
    return [int(r.offset) for r in recs]


#: librdkafka error codes that mean that no broker answered (confluent_kafka.KafkaError)
_RDKAFKA_DOWN = ("_TRANSPORT", "_ALL_BROKERS_DOWN", "_TIMED_OUT", "_WAIT_COORD",
                 "COORDINATOR_NOT_AVAILABLE", "NOT_COORDINATOR", "_MSG_TIMED_OUT",
                 "REQUEST_TIMED_OUT", "_RESOLVE")


def is_connection_error(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) says that no broker answered in time."""
    from kafka import errors

    kinds = tuple(getattr(errors, name) for name in (
        "KafkaTimeoutError", "KafkaConnectionError", "NodeNotReadyError", "RequestTimedOutError",
        "NoBrokersAvailable", "CoordinatorNotAvailableError") if hasattr(errors, name))
    try:
        from confluent_kafka import KafkaError, KafkaException

        down = {getattr(KafkaError, name) for name in _RDKAFKA_DOWN if hasattr(KafkaError, name)}
    except ImportError:
        KafkaException, down = None, set()  # type: ignore[assignment,misc]
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, kinds):
            return True
        if KafkaException is not None and isinstance(exc, KafkaException) and exc.args \
                and getattr(exc.args[0], "code", lambda: None)() in down:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


# -- compression codecs ----------------------------------------------------------------
#: Kafka's compression codecs -> the package kafka-python needs to decompress them (gzip:
#: the standard library). All are dependencies of streamdrift; librdkafka has all built in
CODEC_PACKAGES: dict[str, str | None] = {
    "gzip": None, "snappy": "python-snappy", "lz4": "lz4", "zstd": "zstandard"}

_CODEC_MISSING = re.compile(r"Libraries for (\w+) compression codec not found")
_CODEC_UNKNOWN = re.compile(r"Unrecognized compression type: (\S+)")


def missing_codecs() -> list[str]:
    """The codecs kafka-python cannot decompress here (their library is missing)."""
    from kafka import codec

    checks = {"gzip": codec.has_gzip, "snappy": codec.has_snappy, "lz4": codec.has_lz4,
              "zstd": codec.has_zstd}
    return [name for name, has in checks.items() if not has()]


def codec_fix(codec: str) -> str:
    """What makes ``codec`` readable: the package to install, or the other client."""
    pkg = CODEC_PACKAGES.get(codec)
    if pkg is None:
        return ("upgrade kafka-python or use source.kafka.client: confluent-kafka "
                f"(kafka-python knows no codec {codec!r})")
    return (f"pip install {pkg} (a dependency of streamdrift: reinstall it with its "
            "dependencies), or use source.kafka.client: confluent-kafka")


def unsupported_codec(exc: BaseException) -> str | None:
    """The codec named by kafka-python's ``UnsupportedCodecError`` ``exc``, else None.

    >>> from kafka.errors import UnsupportedCodecError
    >>> unsupported_codec(UnsupportedCodecError("Libraries for lz4 compression codec not found"))
    'lz4'
    >>> unsupported_codec(ValueError("Libraries for lz4 compression codec not found")) is None
    True
    """
    from kafka.errors import UnsupportedCodecError

    if not isinstance(exc, UnsupportedCodecError):
        return None
    text = str(exc)
    m = _CODEC_MISSING.search(text)
    if m is not None:
        return m.group(1)
    m = _CODEC_UNKNOWN.search(text)
    return f"type {m.group(1)}" if m is not None else "unknown"


def discard_undecodable_fetch(consumer: Any) -> Any | None:
    """Drop the records kafka-python could not decompress; returns their partition.

    kafka-python 3.0 decompresses a record batch while ``poll`` hands out its records: a
    codec it cannot decompress raises ``UnsupportedCodecError`` out of the record generator
    of the fetcher's in-line ``PartitionRecords``, once.  That generator is then finished
    but the records are never drained, so every later ``poll`` loops for ever inside
    ``Fetcher.fetched_records`` (``take`` returns nothing, the records stay in line): 100 %
    CPU, no records, no exception, no return to the caller (and so no reaction to a stop).
    Draining them ends that; the partition's position stays at the first undecodable
    record.  None when the fetcher's internals are not the expected ones (another
    kafka-python); ``tests/stream/test_codecs.py`` pins them.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    part = getattr(fetcher, "_next_partition_records", None)
    if part is None or not hasattr(part, "drain") or not hasattr(part, "topic_partition"):
        return None
    part.drain()
    return part.topic_partition


def partition_names(tps: Iterable[Any]) -> list[str]:
    """``topic/partition`` of each partition, sorted (for log lines)."""
    return sorted(f"{tp.topic}/{tp.partition}" for tp in tps)


def partition_lag(consumer: Any, parts: list[Any], timeout_ms: int,
                  done: dict[Any, int] | None = None) -> dict[tuple[str, int], int]:
    """Lag per (topic, partition) of ``parts``: end offset minus the offset in ``done``
    (what is processed) or, where it has none, the consumer's position.  Broker errors
    propagate (the caller counts them as an outage)."""
    # confluent-kafka: cached watermarks and one query per check (lag_end_offsets)
    ends = getattr(consumer, "lag_end_offsets", consumer.end_offsets)(parts, timeout_ms=timeout_ms)
    lag: dict[tuple[str, int], int] = {}
    for tp in parts:
        at = done.get(tp) if done is not None else None
        if at is None:
            at = consumer.position(tp, timeout_ms=timeout_ms)
        if at is not None and tp in ends:
            lag[(tp.topic, tp.partition)] = max(0, int(ends[tp]) - int(at))
    return lag

