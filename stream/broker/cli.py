"""The command line of the local broker: ``fetch``, ``run``, ``check``.

    python -m stream.broker fetch                  # only fetch the classpath (Maven)
    python -m stream.broker run [--port 9092]      # foreground broker until Ctrl-C
    python -m stream.broker check                  # start, round-trip a message, stop

``python deploy/kafka/broker.py ...`` is the same command line, from a checkout.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
import uuid

from stream.broker.classpath import fetch_classpath, java_major, kafka_version
from stream.broker.errors import BrokerError
from stream.broker.local import LocalBroker
from stream.broker.process import pid_alive


def _cmd_fetch(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    libs = fetch_classpath(args.cache)
    print(f"Kafka {kafka_version()} classpath: {libs} ({time.monotonic() - t0:.1f}s)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    stop_requested = threading.Event()
    starting = True

    def on_signal(signum: int, _frame: object) -> None:
        stop_requested.set()
        if starting:
            raise KeyboardInterrupt  # abort start(); LocalBroker.start cleans up

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    broker = LocalBroker(
        workdir=args.workdir,
        port=args.port,
        controller_port=args.controller_port,
        partitions=args.partitions,
        cache=args.cache,
        verbose=True,
    )
    try:
        broker.start(timeout=args.timeout)
    except KeyboardInterrupt:
        print("interrupted while starting; stopped", file=sys.stderr)
        return 130
    starting = False
    print(f"Kafka {kafka_version()} broker pid {broker.pid}, logs in {broker.log_path}")
    print(f"bootstrap.servers={broker.bootstrap_servers}")
    print(f"ready ({broker.timings['start']:.1f}s); Ctrl-C or SIGTERM stops it", flush=True)
    try:
        while not stop_requested.wait(0.5):
            if not broker.running:
                rc = broker.proc.returncode if broker.proc else None
                print(
                    f"the broker exited on its own (code {rc}); see {broker.log_path}",
                    file=sys.stderr,
                )
                broker.stop()
                return 1
    finally:
        print("stopping...", flush=True)
        broker.stop()
    print(f"stopped in {broker.timings.get('stop', 0.0):.1f}s")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    timings: list[tuple[str, float]] = []
    t_all = time.monotonic()
    broker = LocalBroker(partitions=1, cache=args.cache)
    failure = None
    try:
        _check_round_trip(broker, timings, args.timeout)
    except Exception as exc:  # report any failure, after stopping the broker
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        pid = broker.pid
        broker.stop()
    if "stop" in broker.timings:
        timings.append(("stop broker", broker.timings["stop"]))
    if pid is not None and pid_alive(pid):
        failure = failure or f"java pid {pid} still alive after stop()"
    timings.append(("total", time.monotonic() - t_all))
    print(f"Kafka {kafka_version()}, Java {java_major()}, timings:")
    for name, secs in timings:
        print(f"  {name:<32} {secs:6.2f}s")
    if failure:
        print(f"check FAILED: {failure}", file=sys.stderr)
        return 1
    print("check ok")
    return 0


def _check_round_trip(
    broker: LocalBroker, timings: list[tuple[str, float]], timeout: float
) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    t0 = time.monotonic()
    broker.fetch_classpath()
    timings.append(("fetch classpath", time.monotonic() - t0))
    broker.start(timeout=timeout)
    timings.append(("  format storage", broker.timings.get("format", 0.0)))
    timings.append(("start broker (format to ready)", broker.timings["start"]))
    print(f"broker ready on {broker.bootstrap_servers} (pid {broker.pid})", flush=True)

    topic = f"streamdrift-check-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    broker.create_topic(topic, partitions=1)
    timings.append(("create topic", time.monotonic() - t0))

    payload = f"hello from streamdrift {uuid.uuid4()}".encode()
    t0 = time.monotonic()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    try:
        meta = producer.send(topic, payload).get(timeout=30)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
    timings.append(("produce 1 message", time.monotonic() - t0))

    t0 = time.monotonic()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap_servers,
        group_id=f"check-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    got = None
    try:
        deadline = time.monotonic() + 30
        while got is None and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    got = rec.value
    finally:
        consumer.close()
    timings.append(("consume 1 message (group join)", time.monotonic() - t0))
    if got != payload:
        raise BrokerError(f"consumed {got!r} within 30s, expected {payload!r}")
    print(f"round trip ok: {topic}[{meta.partition}]@{meta.offset}")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m stream.broker",
        description="A real Apache Kafka broker (KRaft, one node) on 127.0.0.1 without Docker.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--cache",
        metavar="DIR",
        help="classpath cache folder (default: $STREAMDRIFT_KAFKA_CACHE, else <repo>/.cache/kafka "
        "in a checkout, else ~/.cache/streamdrift/kafka)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "fetch",
        parents=[common],
        help="only fetch the Kafka classpath with Maven (cached)",
        description="Fetch the Kafka jars with Maven into the cache; no-op when cached.",
    )
    p.set_defaults(func=_cmd_fetch)

    p = sub.add_parser(
        "run",
        parents=[common],
        help="run a broker in the foreground until SIGINT/SIGTERM",
        description="Start a broker, print its bootstrap address and 'ready', "
        "stay in the foreground until Ctrl-C/SIGTERM, then stop it.",
    )
    p.add_argument(
        "--port", type=int, default=9092, help="client port (0 = any free port; default 9092)"
    )
    p.add_argument(
        "--controller-port", type=int, default=0, help="KRaft controller port (default: free)"
    )
    p.add_argument(
        "--partitions", type=int, default=1, help="num.partitions for auto-created topics"
    )
    p.add_argument("--workdir", help="keep data and logs here (default: temp dir, deleted on stop)")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "check",
        parents=[common],
        help="start on a free port, round-trip one message, stop",
        description="Smoke test: start a broker on a free port, create a topic, "
        "produce and consume one message, stop; prints timings.",
    )
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness")
    p.set_defaults(func=_cmd_check)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
