"""Helpers of the end-to-end tests: real Kafka -> `streamdrift run` -> Prometheus ->
Alertmanager -> a webhook receiver inside the test (tests/integration/test_e2e_alerting.py).

Everything listens on 127.0.0.1 on free ports. Prometheus and Alertmanager are started with
tests/deploy/procs.py; their configurations are derived from the shipped files:

* Prometheus: deploy/prometheus/prometheus.yml with the scrape and evaluation intervals set
  to 1 s, the example target replaced by the `streamdrift run` under test and the
  Alertmanager of the test; its rule files are the shipped ones, except that a rule file
  holding `for:` clauses is loaded from a copy in which every `for:` is shortened (nothing
  else changes; `rule_file_copy` checks that).
* Alertmanager: deploy/alertmanager/alertmanager.yml with the host:port of every webhook URL
  pointed at the test's webhook server (the path, e.g. `/tickets`, is kept) and shorter
  `group_wait` / `group_interval`; routes, grouping and inhibition as shipped.

The event stream (`EventProducer`) is paced (a steady rate, never a burst that would build a
consumer lag) and keeps running until it is stopped or has sent `total` events; a drift is a
1 sigma mean shift of one feature. Every numeric column is clipped to fixed bounds that the
reference data reaches, so a mean shift moves values inside the baseline's [min, max] and
the out-of-range detectors stay quiet: the only thing that changes is the distribution.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import orjson
import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_YML = REPO / "deploy" / "prometheus" / "prometheus.yml"
ALERTMANAGER_YML = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOKS_MD = REPO / "docs" / "runbooks.md"
GRAFANA_GENERATOR = REPO / "grafana" / "generate.py"
PROCS_PY = REPO / "tests" / "deploy" / "procs.py"

PROMETHEUS = ("prometheus",)
ALERTMANAGER = ("prometheus-alertmanager", "alertmanager")

#: scrape and rule evaluation interval of the test Prometheus, seconds
SCRAPE_S = 1
#: `for:` of every alert rule in the test copy of the rule files
SHORT_FOR = "5s"

MODEL = "m1"
#: column -> role; numeric columns are clipped to BOUNDS
COLUMNS = {"x1": "feature", "x2": "feature", "c1": "feature", "c2": "feature",
           "score": "prediction"}
BOUNDS = {"x1": (-3.0, 3.0), "x2": (0.25, 4.0), "score": (0.02, 0.75)}
DRIFT_SHIFT = 1.0  # x1 ~ N(0, 1) in the baseline, N(DRIFT_SHIFT, 1) once drifting

#: poison messages and their rejection reason (counted in streamdrift_events_invalid_total)
BAD_MESSAGES: list[tuple[bytes, str]] = [
    (b"{not json", "invalid_json"),
    (b"[1, 2, 3]", "not_an_object"),
    (b"", "invalid_json"),
    (b'"just a string"', "not_an_object"),
    (orjson.dumps({"model": "other", "f": {"x1": 1.0}}), "unknown_model"),
    (b"x" * 300_000, "oversized"),
]

STREAMDRIFT_CONFIG = """\
source:
  kafka:
    bootstrap_servers: "{bootstrap}"
    topics: [{topic}]
    group_id: {group}
    auto_offset_reset: earliest
    max_poll_records: 1000
    poll_timeout_ms: 100
  dead_letter: {{topic: {dead_letter}}}
  max_message_bytes: 200000
  timestamp: {{path: ts, unit: s}}
models:
  - name: {model}
    version: "3"
    select: {{field: model, equals: {model}}}
    baseline: {baseline}
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


# --------------------------------------------------------------------------- modules


