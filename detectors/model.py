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

from detectors.calibration import Calibration, per_detector_arl
from detectors.catalogue import (
    COLUMN_TYPES,
    budget_weight,
    calibrate_detector,
    default_detectors,
    default_min_effect,
    detectors_for,
    make_detector,
)
from detectors.column import Alarm, CodedColumn, ColumnMonitor
from detectors.errors import DetectorError
from detectors.multivariate import GroupSpec, JointProfile
from detectors.multivariate_model import (
    GROUP_WEIGHT,
    GroupsMonitor,
    calibrate_groups,
    check_groups,
    group_key,
    groups_from_dict,
    groups_to_dict,
    new_tests,
    profile_groups,
)
from detectors.profile import (
    SCHEMA_VERSION,
    CategoricalProfile,
    NumericProfile,
    Profile,
    profile_from_dict,
)
from detectors.quality import CompletenessMonitor, budget_parts, completeness_monitor


@dataclass(frozen=True)
class ColumnSpec:
    """What to watch in one column."""

    name: str
    type: str  # "numeric" | "categorical"
    role: str = "feature"
    detectors: tuple[str, ...] = ()
    min_effect: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in COLUMN_TYPES:
            raise DetectorError(f"{self.name}: type must be numeric or categorical")
        valid = detectors_for(self.type)
        if not self.detectors:
            object.__setattr__(self, "detectors", default_detectors(self.type))
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
    #: an episode stays open while a test's statistic is above ``release`` x threshold
    release: float = 0.5
    #: ... and closes after this many values without such evidence (0: the default,
    #: see :attr:`release_values`)
    release_events: int = 0

    def __post_init__(self) -> None:
        if not self.false_alarm_events > 1:
            raise DetectorError("false_alarm_events must be > 1")
        if self.window % self.cadence:
            raise DetectorError(f"window ({self.window}) must be a multiple of cadence "
                                f"({self.cadence})")
        if not 0 < self.release <= 1:
            raise DetectorError(f"release must be in (0, 1], got {self.release!r}")
        if self.release_events < 0:
            raise DetectorError(f"release_events must be >= 0, got {self.release_events!r}")

    @property
    def release_values(self) -> int:
        """Values without evidence after which an episode closes.

        By default one window, but at most 1/20 of ``false_alarm_events``: the
        stretch must stay short next to the expected time between false alarms, or
        false episodes would fill the stream and the budget could not be met (at
        production budgets, 10^6 events and more, it is always the window).
        """
        if self.release_events:
            return self.release_events
        return int(max(min(self.window, self.false_alarm_events // 20), self.cadence))


def _fingerprint(profile: Profile) -> str:
    """Content hash of a profile."""
    body = json.dumps(profile.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _fingerprint_groups(groups: Mapping[str, JointProfile]) -> str:
    body = json.dumps({k: p.to_dict() for k, p in sorted(groups.items())}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _stable_seed(*parts: Any) -> int:
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


#: version of the calibration procedure and of what the detectors do with it; bumping it
#: makes every stored baseline recalibrate (2: ADWIN input winsorised, see adwin_clip;
#: 3: ADWIN's delta extrapolated from the tail of its rate curve and a probe run;
#: 4: CUSUM added, budget split by budget weights; 5: multi-scale chi2, surprisal CUSUM;
#: 6: extrapolated count thresholds rounded to a lattice step; 7: alarms are episodes, and
#: the calibration counts episodes; rate tests calibrated analytically from a beta
#: posterior, see detectors.rate_calibration; 8: ADWIN episodes hold while the level stays
#: away, and are calibrated so; the model-level test of incomplete events takes its share
#: of the budget from the columns')
CALIBRATION_VERSION = 8


def calibration_key(specs: Sequence[ColumnSpec], settings: DetectionSettings,
                    groups: Sequence[GroupSpec] = ()) -> str:
    """Key of everything a model's calibration depends on, the code's version included
    (multivariate ``groups`` only when there are some: a model without keeps its key)."""
    s = asdict(settings)
    s.pop("calibration_values")
    cols = [[c.name, c.type, sorted(c.detectors)] for c in specs]
    parts: list[Any] = [CALIBRATION_VERSION, s, cols]
    if groups:
        parts.append(group_key(groups))
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


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
        #: False when loaded from a file without a ``sha256`` (older than the check)
        self.verified = True
        #: multivariate groups (see detectors.multivariate_model): profile, calibration
        self.groups: dict[str, JointProfile] = {}
        self.group_calibrations: dict[str, Calibration] = {}

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
              progress: Callable[[str, int, int], None] | None = None,
              groups: Sequence[GroupSpec] = ()) -> ModelBaseline:
        """Profile the reference ``data`` (column name → values, aligned by event) and
        calibrate; ``groups``: multivariate groups of numeric columns."""
        base = cls(name, cls.profile_columns(data, specs, settings))
        base.groups = profile_groups(data, groups, settings.reservoir_size,
                                     _stable_seed(name, "groups", settings.seed))
        for spec in specs:
            if base.profiles[spec.name].count == 0:
                raise DetectorError(f"{name}.{spec.name}: the reference data has no valid "
                                    f"value for this column; a baseline needs some")
        base.calibrate(specs, settings, progress, groups)
        return base

    # -- calibration -----------------------------------------------------------
    def needs_calibration(self, specs: Sequence[ColumnSpec], settings: DetectionSettings,
                          groups: Sequence[GroupSpec] = ()) -> bool:
        return self.key != calibration_key(specs, settings, groups)

    def calibrate(self, specs: Sequence[ColumnSpec], settings: DetectionSettings,
                  progress: Callable[[str, int, int], None] | None = None,
                  groups: Sequence[GroupSpec] = ()) -> None:
        """(Re)compute every alarming detector's threshold from the false-alarm budget."""
        pairs = [(s, d) for s in specs for d in s.detectors]
        if not pairs:
            raise DetectorError(f"model {self.name}: no alarming detector configured")
        # the budget is split over the detectors that can raise a false alarm at all, in
        # proportion to their weights, and the model-level test of incomplete events: a
        # detector of weight w gets the Šidák share of w unit detectors among `parts`
        parts = budget_parts(specs, self.profiles) + GROUP_WEIGHT * len(groups)
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
        check_groups(self.groups, groups)
        self.group_calibrations = calibrate_groups(
            self.name, self.groups, groups, settings,
            per_detector_arl(settings.false_alarm_events, max(parts / GROUP_WEIGHT, 1.0)),
            lambda *p: _stable_seed(*p, _fingerprint_groups(self.groups)))
        if progress:
            progress("done", len(pairs), len(pairs))
        self.calibrations = cals
        self.key = calibration_key(specs, settings, groups)
        self.meta["calibration_seconds"] = round(time.perf_counter() - started, 3)
        self.meta["per_detector_events"] = target

    @property
    def thresholds(self) -> dict[str, dict[str, float]]:
        return {c: {k: v.threshold for k, v in d.items()} for c, d in self.calibrations.items()}

    # -- monitors ------------------------------------------------------------
    def monitor(self, specs: Sequence[ColumnSpec], settings: DetectionSettings,
                groups: Sequence[GroupSpec] = ()) -> ModelMonitor:
        """A fresh live monitor of this model (recalibrates if the settings changed)."""
        if self.needs_calibration(specs, settings, groups):
            self.calibrate(specs, settings, groups=groups)
        cols = {}
        for spec in specs:
            prof = self.profiles[spec.name]
            dets = {}
            for kind in spec.detectors:
                cal = self.calibrations[spec.name][kind]
                thr = cal.threshold
                # the release level, never below the calibrated floor (see Calibration)
                release = settings.release
                if cal.release_floor > 0 and 0 < thr < math.inf:
                    release = min(1.0, max(release, cal.release_floor / thr))
                dets[kind] = make_detector(kind, prof, settings.window, settings.cadence, thr,
                                           float(spec.min_effect.get(
                                               kind, default_min_effect(kind))),
                                           settings.adwin_clock, spec.name,
                                           release=release,
                                           release_values=settings.release_values)
            cols[spec.name] = ColumnMonitor(spec.name, prof, dets, settings.window,
                                            settings.cadence, spec.role)
        return ModelMonitor(self.name, cols,
                            completeness_monitor(self.profiles, self.meta, specs, settings,
                                                 GROUP_WEIGHT * len(groups)),
                            GroupsMonitor(new_tests(self.groups, self.group_calibrations,
                                                    groups, settings)) if groups else None)

    # -- state ----------------------------------------------------------------
    @property
    def id(self) -> str:
        """Content hash of the profiles and thresholds (exported as ``baseline_id``)."""
        content: dict[str, Any] = {
            "p": {k: p.to_dict() for k, p in sorted(self.profiles.items())},
            "t": self.thresholds, "k": self.key}
        if self.groups:  # only then: a model without groups keeps its id
            content["g"] = groups_to_dict(self.groups, self.group_calibrations)
        body = json.dumps(content, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        """The baseline file's content, with the ``sha256`` of the rest (see
        :func:`content_hash`), which :meth:`from_dict` checks."""
        body: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "model": self.name,
            "id": self.id,
            "calibration_key": self.key,
            "meta": self.meta,
            "columns": {k: p.to_dict() for k, p in self.profiles.items()},
            "calibration": {c: {k: v.to_dict() for k, v in d.items()}
                            for c, d in self.calibrations.items()},
        }
        if self.groups:
            body["multivariate"] = groups_to_dict(self.groups, self.group_calibrations)
        body["sha256"] = content_hash(body)
        return body

    @classmethod
    def from_dict(cls, data: Any) -> ModelBaseline:
        """Restore a baseline written by :meth:`to_dict`, validated.

        DetectorError, naming the field, for a structure :meth:`to_dict` does not write:
        wrong types, thresholds that are not finite numbers > 0 (ADWIN's, a probability,
        also < 1), calibrations of unknown detectors or columns, an ``id`` that is not the
        content's, or a ``sha256`` that is not the content's (an edited file).  A file
        without ``sha256`` (written before it was added) loads with ``verified`` False, so
        that the caller can warn; every other check applies to it.
        """
        if not isinstance(data, Mapping):
            raise DetectorError(f"a baseline is a JSON object, got {_json_type(data)}{REBUILD}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION or isinstance(version, bool):
            raise DetectorError(f"baseline schema_version {version!r} is not "
                                f"{SCHEMA_VERSION}{REBUILD}")
        for key in ("model", "id", "calibration_key"):
            # the calibration key is empty in a baseline that was never calibrated
            if not isinstance(data.get(key), str) or not (data[key] or key == "calibration_key"):
                raise DetectorError(f"baseline {key}: must be a non-empty string, got "
                                    f"{_json_type(data.get(key))}{REBUILD}")
        meta = data.get("meta", {})
        columns = data.get("columns")
        calibration = data.get("calibration", {})
        for key, value in (("meta", meta), ("columns", columns), ("calibration", calibration)):
            if not isinstance(value, Mapping):
                raise DetectorError(f"baseline {key}: must be a JSON object, got "
                                    f"{_json_type(value)}{REBUILD}")
        assert isinstance(columns, Mapping)  # checked above, for mypy
        profiles: dict[str, Profile] = {}
        for name, prof in columns.items():
            try:
                profiles[name] = profile_from_dict(prof)
            except (DetectorError, KeyError, TypeError, ValueError) as exc:
                raise DetectorError(f"baseline columns.{name}: {_reason(exc)}{REBUILD}") from None
        cals: dict[str, dict[str, Calibration]] = {}
        for name, per_kind in calibration.items():
            if name not in profiles:
                raise DetectorError(f"baseline calibration.{name}: no such column in the "
                                    f"baseline's columns{REBUILD}")
            if not isinstance(per_kind, Mapping):
                raise DetectorError(f"baseline calibration.{name}: must be a JSON object, got "
                                    f"{_json_type(per_kind)}{REBUILD}")
            valid = detectors_for(profiles[name].kind)
            for kind, cal in per_kind.items():
                where = f"baseline calibration.{name}.{kind}"
                if kind not in valid:
                    raise DetectorError(f"{where}: not a detector of a {profiles[name].kind} "
                                        f"column ({', '.join(valid)}){REBUILD}")
                cals.setdefault(name, {})[kind] = _calibration(cal, kind, where)
        base = cls(data["model"], profiles, cals, data["calibration_key"], dict(meta))
        if "multivariate" in data:
            base.groups, base.group_calibrations = groups_from_dict(data["multivariate"])
        if base.id != data["id"]:
            raise DetectorError(f"baseline id {data['id']!r} is not the id of its content "
                                f"({base.id!r}): the file was edited or corrupted{REBUILD}")
        digest = data.get("sha256")
        if digest is None:
            base.verified = False
        else:
            body = {k: v for k, v in data.items() if k != "sha256"}
            if not isinstance(digest, str) or digest != content_hash(body):
                raise DetectorError("baseline sha256 does not match its content: the file was "
                                    f"edited or corrupted after it was written{REBUILD}")
        return base

    def check(self, specs: Sequence[ColumnSpec], settings: DetectionSettings,
              groups: Sequence[GroupSpec] = ()) -> None:
        """DetectorError unless this baseline has what ``specs`` need: a profile of the
        right type for every column and, when its calibration is for these settings (it
        is recalibrated otherwise), a calibration of every detector."""
        calibrated = not self.needs_calibration(specs, settings, groups)
        try:
            check_groups(self.groups, groups)
        except DetectorError as exc:
            raise DetectorError(f"{exc}{REBUILD}") from None
        if calibrated and any(g.name not in self.group_calibrations for g in groups):
            raise DetectorError(f"the baseline has no calibration of a multivariate group"
                                f"{REBUILD}")
        for spec in specs:
            prof = self.profiles.get(spec.name)
            if prof is None:
                raise DetectorError(f"the baseline has no profile of column {spec.name!r}"
                                    f"{REBUILD}")
            if prof.kind != spec.type:
                raise DetectorError(f"the baseline profiles column {spec.name!r} as "
                                    f"{prof.kind}, the configuration says {spec.type}{REBUILD}")
            if calibrated:
                missing = [d for d in spec.detectors
                           if d not in self.calibrations.get(spec.name, {})]
                if missing:
                    raise DetectorError(f"the baseline has no calibration of detector(s) "
                                        f"{', '.join(missing)} of column {spec.name!r}{REBUILD}")


REBUILD = "; rebuild it with `streamdrift baseline`"
_METHODS = ("direct", "extrapolated", "floor", "analytic")


def content_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``body`` (keys sorted, no spaces, non-finite
    numbers as null as the file has them): what a baseline file's ``sha256`` holds."""
    text = json.dumps(_canonical(body), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"{exc.args[0]} is missing"
    return str(exc).removesuffix(": rebuild the baseline with `streamdrift baseline`")


def _number(cal: Mapping[str, Any], key: str, where: str) -> float:
    value = cal.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DetectorError(f"{where}.{key}: must be a finite number, got "
                            f"{_json_type(value)}{REBUILD}")
    return float(value)


def _calibration(cal: Any, kind: str, where: str) -> Calibration:
    if not isinstance(cal, Mapping):
        raise DetectorError(f"{where}: must be a JSON object, got {_json_type(cal)}{REBUILD}")
    threshold = _number(cal, "threshold", where)
    if threshold <= 0 or (kind == "adwin" and threshold >= 1):
        bound = "in (0, 1)" if kind == "adwin" else "> 0"
        raise DetectorError(f"{where}.threshold: must be a number {bound}, got "
                            f"{threshold!r}{REBUILD}")
    target = _number(cal, "target_events", where)
    if target <= 1:
        raise DetectorError(f"{where}.target_events: must be > 1, got {target!r}{REBUILD}")
    if cal.get("method") not in _METHODS:
        raise DetectorError(f"{where}.method: must be one of {', '.join(_METHODS)}, got "
                            f"{_json_type(cal.get('method'))}{REBUILD}")
    for key in ("simulated_values", "simulated_alarms"):
        value = cal.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DetectorError(f"{where}.{key}: must be an integer >= 0, got "
                                f"{_json_type(value)}{REBUILD}")
    if "estimated_events" not in cal:  # null stands for "never" (infinity)
        raise DetectorError(f"{where}.estimated_events: is missing{REBUILD}")
    if cal["estimated_events"] is not None and _number(cal, "estimated_events", where) <= 0:
        raise DetectorError(f"{where}.estimated_events: must be > 0{REBUILD}")
    if "release_floor" in cal and _number(cal, "release_floor", where) < 0:
        raise DetectorError(f"{where}.release_floor: must be >= 0{REBUILD}")
    return Calibration.from_dict(dict(cal))


class ModelMonitor:
    """Live state of one model: a :class:`ColumnMonitor` per column, and the model-level
    :class:`~detectors.quality.CompletenessMonitor` (``quality``) of incomplete events."""

    def __init__(self, name: str, columns: dict[str, ColumnMonitor],
                 quality: CompletenessMonitor | None = None,
                 groups: GroupsMonitor | None = None) -> None:
        self.name = name
        self.columns = columns
        #: the joint tests of the model's multivariate groups (None: no group)
        self.groups = groups
        self.n_events = 0
        self.quality = quality
        #: the detector episodes closed by the last :meth:`update` (see ColumnMonitor.closes)
        self.closes: list[Alarm] = []

    def update(self, columns: Mapping[str, Any],
               invalid_masks: Mapping[str, np.ndarray] | None = None,
               missing_masks: Mapping[str, np.ndarray] | None = None,
               coded: Mapping[str, CodedColumn] | None = None) -> list[Alarm]:
        """Feed one batch (column name → values, all of the batch's length).

        With ``missing_masks`` (and a ``quality`` monitor), the incomplete events are
        taken out first (see :mod:`detectors.quality`): the model-level test sees them,
        the columns do not.  Model-level alarms have the column ``""``.  ``coded``:
        categorical columns also given as codes into a table (:class:`CodedColumn`; same
        result, fewer lookups).
        """
        if missing_masks is not None and self.quality is not None:
            return self._update_complete(columns, invalid_masks, missing_masks, coded)
        out: list[Alarm] = []
        closes: list[Alarm] = []
        n = None
        for name, mon in self.columns.items():
            values = columns.get(name)
            if values is None:
                raise DetectorError(f"{self.name}: batch has no column {name!r}")
            if n is None:
                n = len(values)
            mask = invalid_masks.get(name) if invalid_masks else None
            out.extend(mon.update(values, mask, coded.get(name) if coded else None))
            closes.extend(mon.closes)
        if self.groups is not None:
            out.extend(self.groups.update(columns))
            closes.extend(self.groups.closes)
        self.n_events += n or 0
        out.sort(key=lambda a: a.position)
        closes.sort(key=lambda a: a.position)
        self.closes = closes
        return out

    def _update_complete(self, columns: Mapping[str, Any],
                         invalid_masks: Mapping[str, np.ndarray] | None,
                         missing_masks: Mapping[str, np.ndarray],
                         coded: Mapping[str, CodedColumn] | None = None) -> list[Alarm]:
        assert self.quality is not None
        n = len(next(iter(columns.values()))) if columns else 0
        out, keep = self.quality.update(invalid_masks, missing_masks, n)
        model_closes = self.quality.closes
        if keep is None:
            found = sorted([*out, *self.update(columns, invalid_masks, coded=coded)],
                           key=lambda a: a.position)
            self.closes = sorted([*model_closes, *self.closes], key=lambda a: a.position)
            return found
        kept = {c: np.asarray(v)[keep] for c, v in columns.items()}
        kept_coded = None
        if coded:  # the complete events' codes, for the complete events' values
            kept_coded = {c: CodedColumn(kept[c], cc.codes[keep], cc.table)
                          for c, cc in coded.items()
                          if c in kept and cc.values is columns[c]
                          and cc.codes.shape == (n,)}
        found = self.update(kept, None if invalid_masks is None else
                            {c: m[keep] for c, m in invalid_masks.items()}, coded=kept_coded)
        self.n_events += n - int(keep.size)
        out.extend(a._replace(position=int(keep[a.position])) for a in found)
        out.sort(key=lambda a: a.position)
        self.closes = sorted([*model_closes, *(a._replace(position=int(keep[a.position]))
                                               for a in self.closes)],
                             key=lambda a: a.position)
        return out

    def summary(self) -> dict[str, Any]:
        out = {"events": self.n_events,
               "columns": {k: m.summary() for k, m in self.columns.items()}}
        if self.quality is not None:
            out["quality"] = self.quality.summary()
        if self.groups is not None:
            out["groups"] = self.groups.summary()
        return out

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "events": self.n_events,
               "columns": {k: m.to_dict() for k, m in self.columns.items()}}
        if self.quality is not None:
            out["quality"] = self.quality.to_dict()
        if self.groups is not None:
            out["groups"] = self.groups.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], baseline: ModelBaseline,
                  fresh: ModelMonitor | None = None) -> ModelMonitor:
        """Restore a monitor; ``fresh`` (a new monitor of the baseline) gives the
        multivariate groups' tests their profiles and settings."""
        cols = {k: ColumnMonitor.from_dict(v, baseline.profiles[k])
                for k, v in data["columns"].items()}
        quality = data.get("quality")  # absent in a checkpoint older than it
        mon = cls(data["name"], cols,
                  None if quality is None else CompletenessMonitor.from_dict(quality))
        mon.n_events = int(data["events"])
        if fresh is not None and fresh.groups is not None:
            mon.groups = GroupsMonitor.from_dict(data.get("groups") or {}, fresh.groups)
        return mon
