"""Scale-out on a keyed topic (issue 14, item 4), against a real broker.

Three measurements, reported as ratios measured in the same run:

1. **Throughput.** A backlog of ``--events`` events of model m1 (five columns) on a topic
   of ``--source-partitions`` (8) partitions keyed by the categorical ``c1``, consumed by
   ``streamdrift run`` subprocesses with ``source.repartition`` (``--internal`` partitions
   of the internal topic): one process, then two processes in the same groups.  The rate is
   taken between 10 % and 90 % of the events processed by the monitors (start-up and the
   group join excluded), summed over processes: each process's /metrics is read every
   ``--scrape-interval`` s (1; Prometheus' default is 15) and the crossings interpolated
   between reads; ``--repeat`` rounds run every cell in turn, each round with its own
   ratio.  The CPU seconds of the processes are
   reported too (a shared machine's wall-clock figures are noisy; events per CPU-second
   are less so), and those of the broker over the same window when its pid is known
   (started here, or ``--broker-pid``): on one machine it competes for the same cores.
   With two processes one first stage holds every source partition (the other stands
   by: stream/runtime/onewriter.py) and the monitors share the internal partitions.  With
   ``--writers several`` each process's first stage writes its own source partitions
   (stream/runtime/writers.py) and the monitors merge the writers by event time.  The plain runner (no repartition) on the same topic is the reference of
   what the first stage costs.  ``--cpu-limit CORES`` gives each ``streamdrift run``
   process a CFS quota of its own (a cgroup, as a Kubernetes ``limits.cpu``): one process
   and two then compare at the same budget per process.  Without it they compare on the
   machine as it is, where on few cores the ratio is bounded by the cores: one process
   already keeps more than one core busy (its stages and client threads overlap), and
   two share the same cores with each other and the broker.
2. **Detection delay of a global drift, in total events.**  ``--clean`` clean events
   then a shift of x1 by ``--shift`` standard deviations (every key), keyed as above.
   The reference is one monitor that sees every event (a one-partition run: ``replay``
   gives the same detections, tested by tests/integration/test_run.py); the scale-out case
   is two two-stage runners (threads of this process) on the keyed topic.  Delay = index
   of the first x1 alarm minus the drift's first index (events are numbered by their
   ``ts``); medians over ``--seeds`` streams.
3. **Episodes on clean keyed data** with two processes in the delay runs (before the
   drift), per column: whether the internal partitions carry a representative mix.

Usage::

    PYTHONPATH=$PWD python bench/bench_scaleout.py --help
    PYTHONPATH=$PWD python bench/bench_scaleout.py --quick        # ~3 min
    PYTHONPATH=$PWD python bench/bench_scaleout.py                # ~10 min

Writes ``bench/results/scaleout.md`` (``--out``).  Starts a local broker (stream.broker)
unless ``--bootstrap-servers`` names one.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import stream.broker  # noqa: E402
from stream.config import load_config  # noqa: E402
from stream.engine.baselines import resolve_baselines  # noqa: E402
from stream.engine.pipeline import Pipeline  # noqa: E402
from stream.runtime.monitors import FramedRunner, monitor_config  # noqa: E402
from stream.runtime.twostage import TwoStageRunner  # noqa: E402
from tests.support.configs import m1_config, write_config  # noqa: E402
from tests.support.events import CLEAN, COLUMNS, Regime, m1_events  # noqa: E402
from tests.support.kafka import produce  # noqa: E402
from tests.support.metrics import scrape  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

RESULTS = REPO / "bench" / "results"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


#: the broker's pid, when known (its CPU seconds are reported beside the processes')
BROKER_PID: list[int | None] = [None]
#: seconds between two scrapes of every process's /metrics (``--scrape-interval``)
SCRAPE_S = [1.0]
_PROCESSED = re.compile(r'^streamdrift_events_processed_total\{model="m1"\} (\S+)$', re.M)


_WAITED = re.compile(r'^streamdrift_writer_align_wait_seconds_total (\S+)$', re.M)
_LATE = re.compile(r'^streamdrift_writer_merge_late_messages_total (\S+)$', re.M)


def processed(text: str) -> float:
    """``streamdrift_events_processed_total{model="m1"}`` of an exposition (0 before it
    is exported).  A search, not a parse: prometheus_client's parser takes ~15 ms of this
    process's CPU per exposition of a 16-tenant run, on the cores the runs share."""
    m = _PROCESSED.search(text)
    return float(m.group(1)) if m else 0.0


