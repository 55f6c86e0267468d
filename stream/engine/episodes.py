"""Drift episodes of columns: the union of their detectors' episodes.

A detector's alarm opens an episode of that detector, which stays open while
its evidence persists and closes with hysteresis (see
:meth:`detectors.base.Detector.configure_episodes`).  A column is drifting while
any of its detectors has an episode open: its episode opens with the first
detector episode and closes with the last one.  :class:`EpisodeBook` keeps the
open column episodes of one partition.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stream.engine.figures import PartitionKey


@dataclass(frozen=True)
class Detection:
    """A detector episode opened (an alarm) or closed, located in the input.

    ``index`` is the position in the whole input; for a close, ``statistic`` is
    the episode's peak statistic.  ``offset`` (the Kafka offset of the event, when the
    caller gave them) and ``event_time`` (``source.timestamp``, seconds) locate it in the
    source; they are not part of its identity nor of :meth:`to_dict`.
    """

    model: str
    feature: str
    detector: str
    index: int
    statistic: float
    threshold: float
    offset: int | None = field(default=None, compare=False)
    event_time: float | None = field(default=None, compare=False)
    #: ``name=value`` of the segment whose monitor raised it ("": the model-wide monitor)
    segment: str = ""

    @property
    def score(self) -> float:
        return self.statistic / self.threshold if self.threshold > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = {"model": self.model, "feature": self.feature, "detector": self.detector,
               "index": self.index, "statistic": self.statistic, "threshold": self.threshold}
        if self.segment:
            out["segment"] = self.segment
        return out


@dataclass
class Episode:
    """A drift episode of one column on one partition."""

    model: str
    feature: str
    partition: PartitionKey
    #: input index of the event that opened it (None: open before a restore)
    opened: int | None
    #: wall-clock time it opened (or was restored)
    opened_at: float
    closed: int | None = None
    #: the detectors that had an episode in it, in order of opening
    detectors: list[str] = field(default_factory=list)
    #: largest statistic / threshold of its detector episodes
    peak_score: float = 0.0
    open_detectors: set[str] = field(default_factory=set)
    #: source offset and event time of the opening and the closing event (None: unknown)
    open_offset: int | None = None
    open_event_time: float | None = None
    close_offset: int | None = None
    close_event_time: float | None = None
    #: detector -> (statistic, threshold) of the detectors that opened it, at that event
    open_scores: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: detector -> (peak statistic, threshold) of its closed detector episodes
    peaks: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: ``name=value`` of the segment ("": the model-wide monitor)
    segment: str = ""
    #: a prediction's episode: the features ranked by contribution at its opening (the top
    #: three; stream.engine.attribution.rank_root_cause); [] otherwise
    root_cause: list[dict[str, Any]] = field(default_factory=list)
    #: a model-quality episode (no input offset): the ordinal of the joined pair of its label
    #: join that opened / closed it (the drift-events records' identity after a restore)
    open_pair: int | None = None
    close_pair: int | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.model, self.feature, self.segment)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "feature": self.feature,
                               "open_index": self.opened, "close_index": self.closed,
                               "detectors": list(self.detectors),
                               "peak_score": round(self.peak_score, 6)}
        if self.segment:
            out["segment"] = self.segment
        if self.root_cause:
            out["root_cause"] = [dict(c) for c in self.root_cause]
        return out

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of an open episode (see :meth:`EpisodeBook.restore`)."""
        return {"open_offset": self.open_offset, "open_event_time": self.open_event_time,
                "opened_at": self.opened_at, "detectors": list(self.detectors),
                "peak_score": self.peak_score,
                "open_scores": {k: list(v) for k, v in self.open_scores.items()},
                "peaks": {k: list(v) for k, v in self.peaks.items()}}


class EpisodeBook:
    """The open column episodes of one partition."""

    __slots__ = ("open", "partition")

    def __init__(self, partition: PartitionKey) -> None:
        self.partition = partition
        #: (model, column, segment) -> its open episode
        self.open: dict[tuple[str, str, str], Episode] = {}

    def restore(self, model: str, feature: str, detectors: list[str], now: float,
                saved: Mapping[str, Any] | None = None, segment: str = "") -> None:
        """A column whose restored detectors have episodes open (opened before the restore).

        ``saved`` is the episode's :meth:`Episode.state` from the checkpoint, when it has
        one: where in the source it opened, and its scores so far.  Anything malformed in
        it is left unknown (None), never raised."""
        if not detectors:
            return
        ep = Episode(model, feature, self.partition, None, now, detectors=list(detectors),
                     open_detectors=set(detectors), segment=segment)
        if isinstance(saved, Mapping):
            ep.open_offset = _int(saved.get("open_offset"))
            ep.open_event_time = _num(saved.get("open_event_time"))
            ep.opened_at = _num(saved.get("opened_at")) or now
            ep.peak_score = _num(saved.get("peak_score")) or 0.0
            ep.open_scores = _pairs(saved.get("open_scores"))
            ep.peaks = _pairs(saved.get("peaks"))
            known = saved.get("detectors")
            if isinstance(known, list):
                ep.detectors = [str(d) for d in known]
                ep.detectors += [d for d in detectors if d not in ep.detectors]
        self.open[ep.key] = ep

    def opened(self, d: Detection, now: float) -> Episode | None:
        """Record detector episode ``d`` opening; the column's episode if this opened it."""
        key = (d.model, d.feature, d.segment)
        ep = self.open.get(key)
        new = ep is None
        if ep is None:
            ep = self.open[key] = Episode(d.model, d.feature, self.partition, d.index, now,
                                          open_offset=d.offset, open_event_time=d.event_time,
                                          segment=d.segment)
        if d.index == ep.opened:
            ep.open_scores.setdefault(d.detector, (d.statistic, d.threshold))
        if d.detector not in ep.detectors:
            ep.detectors.append(d.detector)
        ep.open_detectors.add(d.detector)
        ep.peak_score = max(ep.peak_score, d.score)
        return ep if new else None

    def closed(self, d: Detection) -> Episode | None:
        """Record detector episode ``d`` closing; the column's episode if this closed it."""
        ep = self.open.get((d.model, d.feature, d.segment))
        if ep is None:
            return None
        ep.peak_score = max(ep.peak_score, d.score)
        was = ep.peaks.get(d.detector)
        if was is None or d.score > (was[0] / was[1] if was[1] > 0 else 0.0):
            ep.peaks[d.detector] = (d.statistic, d.threshold)
        ep.open_detectors.discard(d.detector)
        if ep.open_detectors:
            return None
        ep.closed = d.index
        ep.close_offset, ep.close_event_time = d.offset, d.event_time
        del self.open[ep.key]
        return ep


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) \
        and math.isfinite(v) else None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _pairs(v: Any) -> dict[str, tuple[float, float]]:
    """detector -> (statistic, threshold) from a checkpoint; malformed entries dropped."""
    out: dict[str, tuple[float, float]] = {}
    if isinstance(v, Mapping):
        for k, pair in v.items():
            if isinstance(pair, list) and len(pair) == 2:
                a, b = _num(pair[0]), _num(pair[1])
                if a is not None and b is not None:
                    out[str(k)] = (a, b)
    return out
