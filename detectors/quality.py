"""Model-level data quality: events that lack most of their columns (one common cause).

When a producer breaks, one event can lack most of its fields at once (an event that
carries a single feature of nine).  Fed to the columns, such an event is one missing
value in *every* column, and each column's missing-rate test fires on it: N alarms for
one cause, and none of them says what happened.  Here such an event is *incomplete*:

* per model, an event is incomplete when at least half of the model's columns, and at
  least 2, are missing or invalid in it (:func:`incomplete_min_columns`);
* its values are not fed to the columns at all (they carry no per-column information:
  the missing-rate, invalid-rate and distribution tests of every column see the
  complete events only); the events are counted separately;
* one model-level test, :class:`IncompleteRate` (a one-sided window test of the rate of
  incomplete events against the reference's rate), raises ONE model-level alarm
  (column ``""``, detector ``"incomplete"``) when that rate rises.

The test's threshold comes from the model's false-alarm budget in closed form
(:func:`incomplete_threshold`): the share of a unit-weight test among the model's
detectors (:func:`budget_parts`), and the smallest count whose binomial tail at a conservative (99 % upper)
posterior rate of the reference keeps the expected events between false alarms above
that share.  It also needs an effect of :data:`INCOMPLETE_MIN_EFFECT` (one percentage
point above the reference's rate), so that a handful of broken events in a big stream
is counted, not paged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from detectors.base import Detector
from detectors.calibration import per_detector_arl
from detectors.catalogue import budget_weight, can_false_alarm
from detectors.column import Alarm
from detectors.profile import Profile
from detectors.window import RateWindow

__all__ = [
    "INCOMPLETE_MIN_EFFECT",
    "CompletenessMonitor",
    "IncompleteRate",
    "count_incomplete",
    "incomplete_min_columns",
    "incomplete_threshold",
]

#: the model-level test alarms only when the window's rate of incomplete events is at
#: least this much above the reference's
INCOMPLETE_MIN_EFFECT = 0.01
#: the upper quantile of the reference rate's posterior that the threshold assumes
_RATE_QUANTILE = 0.99


def incomplete_min_columns(n_columns: int) -> int | None:
    """Missing or invalid columns that make an event of a model incomplete (None: a
    model of one column has no incomplete events, only a missing value).

    >>> [incomplete_min_columns(n) for n in (1, 2, 3, 4, 9)]
    [None, 2, 2, 2, 5]
    """
    if n_columns < 2:
        return None
    return max(2, math.ceil(n_columns / 2))


def _missing_counts(flags: Sequence[np.ndarray], n: int) -> np.ndarray:
    counts = np.zeros(n, dtype=np.int32)
    for f in flags:
        counts += f
    return counts


def count_incomplete(data: Mapping[str, Any], columns: Sequence[str]) -> tuple[int, int]:
    """(events, incomplete events) of reference data (column -> values, NaN or None where
    missing or invalid, all of one length)."""
    k = incomplete_min_columns(len(columns))
    arrays = [np.asarray(data[c]) for c in columns]
    n = max((a.shape[0] for a in arrays), default=0)
    if k is None or n == 0:
        return n, 0
    flags = []
    for a in arrays:
        if a.dtype.kind == "f":
            flags.append(np.isnan(a))
        else:
            flags.append(np.equal(a, None).astype(bool))  # type: ignore[call-overload]
    return n, int(np.count_nonzero(_missing_counts(flags, n) >= k))


def incomplete_threshold(events: int, incomplete: int, window: int, cadence: int,
                         target_events: float) -> float:
    """Threshold of the window's rate of incomplete events (the statistic must exceed it).

    The smallest count ``k`` for which tests every ``cadence`` events, each exceeding
    with probability ``P(Binomial(window, p) >= k)``, are on average at least
    ``target_events`` events apart, ``p`` being the 99 % quantile of the reference
    rate's posterior (Jeffreys prior, ``incomplete`` of ``events``).  Up-crossings are
    rarer than exceedances, so the alarms are at least that far apart.  Returns
    ``(k - 0.5) / window``.

    >>> incomplete_threshold(5000, 0, 1000, 50, 1e6) * 1000
    6.5
    """
    p = float(stats.beta.ppf(_RATE_QUANTILE, incomplete + 0.5, max(events - incomplete, 0) + 0.5))
    ks = np.arange(window + 2)
    sf = stats.binom.sf(ks - 1, window, p)
    ok = np.flatnonzero(sf * target_events <= cadence)
    k = int(ks[ok[0]]) if ok.size else window + 1
    return (k - 0.5) / window


def budget_parts(specs: Sequence[Any], profiles: Mapping[str, Profile]) -> float:
    """Unit-weight parts of a model's false-alarm budget: the weights of its columns'
    detectors that can raise a false alarm at all, plus one for the model-level test of
    incomplete events (a model of two columns or more has one).  The columns' detectors
    and the model-level test share the budget (Šidák), so together they keep it."""
    parts = sum(budget_weight(d) for s in specs for d in s.detectors
                if can_false_alarm(d, profiles[s.name]))
    if incomplete_min_columns(len(specs)) is not None:
        parts += 1.0
    return parts or 1.0


def incomplete_target(false_alarm_events: float, parts: float) -> float:
    """The model-level test's share of the budget: a unit-weight test among ``parts``
    (:func:`budget_parts`)."""
    return per_detector_arl(false_alarm_events, parts)


def reference_incomplete(profiles: Mapping[str, Profile], meta: Mapping[str, Any],
                         columns: Sequence[str]) -> tuple[int, int]:
    """(reference events, incomplete events) of a baseline.

    From ``meta`` (``reference_events``, ``incomplete_events``: written by the baseline
    builder) when there; otherwise (a baseline written before them) an upper bound from
    the profiles: an incomplete event takes at least ``k`` missing or invalid values, so
    there are at most (missing + invalid values) / ``k`` of them.
    """
    events, incomplete = meta.get("reference_events"), meta.get("incomplete_events")
    if (isinstance(events, int) and isinstance(incomplete, int)
            and 0 <= incomplete <= events and not isinstance(incomplete, bool)):
        return events, incomplete
    gaps = [int(profiles[c].n_missing) + int(getattr(profiles[c], "n_invalid", 0))
            for c in columns]
    n = max((int(profiles[c].count) + g for c, g in zip(columns, gaps, strict=True)),
            default=0)
    k = incomplete_min_columns(len(columns))
    return n, 0 if k is None else min(n, sum(gaps) // k)


def completeness_monitor(profiles: Mapping[str, Profile], meta: Mapping[str, Any],
                         specs: Sequence[Any], settings: Any,
                         extra_parts: float = 0.0) -> CompletenessMonitor:
    """A fresh model-level monitor of a model's baseline (``specs``: its ColumnSpecs,
    ``settings``: its DetectionSettings; ``extra_parts``: budget shares of other tests,
    the multivariate groups')."""
    columns = [s.name for s in specs]
    events, incomplete = reference_incomplete(profiles, meta, columns)
    target = incomplete_target(settings.false_alarm_events, budget_parts(specs, profiles)
                                + extra_parts)
    threshold = incomplete_threshold(events, incomplete, settings.window, settings.cadence,
                                     target)
    rate = incomplete / events if events else 0.0
    test = IncompleteRate(rate, settings.window, settings.cadence, threshold,
                          INCOMPLETE_MIN_EFFECT, events, name="incomplete")
    test.configure_episodes(settings.release, settings.release_values)
    return CompletenessMonitor(test, len(columns))