def merged_late(text: str) -> float:
    """Messages the process's writer merges released late (0 if it exports none)."""
    m = _LATE.search(text)
    return float(m.group(1)) if m else 0.0


def waited(text: str) -> float:
    """Seconds the process's first-stage writer held back (watermark alignment; 0 if it
    does not export them)."""
    m = _WAITED.search(text)
    return float(m.group(1)) if m else 0.0


@contextlib.contextmanager
def broker(bootstrap: str | None, workdir: Path) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    b = stream.broker.LocalBroker(workdir=workdir / "kafka")
    b.start()
    BROKER_PID[0] = b.pid
    try:
        yield b.bootstrap_servers
    finally:
        b.stop()


#: ``--tenants``: keys per value of c1 (1: the key is c1 itself)
TENANTS = [1]


def keyed(bootstrap: str, topic: str, events: list[bytes]) -> None:
    """Produce ``events`` keyed by their c1, or (``--tenants N``) by one of N tenants of
    their c1 value: with c1's three values the default partitioner puts every event in 2
    of 8 partitions (a and b hash to the same one: 80 % of the events), so the first
    stage's partitions cannot be split evenly between writers; N tenants per value
    (tenant- or customer-keyed topics, each tenant in one region) spread the keys over
    every partition while each partition still holds its own mix of c1."""
    n = TENANTS[0]
    keys = [(str(orjson.loads(m)["f"]["c1"]) + (f"-{i % n}" if n > 1 else "")).encode()
            for i, m in enumerate(events)]
    for i in range(0, len(events), 20_000):
        produce(bootstrap, topic, events[i:i + 20_000], keys=keys[i:i + 20_000],
                linger_ms=20, batch_size=262_144, acks=1)


#: the name of the cells of --split
SPLIT = "one process per stage"
#: the runs' --log-level (--log-level)
LOG_LEVEL = ["warning"]
#: source.kafka.client of every run (--client)
CLIENT = ["kafka-python"]
#: ``source.repartition.writers`` (``--writers``): one first stage writes, or each writes
#: its own source partitions (the monitors merge them by event time)
WRITERS = ["one"]


def config(workdir: Path, bootstrap: str, topic: str, group: str, internal: int | None,
           max_poll: int = 2000, pooled: bool = False) -> Path:
    cfg = m1_config(bootstrap=bootstrap, topic=topic, group=group, port=free_port(),
                    kafka={"max_poll_records": max_poll, "poll_timeout_ms": 200,
                           "client": CLIENT[0]},
                    detection={"false_alarm_events": 10_000_000, "window": 1000,
                               "cadence": 50},
                    state={"checkpoint_interval_s": 30})
    if internal is not None:
        cfg["source"]["repartition"] = {"topic": f"{group}-rp", "partitions": internal,
                                        "writers": WRITERS[0]}
        if pooled:
            cfg["source"]["repartition"].update(pooled=True, pool_topic=f"{group}-pool")
    return write_config(workdir / f"{group}.yaml", cfg)


def _produce_backlog(bootstrap: str, topic: str, n: int, tenants: int) -> None:
    TENANTS[0] = tenants
    keyed(bootstrap, topic, m1_events(1, [(n, CLEAN)], COLUMNS))


def produce_backlog(bootstrap: str, topic: str, n: int, tenants: int) -> None:
    """The throughput backlog, produced in a child process: 3 M events left this process
    at 12 GB RSS after producing them (freed, not given back to the system), beside the
    runs and the broker it measures."""
    proc = multiprocessing.get_context("spawn").Process(
        target=_produce_backlog, args=(bootstrap, topic, n, tenants))
    proc.start()
    proc.join()
    if proc.exitcode:
        raise RuntimeError(f"producing the backlog failed (exit code {proc.exitcode})")


