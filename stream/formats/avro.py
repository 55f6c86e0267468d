"""Avro records in the Confluent wire format: magic byte 0, 4-byte schema id, Avro body.

Each message is decoded with its writer schema (``fastavro.schemaless_reader``) into a
record, then routed and extracted exactly as a JSON event is (the column paths name record
fields, ``features.income``; :mod:`stream.formats.json`'s value rules).  Writer schemas
come from ``source.avro.schemas`` (schema id -> ``.avsc`` file, read at start-up) and else
from a Confluent-compatible schema registry (``GET {registry_url}/schemas/ids/{id}``),
each fetched once and cached; a failed fetch is retried at most every
:data:`RETRY_S` seconds, the messages meanwhile rejected as ``unknown_schema``.

Logical types: ``timestamp-*``, ``local-timestamp-*``, ``date`` and ``time-*`` are read as
the plain numbers they are stored as (milliseconds or microseconds since the epoch, days:
give ``source.timestamp`` the matching unit); ``decimal`` values are invalid in numeric
columns (fastavro reads them as ``Decimal``).

>>> import io, json, fastavro
>>> from stream.config import parse_config
>>> schema = {"type": "record", "name": "E", "fields": [{"name": "x", "type": "double"}]}
>>> cfg = parse_config({"source": {"format": "avro", "avro": {"registry_url": "http://r"}},
...     "models": [{"name": "m", "baseline": {"file": "b.json"},
...                 "features": [{"name": "x", "path": "x", "type": "numeric"}]}]}, "/")
>>> dec = AvroDecoder(cfg, schemas={7: schema})
>>> body = io.BytesIO(); fastavro.schemaless_writer(body, fastavro.parse_schema(schema), {"x": 1.5})
>>> batch = dec.decode([b"\\x00" + (7).to_bytes(4, "big") + body.getvalue(), b"{}"])
>>> batch.models["m"].columns["x"].tolist(), batch.invalid
([1.5], {'invalid_avro': 1})
"""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, Final, cast

import numpy as np

from stream.config import Config, ConfigError
from stream.formats.batch import EMPTY_INT, DecodedBatch
from stream.formats.json import BatchDecoder

__all__ = ["AVRO_REASONS", "AvroDecoder", "SchemaRegistry"]

#: reasons of rejected messages this format adds: ``invalid_avro``: no magic byte 0 and
#: schema id, or a body its writer schema does not read; ``unknown_schema``: a schema id
#: neither the files nor the registry know (or the registry did not answer)
AVRO_REASONS: Final = ("invalid_avro", "unknown_schema")
#: seconds before a schema id the registry could not give is asked for again
RETRY_S: Final = 30.0
#: logical types read as the numbers they are stored as
_HEAD = itemgetter(slice(0, 5))
_BODY = itemgetter(slice(5, None))
_PLAIN_LOGICAL: Final = frozenset({"timestamp-millis", "timestamp-micros", "timestamp-nanos",
                                   "local-timestamp-millis", "local-timestamp-micros",
                                   "local-timestamp-nanos", "date", "time-millis",
                                   "time-micros"})


def _plain(schema: Any) -> Any:
    """``schema`` without the logical types of :data:`_PLAIN_LOGICAL`."""
    if isinstance(schema, list):
        return [_plain(s) for s in schema]
    if isinstance(schema, dict):
        return {k: _plain(v) for k, v in schema.items()
                if not (k == "logicalType" and v in _PLAIN_LOGICAL)}
    return schema


def parse_schema(text_or_schema: Any) -> Any:
    """A writer schema (JSON text or parsed JSON) ready for fastavro; ValueError if bad."""
    import fastavro

    schema = json.loads(text_or_schema) if isinstance(text_or_schema, str | bytes) \
        else text_or_schema
    try:
        return fastavro.parse_schema(_plain(schema))
    except Exception as exc:  # noqa: BLE001 - fastavro raises several kinds
        raise ValueError(f"not an Avro schema: {exc}") from None


