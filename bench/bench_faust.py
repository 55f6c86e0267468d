"""faust-streaming vs kafka-python as the repartition stage of streamdrift (issue #14, item 2).

Starts the local broker (:mod:`stream.broker`), produces N JSON inference events of two
models (``credit``: 10 numeric and 4 categorical features, a numeric and a categorical
prediction; ``fraud``: 8 numeric and 3 categorical features, a numeric prediction; about
600 bytes each) to a source topic of P partitions, **keyed by the event's country** (a
categorical feature that some numeric features depend on: the trap of issue #14), builds
the two baselines once, and then runs the same work in two variants, each in a fresh
subprocess, interleaved (faust, kafka, kafka, faust, ...) so that the load of the shared
machine hits both alike:

* ``faust``: one Faust app, one agent,
  ``stream.group_by(key_of, name="by-id").take_events(500, within=1.0)``: group_by
  forwards every event re-keyed by its ``id`` to the internal ``...-by-id-repartition``
  topic (P partitions) and the agent reads that topic back in batches of up to 500
  events, grouped by partition into ``Pipeline.process``;
* ``kafka``: the loop a user writes with kafka-python, two threads in one process:
  stage 1 polls the source (500 records), sends every record re-keyed by ``id`` to an
  internal topic of P partitions, flushes, commits; stage 2 polls the internal topic and
  feeds each partition's records to ``Pipeline.process``, then commits.

Both use the same key function (msgspec reads the ``id`` field only), the same producer
acknowledgements (``acks=all``), the same Pipeline and baselines.  Each worker reports
its wall time from the first to the last event processed by the Pipeline (throughput),
its CPU time (user + system, all threads) and peak RSS, the time from spawn to the first
processed batch (startup), and the drift alarms its Pipeline raised (the events are clean:
after repartitioning every partition is representative, so there should be none).

Prints a markdown table (stdout) and writes ``bench/results/faust.md``; progress goes to
stderr.  See docs/faust.md for the decision these figures support.

Usage::

    PYTHONPATH=$PWD .venv/bin/python bench/bench_faust.py            # 300k events, 2 rounds
    PYTHONPATH=$PWD .venv/bin/python bench/bench_faust.py --events 100000 --rounds 1
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import faulthandler  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "faust.md"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BATCH = 500
#: faust / kafka: the repartition stage and the monitors; -direct: the monitors on the
#: source's partitions (no repartition: `streamdrift run`'s shape and the adapter's)
VARIANTS = ("faust", "kafka", "faust-direct", "kafka-direct")
WITHIN_S = 1.0
REFERENCE_EVENTS = 20_000
WORKER_TIMEOUT_S = 900.0
#: a worker that processes no batch for this long is stopped (and its variant retried once)
STALL_S = 120.0
COUNTRIES = ["DE", "FR", "US", "GB", "ES", "IT", "NL", "PL"]
#: per country: the mean of income (log scale) and of the fraud amount: the key is
#: correlated with numeric features, so a keyed partition is not representative
COUNTRY_SHIFT = {c: 0.15 * (i - 3.5) for i, c in enumerate(COUNTRIES)}
CHANNELS = ["web", "mobile-app", "branch", "partner-api"]
DEVICES = ["ios", "android", "desktop"]
SEGMENTS = ["retail", "premium", "business", "student"]
LABELS = ["approve", "review", "decline"]
MERCHANTS = ["grocery", "travel", "electronics", "fuel", "fashion", "gaming"]


def log(msg: str) -> None:
    print(f"[bench_faust {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# events and configuration
# ---------------------------------------------------------------------------------------
def make_events(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    """``n`` (key, value) pairs: the key is the event's country, 60 % credit, 40 % fraud."""
    import numpy as np
    import orjson

    rng = np.random.default_rng(seed)
    country = rng.integers(0, len(COUNTRIES), n)
    shift = np.array([COUNTRY_SHIFT[c] for c in COUNTRIES])[country]
    is_credit = rng.random(n) < 0.6
    num = rng.normal(0.0, 1.0, (n, 10))
    num[:, 0] = np.exp(10.5 + shift + 0.4 * num[:, 0])          # income / amount
    num[:, 1] = rng.integers(18, 90, n)                         # age
    num[:, 2] = rng.beta(2, 5, n)                               # utilisation
    num[:, 3] = rng.gamma(2.0, 40.0, n)                         # tenure
    cats = [rng.integers(0, len(v), n) for v in (CHANNELS, DEVICES, SEGMENTS, MERCHANTS)]
    score = rng.beta(2, 5, n)
    label = rng.integers(0, len(LABELS), n)
    ts0 = 1.7e9
    out = []
    for i in range(n):
        cc = COUNTRIES[country[i]]
        row = num[i]
        if is_credit[i]:
            features: dict[str, Any] = {f"n{j}": round(float(row[j]), 4) for j in range(10)}
            features.update(country=cc, channel=CHANNELS[cats[0][i]],
                            device=DEVICES[cats[1][i]], segment=SEGMENTS[cats[2][i]])
            pred: dict[str, Any] = {"score": float(score[i]), "label": LABELS[label[i]]}
            model = "credit"
        else:
            features = {f"n{j}": round(float(row[j]), 4) for j in range(8)}
            features.update(country=cc, device=DEVICES[cats[1][i]],
                            merchant=MERCHANTS[cats[3][i]])
            pred = {"score": float(score[i])}
            model = "fraud"
        event = {"id": f"{seed:04d}-{i:010d}-{uuid.UUID(int=int(rng.integers(2**62))).hex}",
                 "model": model, "model_version": "2026-11-01", "ts": ts0 + i * 1e-3,
                 "tenant": "acme-eu", "features": features, "prediction": pred}
        out.append((cc.encode(), orjson.dumps(event)))
    return out


