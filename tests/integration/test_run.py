"""`streamdrift run` against a real Kafka broker: drift, bad input, metrics, restart, parity."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.support.configs import m1_config, write_config
from tests.support.events import CLEAN, SHIFTED, m1_events, with_poison
from tests.support.kafka import produce
from tests.support.metrics import promtool_check_metrics, sample, samples, scrape
from tests.support.ports import free_port
from tests.support.processes import StreamdriftRun

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

N_CLEAN, N_DRIFT = 8_000, 8_000
DRIFTED = {("x1", "feature"), ("c1", "feature")}
BAD = [b"{not json", b"[1, 2, 3]", b'"just a string"',
       orjson.dumps({"model": "other", "f": {"x1": 1.0}}), b"", b"x" * 300_000]


def _events(seed: int) -> list[bytes]:
    """N_CLEAN clean then N_DRIFT drifted events, the poison messages spread over them."""
    return with_poison(m1_events(seed, [(N_CLEAN, CLEAN), (N_DRIFT, SHIFTED)]), BAD, 1000, 2000)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("run")
    (d / "reference.jsonl").write_bytes(b"\n".join(m1_events(99, [(10_000, CLEAN)])))
    return d


def _write_config(workdir: Path, bootstrap: str, topic: str, group: str,
                  client: str = "kafka-python") -> tuple[Path, int]:
    port = free_port()
    config = m1_config(bootstrap=bootstrap, topic=topic, group=group, port=port, version="2",
                       kafka={"max_poll_records": 1500, "poll_timeout_ms": 200,
                              "client": client},
                       max_message_bytes=200_000)
    return write_config(workdir / f"{topic}.yaml", config), port


#: both consumers of `streamdrift run` (confluent-kafka is in the test extra)
CLIENTS = pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])


def _produce(bootstrap: str, topic: str, messages: list[bytes]) -> None:
    produce(bootstrap, topic, messages, linger_ms=10, max_request_size=1_048_576)


@CLIENTS
def test_run_detects_drift_counts_bad_input_and_resumes(kafka_bootstrap, make_topic, workdir,
                                                         client):
    topic = make_topic(partitions=1)
    config, port = _write_config(workdir, kafka_bootstrap, topic, f"g-{topic}", client)
    messages = _events(seed=1)
    _produce(kafka_bootstrap, topic, messages)

    run = StreamdriftRun(config, port=port)
    try:
        run.wait_consumed(len(messages), timeout=180, interval=0.5)
        deadline = time.monotonic() + 15
        while True:  # consumer lag is refreshed every second
            text = scrape(port)
            lag = sample(samples(text), "streamdrift_consumer_lag_messages", topic=topic,
                         partition="0")
            if lag == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        run.stop(check=True)
    assert run.stopped_in < 10, f"shutdown took {run.stopped_in:.1f}s"
    s = samples(text)

    # alarms on exactly the drifted features
    alarmed = {(dict(k[1])["feature"], dict(k[1])["role"]) for k, v in s.items()
               if k[0] == "streamdrift_drift_alarms_total" and v > 0}
    assert alarmed == DRIFTED, alarmed

    # bad input counted by reason, good events all processed
    assert sample(s, "streamdrift_events_invalid_total", reason="invalid_json") == 2  # "{not json", ""
    assert sample(s, "streamdrift_events_invalid_total", reason="not_an_object") == 2
    assert sample(s, "streamdrift_events_invalid_total", reason="unknown_model") == 1
    assert sample(s, "streamdrift_events_invalid_total", reason="oversized") == 1
    assert sample(s, "streamdrift_events_processed_total", model="m1") == N_CLEAN + N_DRIFT
    assert sample(s, "streamdrift_model_info", model="m1", version="2",
                  baseline_id=_baseline_id(s)) == 1
    assert sample(s, "streamdrift_consumer_lag_messages", topic=topic, partition="0") == 0

    # the exposition is clean for promtool
    chk = promtool_check_metrics(text)
    assert chk.returncode == 0 and not chk.stdout.strip(), chk.stdout + chk.stderr

    # restart: resumes from the committed offsets, nothing re-read
    more = _events(seed=2)[:1000]
    _produce(kafka_bootstrap, topic, more)
    run2 = StreamdriftRun(config, port=port)
    try:
        text2 = run2.wait_consumed(len(more), timeout=120, interval=0.5)
        time.sleep(1.5)  # give it a chance to (wrongly) read more
        text2 = scrape(port)
    finally:
        run2.stop(check=True)
    assert sample(samples(text2), "streamdrift_events_consumed_total") == len(more)


def _baseline_id(s: dict) -> str:
    for (name, labels) in s:
        if name == "streamdrift_model_info":
            return dict(labels)["baseline_id"]
    return ""


@CLIENTS
def test_run_and_replay_give_the_same_detections(kafka_bootstrap, make_topic, workdir, client):
    topic = make_topic(partitions=1)
    config, port = _write_config(workdir, kafka_bootstrap, topic, f"g-{topic}", client)
    messages = _events(seed=3)
    _produce(kafka_bootstrap, topic, messages)
    run = StreamdriftRun(config, port=port)
    try:
        run.wait_consumed(len(messages), timeout=180, interval=0.5)
    finally:
        run.stop(check=True)
    from_run = sorted((a["model"], a["feature"], a["detector"], a["offset"])
                      for a in run.logs("drift alarm"))
    assert from_run, "no alarm in run"

    events = workdir / f"{topic}.jsonl"
    events.write_bytes(b"\n".join(m.replace(b"\n", b" ") for m in messages) + b"\n")
    report_path = workdir / f"{topic}.report.json"
    out = subprocess.run([sys.executable, "-m", "stream.cli", "replay", "-c", str(config),
                          "--input", str(events), "--report", str(report_path),
                          "--batch-size", "777", "--no-progress"],
                         capture_output=True, timeout=120, cwd=workdir)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    report = json.loads(report_path.read_text())
    assert report["input_lines"] == len(messages)
    from_replay = sorted((d["model"], d["feature"], d["detector"], d["index"])
                         for d in report["detections"])
    assert from_run == from_replay
