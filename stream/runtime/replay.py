"""``streamdrift replay``: the run pipeline over a file of events, no broker needed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from stream.config import Config
from stream.engine.episodes import Episode
from stream.engine.pipeline import Detection, Pipeline
from stream.formats.batch import DecodedBatch
from stream.runtime.labelfeed import LabelFeed
from stream.sources.files import iter_batches

log = logging.getLogger("streamdrift.replay")


def replay(config: Config, pipeline: Pipeline, input_path: Path, batch_lines: int = 5000,
           on_batch: Callable[[int, int], None] | None = None,
           observe: Callable[[DecodedBatch, int], None] | None = None,
           labels_path: Path | None = None) -> dict[str, Any]:
    """Push every line of ``input_path`` through ``pipeline``; return the report.

    ``observe(batch, base_index)``, when given, is called after each batch is processed
    (the HTML report reads the pipeline's state there, see :mod:`stream.report`).
    ``labels_path``: label events, merged with the input by event time (see
    stream.runtime.labelfeed)."""
    feed = None if labels_path is None else LabelFeed(pipeline, labels_path)
    detections: list[Detection] = []
    closed: list[Episode] = []
    lines = 0
    started = time.perf_counter()

    def quality_steps() -> None:  # model-quality episodes (concept drift through the labels)
        for step, ep, d in pipeline.take_quality_steps():
            if step == "open":
                detections.append(d)
            else:
                closed.append(ep)

    for batch in iter_batches(input_path, batch_lines):
        found, decoded = pipeline.process(batch, base_index=lines)
        if observe is not None:
            observe(decoded, lines)
        detections.extend(found)
        closed.extend(ep for step, ep in pipeline.last_episodes if step == "close")
        lines += len(batch)
        if feed is not None and pipeline.last_event_ts:
            feed.until(max(pipeline.last_event_ts.values()))
        quality_steps()
        if on_batch:
            on_batch(lines, sum(len(b) + 1 for b in batch))
    pipeline.flush_decoder()
    if feed is not None:
        feed.until(float("inf"))
    quality_steps()
    detections.sort(key=lambda d: d.index)
    took = time.perf_counter() - started
    processed = pipeline.events
    snap_invalid = dict(pipeline.invalid)
    episodes = sorted([*closed, *pipeline.open_episodes()],
                      key=lambda ep: (-1 if ep.opened is None else ep.opened, ep.model,
                                      ep.feature))
    report = {
        "input_lines": lines,
        "events_processed": processed,
        "events_invalid": snap_invalid,
        "detections": [d.to_dict() for d in detections],
        "episodes": [ep.to_dict() for ep in episodes],
        "models": pipeline.report_models(),
        "seconds": round(took, 3),
    }
    if feed is not None:
        report["label_lines"] = feed.lines
    log.info("replay done", extra={"lines": lines, "events_processed": processed,
                                   "detections": len(detections),
                                   "episodes": len(episodes),
                                   "seconds": round(took, 3)})
    return report


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
