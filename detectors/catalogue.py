"""The catalogue of alarming detector kinds: every module reads a kind's facts from here.

A detector *kind* (``"ks"``, ``"cusum"``, ...) is a :class:`~detectors.base.Detector`
subclass registered under that name.  Its static facts are class attributes, so the
registry (:func:`~detectors.base.registered_detectors`) carries them:

``column_types``
    The column types it is an alarming detector of.  **The rule**: a registered kind
    is *alarming*, and in this catalogue, exactly when its class declares column
    types.  Non-alarming trackers (``invalid_rate`` and the ratio and distance
    windows of :class:`~detectors.column.ColumnMonitor`) declare none.
``budget_weight``
    Its share of the model's false-alarm budget, relative to the others' (1).  The
    CUSUM is the optimal detector of the commonest drift, a persistent mean shift,
    and its delay grows with the log of 1/share: with eight parts (8/11 of a numeric
    column's budget) the default set catches 0.5σ and 1σ shifts within 1.08x of a
    CUSUM that has the whole budget, while the window tests, whose delays grow just
    as slowly with their ARL0, stay ahead of every peer on variance and shape
    changes.  Four parts left 1σ at 1.25x (docs/benchmarks.md compares the two
    runs).  On a categorical column the chi2 test and the surprisal CUSUM split most
    of the budget (four parts each against one for each rate test): together they
    catch a total-variation shift of 0.1 within 1.15x of the best peer, which
    neither does alone.
``sequential``
    A change detector fed the valid values one by one (no window, no p-value).
``has_p_value``
    Whether it reports a p-value, which is exported as one more series.

What a class cannot know about columns is its :class:`Entry` in :data:`ENTRIES`:
whether it belongs to the default set (the order of :data:`ENTRIES` is the default
order of every column type), how it is built from a column's profile, the counts
behind its baseline probabilities, how it is calibrated, whether it can raise a
false alarm at all and the ``min_effect`` the configuration gives it by default.  Adding a detector kind touches its own module (the class) and
this one (its entry); importing this module checks that the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from detectors.adwin import ADWIN, adwin_episode_counts
from detectors.base import Detector, registered_detectors
from detectors.calibration import (
    Calibration,
    calibrate_cusum,
    calibrate_rate_curve,
    calibrate_window_test,
    posterior_probs,
    sample_bins,
)
from detectors.cusum import CUSUM, CUSUM_K, SurprisalCUSUM
from detectors.errors import DetectorError
from detectors.profile import (
    CategoricalProfile,
    NumericProfile,
    Profile,
    adwin_clip,
    cusum_reference,
    range_breakers,
    unseen_count,
)
from detectors.rate_calibration import (
    calibrate_rate,
    missing_posterior,
    out_of_range_posterior,
    unseen_posterior,
)
from detectors.window import (
    ChiSquareWindow,
    KSWindow,
    MissingRate,
    OutOfRangeRate,
    UnseenRate,
    WindowTest,
)

if TYPE_CHECKING:
    from detectors.model import DetectionSettings

#: the column types, in the order :data:`KINDS` walks them
COLUMN_TYPES: tuple[str, ...] = ("numeric", "categorical")
#: Prometheus series of a detector with a p-value: statistic, threshold, p-value, score,
#: active, window values, alarms (one fewer without a p-value)
SERIES_WITH_P_VALUE = 7
#: the values of ADWIN's delta its calibration tries, the most sensitive first
ADWIN_DELTA_GRID = np.array([0.9, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 5e-3, 2e-3, 1e-3, 5e-4,
                             2e-4, 1e-4])
#: ADWIN's calibration ends with one run of this many times the per-grid-point values, near
#: the target (see calibrate_rate_curve); ~0.5 s at the default calibration_values
ADWIN_PROBE_FACTOR = 16
#: CUSUM calibration simulates this many times ``calibration_values`` (~0.3 s at the default)
CUSUM_VALUES_FACTOR = 4
#: default ``min_effect`` of the rate tests (missing, out_of_range, unseen): an alarm needs the
#: window's flag rate two percentage points above the reference's, 20 more flagged values
#: in a window of 1000.  The calibrated threshold only says the rate changed: a reference
#: of 10,000 values without a missing one makes 0.3 % of events missing a field a real
#: change (5 in a window is significant at the default budget), and one that no one need
#: be woken for; 0.01
#: still let it alarm about once per 200,000 events, 0.02 never in the tests, while a
#: rise to 5 % alarms within about 400 values (tests/detectors/test_rate_calibration.py).
#: Only the missing-value test has it: missing fields are how malformed and partial events
#: show, while values beyond the reference's range and new categories are changes of the
#: distribution itself (a variance x1.5 is caught by out_of_range, and at 0.02 it was
#: caught 20 % later by the default set; 2 % of new categories twice as late)
RATE_MIN_EFFECT = 0.02


class BuildArgs(NamedTuple):
    """The settings :func:`make_detector` passes to a kind's build function."""

    window: int
    cadence: int
    threshold: float
    min_effect: float
    adwin_clock: int
    name: str


