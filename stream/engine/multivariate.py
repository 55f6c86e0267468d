"""The multivariate groups of the configured models, seen from the engine.

:func:`group_specs` turns a model's ``multivariate`` groups into the detectors'
:class:`~detectors.multivariate.GroupSpec`; :func:`group_figures` aggregates a
group's live tests over the partitions this process holds (as the per-column
figures are: statistic and score the largest, active if any partition's test has
an episode open, alarms what this process counted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from detectors.multivariate import GroupSpec
from detectors.multivariate_model import DETECTOR
from stream.config import ModelConfig

__all__ = ["DETECTOR", "GroupFigures", "group_figures", "group_specs"]


def group_specs(model: ModelConfig) -> list[GroupSpec]:
    """One :class:`GroupSpec` per configured group of ``model``."""
    return [GroupSpec(g.name, tuple(g.columns), g.method) for g in model.multivariate]


@dataclass(frozen=True)
class GroupFigures:
    """What the metrics export of one multivariate group."""

    columns: int
    dim: int
    statistic: float = 0.0
    threshold: float = 0.0
    p_value: float = 1.0
    score: float = 0.0
    active: bool = False
    alarms: int = 0
    rows: int = 0
    window_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "dim": self.dim, "statistic": self.statistic,
                "threshold": self.threshold, "p_value": self.p_value, "score": self.score,
                "active": self.active, "alarms": self.alarms, "rows": self.rows}


def group_figures(monitors: Sequence[Any], counted: dict[str, list[int]],
                  ) -> dict[str, GroupFigures]:
    """Per group of the monitors (:class:`~detectors.model.ModelMonitor` of each
    partition): its figures, with ``counted`` (group -> [rows, alarms] this process
    counted) as its counters."""
    if not monitors or monitors[0].groups is None:
        return {}
    out = {}
    for name, first in monitors[0].groups.tests.items():
        tests = [m.groups.tests[name] for m in monitors if m.groups is not None]
        top = max(tests, key=lambda t: t.score)
        rows, alarms = counted.get(name, [0, 0])
        out[name] = GroupFigures(
            columns=len(first.profile.columns), dim=first.profile.dim,
            statistic=max(t.statistic for t in tests), threshold=top.threshold,
            p_value=top.p_value, score=top.score,
            active=any(t.drift_detected for t in tests), alarms=alarms, rows=rows,
            window_rows=max(t.window_rows for t in tests))
    return out


def group_counters(monitor: Any) -> dict[str, list[int]]:
    """group -> [complete rows, episodes opened] of one monitor."""
    if monitor.groups is None:
        return {}
    return {k: [t.n_rows, t.n_alarms] for k, t in monitor.groups.tests.items()}
