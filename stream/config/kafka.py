"""The ``source:`` and ``state:`` sections: Kafka connection, security, dead letters, timestamps."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from stream.config.formats import FORMAT_KEYS, parse_format
from stream.config.keys import (
    ABSENT,
    BAD,
    Bad,
    Ctx,
    KeyPath,
    any_bad,
    default_of,
    get_key,
    show,
    type_name,
)
from stream.config.tree import (
    AUTO_OFFSET_RESETS,
    KAFKA_CLIENTS,
    REPARTITION_CODECS,
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    TIMESTAMP_UNITS,
    DeadLetterConfig,
    DriftEventsConfig,
    KafkaConfig,
    RepartitionConfig,
    SourceConfig,
    StateConfig,
    TimestampConfig,
)

_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_SERVER_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s:,\[\]/]+)(?::(\d{1,5}))?$")

_SOURCE_KEYS = ("kafka", "dead_letter", "timestamp", "max_message_bytes", "drift_events",
                "repartition", *FORMAT_KEYS)
_REPARTITION_KEYS = ("topic", "partitions", "compression", "retention_ms", "group_id",
                     "pooled", "pool_topic", "pool_outbox_max_bytes", "writers",
                     "heartbeat_ms", "lateness_ms")
#: the values of ``source.repartition.writers``
REPARTITION_WRITERS = ("one", "several")
_KAFKA_KEYS = (
    "bootstrap_servers",
    "topics",
    "group_id",
    "auto_offset_reset",
    "max_poll_records",
    "poll_timeout_ms",
    "client_id",
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_password",
    "options",
    "client",
    "librdkafka",
)
#: librdkafka properties that source.kafka sets; source.kafka.librdkafka may not override them
MANAGED_PROPERTIES = {
    "bootstrap.servers": "bootstrap_servers",
    "metadata.broker.list": "bootstrap_servers",
    "group.id": "group_id",
    "client.id": "client_id",
    "auto.offset.reset": "auto_offset_reset",
    "enable.auto.commit": "(streamdrift commits itself, after processing)",
    "enable.auto.offset.store": "(streamdrift commits itself, after processing)",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_username",
    "sasl.password": "sasl_password",
    "ssl.ca.location": "ssl_cafile",
    "ssl.certificate.location": "ssl_certfile",
    "ssl.key.location": "ssl_keyfile",
    "ssl.key.password": "ssl_password",
}
# kafka-python argument -> the key that sets it here
_MANAGED_OPTIONS = {
    "bootstrap_servers": "bootstrap_servers",
    "group_id": "group_id",
    "client_id": "client_id",
    "auto_offset_reset": "auto_offset_reset",
    "max_poll_records": "max_poll_records",
    "security_protocol": "security_protocol",
    "sasl_mechanism": "sasl_mechanism",
    "sasl_plain_username": "sasl_username",
    "sasl_plain_password": "sasl_password",
    "ssl_cafile": "ssl_cafile",
    "ssl_certfile": "ssl_certfile",
    "ssl_keyfile": "ssl_keyfile",
    "ssl_password": "ssl_password",
}
#: the optional ``state:`` section; kept out of the top-level keys so that the known-keys
#: list of the top level (pinned by tests/stream/test_config.py) does not change
STATE_SECTION = "state"
STATE_KEYS = ("enabled", "topic", "checkpoint_interval_s")


def parse_source(ctx: Ctx, value: Any) -> SourceConfig:
    path: KeyPath = ("source",)
    sec = ctx.section(value, path, _SOURCE_KEYS)
    if sec is None:
        return SourceConfig()
    kafka = None
    if get_key(sec, "kafka") is not ABSENT:
        kafka = _kafka(ctx, sec["kafka"])
    dead_letter = None
    if get_key(sec, "dead_letter") is not ABSENT:
        dl = ctx.section(
            sec["dead_letter"],
            path + ("dead_letter",),
            ("topic",),
            "{topic: streamdrift-dead-letter}",
        )
        if dl is not None:
            topic = get_key(dl, "topic")
            if topic is ABSENT:
                dead_letter = DeadLetterConfig()
            else:
                checked = _topic(ctx, topic, path + ("dead_letter", "topic"))
                dead_letter = DeadLetterConfig(checked)  # type: ignore[arg-type]
    timestamp = None
    if get_key(sec, "timestamp") is not ABSENT:
        ts = ctx.section(
            sec["timestamp"], path + ("timestamp",), ("path", "unit"), "{path: timestamp, unit: s}"
        )
        if ts is not None:
            ts_path = default_of(TimestampConfig, "path")
            if get_key(ts, "path") is not ABSENT:
                ts_path = ctx.key_path(ts["path"], path + ("timestamp", "path"))  # type: ignore[assignment]
            unit = default_of(TimestampConfig, "unit")
            if get_key(ts, "unit") is not ABSENT:
                unit = ctx.string(ts["unit"], path + ("timestamp", "unit"), choices=TIMESTAMP_UNITS)  # type: ignore[assignment]
            timestamp = TimestampConfig(ts_path, unit)
    max_bytes = default_of(SourceConfig, "max_message_bytes")
    if get_key(sec, "max_message_bytes") is not ABSENT:
        max_bytes = ctx.integer(sec["max_message_bytes"], path + ("max_message_bytes",), 1, 1 << 30)  # type: ignore[assignment]
    drift_events = None
    if get_key(sec, "drift_events") is not ABSENT:
        drift_events = _drift_events(ctx, sec["drift_events"], kafka, dead_letter)
    repartition = None
    if get_key(sec, "repartition") is not ABSENT:
        repartition = _repartition(ctx, sec["repartition"], kafka, dead_letter, drift_events)
    return SourceConfig(
        kafka=kafka, dead_letter=dead_letter, timestamp=timestamp, max_message_bytes=max_bytes,
        drift_events=drift_events, repartition=repartition, **parse_format(ctx, sec),
    )


def _repartition(ctx: Ctx, value: Any, kafka: KafkaConfig | None,
                 dead_letter: DeadLetterConfig | None,
                 drift_events: DriftEventsConfig | None) -> RepartitionConfig | None:
    """``source.repartition``: defaults named after the consumer group."""
    path: KeyPath = ("source", "repartition")
    if value is True:
        value = {}
    sec = ctx.section(value, path, _REPARTITION_KEYS, "{topic: streamdrift-repartition, "
                      "partitions: 1}")
    if sec is None:
        return None
    group = kafka.group_id if kafka is not None and isinstance(kafka.group_id, str) \
        else "streamdrift"
    kw: dict[str, Any] = {"topic": f"{group}-repartition", "group_id": f"{group}-monitor",
                          "pool_topic": f"{group}-pool"}
    if get_key(sec, "topic") is not ABSENT:
        kw["topic"] = _topic(ctx, sec["topic"], path + ("topic",))
    if get_key(sec, "group_id") is not ABSENT:
        kw["group_id"] = ctx.string(sec["group_id"], path + ("group_id",))
    if get_key(sec, "partitions") is not ABSENT:
        kw["partitions"] = ctx.integer(sec["partitions"], path + ("partitions",), 1, 10_000)
    if get_key(sec, "compression") is not ABSENT:
        kw["compression"] = ctx.string(sec["compression"], path + ("compression",),
                                       choices=REPARTITION_CODECS)
    if get_key(sec, "retention_ms") is not ABSENT:
        kw["retention_ms"] = ctx.integer(sec["retention_ms"], path + ("retention_ms",),
                                         60_000, None)
    if get_key(sec, "pooled") is not ABSENT:
        if isinstance(sec["pooled"], bool):
            kw["pooled"] = sec["pooled"]
        else:
            kw["pooled"] = ctx.error(path + ("pooled",),
                                     f"must be true or false, got {show(sec['pooled'])}")
    if get_key(sec, "pool_topic") is not ABSENT:
        kw["pool_topic"] = _topic(ctx, sec["pool_topic"], path + ("pool_topic",))
    if get_key(sec, "pool_outbox_max_bytes") is not ABSENT:
        kw["pool_outbox_max_bytes"] = ctx.integer(
            sec["pool_outbox_max_bytes"], path + ("pool_outbox_max_bytes",), 1024, 1 << 40)
    if get_key(sec, "writers") is not ABSENT:
        kw["writers"] = ctx.string(sec["writers"], path + ("writers",),
                                   choices=REPARTITION_WRITERS)
    for key, lo, hi in (("heartbeat_ms", 10, 600_000), ("lateness_ms", 0, 86_400_000)):
        if get_key(sec, key) is not ABSENT:
            kw[key] = ctx.integer(sec[key], path + (key,), lo, hi)
    if any(isinstance(v, Bad) for v in kw.values()):
        return None
    if kw["pool_topic"] == kw["topic"] or (
            kafka is not None and isinstance(kafka.topics, tuple)
            and kw["pool_topic"] in kafka.topics):
        ctx.error(path + ("pool_topic",), f"{kw['pool_topic']!r} is also the repartition or a "
                  "source topic; the pool topic must be a topic of its own")
        return None
    topic, own = kw["topic"], "the repartition topic must be a topic of its own"
    where = path + ("topic",)
    if kafka is not None and isinstance(kafka.topics, tuple) and topic in kafka.topics:
        ctx.error(where, f"{topic!r} is also in source.kafka.topics; {own}")
        return None
    for other, name in ((dead_letter, "source.dead_letter.topic"),
                        (drift_events, "source.drift_events.topic")):
        if other is not None and topic == other.topic:
            ctx.error(where, f"{topic!r} is also {name}; {own}")
            return None
    if kafka is not None and kw["group_id"] == kafka.group_id:
        ctx.error(path + ("group_id",), f"{kw['group_id']!r} is also source.kafka.group_id; "
                  "the monitors need a consumer group of their own")
        return None
    return RepartitionConfig(**kw)


def _drift_events(ctx: Ctx, value: Any, kafka: KafkaConfig | None,
                  dead_letter: DeadLetterConfig | None) -> DriftEventsConfig | None:
    path: KeyPath = ("source", "drift_events")
    sec = ctx.section(value, path, ("topic",), "{topic: streamdrift-drift-events}")
    if sec is None:
        return None
    topic: Any = default_of(DriftEventsConfig, "topic")
    if get_key(sec, "topic") is not ABSENT:
        topic = _topic(ctx, sec["topic"], path + ("topic",))
    if not isinstance(topic, str):
        return None
    where = path + ("topic",)
    own = "the drift-events topic must be a topic of its own"
    if kafka is not None and isinstance(kafka.topics, tuple) and topic in kafka.topics:
        ctx.error(where, f"{topic!r} is also in source.kafka.topics; {own}")
        return None
    if dead_letter is not None and topic == dead_letter.topic:
        ctx.error(where, f"{topic!r} is also source.dead_letter.topic; {own}")
        return None
    return DriftEventsConfig(topic)


def _topic(ctx: Ctx, value: Any, path: KeyPath) -> str | Bad:
    topic = ctx.string(value, path)
    if isinstance(topic, str) and not _TOPIC_RE.match(topic):
        return ctx.error(
            path,
            f"{topic!r} is not a valid Kafka topic name (1-249 characters: letters, digits, '.', '_', '-')",
        )
    return topic


def _bootstrap(ctx: Ctx, value: Any, path: KeyPath) -> tuple[str, ...] | Bad:
    example = 'e.g. "kafka-1:9092,kafka-2:9092" or a list of host:port'
    if isinstance(value, str):
        items: list[Any] = [s.strip() for s in value.split(",")]
        paths: list[KeyPath] = [path] * len(items)
    elif isinstance(value, list):
        items = list(value)
        paths = [path + (i,) for i in range(len(items))]
    else:
        return ctx.error(
            path,
            f"must be a host:port string or a list of them, {example}; got {type_name(value)}",
        )
    if not items:
        return ctx.error(path, f"must name at least one broker, {example}")
    servers: list[str] = []
    ok = True
    for item, where in zip(items, paths, strict=True):
        if not isinstance(item, str) or not item.strip():
            ctx.error(where, f"each broker must be a non-empty host:port string, {example}")
            ok = False
            continue
        match = _SERVER_RE.match(item.strip())
        port = match.group(2) if match else None
        if match is None or (port is not None and not 1 <= int(port) <= 65535):
            ctx.error(where, f"{item!r} is not a valid host:port (port 1..65535), {example}")
            ok = False
            continue
        servers.append(item.strip())
    return tuple(servers) if ok else BAD


def _kafka(ctx: Ctx, value: Any) -> KafkaConfig | None:
    path: KeyPath = ("source", "kafka")
    sec = ctx.section(
        value, path, _KAFKA_KEYS, "{bootstrap_servers: 127.0.0.1:9092, topics: [inference-events]}"
    )
    if sec is None:
        return None
    kw: dict[str, Any] = {}

    if get_key(sec, "bootstrap_servers") is ABSENT:
        ctx.error(
            path + ("bootstrap_servers",), 'required: the Kafka brokers, e.g. "127.0.0.1:9092"'
        )
        kw["bootstrap_servers"] = BAD
    else:
        kw["bootstrap_servers"] = _bootstrap(
            ctx, sec["bootstrap_servers"], path + ("bootstrap_servers",)
        )

    topics = get_key(sec, "topics")
    if topics is ABSENT:
        kw["topics"] = ctx.error(
            path + ("topics",), "required: a list of topic names, e.g. [inference-events]"
        )
    elif not isinstance(topics, list) or not topics:
        kw["topics"] = ctx.error(
            path + ("topics",),
            "must be a non-empty list of topic names, e.g. [inference-events]; got "
            + ("an empty list" if isinstance(topics, list) else type_name(topics)),
        )
    else:
        checked = [_topic(ctx, t, path + ("topics", i)) for i, t in enumerate(topics)]
        seen: set[str] = set()
        for i, t in enumerate(checked):
            if isinstance(t, str):
                if t in seen:
                    ctx.error(path + ("topics", i), f"duplicate topic {t!r}")
                seen.add(t)
        kw["topics"] = BAD if any_bad(*checked) else tuple(checked)

    for key in ("group_id", "client_id"):
        if get_key(sec, key) is not ABSENT:
            kw[key] = ctx.string(sec[key], path + (key,))
    if get_key(sec, "auto_offset_reset") is not ABSENT:
        kw["auto_offset_reset"] = ctx.string(
            sec["auto_offset_reset"], path + ("auto_offset_reset",), choices=AUTO_OFFSET_RESETS
        )
    if get_key(sec, "max_poll_records") is not ABSENT:
        kw["max_poll_records"] = ctx.integer(
            sec["max_poll_records"], path + ("max_poll_records",), 1, 100_000
        )
    if get_key(sec, "poll_timeout_ms") is not ABSENT:
        kw["poll_timeout_ms"] = ctx.integer(
            sec["poll_timeout_ms"], path + ("poll_timeout_ms",), 0, 3_600_000
        )

    protocol = default_of(KafkaConfig, "security_protocol")
    if get_key(sec, "security_protocol") is not ABSENT:
        protocol = ctx.string(
            sec["security_protocol"], path + ("security_protocol",), choices=SECURITY_PROTOCOLS
        )  # type: ignore[assignment]
    kw["security_protocol"] = protocol
    sasl = isinstance(protocol, str) and protocol.startswith("SASL_")
    ssl = isinstance(protocol, str) and protocol.endswith("SSL")
    known_protocol = isinstance(protocol, str)

    if get_key(sec, "sasl_mechanism") is not ABSENT:
        kw["sasl_mechanism"] = ctx.string(
            sec["sasl_mechanism"], path + ("sasl_mechanism",), choices=SASL_MECHANISMS
        )
    if get_key(sec, "sasl_username") is not ABSENT:
        kw["sasl_username"] = ctx.string(sec["sasl_username"], path + ("sasl_username",))
    for key in ("sasl_password", "ssl_password"):
        if get_key(sec, key) is not ABSENT:
            kw[key] = ctx.secret(sec[key], path + (key,))
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if get_key(sec, key) is not ABSENT:
            kw[key] = ctx.file_path(sec[key], path + (key,), must_exist=True)

    if known_protocol:
        for key in ("sasl_mechanism", "sasl_username", "sasl_password"):
            if sasl and key not in kw:
                ctx.error(path + (key,), f"required with security_protocol {protocol}")
            elif not sasl and key in kw:
                ctx.error(
                    path + (key,),
                    f"only used with SASL_PLAINTEXT or SASL_SSL; security_protocol is {protocol}",
                )
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"):
            if not ssl and key in kw:
                ctx.error(
                    path + (key,),
                    f"only used with SSL or SASL_SSL; security_protocol is {protocol}",
                )
    if "ssl_keyfile" in kw and "ssl_certfile" not in kw:
        ctx.error(
            path + ("ssl_certfile",),
            "required with ssl_keyfile (the client certificate of that key)",
        )

    options = get_key(sec, "options")
    if options is ABSENT:
        kw["options"] = MappingProxyType({})
    elif not isinstance(options, Mapping):
        kw["options"] = ctx.error(
            path + ("options",),
            f"must be a mapping of KafkaConsumer arguments, got {type_name(options)}",
        )
    else:
        for key in options:
            where = path + ("options", key)
            if not isinstance(key, str):
                ctx.error(where, "option names must be strings")
            elif key in _MANAGED_OPTIONS:
                ctx.error(
                    where,
                    f"set source.kafka.{_MANAGED_OPTIONS[key]} instead of passing it in options",
                )
        kw["options"] = MappingProxyType(dict(options))

    if get_key(sec, "client") is not ABSENT:
        kw["client"] = ctx.string(sec["client"], path + ("client",), choices=KAFKA_CLIENTS)
        if kw["client"] == "confluent-kafka" and importlib.util.find_spec("confluent_kafka") \
                is None:
            ctx.error(path + ("client",), "confluent-kafka is not installed: install it with "
                      "`pip install 'streamdrift[confluent]'`, or use client: kafka-python")
    props = get_key(sec, "librdkafka")
    if props is not ABSENT:
        if not isinstance(props, Mapping):
            ctx.error(path + ("librdkafka",), "must be a mapping of librdkafka properties "
                      f"(e.g. fetch.wait.max.ms: 100), got {type_name(props)}")
        else:
            if not isinstance(kw.get("client"), Bad) and kw.get("client") != "confluent-kafka":
                ctx.error(path + ("librdkafka",), "applies only with client: confluent-kafka; "
                          "kafka-python settings go under source.kafka.options")
            for key, prop in props.items():
                where = path + ("librdkafka", key)
                if not isinstance(key, str):
                    ctx.error(where, "property names must be strings")
                elif key in MANAGED_PROPERTIES:
                    ctx.error(where, f"set source.kafka.{MANAGED_PROPERTIES[key]} instead")
                elif not isinstance(prop, (str, int, float, bool)):
                    ctx.error(where, f"must be a string, number or boolean, got "
                              f"{type_name(prop)}")
            kw["librdkafka"] = MappingProxyType(dict(props))
    if get_key(sec, "options") not in (ABSENT, {}) and kw.get("client") == "confluent-kafka":
        ctx.error(path + ("options",), "are kafka-python arguments and do not apply with "
                  "client: confluent-kafka; use source.kafka.librdkafka (librdkafka properties)")

    for key in list(kw):
        if key in ("bootstrap_servers", "topics"):
            continue
        if isinstance(kw[key], Bad):
            del kw[key]  # keep building; the error is recorded
    return KafkaConfig(**kw)


def parse_state(ctx: Ctx, value: Any, source: SourceConfig) -> StateConfig:
    path: KeyPath = (STATE_SECTION,)
    sec = ctx.section(
        value,
        path,
        STATE_KEYS,
        "{enabled: true, topic: streamdrift-state, checkpoint_interval_s: 30}",
    )
    if sec is None:
        return _with_drift_events(ctx, StateConfig(), source)
    kw: dict[str, Any] = {}
    if get_key(sec, "enabled") is not ABSENT:
        enabled = sec["enabled"]
        if isinstance(enabled, bool):
            kw["enabled"] = enabled
        else:
            ctx.error(path + ("enabled",), f"must be true or false, got {show(enabled)}")
    topic: Any = default_of(StateConfig, "topic")
    if get_key(sec, "topic") is not ABSENT:
        topic = _topic(ctx, sec["topic"], path + ("topic",))
    if isinstance(topic, str) and kw.get("enabled", True):
        # the default name counts too: it must not be one of the other topics either
        kafka = source.kafka
        if kafka is not None and isinstance(kafka.topics, tuple) and topic in kafka.topics:
            topic = ctx.error(
                path + ("topic",),
                f"{topic!r} is also in source.kafka.topics; the state topic must be a "
                "topic of its own",
            )
        elif source.dead_letter is not None and topic == source.dead_letter.topic:
            topic = ctx.error(
                path + ("topic",),
                f"{topic!r} is also source.dead_letter.topic; the state topic must be a "
                "topic of its own",
            )
        elif source.repartition is not None and topic == source.repartition.topic:
            topic = ctx.error(
                path + ("topic",),
                f"{topic!r} is also source.repartition.topic; the state topic must be a "
                "topic of its own",
            )
    if isinstance(topic, str):
        kw["topic"] = topic
    if get_key(sec, "checkpoint_interval_s") is not ABSENT:
        interval = ctx.real(
            sec["checkpoint_interval_s"],
            path + ("checkpoint_interval_s",),
            minimum=0.0,
            strict=True,
        )
        if not isinstance(interval, Bad):
            kw["checkpoint_interval_s"] = interval
    return _with_drift_events(ctx, StateConfig(**kw), source)


def _with_drift_events(ctx: Ctx, state: StateConfig, source: SourceConfig) -> StateConfig:
    """``state``, after checking that source.drift_events can rely on it."""
    drift = source.drift_events
    if drift is None:
        return state
    where: KeyPath = ("source", "drift_events")
    if not state.enabled:
        ctx.error(where, "needs state.enabled: true (open episodes and what was written live "
                  "in the checkpoints); enable state or remove source.drift_events")
    elif drift.topic == state.topic:
        ctx.error(where + ("topic",), f"{drift.topic!r} is also state.topic; the drift-events "
                  "topic must be a topic of its own")
    return state