def _closed(profile: Profile) -> bool:
    """A categorical baseline without singletons looks closed: no new categories expected."""
    return isinstance(profile, CategoricalProfile) and unseen_count(profile) == 0


# -- how each kind is built from a profile --------------------------------------------------
def _build_ks(p: Profile, a: BuildArgs) -> Detector:
    assert isinstance(p, NumericProfile)
    return KSWindow(p.bin_edges, p.bin_probabilities, a.window, a.cadence, a.threshold,
                    a.min_effect, min(p.count, p.reservoir_size), a.name)


def _build_chi2(p: Profile, a: BuildArgs) -> Detector:
    assert isinstance(p, CategoricalProfile)
    return ChiSquareWindow(p.categories, p.bin_probabilities, a.window, a.cadence,
                           a.threshold, a.min_effect, p.count, a.name)


def _build_missing(p: Profile, a: BuildArgs) -> Detector:
    return MissingRate(p.missing_rate, a.window, a.cadence, a.threshold, a.min_effect,
                       p.count + p.n_missing, a.name)


def _build_out_of_range(p: Profile, a: BuildArgs) -> Detector:
    # expected share of new values outside the range of `ref` reference values
    assert isinstance(p, NumericProfile)
    ref = p.count
    return OutOfRangeRate(range_breakers(p) / (ref + 1) if ref else 0.0, a.window, a.cadence,
                          a.threshold, a.min_effect, ref, a.name)


def _build_unseen(p: Profile, a: BuildArgs) -> Detector:
    assert isinstance(p, CategoricalProfile)
    ref = p.count
    return UnseenRate(unseen_count(p) / ref if ref else 0.0, a.window, a.cadence, a.threshold,
                      a.min_effect, ref, a.name)


def _build_surprisal(p: Profile, a: BuildArgs) -> Detector:
    assert isinstance(p, CategoricalProfile)
    return SurprisalCUSUM(p.categories, p.bin_probabilities,
                          a.threshold if a.threshold > 0 else math.inf, CUSUM_K, a.min_effect,
                          p.count, hold=a.window, name=a.name)


def _build_cusum(p: Profile, a: BuildArgs) -> Detector:
    assert isinstance(p, NumericProfile)
    mean, scale, clip = cusum_reference(p)
    return CUSUM(mean, scale, a.threshold if a.threshold > 0 else math.inf, CUSUM_K,
                 a.min_effect, clip, hold=a.window, name=a.name)


def _build_adwin(p: Profile, a: BuildArgs) -> Detector:
    assert isinstance(p, NumericProfile)
    delta = a.threshold if 0 < a.threshold < 1 else 0.002
    # ADWIN adapts its window and reports a change once; holding the alarm state for one
    # window of values keeps "drifting now" visible to scrapes and alert rules
    return ADWIN(delta=delta, clock=a.adwin_clock, min_effect=a.min_effect, name=a.name,
                 hold=a.window, clip=adwin_clip(p))


# -- the counts behind a kind's baseline probabilities (for calibration) ----------------------
def _counts_ks(p: Profile) -> np.ndarray:
    assert isinstance(p, NumericProfile)
    return p.bin_probabilities * min(p.count, p.reservoir_size)


def _counts_chi2(p: Profile) -> np.ndarray:
    return p.bin_probabilities * p.count


def _counts_missing(p: Profile) -> np.ndarray:
    return np.array([p.count, p.n_missing], dtype=np.float64)


