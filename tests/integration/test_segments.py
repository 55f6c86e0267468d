"""Segments on a real broker: `streamdrift run` with ``segments: [region]`` on model m1.

A +1 sd shift of x1 in region d (5 % of the traffic) opens a drift episode naming
``region=d`` (drift-events record, log line, ``streamdrift_segment_drift_active``), and no
other segment opens one.  The segment state is checkpointed: after a restart the episode
is restored open (no second open record) and the segment's event counts go on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stream.broker import read_to_end
from stream.config import load_config
from stream.engine.baselines import resolve_baselines
from stream.engine.pipeline import Pipeline
from tests.support.configs import DETECTION, write_config
from tests.support.kafka import produce
from tests.support.metrics import promtool_check_metrics, sample, samples
from tests.support.ports import free_port
from tests.support.processes import StreamdriftRun
from tests.support.segments import segment_events, segment_model, write_reference
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CLEAN, SHIFTED = 20_000, 40_000


def _read_topic(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [json.loads(v) for vs in read_to_end(bootstrap, topic, values_only=True).values()
            for v in vs]


def _config(folder: Path, bootstrap: str, topic: str, port: int) -> Path:
    write_reference(folder / "reference.jsonl")
    config = {
        "source": {"kafka": {"bootstrap_servers": bootstrap, "topics": [topic],
                             "group_id": f"g-{topic}", "auto_offset_reset": "earliest",
                             "max_poll_records": 1000, "poll_timeout_ms": 200},
                   "drift_events": {"topic": f"{topic}-drift"}},
        "models": [segment_model(columns=["x1", "x2"])],
        "detection": dict(DETECTION),
        "metrics": {"port": port, "host": "127.0.0.1"},
        "state": {"topic": f"{topic}-state", "checkpoint_interval_s": 2},
    }
    path = write_config(folder / "segments.yaml", config)
    # build (and cache) the baselines here, so that the runs start at once
    cfg = load_config(path)
    Pipeline(cfg, resolve_baselines(cfg))
    return path


def test_a_shift_in_one_segment_opens_an_episode_naming_it_and_no_other(
        kafka_bootstrap, make_topic, tmp_path):
    topic = make_topic(partitions=1)
    port = free_port()
    cfg = _config(tmp_path, kafka_bootstrap, topic, port)
    produce(kafka_bootstrap, topic, segment_events(CLEAN, 21), linger_ms=10)
    produce(kafka_bootstrap, topic, segment_events(SHIFTED, 22, shift_region="d", shift=1.0,
                                                   start_ts=1.8e9), linger_ms=10)
    d_x1 = {"model": "m1", "segment": "region=d", "feature": "x1", "role": "feature"}
    run = StreamdriftRun(cfg, port=port, name="run1")
    try:
        run.wait_consumed(CLEAN + SHIFTED, timeout=120, interval=0.5)
        wait_for(lambda: [v for v in _read_topic(kafka_bootstrap, f"{topic}-drift")
                          if v.get("segment") == "region=d" and v["type"] == "open"], 20,
                 "the open record of region d's episode", alive=run.check_alive,
                 details=run.log_tail)
        text = run.scrape()
        s = samples(text)
        assert sample(s, "streamdrift_segment_drift_active", **d_x1) == 1
        assert sample(s, "streamdrift_segment_drift_score", **d_x1) > 0
        active = {labels: v for (name, labels), v in s.items()
                  if name == "streamdrift_segment_drift_active"}
        assert len(active) == 5 * 2  # a, b, c, d, other x (x1, x2)
        assert sum(active.values()) == 1, active
        n_d = sample(s, "streamdrift_segment_events_total", model="m1", segment="region=d")
        assert 0.04 * (CLEAN + SHIFTED) < n_d < 0.06 * (CLEAN + SHIFTED)
        chk = promtool_check_metrics(text)
        assert chk.returncode == 0 and not chk.stdout.strip(), chk.stdout + chk.stderr
        alarms = run.logs("drift alarm")
        assert {a.get("segment") for a in alarms if a.get("segment")} == {"region=d"}
        first = min(a["offset"] for a in alarms if a.get("segment") == "region=d")
        assert first >= CLEAN, "no segment alarm before the shift"
    finally:
        run.stop(check=True)
    records = _read_topic(kafka_bootstrap, f"{topic}-drift")
    opens = [v for v in records if v["type"] == "open" and v.get("segment")]
    assert [(v["segment"], v["column"]) for v in opens] == [("region=d", "x1")], records
    assert opens[0]["open_offset"] >= CLEAN

    # restart: the segment state comes back from the final checkpoint, episode open
    run2 = StreamdriftRun(cfg, port=port, name="run2")
    try:
        run2.wait_serving(60)
        def restored() -> Any:
            s = samples(run2.scrape())
            open_ = sample(s, "streamdrift_segment_drift_active", **d_x1) == 1
            return s if run2.logs("state restored") and open_ else None

        # (the first assignment may be revoked and restored again while the group settles)
        s2 = wait_for(restored, 30, "region d's episode restored open",
                      alive=run2.check_alive, details=run2.log_tail)
        # nothing new consumed: the restored monitors hold the events, this process none
        assert sample(s2, "streamdrift_segment_events_total", model="m1",
                      segment="region=d") == 0
        produce(kafka_bootstrap, topic, segment_events(5_000, 23, shift_region="d",
                                                       shift=1.0, start_ts=1.9e9))
        run2.wait_consumed(5_000, timeout=60, interval=0.5)
    finally:
        run2.stop(check=True)
    records = _read_topic(kafka_bootstrap, f"{topic}-drift")
    opens = [v for v in records if v["type"] == "open" and v.get("segment")]
    assert [(v["segment"], v["column"]) for v in opens] == [("region=d", "x1")], records