# -- 1. throughput ------------------------------------------------------------------------
#: ``--cpu-limit``: each run process's CPU quota in cores (None: unlimited)
CPU_LIMIT: list[float | None] = [None]
_CFS_PERIOD_US = 100_000


def _cgroup_parent() -> tuple[Path, bool]:
    """Where :func:`limit_cpu` makes its cgroups, and whether that is cgroup v2."""
    root = Path("/sys/fs/cgroup")
    v2 = (root / "cgroup.controllers").exists()
    return (root if v2 else root / "cpu"), v2


def limit_cpu(pid: int, cpus: float) -> Path:
    """Put process ``pid`` (all its threads) in a cgroup of its own with a CFS quota of
    ``cpus`` cores, as a Kubernetes ``limits.cpu`` does; returns the cgroup (for
    :func:`unlimit`).  cgroup v2 (``cpu.max``) or v1 (``cpu.cfs_quota_us``)."""
    quota = max(1000, int(cpus * _CFS_PERIOD_US))
    parent, v2 = _cgroup_parent()
    if v2 and "cpu" not in (parent / "cgroup.subtree_control").read_text().split():
        (parent / "cgroup.subtree_control").write_text("+cpu")
    group = parent / f"streamdrift-bench-{pid}"
    group.mkdir()
    if v2:
        (group / "cpu.max").write_text(f"{quota} {_CFS_PERIOD_US}")
    else:
        (group / "cpu.cfs_period_us").write_text(str(_CFS_PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(quota))
    (group / "cgroup.procs").write_text(str(pid))
    return group


def unlimit(group: Path) -> None:
    """Remove a cgroup of :func:`limit_cpu` (its process has exited)."""
    with contextlib.suppress(OSError):
        group.rmdir()


def check_cpu_limit() -> str | None:
    """Why ``--cpu-limit`` cannot work here (None: it can): cgroups not writable."""
    parent, _ = _cgroup_parent()
    if not (parent / "cgroup.procs").exists():
        return f"no cgroup cpu controller at {parent}"
    if not os.access(parent, os.W_OK):
        return f"{parent} is not writable (run as root, or in a container that may " \
               "create cgroups)"
    return None


def drop_topics(bootstrap: str, prefix: str) -> None:
    """Delete the topics a cell's runs created (its internal, pool and alignment topics:
    ``<group>-*``): each cell writes its backlog again into them, ~0.3-0.5 GB per cell
    of a 3 M backlog, which filled a kept broker's disk over a day of rounds."""
    from kafka import KafkaAdminClient

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
        try:
            mine = [t for t in admin.list_topics() if t.startswith(prefix)]
            if mine:
                admin.delete_topics(mine, timeout_ms=30_000)
        finally:
            admin.close()
    except Exception as exc:  # noqa: BLE001 - the figures stand; say what is left behind
        log(f"  could not delete the topics {prefix}*: {type(exc).__name__}: {exc}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(workdir: Path, bootstrap: str, topic: str, n: int, procs: int,
               internal: int | None, timeout: float, pooled: bool = False,
               stages: list[str] | None = None) -> dict[str, float]:
    """One cell: ``procs`` processes of ``streamdrift run`` (each with its ``--stage`` from
    ``stages``, default both) on the backlog ``topic`` of ``n`` events."""
    group = f"tp-{uuid.uuid4().hex[:8]}"
    path = config(workdir, bootstrap, topic, group, internal, pooled=pooled)
    resolve_baselines(load_config(path))  # cached beside the config for the subprocesses
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = []
    groups: list[Path] = []
    for i in range(procs):
        port = free_port()
        err = (workdir / f"{group}.{i}.stderr").open("wb")
        runs.append((port, subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "--log-level", LOG_LEVEL[0], "run", "-c",
             str(path), "--metrics-port", str(port),
             *(["--stage", stages[i]] if stages else [])], cwd=workdir, env=env,
            stdout=subprocess.DEVNULL, stderr=err)))
        if CPU_LIMIT[0] is not None:
            groups.append(limit_cpu(runs[-1][1].pid, CPU_LIMIT[0]))
    marks: dict[float, float] = {}
    #: (events, CPU-s of the processes, of the broker) at the first scrape past 10 % and
    #: at the first past 90 %: the events per CPU-second are counted over that window
    snaps: dict[float, tuple[Any, ...]] = {}
    bpid = BROKER_PID[0]
    prev: tuple[float, float] | None = None
    t_end = time.monotonic() + timeout
    try:
        while time.monotonic() < t_end and len(marks) < 2:
            total = held = late = 0.0
            each: list[float] = []
            for port, proc in runs:
                if proc.poll() is not None:
                    raise RuntimeError(f"run exited: see {workdir}/{group}.*.stderr")
                with contextlib.suppress(OSError):
                    text = scrape(port)
                    total += processed(text)
                    held += waited(text)
                    each.append(waited(text))
                    late += merged_late(text)
            now = time.monotonic()
            for frac in (0.1, 0.9):
                if frac not in marks and total >= frac * n:
                    # the crossing, linear between this scrape and the one before
                    t0, n0 = prev if prev is not None and prev[1] < total else (now, total)
                    marks[frac] = t0 + (now - t0) * (frac * n - n0) / max(total - n0, 1.0)
                    snaps[frac] = (total, [cpu_seconds(p.pid) for _, p in runs],
                                   cpu_seconds(bpid) if bpid else 0.0, now, held, late, each)
            prev = (now, total)
            time.sleep(SCRAPE_S[0])
        if len(marks) < 2:
            raise RuntimeError(f"timed out: {marks}")
    finally:
        for _, proc in runs:
            proc.terminate()
        for _, proc in runs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:  # (its broker gone: its shutdown waits on it)
                proc.kill()
                proc.wait()
        for cg in groups:
            unlimit(cg)
        drop_topics(bootstrap, f"{group}-")
    (e0, c0, b0, s0, w0, _, each0), (e1, c1, b1, s1, w1, late1, each1) = \
        snaps[0.1], snaps[0.9]
    if s1 <= s0:
        log("  both marks fell between two scrapes: no CPU window (use more --events or a "
            "shorter --scrape-interval)")
    per_proc = [b - a for a, b in zip(c0, c1, strict=True)]
    cpu = sum(per_proc)
    bcpu = b1 - b0 if bpid else float("nan")
    dt = marks[0.9] - marks[0.1]
    return {"rate": 0.8 * n / dt, "per_cpu_s": (e1 - e0) / cpu if cpu > 0 else float("nan"),
            "cpu_s": cpu, "wall_s": dt, "broker_cpu_s": bcpu, "load": os.getloadavg()[0],
            "proc_cpu_s": per_proc,
            # cores busy with the runs and the broker over the CPU window
            "cores": (cpu + (bcpu if bpid else 0.0)) / max(s1 - s0, 1e-9),
            "waited_s": w1 - w0, "late": late1,
            "proc_waited_s": [b - a for a, b in zip(each0, each1, strict=False)]}