def config_dict(baselines: dict[str, str] | None) -> dict[str, Any]:
    """Both models; ``baselines``: model -> baseline file (else reference.jsonl)."""
    def model(name: str, n_num: int, cats: list[str], preds: list[tuple[str, str]]
              ) -> dict[str, Any]:
        feats = [{"name": f"n{j}", "path": f"features.n{j}", "type": "numeric"}
                 for j in range(n_num)]
        feats += [{"name": c, "path": f"features.{c}", "type": "categorical"} for c in cats]
        base = ({"file": baselines[name]} if baselines else {"reference": "reference.jsonl"})
        return {"name": name, "select": {"field": "model", "equals": name}, "baseline": base,
                "features": feats,
                "predictions": [{"name": p, "path": f"prediction.{p}", "type": t}
                                for p, t in preds]}

    return {"models": [model("credit", 10, ["country", "channel", "device", "segment"],
                             [("score", "numeric"), ("label", "categorical")]),
                       model("fraud", 8, ["country", "device", "merchant"],
                             [("score", "numeric")])]}


def prepare_baselines(workdir: Path) -> Path:
    """Build (or reuse) both baselines; returns the config file that loads them from file."""
    import yaml

    from stream.config import load_config
    from stream.engine.baselines import build_baseline, save_baseline

    final = workdir / "config.yaml"
    files = {m: str(workdir / f"{m}.baseline.json") for m in ("credit", "fraud")}
    if final.exists() and all(Path(f).exists() for f in files.values()):
        return final
    ref = workdir / "reference.jsonl"
    ref.write_bytes(b"\n".join(v for _, v in make_events(REFERENCE_EVENTS, seed=99)) + b"\n")
    (workdir / "build.yaml").write_text(yaml.safe_dump(config_dict(None)))
    cfg = load_config(workdir / "build.yaml")
    for m in cfg.models:
        t0 = time.perf_counter()
        save_baseline(build_baseline(cfg, m), Path(files[m.name]))
        log(f"baseline of {m.name} built in {time.perf_counter() - t0:.1f}s")
    final.write_text(yaml.safe_dump(config_dict(files)))
    return final


