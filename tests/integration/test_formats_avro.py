"""``source.format: avro`` against the real broker: Confluent wire-format records with the
writer schema from a file, a drift of x1 found, bad messages counted, the stream going on."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.avro import M1_SCHEMA, to_wire
from tests.support.configs import m1_config, write_config
from tests.support.events import CLEAN, COLUMNS, SHIFTED, m1_events
from tests.support.kafka import produce
from tests.support.runs import InProcess, cached_baselines

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

BAD = [b'{"model": "m1"}', b"\x00\x00\x00\x00\x09garbage", b"\x00\x00\x00\x00\x07"]


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_avro_records_from_the_broker(kafka_bootstrap, kafka_topic, tmp_path: Path,
                                      client: str) -> None:
    # the reference: the same records as JSON lines (a .jsonl reference of the avro format)
    (tmp_path / "reference.jsonl").write_bytes(
        b"\n".join(m1_events(21, [(5_000, CLEAN)], COLUMNS)))
    (tmp_path / "m1-v1.avsc").write_text(json.dumps(M1_SCHEMA))
    cfg = m1_config(bootstrap=kafka_bootstrap, topic=kafka_topic, group=f"{kafka_topic}-g",
                    port=0, kafka={"poll_timeout_ms": 200, "client": client},
                    state={"enabled": False})
    cfg["source"].update(format="avro", avro={"schemas": {7: "m1-v1.avsc"}})
    path = write_config(tmp_path / "avro.yaml", cfg)
    records = to_wire(7, m1_events(22, [(2_000, CLEAN), (2_000, SHIFTED)], COLUMNS))
    produce(kafka_bootstrap, kafka_topic, records[:1000] + BAD + records[1000:], linger_ms=10)
    run = InProcess(path, cached_baselines(), "avro").start()
    try:
        deadline = time.monotonic() + 120
        while run.pipeline.consumed < len(records) + len(BAD) and time.monotonic() < deadline:
            assert run.alive()
            time.sleep(0.2)
    finally:
        run.stop()
    snap = run.pipeline.snapshot()
    assert snap.consumed == len(records) + len(BAD), run.describe()
    assert snap.invalid == {"invalid_avro": 2, "unknown_schema": 1}
    assert snap.models["m1"].processed == len(records)
    assert snap.models["m1"].columns["x1"].values == len(records)
    alarms = {(a.feature, a.detector) for a in run.pipeline.recent_alarms}
    assert any(f == "x1" for f, _ in alarms), alarms
    assert min(a.index for a in run.pipeline.recent_alarms if a.feature == "x1") > 2_000