# -- 2. detection delay -----------------------------------------------------------------
def first_alarm(detections: list[Any], column: str, start: int) -> int | None:
    idx = sorted(int(round(d.event_time - 1.7e9)) for d in detections
                 if d.feature == column and d.event_time is not None
                 and d.event_time - 1.7e9 >= start)
    return idx[0] - start if idx else None


def delay_reference(workdir: Path, bootstrap: str, events: list[bytes], start: int) -> int | None:
    """One monitor that sees every event in order (= a one-partition run)."""
    path = config(workdir, bootstrap, "unused", f"ref-{uuid.uuid4().hex[:6]}", None)
    cfg = load_config(path)
    pipe = Pipeline(cfg, resolve_baselines(cfg))
    found: list[Any] = []
    for i in range(0, len(events), 2000):
        got, _ = pipe.process(events[i:i + 2000], base_index=i)
        found += got
    return first_alarm(found, "x1", start)


def generations(bootstrap: str, rp_topic: str) -> str:
    """Of the repartition topic's version-3 frames: the messages per (generation, writer
    index) — whether a writer's backlog share sits in one generation and another's in the
    next (what the merges' order must interleave)."""
    from stream.runtime.frames import unpack

    count: dict[tuple[int, int], int] = {}
    for values in stream.broker.read_to_end(bootstrap, rp_topic, values_only=True).values():
        for v in values:
            f = unpack(v)
            if f.writer is not None and len(f):
                k = (f.writer.generation, f.writer.index)
                count[k] = count.get(k, 0) + len(f)
    return ", ".join(f"g{g} w{w}: {n}" for (g, w), n in sorted(count.items()))


