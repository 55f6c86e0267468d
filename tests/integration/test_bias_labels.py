"""Bias drift of the joined pairs on a real broker: `streamdrift run` on a predictions topic
and a labels topic, model m1 with the facets sex and age_band and binary labels (its
reference carries them inline).

After 20,000 clean events, ``sex=f`` (45 % of the traffic) loses 0.2 of recall while its
positive prediction rate stays (its false positives rise): a change only the labels show.
A bias episode naming ``sex=f`` opens (drift-events record with column ``bias``, the
recall detector among its detectors, ``streamdrift_bias_label_drift_active`` for recall);
the other facet (age) opens none, nothing opens on labels of the clean part, and the
positive rates' detector (DPPL) stays silent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.config import load_config
from stream.engine.baselines import resolve_baselines
from tests.integration.test_segments import _read_topic
from tests.support.biaslabels import (
    labelled_bias_model,
    labelled_facets,
    write_labelled_reference,
)
from tests.support.configs import DETECTION, write_config
from tests.support.kafka import produce
from tests.support.metrics import promtool_check_metrics, sample, samples
from tests.support.ports import free_port
from tests.support.processes import StreamdriftRun
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CLEAN, SHIFTED = 20_000, 30_000


def _config(folder: Path, bootstrap: str, topic: str, labels: str, port: int) -> Path:
    write_labelled_reference(folder / "reference.jsonl")
    config = {
        "source": {"kafka": {"bootstrap_servers": bootstrap, "topics": [topic],
                             "group_id": f"g-{topic}", "auto_offset_reset": "earliest",
                             "max_poll_records": 1000, "poll_timeout_ms": 200},
                   "timestamp": {"path": "ts", "unit": "s"},
                   "drift_events": {"topic": f"{topic}-drift"}},
        "models": [labelled_bias_model(labels, window=5_000)],
        "detection": dict(DETECTION),
        "metrics": {"port": port, "host": "127.0.0.1"},
        "state": {"topic": f"{topic}-state", "checkpoint_interval_s": 2},
    }
    path = write_config(folder / "biaslabels.yaml", config)
    resolve_baselines(load_config(path))  # build and cache the model's baseline here
    return path


def test_a_recall_drop_of_one_facet_value_opens_a_bias_episode_naming_it(
        kafka_bootstrap, make_topic, tmp_path):
    topic, labels = make_topic(partitions=1), make_topic(partitions=1)
    port = free_port()
    cfg = _config(tmp_path, kafka_bootstrap, topic, labels, port)
    parts = [labelled_facets(CLEAN, 41),
             labelled_facets(SHIFTED, 42, start=CLEAN, shift_value="f", recall_shift=-0.2,
                             keep_rate=True)]
    for s in parts:
        produce(kafka_bootstrap, topic, s.events(), linger_ms=10)
        produce(kafka_bootstrap, labels, s.labels(), linger_ms=10)
    f = {"model": "m1", "facet": "sex", "value": "f", "measure": "recall"}
    run = StreamdriftRun(cfg, port=port, name="run1")
    try:
        run.wait_consumed(CLEAN + SHIFTED, timeout=150, interval=0.5)
        wait_for(lambda: [v for v in _read_topic(kafka_bootstrap, f"{topic}-drift")
                          if v.get("segment") == "sex=f" and v["type"] == "open"], 60,
                 "the open record of sex=f's bias episode", alive=run.check_alive,
                 details=run.log_tail)
        wait_for(lambda: sample(samples(run.scrape()), "streamdrift_bias_label_drift_active",
                                **f) == 1, 30, "sex=f's recall detector alarming",
                 alive=run.check_alive, details=run.log_tail)
        text = run.scrape()
        s = samples(text)
        assert sample(s, "streamdrift_bias_label_drift_score", **f) >= 1
        # f's recall fell: the rest's recall minus f's grew by about 0.2
        assert sample(s, "streamdrift_bias_label_difference", **f) > sample(
            s, "streamdrift_bias_baseline_label_difference", **f) + 0.1
        assert sample(s, "streamdrift_bias_label_rate", **f) == pytest.approx(0.6, abs=0.07)
        active = {labels_: v for (name, labels_), v in s.items()
                  if name == "streamdrift_bias_label_drift_active"}
        assert len(active) == (3 + 4) * 2  # (sex: f, m, x; age: four bands) x 2 measures
        assert not [k for k, v in active.items() if v and "age" in str(k)], active
        dppl = {labels_: v for (name, labels_), v in s.items()
                if name == "streamdrift_bias_drift_active"}
        assert dppl and not any(dppl.values()), dppl  # positive rates unchanged
        chk = promtool_check_metrics(text)
        assert chk.returncode == 0 and not chk.stdout.strip(), chk.stdout + chk.stderr
        alarms = run.logs("bias drift alarm on the joined pairs")
        assert alarms and all(a["segment"].startswith("sex=") for a in alarms), alarms
        clean_end = float(parts[1].ts[0])  # labels of the clean part come before
        assert min(a["label_event_time"] for a in alarms) >= clean_end, alarms
        assert any(a["segment"] == "sex=f" and a["detector"] == "recall_diff"
                   for a in alarms), alarms
    finally:
        run.stop(check=True)
    records = _read_topic(kafka_bootstrap, f"{topic}-drift")
    opens = [v for v in records if v["type"] == "open" and v.get("segment")]
    assert any(v["segment"] == "sex=f" and v["column"] == "bias" for v in opens), records
    assert all(v["segment"].startswith("sex=") for v in opens), records

    # restart: the join (its waiting predictions with their facets) and the facets' label
    # monitors come back from the final checkpoint, the episode open (no second open record)
    run2 = StreamdriftRun(cfg, port=port, name="run2")
    try:
        run2.wait_serving(60)
        wait_for(lambda: run2.logs("state restored") and sample(
            samples(run2.scrape()), "streamdrift_bias_label_drift_active", **f) == 1, 30,
            "sex=f's recall episode restored open", alive=run2.check_alive,
            details=run2.log_tail)
        more = labelled_facets(5_000, 43, start=CLEAN + SHIFTED, shift_value="f",
                               recall_shift=-0.2, keep_rate=True)
        produce(kafka_bootstrap, topic, more.events(), linger_ms=10)
        produce(kafka_bootstrap, labels, more.labels(), linger_ms=10)
        run2.wait_consumed(5_000, timeout=60, interval=0.5)
        wait_for(lambda: sample(samples(run2.scrape()), "streamdrift_labels_total",
                                model="m1", outcome="joined") >= 5_000, 30,
                 "the new labels joined", alive=run2.check_alive, details=run2.log_tail)
    finally:
        run2.stop(check=True)
    records = _read_topic(kafka_bootstrap, f"{topic}-drift")
    again = [v for v in records if v["type"] == "open" and v.get("segment") == "sex=f"]
    assert len(again) == 1, records
