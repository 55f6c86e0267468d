"""Attribution drift and root cause on a real broker (#16 items 3-4): `streamdrift run` on
model attr (a linear model whose events carry exact SHAP values at explanation.shap).

Feature x1 shifts by +2 sd after N_CLEAN events: its attributions grow past x0's (the
attribution ranking changes: an episode of the attribution test), and the prediction
drifts because of it: the prediction's episode names x1 first in its root cause (log
line, drift-events record, ``streamdrift_root_cause``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_segments import _read_topic
from tests.support import attribution as at
from tests.support.configs import write_config
from tests.support.kafka import produce
from tests.support.metrics import promtool_check_metrics, sample, samples, scrape
from tests.support.ports import free_port
from tests.support.processes import StreamdriftRun

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

N_CLEAN, N_SHIFT = 10_000, 5_000


def test_a_feature_shift_opens_attribution_drift_and_names_the_feature_as_root_cause(
        kafka_bootstrap: str, make_topic, tmp_path: Path) -> None:
    topic = make_topic(partitions=1)
    at.write_reference(tmp_path / "reference.jsonl")
    port = free_port()
    config = at.config(
        "reference.jsonl",
        detection={"false_alarm_events": 10_000_000, "window": 500, "cadence": 50},
        kafka={"bootstrap_servers": kafka_bootstrap, "topics": [topic],
               "group_id": f"g-{topic}", "auto_offset_reset": "earliest",
               "max_poll_records": 1000, "poll_timeout_ms": 200},
        drift_events={"topic": f"{topic}-drift"})
    config["metrics"] = {"port": port, "host": "127.0.0.1"}
    path = write_config(tmp_path / "attr.yaml", config)
    messages = at.events(7, [(N_CLEAN, *at.CLEAN), (N_SHIFT, *at.X1_SHIFT)])
    # a few events without attributions and with a broken one: counted, never fatal
    messages[100:103] = [json.dumps({"model": at.MODEL, "f": {"x0": 0.1}, "p": 0.2}).encode(),
                         json.dumps({"model": at.MODEL, "f": {"x0": 0.1}, "p": 0.2,
                                     "explanation": {"shap": "broken"}}).encode(),
                         json.dumps({"model": at.MODEL, "f": {"x0": 0.1}, "p": 0.2,
                                     "explanation": {"shap": {"x0": "NaN?"}}}).encode()]
    produce(kafka_bootstrap, topic, messages, linger_ms=10)

    run = StreamdriftRun(path, port=port)
    try:
        run.wait_consumed(len(messages), timeout=240, interval=0.5)
        text = scrape(port)
    finally:
        run.stop(check=True)

    alarms = run.logs("drift alarm")
    attribution = [a for a in alarms if a["feature"] == "attribution"]
    assert [a["detector"] for a in attribution] == ["ndcg"], alarms
    assert N_CLEAN <= attribution[0]["index"] < N_CLEAN + 1_000  # the first shifted window
    assert not [a for a in alarms if a["index"] < N_CLEAN], alarms  # clean part: quiet

    opened = run.logs("drift episode opened")
    assert [o["feature"] for o in opened] == ["p"], opened
    assert opened[0]["root_cause"][0]["feature"] == "x1", opened[0]
    assert opened[0]["root_cause_text"].startswith("x1 (")

    s = samples(text)
    assert sample(s, "streamdrift_attribution_active", model=at.MODEL) == 1
    assert sample(s, "streamdrift_attribution_alarms_total", model=at.MODEL) == 1
    assert sample(s, "streamdrift_attribution_ndcg", model=at.MODEL) < \
        sample(s, "streamdrift_attribution_level", model=at.MODEL)
    # the broken attributions were counted, never fatal: the 1st event has none (4
    # missing), the 3rd one invalid value and 3 missing; the 2nd, whose mapping is a
    # string, is rejected whole as any event of the wrong structure is (by reason)
    assert sample(s, "streamdrift_attribution_values_total", model=at.MODEL,
                  outcome="invalid") == 1
    assert sample(s, "streamdrift_attribution_values_total", model=at.MODEL,
                  outcome="missing") == 4 + 3
    assert sample(s, "streamdrift_events_invalid_total", reason="wrong_structure") == 1
    assert sample(s, "streamdrift_attribution_values_total", model=at.MODEL,
                  outcome="ok") == 4 * (len(messages) - 3)
    causes = {(dict(k[1])["rank"], dict(k[1])["feature"]): v for k, v in s.items()
              if k[0] == "streamdrift_root_cause"}
    assert len(causes) == 3 and ("1", "x1") in causes, causes
    chk = promtool_check_metrics(text)
    assert chk.returncode == 0 and not chk.stdout.strip(), chk.stdout + chk.stderr

    records = [r for r in _read_topic(kafka_bootstrap, f"{topic}-drift")
               if r["type"] == "open" and r["column"] == "p"]
    assert records and records[0]["root_cause"][0]["feature"] == "x1", records
