"""The multivariate groups of a model: their baseline part and their live monitor.

A model's baseline (:class:`~detectors.model.ModelBaseline`) keeps, per group, a
:class:`~detectors.multivariate.JointProfile` and the calibration of its
:class:`~detectors.multivariate.JointTest`; the model's live monitor holds a
:class:`GroupsMonitor` that feeds every group's test from the batch's columns.
A group takes one unit share of the model's false-alarm budget (Šidák, like a
column's KS test), so a model with groups keeps its one knob.  Alarms and closes
carry the group's name as their column and :data:`DETECTOR` as their detector, so
a group's drift is an episode named after the group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from detectors.calibration import Calibration
from detectors.column import Alarm
from detectors.errors import DetectorError
from detectors.multivariate import GroupSpec, JointProfile, JointTest, calibrate_joint

#: the detector label of a group's test (metrics, reports, episodes)
DETECTOR = "joint"
#: unit shares of the model's false-alarm budget a group takes
GROUP_WEIGHT = 1.0


def group_key(groups: Sequence[GroupSpec]) -> list[list[Any]]:
    """What a model's calibration key takes of its groups."""
    return [[g.name, list(g.columns), g.method] for g in groups]


def profile_groups(data: Mapping[str, Any], groups: Sequence[GroupSpec],
                   sample: int, seed: int) -> dict[str, JointProfile]:
    """The profile of each group from the reference ``data`` (column -> values, aligned
    by event)."""
    out = {}
    for g in groups:
        missing = [c for c in g.columns if c not in data]
        if missing:
            raise DetectorError(f"group {g.name}: the reference data has no column(s) "
                                f"{missing}")
        rows = np.column_stack([np.asarray(data[c], dtype=np.float64) for c in g.columns])
        out[g.name] = JointProfile.from_rows(g, rows, sample, seed)
    return out


def calibrate_groups(name: str, profiles: Mapping[str, JointProfile],
                     groups: Sequence[GroupSpec], settings: Any, target_events: float,
                     seed_of: Any) -> dict[str, Calibration]:
    """The calibration of every group's test at ``target_events`` (its budget share)."""
    return {g.name: calibrate_joint(profiles[g.name], settings.window, settings.cadence,
                                    target_events, settings.release, settings.release_values,
                                    seed_of(name, g.name, DETECTOR, settings.seed),
                                    settings.calibration_values)
            for g in groups}


def groups_to_dict(profiles: Mapping[str, JointProfile],
                   cals: Mapping[str, Calibration]) -> dict[str, Any]:
    return {k: {"profile": p.to_dict(), "calibration": cals[k].to_dict() if k in cals
                else None} for k, p in profiles.items()}


def groups_from_dict(data: Any) -> tuple[dict[str, JointProfile], dict[str, Calibration]]:
    """Inverse of :func:`groups_to_dict`; DetectorError naming the group."""
    if not isinstance(data, Mapping):
        raise DetectorError("baseline multivariate: must be a JSON object")
    profiles, cals = {}, {}
    for name, entry in data.items():
        where = f"baseline multivariate.{name}"
        if not isinstance(entry, Mapping):
            raise DetectorError(f"{where}: must be a JSON object")
        try:
            profiles[name] = JointProfile.from_dict(entry.get("profile"))
            cal = entry.get("calibration")
            if cal is not None:
                c = Calibration.from_dict(dict(cal))
                if not (c.threshold > 0 and math.isfinite(c.threshold)):
                    raise DetectorError("threshold must be a finite number > 0")
                cals[name] = c
        except (DetectorError, KeyError, TypeError, ValueError) as exc:
            raise DetectorError(f"{where}: {exc}") from None
    return profiles, cals


def check_groups(profiles: Mapping[str, JointProfile], groups: Sequence[GroupSpec]) -> None:
    """DetectorError unless every group has a profile of its columns."""
    for g in groups:
        prof = profiles.get(g.name)
        if prof is None:
            raise DetectorError(f"the baseline has no profile of multivariate group {g.name!r}")
        if prof.columns != g.columns:
            raise DetectorError(f"the baseline profiles multivariate group {g.name!r} over "
                                f"{list(prof.columns)}, the configuration says "
                                f"{list(g.columns)}")


def new_tests(profiles: Mapping[str, JointProfile], cals: Mapping[str, Calibration],
              groups: Sequence[GroupSpec], settings: Any) -> dict[str, JointTest]:
    tests = {}
    for g in groups:
        cal = cals[g.name]
        t = JointTest(profiles[g.name], settings.window, settings.cadence, cal.threshold,
                      g.name)
        release = settings.release
        if cal.release_floor > 0:
            release = min(1.0, max(release, cal.release_floor / cal.threshold))
        t.configure_episodes(release, settings.release_values)
        tests[g.name] = t
    return tests


class GroupsMonitor:
    """The live joint tests of a model's groups."""

    def __init__(self, tests: dict[str, JointTest]) -> None:
        self.tests = tests
        self.closes: list[Alarm] = []

    def update(self, columns: Mapping[str, Any]) -> list[Alarm]:
        """Feed one batch (column -> values); the episodes opened (and, in
        :attr:`closes`, those closed), each with the group's name as its column."""
        out: list[Alarm] = []
        self.closes = []
        for name, t in self.tests.items():
            x = np.column_stack([np.asarray(columns[c], dtype=np.float64)
                                 for c in t.profile.columns])
            for p in t.update(x).tolist():
                out.append(Alarm(name, DETECTOR, int(p), t.statistic, t.threshold))
            for p in t.close_positions.tolist():
                self.closes.append(Alarm(name, DETECTOR, int(p), t.episode_peak, t.threshold))
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        return {k: t.summary() for k, t in self.tests.items()}

    def to_dict(self) -> dict[str, Any]:
        return {k: t.to_dict() for k, t in self.tests.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any],
                  fresh: GroupsMonitor) -> GroupsMonitor:
        """Restore the tests of ``data`` over the profiles of ``fresh`` (a new monitor of
        the same baseline); groups absent from ``data`` stay fresh."""
        tests = dict(fresh.tests)
        for k, state in data.items():
            if k in tests:
                tests[k] = JointTest.from_dict(state, tests[k].profile, tests[k])
        return cls(tests)
