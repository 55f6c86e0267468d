"""A model's baseline (profiles + calibrated thresholds) and its live monitor.

:class:`ModelBaseline` is what ``streamdrift baseline`` writes: one profile per
column and, per alarming detector, the threshold calibrated from the model's
false-alarm budget.  The calibration is cached in the baseline together with a
key of the settings it depends on, so start-up is fast and a change of settings
is noticed and recalibrated.

:class:`ModelMonitor` holds one :class:`~detectors.column.ColumnMonitor` per
column and is what the runtime feeds with decoded columns.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from detectors.calibration import (
    Calibration,
    calibrate_cusum,
    calibrate_rate_curve,
    calibrate_window_test,
    per_detector_arl,
    posterior_probs,
    sample_bins,
)
from detectors.column import (
    CATEGORICAL_DETECTORS,
    NUMERIC_DETECTORS,
    Alarm,
    ColumnMonitor,
    adwin_clip,
    make_detector,
    reference_counts,
    unseen_count,
)
from detectors.cusum import CUSUM, SurprisalCUSUM
from detectors.errors import DetectorError
from detectors.profile import (
    SCHEMA_VERSION,
    CategoricalProfile,
    NumericProfile,
    Profile,
    profile_from_dict,
)
from detectors.window import WindowTest

ADWIN_DELTA_GRID = np.array([0.9, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 5e-3, 2e-3, 1e-3, 5e-4,
                             2e-4, 1e-4])
#: ADWIN's calibration ends with one run of this many times the per-grid-point values, near
#: the target (see calibrate_rate_curve); ~0.5 s at the default calibration_values
ADWIN_PROBE_FACTOR = 16
#: CUSUM calibration simulates this many times ``calibration_values`` (~0.3 s at the default)
CUSUM_VALUES_FACTOR = 4

#: share of the false-alarm budget of each detector kind, relative to the others (1).
#: The CUSUM is the optimal detector of the commonest drift, a persistent mean shift, and
#: its delay grows with the log of 1/share: with eight parts (8/11 of a numeric column's
#: budget) the default set catches 0.5σ and 1σ shifts within 1.08x of a CUSUM that has
#: the whole budget, while the window tests, whose delays grow just as slowly with their
#: ARL0, stay ahead of every peer on variance and shape changes.  Four parts left 1σ at
#: 1.25x (docs/benchmarks.md compares the two runs).
#: On a categorical column the chi2 test and the surprisal CUSUM split most of the budget
#: (four parts each against one for each rate test): together they catch a total-variation
#: shift of 0.1 within 1.15x of the best peer, which neither does alone.
BUDGET_WEIGHTS: dict[str, float] = {"cusum": 8.0, "chi2": 4.0, "surprisal": 4.0}


def budget_weight(kind: str) -> float:
    """Relative share of the model's false-alarm budget taken by detector ``kind``."""
    return BUDGET_WEIGHTS.get(kind, 1.0)


@dataclass(frozen=True)
class ColumnSpec:
    """What to watch in one column."""

    name: str
    type: str  # "numeric" | "categorical"
    role: str = "feature"
    detectors: tuple[str, ...] = ()
    min_effect: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in ("numeric", "categorical"):
            raise DetectorError(f"{self.name}: type must be numeric or categorical")
        valid = NUMERIC_DETECTORS if self.type == "numeric" else CATEGORICAL_DETECTORS
        if not self.detectors:
            object.__setattr__(self, "detectors", tuple(valid))
        bad = [d for d in self.detectors if d not in valid]
        if bad:
            raise DetectorError(f"{self.name}: detectors {bad} do not apply to a {self.type} "
                                f"column; use some of {', '.join(valid)}")


@dataclass(frozen=True)
class DetectionSettings:
    """Settings of the detectors and their calibration."""

    false_alarm_events: float = 10_000_000
    window: int = 1000
    cadence: int = 50
    adwin_clock: int = 32
    bins: int = 32
    top_k: int = 50
    reservoir_size: int = 10_000
    calibration_values: int = 2_000_000
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.false_alarm_events > 1:
            raise DetectorError("false_alarm_events must be > 1")
        if self.window % self.cadence:
            raise DetectorError(f"window ({self.window}) must be a multiple of cadence "
                                f"({self.cadence})")


