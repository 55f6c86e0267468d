"""The small protocol every streamdrift detector follows.

A detector consumes 1-D numpy batches and reports the positions in the batch
at which an alarm was *raised* (a transition into the alarm state, or a
change point for change detectors such as ADWIN).  Everything else is a
read-only property.  State is explicit: ``to_dict()`` returns plain JSON-able
data and ``Detector.from_dict()`` restores an identical detector, so a
save/restore round trip in the middle of a stream gives identical later
output.  Memory is bounded by the constructor's settings, never by the
stream's length.

Conventions
-----------
* Numeric detectors receive ``float64`` values.  ``NaN`` means *missing* and
  ``±inf`` means *invalid*; both are skipped by the statistics and never
  corrupt state.  Positions returned always refer to the original batch,
  including skipped entries.
* Statistics are never ``NaN``: before a detector has enough data its
  statistic is ``0.0`` and it does not alarm.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from detectors.errors import DetectorError

_REGISTRY: dict[str, type[Detector]] = {}

EMPTY_POSITIONS = np.empty(0, dtype=np.int64)


def registered_detectors() -> dict[str, type[Detector]]:
    """Return a copy of the registry of detector classes, keyed by ``kind``."""
    return dict(_REGISTRY)


class Detector(ABC):
    """Base class of all detectors.

    Subclasses set the class attribute ``kind`` (a short, stable, lowercase
    name used in metrics labels, reports and serialised state) and implement
    :meth:`update`, :meth:`_state` and :meth:`_from_state`.
    """

    kind: ClassVar[str] = ""
    #: "numeric", "categorical" or "flags": which kind of values the detector reads.
    input_kind: ClassVar[str] = "numeric"
    #: column types ("numeric", "categorical") the kind is an *alarming* detector of.  A
    #: kind that declares none is a non-alarming tracker and stays out of the catalogue
    #: of alarming kinds (:mod:`detectors.catalogue`).
    column_types: ClassVar[tuple[str, ...]] = ()
    #: share of a model's false-alarm budget, relative to the other kinds' (see
    #: :mod:`detectors.catalogue` for why some kinds take more than one)
    budget_weight: ClassVar[float] = 1.0
    #: a change detector fed the valid values one by one (not a window test)
    sequential: ClassVar[bool] = False
    #: whether :attr:`p_value` is defined (window tests); exported as one more series
    has_p_value: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            if cls.kind in _REGISTRY and _REGISTRY[cls.kind] is not cls:
                raise TypeError(f"detector kind {cls.kind!r} registered twice")
            _REGISTRY[cls.kind] = cls

    # -- the protocol -------------------------------------------------------
    @abstractmethod
    def update(self, values: np.ndarray) -> np.ndarray:
        """Feed a batch; return int64 positions in it where an alarm was raised."""

    @property
    @abstractmethod
    def statistic(self) -> float:
        """Current value of the drift statistic (never NaN)."""

    @property
    @abstractmethod
    def threshold(self) -> float:
        """Value of :attr:`statistic` above which the detector alarms."""

    @property
    def p_value(self) -> float | None:
        """Nominal p-value of the current statistic, where one is defined."""
        return None

    @property
    @abstractmethod
    def drift_detected(self) -> bool:
        """Whether the detector is in the alarm state now."""

    @property
    def n_alarms(self) -> int:
        """Number of alarms raised since creation."""
        return int(getattr(self, "_n_alarms", 0))

    @property
    def score(self) -> float:
        """Normalised score ``statistic / threshold`` (``>= 1`` means alarm territory)."""
        thr = self.threshold
        if not math.isfinite(thr) or thr <= 0:
            return 0.0
        return float(self.statistic / thr)

    # -- episodes -------------------------------------------------------------
    #: positions (in the last batch) at which an open episode closed; set by :meth:`update`
    close_positions: np.ndarray = EMPTY_POSITIONS

    def configure_episodes(self, release: float, release_values: int) -> None:
        """Set the hysteresis that closes an episode: ``release_values`` values without
        evidence, evidence being a statistic above ``release`` × threshold (detectors
        without a release level read only the second)."""
        check_release(release, release_values, getattr(self, "name", "") or self.kind)

    @property
    def episode_peak(self) -> float:
        """The largest statistic of the open (or last) episode."""
        return self.statistic

    def summary(self) -> dict[str, Any]:
        """Read-only snapshot of the detector's current figures."""
        return {
            "statistic": _finite(self.statistic),
            "threshold": _finite(self.threshold),
            "p_value": None if self.p_value is None else _finite(self.p_value),
            "score": _finite(self.score),
            "drift": bool(self.drift_detected),
            "alarms": self.n_alarms,
        }

    # -- state -------------------------------------------------------------
    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """JSON-able state (settings and running state)."""

    @classmethod
    @abstractmethod
    def _from_state(cls, state: dict[str, Any]) -> Detector:
        """Inverse of :meth:`_state`."""

    def to_dict(self) -> dict[str, Any]:
        """Serialise the full state to plain JSON-able data."""
        return {"kind": self.kind, "state": self._state()}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Detector:
        """Restore any registered detector from :meth:`to_dict` output."""
        try:
            kind = data["kind"]
            state = data["state"]
        except (KeyError, TypeError) as exc:
            raise DetectorError(f"not a serialised detector: missing {exc}") from None
        cls = _REGISTRY.get(kind)
        if cls is None:
            raise DetectorError(
                f"unknown detector kind {kind!r}; known kinds: {sorted(_REGISTRY)}"
            )
        return cls._from_state(state)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(statistic={self.statistic:.4g}, "
            f"threshold={self.threshold:.4g}, drift={self.drift_detected})"
        )