def delay_scaleout(workdir: Path, bootstrap: str, events: list[bytes], start: int,
                   partitions: int, internal: int, procs: int, timeout: float,
                   writers: int = 2, pooled: bool = False) -> tuple[int | None, dict[str, int]]:
    """``procs`` runners (threads) on a keyed topic, the first ``writers`` of them with
    both stages, the others monitors only (``run --stage monitor``): the first x1 alarm
    after the drift, and the episodes per column before it.  ``pooled``:
    ``source.repartition.pooled`` (the pooled CUSUM's alarms count, from the member that
    holds the pool; the monitors' own CUSUMs of the numeric columns do not alarm)."""
    topic = stream.broker.create_topic(bootstrap, f"delay-{uuid.uuid4().hex[:8]}", partitions)
    keyed(bootstrap, topic, events)
    produced_ms = int(time.time() * 1000)  # (at or after every event's Kafka timestamp)
    path = config(workdir, bootstrap, topic, f"dl-{topic}", internal, max_poll=500,
                  pooled=pooled)
    cfg = load_config(path)
    baselines = resolve_baselines(cfg)
    runs = []
    members: list[Any] = []
    for i in range(procs):
        pipe = Pipeline(cfg, baselines)
        stop = threading.Event()
        runner: Any = TwoStageRunner(cfg, pipe, stop) if i < writers else \
            FramedRunner(monitor_config(cfg), pipe, stop)
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        runs.append((pipe, stop, thread))
        members.append(runner.pool)
    t_end = time.monotonic() + timeout

    def folded() -> bool:
        held = [m.merge for m in members if m is not None and m.merge is not None]
        if not pooled or not held:
            return not pooled
        f = held[0].frontier
        if f is None:
            return False
        if isinstance(f, tuple):  # several writers: a key (timestamp, generation, ...)
            return f[0] >= produced_ms and held[0].pending == 0
        return bool(f >= len(events))

    try:
        while time.monotonic() < t_end:
            if sum(p.processed["m1"] for p, _, _ in runs) >= len(events) and folded():
                break
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        for _, stop, _ in runs:
            stop.set()
        for _, _, thread in runs:
            thread.join(60)
    if pooled:
        log("  pool: " + "; ".join(
            f"frontier {m.merge.frontier}, skipped {m.merge.skipped}, late "
            f"{getattr(m.merge, 'late', 0)}, forced {getattr(m.merge, 'forced', 0)}, alarms "
            f"{[(a.column, round(a.event_time - 1.7e9) - start) for a in m.alarms if a.kind == 'open' and a.event_time]}"
            if m.merge is not None else "not holding the pool" for m in members if m is not None))
        if WRITERS[0] == "several":
            log(f"  messages per (generation, writer): {generations(bootstrap, f'dl-{topic}-rp')}")
    found: list[Any] = [d for p, _, _ in runs for d in p.recent_alarms]
    found += [types.SimpleNamespace(feature=a.column, event_time=a.event_time)
              for m in members if m is not None for a in m.alarms if a.kind == "open"]
    before: dict[str, int] = {}
    for d in found:
        if d.event_time is not None and d.event_time - 1.7e9 < start:
            before[d.feature] = before.get(d.feature, 0) + 1
    return first_alarm(found, "x1", start), before