def make_pipeline(config_path: str) -> Any:
    from stream.config import load_config
    from stream.engine.baselines import resolve_baselines
    from stream.engine.pipeline import Pipeline

    config = load_config(config_path)
    return Pipeline(config, resolve_baselines(config))


def key_function() -> Any:
    """``value bytes -> key bytes``: the event's ``id`` (msgspec decodes that field only)."""
    import msgspec

    class IdOnly(msgspec.Struct):
        id: str

    decode = msgspec.json.Decoder(IdOnly).decode

    def key_of(value: bytes) -> bytes:
        return decode(value).id.encode()

    return key_of


def alarms_of(pipeline: Any) -> dict[str, int]:
    """"model.column" -> drift episodes its detectors opened (columns with none left out)."""
    snap = pipeline.snapshot()
    out = {f"{name}.{col}": sum(d.alarms for d in c.detectors.values())
           for name, m in snap.models.items() for col, c in m.columns.items()}
    return {k: v for k, v in out.items() if v}


# ---------------------------------------------------------------------------------------
# workers (each in its own process)
# ---------------------------------------------------------------------------------------
class Tally:
    """What a worker measures about its stage 2 (the Pipeline)."""

    def __init__(self, n: int, spawned: float) -> None:
        self.n, self.spawned = n, spawned
        self.done = 0
        self.first: float | None = None
        self.cpu_first = 0.0
        self.last = 0.0
        self.batches = 0
        self.finished = threading.Event()
        self.ready = 0.0
        #: resident memory when 25, 50, 75 and 100 % of the events were processed
        self.rss_mb: list[float] = []
        #: the highest resident memory seen after a batch (``ru_maxrss`` is no use here: a
        #: child inherits the orchestrator's peak from before its exec)
        self.peak_rss_mb = 0.0

    def watch(self, stall_s: float = STALL_S) -> None:
        """Exit the worker (status 3, every thread's stack on stderr) when no batch has been
        processed for ``stall_s`` seconds: a stalled client must not hang the benchmark."""
        def run() -> None:
            last = (self.done, time.monotonic())
            while not self.finished.wait(5.0):
                if self.done != last[0]:
                    last = (self.done, time.monotonic())
                elif time.monotonic() - last[1] > stall_s:
                    print(f"stalled: no batch for {stall_s:.0f} s after {self.done} events",
                          file=sys.stderr, flush=True)
                    faulthandler.dump_traceback(all_threads=True)
                    os._exit(3)

        threading.Thread(target=run, name="stall-watch", daemon=True).start()

    def add(self, k: int) -> None:
        now = time.time()
        if self.first is None:
            self.first = now
            self.cpu_first = cpu_seconds()
        self.done += k
        self.batches += 1
        self.last = now
        rss = current_rss_mb()
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        if self.done >= self.n * (len(self.rss_mb) + 1) / 4:  # at 25, 50, 75, 100 %
            self.rss_mb.append(rss)
        if self.done >= self.n:
            self.finished.set()

    def result(self, pipeline: Any, variant: str) -> dict[str, Any]:
        assert self.first is not None
        ru = resource.getrusage(resource.RUSAGE_SELF)
        cpu = ru.ru_utime + ru.ru_stime
        snap = pipeline.snapshot()
        return {"variant": variant, "events": self.done, "batches": self.batches,
                "processed": {m: f.processed for m, f in snap.models.items()},
                "wall_s": self.last - self.first, "startup_s": self.first - self.spawned,
                "ready_s": self.ready - self.spawned,
                "cpu_s": cpu, "cpu_steady_s": cpu - self.cpu_first,
                "max_rss_mb": self.peak_rss_mb, "ru_maxrss_mb": ru.ru_maxrss / 1024,
                "rss_quartiles_mb": self.rss_mb,
                "alarms": alarms_of(pipeline)}


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def worker_kafka(spec: dict[str, Any]) -> dict[str, Any]:
    from kafka import KafkaConsumer, KafkaProducer

    tally = Tally(spec["events"], spec["spawned"])
    pipeline = make_pipeline(spec["config"])
    key_of = key_function()
    tally.ready = time.time()
    tally.watch()
    boot = spec["bootstrap"]
    stop = threading.Event()
    errors: list[BaseException] = []

    def stage1() -> None:
        try:
            consumer = KafkaConsumer(spec["source"], bootstrap_servers=boot,
                                     group_id=spec["group"] + "-rekey",
                                     auto_offset_reset="earliest", enable_auto_commit=False,
                                     max_poll_records=BATCH)
            producer = KafkaProducer(bootstrap_servers=boot, acks="all", linger_ms=5)
            internal = spec["internal"]
            while not stop.is_set():
                polled = consumer.poll(timeout_ms=200)
                if not polled:
                    continue
                for recs in polled.values():
                    for r in recs:
                        producer.send(internal, key=key_of(r.value), value=r.value)
                producer.flush()
                consumer.commit()
            consumer.close()
            producer.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the worker
            errors.append(exc)
            stop.set()

    def stage2() -> None:
        try:
            consumer = KafkaConsumer(spec["internal"], bootstrap_servers=boot,
                                     group_id=spec["group"] + "-monitor",
                                     auto_offset_reset="earliest", enable_auto_commit=False,
                                     max_poll_records=BATCH)
            while not stop.is_set() and not tally.finished.is_set():
                polled = consumer.poll(timeout_ms=200)
                if not polled:
                    continue
                for tp, recs in polled.items():
                    pipeline.process([r.value for r in recs], partition=(tp.topic, tp.partition))
                    tally.add(len(recs))
                consumer.commit()
            consumer.close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=stage1, daemon=True),
               threading.Thread(target=stage2, daemon=True)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    while not tally.finished.wait(1.0) and not stop.is_set() and time.monotonic() < deadline:
        pass
    if errors:
        raise RuntimeError(f"kafka-python worker failed: {errors[0]!r}")
    out = tally.result(pipeline, "kafka")
    stop.set()
    for t in threads:
        t.join(10)
    return out