def check_release(release: Any, release_values: Any, owner: str) -> tuple[float, int]:
    """Validate episode hysteresis settings: ``0 < release <= 1``, ``release_values >= 1``."""
    if (isinstance(release, bool) or not isinstance(release, int | float)
            or not 0 < release <= 1):
        raise DetectorError(f"{owner}: release must be a number in (0, 1], got {release!r}")
    if (isinstance(release_values, bool) or not isinstance(release_values, int | np.integer)
            or release_values < 1):
        raise DetectorError(f"{owner}: release_values must be an integer >= 1, got "
                            f"{release_values!r}")
    return float(release), int(release_values)


def check_clip(clip: Any, owner: str) -> tuple[float, float] | None:
    """Validate a winsorising range ``(low, high)`` (or ``None``) of detector ``owner``."""
    if clip is None:
        return None
    try:
        lo, hi = (float(c) for c in clip)
    except (TypeError, ValueError):
        raise DetectorError(f"{owner}: clip must be a (low, high) pair of numbers, "
                            f"got {clip!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise DetectorError(f"{owner}: clip must be finite with low <= high, got {clip!r}")
    return lo, hi


class HeldAlarm:
    """Keeps a change detector's alarm visible for ``hold`` values after it fires.

    ADWIN restarts after a detection and a CUSUM's sum can fall back below its
    threshold soon after crossing it; holding the alarm state (and the alarming
    statistic) for one window of values keeps "drifting now" visible to scrapes
    and alert rules.
    Counted in valid values, so it does not depend on the batching.
    """

    hold: int = 0
    _since: int = -1  # valid values since the last alarm; -1: none yet
    _det_stat: float = 0.0

    def _track_hold(self, arr: np.ndarray, positions: np.ndarray, stats: np.ndarray) -> None:
        """Advance the hold over batch ``arr`` that raised alarms at ``positions``."""
        if not self.hold or (not positions.size and self._since < 0):  # nothing to advance
            return
        valid = np.isfinite(arr) & (np.abs(arr) <= 1e100)
        after = int(np.count_nonzero(valid[positions[-1] + 1:])) if positions.size else 0
        self._advance_hold(after, int(np.count_nonzero(valid)), stats)

    def _advance_hold(self, valid_after_last: int, valid_total: int, stats: np.ndarray) -> None:
        """Advance the hold by counts of valid values (``stats``: this batch's alarms)."""
        if stats.size:
            self._since = valid_after_last
            self._det_stat = float(stats[-1])
        elif self._since >= 0:
            self._since += valid_total

    @property
    def _holding(self) -> bool:
        return self.hold > 0 and 0 <= self._since < self.hold


def _finite(x: float) -> float:
    x = float(x)
    return x if math.isfinite(x) else 0.0


def as_float_batch(values: Any, name: str = "values") -> np.ndarray:
    """Return ``values`` as a 1-D float64 array or raise a clear ``TypeError``.

    Integers, booleans and floats are accepted; strings, objects and other
    dtypes are rejected with a message naming ``name`` (the feature).
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        if arr.ndim == 0:
            arr = arr.reshape(1)
        else:
            raise TypeError(f"{name}: expected a 1-D batch, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        return arr.astype(np.float64, copy=False)
    if arr.dtype.kind in "iub":
        return arr.astype(np.float64)
    if arr.size == 0:
        return np.empty(0, dtype=np.float64)
    raise TypeError(
        f"{name}: numeric detectors take float or integer batches, got dtype "
        f"{arr.dtype} (convert the column to float64 with NaN for missing values)"
    )