def _counts_out_of_range(p: Profile) -> np.ndarray:
    assert isinstance(p, NumericProfile)
    k = range_breakers(p)
    return np.array([max(p.count - k, 0), float(k)])


def _counts_unseen(p: Profile) -> np.ndarray:
    assert isinstance(p, CategoricalProfile)
    k = unseen_count(p)
    return np.array([p.count - k, k], dtype=float)


def _no_counts(p: Profile) -> None:
    return None


# -- how each kind is calibrated -------------------------------------------------------------
Calibrate = Callable[[Detector, Profile, "DetectionSettings", float, int], Calibration]


def _calibrate_window(closed_categories: bool = False) -> Calibrate:
    """Calibration of a window test by simulating it on bootstrap paths.

    With ``closed_categories``, a categorical baseline that looks closed keeps
    probability 0 for the categories it never saw (see
    :func:`~detectors.calibration.posterior_probs`).
    """
    def calibrate(det: Detector, profile: Profile, settings: DetectionSettings,
                  target_events: float, seed: int) -> Calibration:
        assert isinstance(det, WindowTest)
        return calibrate_window_test(det, target_events, reference_counts(det.kind, profile),
                                     seed=seed, n_values=settings.calibration_values,
                                     closed=closed_categories and _closed(profile))
    return calibrate


def _calibrate_rate(posterior: Callable[[Profile], tuple[float, float]]) -> Calibrate:
    """Analytic calibration of a rate test from the Beta posterior of its flag rate.

    See :mod:`detectors.rate_calibration`: no simulation, so a flag the reference
    never showed gets a threshold from its posterior, not from simulated paths
    that never see it.
    """
    def calibrate(det: Detector, profile: Profile, settings: DetectionSettings,
                  target_events: float, seed: int) -> Calibration:
        assert isinstance(det, WindowTest)
        a, b = posterior(profile)
        return calibrate_rate(det.window, a, b, target_events)
    return calibrate


def _oor_posterior(profile: Profile) -> tuple[float, float]:
    assert isinstance(profile, NumericProfile)
    return out_of_range_posterior(profile)


def _unseen_posterior(profile: Profile) -> tuple[float, float]:
    assert isinstance(profile, CategoricalProfile)
    return unseen_posterior(profile)


def _calibrate_surprisal(det: Detector, profile: Profile, settings: DetectionSettings,
                         target_events: float, seed: int) -> Calibration:
    assert isinstance(det, SurprisalCUSUM)
    counts = _counts_chi2(profile)
    closed = _closed(profile)
    assert det.clip is not None  # always set for a surprisal CUSUM
    z_table = (np.clip(det.table, det.clip[0], det.clip[1]) - det.mean) / det.scale

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        # each path draws its null frequencies from the baseline's posterior, as the
        # window tests' calibration does: the live frequencies are not the baseline's
        return z_table[sample_bins(posterior_probs(rng, counts, closed), n, rng)]

    return calibrate_cusum(draw, target_events, det.allowance,
                           CUSUM_VALUES_FACTOR * settings.calibration_values, seed=seed,
                           release=det.hold)


def _calibrate_cusum(det: Detector, profile: Profile, settings: DetectionSettings,
                     target_events: float, seed: int) -> Calibration:
    assert isinstance(det, CUSUM) and isinstance(profile, NumericProfile)
    mean, scale = det.mean, det.scale
    lo, hi = det.clip if det.clip is not None else (-math.inf, math.inf)

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        return (np.clip(profile.sample(rng, n), lo, hi) - mean) / scale

    # the live stream's mean differs from the reservoir's by ~1/sqrt(n) standard units
    n_ref = max(min(profile.count, profile.reservoir.size), 1)
    return calibrate_cusum(sample, target_events, det.allowance,
                           CUSUM_VALUES_FACTOR * settings.calibration_values,
                           offset_sd=1.0 / math.sqrt(n_ref), seed=seed, release=det.hold)