def _fingerprint(profile: Profile) -> str:
    """Content hash of a profile."""
    body = json.dumps(profile.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _stable_seed(*parts: Any) -> int:
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


#: version of the calibration procedure and of what the detectors do with it; bumping it
#: makes every stored baseline recalibrate (2: ADWIN input winsorised, see adwin_clip;
#: 3: ADWIN's delta extrapolated from the tail of its rate curve and a probe run;
#: 4: CUSUM added, budget split by BUDGET_WEIGHTS; 5: multi-scale chi2, surprisal CUSUM;
#: 6: extrapolated count thresholds rounded to a lattice step)
CALIBRATION_VERSION = 6


def calibration_key(specs: Sequence[ColumnSpec], settings: DetectionSettings) -> str:
    """Key of everything a model's calibration depends on, the code's version included."""
    s = asdict(settings)
    s.pop("calibration_values")
    cols = [[c.name, c.type, sorted(c.detectors)] for c in specs]
    return hashlib.sha256(json.dumps([CALIBRATION_VERSION, s, cols], sort_keys=True)
                          .encode()).hexdigest()[:16]


class ModelBaseline:
    """Profiles and calibrated thresholds of one model.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> specs = [ColumnSpec("x", "numeric", detectors=("ks", "missing")),
    ...          ColumnSpec("c", "categorical", detectors=("chi2",))]
    >>> data = {"x": rng.normal(size=5000),
    ...         "c": rng.choice(np.array(["a", "b"], dtype=object), 5000)}
    >>> settings = DetectionSettings(false_alarm_events=5000, window=200, cadence=20,
    ...                              calibration_values=200_000)
    >>> base = ModelBaseline.build("m", data, specs, settings)
    >>> sorted(base.thresholds)
    ['c', 'x']
    >>> again = ModelBaseline.from_dict(base.to_dict())
    >>> again.id == base.id
    True
    """

    def __init__(self, name: str, profiles: dict[str, Profile],
                 calibrations: dict[str, dict[str, Calibration]] | None = None,
                 key: str = "", meta: dict[str, Any] | None = None) -> None:
        self.name = name
        self.profiles = dict(profiles)
        self.calibrations = calibrations or {}
        self.key = key
        self.meta = dict(meta or {})

    @classmethod
    def profile_columns(cls, data: Mapping[str, Any], specs: Sequence[ColumnSpec],
                        settings: DetectionSettings) -> dict[str, Profile]:
        profiles: dict[str, Profile] = {}
        for spec in specs:
            if spec.name not in data:
                raise DetectorError(f"reference data has no column {spec.name!r}")
            values = data[spec.name]
            if spec.type == "numeric":
                profiles[spec.name] = NumericProfile.from_values(
                    values, settings.bins, settings.reservoir_size,
                    seed=_stable_seed(spec.name, settings.seed))
            else:
                profiles[spec.name] = CategoricalProfile.from_values(values, settings.top_k)
        return profiles

    @classmethod
    def build(cls, name: str, data: Mapping[str, Any], specs: Sequence[ColumnSpec],
              settings: DetectionSettings,
              progress: Callable[[str, int, int], None] | None = None) -> ModelBaseline:
        """Profile the reference ``data`` (column name → values) and calibrate."""
        base = cls(name, cls.profile_columns(data, specs, settings))
        for spec in specs:
            if base.profiles[spec.name].count == 0:
                raise DetectorError(f"{name}.{spec.name}: the reference data has no valid "
                                    f"value for this column; a baseline needs some")
        base.calibrate(specs, settings, progress)
        return base

    # -- calibration -----------------------------------------------------------
    def needs_calibration(self, specs: Sequence[ColumnSpec], settings: DetectionSettings) -> bool:
        return self.key != calibration_key(specs, settings)

    def calibrate(self, specs: Sequence[ColumnSpec], settings: DetectionSettings,
                  progress: Callable[[str, int, int], None] | None = None) -> None:
        """(Re)compute every alarming detector's threshold from the false-alarm budget."""
        pairs = [(s, d) for s in specs for d in s.detectors]
        if not pairs:
            raise DetectorError(f"model {self.name}: no alarming detector configured")
        # the budget is split over the detectors that can raise a false alarm at all, in
        # proportion to their weights: a detector of weight w gets the Šidák share of w
        # unit detectors among `parts`
        parts = sum(budget_weight(d) for s, d in pairs
                    if can_false_alarm(d, self.profiles[s.name])) or 1.0
        target = per_detector_arl(settings.false_alarm_events, parts)
        cals: dict[str, dict[str, Calibration]] = {}
        fingerprints: dict[str, str] = {}
        started = time.perf_counter()
        for i, (spec, kind) in enumerate(pairs):
            if progress:
                progress(f"{spec.name}/{kind}", i, len(pairs))
            prof = self.profiles[spec.name]
            # the data is part of the seed: a retrained model's baseline, or the same column
            # in two models, does not reuse one random draw (and its simulation error)
            if spec.name not in fingerprints:
                fingerprints[spec.name] = _fingerprint(prof)
            seed = _stable_seed(self.name, spec.name, kind, settings.seed,
                                fingerprints[spec.name])
            events = per_detector_arl(settings.false_alarm_events,
                                      max(parts / budget_weight(kind), 1.0))
            cals.setdefault(spec.name, {})[kind] = calibrate_detector(
                kind, prof, settings, events, seed, spec.name)
        if progress:
            progress("done", len(pairs), len(pairs))
        self.calibrations = cals
        self.key = calibration_key(specs, settings)
        self.meta["calibration_seconds"] = round(time.perf_counter() - started, 3)
        self.meta["per_detector_events"] = target

    @property
    def thresholds(self) -> dict[str, dict[str, float]]:
        return {c: {k: v.threshold for k, v in d.items()} for c, d in self.calibrations.items()}

    # -- monitors ------------------------------------------------------------
    def monitor(self, specs: Sequence[ColumnSpec], settings: DetectionSettings) -> ModelMonitor:
        """A fresh live monitor of this model (recalibrates if the settings changed)."""
        if self.needs_calibration(specs, settings):
            self.calibrate(specs, settings)
        cols = {}
        for spec in specs:
            prof = self.profiles[spec.name]
            dets = {}
            for kind in spec.detectors:
                thr = self.calibrations[spec.name][kind].threshold
                dets[kind] = make_detector(kind, prof, settings.window, settings.cadence, thr,
                                           float(spec.min_effect.get(kind, 0.0)),
                                           settings.adwin_clock, spec.name)
            cols[spec.name] = ColumnMonitor(spec.name, prof, dets, settings.window,
                                            settings.cadence, spec.role)
        return ModelMonitor(self.name, cols)

    # -- state ----------------------------------------------------------------
    @property
    def id(self) -> str:
        """Content hash of the profiles and thresholds (exported as ``baseline_id``)."""
        body = json.dumps({"p": {k: p.to_dict() for k, p in sorted(self.profiles.items())},
                           "t": self.thresholds, "k": self.key}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.name,
            "id": self.id,
            "calibration_key": self.key,
            "meta": self.meta,
            "columns": {k: p.to_dict() for k, p in self.profiles.items()},
            "calibration": {c: {k: v.to_dict() for k, v in d.items()}
                            for c, d in self.calibrations.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelBaseline:
        if data.get("schema_version") != SCHEMA_VERSION:
            raise DetectorError(
                f"baseline schema_version {data.get('schema_version')!r} is not "
                f"{SCHEMA_VERSION}: rebuild it with `streamdrift baseline`")
        try:
            profiles = {k: profile_from_dict(v) for k, v in data["columns"].items()}
            cals = {c: {k: Calibration.from_dict(v) for k, v in d.items()}
                    for c, d in data.get("calibration", {}).items()}
            return cls(data["model"], profiles, cals, data.get("calibration_key", ""),
                       data.get("meta", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise DetectorError(f"baseline is malformed ({exc!r}): rebuild it with "
                                f"`streamdrift baseline`") from None


def can_false_alarm(kind: str, profile: Profile) -> bool:
    """Whether detector ``kind`` can raise a false alarm on data drawn from ``profile``.

    A missing-rate or unseen-rate test whose reference never shows its flag (no
    missing value; no category seen only once, so the category set looks closed)
    cannot: under the baseline distribution the flag has probability 0.  Such a
    detector is still calibrated, but it takes no share of the model's
    false-alarm budget, which would otherwise be wasted.  ``out_of_range`` always
    counts: any unbounded distribution can exceed the reference's range, even
    when its extreme values are tied.
    """
    if kind in ("missing", "unseen"):
        counts = reference_counts(kind, profile)
        return counts is not None and bool(counts[-1] > 0)
    return True


def calibrate_detector(kind: str, profile: Profile, settings: DetectionSettings,
                       target_events: float, seed: int, name: str = "") -> Calibration:
    """Calibrate one detector of a column for ``target_events`` between false alarms."""
    det = make_detector(kind, profile, settings.window, settings.cadence, math.inf, 0.0,
                        settings.adwin_clock, name)
    # a categorical baseline without singletons looks closed: no new categories expected
    closed = isinstance(profile, CategoricalProfile) and unseen_count(profile) == 0
    if isinstance(det, WindowTest):
        return calibrate_window_test(det, target_events, reference_counts(kind, profile),
                                     seed=seed, n_values=settings.calibration_values,
                                     closed=closed and kind == "chi2")
    if isinstance(det, SurprisalCUSUM):
        counts = reference_counts("chi2", profile)
        assert counts is not None
        assert det.clip is not None  # always set for a surprisal CUSUM
        z_table = (np.clip(det.table, det.clip[0], det.clip[1]) - det.mean) / det.scale

        def draw(rng: np.random.Generator, n: int) -> np.ndarray:
            # each path draws its null frequencies from the baseline's posterior, as the
            # window tests' calibration does: the live frequencies are not the baseline's
            return z_table[sample_bins(posterior_probs(rng, counts, closed), n, rng)]

        return calibrate_cusum(draw, target_events, det.allowance,
                               CUSUM_VALUES_FACTOR * settings.calibration_values, seed=seed)
    if isinstance(det, CUSUM):
        assert isinstance(profile, NumericProfile)
        mean, scale = det.mean, det.scale
        lo, hi = det.clip if det.clip is not None else (-math.inf, math.inf)

        def sample(rng: np.random.Generator, n: int) -> np.ndarray:
            return (np.clip(profile.sample(rng, n), lo, hi) - mean) / scale

        # the live stream's mean differs from the reservoir's by ~1/sqrt(n) standard units
        n_ref = max(min(profile.count, profile.reservoir.size), 1)
        return calibrate_cusum(sample, target_events, det.allowance,
                               CUSUM_VALUES_FACTOR * settings.calibration_values,
                               offset_sd=1.0 / math.sqrt(n_ref), seed=seed)
    # ADWIN: calibrate delta on bootstrap draws from the baseline's reservoir
    from detectors.adwin import adwin_detections

    assert isinstance(profile, NumericProfile)
    n = max(settings.calibration_values // 2, 100_000)

    clip = adwin_clip(profile)

    def run(delta: float, rng: np.random.Generator, n: int) -> int:
        alarms = 0
        for start in range(0, n, 4_000_000):  # bounded memory for the long probe run
            m = min(4_000_000, n - start)
            alarms += int(adwin_detections(profile.sample(rng, m), delta,
                                           clock=settings.adwin_clock, clip=clip).size)
        return alarms

    # ADWIN tests at most once per `clock` values, each test at level delta: a
    # conservative fallback when the simulation sees too few alarms to extrapolate
    bound = min(0.9, settings.adwin_clock / target_events)
    return calibrate_rate_curve(run, target_events, n, ADWIN_DELTA_GRID, seed=seed,
                                max_param=0.9, bound_param=bound,
                                probe_values=ADWIN_PROBE_FACTOR * n)


class ModelMonitor:
    """Live state of one model: a :class:`ColumnMonitor` per column."""

    def __init__(self, name: str, columns: dict[str, ColumnMonitor]) -> None:
        self.name = name
        self.columns = columns
        self.n_events = 0

    def update(self, columns: Mapping[str, Any],
               invalid_masks: Mapping[str, np.ndarray] | None = None) -> list[Alarm]:
        """Feed one batch (column name → values, all of the batch's length)."""
        out: list[Alarm] = []
        n = None
        for name, mon in self.columns.items():
            values = columns.get(name)
            if values is None:
                raise DetectorError(f"{self.name}: batch has no column {name!r}")
            if n is None:
                n = len(values)
            mask = invalid_masks.get(name) if invalid_masks else None
            out.extend(mon.update(values, mask))
        self.n_events += n or 0
        out.sort(key=lambda a: a.position)
        return out

    def summary(self) -> dict[str, Any]:
        return {"events": self.n_events,
                "columns": {k: m.summary() for k, m in self.columns.items()}}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "events": self.n_events,
                "columns": {k: m.to_dict() for k, m in self.columns.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], baseline: ModelBaseline) -> ModelMonitor:
        cols = {k: ColumnMonitor.from_dict(v, baseline.profiles[k])
                for k, v in data["columns"].items()}
        mon = cls(data["name"], cols)
        mon.n_events = int(data["events"])
        return mon
