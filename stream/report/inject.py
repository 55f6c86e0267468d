"""What-if drift injection: how fast would the configured monitor see a drift here?

From the state every column monitor had at the injection position (recorded by
:class:`~stream.report.collect.ReportRecorder`), each scenario feeds the column's own
next events, altered, to a copy of that monitor and notes the first alarm.  The
thresholds are the calibrated ones, so each delay is the delay at the configured
false-alarm rate (``detection.false_alarm_events``).  Scenarios:

* ``mean``: every value moves by k reference standard deviations;
* ``variance``: values spread around the reference mean by a factor f;
* ``share``: a category (by default the column's most frequent reference category)
  gains a share d (other values are replaced by it at random);
* ``missing``: the missing rate rises by d (values are dropped at random).

A *control* run feeds the same events unaltered: when it alarms within the horizon
the column would have alarmed anyway (a drift in the history, or a false alarm), so the
injected runs of that column stop there: a delay is counted only when the injected
drift is seen before the history's own alarm.  Each (column, scenario) uses one set of random draws for all
its magnitudes, so a larger magnitude alters a superset of the events.

The columns are fed alone, as the pipeline feeds complete events; an event that the
injection would make incomplete (most of a model's columns missing) is still fed to
the column, where the pipeline would count it in the model-level test instead.

>>> import numpy as np
>>> from detectors.profile import NumericProfile
>>> prof = NumericProfile.from_values(np.random.default_rng(0).normal(size=5000))
>>> v = np.zeros(4)
>>> alter("mean", v, 2.0, prof, np.full(4, 0.5)).round(1).tolist() == [round(2 * prof.std, 1)] * 4
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.column import ColumnMonitor
from detectors.profile import CategoricalProfile, NumericProfile, Profile
from stream.report.collect import Segment

#: scenario kind -> (the column types it applies to, default magnitudes, unit)
KINDS: dict[str, tuple[tuple[str, ...], tuple[float, ...], str]] = {
    "mean": (("numeric",), (0.1, 0.25, 0.5, 1.0, 2.0), "sd"),
    "variance": (("numeric",), (1.1, 1.25, 1.5, 2.0, 3.0), "x sd"),
    "share": (("categorical",), (0.01, 0.02, 0.05, 0.1, 0.2), "share"),
    "missing": (("numeric", "categorical"), (0.01, 0.02, 0.05, 0.1, 0.2), "rate"),
}
#: events fed to a monitor per step (a run stops at the first alarm)
CHUNK = 250


def parse_inject(specs: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """``--inject`` values (``KIND`` or ``KIND=M1,M2``; none: every kind) -> magnitudes.

    >>> parse_inject(["mean=0.3,1", "missing"])["mean"]
    (0.3, 1.0)
    >>> sorted(parse_inject([]))
    ['mean', 'missing', 'share', 'variance']
    """
    if not specs:
        return {k: v[1] for k, v in KINDS.items()}
    out: dict[str, tuple[float, ...]] = {}
    for spec in specs:
        kind, _, mags = spec.partition("=")
        kind = kind.strip()
        if kind not in KINDS:
            raise ValueError(f"--inject {spec}: unknown scenario {kind!r}; use one of "
                             f"{', '.join(KINDS)} (optionally KIND=M1,M2,...)")
        if not mags:
            out[kind] = KINDS[kind][1]
            continue
        try:
            values = tuple(sorted({float(m) for m in mags.split(",") if m.strip()}))
        except ValueError:
            raise ValueError(f"--inject {spec}: magnitudes must be numbers, e.g. "
                             f"{kind}={','.join(f'{m:g}' for m in KINDS[kind][1][:3])}"
                             ) from None
        low = 1.0 if kind == "variance" else 0.0
        bad = [m for m in values if not (m > low and np.isfinite(m))
               or (kind in ("share", "missing") and m >= 1)]
        if not values or bad:
            rule = {"mean": "> 0 (standard deviations)", "variance": "> 1 (a factor)",
                    "share": "in (0, 1)", "missing": "in (0, 1)"}[kind]
            raise ValueError(f"--inject {spec}: magnitudes must be {rule}")
        out[kind] = values
    return out


def _target(profile: Profile) -> Any:
    assert isinstance(profile, CategoricalProfile)
    cats = profile.categories
    return cats[0] if cats else None


def alter(kind: str, values: np.ndarray, magnitude: float, profile: Profile,
          u: np.ndarray, target: str | None = None) -> np.ndarray:
    """``values`` with scenario ``kind`` of ``magnitude`` applied (a copy); ``u`` holds one
    uniform draw per value (the random choices of ``share`` and ``missing``); ``target``:
    the category that gains share (default: the most frequent in the reference)."""
    if kind in ("mean", "variance"):
        assert isinstance(profile, NumericProfile)
        x = np.array(values, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # huge values become ±inf: invalid
            if kind == "mean":
                return x + magnitude * (profile.std or 1.0)
            return profile.mean + (x - profile.mean) * magnitude
    out = np.array(values, dtype=object if values.dtype == object else np.float64)
    if kind == "missing":
        present = ~_missing(out)
        rate = 1.0 - present.mean() if out.size else 0.0
        p = min(1.0, magnitude / max(1.0 - rate, 1e-12))
        drop = present & (u < p)
        out[drop] = None if out.dtype == object else np.nan
        return out
    if kind == "share":
        if target is None:
            target = _target(profile)
        present = ~_missing(out)
        if target is None or not present.any():
            return out
        is_t = np.array([v == target for v in out], dtype=bool) & present
        share = is_t.sum() / present.sum()
        p = min(1.0, magnitude / max(1.0 - share, 1e-12))
        out[present & ~is_t & (u < p)] = target
        return out
    raise ValueError(f"unknown scenario {kind!r}")


def _missing(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == object:
        return np.equal(arr, None).astype(bool)  # type: ignore[call-overload]
    return np.isnan(arr)


def first_alarm(state: Mapping[str, Any], profile: Profile, values: np.ndarray,
                invalid: np.ndarray) -> tuple[int, str] | None:
    """(events after the start, detector) of the first alarm of a monitor restored from
    ``state`` and fed ``values``; None if none within them."""
    cm = ColumnMonitor.from_dict(dict(state), profile)
    for s in range(0, int(values.size), CHUNK):
        alarms = cm.update(values[s:s + CHUNK], invalid[s:s + CHUNK])
        if alarms:
            a = min(alarms, key=lambda a: a.position)
            return s + a.position, a.detector
    return None


@dataclass
class ScenarioResult:
    kind: str
    #: the category whose share changes (``share`` only)
    target: str | None
    #: (magnitude, delay in the model's events or None, detector or None)
    delays: list[tuple[float, int | None, str | None]]

    def smallest_within(self, within: int) -> float | None:
        """The smallest magnitude detected within ``within`` events (None: none is)."""
        hits = [m for m, d, _ in self.delays if d is not None and d <= within]
        return min(hits) if hits else None


@dataclass
class ColumnWhatIf:
    column: str
    type: str
    #: the column had an episode open at the injection position
    drifting: bool
    #: (delay, detector) of an alarm without injection within the horizon, or None
    control: tuple[int, str] | None
    scenarios: list[ScenarioResult]


def _seed(seed: int, *parts: str) -> int:
    h = hashlib.sha256("/".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(h[:8], "little")


def what_if(segment: Segment, profiles: Mapping[str, Profile],
            kinds: Mapping[str, Sequence[float]], seed: int = 0,
            progress: Callable[[int], None] | None = None,
            targets: Mapping[str, str] | None = None) -> list[ColumnWhatIf]:
    """Every applicable scenario of ``kinds`` on every column of ``segment``'s model
    (``targets``: column -> the category whose share ``share`` raises)."""
    out = []
    for col, state in segment.states.items():
        prof = profiles[col]
        values, invalid = segment.column(col)
        control = first_alarm(state, prof, values, invalid)
        if control is not None:  # later alarms are not the injection's doing
            values, invalid = values[:control[0]], invalid[:control[0]]
        results = []
        for kind, mags in kinds.items():
            if prof.kind not in KINDS[kind][0]:
                continue
            u = np.random.default_rng(_seed(seed, col, kind)).random(values.size)
            delays: list[tuple[float, int | None, str | None]] = []
            target = None
            if kind == "share":
                target = (targets or {}).get(col) or _target(prof)
                target = None if target is None else str(target)
            for m in sorted(mags):
                hit = first_alarm(state, prof, alter(kind, values, m, prof, u, target),
                                  invalid)
                delays.append((m, None, None) if hit is None else (m, hit[0], hit[1]))
                if progress:
                    progress(1)
            results.append(ScenarioResult(kind, target, delays))
        out.append(ColumnWhatIf(col, prof.kind, col in segment.drifting, control, results))
    return out


def runs(segment: Segment, profiles: Mapping[str, Profile],
         kinds: Mapping[str, Sequence[float]]) -> int:
    """How many injected runs :func:`what_if` makes (for a progress bar)."""
    return sum(len(m) for col in segment.states for k, m in kinds.items()
               if profiles[col].kind in KINDS[k][0])


@dataclass
class Combined:
    """One (column, scenario) over several injection positions."""

    column: str
    kind: str
    target: str | None
    #: (magnitude, median delay or None, fastest, slowest, positions where seen, positions)
    rows: list[tuple[float, int | None, int | None, int | None, int, int]]

    def smallest_within(self, within: int) -> float | None:
        """The smallest magnitude whose median delay is at most ``within`` events."""
        hits = [m for m, med, *_ in self.rows if med is not None and med <= within]
        return min(hits) if hits else None


def median_delay(delays: Sequence[int | None]) -> int | None:
    """The median of ``delays``, a delay not seen counting as infinite (None if the median
    is not seen).

    >>> median_delay([10, None, 30]), median_delay([10, None, None]), median_delay([10, 20])
    (30, None, 15)
    """
    if not delays:
        return None
    m = float(np.median([np.inf if d is None else float(d) for d in delays]))
    return int(round(m)) if np.isfinite(m) else None


def combine(positions: Sequence[Sequence[ColumnWhatIf]]) -> list[Combined]:
    """Every (column, scenario) of the first position, with its delays over all of them."""
    out: list[Combined] = []
    if not positions:
        return out
    for cw in positions[0]:
        for sc in cw.scenarios:
            per: dict[float, list[int | None]] = {}
            for pos in positions:
                same = next((c for c in pos if c.column == cw.column), None)
                other = None if same is None else next(
                    (s for s in same.scenarios if s.kind == sc.kind), None)
                for m, d, _ in (other.delays if other is not None else []):
                    per.setdefault(m, []).append(d)
            rows = []
            for m, ds in sorted(per.items()):
                seen = [d for d in ds if d is not None]
                rows.append((m, median_delay(ds), min(seen, default=None),
                             max(seen, default=None), len(seen), len(ds)))
            out.append(Combined(cw.column, sc.kind, sc.target, rows))
    return out
