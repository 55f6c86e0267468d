"""What the formats other than plain JSON read of a message: value, key, headers, topic.

``replay`` hands a decoder the lines of a file (``bytes``: no key, headers nor topic);
``run`` hands it the consumer's records (kafka-python's ``ConsumerRecord`` or
:class:`stream.sources.confluent.Record`: ``value``, ``key``, ``headers``, ``topic``).

>>> values, headers, topics, keys = payloads([b'{"a": 1}'])
>>> values, headers, topics, keys
([b'{"a": 1}'], [None], [None], [None])
>>> events, positions, bad, reasons = parse_messages([b'{"a": 1}', b'[1]', b'{'], 100)
>>> events, positions.tolist(), bad.tolist(), reasons
([{'a': 1}], [0], [1, 2], ['not_an_object', 'invalid_json'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from stream.formats.batch import EMPTY_INT
from stream.formats.json import _parse_verdict, _size_verdict

__all__ = ["header_map", "parse_messages", "payloads"]


def payloads(messages: Sequence[Any]) -> tuple[list[Any], list[dict[str, str] | None],
                                                 list[str | None], list[str | None]]:
    """(values, headers, topics, keys) of ``messages``: bytes or Kafka records."""
    n = len(messages)
    if not n or type(messages[0]) is bytes and all(type(m) is bytes for m in messages):
        return list(messages), [None] * n, [None] * n, [None] * n
    values: list[Any] = []
    headers: list[dict[str, str] | None] = []
    topics: list[str | None] = []
    keys: list[str | None] = []
    for m in messages:
        if isinstance(m, bytes | bytearray | memoryview) or m is None:
            values.append(m)
            headers.append(None)
            topics.append(None)
            keys.append(None)
            continue
        values.append(m.value if m.value is not None else b"")
        headers.append(header_map(getattr(m, "headers", None)))
        topic = getattr(m, "topic", None)
        topics.append(topic if isinstance(topic, str) else None)
        keys.append(_text(getattr(m, "key", None)))
    return values, headers, topics, keys


def header_map(headers: Any) -> dict[str, str] | None:
    """Kafka headers (``[(name, bytes)]``) as lower-case name -> text; CloudEvents' Kafka
    spelling ``ce_id`` is read as ``ce-id``, as the HTTP binding writes it."""
    if not headers:
        return None
    out: dict[str, str] = {}
    try:
        for name, value in headers:
            if not isinstance(name, str):
                continue
            key = name.lower()
            if key.startswith("ce_"):
                key = "ce-" + key[3:]
            text = _text(value)
            if text is not None:
                out[key] = text
    except (TypeError, ValueError):
        return out or None
    return out


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode()
    except (TypeError, ValueError):
        return None


def parse_messages(values: Sequence[Any], max_bytes: int
                   ) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray, list[str]]:
    """(JSON objects, their positions, rejected positions, their reasons), with the JSON
    format's reasons (``oversized``, ``invalid_json``, ``not_an_object``)."""
    n = len(values)
    if not n:
        return [], EMPTY_INT, EMPTY_INT, []
    try:
        if max(map(len, values)) <= max_bytes:
            events = list(map(orjson.loads, values))
            if set(map(type, events)) == {dict}:
                return events, np.arange(n, dtype=np.int64), EMPTY_INT, []
    except Exception:  # noqa: BLE001 - anything at all: message by message
        pass
    events = []
    positions: list[int] = []
    bad: list[int] = []
    reasons: list[str] = []
    for i, message in enumerate(values):
        reason = _size_verdict(message, max_bytes)
        if reason is None:
            event, reason = _parse_verdict(message)
        if reason is not None:
            bad.append(i)
            reasons.append(reason)
        else:
            events.append(event)
            positions.append(i)
    return (events, np.array(positions, dtype=np.int64), np.array(bad, dtype=np.int64),
            reasons)
