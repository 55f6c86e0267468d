"""``source.format: avro``: the Confluent wire format, schema files and a registry client."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.config import ConfigError, parse_config
from stream.formats import avro as avro_module
from stream.formats.avro import AvroDecoder
from stream.formats.json import BatchDecoder
from tests.support.avro import M1_SCHEMA, to_wire, wire
from tests.support.events import CLEAN, SHIFTED, m1_events
from tests.support.ports import free_port

M1 = {"name": "m1", "select": {"field": "model", "equals": "m1"},
      "baseline": {"file": "b.json"},
      "features": [{"name": "x1", "path": "f.x1", "type": "numeric"},
                   {"name": "x2", "path": "f.x2", "type": "numeric"},
                   {"name": "c1", "path": "f.c1", "type": "categorical"}],
      "predictions": [{"name": "score", "path": "p.score", "type": "numeric"}]}


def _config(avro: dict[str, Any], base: Path | str = "/", **source: Any) -> Any:
    return parse_config({"source": {"format": "avro", "avro": avro, **source},
                         "models": [M1]}, base)


@pytest.fixture
def schema_file(tmp_path: Path) -> Path:
    path = tmp_path / "m1-v1.avsc"
    path.write_text(json.dumps(M1_SCHEMA))
    return path


def test_records_decode_like_the_same_json_events(schema_file: Path) -> None:
    events = m1_events(3, [(300, CLEAN), (300, SHIFTED)])
    avro = AvroDecoder(_config({"schemas": {5: schema_file.name}}, schema_file.parent))
    got = avro.decode(to_wire(5, events))
    want = BatchDecoder(parse_config({"models": [M1]}, "/")).decode(events)
    assert got.invalid == {} and got.n_events == 600
    a, b = got.models["m1"], want.models["m1"]
    assert a.positions.tolist() == b.positions.tolist()
    for name in ("x1", "x2", "score"):
        np.testing.assert_array_equal(a.columns[name], b.columns[name])
    assert a.columns["c1"].tolist() == b.columns["c1"].tolist()


def test_bad_messages_are_counted_by_reason(schema_file: Path) -> None:
    dec = AvroDecoder(_config({"schemas": {5: str(schema_file)}}, "/",
                              max_message_bytes=1000))
    good = to_wire(5, m1_events(1, [(3, CLEAN)]))
    messages = [good[0], b'{"model": "m1"}', b"\x00\x00",
                b"\x00" + (9).to_bytes(4, "big") + good[1][5:], good[1][:12],
                b"\x00" * 2000, None, good[2],
                wire(5, M1_SCHEMA, {"model": "other", "f": {}}),
                # written with another schema than its id names: its body does not read
                wire(5, {"type": "record", "name": "Other", "fields": [
                    {"name": "model", "type": "string"}]}, {"model": "m1"})]
    batch = dec.decode(messages)
    assert batch.invalid == {"invalid_avro": 5, "oversized": 1, "unknown_model": 1,
                             "unknown_schema": 1}
    assert batch.invalid_positions.tolist() == [1, 2, 3, 4, 5, 6, 8, 9]
    assert batch.invalid_reasons[2] == "unknown_schema"
    assert batch.models["m1"].positions.tolist() == [0, 7]


def test_logical_timestamps_are_plain_numbers(tmp_path: Path) -> None:
    schema = {"type": "record", "name": "T", "fields": [
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "x", "type": "double"}]}
    cfg = parse_config({"source": {"format": "avro", "avro": {"registry_url": "http://r"},
                                   "timestamp": {"path": "ts", "unit": "ms"}},
                        "models": [{"name": "m", "baseline": {"file": "b.json"},
                                    "features": [{"name": "x", "path": "x",
                                                  "type": "numeric"}]}]}, "/")
    dec = AvroDecoder(cfg, schemas={1: schema})
    mb = dec.decode([wire(1, _plain(schema), {"ts": 1_700_000_000_123, "x": 2.0})]).models["m"]
    assert mb.timestamps is not None and mb.timestamps.tolist() == [1_700_000_000.123]


def _plain(schema: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(schema))
    del out["fields"][0]["type"]["logicalType"]
    return out


class _Registry(BaseHTTPRequestHandler):
    """Confluent's schema-registry API, ``GET /schemas/ids/{id}`` only."""

    schemas: dict[int, str] = {}
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.hits.append(self.path)
        parts = self.path.strip("/").split("/")
        sid = int(parts[-1]) if parts[-1].isdigit() else -1
        if parts[:2] != ["schemas", "ids"] or sid not in self.schemas:
            body, code = b'{"error_code": 40403, "message": "Schema not found"}', 404
        else:
            body, code = json.dumps({"schema": self.schemas[sid]}).encode(), 200
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[str]:
    _Registry.schemas = {5: json.dumps(M1_SCHEMA)}
    _Registry.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_schemas_come_from_the_registry_once(registry: str, monkeypatch) -> None:
    now = [0.0]
    dec = AvroDecoder(_config({"registry_url": registry + "/"}))
    assert dec.registry is not None
    dec.registry._clock = lambda: now[0]
    messages = to_wire(5, m1_events(2, [(50, CLEAN)])) + to_wire(6, m1_events(2, [(2, CLEAN)]))
    first = dec.decode(messages)
    second = dec.decode(messages)
    assert first.n_events == second.n_events == 50
    assert first.invalid == second.invalid == {"unknown_schema": 2}
    # id 5 once; the unknown id 6 once, not again within the retry interval
    assert _Registry.hits == ["/schemas/ids/5", "/schemas/ids/6"]
    _Registry.schemas[6] = json.dumps(M1_SCHEMA)
    now[0] = avro_module.RETRY_S + 1
    assert dec.decode(messages).invalid == {}
    assert _Registry.hits[-1] == "/schemas/ids/6" and len(_Registry.hits) == 3