def _load_by_path(name: str, path: Path) -> ModuleType:
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def procs() -> ModuleType:
    """tests/deploy/procs.py, under the plain name `procs` as tests/deploy imports it (one
    module, one atexit registry of live servers)."""
    folder = str(PROCS_PY.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module("procs")


def grafana_generator() -> ModuleType:
    """grafana/generate.py (a script), under the name tests/deploy/conftest.py uses."""
    return _load_by_path("streamdrift_grafana_generate", GRAFANA_GENERATOR)


def broker_module() -> ModuleType:
    """The local broker launcher, :mod:`stream.broker`."""
    import stream.broker

    return stream.broker


# --------------------------------------------------------------------------- data


def make_events(rng: np.random.Generator, n: int, drift: bool, ts: float) -> list[bytes]:
    """`n` events of model m1; with `drift`, x1's mean is shifted by DRIFT_SHIFT sigma."""
    x1 = np.clip(rng.normal(DRIFT_SHIFT if drift else 0.0, 1.0, n), *BOUNDS["x1"])
    x2 = np.clip(rng.lognormal(0.0, 0.5, n), *BOUNDS["x2"])
    c1 = rng.choice(np.array(["a", "b", "c"]), n, p=[0.5, 0.3, 0.2])
    c2 = rng.choice(np.array(["u", "v"]), n)
    score = np.clip(rng.beta(2.0, 5.0, n), *BOUNDS["score"])
    return [orjson.dumps({"model": MODEL, "ts": ts,
                          "f": {"x1": float(x1[i]), "x2": float(x2[i]), "c1": str(c1[i]),
                                "c2": str(c2[i])},
                          "p": {"score": float(score[i])}})
            for i in range(n)]


def write_reference(path: Path, n: int = 10_000, seed: int = 99) -> Path:
    rng = np.random.default_rng(seed)
    events = make_events(rng, n, drift=False, ts=1.7e9)
    # Both ends of every clipped column are tied in the reference: the baseline then
    # expects no value outside its [min, max] and no live value can fall outside it.
    cols = {name: np.array([orjson.loads(e)["p" if name == "score" else "f"][name]
                            for e in events]) for name in BOUNDS}
    for name, (lo, hi) in BOUNDS.items():
        assert (cols[name] == lo).sum() >= 2 and (cols[name] == hi).sum() >= 2, name
    path.write_bytes(b"\n".join(events) + b"\n")
    return path


def write_streamdrift_config(path: Path, *, bootstrap: str, topic: str, dead_letter: str,
                             baseline: str, port: int) -> Path:
    path.write_text(STREAMDRIFT_CONFIG.format(
        bootstrap=bootstrap, topic=topic, group=f"g-{topic}", dead_letter=dead_letter,
        model=MODEL, baseline=baseline, port=port), encoding="utf-8")
    return path


def build_baseline(workdir: Path, bootstrap: str) -> Path:
    """Profile and calibrate once (`streamdrift baseline`); every run then loads the file."""
    reference = write_reference(workdir / "reference.jsonl")
    config = write_streamdrift_config(
        workdir / "baseline.yaml", bootstrap=bootstrap, topic="unused", dead_letter="unused-dl",
        baseline=f"{{reference: {reference.name}}}", port=0)
    out = workdir / f"{MODEL}.baseline.json"
    proc = subprocess.run([sys.executable, "-m", "stream.cli", "baseline", "-c", str(config),
                           "-o", str(out), "--no-progress"],
                          capture_output=True, timeout=120, cwd=workdir)
    if proc.returncode != 0:
        raise RuntimeError(f"streamdrift baseline failed ({proc.returncode}):\n"
                           f"{proc.stderr.decode(errors='replace')[-3000:]}")
    return out


# --------------------------------------------------------------------------- configurations


def rule_file_copy(src: Path, dst: Path, for_: str = SHORT_FOR) -> tuple[Path, int]:
    """`src` with the duration of every `for:` replaced by `for_`; returns (dst, count).

    The copy is re-read and compared with the original: only the `for:` values differ.
    """
    original = yaml.safe_load(src.read_text(encoding="utf-8"))
    doc = yaml.safe_load(src.read_text(encoding="utf-8"))
    count = 0
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


def alertmanager_config(dst: Path, webhook_netloc: str, *, group_wait: str = "1s",
                        group_interval: str = "2s") -> Path:
    """deploy/alertmanager/alertmanager.yml for the test (see the module docstring)."""
    cfg = yaml.safe_load(ALERTMANAGER_YML.read_text(encoding="utf-8"))
    for receiver in cfg["receivers"]:
        kinds = sorted(k for k in receiver if k.endswith("_configs"))
        assert kinds == ["webhook_configs"], (
            f"receiver {receiver['name']} uses {kinds}: this test can only redirect webhooks")
        for hook in receiver["webhook_configs"]:
            hook["url"] = urlunsplit(urlsplit(hook["url"])._replace(scheme="http",
                                                                    netloc=webhook_netloc))

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


# --------------------------------------------------------------------------- processes


def poll(predicate: Callable[[], Any], timeout: float, message: str, *,
         alive: Callable[[], None] | None = None, interval: float = 0.2,
         details: Callable[[], str] | None = None) -> Any:
    """Poll `predicate()` until it returns a truthy value (returned). `alive()` is called
    first on every round and its exception propagates at once (a dead process fails fast);
    exceptions of `predicate` are retried. After `timeout` s: AssertionError with `details()`.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if alive is not None:
            alive()
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - e.g. a server not answering yet
            last_error = exc
        if time.monotonic() > deadline:
            extra = f"\n{details()}" if details is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message} "
                                 f"(last error: {last_error!r}){extra}")
        time.sleep(interval)


class Webhook:
    """HTTP server recording every Alertmanager notification."""

    @dataclass(frozen=True)
    class Notification:
        at: float  # time.monotonic() of the delivery
        path: str
        payload: dict

        @property
        def alertnames(self) -> set[str]:
            return {a["labels"].get("alertname", "") for a in self.payload.get("alerts", [])}

    def __init__(self) -> None:
        self.received: list[Webhook.Notification] = []
        lock = threading.Lock()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    payload = json.loads(body or b"{}")
                except ValueError:
                    payload = {"unparsable": body.decode(errors="replace")}
                with lock:
                    received.append(Webhook.Notification(time.monotonic(), self.path, payload))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="webhook")
        self.thread.start()
        self.netloc = f"127.0.0.1:{self.server.server_port}"

    def notifications(self) -> list[Webhook.Notification]:
        return list(self.received)

    def summary(self) -> str:
        return "\n".join(
            f"  {n.path} status={n.payload.get('status')} "
            + ", ".join(sorted(f"{a['labels'].get('alertname')}{{feature="
                               f"{a['labels'].get('feature', '')}}}={a.get('status')}"
                               for a in n.payload.get("alerts", [])))
            for n in self.notifications()) or "  (none)"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class StreamdriftRun:
    """`streamdrift run` as a real subprocess (stderr kept in a file beside the config)."""

    def __init__(self, config: Path, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.stderr = config.with_suffix(".stderr")
        self._err = self.stderr.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "--log-level", "info", "run", "-c", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._err,
            cwd=config.parent, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def scrape(self) -> str:
        with urllib.request.urlopen(self.url, timeout=5) as resp:
            return resp.read().decode()

    def value(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.scrape()):
            for s in family.samples:
                if s.name == name and s.labels == labels:
                    return float(s.value)
        return float("nan")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"streamdrift run exited with {self.proc.returncode}:\n"
                                 f"{self.log_tail()}")

    def wait_serving(self, timeout: float = 60) -> None:
        poll(lambda: self.scrape() is not None, timeout, f"streamdrift metrics at {self.url}",
             alive=self.check_alive, details=self.log_tail)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.stderr.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._err.close()
        return self.proc.returncode


class EventProducer(threading.Thread):
    """Produces events at a steady `rate` per second until stopped or `total` are sent.

    Events are clean until `drift_after` events have been sent and `drift_gate` is set
    (never drifting when `drift_after` is None), then x1 is shifted for good. `bad_at` maps
    an event count to the poison message sent right after it. `messages` counts everything
    sent (events and poison messages).
    """

    def __init__(self, bootstrap: str, topic: str, *, rate: float, seed: int,
                 drift_after: int | None = None, total: int | None = None,
                 bad_at: dict[int, bytes] | None = None) -> None:
        super().__init__(name=f"producer-{topic}", daemon=True)
        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate
        self.rng = np.random.default_rng(seed)
        self.drift_after, self.total = drift_after, total
        self.bad_at = dict(bad_at or {})
        self.halt = threading.Event()
        self.drift_gate = threading.Event()
        self.events = 0
        self.messages = 0
        self.drift_started: float | None = None  # time.monotonic() of the first drifted event
        self.error: BaseException | None = None

    def run(self) -> None:
        from kafka import KafkaProducer

        producer = None
        try:
            producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5,
                                     max_request_size=1_048_576)
            t0 = time.monotonic()
            while not self.halt.is_set() and (self.total is None or self.events < self.total):
                due = int((time.monotonic() - t0) * self.rate) + 1
                if self.total is not None:
                    due = min(due, self.total)
                while self.events < due:
                    drifting = (self.drift_after is not None and self.drift_gate.is_set()
                                and self.events >= self.drift_after)
                    stop_at = due
                    if self.drift_after is not None and self.events < self.drift_after:
                        stop_at = min(stop_at, self.drift_after)
                    stop_at = min([stop_at, *(k for k in self.bad_at if k > self.events)])
                    n = stop_at - self.events
                    for msg in make_events(self.rng, n, drifting, time.time()):
                        producer.send(self.topic, msg)
                    if drifting and self.drift_started is None:
                        self.drift_started = time.monotonic()
                    self.events += n
                    self.messages += n
                    if self.events in self.bad_at:
                        producer.send(self.topic, self.bad_at.pop(self.events))
                        self.messages += 1
                producer.flush(timeout=30)
                self.halt.wait(0.05)
        except BaseException as exc:  # noqa: BLE001 - reported by check()
            self.error = exc
        finally:
            if producer is not None:
                with contextlib.suppress(Exception):
                    producer.flush(timeout=30)
                    producer.close(timeout=10)

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"the event producer failed: {self.error!r}")

    def stop(self) -> None:
        self.halt.set()
        self.join(40)


# --------------------------------------------------------------------------- the pipeline


def query(prom: Any, expr: str, at: float | None = None) -> list[dict]:
    """Instant query via /api/v1/query; the result as a list of series (a scalar or string
    result becomes one series without labels)."""
    params: dict[str, Any] = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    reply = prom.get_json("/api/v1/query", timeout=15, **params)
    assert reply["status"] == "success", (expr, reply)
    data = reply["data"]
    if data["resultType"] in ("scalar", "string"):
        return [{"metric": {}, "value": data["result"]}]
    return data["result"]


def query_range(prom: Any, expr: str, start: float, end: float, step: float) -> list[dict]:
    reply = prom.get_json("/api/v1/query_range", timeout=15, query=expr, start=f"{start:.3f}",
                          end=f"{end:.3f}", step=f"{step}")
    assert reply["status"] == "success", (expr, reply)
    return reply["data"]["result"]


def finite_values(result: Iterable[dict]) -> list[float]:
    out = []
    for series in result:
        points = series.get("values") or [series.get("value")]
        for point in points:
            if point is not None and np.isfinite(float(point[1])):
                out.append(float(point[1]))
    return out


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
    pm = procs()
    broker = broker_module()
    workdir.mkdir(parents=True, exist_ok=True)
    suffix = uuid.uuid4().hex[:10]
    pipe = Pipeline(name=name, workdir=workdir, bootstrap=bootstrap,
                    topic=f"sd-e2e-{name}-{suffix}", dead_letter_topic=f"sd-e2e-{name}-dl-{suffix}")
    stack = pipe._exit
    try:
        for topic in (pipe.topic, pipe.dead_letter_topic):
            broker.create_topic(bootstrap, topic, 1)
        stack.callback(_delete_topics, broker, bootstrap, [pipe.topic, pipe.dead_letter_topic])

        pipe.webhook = Webhook()
        stack.callback(pipe.webhook.stop)
        am_config = alertmanager_config(workdir / "alertmanager.yml", pipe.webhook.netloc)
        pipe.alertmanager = pm.start_alertmanager(am_config, timeout=30)
        stack.callback(pipe.alertmanager.stop)

        port = pm.free_port()
        config = write_streamdrift_config(
            workdir / "streamdrift.yaml", bootstrap=bootstrap, topic=pipe.topic,
            dead_letter=pipe.dead_letter_topic, baseline=f"{{file: {baseline}}}", port=port)
        pipe.run = StreamdriftRun(config, port)
        stack.callback(pipe.run.stop)
        pipe.run.wait_serving(timeout=60)

        bad_at = {bad_after + k * bad_every: msg for k, (msg, _) in enumerate(BAD_MESSAGES)}
        pipe.producer = EventProducer(bootstrap, pipe.topic, rate=rate, seed=seed,
                                      drift_after=drift_after, total=total, bad_at=bad_at)
        pipe.producer.start()
        stack.callback(pipe.producer.stop)

        poll(lambda: pipe.run.value("streamdrift_events_consumed_total") > 0, 60,
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
        pipe.prometheus = pm.start_prometheus(
            prom_config(alert_rules=False), timeout=30,
            extra_args=["--rules.alert.resend-delay=1s"])
        stack.callback(pipe.prometheus.stop)

        # Prometheus hands its targets to the scrapers only after up to 5 s (the discovery
        # manager's update interval) and the first scrape comes up to one interval later:
        # `absent(up{job="streamdrift"})` holds for about 6 s after start-up, which a
        # `for:` shortened to 5 s turns into a StreamdriftTargetAbsent page (with the
        # shipped `for: 5m` it never fires). So the alert rules are loaded once the target
        # has been scraped.
        poll(lambda: pipe.query('up{job="streamdrift"} == 1'), 30,
             "Prometheus scraping streamdrift", alive=pipe.check_alive, details=pipe.diagnostics)
        prom_config(alert_rules=True)
        pipe.prometheus.post_json("/-/reload", {})
        expected_groups = {g["name"] for entry in yaml.safe_load(
            PROMETHEUS_YML.read_text(encoding="utf-8"))["rule_files"]
            for g in yaml.safe_load((PROMETHEUS_YML.parent / entry).read_text(
                encoding="utf-8"))["groups"]}

        def rules_loaded() -> bool:
            groups = pipe.prometheus.get_json("/api/v1/rules")["data"]["groups"]
            return {g["name"] for g in groups} == expected_groups

        poll(rules_loaded, 30, "the alert rules loaded", details=pipe.diagnostics)

        # The drift (if any) starts once Prometheus has scraped the clean state a few times:
        # the alarm counters go from 0 to 1 under its eyes (dashboards' alarm panels).
        poll(lambda: pipe.query('count_over_time(up{job="streamdrift"}[1m]) >= 3'), 30,
             "three scrapes of streamdrift", alive=pipe.check_alive, details=pipe.diagnostics)
        pipe.producer.drift_gate.set()
    except BaseException:
        stack.close()
        raise
    return pipe


def _delete_topics(broker: ModuleType, bootstrap: str, names: list[str]) -> None:
    with contextlib.suppress(Exception):
        broker.delete_topics(bootstrap, names, timeout=10)


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
