"""Events of model ``m1`` (:mod:`tests.support.events`) as Avro records in the Confluent
wire format: :data:`M1_SCHEMA` (every field nullable), :func:`wire` and :func:`to_wire`."""

from __future__ import annotations

import io
from typing import Any

import orjson

M1_SCHEMA: dict[str, Any] = {
    "type": "record", "name": "InferenceEvent", "namespace": "streamdrift.test",
    "fields": [
        {"name": "model", "type": "string"},
        {"name": "ts", "type": ["null", "double"], "default": None},
        {"name": "f", "type": {"type": "record", "name": "Features", "fields": [
            {"name": "x1", "type": ["null", "double"], "default": None},
            {"name": "x2", "type": ["null", "double"], "default": None},
            {"name": "c1", "type": ["null", "string"], "default": None},
            {"name": "c2", "type": ["null", "string"], "default": None}]}},
        {"name": "p", "type": ["null", {"type": "record", "name": "Prediction", "fields": [
            {"name": "score", "type": ["null", "double"], "default": None}]}],
         "default": None},
    ],
}


def wire(schema_id: int, schema: Any, record: dict[str, Any]) -> bytes:
    """``record`` written with ``schema`` in the Confluent wire format."""
    import fastavro

    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    return b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()


def to_wire(schema_id: int, events: list[bytes]) -> list[bytes]:
    """JSON events of model m1 as wire-format Avro records of :data:`M1_SCHEMA`."""
    import fastavro

    parsed = fastavro.parse_schema(M1_SCHEMA)
    out = []
    for e in events:
        body = io.BytesIO()
        fastavro.schemaless_writer(body, parsed, orjson.loads(e))
        out.append(b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue())
    return out
