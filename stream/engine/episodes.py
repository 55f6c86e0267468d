"""Drift episodes of columns: the union of their detectors' episodes.

A detector's alarm opens an episode of that detector, which stays open while
its evidence persists and closes with hysteresis (see
:meth:`detectors.base.Detector.configure_episodes`).  A column is drifting while
any of its detectors has an episode open: its episode opens with the first
detector episode and closes with the last one.  :class:`EpisodeBook` keeps the
open column episodes of one partition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stream.engine.figures import PartitionKey


@dataclass(frozen=True)
class Detection:
    """A detector episode opened (an alarm) or closed, located in the input.

    ``index`` is the position in the whole input; for a close, ``statistic`` is
    the episode's peak statistic.
    """

    model: str
    feature: str
    detector: str
    index: int
    statistic: float
    threshold: float

    @property
    def score(self) -> float:
        return self.statistic / self.threshold if self.threshold > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "feature": self.feature, "detector": self.detector,
                "index": self.index, "statistic": self.statistic, "threshold": self.threshold}


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

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "feature": self.feature, "open_index": self.opened,
                "close_index": self.closed, "detectors": list(self.detectors),
                "peak_score": round(self.peak_score, 6)}


class EpisodeBook:
    """The open column episodes of one partition."""

    __slots__ = ("open", "partition")

    def __init__(self, partition: PartitionKey) -> None:
        self.partition = partition
        self.open: dict[tuple[str, str], Episode] = {}

    def restore(self, model: str, feature: str, detectors: list[str], now: float) -> None:
        """A column whose restored detectors have episodes open (opened before the restore)."""
        if detectors:
            self.open[(model, feature)] = Episode(model, feature, self.partition, None, now,
                                                  detectors=list(detectors),
                                                  open_detectors=set(detectors))

    def opened(self, d: Detection, now: float) -> Episode | None:
        """Record detector episode ``d`` opening; the column's episode if this opened it."""
        key = (d.model, d.feature)
        ep = self.open.get(key)
        new = ep is None
        if ep is None:
            ep = self.open[key] = Episode(d.model, d.feature, self.partition, d.index, now)
        if d.detector not in ep.detectors:
            ep.detectors.append(d.detector)
        ep.open_detectors.add(d.detector)
        ep.peak_score = max(ep.peak_score, d.score)
        return ep if new else None

    def closed(self, d: Detection) -> Episode | None:
        """Record detector episode ``d`` closing; the column's episode if this closed it."""
        ep = self.open.get((d.model, d.feature))
        if ep is None:
            return None
        ep.peak_score = max(ep.peak_score, d.score)
        ep.open_detectors.discard(d.detector)
        if ep.open_detectors:
            return None
        ep.closed = d.index
        del self.open[(d.model, d.feature)]
        return ep