def _calibrate_adwin(det: Detector, profile: Profile, settings: DetectionSettings,
                     target_events: float, seed: int) -> Calibration:
    """Calibrate ADWIN's ``delta`` on bootstrap draws from the baseline's reservoir."""
    assert isinstance(profile, NumericProfile)
    n = max(settings.calibration_values // 2, 100_000)
    clip = adwin_clip(profile)
    release = getattr(det, "hold", 0) or 0

    def run(delta: float, rng: np.random.Generator, n: int) -> int:
        alarms = detections = 0
        for start in range(0, n, 4_000_000):  # bounded memory for the long probe run
            m = min(4_000_000, n - start)
            # episodes as the live detector groups them (ADWIN.configure_episodes)
            d, e = adwin_episode_counts(profile.sample(rng, m), delta,
                                        clock=settings.adwin_clock, clip=clip,
                                        release=getattr(det, "release", None),
                                        hold=release)
            alarms += e
            detections += d
        # Near the target the rate that counts is the episodes'.  Far above it, detections
        # crowd into episodes, which flattens the curve the rare end is extrapolated
        # from; there the detections give its shape (the two agree where detections
        # are sparse, as they are at the target).
        return alarms if detections <= 10 * n / target_events else detections

    # ADWIN tests at most once per `clock` values, each test at level delta: a
    # conservative fallback when the simulation sees too few alarms to extrapolate
    bound = min(0.9, settings.adwin_clock / target_events)
    return calibrate_rate_curve(run, target_events, n, ADWIN_DELTA_GRID, seed=seed,
                                max_param=0.9, bound_param=bound,
                                probe_values=ADWIN_PROBE_FACTOR * n)


# -- whether a kind can raise a false alarm at all ------------------------------------------
def _always(kind: str, profile: Profile) -> bool:
    return True


def _flag_seen(kind: str, profile: Profile) -> bool:
    """A rate test can false-alarm only if its reference shows its flag at all."""
    counts = reference_counts(kind, profile)
    return counts is not None and bool(counts[-1] > 0)


# -- the catalogue ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One alarming detector kind: its registered class and what is done with it."""

    cls: type[Detector]
    #: in the default set of each column type it applies to
    default: bool
    build: Callable[[Profile, BuildArgs], Detector]
    reference_counts: Callable[[Profile], np.ndarray | None]
    calibrate: Calibrate
    can_false_alarm: Callable[[str, Profile], bool] = _always
    #: the ``min_effect`` the configuration gives it unless set (see :func:`default_min_effect`)
    min_effect: float = 0.0

    @property
    def kind(self) -> str:
        return self.cls.kind

    @property
    def column_types(self) -> tuple[str, ...]:
        return self.cls.column_types

    @property
    def budget_weight(self) -> float:
        return float(self.cls.budget_weight)

    @property
    def sequential(self) -> bool:
        return self.cls.sequential

    @property
    def series(self) -> int:
        return SERIES_WITH_P_VALUE - (0 if self.cls.has_p_value else 1)


def _entries(*entries: Entry) -> MappingProxyType[str, Entry]:
    """The catalogue, checked against the registry: its alarming kinds, no more, no less."""
    registry = registered_detectors()
    alarming = {k for k, c in registry.items() if c.column_types}
    listed = [e.kind for e in entries]
    if set(listed) != alarming or len(listed) != len(alarming):
        raise TypeError(f"the catalogue lists {sorted(listed)} but the alarming registered "
                        f"kinds are {sorted(alarming)}: give each one entry")
    for e in entries:
        if registry[e.kind] is not e.cls or not set(e.column_types) <= set(COLUMN_TYPES):
            raise TypeError(f"catalogue entry {e.kind!r}: not the registered class, or "
                            f"column types outside {COLUMN_TYPES}")
    return MappingProxyType({e.kind: e for e in entries})


#: alarming kind → entry; this order is the default order of every column type
ENTRIES: MappingProxyType[str, Entry] = _entries(
    Entry(KSWindow, default=True, build=_build_ks, reference_counts=_counts_ks,
          calibrate=_calibrate_window()),
    Entry(ADWIN, default=True, build=_build_adwin, reference_counts=_no_counts,
          calibrate=_calibrate_adwin),
    Entry(CUSUM, default=True, build=_build_cusum, reference_counts=_no_counts,
          calibrate=_calibrate_cusum),
    Entry(ChiSquareWindow, default=True, build=_build_chi2, reference_counts=_counts_chi2,
          calibrate=_calibrate_window(closed_categories=True)),
    Entry(SurprisalCUSUM, default=True, build=_build_surprisal, reference_counts=_no_counts,
          calibrate=_calibrate_surprisal),
    Entry(MissingRate, default=True, build=_build_missing, reference_counts=_counts_missing,
          calibrate=_calibrate_rate(missing_posterior), can_false_alarm=_flag_seen,
          min_effect=RATE_MIN_EFFECT),
    # out of range always counts: any unbounded distribution can exceed the reference's
    # range, even when its extreme values are tied
    Entry(OutOfRangeRate, default=True, build=_build_out_of_range,
          reference_counts=_counts_out_of_range, calibrate=_calibrate_rate(_oor_posterior)),
    Entry(UnseenRate, default=True, build=_build_unseen, reference_counts=_counts_unseen,
          calibrate=_calibrate_rate(_unseen_posterior), can_false_alarm=_flag_seen),
)


def entry(kind: str) -> Entry:
    """The catalogue entry of alarming detector ``kind`` (a :class:`DetectorError` if none)."""
    try:
        return ENTRIES[kind]
    except KeyError:
        raise DetectorError(f"unknown detector kind {kind!r}; known kinds: "
                            f"{', '.join(KINDS)}") from None


def _check_type(column_type: str) -> str:
    if column_type not in COLUMN_TYPES:
        raise DetectorError(f"column type must be numeric or categorical, got {column_type!r}")
    return column_type


def default_detectors(column_type: str) -> tuple[str, ...]:
    """The default detector kinds of a column of ``column_type``, in their order.

    Examples
    --------
    >>> default_detectors("numeric")
    ('ks', 'adwin', 'cusum', 'missing', 'out_of_range')
    >>> default_detectors("categorical")
    ('chi2', 'surprisal', 'missing', 'unseen')
    """
    _check_type(column_type)
    return tuple(k for k, e in ENTRIES.items() if e.default and column_type in e.column_types)


def detectors_for(column_type: str) -> tuple[str, ...]:
    """Every detector kind valid for a column of ``column_type``: the defaults first.

    Examples
    --------
    >>> detectors_for("categorical")
    ('chi2', 'surprisal', 'missing', 'unseen')
    >>> "ks" in detectors_for("categorical")
    False
    """
    extra = (k for k, e in ENTRIES.items() if not e.default and column_type in e.column_types)
    return default_detectors(column_type) + tuple(extra)


#: every alarming kind, once: the numeric column's kinds, then the categorical column's others
KINDS: tuple[str, ...] = tuple(dict.fromkeys(k for t in COLUMN_TYPES for k in detectors_for(t)))


def column_types(kind: str) -> tuple[str, ...]:
    """The column types detector ``kind`` applies to.

    Examples
    --------
    >>> column_types("missing"), column_types("ks")
    (('numeric', 'categorical'), ('numeric',))
    """
    return entry(kind).column_types


def budget_weight(kind: str) -> float:
    """Relative share of the model's false-alarm budget taken by detector ``kind``.

    Examples
    --------
    >>> budget_weight("cusum"), budget_weight("chi2"), budget_weight("ks")
    (8.0, 4.0, 1.0)
    """
    return entry(kind).budget_weight


def default_min_effect(kind: str) -> float:
    """The ``min_effect`` of detector ``kind`` when the configuration sets none.

    The missing-value test gets :data:`RATE_MIN_EFFECT` (an absolute rate: the
    window's share of missing values must exceed the reference's by that much),
    every other kind 0 (any significant change alarms).

    Examples
    --------
    >>> default_min_effect("missing"), default_min_effect("ks")
    (0.02, 0.0)
    """
    return entry(kind).min_effect


def default_min_effects(kinds: Sequence[str]) -> dict[str, float]:
    """The non-zero default ``min_effect`` of each of ``kinds``: what a column starts from.

    Examples
    --------
    >>> default_min_effects(default_detectors("numeric"))
    {'missing': 0.02}
    """
    return {k: default_min_effect(k) for k in kinds if default_min_effect(k) > 0}


def is_sequential(kind: str) -> bool:
    """Whether ``kind`` is fed the valid values one by one (a change detector, no p-value).

    Examples
    --------
    >>> [k for k in KINDS if is_sequential(k)]
    ['adwin', 'cusum', 'surprisal']
    """
    return entry(kind).sequential


def series_per_detector(kind: str) -> int:
    """Prometheus series one detector of ``kind`` exports (7, or 6 without a p-value).

    Examples
    --------
    >>> series_per_detector("ks"), series_per_detector("cusum")
    (7, 6)
    """
    return entry(kind).series


def make_detector(
    kind: str,
    profile: Profile,
    window: int,
    cadence: int,
    threshold: float = math.inf,
    min_effect: float = 0.0,
    adwin_clock: int = 32,
    name: str = "",
    *,
    release: float = 1.0,
    release_values: int = 0,
) -> Detector:
    """Build one detector of ``kind`` for a column with baseline ``profile``.

    With ``release_values`` > 0, its alarms are episodes with that hysteresis
    (:meth:`~detectors.base.Detector.configure_episodes`); 0 keeps the kind's own
    default.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.profile import NumericProfile
    >>> prof = NumericProfile.from_values(np.arange(1_000.0), bins=8)
    >>> make_detector("ks", prof, window=200, cadence=20, threshold=0.2).kind
    'ks'
    >>> make_detector("chi2", prof, 200, 20)
    Traceback (most recent call last):
    ...
    detectors.errors.DetectorError: column: detector 'chi2' does not apply to a numeric column; use one of ks, adwin, cusum, missing, out_of_range
    """
    valid = detectors_for(profile.kind)
    if kind not in valid:
        raise DetectorError(
            f"{name or 'column'}: detector {kind!r} does not apply to a {profile.kind} column; "
            f"use one of {', '.join(valid)}"
        )
    det = ENTRIES[kind].build(profile, BuildArgs(window, cadence, threshold, min_effect,
                                                 adwin_clock, name))
    if release_values:
        det.configure_episodes(release, release_values)
    return det


def reference_counts(kind: str, profile: Profile) -> np.ndarray | None:
    """Counts behind a detector's baseline probabilities (for calibration).

    ``None`` for the kinds that are not calibrated from bin counts.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.profile import NumericProfile
    >>> prof = NumericProfile.from_values(np.array([1.0, 2.0, np.nan, 4.0]))
    >>> reference_counts("missing", prof).tolist(), reference_counts("adwin", prof)
    ([3.0, 1.0], None)
    """
    return entry(kind).reference_counts(profile)


def can_false_alarm(kind: str, profile: Profile) -> bool:
    """Whether detector ``kind`` can raise a false alarm on data drawn from ``profile``.

    A missing-rate or unseen-rate test whose reference never shows its flag (no
    missing value; no category seen only once, so the category set looks closed)
    cannot: under the baseline distribution the flag has probability 0.  Such a
    detector is still calibrated, but it takes no share of the model's
    false-alarm budget, which would otherwise be wasted.  Its calibration
    (:mod:`detectors.rate_calibration`) allows for a small true rate the reference
    missed, and holds its expected false alarms under that posterior within the
    share it would have had (the bound is met with a margin: the count is whole).
    ``out_of_range`` always
    counts: any unbounded distribution can exceed the reference's range, even
    when its extreme values are tied.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.profile import NumericProfile
    >>> prof = NumericProfile.from_values(np.arange(100.0))
    >>> can_false_alarm("missing", prof), can_false_alarm("out_of_range", prof)
    (False, True)
    """
    return entry(kind).can_false_alarm(kind, profile)


def calibrate_detector(kind: str, profile: Profile, settings: DetectionSettings,
                       target_events: float, seed: int, name: str = "") -> Calibration:
    """Calibrate one detector of a column for ``target_events`` between false alarms.

    The detector is built as :func:`make_detector` builds it (with no threshold)
    and calibrated by its kind's own procedure.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.model import DetectionSettings
    >>> from detectors.profile import NumericProfile
    >>> prof = NumericProfile.from_values(np.random.default_rng(0).normal(size=2_000))
    >>> settings = DetectionSettings(window=200, cadence=20, calibration_values=100_000)
    >>> cal = calibrate_detector("ks", prof, settings, target_events=2_000, seed=1)
    >>> cal.method, 0.05 < cal.threshold < 0.5
    ('direct', True)
    """
    det = make_detector(kind, profile, settings.window, settings.cadence, math.inf, 0.0,
                        settings.adwin_clock, name, release=settings.release,
                        release_values=settings.release_values)
    return ENTRIES[kind].calibrate(det, profile, settings, target_events, seed)
