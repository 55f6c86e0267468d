"""`streamdrift run` against a real Kafka broker: a correlation flip between two features,
with every marginal unchanged, opens one episode of the multivariate group and none on
its columns (issue 19)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import multivariate as mv
from tests.support.configs import write_config
from tests.support.kafka import produce
from tests.support.metrics import promtool_check_metrics, sample, samples, scrape
from tests.support.ports import free_port
from tests.support.processes import StreamdriftRun

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

N_CLEAN, N_FLIP = 10_000, 5_000


def test_a_correlation_flip_opens_a_group_episode_and_no_column_episode(
        kafka_bootstrap: str, make_topic, tmp_path: Path) -> None:
    topic = make_topic(partitions=1)
    mv.write_reference(tmp_path / "reference.jsonl")
    port = free_port()
    config = mv.config(
        "reference.jsonl",
        detection={"false_alarm_events": 10_000_000, "window": 500, "cadence": 50},
        kafka={"bootstrap_servers": kafka_bootstrap, "topics": [topic],
               "group_id": f"g-{topic}", "auto_offset_reset": "earliest",
               "max_poll_records": 1000, "poll_timeout_ms": 200})
    config["metrics"] = {"port": port, "host": "127.0.0.1"}
    path = write_config(tmp_path / "mv.yaml", config)
    messages = mv.events(7, [(N_CLEAN, 0.8), (N_FLIP, -0.8)])
    produce(kafka_bootstrap, topic, messages, linger_ms=10)

    run = StreamdriftRun(path, port=port)
    try:
        run.wait_consumed(len(messages), timeout=240, interval=0.5)
        text = scrape(port)
    finally:
        run.stop(check=True)
    alarms = run.logs("drift alarm")
    assert [(a["feature"], a["detector"]) for a in alarms] == [("joint", "joint")], alarms
    assert N_CLEAN <= alarms[0]["index"] < N_CLEAN + 300, alarms[0]
    assert alarms[0]["partition"] == 0 and alarms[0]["topic"] == topic

    s = samples(text)
    assert sample(s, "streamdrift_multivariate_active", model=mv.MODEL, group="joint") == 1
    assert sample(s, "streamdrift_multivariate_alarms_total", model=mv.MODEL,
                  group="joint") == 1
    assert sample(s, "streamdrift_multivariate_rows_total", model=mv.MODEL,
                  group="joint") == len(messages)
    column_alarms = {dict(k[1])["feature"]: v for k, v in s.items()
                     if k[0] == "streamdrift_drift_alarms_total"}
    assert set(column_alarms) == set(mv.FEATURES) and not any(column_alarms.values()), \
        column_alarms
    chk = promtool_check_metrics(text)
    assert chk.returncode == 0 and not chk.stdout.strip(), chk.stdout + chk.stderr
