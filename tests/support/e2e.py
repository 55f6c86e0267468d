"""Helpers of the end-to-end tests: real Kafka -> `streamdrift run` -> Prometheus ->
Alertmanager -> a webhook receiver inside the test (tests/integration/test_e2e_alerting.py).

Everything listens on 127.0.0.1 on free ports. Prometheus and Alertmanager are started with
tests.support.servers; their configurations are derived from the shipped files:

* Prometheus: deploy/prometheus/prometheus.yml with the scrape and evaluation intervals set
  to 1 s, the example target replaced by the `streamdrift run` under test and the
  Alertmanager of the test; its rule files are the shipped ones, except that a rule file
  holding `for:` clauses is loaded from a copy in which every `for:` is shortened and a
  group's own evaluation `interval:` set to 1 s (nothing else changes; `rule_file_copy`
  checks that). tests.support.paging runs the shipped timings instead.
* Alertmanager: deploy/alertmanager/alertmanager.yml with the host:port of every webhook URL
  pointed at the test's webhook server (the path, e.g. `/tickets`, is kept) and shorter
  `group_wait` / `group_interval`; routes, grouping and inhibition as shipped.

The event stream (`tests.support.kafka.EventProducer`) is paced (a steady rate, never a burst that would build a
consumer lag) and keeps running until it is stopped or has sent `total` events; a drift is a
1 sigma mean shift of one feature. Every numeric column is clipped to fixed bounds that the
reference data reaches, so a mean shift moves values inside the baseline's [min, max] and
the out-of-range detectors stay quiet: the only thing that changes is the distribution.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import yaml

import stream.broker
from tests.support import REPO
from tests.support.configs import DETECTION as CONFIG_DETECTION
from tests.support.configs import m1_config, write_config
from tests.support.events import MODEL, write_clipped_reference
from tests.support.kafka import EventProducer
from tests.support.ports import free_port
from tests.support.processes import StreamdriftRun
from tests.support.servers import query, start_alertmanager, start_prometheus
from tests.support.waiting import wait_for
from tests.support.webhook import Webhook

PROMETHEUS_YML = REPO / "deploy" / "prometheus" / "prometheus.yml"
ALERTMANAGER_YML = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOKS_MD = REPO / "docs" / "runbooks.md"

#: scrape and rule evaluation interval of the test Prometheus, seconds
SCRAPE_S = 1
#: `for:` of every alert rule in the test copy of the rule files
SHORT_FOR = "5s"

#: poison messages and their rejection reason (counted in streamdrift_events_invalid_total)
BAD_MESSAGES: list[tuple[bytes, str]] = [
    (b"{not json", "invalid_json"),
    (b"[1, 2, 3]", "not_an_object"),
    (b"", "invalid_json"),
    (b'"just a string"', "not_an_object"),
    (orjson.dumps({"model": "other", "f": {"x1": 1.0}}), "unknown_model"),
    (b"x" * 300_000, "oversized"),
]


# --------------------------------------------------------------------------- streamdrift


#: Expected events between false alarms of the model (all its columns and detectors). The
#: drift test asserts that no clean column's alert even went pending over the whole drift
#: pipeline (up to ~100,000 events at 800 a second): at 1e6 a false alarm somewhere in the model had
#: a chance of a few per cent per run, and CI saw one (on x2). At 1e8 it is ~0.1 %,
#: as in tests.support.paging; a 1 sigma shift is caught a few events later, not seconds.
DETECTION = {**CONFIG_DETECTION, "false_alarm_events": 100_000_000}


def write_streamdrift_config(path: Path, *, bootstrap: str, topic: str, dead_letter: str,
                             baseline: dict[str, str], port: int) -> Path:
    return write_config(path, m1_config(
        bootstrap=bootstrap, topic=topic, group=f"g-{topic}", port=port, version="3",
        baseline=baseline, kafka={"max_poll_records": 1000, "poll_timeout_ms": 100},
        dead_letter=dead_letter, max_message_bytes=200_000, detection=DETECTION))


def build_baseline(workdir: Path, bootstrap: str) -> Path:
    """Profile and calibrate once (`streamdrift baseline`); every run then loads the file."""
    reference = write_clipped_reference(workdir / "reference.jsonl")
    config = write_streamdrift_config(
        workdir / "baseline.yaml", bootstrap=bootstrap, topic="unused", dead_letter="unused-dl",
        baseline={"reference": reference.name}, port=0)
    return run_baseline(config, workdir / f"{MODEL}.baseline.json", timeout=120)


def run_baseline(config: Path, out: Path, timeout: float = 300) -> Path:
    """`streamdrift baseline -c config -o out` in the config's folder; RuntimeError (with the
    end of its stderr) if it fails."""
    proc = subprocess.run([sys.executable, "-m", "stream.cli", "baseline", "-c", str(config),
                           "-o", str(out), "--no-progress"],
                          capture_output=True, timeout=timeout, cwd=config.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"streamdrift baseline failed ({proc.returncode}):\n"
                           f"{proc.stderr.decode(errors='replace')[-3000:]}")
    return out


# --------------------------------------------------------------------------- configurations


def rule_file_copy(src: Path, dst: Path, for_: str = SHORT_FOR) -> tuple[Path, int]:
    """`src` with the duration of every `for:` replaced by `for_`, and the evaluation
    `interval:` of a group that sets one by the test's (SCRAPE_S); returns (dst, count).

    The copy is re-read and compared with the original: only those values differ.
    """
    original = yaml.safe_load(src.read_text(encoding="utf-8"))
    doc = yaml.safe_load(src.read_text(encoding="utf-8"))
    count = 0
    for group in (*original["groups"], *doc["groups"]):
        if "interval" in group:
            group["interval"] = f"{SCRAPE_S}s"
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = for_
                count += 1
    dst.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=10_000),
                   encoding="utf-8")
    reread = yaml.safe_load(dst.read_text(encoding="utf-8"))
    for group in (*original["groups"], *reread["groups"]):
        for rule in group["rules"]:
            rule.pop("for", None)
    assert reread == original, f"{dst} differs from {src} by more than `for:`"
    return dst, count


def _has_alert_rules(path: Path) -> bool:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return any("alert" in rule for group in doc["groups"] for rule in group["rules"])


def prometheus_config(dst: Path, *, target: str, alertmanager: str, rules_dir: Path,
                      alert_rules: bool = True) -> Path:
    """deploy/prometheus/prometheus.yml for the test (see the module docstring); without
    `alert_rules`, the rule files holding alert rules are left out."""
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    interval = f"{SCRAPE_S}s"
    cfg["global"].update(scrape_interval=interval, scrape_timeout=interval,
                         evaluation_interval=interval)
    rule_files = []
    for entry in cfg["rule_files"]:
        src = (PROMETHEUS_YML.parent / entry).resolve()
        if not alert_rules and _has_alert_rules(src):
            continue
        if "for:" in src.read_text(encoding="utf-8"):
            copy, _ = rule_file_copy(src, rules_dir / src.name)
            rule_files.append(str(copy))
        else:
            rule_files.append(str(src))
    cfg["rule_files"] = rule_files
    (am,) = cfg["alerting"]["alertmanagers"]
    am["static_configs"] = [{"targets": [alertmanager]}]
    (job,) = cfg["scrape_configs"]
    job["scrape_interval"] = interval
    job.pop("scrape_timeout", None)
    job["static_configs"] = [{"targets": [target]}]
    dst.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return dst


def redirect_webhooks(cfg: dict, webhook_netloc: str) -> None:
    """Point every receiver of an Alertmanager config at ``http://webhook_netloc`` (paths
    kept); only webhook receivers can be redirected."""
    for receiver in cfg["receivers"]:
        kinds = sorted(k for k in receiver if k.endswith("_configs"))
        assert kinds == ["webhook_configs"], (
            f"receiver {receiver['name']} uses {kinds}: this test can only redirect webhooks")
        for hook in receiver["webhook_configs"]:
            hook["url"] = urlunsplit(urlsplit(hook["url"])._replace(scheme="http",
                                                                    netloc=webhook_netloc))


def alertmanager_config(dst: Path, webhook_netloc: str, *, group_wait: str = "1s",
                        group_interval: str = "2s") -> Path:
    """deploy/alertmanager/alertmanager.yml for the test (see the module docstring)."""
    cfg = yaml.safe_load(ALERTMANAGER_YML.read_text(encoding="utf-8"))
    redirect_webhooks(cfg, webhook_netloc)

    def shorten(route: dict) -> None:
        if route.get("group_wait") not in (None, "0s", "0"):
            route["group_wait"] = group_wait
        if "group_interval" in route:
            route["group_interval"] = group_interval
        for child in route.get("routes", []):
            shorten(child)

    shorten(cfg["route"])
    dst.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return dst


def receiver_paths() -> dict[str, str]:
    """Receiver name -> URL path of its webhook in the shipped alertmanager.yml."""
    cfg = yaml.safe_load(ALERTMANAGER_YML.read_text(encoding="utf-8"))
    return {r["name"]: urlsplit(hook["url"]).path
            for r in cfg["receivers"] for hook in r.get("webhook_configs", [])}


# --------------------------------------------------------------------------- the pipeline


@dataclass
class Pipeline:
    """One complete system: Kafka topic -> streamdrift run -> Prometheus -> Alertmanager ->
    webhook. Built by `start_pipeline`; `close()` stops everything (idempotent)."""

    name: str
    workdir: Path
    bootstrap: str
    topic: str
    dead_letter_topic: str
    producer: EventProducer | None = None
    run: StreamdriftRun | None = None
    prometheus: Any = None
    alertmanager: Any = None
    webhook: Webhook | None = None
    started_wall: float = 0.0  # time.time() just before Prometheus started
    _exit: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def close(self) -> None:
        self._exit.close()

    def check_alive(self) -> None:
        assert self.run is not None and self.producer is not None
        self.run.check_alive()
        self.producer.check()

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        return query(self.prometheus, expr, at)

    def alerts_seen(self) -> list[dict]:
        """Every ALERTS series (alertname, alertstate, labels) Prometheus produced so far."""
        window = int(time.time() - self.started_wall) + 5
        return [s["metric"] for s in self.query(f"max_over_time(ALERTS[{window}s])")]

    def diagnostics(self) -> str:
        parts = [f"--- {self.name}: webhook notifications ---",
                 self.webhook.summary() if self.webhook else "(no webhook)"]
        if self.prometheus is not None:
            with contextlib.suppress(Exception):
                alerts = self.prometheus.get_json("/api/v1/alerts")["data"]["alerts"]
                parts += ["--- Prometheus alerts now ---",
                          *(f"  {a['labels']} {a['state']}" for a in alerts)]
            parts += ["--- prometheus log ---", self.prometheus.log_tail(15)]
        if self.alertmanager is not None:
            parts += ["--- alertmanager log ---", self.alertmanager.log_tail(15)]
        if self.run is not None:
            parts += ["--- streamdrift stderr ---", self.run.log_tail(15)]
        return "\n".join(parts)


def start_pipeline(name: str, workdir: Path, bootstrap: str, baseline: Path, *,
                   rate: float, seed: int, drift_after: int | None = None,
                   total: int | None = None, bad_after: int = 6000,
                   bad_every: int = 1000) -> Pipeline:
    """Start a full pipeline (see `Pipeline`) and return it once Prometheus runs.

    The poison messages of BAD_MESSAGES follow events `bad_after`, `bad_after + bad_every`,
    ... (by default while Prometheus scrapes, and rare enough for StreamdriftInvalidEventsHigh
    to stay quiet).

    Order matters with `for:` shortened to seconds: the Alertmanager is up before Prometheus
    sends anything; events flow (and are consumed) before Prometheus' first scrape, so that
    `rate(streamdrift_events_consumed_total[10m])` is never 0 (StreamdriftNoEvents); the
    target serves metrics before Prometheus starts (StreamdriftTargetDown), and the alert
    rules are loaded (config reload) only once Prometheus has scraped it
    (StreamdriftTargetAbsent, see below). A drift starts once the clean state has been
    scraped a few times.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    suffix = uuid.uuid4().hex[:10]
    pipe = Pipeline(name=name, workdir=workdir, bootstrap=bootstrap,
                    topic=f"sd-e2e-{name}-{suffix}", dead_letter_topic=f"sd-e2e-{name}-dl-{suffix}")
    stack = pipe._exit
    try:
        for topic in (pipe.topic, pipe.dead_letter_topic):
            stream.broker.create_topic(bootstrap, topic, 1)
        stack.callback(_delete_topics, bootstrap, [pipe.topic, pipe.dead_letter_topic])

        pipe.webhook = Webhook()
        stack.callback(pipe.webhook.stop)
        am_config = alertmanager_config(workdir / "alertmanager.yml", pipe.webhook.netloc)
        pipe.alertmanager = start_alertmanager(am_config, timeout=30)
        stack.callback(pipe.alertmanager.stop)

        port = free_port()
        config = write_streamdrift_config(
            workdir / "streamdrift.yaml", bootstrap=bootstrap, topic=pipe.topic,
            dead_letter=pipe.dead_letter_topic, baseline={"file": str(baseline)}, port=port)
        pipe.run = StreamdriftRun(config, port=port)
        stack.callback(pipe.run.stop)
        pipe.run.wait_serving(timeout=60)

        bad_at = {bad_after + k * bad_every: msg for k, (msg, _) in enumerate(BAD_MESSAGES)}
        pipe.producer = EventProducer(bootstrap, pipe.topic, rate=rate, seed=seed,
                                      drift_after=drift_after, total=total, bad_at=bad_at)
        pipe.producer.start()
        stack.callback(pipe.producer.stop)

        wait_for(lambda: pipe.run.value("streamdrift_events_consumed_total") > 0, 60,
                 "streamdrift consuming the topic", alive=pipe.check_alive,
                 details=pipe.diagnostics)

        def prom_config(alert_rules: bool) -> Path:
            return prometheus_config(
                workdir / "prometheus.yml", target=f"127.0.0.1:{port}",
                alertmanager=pipe.alertmanager.url.removeprefix("http://"), rules_dir=workdir,
                alert_rules=alert_rules)

        pipe.started_wall = time.time()
        # Alerts are resent every second (default 1m): the Alertmanager learns of a firing
        # alert at the next evaluation, and resolved ones are not waited for.
        pipe.prometheus = start_prometheus(
            prom_config(alert_rules=False), timeout=30,
            extra_args=["--rules.alert.resend-delay=1s"])
        stack.callback(pipe.prometheus.stop)

        # Prometheus hands its targets to the scrapers only after up to 5 s (the discovery
        # manager's update interval) and the first scrape comes up to one interval later:
        # `absent(up{job="streamdrift"})` holds for about 6 s after start-up, which a
        # `for:` shortened to 5 s turns into a StreamdriftTargetAbsent page (with the
        # shipped `for: 5m` it never fires). So the alert rules are loaded once the target
        # has been scraped.
        wait_for(lambda: pipe.query('up{job="streamdrift"} == 1'), 30,
                 "Prometheus scraping streamdrift", alive=pipe.check_alive,
                 details=pipe.diagnostics)
        prom_config(alert_rules=True)
        pipe.prometheus.post_json("/-/reload", {})
        expected_groups = {g["name"] for entry in yaml.safe_load(
            PROMETHEUS_YML.read_text(encoding="utf-8"))["rule_files"]
            for g in yaml.safe_load((PROMETHEUS_YML.parent / entry).read_text(
                encoding="utf-8"))["groups"]}

        def rules_loaded() -> bool:
            groups = pipe.prometheus.get_json("/api/v1/rules")["data"]["groups"]
            return {g["name"] for g in groups} == expected_groups

        wait_for(rules_loaded, 30, "the alert rules loaded", details=pipe.diagnostics)

        # The drift (if any) starts once Prometheus has scraped the clean state a few times:
        # the alarm counters go from 0 to 1 under its eyes (dashboards' alarm panels).
        wait_for(lambda: pipe.query('count_over_time(up{job="streamdrift"}[1m]) >= 3'), 30,
                 "three scrapes of streamdrift", alive=pipe.check_alive,
                 details=pipe.diagnostics)
        pipe.producer.drift_gate.set()
    except BaseException:
        stack.close()
        raise
    return pipe


def _delete_topics(bootstrap: str, names: list[str]) -> None:
    with contextlib.suppress(Exception):
        stream.broker.delete_topics(bootstrap, names, timeout=10)


class LazyPipeline:
    """A pipeline started on first use and shared by the tests of a module; a start-up
    failure is remembered and raised again (no second attempt eats the time budget)."""

    def __init__(self, factory: Callable[[], Pipeline]) -> None:
        self._factory = factory
        self._pipeline: Pipeline | None = None
        self._error: BaseException | None = None
        self._closed = False

    def get(self) -> Pipeline:
        if self._closed:
            raise AssertionError("the shared pipeline was already stopped")
        if self._error is not None:
            raise AssertionError(f"the pipeline failed to start earlier: {self._error!r}")
        if self._pipeline is None:
            try:
                self._pipeline = self._factory()
            except BaseException as exc:
                self._error = exc
                raise
        return self._pipeline

    def close(self) -> None:
        """Stop the pipeline (if it was started); idempotent."""
        self._closed = True
        if self._pipeline is not None:
            self._pipeline.close()