def worker_kafka_direct(spec: dict[str, Any]) -> dict[str, Any]:
    """No repartition: ``streamdrift run``'s shape (the source's partitions as they are)."""
    from kafka import KafkaConsumer

    tally = Tally(spec["events"], spec["spawned"])
    pipeline = make_pipeline(spec["config"])
    tally.ready = time.time()
    tally.watch()
    consumer = KafkaConsumer(spec["source"], bootstrap_servers=spec["bootstrap"],
                             group_id=spec["group"], auto_offset_reset="earliest",
                             enable_auto_commit=False, max_poll_records=BATCH)
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    while not tally.finished.is_set() and time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=200)
        for tp, recs in polled.items():
            pipeline.process([r.value for r in recs], partition=(tp.topic, tp.partition))
            tally.add(len(recs))
        if polled:
            consumer.commit()
    out = tally.result(pipeline, "kafka-direct")
    consumer.close()
    return out


def worker_faust_direct(spec: dict[str, Any]) -> dict[str, Any]:
    """No repartition: the adapter's shape (take_events on the source, per partition)."""
    return worker_faust(spec, repartition=False)


def worker_faust(spec: dict[str, Any], repartition: bool = True) -> dict[str, Any]:
    import asyncio
    import logging

    import faust

    tally = Tally(spec["events"], spec["spawned"])
    pipeline = make_pipeline(spec["config"])
    key_of = key_function()
    tally.ready = time.time()
    tally.watch()
    app = faust.App(spec["group"], broker=f"kafka://{spec['bootstrap']}",
                    value_serializer="raw", key_serializer="raw", web_enabled=False,
                    topic_partitions=spec["partitions"], topic_replication_factor=1,
                    consumer_auto_offset_reset="earliest", store="memory://",
                    datadir=spec["datadir"], producer_acks=-1)
    source = app.topic(spec["source"], key_type=bytes, value_type=bytes)
    internal = app.topic(f"{spec['group']}-by-id-repartition", key_type=bytes,
                         value_type=bytes, partitions=spec["partitions"], internal=True)
    result: dict[str, Any] = {}

    variant = "faust" if repartition else "faust-direct"

    @app.agent(source)
    async def monitor(stream: Any) -> None:
        # the internal topic is named here: Faust derives its default name from the agent
        # and the source topic, not the app, so every round would share one
        grouped = stream.group_by(key_of, name="by-id", topic=internal) if repartition \
            else stream
        async for events in grouped.take_events(BATCH, within=WITHIN_S):
            parts: dict[int, list[bytes]] = {}
            for ev in events:
                parts.setdefault(ev.message.partition, []).append(ev.value)
            for p, values in parts.items():
                pipeline.process(values, partition=(ev.message.topic, p))
            tally.add(len(events))
            if tally.finished.is_set() and not result:
                result.update(tally.result(pipeline, variant))
                asyncio.get_running_loop().call_soon(app_done.set)

    app_done = asyncio.Event()

    @app.task
    async def watchdog() -> None:
        try:
            await asyncio.wait_for(app_done.wait(), WORKER_TIMEOUT_S)
        except TimeoutError:
            result.setdefault("error", f"timeout after {WORKER_TIMEOUT_S}s: {tally.done}")
        Path(spec["out"]).write_text(json.dumps(result))
        sys.stdout.flush()
        os._exit(0)  # the result is written: no need to wait for Faust's shutdown

    logging.getLogger("faust").setLevel(logging.WARNING)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()
    return result