def machine() -> str:
    cpu = platform.processor() or "cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return f"{cpu}, {os.cpu_count()} cores, load average {load[0]:.1f} at the start"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap-servers", help="a running broker (default: start one)")
    p.add_argument("--broker-pid", type=int, help="pid of the --bootstrap-servers broker "
                   "(its CPU seconds are reported)")
    p.add_argument("--events", type=int, default=200_000, help="throughput backlog (200000)")
    p.add_argument("--source-partitions", type=int, default=8)
    p.add_argument("--internal", default="1,2",
                   help="partition counts of the internal topic to measure (1,2)")
    p.add_argument("--clean", type=int, default=3000, help="clean events before the drift")
    p.add_argument("--drift-events", type=int, default=3000)
    p.add_argument("--shift", type=float, default=0.5, help="x1 shift, standard deviations")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--base-seed", type=int, default=0,
                   help="first seed of the delay streams (100 + it; a second set: 1000)")
    p.add_argument("--pooled", choices=["off", "both", "only"], default="off",
                   help="delay runs with source.repartition.pooled: off, beside the runs "
                   "without (both), or instead of them for more than 1 internal partition "
                   "(only)")
    p.add_argument("--repeat", type=int, default=1, help="throughput runs per cell")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-delay", action="store_true")
    p.add_argument("--no-plain", action="store_true",
                   help="leave out the plain runner's throughput (the reference of the cost)")
    p.add_argument("--client", default="kafka-python",
                   choices=["kafka-python", "confluent-kafka"],
                   help="source.kafka.client (confluent-kafka: the monitors' consumer, the "
                   "first stage's fetch and its producer are librdkafka's)")
    p.add_argument("--writers", choices=["one", "several"], default="one",
                   help="source.repartition.writers (several: each process's first stage "
                   "writes its own source partitions)")
    p.add_argument("--tenants", type=int, default=1,
                   help="keys per c1 value (1: the key is c1; see keyed())")
    p.add_argument("--scrape-interval", type=float, default=1.0,
                   help="seconds between scrapes of the processes' /metrics during the "
                   "throughput runs (1.0; the 10 %% and 90 %% marks are interpolated "
                   "between scrapes). Before 2026-12-06 it was 0.1, with a full parse of "
                   "each exposition: ~15 ms of the scraped process's CPU and as much of "
                   "this one's per scrape, on the shared cores")
    p.add_argument("--topic", help="with --bootstrap-servers: measure throughput on this "
                   "topic, produced by an earlier run with the same --events and --tenants "
                   "(its log names it), instead of producing a backlog (3 M events take ~4 "
                   "min); each cell reads it from the start in a group of its own")
    p.add_argument("--keep", help="keep the runs' configs and logs in this folder (default: "
                   "a temporary one, deleted at the end)")
    p.add_argument("--log-level", default="warning", help="the runs' --log-level (warning)")
    p.add_argument("--split", action="store_true", help="also a cell of two processes, "
                   "one per stage (--stage repartition, --stage monitor)")
    p.add_argument("--quick", action="store_true",
                   help="60000 events, 3 seeds, /metrics every 0.1 s (a smoke run)")
    p.add_argument("--cpu-limit", type=float, metavar="CORES",
                   help="throughput: each streamdrift process gets a CFS quota of this many "
                        "cores (a cgroup of its own, as a Kubernetes limits.cpu), so one "
                        "process and two compare at the same budget per process; the broker "
                        "and this script are not limited (needs writable cgroups)")
    p.add_argument("--out", default=str(RESULTS / "scaleout.md"))
    args = p.parse_args(argv)
    if args.cpu_limit is not None:
        if args.cpu_limit <= 0:
            p.error("--cpu-limit: a number of cores above 0, for example 1 or 0.5")
        why = check_cpu_limit()
        if why is not None:
            p.error(f"--cpu-limit cannot limit the processes here: {why}")
        CPU_LIMIT[0] = args.cpu_limit
    if args.quick:  # a backlog read in about a second: scraped 10 times as often
        args.events, args.seeds = 60_000, 3
        args.scrape_interval = min(args.scrape_interval, 0.1)
    if args.topic and not args.bootstrap_servers:
        p.error("--topic names a topic of a broker kept running: give --bootstrap-servers")
    internals = [int(x) for x in args.internal.split(",")]
    CLIENT[0] = args.client
    WRITERS[0] = args.writers
    TENANTS[0] = max(1, args.tenants)
    BROKER_PID[0] = args.broker_pid
    SCRAPE_S[0] = args.scrape_interval
    LOG_LEVEL[0] = args.log_level
    lines = [f"# Scale-out on a keyed topic\n\nMachine: {machine()}. Command: "
             f"`bench/bench_scaleout.py {' '.join(argv or sys.argv[1:])}`.\n"]
    with tempfile.TemporaryDirectory(prefix="scaleout-") as tmp:
        workdir = Path(args.keep or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "reference.jsonl").write_bytes(
            b"\n".join(m1_events(77, [(10_000, CLEAN)], COLUMNS)))
        with broker(args.bootstrap_servers, workdir) as bootstrap:
            if not args.skip_throughput:
                if args.topic:  # a backlog an earlier run produced (its log names it)
                    topic = args.topic
                    log(f"reusing {topic}: it must hold exactly --events {args.events} "
                        "events of an earlier run with the same --tenants")
                else:
                    topic = stream.broker.create_topic(
                        bootstrap, f"tp-{uuid.uuid4().hex[:8]}", args.source_partitions)
                    log(f"producing {args.events} keyed events to {topic} ...")
                    produce_backlog(bootstrap, topic, args.events, TENANTS[0])
                cells = ([] if args.no_plain else [("plain runner", None, 1, False)]) + [
                    (f"repartition, {k} internal", k, procs, False) for k in internals
                    for procs in (1, 2)]
                if args.split:  # one process per stage
                    cells += [(f"repartition, {k} internal, {SPLIT}", k, 2, False)
                              for k in internals]
                if args.pooled != "off":  # the same cells with pooling, side by side
                    cells += [(f"{name}, pooled", k, procs, True)
                              for name, k, procs, _ in cells if k is not None]
                # rounds of every cell in turn: a drift of the machine's load reaches
                # one process and two alike, and each round gives its own ratio
                rounds: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(cells))}
                for r in range(args.repeat):
                    for i, (name, internal, procs, pool) in enumerate(cells):
                        log(f"throughput: {name}, {procs} process(es), round {r + 1} ...")
                        g = throughput(workdir, bootstrap, topic, args.events, procs,
                                       internal, timeout=900, pooled=pool,
                                       stages=["repartition", "monitor"]
                                       if SPLIT in name else None)
                        rounds[i].append(g)
                        log(f"  {g['rate']:.0f} events/s, {g['per_cpu_s']:.0f} per CPU-s; CPU-s "
                            f"{' + '.join(f'{c:.1f}' for c in g['proc_cpu_s'])}, cores busy "
                            f"{g['cores']:.2f}, writers held back {g['waited_s']:.1f} s ("
                            f"{' + '.join(f'{w:.1f}' for w in g['proc_waited_s'])}), "
                            f"merges' late messages {g['late']:.0f}, "
                            f"load {g['load']:.1f}")
                rows = []
                for i, (name, internal, procs, _) in enumerate(cells):
                    best = max(rounds[i], key=lambda g: g["rate"])
                    best["runs"] = [g["rate"] for g in rounds[i]]
                    rows.append((name, internal, procs, best))
                lines.append(f"## Throughput: {args.events} events, {args.source_partitions} "
                             f"source partitions keyed by c1, five columns, client "
                             f"{args.client}"
                             + ("" if args.cpu_limit is None else
                                f", each process limited to {args.cpu_limit:g} CPU")
                             + "\n")
                lines.append(f"The best of {args.repeat} round(s) per cell (the cells run in "
                             "turn in each round); every round's events/s, and its ratio to "
                             f"the same round's one process, in the last column. /metrics "
                             f"scraped every {args.scrape_interval:g} s.\n")
                lines.append("| mode | processes | events/s (wall) | vs one process | "
                             "events per CPU-second | CPU-s (per process) | "
                             "broker CPU-s | cores busy (runs + broker) | writers held "
                             "back, s | load | every round |")
                lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
                             "| --- |")
                one = {(internal, "pooled" in name): (g["rate"], g["runs"])
                       for name, internal, procs, g in rows if procs == 1}
                for name, internal, procs, g in rows:
                    best1, runs1 = one[(internal, "pooled" in name)]
                    ratio = g["rate"] / best1
                    each = " + ".join(f"{c:.1f}" for c in g["proc_cpu_s"])
                    every = ", ".join(
                        f"{r:,.0f}" + ("" if procs == 1 else f" ({r / r1:.2f}×)")
                        for r, r1 in zip(g["runs"], runs1, strict=True))
                    lines.append(f"| {name} | {procs} | {g['rate']:,.0f} | {ratio:.2f}× | "
                                 f"{g['per_cpu_s']:,.0f} | {each} = {g['cpu_s']:.1f} | "
                                 f"{g['broker_cpu_s']:.1f} | {g['cores']:.2f} | "
                                 f"{g['waited_s']:.1f} | "
                                 f"{g['load']:.1f} | {every} |")
                lines.append("")
            if not args.skip_delay:
                regime = Regime(x1_mean=args.shift)
                plain = [(k, 2, False) for k in internals] + [(max(internals), 1, False)]
                pooled = [(k, w, True) for k, w, _ in plain]
                cells = {"off": plain, "both": plain + pooled,
                         "only": [c for c in plain if c[0] == 1] + [
                             c for c in pooled if c[0] > 1]}[args.pooled]
                ref: list[int | None] = []
                out: dict[tuple[int, int, bool], list[int | None]] = {c: [] for c in cells}
                clean_eps: dict[tuple[int, int, bool], dict[str, int]] = {c: {} for c in cells}
                seeds = range(args.base_seed, args.base_seed + args.seeds)
                for seed in seeds:
                    events = m1_events(100 + seed, [(args.clean, CLEAN),
                                                    (args.drift_events, regime)], COLUMNS)
                    ref.append(delay_reference(workdir, bootstrap, events, args.clean))
                    for k, w, pool in cells:
                        log(f"delay: seed {seed}, {k} internal partition(s), {w} first "
                            f"stage(s){', pooled' if pool else ''} ...")
                        d, before = delay_scaleout(workdir, bootstrap, events, args.clean,
                                                   args.source_partitions, k, 2, 300, w, pool)
                        out[(k, w, pool)].append(d)
                        for col, n in before.items():
                            clean_eps[(k, w, pool)][col] = clean_eps[(k, w, pool)].get(col, 0) + n
                    log(f"  reference {ref[-1]}, scale-out {[out[c][-1] for c in cells]}")

                def med(xs: list[int | None]) -> str:
                    got = [x for x in xs if x is not None]
                    miss = len(xs) - len(got)
                    return (f"{statistics.median(got):.0f}" if got else "—") + \
                        (f" ({miss} missed)" if miss else "")

                ref_med = statistics.median([x for x in ref if x is not None] or [float("nan")])
                lines.append(f"## Detection delay of x1 shifted by {args.shift} σ (all keys), "
                             f"total events after the drift's start; {args.seeds} seeds "
                             f"({seeds[0]}–{seeds[-1]}), load {os.getloadavg()[0]:.1f} at "
                             "the end\n")
                lines.append("| run | median delay | per seed | vs one monitor | episodes "
                             "before the drift (all seeds) |")
                lines.append("| --- | --- | --- | --- | --- |")
                lines.append(f"| one monitor, every event (1-partition run) | {med(ref)} | "
                             f"{ref} | 1.00× | — |")
                for (k, w, pool) in cells:
                    c = (k, w, pool)
                    got = [x for x in out[c] if x is not None]
                    ratio = statistics.median(got) / ref_med if got else float("nan")
                    who = "2 two-stage runners" if w == 2 else \
                        "1 two-stage runner + 1 `--stage monitor`"
                    lines.append(f"| {who}, {args.source_partitions} keyed partitions, {k} "
                                 f"internal{', **pooled**' if pool else ''} | {med(out[c])} "
                                 f"| {out[c]} | {ratio:.2f}× | {clean_eps[c] or 'none'} |")
                lines.append("")
    text = "\n".join(lines)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n", encoding="utf-8")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
