"""CPU per event of the first stage of ``source.repartition``: kafka-python's fetch against
librdkafka's (stream/runtime/rdfetch.py), against a real broker.

One backlog of ``--events`` keyed events (bench_scaleout.py's shape: model m1, five
columns, ``--source-partitions`` partitions keyed by ``c1``) is read again by each run in
a new consumer group.  Every run is a subprocess of its own, and its **process CPU time**
(user + system, every thread: librdkafka's too) between 10 % and 90 % of the events done
is divided by the events done meanwhile:

- ``stage1``: the first stage alone (until it forwarded every event),
- ``both``: both stages in one process (``TwoStageRunner``, until the monitors processed
  every event),
- ``monitors``: the monitors alone on an internal topic a ``stage1`` run filled
  (``FramedRunner``).

``source.kafka.client`` is confluent-kafka in every run (the monitors' consumer and the
first stage's producer are librdkafka's); only the first stage's fetch changes:
``kafka-python`` (:class:`~stream.runtime.repartition.Repartitioner`) or ``librdkafka``
(:class:`~stream.runtime.rdfetch.LibrdkafkaRepartitioner`).  The two fetches alternate,
``--repeat`` times each, so a change of the machine's load hits both.  The bound of two
processes over one (one writer: the first stage stays in one process, the monitors
split) is (f + m) / (f + m/2), f and m the medians of stage 1 and of the monitors alone.

Usage::

    PYTHONPATH=$PWD python bench/bench_stage1.py                # ~5 min, starts a broker
    PYTHONPATH=$PWD python bench/bench_stage1.py --bootstrap-servers HOST:PORT --quick
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import stream.broker  # noqa: E402
from tests.support.configs import m1_config, write_config  # noqa: E402
from tests.support.events import CLEAN, COLUMNS, m1_events  # noqa: E402
from tests.support.kafka import produce  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

RESULTS = REPO / "bench" / "results"
FETCHES = ("kafka-python", "librdkafka")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _config(workdir: Path, bootstrap: str, topic: str, group: str, rp_topic: str,
            max_poll: int) -> Path:
    cfg = m1_config(bootstrap=bootstrap, topic=topic, group=group, port=free_port(),
                    kafka={"max_poll_records": max_poll, "poll_timeout_ms": 200,
                           "client": "confluent-kafka"},
                    detection={"false_alarm_events": 10_000_000, "window": 1000,
                               "cadence": 50},
                    state={"checkpoint_interval_s": 30})
    cfg["source"]["repartition"] = {"topic": rp_topic, "partitions": 2}
    return write_config(workdir / f"{group}.yaml", cfg)


def worker(mode: str, fetch: str, path: str, n: int, timeout: float) -> dict[str, Any]:
    """One run in this process (a subprocess of :func:`main`)."""
    from stream.config import load_config
    from stream.engine.baselines import resolve_baselines
    from stream.engine.pipeline import Pipeline
    from stream.runtime.monitors import FramedRunner, monitor_config
    from stream.runtime.rdfetch import LibrdkafkaRepartitioner
    from stream.runtime.repartition import Repartitioner
    from stream.runtime.twostage import TwoStageRunner

    config = load_config(Path(path))
    baselines = resolve_baselines(config)
    # numba kernels loaded (from the cache) before the clock starts, by a throwaway pipeline
    Pipeline(config, baselines).process(m1_events(5, [(2_000, CLEAN)], COLUMNS), base_index=0)
    pipeline = Pipeline(config, baselines)
    cls = LibrdkafkaRepartitioner if fetch == "librdkafka" else Repartitioner
    stop = threading.Event()
    runner: Any
    if mode == "stage1":
        runner = cls(config, pipeline, stop)
        runner.ensure_topic()

        def progress() -> int:
            return int(runner.forwarded)
    else:
        if mode == "both":
            runner = TwoStageRunner(config, pipeline, stop)
            runner.repartitioner = cls(config, pipeline, stop)
            runner.health.upstream = runner.repartitioner.health
        else:
            runner = FramedRunner(monitor_config(config), pipeline, stop)

        def progress() -> int:
            return int(pipeline.processed["m1"])
    # CPU and wall time between 10 % and 90 % of the events done (start-up, group joins
    # and the end excluded), sampled every 10 ms
    marks: dict[float, tuple[float, float, int]] = {}
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    end = time.monotonic() + timeout
    while len(marks) < 2 and time.monotonic() < end and thread.is_alive():
        got = progress()
        for frac in (0.1, 0.9):
            if frac not in marks and got >= frac * n:
                marks[frac] = (_cpu(), time.monotonic(), got)
        time.sleep(0.01)
    stop.set()
    thread.join(60)
    ok = len(marks) == 2
    if not ok:
        return {"ok": False, "marks": str(marks)}
    (c0, t0, n0), (c1, t1, n1) = marks[0.1], marks[0.9]
    cpu, wall = c1 - c0, t1 - t0
    n = n1 - n0
    first = runner if mode == "stage1" else getattr(runner, "repartitioner", None)
    return {"ok": ok, "cpu_s": cpu, "wall_s": wall, "us_per_event": cpu / n * 1e6,
            "class": type(first).__name__ if first is not None else None,
            "rd_records": getattr(first, "rd_records", None),
            "kafka_python_records": getattr(first, "kafka_python_records", None)}


def run_worker(mode: str, fetch: str, path: Path, n: int, timeout: float) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", mode, "--fetch", fetch, "--config", str(path),
         "--events", str(n), "--timeout", str(timeout)],
        env=env, capture_output=True, text=True, timeout=timeout + 120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{mode}/{fetch} failed: {out.stderr[-2000:]}")
    got: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    got["load"] = os.getloadavg()[0]
    if not got["ok"]:
        raise RuntimeError(f"{mode}/{fetch} did not finish: {got}")
    return got


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap-servers", help="a running broker (default: start one)")
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--source-partitions", type=int, default=8)
    p.add_argument("--max-poll", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--modes", default="stage1,monitors,both")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--quick", action="store_true", help="20000 events, 1 repeat")
    p.add_argument("--out", default=str(RESULTS / "stage1-fetch.md"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--fetch", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.fetch, args.config, args.events,
                                args.timeout)))
        return 0
    if args.quick:
        args.events, args.repeat = 20_000, 1
    modes = args.modes.split(",")
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="stage1-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        (workdir / "reference.jsonl").write_bytes(
            b"\n".join(m1_events(77, [(10_000, CLEAN)], COLUMNS)))
        bootstrap = args.bootstrap_servers
        if not bootstrap:
            b = stream.broker.LocalBroker(workdir=workdir / "kafka")
            b.start()
            stack.callback(b.stop)
            bootstrap = b.bootstrap_servers
        topic = stream.broker.create_topic(bootstrap, f"s1-{uuid.uuid4().hex[:8]}",
                                           args.source_partitions)
        events = m1_events(1, [(args.events, CLEAN)], COLUMNS)
        keys = [str(orjson.loads(m)["f"]["c1"]).encode() for m in events]
        log(f"producing {len(events)} keyed events to {topic} ...")
        for i in range(0, len(events), 20_000):
            produce(bootstrap, topic, events[i:i + 20_000], keys=keys[i:i + 20_000],
                    linger_ms=20, batch_size=262_144, acks=1)
        from stream.config import load_config
        from stream.engine.baselines import resolve_baselines

        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        filled: list[str] = []  # internal topics a stage1 run filled
        for rep in range(args.repeat):
            for mode in modes:
                for fetch in FETCHES if rep % 2 == 0 else FETCHES[::-1]:
                    if mode == "monitors" and fetch != FETCHES[0]:
                        continue  # the monitors do not fetch from the source
                    group = f"s1-{uuid.uuid4().hex[:8]}"
                    rp_topic = f"{group}-rp" if mode != "monitors" else filled[-1]
                    path = _config(workdir, bootstrap, topic, group, rp_topic, args.max_poll)
                    resolve_baselines(load_config(path))  # cached for the subprocess
                    log(f"run {rep + 1}: {mode}, {fetch} fetch ...")
                    got = run_worker(mode, fetch, path, args.events, args.timeout)
                    log(f"  {got['us_per_event']:.2f} µs per event (CPU {got['cpu_s']:.1f} s, "
                        f"wall {got['wall_s']:.1f} s, load {got['load']:.1f}) {got}")
                    results.setdefault((mode, fetch), []).append(got)
                    if mode == "stage1":
                        filled.append(rp_topic)
    med = {key: statistics.median(g["us_per_event"] for g in got)
           for key, got in results.items()}
    lines = [f"# The first stage's fetch: kafka-python vs librdkafka\n\n"
             f"Command: `bench/bench_stage1.py {' '.join(argv or sys.argv[1:])}`; "
             f"{args.events} events (seed 1), {args.source_partitions} source partitions "
             f"keyed by c1, 2 internal, max_poll_records {args.max_poll}, client "
             f"confluent-kafka; {os.cpu_count()} cores, load average {load0[0]:.1f} at the "
             f"start, {os.getloadavg()[0]:.1f} at the end; {time.strftime('%Y-%m-%d')}.\n",
             "Process CPU time (user + system, all threads) per event; runs alternate.\n",
             "| run | fetch | µs per event (median) | each run | wall s |",
             "| --- | --- | --- | --- | --- |"]
    for (mode, fetch), got in results.items():
        name = {"stage1": "first stage alone", "both": "both stages, one process",
                "monitors": "monitors alone"}[mode]
        each = ", ".join(f"{g['us_per_event']:.2f}" for g in got)
        walls = ", ".join(f"{g['wall_s']:.1f}" for g in got)
        shown = fetch if mode != "monitors" else "—"
        lines.append(f"| {name} | {shown} | {med[(mode, fetch)]:.2f} | {each} | {walls} |")
    m = med.get(("monitors", FETCHES[0]))
    if m is not None:
        lines.append("\nBound of 2 processes over 1 with one writer, (f + m) / (f + m/2), m = "
                     f"{m:.2f} µs:\n")
        for fetch in FETCHES:
            f = med.get(("stage1", fetch))
            if f is not None:
                lines.append(f"- {fetch} fetch: f = {f:.2f} µs → "
                             f"{(f + m) / (f + m / 2):.2f}×")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text, encoding="utf-8")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
