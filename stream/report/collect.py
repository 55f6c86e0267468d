"""What the HTML report records while a replay runs: a ``replay(observe=...)`` callback.

After every batch :class:`ReportRecorder` reads the live monitors of the pipeline (no
change to the hot path: it runs between batches, only when a report was asked for):

* every detector's score (statistic / threshold) and every column's data-quality
  ratios, into one bounded :class:`~stream.report.series.SeriesBlock` per model;
* for each column episode, the recent window against the reference at the episode's
  peak (the batch end where the column's highest score was largest);
* for what-if injection (:mod:`stream.report.inject`), at each injection position the
  state of every column monitor at the first batch end at or after it, and the decoded
  values of the next ``horizon`` events of each model.

Memory is bounded by the configuration (columns x series capacity, episodes x bins,
``horizon`` x columns), never by the length of the input, except the episode list.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.engine.pipeline import LOCAL_PARTITION, Pipeline
from stream.formats.batch import DecodedBatch
from stream.report.series import SeriesBlock

#: series names of a column's data-quality ratios, by column type
RATIOS = {"numeric": ("missing_ratio", "invalid_ratio", "out_of_range_ratio"),
          "categorical": ("missing_ratio", "invalid_ratio", "unseen_ratio")}
#: the model-level series (share of incomplete events in the recent window)
INCOMPLETE = "incomplete_ratio"
#: at most this many episodes per column keep their window at the peak
MAX_PEAK_WINDOWS = 20


@dataclass
class PeakWindow:
    """The recent window of a column at the peak of one of its episodes."""

    #: input index (end of the batch) where the peak was seen
    index: int
    score: float
    detector: str
    #: counts of the window's values per bin, and the reference probabilities
    counts: np.ndarray
    probs: np.ndarray
    ratios: dict[str, float]


@dataclass
class Segment:
    """The events of one model after the injection position, and its monitors' state."""

    #: input index of the first line after the snapshot
    at: int
    #: the model's events processed before it
    events_before: int
    #: column -> :meth:`ColumnMonitor.to_dict` at the snapshot
    states: dict[str, dict[str, Any]]
    #: columns with an episode open at the snapshot
    drifting: set[str]
    horizon: int
    positions: list[np.ndarray] = field(default_factory=list)
    values: dict[str, list[np.ndarray]] = field(default_factory=dict)
    invalid: dict[str, list[np.ndarray]] = field(default_factory=dict)
    n: int = 0

    def add(self, positions: np.ndarray, columns: dict[str, np.ndarray],
            invalid: dict[str, np.ndarray]) -> None:
        take = min(self.horizon - self.n, int(positions.size))
        if take <= 0:
            return
        self.positions.append(positions[:take].copy())
        for col in self.states:
            self.values.setdefault(col, []).append(np.array(columns[col][:take]))
            self.invalid.setdefault(col, []).append(np.array(invalid[col][:take], dtype=bool))
        self.n += take

    def column(self, col: str) -> tuple[np.ndarray, np.ndarray]:
        """(values, invalid mask) of column ``col`` over the segment."""
        vals = self.values.get(col) or [np.empty(0)]
        inv = self.invalid.get(col) or [np.empty(0, dtype=bool)]
        return np.concatenate(vals), np.concatenate(inv)

    @property
    def input_positions(self) -> np.ndarray:
        return np.concatenate(self.positions) if self.positions else np.empty(0, np.int64)