def test_an_unreachable_registry_rejects_and_does_not_stop() -> None:
    dec = AvroDecoder(_config({"registry_url": f"http://127.0.0.1:{free_port()}",
                               "timeout_s": 0.5}))
    batch = dec.decode(to_wire(5, m1_events(2, [(3, CLEAN)])))
    assert batch.invalid == {"unknown_schema": 3} and batch.n_events == 0


@pytest.mark.parametrize(("avro", "key"), [
    ({}, "source.avro"),
    ({"registry_url": "registry:8081"}, "source.avro.registry_url"),
    ({"schemas": {"x": "a.avsc"}}, "source.avro.schemas.x"),
    ({"schemas": {1: "missing.avsc"}}, "source.avro.schemas[1]"),
])
def test_bad_configuration_names_the_key(avro: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        _config(avro)
    assert f"{key}:" in str(err.value)


def test_a_bad_schema_file_fails_at_start_up(tmp_path: Path) -> None:
    (tmp_path / "bad.avsc").write_text('{"type": "recordx", "name": "X"}')
    with pytest.raises(ConfigError, match=r"source.avro.schemas\[1\]: .*not an Avro schema"):
        AvroDecoder(_config({"schemas": {1: "bad.avsc"}}, tmp_path))


@settings(max_examples=200, deadline=None)
@given(bodies=st.lists(st.binary(max_size=40), max_size=12),
       headers=st.lists(st.sampled_from([b"\x00\x00\x00\x00\x05", b"\x00\x00\x00\x00\x06",
                                         b"\x01\x00\x00\x00\x05", b""]), min_size=1))
def test_hostile_bytes_never_raise(bodies: list[bytes], headers: list[bytes]) -> None:
    dec = AvroDecoder(_config({"registry_url": "http://127.0.0.1:9"}),
                      schemas={5: M1_SCHEMA})
    assert dec.registry is not None
    dec.registry._failed[6] = float("inf")  # never asked: no registry listens there
    messages = [headers[i % len(headers)] + b for i, b in enumerate(bodies)]
    got = dec.decode(messages)
    assert len(got.invalid_reasons) + got.n_valid == len(messages)
    assert got.models["m1"].n_events <= len(messages)