def worker_ack_on_error(spec: dict[str, Any]) -> dict[str, Any]:
    """A Faust agent whose first ``take_events`` batch raises: which offsets does Faust
    deliver afterwards, and which does it commit?"""
    import asyncio

    import faust

    app = faust.App(spec["group"], broker=f"kafka://{spec['bootstrap']}",
                    value_serializer="raw", web_enabled=False, topic_replication_factor=1,
                    consumer_auto_offset_reset="earliest", store="memory://",
                    datadir=spec["datadir"])
    topic = app.topic(spec["source"], value_type=bytes)
    batches: list[list[int]] = []

    @app.agent(topic)
    async def fails_once(stream: Any) -> None:
        async for events in stream.take_events(100, within=0.5):
            batches.append([events[0].message.offset, events[-1].message.offset])
            if len(batches) == 1:
                raise RuntimeError("the first batch fails")

    @app.task
    async def finish() -> None:
        await asyncio.sleep(3 * app.conf.broker_commit_interval + 4)
        Path(spec["out"]).write_text(json.dumps({"batches": batches}))
        os._exit(0)

    faust.Worker(app, loglevel="ERROR", quiet=True).execute_from_commandline()
    return {}


def check_ack_on_error(bootstrap: str, workdir: Path, run_id: str) -> dict[str, Any]:
    """Run :func:`worker_ack_on_error` on 1,000 events; the batches it saw and the offset
    Faust committed."""
    from kafka import KafkaAdminClient, KafkaProducer

    import stream.broker

    topic = stream.broker.create_topic(bootstrap, f"bench-faust-ack-{run_id}", 1)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(1000):
        producer.send(topic, b'{"i": %d}' % i)
    producer.flush(60)
    producer.close()
    group = f"bench-faust-ack-{run_id}"
    out = run_worker("ack-on-error", {"bootstrap": bootstrap, "source": topic, "group": group,
                                      "datadir": str(workdir / f"faust-data-{group}")},
                     workdir)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    return {"batches": out["batches"][:3], "batches_seen": len(out["batches"]),
            "committed": max((o.offset for o in offsets.values()), default=None)}