class ReportRecorder:
    """Call it after each batch: ``replay(..., observe=recorder)``.

    Parameters
    ----------
    pipeline : Pipeline
        The pipeline the replay drives (its single local partition is read).
    capacity : int
        Points kept per plotted line (see :class:`SeriesBlock`).
    inject_at : sequence of int
        Input indexes from which what-if scenarios are injected (empty: no injection).
    horizon : int
        Events of each model kept after each position for the what-if runs.
    """

    def __init__(self, pipeline: Pipeline, capacity: int = 1024,
                 inject_at: Sequence[int] = (), horizon: int = 0) -> None:
        self.pipeline = pipeline
        #: the positions not reached yet, ascending
        self._todo = sorted(set(inject_at))
        self.horizon = horizon
        self.layout: dict[str, list[tuple[str, str, str]]] = {}
        self.series: dict[str, SeriesBlock] = {}
        for name, mon in pipeline.fresh.items():
            rows: list[tuple[str, str, str]] = []
            for col, cm in mon.columns.items():
                rows += [(col, "score", kind) for kind in cm.detectors]
                rows += [(col, "ratio", r) for r in RATIOS[cm.profile.kind]]
            rows.append(("", "ratio", INCOMPLETE))
            self.layout[name] = rows
            self.series[name] = SeriesBlock([f"{c}/{k}" for c, _, k in rows], capacity)
        #: (model, column, open index) -> the window at the episode's peak so far
        self.peaks: dict[tuple[str, str, int | None], PeakWindow] = {}
        self._open: dict[tuple[str, str], int | None] = {}
        #: batch end of the snapshot -> model -> its segment, in input order
        self.segments: dict[int, dict[str, Segment]] = {}
        self.lines = 0

    def __call__(self, batch: DecodedBatch, base_index: int) -> None:
        end = base_index + batch.n_messages
        self.lines = end
        pipe = self.pipeline
        for step, ep in pipe.last_episodes:
            key = (ep.model, ep.feature)
            if step == "open":
                self._open[key] = ep.opened
            else:
                self._open.pop(key, None)
                self._peak(ep.model, ep.feature, ep.opened, end, closing=True)
        for (model, col), opened in self._open.items():
            self._peak(model, col, opened, end)
        for name, block in self.series.items():
            mon = pipe.monitor(name, LOCAL_PARTITION)
            if mon is None:
                continue
            vals: list[float] = []
            for cm in mon.columns.values():
                vals += [d.score for d in cm.detectors.values()]
                ratios = cm.ratios()
                vals += [ratios[r] for r in RATIOS[cm.profile.kind]]
            vals.append(mon.quality.test.rate if mon.quality is not None else 0.0)
            arr = np.nan_to_num(np.array(vals, dtype=np.float64), nan=0.0, posinf=1e9)
            block.append(end, arr)
        if self.segments or self._todo:
            self._segment(batch, base_index, end)

    def _peak(self, model: str, col: str, opened: int | None, end: int,
              closing: bool = False) -> None:
        mon = self.pipeline.monitor(model, LOCAL_PARTITION)
        if mon is None or col not in mon.columns:
            return  # a model-level episode (column ""): no window to show
        cm = mon.columns[col]
        best, det = -math.inf, ""
        for kind, d in cm.detectors.items():
            s = d.score
            if math.isfinite(s) and s > best:
                best, det = s, kind
        key = (model, col, opened)
        was = self.peaks.get(key)
        if was is not None and not best > was.score:
            return
        if was is None and not closing:
            kept = sum(1 for k in self.peaks if k[0] == model and k[1] == col)
            if kept >= MAX_PEAK_WINDOWS:
                return
        if was is not None and closing:
            return
        counts, probs = cm.window_comparison()
        self.peaks[key] = PeakWindow(end, best, det, counts, probs, cm.ratios())

    def _segment(self, batch: DecodedBatch, base_index: int, end: int) -> None:
        for segs in self.segments.values():  # the batch follows every snapshot taken so far
            for name, seg in segs.items():
                mb = batch.models.get(name)
                if mb is not None and mb.n_events and seg.n < seg.horizon:
                    seg.add(mb.positions + base_index, mb.columns, mb.invalid_mask)
        if not self._todo or end < self._todo[0]:
            return
        while self._todo and self._todo[0] <= end:
            self._todo.pop(0)
        snap: dict[str, Segment] = {}
        for name in self.series:
            mon = self.pipeline.monitor(name, LOCAL_PARTITION)
            if mon is None:
                continue
            snap[name] = Segment(
                at=end, events_before=mon.n_events,
                states={c: cm.to_dict() for c, cm in mon.columns.items()},
                drifting={c for (m, c) in self._open if m == name}, horizon=self.horizon)
        self.segments[end] = snap