class SchemaRegistry:
    """Writer schemas by id from a Confluent-compatible registry, each fetched once."""

    def __init__(self, url: str, timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._clock = clock
        #: schema id -> when a failed fetch may be tried again
        self._failed: dict[int, float] = {}
        #: requests made (for tests and logs)
        self.requests = 0

    def fetch(self, schema_id: int) -> Any | None:
        """The parsed schema, or None (not found, registry down, not Avro)."""
        if self._failed.get(schema_id, 0.0) > self._clock():
            return None
        self.requests += 1
        try:
            with urllib.request.urlopen(f"{self.url}/schemas/ids/{schema_id}",
                                        timeout=self.timeout_s) as resp:
                body = json.loads(resp.read())
            if body.get("schemaType", "AVRO") != "AVRO":
                raise ValueError(f"schema {schema_id} is {body.get('schemaType')}, not Avro")
            return parse_schema(body["schema"])
        except (OSError, ValueError, KeyError, TypeError, urllib.error.URLError):
            self._failed[schema_id] = self._clock() + RETRY_S
            return None


class AvroDecoder:
    """Decodes poll batches of Confluent wire-format Avro messages."""

    def __init__(self, config: Config, *, schemas: Mapping[int, Any] | None = None) -> None:
        settings = config.source.avro
        self._json = BatchDecoder(config, use_msgspec=False)
        self._max_bytes = int(config.source.max_message_bytes)
        #: schema id -> parsed writer schema (files first, then what the registry gave)
        self.schemas: dict[int, Any] = {}
        for sid, path in (settings.schemas.items() if settings is not None else ()):
            self.schemas[sid] = _schema_file(sid, Path(path))
        for sid, schema in (schemas or {}).items():
            self.schemas[sid] = parse_schema(schema)
        self.registry = None if settings is None or settings.registry_url is None \
            else SchemaRegistry(settings.registry_url, settings.timeout_s)
        from fastavro import schemaless_reader

        self._reader = schemaless_reader

    def _schema(self, schema_id: int) -> Any | None:
        schema = self.schemas.get(schema_id)
        if schema is None and self.registry is not None:
            schema = self.registry.fetch(schema_id)
            if schema is not None:
                self.schemas[schema_id] = schema
        return schema

    def decode(self, messages: Sequence[Any]) -> DecodedBatch:
        """Decode one batch; never raises on bad input.

        Fast path: every message is ``bytes`` within the limit, with the same 5-byte
        header (magic byte, one schema id) and a body its schema reads into a record: the
        batch is read with C-level ``map`` calls.  Otherwise message by message.
        """
        n = len(messages)
        if n and set(map(type, messages)) == {bytes} \
                and max(map(len, messages)) <= self._max_bytes:
            heads = set(map(_HEAD, messages))
            if len(heads) == 1:
                (head,) = heads
                if len(head) == 5 and head[0] == 0:
                    schema = self._schema(int.from_bytes(head[1:5], "big"))
                    if schema is not None:
                        try:
                            records = list(map(self._reader, map(io.BytesIO, map(_BODY, messages)),
                                               repeat(schema), repeat(None)))
                        except Exception:  # noqa: BLE001 - a body that does not read: carefully
                            records = None
                        if records is not None and set(map(type, records)) == {dict}:
                            return self._json.decode_events(
                                n, cast(list[dict[str, Any]], records),
                                np.arange(n, dtype=np.int64), EMPTY_INT, [])
        return self._decode_carefully(messages)

    def _decode_carefully(self, messages: Sequence[Any]) -> DecodedBatch:
        schemaless_reader = self._reader
        n = len(messages)
        events: list[dict[str, Any]] = []
        positions: list[int] = []
        bad: list[int] = []
        reasons: list[str] = []
        for i, message in enumerate(messages):
            reason = None
            if type(message) is not bytes:
                message = bytes(message) if isinstance(message, bytearray | memoryview) \
                    else b""
            if len(message) > self._max_bytes:
                reason = "oversized"
            elif len(message) < 5 or message[0] != 0:
                reason = "invalid_avro"
            else:
                schema = self._schema(int.from_bytes(message[1:5], "big"))
                if schema is None:
                    reason = "unknown_schema"
                else:
                    try:
                        record = schemaless_reader(io.BytesIO(message[5:]), schema, None)
                    except Exception:  # noqa: BLE001 - a body its schema does not read
                        reason = "invalid_avro"
                    else:
                        if type(record) is dict:
                            events.append(record)
                            positions.append(i)
                            continue
                        reason = "not_an_object"
            bad.append(i)
            reasons.append(reason)
        return self._json.decode_events(n, events, np.array(positions, dtype=np.int64),
                                        np.array(bad, dtype=np.int64), reasons)


def _schema_file(schema_id: int, path: Path) -> Any:
    where = f"source.avro.schemas[{schema_id}]"
    try:
        return parse_schema(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {path} is not an Avro schema (.avsc JSON): {exc}") \
            from None