def worker_main(role: str, spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    fn = {"kafka": worker_kafka, "faust": worker_faust, "kafka-direct": worker_kafka_direct,
          "faust-direct": worker_faust_direct, "ack-on-error": worker_ack_on_error}[role]
    out = fn(spec)
    Path(spec["out"]).write_text(json.dumps(out))
    return 0


# ---------------------------------------------------------------------------------------
# orchestration
# ---------------------------------------------------------------------------------------
def produce_keyed(bootstrap: str, topic: str, events: list[tuple[bytes, bytes]]) -> float:
    from kafka import KafkaProducer

    t0 = time.perf_counter()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                             batch_size=256 * 1024, compression_type=None)
    for k, v in events:
        producer.send(topic, key=k, value=v)
    producer.flush(120)
    producer.close()
    return time.perf_counter() - t0


def run_worker(role: str, spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    spec = dict(spec)
    spec["out"] = str(workdir / f"out-{spec['group']}.json")
    spec_path = workdir / f"spec-{spec['group']}.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    spec["spawned"] = time.time()
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, __file__, "--worker", role, str(spec_path)],
                          env=env, timeout=WORKER_TIMEOUT_S + 60, capture_output=True,
                          text=True, check=False)
    out_path = Path(spec["out"])
    (workdir / f"stderr-{spec['group']}.txt").write_text(proc.stderr)
    if proc.returncode != 0 or not out_path.exists():
        raise RuntimeError(f"{role} worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(out_path.read_text())
    if "error" in out:
        raise RuntimeError(f"{role} worker: {out['error']}\n{proc.stderr[-3000:]}")
    return out


def installed_weight() -> dict[str, Any]:
    """Packages faust-streaming adds to streamdrift's environment, and their size."""
    import importlib.metadata as md
    import re

    def name(req: str) -> str:
        return re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0].lower().replace("_", "-")

    def closure(root: str) -> set[str]:
        seen: set[str] = set()
        todo = [root]
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            try:
                dist = md.distribution(n)
            except md.PackageNotFoundError:
                continue
            seen.add(n)
            for req in dist.requires or []:
                if "extra ==" in req:
                    continue
                todo.append(name(req))
        return seen

    ours = closure("streamdrift")
    extra = sorted(closure("faust-streaming") - ours)
    size = sum((f.size or 0) for p in extra for f in (md.distribution(p).files or []))
    kp = md.distribution("kafka-python")
    return {"packages": extra, "count": len(extra), "size_mb": size / 2**20,
            "kafka_python_mb": sum((f.size or 0) for f in kp.files or []) / 2**20,
            "versions": {p: md.version(p) for p in ("faust-streaming", "aiokafka",
                                                      "mode-streaming", "kafka-python")}}


