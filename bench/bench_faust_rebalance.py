"""A second Faust worker joins: what does the rebalance lose, duplicate or pause?

Starts the local broker, produces events of model m1 at ``--rate`` per second for
``--seconds`` to a topic of 4 partitions, runs one Faust worker (``take_events(200,
within=0.5)``, recording every partition and offset it is handed and when), starts a
second worker of the same app 15 s later, and reports the events produced, processed,
duplicated and never processed, the pauses in processing longer than 1 s after the join,
and when each worker's partitions were revoked.  Part of the Faust decision in
docs/faust.md (issue #14, item 2).

Usage::

    PYTHONPATH=$PWD .venv/bin/python bench/bench_faust_rebalance.py     # ~90 s
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def worker(boot: str, topic: str, app_id: str, out: str, run_s: float) -> int:
    import asyncio
    import os

    import faust

    app = faust.App(app_id, broker=f"kafka://{boot}", value_serializer="raw",
                    web_enabled=False, topic_replication_factor=1,
                    consumer_auto_offset_reset="earliest", store="memory://",
                    datadir=out + ".data")
    source = app.topic(topic, value_type=bytes)
    seen: list[list[float]] = []
    revokes: list[list[Any]] = []

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: Any, **_: Any) -> None:
        revokes.append([time.time(), sorted({tp.partition for tp in revoked})])

    @app.agent(source)
    async def record(stream: Any) -> None:
        async for events in stream.take_events(200, within=0.5):
            now = time.time()
            seen.extend([e.message.partition, e.message.offset, now] for e in events)

    @app.task
    async def stop() -> None:
        await asyncio.sleep(run_s)
        Path(out).write_text(json.dumps({"seen": seen, "revokes": revokes}))
        os._exit(0)

    faust.Worker(app, loglevel="ERROR", quiet=True).execute_from_commandline()
    return 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=40)
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(*args.worker[:4], float(args.worker[4]))

    import stream.broker
    from tests.support.kafka import EventProducer

    work = Path(tempfile.mkdtemp(prefix="bench-faust-rebalance-"))
    broker = stream.broker.LocalBroker(workdir=work / "broker", partitions=4)
    broker.start()
    try:
        boot = broker.bootstrap_servers
        topic = stream.broker.create_topic(boot, f"rebalance-{uuid.uuid4().hex[:6]}", 4)
        app_id = f"rebalance-{uuid.uuid4().hex[:6]}"
        producer = EventProducer(boot, topic, rate=args.rate, seed=1,
                                 total=args.rate * args.seconds)
        producer.start()
        cmd = [sys.executable, __file__, "--worker", boot, topic, app_id]
        run_a = args.seconds + 35
        a = subprocess.Popen([*cmd, str(work / "a.json"), str(run_a)])
        time.sleep(15)
        joined = time.time()
        b = subprocess.Popen([*cmd, str(work / "b.json"), str(run_a - 20)])
        a.wait(run_a + 60)
        b.wait(run_a + 60)
        producer.stop()
        producer.check()
        first = json.loads((work / "a.json").read_text())
        second = json.loads((work / "b.json").read_text())
        handed = Counter((int(p), int(o)) for p, o, _ in first["seen"] + second["seen"])
        times = sorted(t for _, _, t in first["seen"] + second["seen"] if t > joined)
        pauses = [(round(times[i] - joined, 1), round(times[i + 1] - times[i], 2))
                  for i in range(len(times) - 1) if times[i + 1] - times[i] > 1.0]
        print(json.dumps({
            "produced": producer.messages, "processed": len(handed),
            "duplicates": sum(n - 1 for n in handed.values()),
            "never_processed": producer.messages - len(handed),
            "pauses_after_join_s": pauses,
            "revoked_s_after_join": {
                "first": [(round(t - joined, 1), p) for t, p in first["revokes"]],
                "second": [(round(t - joined, 1), p) for t, p in second["revokes"]]},
            "partitions": {"first": dict(Counter(p for p, _, _ in first["seen"])),
                           "second": dict(Counter(p for p, _, _ in second["seen"]))},
        }))
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
