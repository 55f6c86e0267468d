"""`streamdrift run` against a real Kafka broker: drift, bad input, metrics, restart, parity."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

N_CLEAN, N_DRIFT = 8_000, 8_000
DRIFTED = {("x1", "feature"), ("c1", "feature")}
BAD = [b"{not json", b"[1, 2, 3]", b'"just a string"',
       orjson.dumps({"model": "other", "f": {"x1": 1.0}}), b"", b"x" * 300_000]


def _event(rng: np.random.Generator, i: int, drift: bool) -> bytes:
    return orjson.dumps({
        "model": "m1", "ts": 1.7e9 + i,
        "f": {"x1": float(rng.normal(1.0 if drift else 0.0, 1.0)),
              "x2": float(rng.lognormal(0.0, 0.5)),
              "c1": str(rng.choice(["a", "b", "c"], p=[0.2, 0.3, 0.5] if drift
                                   else [0.5, 0.3, 0.2])),
              "c2": str(rng.choice(["u", "v"]))},
        "p": {"score": float(rng.beta(2, 5))},
    })


def _events(seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = [_event(rng, i, i >= N_CLEAN) for i in range(N_CLEAN + N_DRIFT)]
    for k, bad in enumerate(BAD):  # poison messages spread over the stream
        out.insert(1000 + 2000 * k, bad)
    return out


CONFIG = """
source:
  kafka:
    bootstrap_servers: "{bootstrap}"
    topics: [{topic}]
    group_id: {group}
    auto_offset_reset: earliest
    max_poll_records: 1500
    poll_timeout_ms: 200
    client: {client}
  max_message_bytes: 200000
  timestamp: {{path: ts, unit: s}}
models:
  - name: m1
    version: "2"
    select: {{field: model, equals: m1}}
    baseline: {{reference: reference.jsonl}}
    features:
      - {{name: x1, path: f.x1, type: numeric}}
      - {{name: x2, path: f.x2, type: numeric}}
      - {{name: c1, path: f.c1, type: categorical}}
      - {{name: c2, path: f.c2, type: categorical}}
    predictions:
      - {{name: score, path: p.score, type: numeric}}
detection:
  false_alarm_events: 1000000
  window: 500
  cadence: 50
metrics: {{port: {port}, host: 127.0.0.1}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(99)
    (d / "reference.jsonl").write_bytes(b"\n".join(_event(rng, i, False) for i in range(10_000)))
    return d


def _write_config(workdir: Path, bootstrap: str, topic: str, group: str,
                  client: str = "kafka-python") -> tuple[Path, int]:
    port = _free_port()
    path = workdir / f"{topic}.yaml"
    path.write_text(CONFIG.format(bootstrap=bootstrap, topic=topic, group=group, port=port,
                                  client=client))
    return path, port


#: both consumers of `streamdrift run` (confluent-kafka is in the test extra)
CLIENTS = pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])


def _produce(bootstrap: str, topic: str, messages: list[bytes]) -> None:
    from kafka import KafkaProducer

    prod = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, max_request_size=1_048_576)
    for m in messages:
        prod.send(topic, m)
    prod.flush(timeout=60)
    prod.close()


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), float("nan"))


class Run:
    """`streamdrift run` as a real subprocess."""

    def __init__(self, config: Path, port: int) -> None:
        self.port = port
        self.stderr = config.with_suffix(".stderr")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "--log-level", "info", "run", "-c", str(config)],
            stdout=subprocess.DEVNULL, stderr=self.stderr.open("wb"),
            cwd=config.parent, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def wait_consumed(self, n: int, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"run exited early: {self.stderr.read_text()[-3000:]}")
            try:
                text = _scrape(self.port)
                if _value(_samples(text), "streamdrift_events_consumed_total") >= n:
                    return text
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"not all {n} messages consumed in {timeout}s; last scrape:\n"
                             f"{text[-2000:]}\nstderr:{self.stderr.read_text()[-3000:]}")

    def stop(self) -> float:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        assert rc == 0, self.stderr.read_text()[-3000:]
        return time.monotonic() - t0

    def alarms(self) -> list[dict]:
        out = []
        for line in self.stderr.read_text().splitlines():
            if line.startswith("{"):
                rec = json.loads(line)
                if rec.get("msg") == "drift alarm":
                    out.append(rec)
        return out


@CLIENTS
def test_run_detects_drift_counts_bad_input_and_resumes(kafka_bootstrap, make_topic, workdir,
                                                         client):
    topic = make_topic(partitions=1)
    config, port = _write_config(workdir, kafka_bootstrap, topic, f"g-{topic}", client)
    messages = _events(seed=1)
    _produce(kafka_bootstrap, topic, messages)

    run = Run(config, port)
    try:
        run.wait_consumed(len(messages), timeout=180)
        deadline = time.monotonic() + 15
        while True:  # consumer lag is refreshed every second
            text = _scrape(port)
            lag = _value(_samples(text), "streamdrift_consumer_lag_messages", topic=topic,
                         partition="0")
            if lag == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        took = run.stop()
    assert took < 10, f"shutdown took {took:.1f}s"
    s = _samples(text)

    # alarms on exactly the drifted features
    alarmed = {(dict(k[1])["feature"], dict(k[1])["role"]) for k, v in s.items()
               if k[0] == "streamdrift_drift_alarms_total" and v > 0}
    assert alarmed == DRIFTED, alarmed

    # bad input counted by reason, good events all processed
    assert _value(s, "streamdrift_events_invalid_total", reason="invalid_json") == 2  # "{not json", ""
    assert _value(s, "streamdrift_events_invalid_total", reason="not_an_object") == 2
    assert _value(s, "streamdrift_events_invalid_total", reason="unknown_model") == 1
    assert _value(s, "streamdrift_events_invalid_total", reason="oversized") == 1
    assert _value(s, "streamdrift_events_processed_total", model="m1") == N_CLEAN + N_DRIFT
    assert _value(s, "streamdrift_model_info", model="m1", version="2",
                  baseline_id=_baseline_id(s)) == 1
    assert _value(s, "streamdrift_consumer_lag_messages", topic=topic, partition="0") == 0

    # the exposition is clean for promtool
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (make test installs the prometheus package)")
    chk = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                         capture_output=True, timeout=30)
    assert chk.returncode == 0 and not chk.stdout.strip(), chk.stdout + chk.stderr

    # restart: resumes from the committed offsets, nothing re-read
    more = _events(seed=2)[:1000]
    _produce(kafka_bootstrap, topic, more)
    run2 = Run(config, port)
    try:
        text2 = run2.wait_consumed(len(more), timeout=120)
        time.sleep(1.5)  # give it a chance to (wrongly) read more
        text2 = _scrape(port)
    finally:
        run2.stop()
    assert _value(_samples(text2), "streamdrift_events_consumed_total") == len(more)


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
    run = Run(config, port)
    try:
        run.wait_consumed(len(messages), timeout=180)
    finally:
        run.stop()
    from_run = sorted((a["model"], a["feature"], a["detector"], a["offset"])
                      for a in run.alarms())
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
