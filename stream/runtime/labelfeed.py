"""``replay --labels FILE``: label events merged with the input by event time.

The label file holds one JSON label event per line, in (roughly) the order of their event
times.  After each input batch, the labels whose time is at most the newest event time the
input has reached are joined (:meth:`Pipeline.process_labels`); the rest follow at the
end.  Small disorder is harmless: the join waits ``label_wait_s`` for a prediction and
``horizon_s`` for a label, both in event time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from stream.engine.pipeline import Pipeline
from stream.formats.columns import timestamps_column

#: label lines joined per call
CHUNK = 5000


class LabelFeed:
    """Reads a label file ahead of the input up to a given event time."""

    def __init__(self, pipeline: Pipeline, path: Path) -> None:
        self.pipeline = pipeline
        cfg = pipeline.config.source.timestamp
        labelled = [m.labels for m in pipeline.config.models if m.labels is not None]
        if not labelled:
            raise ValueError("--labels needs a model with labels: in the configuration")
        self.path_ = labelled[0].timestamp_path or (cfg.path if cfg else ("timestamp",))
        self.unit = cfg.unit if cfg is not None else "s"
        self._lines: Iterator[bytes] = self._read(path)
        self._ahead: tuple[float, bytes] | None = None
        self.lines = 0

    @staticmethod
    def _read(path: Path) -> Iterator[bytes]:
        with path.open("rb") as fh:
            for line in fh:
                yield line.rstrip(b"\r\n")

    def _time(self, line: bytes) -> float:
        """The line's event time; -inf when it has none (joined at once: counted as bad)."""
        try:
            event: Any = orjson.loads(line)
        except orjson.JSONDecodeError:
            return -math.inf
        for key in self.path_:
            event = event.get(key) if isinstance(event, dict) else None
        ts, _ = timestamps_column([event], 1, self.unit)
        t = float(ts[0])
        return t if math.isfinite(t) else -math.inf

    def until(self, t: float) -> int:
        """Join the labels up to event time ``t`` (all of them for +inf); returns how many."""
        chunk: list[bytes] = []
        n = 0
        while True:
            if self._ahead is None:
                line = next(self._lines, None)
                if line is None:
                    break
                self._ahead = (self._time(line), line)
            if self._ahead[0] > t:
                break
            chunk.append(self._ahead[1])
            self._ahead = None
            if len(chunk) >= CHUNK:
                n += self._push(chunk)
                chunk = []
        return n + self._push(chunk)

    def _push(self, chunk: list[bytes]) -> int:
        if chunk:
            self.pipeline.process_labels(chunk)
            self.lines += len(chunk)
        return len(chunk)
