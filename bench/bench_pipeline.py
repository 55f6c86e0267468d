"""End-to-end throughput, lag and memory of ``streamdrift run`` against a real Kafka broker.

Starts the local broker (:mod:`stream.broker`), produces N synthetic inference
events of about 700 bytes (20 columns: 14 numeric features, some of them integers, 4
categorical features, a numeric and a categorical prediction; plus a ``model`` field,
ids, client info and a timestamp), builds the model's baseline from reference data once,
and then measures, each consumer pinned to ONE core (the broker, the producer and this
orchestrating process share the other one):

1. throughput: a :class:`stream.runtime.runner.KafkaRunner` with every default detector reads
   all N events, from subscription until the last one is processed; the wall time is
   split into Kafka client (``poll``), decode, detectors and commit by timing
   ``Pipeline.process`` and ``BatchDecoder.decode`` on the same batches in the same run.
   The same ``Pipeline`` fed by confluent-kafka's consumer (when installed), the two
   consumers alone (no processing: the client's ceiling), and a naive loop (what a user
   writes: kafka-python with batched polls, ``orjson.loads``, one ``river.drift.ADWIN`` per
   numeric column, a dict per categorical column) read the same topic;
2. a cProfile of the KafkaRunner path;
3. lag: events produced at half the measured max rate for ``--lag-seconds``, each carrying
   its produce time; p50/p99 of (end of the processing of its batch - produce time), i.e.
   the time until the event is reflected in the next scrape of ``/metrics``, which is
   scraped a few times (duration and number of series);
4. soak: ``--soak-minutes`` at a steady rate, RSS of the consumer every 10 s and the
   number of series on ``/metrics`` at start and end.

Prints a markdown table (stdout) and writes ``bench/results/pipeline.md``; progress goes
to stderr.  ``docs/performance.md`` explains the figures.

Usage::

    .venv/bin/python bench/bench_pipeline.py --quick        # ~3 min
    .venv/bin/python bench/bench_pipeline.py                # ~20 min (10 min soak)
    .venv/bin/python bench/bench_pipeline.py --soak-minutes 30 --partitions 1,2
"""

from __future__ import annotations

import os

# single-threaded numeric libraries in this process and in every worker it starts
for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib.util  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "pipeline.md"
if str(REPO) not in sys.path:  # `python bench/bench_pipeline.py` from anywhere
    sys.path.insert(0, str(REPO))

N_NUMERIC = 14
N_INT = 3  # num_0 .. num_2 are integers
N_CATEGORICAL = 4
REFERENCE_EVENTS = 20_000
MODEL = "credit"
GOAL_EPS = 100_000
GOAL_CONFLUENT_EPS = 200_000  # issue #17: `run` with confluent-kafka, per CPU-second
GOAL_RATIO = 7.0
GOAL_P99_S = 1.0
GOAL_RSS_GROWTH = 0.05  # "flat": < 5 % growth after warm-up
# lag histogram: 8 decades from 10 µs, 400 bins per decade (0.6 % resolution)
LAG_EDGES_LOG10 = (-5.0, 3.0, 3200)

COUNTRIES = ["DE", "FR", "US", "GB", "ES", "IT", "NL", "PL", "SE", "BR"]
CHANNELS = ["web", "mobile-app", "branch", "partner-api", "call-center"]
DEVICES = ["ios", "android", "desktop"]
SEGMENTS = ["retail", "premium", "business", "student"]
LABELS = ["approve", "review", "decline"]
LOCALES = ["de-DE", "fr-FR", "en-US", "en-GB", "es-ES"]
USER_AGENTS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/124.0 Mobile Safari",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0 Safari/537.36",
]


