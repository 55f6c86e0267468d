"""Bias drift on a real broker: `streamdrift run` with ``bias: {facets: [applicant.sex,
applicant.age_band]}`` on model m1.

The positive prediction rate of ``sex=f`` (45 % of the traffic) rising by 0.1 after 20,000
clean events opens a bias drift episode naming ``sex=f`` first (drift-events record with
column ``bias`` and ``segment: sex=f``, log line, ``streamdrift_bias_drift_active``); the
other facet (age) opens none, and nothing opens before the change.  The facets' state is
checkpointed: after a restart the episode is restored open (no second open record).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stream.config import load_config
from stream.engine.baselines import resolve_baselines
from tests.integration.test_segments import _read_topic
from tests.support.bias import bias_events, bias_model, write_reference
from tests.support.configs import DETECTION, write_config
from tests.support.kafka import produce
from tests.support.metrics import promtool_check_metrics, sample, samples
from tests.support.ports import free_port
from tests.support.processes import StreamdriftRun
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CLEAN, SHIFTED = 20_000, 30_000


def _config(folder: Path, bootstrap: str, topic: str, port: int) -> Path:
    write_reference(folder / "reference.jsonl")
    config = {
        "source": {"kafka": {"bootstrap_servers": bootstrap, "topics": [topic],
                             "group_id": f"g-{topic}", "auto_offset_reset": "earliest",
                             "max_poll_records": 1000, "poll_timeout_ms": 200},
                   "drift_events": {"topic": f"{topic}-drift"}},
        "models": [bias_model(window=10_000)],
        "detection": dict(DETECTION),
        "metrics": {"port": port, "host": "127.0.0.1"},
        "state": {"topic": f"{topic}-state", "checkpoint_interval_s": 2},
    }
    path = write_config(folder / "bias.yaml", config)
    resolve_baselines(load_config(path))  # build and cache the model's baseline here
    return path


def test_a_facet_value_s_positive_rate_moving_opens_an_episode_naming_it(
        kafka_bootstrap, make_topic, tmp_path):
    topic = make_topic(partitions=1)
    port = free_port()
    cfg = _config(tmp_path, kafka_bootstrap, topic, port)
    produce(kafka_bootstrap, topic, bias_events(CLEAN, 21), linger_ms=10)
    produce(kafka_bootstrap, topic, bias_events(SHIFTED, 22, shift_value="f", shift=0.1),
            linger_ms=10)
    f = {"model": "m1", "facet": "sex", "value": "f"}
    run = StreamdriftRun(cfg, port=port, name="run1")
    try:
        run.wait_consumed(CLEAN + SHIFTED, timeout=120, interval=0.5)
        wait_for(lambda: [v for v in _read_topic(kafka_bootstrap, f"{topic}-drift")
                          if v.get("segment") == "sex=f" and v["type"] == "open"], 20,
                 "the open record of sex=f's bias episode", alive=run.check_alive,
                 details=run.log_tail)
        text = run.scrape()
        s = samples(text)
        assert sample(s, "streamdrift_bias_drift_active", **f) == 1
        assert sample(s, "streamdrift_bias_drift_score", **f) >= 1
        assert sample(s, "streamdrift_bias_dppl", **f) < sample(
            s, "streamdrift_bias_baseline_dppl", **f) - 0.05  # f gained on the rest
        assert sample(s, "streamdrift_bias_events_total", model="m1", facet="sex") == \
            CLEAN + SHIFTED
        active = {labels: v for (name, labels), v in s.items()
                  if name == "streamdrift_bias_drift_active"}
        assert len(active) == 3 + 4  # sex: f, m, x; age: four bands
        assert not [k for k, v in active.items() if v and "age" in str(k)], active
        chk = promtool_check_metrics(text)
        assert chk.returncode == 0 and not chk.stdout.strip(), chk.stdout + chk.stderr
        alarms = [a for a in run.logs("drift alarm") if a.get("segment")]
        assert alarms and min(a["offset"] for a in alarms) >= CLEAN, alarms
        assert min(alarms, key=lambda a: a["offset"])["segment"] == "sex=f", alarms
    finally:
        run.stop(check=True)
    records = _read_topic(kafka_bootstrap, f"{topic}-drift")
    opens = [v for v in records if v["type"] == "open" and v.get("segment")]
    assert opens and opens[0]["segment"] == "sex=f" and opens[0]["column"] == "bias", records
    assert all(v["segment"].startswith("sex=") for v in opens), records
    assert opens[0]["open_offset"] >= CLEAN

    # restart: the facets' state comes back from the final checkpoint, episode open
    run2 = StreamdriftRun(cfg, port=port, name="run2")
    try:
        run2.wait_serving(60)

        def restored() -> Any:
            s = samples(run2.scrape())
            open_ = sample(s, "streamdrift_bias_drift_active", **f) == 1
            return s if run2.logs("state restored") and open_ else None

        wait_for(restored, 30, "sex=f's bias episode restored open", alive=run2.check_alive,
                 details=run2.log_tail)
        produce(kafka_bootstrap, topic, bias_events(5_000, 23, shift_value="f", shift=0.1))
        run2.wait_consumed(5_000, timeout=60, interval=0.5)
    finally:
        run2.stop(check=True)
    records = _read_topic(kafka_bootstrap, f"{topic}-drift")
    again = [v for v in records if v["type"] == "open" and v.get("segment") == "sex=f"]
    assert len(again) == 1, records
