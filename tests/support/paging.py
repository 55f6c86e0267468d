"""Pipelines with the shipped alert timings, for the time-to-page tests
(tests/integration/test_time_to_page.py).

Unlike tests.support.e2e, nothing about the alerting is shortened:

* Prometheus runs deploy/prometheus/prometheus.yml with its scrape and evaluation intervals
  and loads the shipped rule files themselves (not copies); only the scrape target (the
  `streamdrift run` under test) and the Alertmanager address are replaced.
* Alertmanager runs deploy/alertmanager/alertmanager.yml with the host:port of every webhook
  pointed at the test's webhook server; routes, group_wait, group_interval and inhibition
  as shipped.
* Prometheus runs with its default flags (alert resend delay 1m, ...).

The model m1 of tests.support.events is monitored with the default window and cadence and
`false_alarm_events` = FALSE_ALARM_EVENTS (see there). Events are produced at RATE per
second, by an `EventProducer` thread of the test process or, for a long background run, by
a producer process (`ProducerProcess`: this module run as a script), so that it does not
compete for the test process' GIL.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

import stream.broker
from tests.support import REPO
from tests.support.configs import m1_config, write_config
from tests.support.e2e import (
    ALERTMANAGER_YML,
    PROMETHEUS_YML,
    Pipeline,
    _delete_topics,
    redirect_webhooks,
    run_baseline,
)
from tests.support.events import MODEL, write_clipped_reference
from tests.support.kafka import EventProducer
from tests.support.ports import free_port
from tests.support.processes import StreamdriftRun, stop_process
from tests.support.servers import start_alertmanager, start_prometheus
from tests.support.waiting import wait_for
from tests.support.webhook import Webhook

#: events per second (issue #13: the latency budget holds at 1,000 events/s)
RATE = 1000
#: Expected events between false alarms of the model (all its columns and detectors).
#: The clean run sees >= 600,000 events: with 1e8 a false alarm happens in it with
#: probability 1 - exp(-600,000 / 1e8) ~ 0.6 %, and a false alarm pages only if its episode
#: also outlasts the drift alerts' `for:` (30 s, 30,000 events). The shipped default (1e7)
#: would give ~6 % per run before that filter.
FALSE_ALARM_EVENTS = 100_000_000
#: window and cadence: the defaults (1000, 50)
DETECTION = {"false_alarm_events": FALSE_ALARM_EVENTS}
#: the rule group of the drift alerts
DRIFT_GROUP = "streamdrift.drift"


# --------------------------------------------------------------------------- configurations


def streamdrift_config(path: Path, *, bootstrap: str, topic: str, baseline: dict[str, str],
                       port: int) -> Path:
    return write_config(path, m1_config(
        bootstrap=bootstrap, topic=topic, group=f"g-{topic}", port=port, version="3",
        baseline=baseline, detection=DETECTION))


def build_baseline(workdir: Path, bootstrap: str) -> Path:
    """`streamdrift baseline` of the clipped reference data with DETECTION."""
    workdir.mkdir(parents=True, exist_ok=True)
    reference = write_clipped_reference(workdir / "reference.jsonl")
    config = streamdrift_config(workdir / "baseline.yaml", bootstrap=bootstrap, topic="unused",
                                baseline={"reference": reference.name}, port=0)
    return run_baseline(config, workdir / f"{MODEL}.baseline.json")


def prometheus_config(dst: Path, *, target: str, alertmanager: str) -> Path:
    """deploy/prometheus/prometheus.yml with only the scrape target and the Alertmanager
    replaced; the rule files are the shipped ones, by absolute path."""
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    cfg["rule_files"] = [str((PROMETHEUS_YML.parent / f).resolve()) for f in cfg["rule_files"]]
    (am,) = cfg["alerting"]["alertmanagers"]
    am["static_configs"] = [{"targets": [alertmanager]}]
    (job,) = cfg["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    dst.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return dst


def alertmanager_config(dst: Path, webhook_netloc: str) -> Path:
    """deploy/alertmanager/alertmanager.yml with the webhooks' host:port replaced, nothing
    else."""
    cfg = yaml.safe_load(ALERTMANAGER_YML.read_text(encoding="utf-8"))
    redirect_webhooks(cfg, webhook_netloc)
    dst.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return dst


# --------------------------------------------------------------------------- the producer


class ProducerProcess:
    """A clean `EventProducer` at `rate` in a process of its own (this module as a script);
    `stop()` ends it and returns what it sent. Duck-types the EventProducer methods that
    `Pipeline` uses (`check`, `stop`)."""

    def __init__(self, bootstrap: str, topic: str, *, rate: float, seed: int,
                 log: Path) -> None:
        self.log = log
        self.sent: dict[str, Any] | None = None
        self._err = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.paging", "--bootstrap", bootstrap,
             "--topic", topic, "--rate", str(rate), "--seed", str(seed)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._err, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})

    def check(self) -> None:
        if self.proc.poll() is not None and self.sent is None:
            raise AssertionError(f"the producer process exited with {self.proc.returncode}:\n"
                                 f"{self.log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> dict[str, Any]:
        """SIGTERM; what it reports on exit: {"events": n, "seconds": t, "error": ...}."""
        if self.sent is None:
            stop_process(self.proc, timeout=60)
            out = self.proc.stdout.read() if self.proc.stdout else b""
            self._err.close()
            try:
                self.sent = json.loads(out.decode().strip().splitlines()[-1])
            except (ValueError, IndexError):
                self.sent = {"events": 0, "seconds": 0.0,
                             "error": f"exit {self.proc.returncode}, no report: "
                                      f"{self.log.read_text(errors='replace')[-2000:]}"}
        return self.sent


def _produce_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="clean m1 events at a steady rate until SIGTERM")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    producer = EventProducer(args.bootstrap, args.topic, rate=args.rate, seed=args.seed)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    t0 = time.monotonic()
    producer.start()
    while not done.wait(1.0) and producer.is_alive():
        pass
    producer.stop()
    error = repr(producer.error) if producer.error is not None else None
    if producer.is_alive():
        error = "the producer thread did not stop"
    print(json.dumps({"events": producer.events, "seconds": time.monotonic() - t0,
                      "error": error}), flush=True)
    return 0 if error is None else 1


# --------------------------------------------------------------------------- the pipeline


def start_pipeline(name: str, workdir: Path, bootstrap: str, baseline: Path, *, seed: int,
                   drift: bool, producer_process: bool = False) -> Pipeline:
    """Kafka topic -> streamdrift run -> Prometheus -> Alertmanager -> webhook, with the
    shipped timings; returned once Prometheus has scraped streamdrift and evaluated the
    drift rules on it.

    With `drift`, the producer (an EventProducer thread) shifts x1 by 1 sigma for good once
    its `drift_gate` is set (by the caller); otherwise the stream stays clean, produced by a
    `ProducerProcess` when `producer_process`.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    suffix = uuid.uuid4().hex[:10]
    pipe = Pipeline(name=name, workdir=workdir, bootstrap=bootstrap,
                    topic=f"sd-page-{name}-{suffix}", dead_letter_topic="")
    stack = pipe._exit
    try:
        stream.broker.create_topic(bootstrap, pipe.topic, 1)
        stack.callback(_delete_topics, bootstrap, [pipe.topic])

        pipe.webhook = Webhook()
        stack.callback(pipe.webhook.stop)
        pipe.alertmanager = start_alertmanager(
            alertmanager_config(workdir / "alertmanager.yml", pipe.webhook.netloc), timeout=30)
        stack.callback(pipe.alertmanager.stop)

        port = free_port()
        config = streamdrift_config(workdir / "streamdrift.yaml", bootstrap=bootstrap,
                                    topic=pipe.topic, baseline={"file": str(baseline)},
                                    port=port)
        pipe.run = StreamdriftRun(config, port=port)
        stack.callback(pipe.run.stop)
        pipe.run.wait_serving(timeout=60)

        if producer_process:
            assert not drift, "the producer process sends clean events only"
            pipe.producer = ProducerProcess(bootstrap, pipe.topic, rate=RATE,  # type: ignore[assignment]
                                            seed=seed, log=workdir / "producer.stderr")
        else:
            pipe.producer = EventProducer(bootstrap, pipe.topic, rate=RATE, seed=seed,
                                          drift_after=0 if drift else None)
            pipe.producer.start()
        stack.callback(pipe.producer.stop)
        wait_for(lambda: pipe.run.value("streamdrift_events_consumed_total") > 0, 60,
                 "streamdrift consuming the topic", alive=pipe.check_alive,
                 details=pipe.diagnostics)

        pipe.started_wall = time.time()
        pipe.prometheus = start_prometheus(
            prometheus_config(workdir / "prometheus.yml", target=f"127.0.0.1:{port}",
                              alertmanager=pipe.alertmanager.url.removeprefix("http://")),
            timeout=30)
        stack.callback(pipe.prometheus.stop)
        # first scrape: up to 5 s of target discovery plus up to one scrape interval
        wait_for(lambda: pipe.query('up{job="streamdrift"} == 1'), 60,
                 "Prometheus scraping streamdrift", alive=pipe.check_alive,
                 details=pipe.diagnostics, interval=0.5)
        scraped = time.time()
        wait_for(lambda: drift_group_evaluated_after(pipe, scraped), 60,
                 "the drift rules evaluated on the scraped data", alive=pipe.check_alive,
                 details=pipe.diagnostics, interval=0.5)
    except BaseException:
        stack.close()
        raise
    return pipe


def drift_group(pipe: Pipeline) -> dict:
    groups = pipe.prometheus.get_json("/api/v1/rules")["data"]["groups"]
    (group,) = [g for g in groups if g["name"] == DRIFT_GROUP]
    return group


def drift_group_evaluated_after(pipe: Pipeline, t: float) -> bool:
    group = drift_group(pipe)
    return rfc3339_seconds(group["lastEvaluation"]) > t and all(
        r["health"] == "ok" for r in group["rules"])


def rfc3339_seconds(text: str) -> float:
    """Seconds since the epoch of a Prometheus API time (RFC 3339, up to nanoseconds)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


if __name__ == "__main__":
    sys.exit(_produce_main())