def import_seconds(code: str, repeats: int = 3) -> float:
    """Best wall time of ``python -c code`` in a fresh interpreter."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model or platform.processor()}, {os.cpu_count()} cores, Python " \
           f"{platform.python_version()}"


def eps(r: dict[str, Any]) -> float:
    """Events per second of a worker, from its first to its last processed batch."""
    return float(r["events"] / r["wall_s"])


def peak_rss(r: dict[str, Any]) -> str:
    """The sampled peak RSS (rows written before it was sampled show "-")."""
    return f"{r['max_rss_mb']:.0f}" if "ru_maxrss_mb" in r else "-"


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# faust-streaming vs kafka-python: the repartition stage",
        "",
        f"Machine: {meta['machine']}; load average at start {meta['load']}.",
        f"{meta['events']:,} events of 2 models (~{meta['event_bytes']} B), source topic of "
        f"{meta['partitions']} partitions keyed by country, re-keyed by event id into an "
        f"internal topic of {meta['partitions']} partitions, then `Pipeline.process` per "
        f"partition; batches of {BATCH}. Produced in {meta['produce_s']:.1f} s.",
        f"Versions: {', '.join(f'{k} {v}' for k, v in meta['weight']['versions'].items())}.",
        "",
        "| round | variant | events/s (wall) | CPU s (total) | events per CPU-s (steady) "
        "| peak RSS MB | RSS at 25/50/75/100 % MB | startup s | alarms (columns) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        cols = ", ".join(f"{c} {n}" for c, n in sorted(r["alarms"].items()))
        lines.append(
            f"| {r['round']} | {r['variant']} | {eps(r):,.0f} | {r['cpu_s']:.1f} | "
            f"{r['events'] / r['cpu_steady_s']:,.0f} | {peak_rss(r)} | "
            f"{'/'.join(f'{x:.0f}' for x in r.get('rss_quartiles_mb', []))} | "
            f"{r['startup_s']:.2f} | {sum(r['alarms'].values())} ({cols or '-'}) |")
    lines += ["", "Ratios kafka-python / Faust, per round (the same round, back to back; "
              "CPU per event from first to last batch):", "",
              "| round | stage | throughput (wall) | CPU per event | RSS at the end | startup |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    for k in sorted({r["round"] for r in rows}):
        for p_name, f_name, stage in (("kafka", "faust", "repartition + monitors"),
                                      ("kafka-direct", "faust-direct", "monitors only")):
            f = next((r for r in rows if r["round"] == k and r["variant"] == f_name), None)
            p = next((r for r in rows if r["round"] == k and r["variant"] == p_name), None)
            if f is None or p is None:
                continue
            lines.append(
                f"| {k} | {stage} | {eps(p) / eps(f):.2f}x | "
                f"{(p['cpu_steady_s'] / p['events']) / (f['cpu_steady_s'] / f['events']):.2f}x"
                f" | {p['rss_quartiles_mb'][-1] / f['rss_quartiles_mb'][-1]:.2f}x | "
                f"{p['startup_s'] / f['startup_s']:.2f}x |")
    ack = meta.get("ack_on_error")
    if ack:
        lines += ["", f"A Faust agent whose first `take_events(100)` batch raises (offsets "
                  f"{ack['batches'][0][0]}-{ack['batches'][0][1]}): Faust restarts the agent, "
                  f"which goes on with offsets {ack['batches'][1][0]}-{ack['batches'][1][1]}, "
                  f"... ({ack['batches_seen']} batches); committed offset {ack['committed']} "
                  f"of 1,000: the failed batch is never delivered again."]
    for fail in meta.get("failures", []):
        lines += ["", f"Round {fail['round']}: the first `{fail['variant']}` worker failed and "
                  f"was run again: `{fail['error'].strip().splitlines()[0][:200]}`"]
    w = meta["weight"]
    lines += ["",
              f"Dependency weight: faust-streaming adds {w['count']} packages "
              f"({w['size_mb']:.1f} MB installed) to streamdrift's environment: "
              f"{', '.join(w['packages'])}. kafka-python itself is {w['kafka_python_mb']:.1f} MB.",
              f"Import time (best of 3, fresh interpreter): faust (App, Worker; its "
              f"package loads lazily) {meta['import_faust_s']:.2f} s, kafka-python "
              f"{meta['import_kafka_s']:.2f} s (`python -c pass` "
              f"{meta['import_none_s']:.2f} s).",
              "",
              "Startup = from spawning the process to the first batch processed by the "
              "Pipeline (imports, baselines loaded from file, group joins, Faust's topic "
              "creation and recovery). CPU (total) includes startup; events per CPU-s count "
              "the CPU from the first to the last batch. Wall throughput is from the first to "
              "the last batch processed. RSS is read from /proc after every batch (peak) and "
              "kept at 25/50/75/100 % of the events; the ratios use the last."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--workdir", default=None, help="keeps the baselines between runs")
    ap.add_argument("--bootstrap", default=None, help="use a running broker")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma-separated, of: " + ", ".join(VARIANTS))
    ap.add_argument("--render", metavar="JSON", help="re-render the tables of a results "
                    "file (bench/results/faust.json) to stdout")
    ap.add_argument("--worker", nargs=2, metavar=("ROLE", "SPEC"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(*args.worker)
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        print(render(saved["rows"], saved["meta"]))
        return 0

    import stream.broker

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-faust-"))
    workdir.mkdir(parents=True, exist_ok=True)
    config = prepare_baselines(workdir)
    broker = None
    if args.bootstrap:
        bootstrap = args.bootstrap
    else:
        broker = stream.broker.LocalBroker(workdir=workdir / "broker",
                                           partitions=args.partitions)
        broker.start()
        bootstrap = broker.bootstrap_servers
    try:
        log(f"broker {bootstrap}; generating {args.events:,} events")
        events = make_events(args.events, seed=1)
        event_bytes = sum(len(v) for _, v in events) // len(events)
        run_id = uuid.uuid4().hex[:8]
        source = stream.broker.create_topic(bootstrap, f"bench-faust-src-{run_id}",
                                            args.partitions)
        produce_s = produce_keyed(bootstrap, source, events)
        del events
        log(f"produced to {source} in {produce_s:.1f}s")
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        rows: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for k in range(1, args.rounds + 1):
            chosen = [v for v in VARIANTS if v in args.variants.split(",")]
            order = chosen if k % 2 else chosen[::-1]
            for variant in order:
                group = f"bench-{variant}-{run_id}-{k}"
                internal = stream.broker.create_topic(bootstrap, f"{group}-internal",
                                                      args.partitions)
                spec = {"bootstrap": bootstrap, "source": source, "internal": internal,
                        "group": group, "events": args.events, "config": str(config),
                        "partitions": args.partitions,
                        "datadir": str(workdir / f"faust-data-{group}")}
                log(f"round {k}: {variant} ...")
                try:
                    r = run_worker(variant, spec, workdir)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    failures.append({"round": k, "variant": variant, "error": str(exc)[-2000:]})
                    log(f"round {k}: {variant} FAILED, retrying once: {str(exc)[:300]}")
                    spec["group"] = group = f"{group}-retry"
                    spec["internal"] = stream.broker.create_topic(
                        bootstrap, f"{group}-internal", args.partitions)
                    r = run_worker(variant, spec, workdir)
                r["round"] = k
                rows.append(r)
                log(f"round {k}: {variant}: {eps(r):,.0f} events/s, "
                    f"cpu {r['cpu_s']:.1f}s, rss {r['max_rss_mb']:.0f} MB, "
                    f"startup {r['startup_s']:.2f}s, alarms {r['alarms']}, "
                    f"processed {r['processed']}")
        log("Faust: what a failing take_events batch leaves committed ...")
        ack = check_ack_on_error(bootstrap, workdir, run_id)
        log(f"Faust: {ack}")
        meta = {"machine": machine(), "load": load, "events": args.events, "ack_on_error": ack,
                "event_bytes": event_bytes, "partitions": args.partitions,
                "produce_s": produce_s, "weight": installed_weight(), "failures": failures,
                "import_faust_s": import_seconds("import faust; faust.App; faust.Worker"),
                "import_kafka_s": import_seconds(
                    "import kafka; kafka.KafkaConsumer; kafka.KafkaProducer"),
                "import_none_s": import_seconds("pass")}
        text = render(rows, meta)
        print(text)
        summary = {"rows": rows, "meta": meta}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(json.dumps(summary, indent=1))
        for v in VARIANTS:
            wall = [eps(r) for r in rows if r["variant"] == v]
            if wall:
                log(f"median events/s of {v}: {statistics.median(wall):,.0f}")
    finally:
        if broker is not None:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