def log(msg: str) -> None:
    print(f"[bench_pipeline {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# events, configuration
# ---------------------------------------------------------------------------------------
def columns() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    features = [{"name": f"num_{i}", "path": f"features.num_{i}", "type": "numeric"}
                for i in range(N_NUMERIC)]
    features += [{"name": f"cat_{i}", "path": f"features.cat_{i}", "type": "categorical"}
                 for i in range(N_CATEGORICAL)]
    predictions = [{"name": "score", "path": "prediction.score", "type": "numeric"},
                   {"name": "label", "path": "prediction.label", "type": "categorical"}]
    return features, predictions


def make_bodies(n: int, seed: int) -> list[bytes]:
    """``n`` JSON events without their closing brace: append ``,"ts":<float>}``."""
    import numpy as np
    import orjson

    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    ints = [rng.integers(18, 90, n), rng.integers(0, 50, n), rng.integers(0, 480, n)]
    floats = [
        np.round(rng.lognormal(10.8, 0.4, n), 2),
        rng.beta(2, 5, n),
        np.round(rng.gamma(2.0, 40.0, n), 2),
    ]
    floats += [np.round(rng.normal(100.0 + 10 * j, 15.0 + j, n), 6)
               for j in range(N_NUMERIC - N_INT - len(floats))]
    numeric = [a.tolist() for a in ints + floats]
    cats = [COUNTRIES, CHANNELS, DEVICES, SEGMENTS]
    cat_idx = [rng.integers(0, len(c), n).tolist() for c in cats]
    score = rng.beta(2, 5, n).tolist()
    label_idx = rng.integers(0, len(LABELS), n).tolist()
    out = []
    for i in range(n):
        features: dict[str, Any] = {f"num_{j}": numeric[j][i] for j in range(N_NUMERIC)}
        for j in range(N_CATEGORICAL):
            features[f"cat_{j}"] = cats[j][cat_idx[j][i]]
        event = {
            "model": MODEL,
            "model_version": "2024-06-01",
            "request_id": f"req-{seed:04d}-{i:012d}",
            "trace_id": f"{prng.getrandbits(128):032x}",
            "tenant": "acme-retail-eu",
            "client": {"ip": f"10.{prng.randrange(256)}.{prng.randrange(256)}."
                             f"{prng.randrange(256)}",
                       "locale": LOCALES[i % len(LOCALES)],
                       "user_agent": USER_AGENTS[i % len(USER_AGENTS)]},
            "served_by": f"credit-scorer-{prng.randrange(8)}.prod.svc.cluster.local",
            "features": features,
            "prediction": {"score": score[i], "label": LABELS[label_idx[i]]},
        }
        out.append(orjson.dumps(event)[:-1])
    return out


def stamp(body: bytes, ts: float) -> bytes:
    return body + b',"ts":%.6f}' % ts


def write_config(workdir: Path, bootstrap: str, topic: str, group: str,
                 options: dict[str, Any] | None = None, client: str | None = None) -> Path:
    import yaml

    features, predictions = columns()
    cfg = {
        "source": {
            "kafka": {"bootstrap_servers": bootstrap, "topics": [topic], "group_id": group,
                      "auto_offset_reset": "earliest"},
            "timestamp": {"path": "ts", "unit": "s"},
        },
        "models": [{"name": MODEL, "version": "1",
                    "select": {"field": "model", "equals": MODEL},
                    "baseline": {"reference": "reference.jsonl"},
                    "features": features, "predictions": predictions}],
        "metrics": {"host": "127.0.0.1", "port": 0},
    }
    if options:
        cfg["source"]["kafka"]["options"] = options
    if client:
        cfg["source"]["kafka"]["client"] = client
    path = workdir / f"config-{group}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------
def rss_kb(pid: int | str = "self") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pin(core: int | None, pid: int = 0) -> None:
    if core is None:
        return
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(pid, {core})


def pin_all_threads(pid: int, core: int | None) -> None:
    if core is None:
        return
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return
    for tid in tids:
        pin(core, tid)


def machine() -> str:
    import numpy as np

    cpu = platform.processor() or "cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"numpy {np.__version__}")


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def scrape(port: int, timeout: float = 10.0) -> tuple[float, str]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        text = r.read().decode()
    return time.perf_counter() - t0, text


def series_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def metric_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return math.nan


def has_confluent() -> bool:
    return importlib.util.find_spec("confluent_kafka") is not None


def kafka_python_crc() -> str:
    """Which CRC-32C kafka-python checks fetched record batches with."""
    from kafka.record import util

    return "pure Python" if util.crc32c_c is None else "C (crc32c package)"


class LagHistogram:
    """Constant-memory histogram of lags in seconds (log bins), with exact max."""

    def __init__(self) -> None:
        import numpy as np

        lo, hi, n = LAG_EDGES_LOG10
        self.edges = np.logspace(lo, hi, n + 1)
        self.counts = np.zeros(n + 2, dtype=np.int64)
        self.max = 0.0
        self.sum = 0.0

    def add(self, lags: Any) -> None:
        import numpy as np

        if not len(lags):
            return
        idx = np.searchsorted(self.edges, lags, side="right")
        self.counts += np.bincount(idx, minlength=self.counts.shape[0])
        self.max = max(self.max, float(lags.max()))
        self.sum += float(lags.sum())

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def quantile(self, q: float) -> float:
        """Upper edge of the bin holding the q-quantile (conservative)."""
        import numpy as np

        total = self.n
        if not total:
            return math.nan
        k = int(np.searchsorted(np.cumsum(self.counts), q * total, side="left"))
        if k == 0:
            return float(self.edges[0])
        if k >= len(self.edges):
            return self.max
        return min(float(self.edges[k]), self.max)

    def summary(self) -> dict[str, float]:
        return {"n": self.n, "p50": self.quantile(0.50), "p90": self.quantile(0.90),
                "p99": self.quantile(0.99), "p999": self.quantile(0.999), "max": self.max,
                "mean": self.sum / self.n if self.n else math.nan}


# ---------------------------------------------------------------------------------------
# workers: each runs in its own process, pinned to one core
# ---------------------------------------------------------------------------------------
SEGMENTS = ("poll", "decode", "process", "commit", "checkpoint", "lag_refresh")


class Stats:
    """Time split of one consumer run: wall (perf_counter) and main-thread CPU seconds."""

    def __init__(self) -> None:
        self.wall = dict.fromkeys(SEGMENTS, 0.0)
        self.cpu = dict.fromkeys(SEGMENTS, 0.0)
        self.polls = self.empty_polls = self.batches = 0
        self.t_first: float | None = None
        self.start = (0.0, 0.0, 0.0)  # perf_counter, process CPU, main-thread CPU
        #: at the first record: (process CPU, main-thread CPU, wall and CPU per segment)
        self.at_first: tuple[float, float, dict[str, float], dict[str, float]] | None = None
        self.frozen: dict[str, Any] | None = None
        self.profiler: Any = None

    def begin(self) -> None:
        self.start = (time.perf_counter(), time.process_time(), time.thread_time())

    def first(self, t: float) -> None:
        """The first record arrived at ``t``: what follows is the steady state (start-up,
        i.e. client creation, group join, state restore, is before)."""
        self.t_first = t
        self.at_first = (time.process_time(), time.thread_time(), dict(self.wall),
                         dict(self.cpu))
        if self.profiler is not None:  # the profile is of the steady state
            self.profiler.enable()

    def add(self, key: str, t0: float, c0: float) -> float:
        t1 = time.perf_counter()
        self.wall[key] += t1 - t0
        self.cpu[key] += time.thread_time() - c0
        return t1

    def as_dict(self) -> dict[str, Any]:
        return {"wall": dict(self.wall), "cpu": dict(self.cpu), "polls": self.polls,
                "empty_polls": self.empty_polls, "batches": self.batches}

    def freeze(self, consumed: int) -> None:
        """The figures at the moment the target count is processed."""
        t, c, m = time.perf_counter(), time.process_time(), time.thread_time()
        if self.profiler is not None:
            self.profiler.disable()
        t0, c0, m0 = self.start
        first = self.t_first if self.t_first is not None else t0
        self.frozen = {**self.as_dict(), "events": consumed, "wall_s": t - t0,
                       "steady_s": t - first, "join_s": first - t0, "cpu_s": c - c0,
                       "cpu_main_s": m - m0}
        if self.at_first is not None:
            c1, m1, wall1, cpu1 = self.at_first
            self.frozen["steady"] = {
                "cpu_s": c - c1, "cpu_main_s": m - m1,
                "wall": {k: v - wall1[k] for k, v in self.wall.items()},
                "cpu": {k: v - cpu1[k] for k, v in self.cpu.items()}}


def _instrumented(config: Any, baselines: Any, stats: Stats, target: int | None,
                  lag: LagHistogram | None = None, warmup_s: float = 0.0) -> Any:
    """A Pipeline subclass timing process() and decode(), recording lags if asked."""
    import numpy as np

    from stream.engine.pipeline import Pipeline

    class TimedDecoder:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def decode(self, messages: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            out = self.inner.decode(messages)
            stats.add("decode", t0, c0)
            return out

    first_ts: list[float] = []

    class TimedPipeline(Pipeline):
        def process(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            out = super().process(messages, *args, **kwargs)
            stats.add("process", t0, c0)
            stats.batches += 1
            if lag is not None:
                wall = time.time()
                ts = out[1].models[MODEL].timestamps
                if ts is not None and len(ts):
                    if not first_ts:
                        first_ts.append(float(np.nanmin(ts)))
                    ts = ts[ts >= first_ts[0] + warmup_s]
                    lag.add(np.maximum(wall - ts, 1e-6))
            if target is not None and stats.frozen is None and self.consumed >= target:
                stats.freeze(self.consumed)
            return out

    pipeline = TimedPipeline(config, baselines)
    pipeline.decoder = TimedDecoder(pipeline.decoder)
    return pipeline


def _warm_up(config: Any, baselines: Any) -> None:
    """Load numba's cached kernels and touch every code path on a throwaway pipeline."""
    from stream.engine.pipeline import Pipeline

    bodies = make_bodies(4000, seed=99)
    now = time.time()
    warm = Pipeline(config, baselines)
    for k in range(0, len(bodies), 2000):
        warm.process([stamp(b, now) for b in bodies[k:k + 2000]])


def _kafka_runner(config: Any, pipeline: Any, stats: Stats, stop: threading.Event,
                  on_assigned: Any = None) -> Any:
    from stream.runtime.runner import KafkaRunner

    class TimedConsumer:
        def __init__(self, inner: Any) -> None:
            self._c = inner
            self._assigned = False

        def poll(self, *a: Any, **kw: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            out = self._c.poll(*a, **kw)
            t1 = stats.add("poll", t0, c0)
            stats.polls += 1
            if out:
                if stats.t_first is None:
                    stats.first(t1)
            else:
                stats.empty_polls += 1
            if not self._assigned and on_assigned is not None and self._c.assignment():
                self._assigned = True
                on_assigned()
            return out

        def commit(self, *a: Any, **kw: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return self._c.commit(*a, **kw)
            finally:
                stats.add("commit", t0, c0)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._c, name)

    class TimedRunner(KafkaRunner):
        def _consumer(self) -> Any:
            return TimedConsumer(super()._consumer())

    runner = TimedRunner(config, pipeline, stop)
    # time the runner's own broker calls where it has them (consumer lag, state checkpoints)
    for method, key in (("_update_lag", "lag_refresh"), ("_checkpoint", "checkpoint")):
        inner = getattr(runner, method, None)
        if inner is not None:
            setattr(runner, method, _timed(inner, stats, key))
    return runner


def _timed(fn: Any, stats: Stats, key: str) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            stats.add(key, t0, c0)

    return wrapper


def _result_from(stats: Stats, n: int, extra: dict[str, Any]) -> dict[str, Any]:
    if stats.frozen is None:
        raise RuntimeError(f"the run ended before {n} events were processed")
    return {**extra, **stats.frozen, "rss_kb": rss_kb()}


def worker_run(spec: dict[str, Any]) -> dict[str, Any]:
    """streamdrift's KafkaRunner (kafka-python) over N pre-produced events."""
    from stream.config import load_config
    from stream.engine.baselines import resolve_baselines

    config = load_config(spec["config"])
    baselines = resolve_baselines(config)
    _warm_up(config, baselines)
    stats = Stats()
    pipeline = _instrumented(config, baselines, stats, spec["n"])
    runner = _kafka_runner(config, pipeline, stats, threading.Event())
    if spec.get("profile"):
        import cProfile

        stats.profiler = cProfile.Profile()  # from the first record to Stats.freeze
    stats.begin()
    runner.run(max_events=spec["n"], idle_timeout=spec.get("idle_timeout", 60.0))
    out = _result_from(stats, spec["n"], {"client": "kafka-python"})
    if stats.profiler is not None:
        out["profile"] = profile_report(stats.profiler, spec.get("profile_top", 25))
    return out


def worker_run_loop(spec: dict[str, Any]) -> dict[str, Any]:
    """KafkaRunner's loop and client alone: ``Pipeline.process`` only counts the values
    (no decode, no detectors), so what is measured is the runner's own cost per event
    (poll, record handling, commits, lag checks) against the client alone."""
    import numpy as np

    from stream.config import load_config
    from stream.engine.baselines import resolve_baselines
    from stream.engine.pipeline import Pipeline

    config = load_config(spec["config"])
    stats = Stats()
    pipeline = Pipeline(config, resolve_baselines(config))

    class Empty:
        invalid_positions = np.empty(0, np.int64)
        invalid_reasons: list[str] = []

    def process(messages: Any, *args: Any, **kwargs: Any) -> Any:
        pipeline.consumed += len(messages)
        stats.batches += 1
        if stats.frozen is None and pipeline.consumed >= spec["n"]:
            stats.freeze(pipeline.consumed)
        return [], Empty

    pipeline.process = process  # type: ignore[method-assign]
    runner = _kafka_runner(config, pipeline, stats, threading.Event())
    stats.begin()
    runner.run(max_events=spec["n"], idle_timeout=spec.get("idle_timeout", 60.0))
    return _result_from(stats, spec["n"], {"client": config.source.kafka.client})


def worker_run_confluent(spec: dict[str, Any]) -> dict[str, Any]:
    """The same Pipeline fed by confluent-kafka's consumer (batch consume, sync commit)."""
    from confluent_kafka import Consumer, KafkaError

    from stream.config import load_config
    from stream.engine.baselines import resolve_baselines
    from stream.engine.pipeline import Pipeline

    config = load_config(spec["config"])
    baselines = resolve_baselines(config)
    _warm_up(config, baselines)
    k = config.source.kafka
    stats = Stats()
    pipeline = _instrumented(config, baselines, stats, spec["n"])
    per_partition = "partition" in inspect.signature(Pipeline.process).parameters
    stats.begin()
    consumer = Consumer({"bootstrap.servers": ",".join(k.bootstrap_servers),
                         "group.id": k.group_id, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe(list(k.topics))
    consumed = 0
    idle_since = time.monotonic()
    try:
        while consumed < spec["n"]:
            t0, c0 = time.perf_counter(), time.thread_time()
            msgs = consumer.consume(num_messages=k.max_poll_records,
                                    timeout=k.poll_timeout_ms / 1000)
            t1 = stats.add("poll", t0, c0)
            stats.polls += 1
            by_partition: dict[tuple[str, int], list[bytes]] = {}
            for m in msgs:
                err = m.error()
                if err is None:
                    by_partition.setdefault((m.topic(), m.partition()), []).append(
                        m.value() or b"")
                elif err.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"consume: {err}")
            if not by_partition:
                stats.empty_polls += 1
                if time.monotonic() - idle_since > spec.get("idle_timeout", 60.0):
                    break
                continue
            if stats.t_first is None:
                stats.first(t1)
            for key in sorted(by_partition):  # detector state per partition, like KafkaRunner
                values = by_partition[key]
                if per_partition:
                    pipeline.process(values, base_index=consumed, partition=key)
                else:
                    pipeline.process(values, base_index=consumed)
                consumed += len(values)
            t0, c0 = time.perf_counter(), time.thread_time()
            consumer.commit(asynchronous=False)
            stats.add("commit", t0, c0)
            idle_since = time.monotonic()
    finally:
        consumer.close()
    return _result_from(stats, spec["n"], {"client": "confluent-kafka"})


def worker_client_only(spec: dict[str, Any]) -> dict[str, Any]:
    """The consumer alone: poll batches, take the values, commit; no processing."""
    from stream.config import load_config

    k = load_config(spec["config"]).source.kafka
    n = spec["n"]
    t0 = time.perf_counter()
    c0 = time.process_time()
    t_first = None
    c_first = c0
    consumed = 0
    if spec["client"] == "kafka-python":
        from kafka import KafkaConsumer

        from stream.sources.kafka import kafka_client_kwargs

        kw = kafka_client_kwargs(k)
        kw.update(group_id=k.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
                  max_poll_records=k.max_poll_records, max_partition_fetch_bytes=1_048_576)
        kw.update(dict(k.options))
        consumer = KafkaConsumer(*k.topics, **kw)
        try:
            while consumed < n:
                polled = consumer.poll(timeout_ms=k.poll_timeout_ms,
                                       max_records=k.max_poll_records)
                values = [r.value for recs in polled.values() for r in recs]
                if values:
                    if t_first is None:
                        t_first, c_first = time.perf_counter(), time.process_time()
                    consumer.commit()
                    consumed += len(values)
                elif time.perf_counter() - t0 > 120:
                    break
        finally:
            consumer.close()
    else:
        from confluent_kafka import Consumer

        consumer = Consumer({"bootstrap.servers": ",".join(k.bootstrap_servers),
                             "group.id": k.group_id, "auto.offset.reset": "earliest",
                             "enable.auto.commit": False})
        consumer.subscribe(list(k.topics))
        try:
            while consumed < n:
                msgs = consumer.consume(num_messages=k.max_poll_records,
                                        timeout=k.poll_timeout_ms / 1000)
                values = [m.value() for m in msgs if m.error() is None]
                if values:
                    if t_first is None:
                        t_first, c_first = time.perf_counter(), time.process_time()
                    consumer.commit(asynchronous=False)
                    consumed += len(values)
                elif time.perf_counter() - t0 > 120:
                    break
        finally:
            consumer.close()
    t_done, c_done = time.perf_counter(), time.process_time()
    return {"client": spec["client"], "events": consumed, "wall_s": t_done - t0,
            "steady_s": t_done - (t_first or t0), "cpu_s": c_done - c0,
            "steady": {"cpu_s": c_done - c_first},
            "join_s": (t_first or t0) - t0, "rss_kb": rss_kb()}


def worker_naive(spec: dict[str, Any]) -> dict[str, Any]:
    """The loop a user writes: kafka-python with batched polls (``max_poll_records``
    2,000, as streamdrift), ``orjson.loads`` per record, one River ADWIN per numeric
    column, a dict of counts per categorical column."""
    import orjson
    from kafka import KafkaConsumer
    from river.drift import ADWIN

    from stream.config import load_config

    config = load_config(spec["config"])
    k = config.source.kafka
    model = config.models[0]
    numeric = [(c.name, c.path) for c in model.columns if c.type == "numeric"]
    categorical = [(c.name, c.path) for c in model.columns if c.type == "categorical"]
    adwins = {name: ADWIN() for name, _ in numeric}
    counts: dict[str, dict[str, int]] = {name: {} for name, _ in categorical}
    drifts = 0
    n = spec["n"]
    t0 = time.perf_counter()
    c0 = time.process_time()
    consumer = KafkaConsumer(*k.topics, bootstrap_servers=list(k.bootstrap_servers),
                             group_id=k.group_id, auto_offset_reset="earliest",
                             max_poll_records=2000, **dict(k.options))
    t_first = None
    c_first = c0
    consumed = 0
    try:
        while consumed < n:
            polled = consumer.poll(timeout_ms=500, max_records=min(2000, n - consumed))
            if not polled:
                if time.perf_counter() - t0 > 300:
                    break
                continue
            if t_first is None:
                t_first, c_first = time.perf_counter(), time.process_time()
            for recs in polled.values():
                for rec in recs:
                    consumed += 1
                    try:
                        event = orjson.loads(rec.value)
                    except orjson.JSONDecodeError:
                        continue
                    if type(event) is not dict or event.get("model") != MODEL:
                        continue
                    for name, path in numeric:
                        node = event
                        for key in path:
                            node = node.get(key) if isinstance(node, dict) else None
                        if isinstance(node, int | float) and not isinstance(node, bool):
                            det = adwins[name]
                            det.update(node)
                            drifts += det.drift_detected
                    for name, path in categorical:
                        node = event
                        for key in path:
                            node = node.get(key) if isinstance(node, dict) else None
                        if node is not None:
                            table = counts[name]
                            table[node] = table.get(node, 0) + 1
    finally:
        t_done = time.perf_counter()
        c_done = time.process_time()
        cpu = c_done - c0
        consumer.close(autocommit=False)
    return {"client": "kafka-python (batched polls)", "events": consumed,
            "wall_s": t_done - t0, "steady_s": t_done - (t_first or t0), "cpu_s": cpu,
            "steady": {"cpu_s": c_done - c_first},
            "join_s": (t_first or t0) - t0, "drifts": drifts, "rss_kb": rss_kb()}


def worker_steady(spec: dict[str, Any]) -> dict[str, Any]:
    """KafkaRunner + /metrics until SIGTERM, recording per-event lag (constant memory)."""
    from stream.config import load_config
    from stream.engine.baselines import resolve_baselines
    from stream.sinks.metrics import serve

    config = load_config(spec["config"])
    baselines = resolve_baselines(config)
    _warm_up(config, baselines)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stats = Stats()
    lag = LagHistogram()
    pipeline = _instrumented(config, baselines, stats, None, lag=lag,
                             warmup_s=spec.get("warmup_s", 3.0))
    ready = Path(spec["ready"])
    port = 0

    def on_assigned() -> None:
        ready.write_text(json.dumps({"port": port, "rss_kb": rss_kb()}))

    runner = _kafka_runner(config, pipeline, stats, stop, on_assigned)
    server, _thread, port = serve(pipeline, "127.0.0.1", 0, health=runner.health)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        runner.run()
    finally:
        server.shutdown()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {**stats.as_dict(), "events": pipeline.consumed, "wall_s": wall, "cpu_s": cpu,
            "lag": lag.summary(), "rss_kb": rss_kb(), "alarms": len(pipeline.recent_alarms)}


def worker_produce(spec: dict[str, Any]) -> dict[str, Any]:
    """Produce at ``rate`` events/s for ``duration`` s, each stamped with its send time."""
    bodies = make_bodies(spec.get("pool", 50_000), seed=spec.get("seed", 11))
    producer = Producer(spec["bootstrap"])
    rate, duration, topic = float(spec["rate"]), float(spec["duration"]), spec["topic"]
    log(f"producer: {rate:,.0f} events/s for {duration:.0f} s into {topic} "
        f"({producer.kind})")
    t0 = time.time()
    sent = 0
    behind_max = 0
    pool = len(bodies)
    while True:
        now = time.time()
        if now - t0 >= duration:
            break
        due = int((now - t0) * rate)
        if due > sent:
            k = min(due - sent, 2000)
            behind_max = max(behind_max, due - sent)
            tail = b',"ts":%.6f}' % now
            for i in range(sent, sent + k):
                producer.send(topic, bodies[i % pool] + tail)
            sent += k
        else:
            producer.idle(0.002)
    producer.close()
    elapsed = time.time() - t0
    return {"sent": sent, "elapsed_s": elapsed, "rate": sent / elapsed, "target": rate,
            "behind_max": behind_max, "kind": producer.kind}


WORKERS = {"run": worker_run, "run-loop": worker_run_loop, "run-confluent": worker_run_confluent,
           "client-only": worker_client_only, "naive": worker_naive,
           "steady": worker_steady, "produce": worker_produce}


def worker_main(role: str, spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    pin(spec.get("core"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator stops us with SIGTERM
    if role != "steady":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = WORKERS[role](spec)
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------------------
# producer (confluent-kafka when installed, else kafka-python)
# ---------------------------------------------------------------------------------------
class Producer:
    def __init__(self, bootstrap: str) -> None:
        self.kind = "confluent-kafka" if has_confluent() else "kafka-python"
        if self.kind == "confluent-kafka":
            from confluent_kafka import Producer as CProducer

            self._p = CProducer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                                 "batch.size": 1_000_000, "acks": 1,
                                 "queue.buffering.max.messages": 1_000_000,
                                 "queue.buffering.max.kbytes": 1_048_576})
        else:
            from kafka import KafkaProducer

            self._p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1,
                                    batch_size=1 << 20, buffer_memory=512 << 20)

    def send(self, topic: str, value: bytes) -> None:
        if self.kind == "kafka-python":
            self._p.send(topic, value)
            return
        while True:
            try:
                self._p.produce(topic, value)
                return
            except BufferError:
                self._p.poll(0.05)

    def idle(self, seconds: float) -> None:
        if self.kind == "kafka-python":
            time.sleep(seconds)
        else:
            self._p.poll(seconds)

    def close(self) -> None:
        if self.kind == "kafka-python":
            self._p.flush(timeout=120)
            self._p.close(timeout=30)
        else:
            left = self._p.flush(120)
            if left:
                raise RuntimeError(f"{left} messages not delivered")


# ---------------------------------------------------------------------------------------
# profile
# ---------------------------------------------------------------------------------------
ENTRY_POINTS = {
    "KafkaConsumer.poll (kafka-python)": ("kafka/consumer/group.py", "poll"),
    "KafkaConsumer.commit (kafka-python)": ("kafka/consumer/group.py", "commit"),
    "Pipeline.process": ("stream/engine/pipeline.py", "process"),
    "BatchDecoder.decode": ("stream/formats/json.py", "decode"),
    "ModelMonitor.update (detectors)": ("detectors/model.py", "update"),
}


def profile_report(profiler: Any, top: int) -> dict[str, Any]:
    import io
    import pstats

    st = pstats.Stats(profiler)
    total = st.total_tt
    entries = {}
    for label, (file_end, func) in ENTRY_POINTS.items():
        best = 0.0
        for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in st.stats.items():
            if name == func and filename.replace(os.sep, "/").endswith(file_end):
                best = max(best, ct)
        entries[label] = best
    buf = io.StringIO()
    st.stream = buf
    st.sort_stats("tottime").print_stats(top)
    lines = buf.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    table = [_short_path(line) for line in lines[start:] if line.strip()]
    return {"total_s": total, "entries": entries, "top_tottime": table}


def _short_path(line: str) -> str:
    for prefix in (str(REPO) + "/", sys.prefix + "/lib/python3.11/site-packages/",
                   sys.base_prefix + "/lib/python3.11/"):
        line = line.replace(prefix, "")
    return line.rstrip()


# ---------------------------------------------------------------------------------------
# the orchestrator
# ---------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.children: list[subprocess.Popen[bytes]] = []
        self.broker: Any = None
        self.tmp: tempfile.TemporaryDirectory[str] | None = None
        self.workdir = Path(args.workdir) if args.workdir else None
        self.results: dict[str, Any] = {"runs": [], "argv": sys.argv[1:]}
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if args.no_pin or len(cpus) < 2:
            self.core = self.other = None
        else:
            self.core, self.other = cpus[0], cpus[-1]
        self.started = time.monotonic()
        self.bootstrap = ""
        self._serial = 0

    # -- processes -------------------------------------------------------------------------
    def worker(self, role: str, spec: dict[str, Any], core: int | None,
               wait: bool = True, timeout: float = 1800.0) -> Any:
        assert self.workdir is not None
        self._serial += 1
        name = f"{self._serial:02d}-{role}"
        spec = {**spec, "core": core, "result": str(self.workdir / f"{name}.result.json")}
        spec_path = self.workdir / f"{name}.spec.json"
        spec_path.write_text(json.dumps(spec))
        logfile = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", role,
             "--spec", str(spec_path)],
            stdout=logfile, stderr=subprocess.STDOUT, cwd=str(REPO),
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        logfile.close()
        proc.name = name  # type: ignore[attr-defined]
        proc.spec = spec  # type: ignore[attr-defined]
        self.children.append(proc)
        if not wait:
            return proc
        return self.collect(proc, timeout)

    def collect(self, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
        assert self.workdir is not None
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop_child(proc)
            raise RuntimeError(f"worker {proc.name} timed out after {timeout:.0f} s") from None  # type: ignore[attr-defined]
        finally:
            if proc in self.children and proc.poll() is not None:
                self.children.remove(proc)
        result = Path(proc.spec["result"])  # type: ignore[attr-defined]
        if rc != 0 or not result.is_file():
            tail = (self.workdir / f"{proc.name}.log").read_text(errors="replace")[-3000:]  # type: ignore[attr-defined]
            raise RuntimeError(f"worker {proc.name} failed (exit {rc}):\n{tail}")  # type: ignore[attr-defined]
        return json.loads(result.read_text())

    def stop_child(self, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc in self.children:
            self.children.remove(proc)

    def cleanup(self) -> None:
        for proc in list(self.children):
            with contextlib.suppress(Exception):
                self.stop_child(proc, timeout=10)
        if self.broker is not None:
            log("stopping the broker")
            with contextlib.suppress(Exception):
                self.broker.stop()
            self.broker = None
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None

    # -- phases ----------------------------------------------------------------------------
    def run(self) -> None:
        if self.workdir is None:
            self.tmp = tempfile.TemporaryDirectory(prefix="sd-bench-pipeline-")
            self.workdir = Path(self.tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        pin(self.other)
        r = self.results
        r["machine"] = machine()
        r["load_start"] = loadavg()
        r["pinning"] = (f"consumers on CPU {self.core}; broker, producer and orchestrator "
                        f"on CPU {self.other}") if self.core is not None else "not pinned"
        r["confluent"] = has_confluent()
        r["kafka_python_crc"] = kafka_python_crc()
        log(f"{r['machine']}; load average {r['load_start']}; {r['pinning']}")

        self.setup_baseline()
        self.start_broker()
        self.throughput()
        for client in self.steady_clients():
            self.lag_phase(client)
            self.soak_phase(client)
        r["load_end"] = loadavg()
        r["total_s"] = time.monotonic() - self.started

    def setup_baseline(self) -> None:
        assert self.workdir is not None
        from stream.config import load_config
        from stream.engine.baselines import resolve_baselines

        log(f"writing {REFERENCE_EVENTS:,} reference events and building the baseline")
        ref = self.workdir / "reference.jsonl"
        if not ref.is_file():
            now = time.time() - 86_400
            ref.write_bytes(b"\n".join(stamp(b, now + i * 0.01) for i, b in
                                       enumerate(make_bodies(REFERENCE_EVENTS, seed=1))) + b"\n")
        cfg = write_config(self.workdir, "127.0.0.1:9", "unused", "baseline")
        t0 = time.monotonic()
        resolve_baselines(load_config(cfg))
        self.results["baseline_s"] = time.monotonic() - t0
        log(f"baseline ready in {self.results['baseline_s']:.1f} s (cached for the workers)")

    def start_broker(self) -> None:
        from stream.broker import LocalBroker, local_broker_unavailable_reason

        why = local_broker_unavailable_reason()
        if why is not None:
            raise RuntimeError(f"the local Kafka broker cannot run here: {why}")
        log("starting the local Kafka broker")
        # bounded disk use over a long soak; the throughput topics stay whole (< 1 GiB)
        self.broker = LocalBroker(partitions=1, extra_properties={
            "log.retention.bytes": 2 << 30, "log.segment.bytes": 256 << 20,
            "log.retention.check.interval.ms": 30_000})
        self.broker.start()
        self.bootstrap = self.broker.bootstrap_servers
        pin_all_threads(self.broker.pid, self.other)
        log(f"broker at {self.bootstrap} (pid {self.broker.pid})")

    def produce_bulk(self, topic: str, n: int) -> dict[str, Any]:
        log(f"generating {n:,} events")
        t0 = time.monotonic()
        bodies = make_bodies(n, seed=2)
        gen_s = time.monotonic() - t0
        producer = Producer(self.bootstrap)
        t0 = time.monotonic()
        for b in bodies:
            producer.send(topic, stamp(b, time.time()))
        producer.close()
        took = time.monotonic() - t0
        size = sum(map(len, bodies)) / n + 20
        log(f"produced {n:,} events of {size:.0f} bytes into {topic} in {took:.1f} s "
            f"({n / took:,.0f} events/s, {producer.kind})")
        return {"events": n, "bytes": size, "produce_s": took, "generate_s": gen_s,
                "kind": producer.kind}

    def _spec(self, topic: str, group: str, options: dict[str, Any] | None = None,
              run_client: str | None = None, **kw: Any) -> dict[str, Any]:
        assert self.workdir is not None
        cfg = write_config(self.workdir, self.bootstrap, topic, group, options, run_client)
        return {"config": str(cfg), "bootstrap": self.bootstrap, "topic": topic, **kw}

    def throughput(self) -> None:
        a = self.args
        n = a.events
        r = self.results
        for parts in a.partitions:
            topic = f"bench-{parts}p"
            self.broker.create_topic(topic, partitions=parts)
            r["produce"] = self.produce_bulk(topic, n)
            no_crc = {"check_crcs": False}
            kp_crc = r["kafka_python_crc"]
            plans: list[tuple[str, str, dict[str, Any]]] = []
            for _rep in range(a.repeat):
                plans.append((f"streamdrift KafkaRunner (kafka-python, {kp_crc} CRC)", "run", {}))
                if kp_crc == "pure Python":
                    plans.append(("streamdrift KafkaRunner (kafka-python, check_crcs: false)",
                                  "run", {"options": no_crc}))
                if r["confluent"]:
                    plans.append(("streamdrift KafkaRunner (confluent-kafka)", "run",
                                  {"run_client": "confluent-kafka"}))
                    plans.append(("streamdrift Pipeline + confluent-kafka consumer",
                                  "run-confluent", {}))
                    plans.append(("KafkaRunner loop alone (confluent-kafka, no decode, no "
                                  "detectors)", "run-loop", {"run_client": "confluent-kafka"}))
            if parts == a.partitions[0]:
                plans.append((f"kafka-python consumer alone ({kp_crc} CRC)", "client-only",
                              {"client": "kafka-python"}))
                if kp_crc == "pure Python":
                    plans.append(("kafka-python consumer alone (check_crcs: false)",
                                  "client-only", {"client": "kafka-python", "options": no_crc}))
                if r["confluent"]:
                    plans.append(("confluent-kafka consumer alone", "client-only",
                                  {"client": "confluent-kafka"}))
                plans.append((f"naive loop (kafka-python batched polls, {kp_crc} CRC, "
                              f"orjson, River ADWIN)", "naive", {"n": min(n, a.naive_events)}))
                if kp_crc == "pure Python":
                    plans.append(("naive loop (kafka-python batched polls, check_crcs: false, "
                                  "orjson, River ADWIN)", "naive",
                                  {"n": min(n, a.naive_events), "options": no_crc}))
                if not a.no_profile:
                    n_prof = min(n, a.profile_events)
                    plans.append(("cProfile: KafkaRunner, default configuration", "run",
                                  {"profile": True, "n": n_prof}))
                    if kp_crc == "pure Python":
                        plans.append(("cProfile: KafkaRunner, check_crcs: false", "run",
                                      {"profile": True, "n": n_prof, "options": no_crc}))
            for i, (label, role, extra) in enumerate(plans):
                group = f"g{i:02d}-{role}-{parts}p"
                options = extra.pop("options", None)
                run_client = extra.pop("run_client", None)
                spec = self._spec(topic, group, options, run_client, **{"n": n, **extra})
                log(f"{label}: {spec['n']:,} events from a {parts}-partition topic ...")
                res = self.worker(role, spec, self.core, timeout=a.worker_timeout)
                res.update(label=label, role=role, partitions=parts, options=options or {},
                           client=run_client or "kafka-python",
                           profile_run=bool(extra.get("profile")))
                r["runs"].append(res)
                log(f"  {res['events']:,} events in {res['wall_s']:.2f} s = "
                    f"{res['events'] / res['wall_s']:,.0f} events/s from subscription, "
                    f"{res['events'] / res['steady_s']:,.0f} from the first record, "
                    f"{res['events'] / res['cpu_s']:,.0f} per CPU-second (load {loadavg()})")
            with contextlib.suppress(Exception):
                from stream.broker import delete_topics

                delete_topics(self.bootstrap, [topic], timeout=10.0)

    def best_default(self, client: str = "kafka-python") -> dict[str, Any]:
        """The fastest KafkaRunner run with the default configuration and ``client``: the
        lag and soak phases of that client run at half its rate."""
        runs = [x for x in self.results["runs"] if x["role"] == "run" and not x["profile_run"]
                and not x["options"] and x.get("client", "kafka-python") == client]
        return max(runs, key=lambda x: x["events"] / x["steady_s"])

    def steady(self, topic: str, rate: float, seconds: float, scrape_every: float,
               rss_every: float | None, client: str = "kafka-python") -> dict[str, Any]:
        assert self.workdir is not None
        self.broker.create_topic(topic, partitions=1)
        ready = self.workdir / f"{topic}.ready"
        ready.unlink(missing_ok=True)  # a kept --workdir holds the last run's
        spec = self._spec(topic, f"g-{topic}", None,
                          None if client == "kafka-python" else client, ready=str(ready),
                          warmup_s=self.args.warmup_seconds)
        consumer = self.worker("steady", spec, self.core, wait=False)
        deadline = time.monotonic() + 120
        while not ready.is_file():
            if consumer.poll() is not None or time.monotonic() > deadline:
                self.collect(consumer, 1)  # raises with the log
                raise RuntimeError("the steady consumer never got its partition")
            time.sleep(0.2)
        info = json.loads(ready.read_text())
        port = info["port"]
        out: dict[str, Any] = {"rate_target": rate, "seconds": seconds,
                               "rss_ready_kb": info["rss_kb"], "scrapes": [], "rss": []}
        pspec = {"bootstrap": self.bootstrap, "topic": topic, "rate": rate,
                 "duration": seconds, "seed": 5}
        producer = self.worker("produce", pspec, self.other, wait=False)
        t0 = time.monotonic()
        next_scrape = t0 + min(scrape_every, 5.0)
        next_rss = t0 + rss_every if rss_every else math.inf
        last_report = t0
        while producer.poll() is None:
            now = time.monotonic()
            if consumer.poll() is not None:
                self.collect(consumer, 1)
                raise RuntimeError("the steady consumer exited early")
            if now >= next_rss:
                out["rss"].append((round(now - t0, 1), rss_kb(consumer.pid)))
                next_rss += rss_every or math.inf
            if now >= next_scrape:
                try:
                    took, text = scrape(port)
                    out["scrapes"].append({
                        "t": round(now - t0, 1), "seconds": took, "series": series_count(text),
                        "event_lag": metric_value(text, "streamdrift_event_lag_seconds"),
                        "consumed": metric_value(text, "streamdrift_events_consumed_total")})
                except OSError as exc:
                    log(f"scrape failed: {exc}")
                next_scrape += scrape_every
            if now - last_report >= 60:
                last_report = now
                consumed = math.nan
                with contextlib.suppress(OSError):
                    consumed = metric_value(scrape(port)[1], "streamdrift_events_consumed_total")
                log(f"  {now - t0:.0f}/{seconds:.0f} s, consumed {consumed:,.0f}, "
                    f"RSS {rss_kb(consumer.pid) / 1024:.0f} MiB (load {loadavg()})")
            time.sleep(0.1)
        prod = self.collect(producer, 60)
        out["producer"] = prod
        # drain: wait until everything sent is processed, then one last scrape
        deadline = time.monotonic() + 120
        consumed = 0.0
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                _took, text = scrape(port)
                consumed = metric_value(text, "streamdrift_events_consumed_total")
                if consumed >= prod["sent"]:
                    break
            time.sleep(0.25)
        out["drained"] = consumed >= prod["sent"]
        with contextlib.suppress(OSError):
            took, text = scrape(port)
            out["final_scrape"] = {"seconds": took, "series": series_count(text)}
        if rss_every:
            out["rss"].append((round(time.monotonic() - t0, 1), rss_kb(consumer.pid)))
        self.stop_child(consumer)
        out["consumer"] = self.collect(consumer, 1)
        with contextlib.suppress(Exception):
            from stream.broker import delete_topics

            delete_topics(self.bootstrap, [topic], timeout=10.0)
        return out

    def _steady_rate(self, client: str) -> float:
        if self.args.rate:
            return float(self.args.rate)
        best = self.best_default(client)
        return 0.5 * best["events"] / best["steady_s"]

    def steady_clients(self) -> list[str]:
        """The clients whose lag and soak are measured: kafka-python, and confluent-kafka
        when it is installed."""
        return ["kafka-python"] + (["confluent-kafka"] if self.results["confluent"] else [])

    def lag_phase(self, client: str) -> None:
        a = self.args
        rate = self._steady_rate(client)
        log(f"lag ({client}): producing {rate:,.0f} events/s (half the measured max) for "
            f"{a.lag_seconds:.0f} s")
        res = self.steady(f"bench-lag-{client}", rate, a.lag_seconds,
                          scrape_every=max(2.0, a.lag_seconds / 8), rss_every=None,
                          client=client)
        self.results.setdefault("steady", {}).setdefault(client, {})["lag"] = res
        lag = res["consumer"]["lag"]
        log(f"  lag p50 {lag['p50'] * 1e3:.0f} ms, p99 {lag['p99'] * 1e3:.0f} ms over "
            f"{lag['n']:,} events; producer {res['producer']['rate']:,.0f} events/s")

    def soak_phase(self, client: str) -> None:
        a = self.args
        if a.soak_minutes <= 0:
            return
        rate = float(a.soak_rate) if a.soak_rate else self._steady_rate(client)
        log(f"soak ({client}): {rate:,.0f} events/s for {a.soak_minutes:g} min, RSS every 10 s")
        res = self.steady(f"bench-soak-{client}", rate, a.soak_minutes * 60, scrape_every=60.0,
                          rss_every=10.0, client=client)
        self.results.setdefault("steady", {}).setdefault(client, {})["soak"] = res
        rss = [kb for _t, kb in res["rss"]]
        if rss:
            log(f"  RSS start {rss[0] / 1024:.0f} MiB, end {rss[-1] / 1024:.0f} MiB, "
                f"max {max(rss) / 1024:.0f} MiB")


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------
def _ms(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x * 1e3:,.0f} ms" if x >= 0.01 \
        else f"{x * 1e3:.1f} ms"


def _yes(ok: bool) -> str:
    return "**yes**" if ok else "**no**"


def _default_max_poll_records() -> int:
    import dataclasses

    from stream.config import KafkaConfig

    return int(next(f.default for f in dataclasses.fields(KafkaConfig)
                    if f.name == "max_poll_records"))


def render(r: dict[str, Any], args: argparse.Namespace) -> str:
    from detectors.catalogue import default_detectors

    out: list[str] = []
    w = out.append
    prod = r.get("produce", {})
    w("# streamdrift end-to-end pipeline benchmark\n")
    w(f"`bench/bench_pipeline.py {' '.join(r['argv'])}` — {time.strftime('%Y-%m-%d %H:%M')}; "
      f"{r['machine']}.  ")
    w(f"{r['pinning']}; load average {r['load_start']} at start, {r.get('load_end', '?')} "
      f"at end (other jobs shared the machine: CPU-time rates are the steadier figure).  ")
    w(f"Events: {prod.get('events', 0):,} × {prod.get('bytes', 0):.0f} bytes JSON, one model, "
      f"{N_NUMERIC} numeric ({N_INT} integer) + {N_CATEGORICAL} categorical features, "
      f"2 predictions (numeric score, categorical label); every default detector "
      f"(numeric: {', '.join(default_detectors('numeric'))}; categorical: "
      f"{', '.join(default_detectors('categorical'))}); "
      f"`max_poll_records` {_default_max_poll_records()} (default).  Baseline built once from {REFERENCE_EVENTS:,} "
      f"reference events in {r.get('baseline_s', 0):.0f} s; topic filled by "
      f"{prod.get('kind', '?')} at {prod.get('events', 0) / max(prod.get('produce_s', 1), 1e-9):,.0f}"
      f" events/s.\n")

    naives = [x for x in r["runs"] if x["role"] == "naive"]

    def naive_for(x: dict[str, Any]) -> tuple[float, float]:
        """(wall, CPU) rate of the naive loop with the same kafka-python settings as ``x``;
        for other clients the fastest naive loop."""
        same = [y for y in naives if x.get("client") == "kafka-python"
                and y.get("options", {}) == x.get("options", {})]
        pool = same or naives
        if not pool:
            return math.nan, math.nan
        y = max(pool, key=lambda y: y["events"] / y["cpu_s"])
        return y["events"] / y["wall_s"], y["events"] / y["cpu_s"]
    w("## Throughput (one core)\n")
    w("Wall rate = events / (time from subscription to the last event processed); steady = "
      "from the first record received; CPU = events per CPU-second of the consumer process "
      "(all its threads), from subscription (start-up included: client creation, group "
      "join, state restore) and steady (from the first record).  × naive: against the "
      "naive loop with the same kafka-python settings (confluent-kafka and client-only "
      "rows: against the fastest naive loop).\n")
    w("| consumer | partitions | events | wall s | events/s (wall) | events/s (steady) "
      "| events per CPU-s | per CPU-s (steady) | × naive (wall) | × naive (CPU) |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for x in r["runs"]:
        if x["profile_run"]:
            continue
        eps = x["events"] / x["wall_s"]
        naive_eps, naive_cpu = naive_for(x)
        w(f"| {x['label']} | {x['partitions']} | {x['events']:,} | {x['wall_s']:.2f} | "
          f"{eps:,.0f} | {x['events'] / x['steady_s']:,.0f} | {x['events'] / x['cpu_s']:,.0f} | "
          f"{_steady_cpu_rate(x)} | {eps / naive_eps:.1f}× | "
          f"{x['events'] / x['cpu_s'] / naive_cpu:.1f}× |")
    w("")

    w("## Where the time goes (best run of each)\n")
    w("From the first record on (the steady state; `start-up CPU` = the process's CPU "
      "seconds before it: client creation, group join, state restore).  "
      "Each cell: wall µs per event (main-thread CPU µs per event).  `poll` = inside the "
      "Kafka client's poll/consume (fetch, CRC check, parse, record objects, waiting for "
      "the broker); `decode` = `BatchDecoder.decode`; `detectors` = the rest of "
      "`Pipeline.process` (`ModelMonitor.update`, counters, lock); `commit` = synchronous "
      "offset commit; `state` = KafkaRunner's state checkpoints (every 30 s by default) and "
      "consumer-lag refresh (every second); `other` = the rest of the loop (record lists, "
      "rebalance handling, group join before the first record); `client threads` = CPU of "
      "the process's other threads (kafka-python's IO thread, librdkafka's threads).\n")
    w("| consumer | poll | decode | detectors | commit | state | other | all (wall / CPU) "
      "| client threads CPU | start-up CPU s |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for x in _best_by_label(r, ("run", "run-loop", "run-confluent")):
        n, wl, cp = x["events"], x["wall"], x["cpu"]
        wall_s, cpu_s, main_s = x["wall_s"], x["cpu_s"], x["cpu_main_s"]
        st = x.get("steady")
        if st is not None:
            wl, cp = st["wall"], st["cpu"]
            wall_s, cpu_s, main_s = x["steady_s"], st["cpu_s"], st["cpu_main_s"]

        def cell(wall_s: float, cpu_s: float, n: int = n) -> str:
            return f"{wall_s / n * 1e6:.1f} ({cpu_s / n * 1e6:.1f})"

        seg_w = {"poll": wl["poll"], "decode": wl["decode"],
                 "detectors": wl["process"] - wl["decode"], "commit": wl["commit"],
                 "state": wl["checkpoint"] + wl["lag_refresh"]}
        seg_c = {"poll": cp["poll"], "decode": cp["decode"],
                 "detectors": cp["process"] - cp["decode"], "commit": cp["commit"],
                 "state": cp["checkpoint"] + cp["lag_refresh"]}
        seg_w["other"] = wall_s - sum(seg_w.values())
        seg_c["other"] = main_s - sum(seg_c.values())
        cells = " | ".join(cell(seg_w[k], seg_c[k]) for k in seg_w)
        w(f"| {x['label']} ({x['partitions']}p) | {cells} | {cell(wall_s, cpu_s)} | "
          f"{(cpu_s - main_s) / n * 1e6:.1f} | {x['cpu_s'] - cpu_s:.2f} |")
    w("")

    for client, phases in r.get("steady", {}).items():
        lag = phases.get("lag")
        if lag:
            c = lag["consumer"]
            L = c["lag"]
            sc = [s["seconds"] for s in lag["scrapes"]]
            w(f"## Lag at half the max rate: KafkaRunner with {client}\n")
            w(f"Producer target {lag['rate_target']:,.0f} events/s, achieved "
              f"{lag['producer']['rate']:,.0f} ({lag['producer']['kind']}) for "
              f"{lag['seconds']:.0f} s; lag = end of the batch's `Pipeline.process` (the event "
              f"is in the next scrape) − produce time stamped in the event; first "
              f"{args.warmup_seconds:g} s excluded.  Consumer CPU use "
              f"{c['cpu_s'] / c['wall_s']:.0%} of its core.\n")
            w("| events | p50 | p90 | p99 | p99.9 | max | scrapes | scrape p50 | scrape max "
              "| series |")
            w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            w(f"| {L['n']:,} | {_ms(L['p50'])} | {_ms(L['p90'])} | {_ms(L['p99'])} | "
              f"{_ms(L['p999'])} | {_ms(L['max'])} | {len(sc)} | {_ms(_median(sc))} | "
              f"{_ms(max(sc, default=math.nan))} | "
              f"{lag['scrapes'][-1]['series'] if lag['scrapes'] else 'n/a'} |")
            w("")
        soak = phases.get("soak")
        if soak:
            rss = [kb for _t, kb in soak["rss"]]
            start, end, peak = rss[0], rss[-1], max(rss)
            mid = rss[len(rss) // 2]
            series = [s["series"] for s in soak["scrapes"]]
            if soak.get("final_scrape"):
                series.append(soak["final_scrape"]["series"])
            L = soak["consumer"]["lag"]
            w(f"## Soak: {soak['seconds'] / 60:g} min at {soak['producer']['rate']:,.0f} "
              f"events/s: KafkaRunner with {client}\n")
            w(f"RSS of the consumer process every 10 s ({len(rss)} samples; "
              f"{soak['rss_ready_kb'] / 1024:.0f} MiB when its partition was assigned).  "
              f"{soak['consumer']['events']:,} events processed, lag p99 {_ms(L['p99'])}.\n")
            w("| RSS start (10 s) | RSS end | RSS max | growth start→end | growth mid→end "
              "| series start | series end |")
            w("|---:|---:|---:|---:|---:|---:|---:|")
            w(f"| {start / 1024:.0f} MiB | {end / 1024:.0f} MiB | {peak / 1024:.0f} MiB | "
              f"{(end - start) / start:+.1%} | {(end - mid) / mid:+.1%} | "
              f"{series[0] if series else 'n/a'} | {series[-1] if series else 'n/a'} |")
            w("")

    w("## Goals\n")
    w("| goal | measured | met |")
    w("|---|---|---|")
    for x in _best_by_label(r, ("run", "run-confluent")):
        if x["partitions"] != args.partitions[0]:
            continue
        eps = x["events"] / x["wall_s"]
        cpu = x["events"] / x["cpu_s"]
        naive_eps, naive_cpu = naive_for(x)
        w(f"| ≥ {GOAL_EPS:,} events/s per core: {x['label']} | {cpu:,.0f} per CPU-s "
          f"({cpu / GOAL_EPS:.0%} of goal); {eps:,.0f}/s wall | {_yes(cpu >= GOAL_EPS)} |")
        w(f"| ≥ {GOAL_RATIO:g}× the naive loop: {x['label']} | {cpu / naive_cpu:.1f}× per "
          f"CPU-s; {eps / naive_eps:.1f}× wall | {_yes(cpu / naive_cpu >= GOAL_RATIO)} |")
        st = x.get("steady")
        if x["role"] == "run" and x.get("client") == "confluent-kafka" and st:
            steady = x["events"] / st["cpu_s"]
            w(f"| #17: ≥ {GOAL_CONFLUENT_EPS:,} events per CPU-s, steady: {x['label']} | "
              f"{steady:,.0f} ({steady / GOAL_CONFLUENT_EPS:.0%} of goal) | "
              f"{_yes(steady >= GOAL_CONFLUENT_EPS)} |")
    for client, phases in r.get("steady", {}).items():
        lag, soak = phases.get("lag"), phases.get("soak")
        if lag:
            p99 = lag["consumer"]["lag"]["p99"]
            w(f"| p99 lag ≤ {GOAL_P99_S:g} s at half the max rate ({client}) | {_ms(p99)} | "
              f"{_yes(p99 <= GOAL_P99_S)} |")
        if soak:
            rss = [kb for _t, kb in soak["rss"]]
            mid = rss[len(rss) // 2]
            growth = (rss[-1] - mid) / mid
            w(f"| flat RSS (< {GOAL_RSS_GROWTH:.0%} growth after warm-up, mid→end; {client}) | "
              f"{growth:+.1%} ({rss[0] / 1024:.0f} → {rss[-1] / 1024:.0f} MiB) | "
              f"{_yes(growth < GOAL_RSS_GROWTH)} |")
    w("")

    for prof in (x for x in r["runs"] if x["profile_run"] and "profile" in x):
        p = prof["profile"]
        w(f"## {prof['label']}\n")
        w(f"{prof['events']:,} events, main thread from the first record (start-up left "
          f"out); {p['total_s']:.1f} s profiled (cProfile adds a cost per Python call, so "
          f"shares matter more than absolute times).\n")
        w("| entry point | cumulative s | share |")
        w("|---|---:|---:|")
        for label, ct in p["entries"].items():
            w(f"| {label} | {ct:.2f} | {ct / p['total_s']:.0%} |")
        w("\nTop functions by own time:\n")
        w("```")
        out.extend(p["top_tottime"])
        w("```\n")
    w(f"\nTotal benchmark wall time: {r.get('total_s', 0) / 60:.1f} min.")
    return "\n".join(out) + "\n"


def _best_by_label(r: dict[str, Any], roles: tuple[str, ...]) -> list[dict[str, Any]]:
    """The fastest run (wall rate) of each consumer and partition count, in run order."""
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for x in r["runs"]:
        if x["role"] not in roles or x["profile_run"]:
            continue
        key = (x["label"], x["partitions"])
        if key not in best or x["events"] / x["wall_s"] > best[key]["events"] / best[key]["wall_s"]:
            best[key] = x
    return list(best.values())


def _steady_cpu_rate(x: dict[str, Any]) -> str:
    """Events per CPU-second from the first record on (n/a for older results)."""
    st = x.get("steady")
    return f"{x['events'] / st['cpu_s']:,.0f}" if st and st["cpu_s"] > 0 else "n/a"


def _pct(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole > 0 else "n/a"


def _median(xs: list[float]) -> float:
    if not xs:
        return math.nan
    s = sorted(xs)
    return s[len(s) // 2]


# ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="50,000 events, 15 s lag phase, 1 min soak, one repeat")
    p.add_argument("--events", type=int, help="events in the throughput topic (500,000)")
    p.add_argument("--partitions", default="1",
                   help="comma-separated partition counts of throughput topics (1)")
    p.add_argument("--repeat", type=int, help="runs of each streamdrift consumer (2; quick 1)")
    p.add_argument("--naive-events", type=int, default=200_000,
                   help="at most this many events for the naive loop (%(default)s; its rate "
                        "is steady)")
    p.add_argument("--lag-seconds", type=float, help="lag phase duration (60; quick 15)")
    p.add_argument("--warmup-seconds", type=float, default=3.0,
                   help="first seconds of the lag/soak phases left out of the lag figures")
    p.add_argument("--rate", type=float,
                   help="lag-phase produce rate (default: half the measured max)")
    p.add_argument("--soak-minutes", type=float, help="soak duration (10; quick 1; 0 = skip)")
    p.add_argument("--soak-rate", type=float, help="soak produce rate (default: as the lag phase)")
    p.add_argument("--no-profile", action="store_true", help="skip the cProfile runs")
    p.add_argument("--profile-events", type=int, default=100_000,
                   help="events read by each cProfile run (%(default)s)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    p.add_argument("--workdir", help="keep configs, baseline cache and worker logs here")
    p.add_argument("--out", default=str(RESULTS), help="markdown output (%(default)s)")
    p.add_argument("--json", help="also write every raw figure to this JSON file")
    p.add_argument("--worker-timeout", type=float, default=1800.0, help=argparse.SUPPRESS)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    q = args.quick
    args.events = args.events or (50_000 if q else 500_000)
    args.repeat = args.repeat or (1 if q else 2)
    args.lag_seconds = args.lag_seconds or (15.0 if q else 60.0)
    if args.soak_minutes is None:
        args.soak_minutes = 1.0 if q else 10.0
    args.partitions = [int(x) for x in str(args.partitions).split(",") if x.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.spec)
    bench = Bench(args)

    def on_term(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        bench.run()
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        return 130
    finally:
        bench.cleanup()
    text = render(bench.results, args)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(bench.results, indent=1, default=str))
    log(f"wrote {out} ({(time.monotonic() - bench.started) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
