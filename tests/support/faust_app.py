"""A tiny Faust app that feeds streamdrift monitors through :mod:`stream.adapters.faust`.

Run as ``python -m tests.support.faust_app SPEC.json`` (the integration tests do, in a
subprocess with a timeout).  The spec names ``bootstrap``, ``topic``, ``app_id``,
``config`` (a streamdrift configuration file), ``events`` (how many to wait for),
``metrics_port``, ``out`` (the result file) and ``timeout_s``.  The app reads ``topic``
with ``take_events(200, within=0.5)`` into :meth:`StreamdriftSink.process_events` (state
per source partition); once ``events`` events are processed (or at the timeout) it scrapes
its own ``/metrics`` and writes the result as JSON::

    {"processed": 8000, "alarms": {"x1": 2, ...}, "partitions": [["topic", 0], ...],
     "detections": [{"feature": "x1", "partition": 0, "offset": 4410, ...}],
     "metrics": "<the /metrics text>", "error": null}
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any


def main(spec_path: str) -> int:
    import faust

    from stream.adapters.faust import StreamdriftSink

    spec = json.loads(Path(spec_path).read_text())
    sink = StreamdriftSink(spec["config"], port=spec["metrics_port"])
    app = faust.App(spec["app_id"], broker=f"kafka://{spec['bootstrap']}",
                    value_serializer="raw", key_serializer="raw", web_enabled=False,
                    topic_replication_factor=1, consumer_auto_offset_reset="earliest",
                    store="memory://", datadir=spec["datadir"])
    sink.attach(app)
    topic = app.topic(spec["topic"], value_type=bytes)
    done = asyncio.Event()
    detections: list[dict[str, Any]] = []

    @app.agent(topic)
    async def watch(stream: Any) -> None:
        async for events in stream.take_events(200, within=0.5):
            for d in sink.process_events(events):
                detections.append({**d.to_dict(), "offset": d.offset})
            if processed() >= spec["events"]:
                done.set()

    def processed() -> int:
        return sum(sink.pipeline.processed.values())

    @app.task
    async def finish() -> None:
        error = None
        try:
            await asyncio.wait_for(done.wait(), spec["timeout_s"])
        except TimeoutError:
            error = f"timeout after {spec['timeout_s']} s: {processed()} events processed"
        url = f"http://127.0.0.1:{sink.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback
            text = resp.read().decode()
        snap = sink.pipeline.snapshot()
        alarms = {col: sum(d.alarms for d in c.detectors.values())
                  for m in snap.models.values() for col, c in m.columns.items()}
        Path(spec["out"]).write_text(json.dumps({
            "processed": processed(), "alarms": {k: v for k, v in alarms.items() if v},
            "partitions": sorted(sink.pipeline.partitions), "detections": detections,
            "metrics": text, "error": error}))
        sys.stdout.flush()
        sink.close()
        os._exit(0)  # the result is written; Faust's own shutdown is not under test

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
