"""`streamdrift run` against a real Kafka broker: a change in the share of one cluster of a
64-d embedding column (12.5 % -> 25 %) opens one episode of the vector column and none on
the model's other column; malformed vectors are counted by reason (issue 19 item 2)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.support import embeddings as em
from tests.support.configs import write_config
from tests.support.kafka import produce
from tests.support.metrics import promtool_check_metrics, sample, samples, scrape
from tests.support.ports import free_port
from tests.support.processes import StreamdriftRun

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

N_CLEAN, N_SHIFT = 8_000, 4_000


def test_a_cluster_share_change_opens_a_vector_episode_and_no_column_episode(
        kafka_bootstrap: str, make_topic, tmp_path: Path) -> None:
    topic = make_topic(partitions=1)
    em.write_reference(tmp_path / "reference.jsonl")
    port = free_port()
    config = em.config(
        "reference.jsonl",
        detection={"false_alarm_events": 10_000_000, "window": 500, "cadence": 50},
        kafka={"bootstrap_servers": kafka_bootstrap, "topics": [topic],
               "group_id": f"g-{topic}", "auto_offset_reset": "earliest",
               "max_poll_records": 1000, "poll_timeout_ms": 200})
    config["metrics"] = {"port": port, "host": "127.0.0.1"}
    path = write_config(tmp_path / "emb.yaml", config)
    clean = em.events(7, [(N_CLEAN, None)])
    bad = [orjson.dumps({"model": em.MODEL, "f": {"x": 0.0, "emb": [1.0] * 10}}),
           orjson.dumps({"model": em.MODEL, "f": {"x": 0.0, "emb": None}})]
    shifted = em.events(8, [(N_SHIFT, em.SHIFTED_SHARE)])
    messages = clean + bad + shifted
    produce(kafka_bootstrap, topic, messages, linger_ms=10)

    run = StreamdriftRun(path, port=port)
    try:
        run.wait_consumed(len(messages), timeout=240, interval=0.5)
        text = scrape(port)
    finally:
        run.stop(check=True)
    alarms = run.logs("drift alarm")
    assert [(a["feature"], a["detector"]) for a in alarms] == [("emb", "embedding")], alarms
    start = N_CLEAN + len(bad)
    assert start <= alarms[0]["index"] < start + 3_000, alarms[0]
    assert alarms[0]["partition"] == 0 and alarms[0]["topic"] == topic

    s = samples(text)
    assert sample(s, "streamdrift_vector_drift_active", model=em.MODEL, column="emb") == 1
    assert sample(s, "streamdrift_vector_episodes_total", model=em.MODEL, column="emb") == 1
    assert sample(s, "streamdrift_vector_rows_total", model=em.MODEL,
                  column="emb") == N_CLEAN + N_SHIFT
    for reason in ("wrong_dimension", "missing"):
        assert sample(s, "streamdrift_vector_malformed_total", model=em.MODEL, column="emb",
                      reason=reason) == 1
    column_alarms = {dict(k[1])["feature"]: v for k, v in s.items()
                     if k[0] == "streamdrift_drift_alarms_total"}
    assert set(column_alarms) == {"x"} and not any(column_alarms.values()), column_alarms
    chk = promtool_check_metrics(text)
    assert chk.returncode == 0 and not chk.stdout.strip(), chk.stdout + chk.stderr


def test_oip_tensors_of_embeddings_open_a_vector_episode(kafka_bootstrap: str, make_topic,
                                                         tmp_path: Path) -> None:
    """The same change in OIP requests (source.format open-inference): the vectors are the
    rows of a [10, 64] tensor, the reference a JSONL file of requests; a request whose
    tensor is [10, 32] counts 10 wrong_dimension vectors and the stream goes on."""
    topic = make_topic(partitions=1)
    rows = 10
    (tmp_path / "reference.jsonl").write_bytes(
        b"\n".join(em.oip_requests(99, [(10_000, None)], rows=rows)))
    port = free_port()
    config = em.oip_config(
        "reference.jsonl",
        detection={"false_alarm_events": 10_000_000, "window": 500, "cadence": 50},
        bootstrap_servers=kafka_bootstrap, topics=[topic], group_id=f"g-{topic}",
        auto_offset_reset="earliest", max_poll_records=200, poll_timeout_ms=200)
    config["metrics"] = {"port": port, "host": "127.0.0.1"}
    path = write_config(tmp_path / "oip.yaml", config)
    clean = em.oip_requests(7, [(N_CLEAN, None)], rows=rows)
    wrong = orjson.loads(clean[0])
    wrong["id"] = "wrong-dim"
    wrong["inputs"][1] |= {"shape": [rows, 32], "data": [0.0] * (rows * 32)}
    shifted = em.oip_requests(8, [(N_SHIFT, em.SHIFTED_SHARE)], rows=rows)
    messages = clean + [orjson.dumps(wrong)] + shifted
    produce(kafka_bootstrap, topic, messages, linger_ms=10)

    run = StreamdriftRun(path, port=port)
    try:
        # consumed counts messages; every request is one message of 10 rows
        run.wait_consumed(len(messages), timeout=240, interval=0.5)
        text = scrape(port)
    finally:
        run.stop(check=True)
    alarms = run.logs("drift alarm")
    assert [(a["feature"], a["detector"]) for a in alarms] == [("emb", "embedding")], alarms
    start = len(clean) + 1  # the offset of the first shifted request
    assert start <= alarms[0]["index"] < start + 3_000 // rows, alarms[0]

    s = samples(text)
    assert sample(s, "streamdrift_vector_drift_active", model=em.MODEL, column="emb") == 1
    assert sample(s, "streamdrift_vector_rows_total", model=em.MODEL,
                  column="emb") == N_CLEAN + N_SHIFT
    assert sample(s, "streamdrift_vector_malformed_total", model=em.MODEL, column="emb",
                  reason="wrong_dimension") == rows
    column_alarms = {dict(k[1])["feature"]: v for k, v in s.items()
                     if k[0] == "streamdrift_drift_alarms_total"}
    assert set(column_alarms) == {"x"} and not any(column_alarms.values()), column_alarms