class IncompleteRate(RateWindow):
    """Rate of incomplete events of a model (flag per event) against the reference's.

    It declares no ``column_types``: a model-level test, not in :mod:`detectors.catalogue`.
    """

    kind = "incomplete"
    input_kind = "flags"


class CompletenessMonitor:
    """Finds a model's incomplete events in a batch, tests their rate, hands on the rest.

    Examples
    --------
    >>> import numpy as np
    >>> test = IncompleteRate(0.0, window=100, cadence=10, threshold=0.045, min_effect=0.01)
    >>> q = CompletenessMonitor(test, n_columns=4)
    >>> ok = np.zeros(200, bool)
    >>> gone = ok.copy(); gone[150:] = True
    >>> alarms, keep = q.update({}, {"a": gone, "b": gone, "c": ok, "d": ok}, 200)
    >>> [(a.detector, a.position) for a in alarms], int(keep.size), q.n_incomplete
    ([('incomplete', 159)], 150, 50)
    """

    def __init__(self, test: IncompleteRate, n_columns: int, n_incomplete: int = 0) -> None:
        self.test = test
        self.n_columns = n_columns
        self.min_columns = incomplete_min_columns(n_columns)
        #: incomplete events seen (restored counts included)
        self.n_incomplete = n_incomplete
        #: incomplete events of the last update
        self.last_incomplete = 0
        #: the model-level episodes closed by the last update (peak as the statistic)
        self.closes: list[Alarm] = []

    @property
    def active(self) -> bool:
        return bool(self.test.drift_detected)

    def update(self, invalid_masks: Mapping[str, np.ndarray] | None,
               missing_masks: Mapping[str, np.ndarray], n: int,
               ) -> tuple[list[Alarm], np.ndarray | None]:
        """(model-level alarms, positions of the complete events or None when all are).

        One vectorised pass: the per-column missing/invalid masks are summed per event.
        """
        self.last_incomplete = 0
        self.closes = []
        out, keep = self._update(invalid_masks, missing_masks, n)
        closes = self.test.close_positions
        if n and closes.size:
            peak, thr = float(self.test.episode_peak), float(self.test.threshold)
            self.closes = [Alarm("", self.test.kind, int(p), peak, thr) for p in closes.tolist()]
        return out, keep

    def _update(self, invalid_masks: Mapping[str, np.ndarray] | None,
                missing_masks: Mapping[str, np.ndarray], n: int,
                ) -> tuple[list[Alarm], np.ndarray | None]:
        k = self.min_columns
        if n == 0:
            return [], None
        if k is None:
            self.test.update_constant(n, 0)
            return [], None
        flags = [m for m in missing_masks.values()]
        if invalid_masks:
            flags += [m for m in invalid_masks.values()]
        flags = [f for f in flags if np.count_nonzero(f)]  # (a C call; .any() is slower)
        if len(flags) < k:  # fewer columns with any gap than an incomplete event needs
            self.test.update_constant(n, 0)
            return [], None
        incomplete = _missing_counts(flags, n) >= k
        found = int(np.count_nonzero(incomplete))
        if not found:
            self.test.update_constant(n, 0)
            return [], None
        hits = self.test.update(incomplete)
        out = [Alarm("", self.test.kind, int(p), float(s), float(self.test.threshold))
               for p, s in zip(hits.tolist(), _stats(self.test, hits.size), strict=True)]
        self.last_incomplete = found
        self.n_incomplete += found
        return out, np.flatnonzero(~incomplete)

    def summary(self) -> dict[str, Any]:
        s = self.test.summary()
        return {"incomplete": self.n_incomplete, "incomplete_ratio": self.test.rate,
                "threshold": s["threshold"], "statistic": s["statistic"],
                "active": self.active, "alarms": int(self.test.n_alarms)}

    def to_dict(self) -> dict[str, Any]:
        return {"n_columns": self.n_columns, "incomplete": self.n_incomplete,
                "test": self.test.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompletenessMonitor:
        test = Detector.from_dict(data["test"])
        assert isinstance(test, IncompleteRate)
        return cls(test, int(data["n_columns"]), int(data["incomplete"]))


def _stats(det: Detector, n: int) -> list[float]:
    got = getattr(det, "alarm_statistics", None)
    if got is None or len(got) != n:
        return [float(det.statistic)] * n
    return [float(s) for s in got]
