"""Two-sided CUSUM against the baseline mean: the fast detector of persistent mean shifts.

Page's cumulative sum is the optimal sequential test for a shift of the mean by
a known amount (Lorden, Moustakides): among all detectors with the same
false-alarm rate it has the smallest worst-case delay for that shift.  ADWIN and
the window tests pay for not knowing the pre-change mean; the CUSUM knows it
from the baseline and is 1.5-2 times faster on small shifts (see
``bench/results/detection.md``).

Each value is winsorised to the baseline's central 99.8 % (as ADWIN's input,
see :func:`detectors.profile.adwin_clip`), standardised with the baseline's
winsorised mean and standard deviation, ``z = (x - mean) / scale``, and

.. math::

    S^+_t = \\max(0, S^+_{t-1} + z_t - k), \\qquad S^-_t = \\max(0, S^-_{t-1} - z_t - k);

an alarm is raised when either sum crosses the threshold ``h``.  Unlike the
textbook CUSUM, the sums do not restart from 0 after an alarm: each one stays
above ``h`` (capped at ``2h``) for as long as the shift lasts, so a persistent
drift raises one alarm and keeps the detector in the alarm state, instead of an
alarm every few dozen values; a sum can raise its next alarm after it has
returned to 0.  The first alarm is the textbook one, so detection delays are
unchanged, and the alarms under no drift are exactly the excursions that
calibration counts.  ``k`` (the *allowance*, in baseline standard deviations) is half the
shift the test is tuned for: 0.25 makes it optimal for 0.5σ shifts and still
near-optimal for 1σ.  ``h`` comes from the model's false-alarm budget by
simulation (:func:`calibrate_cusum`), so no distributional assumption is made.

The kernel (:mod:`detectors._cusum_kernel`) is compiled (numba), branch-free, and runs over
a whole batch at about 5 ns per value; the state is seven numbers.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from detectors._cusum_kernel import (
    _EP_OPEN,
    _EWMA,
    _N_ALARMS,
    _N_NEG,
    _N_POS,
    _PEAK,
    _S_NEG,
    _S_POS,
    MEAN_HOLD_BLOCKS,
    MEAN_HOLD_LOG_LEVEL,
    _cusum_kernel,
    _excursion_kernel,
    cusum_episode_count,
)
from detectors.base import (
    EMPTY_POSITIONS,
    Detector,
    HeldAlarm,
    as_float_batch,
    check_clip,
    check_release,
)
from detectors.errors import DetectorError
from detectors.window import category_codes, smoothed_log_probs

__all__ = ["CUSUM", "MEAN_HOLD_BLOCKS", "MEAN_HOLD_LOG_LEVEL", "SurprisalCUSUM",
           "cusum_episode_count", "cusum_excursion_maxima", "cusum_excursions",
           "surprisal_table"]

#: default allowance, in baseline standard deviations: optimal for a 0.5σ shift
CUSUM_K = 0.25
# the kernel and its state indices: detectors._cusum_kernel
#: a sum never exceeds this multiple of the threshold, so that it falls back below the
#: threshold (and re-arms at 0) within about ``CAP_FACTOR * h / k`` values of a drift's end
CAP_FACTOR = 2.0
#: the moving average of an episode is released no lower than this many of its standard
#: deviations under no shift (the two-sided 99th percentile)
EWMA_RELEASE_Z = 2.576


def cusum_excursion_maxima(z: np.ndarray, k: float = CUSUM_K) -> np.ndarray:
    """Heights of the excursions of a two-sided CUSUM over standardised values ``z``.

    A sum raises an alarm when it crosses ``h`` and can raise the next one only
    after it has returned to 0 (see :class:`CUSUM`), so the number of excursions
    higher than ``h`` is the number of alarms a CUSUM with threshold ``h`` raises
    on ``z``, but for the cap at ``2h``: a capped sum returns to 0 sooner, so an
    excursion above ``2h`` can count as two alarms, rare at calibrated thresholds.
    One pass thus gives the false-alarm rate of every threshold at once, which is
    what calibration needs.

    Examples
    --------
    >>> import numpy as np
    >>> cusum_excursion_maxima(np.array([1.0, 1.0, -2.0, 0.0, -1.0, 3.0]), k=0.5)
    array([1. , 1.5])
    """
    return cusum_excursions(z, k)[0]


def cusum_excursions(z: np.ndarray, k: float = CUSUM_K, side: int = 0,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heights of the excursions (as :func:`cusum_excursion_maxima`), and the index in
    ``z`` of each one's first value above 0 and of its return to 0 (``side`` 1 or -1: of
    the upper or the lower sum only)."""
    z = np.ascontiguousarray(z, dtype=np.float64)
    out = np.empty(z.size + 1, dtype=np.float64)
    start = np.empty(z.size + 1, dtype=np.int64)
    end = np.empty(z.size + 1, dtype=np.int64)
    m = _excursion_kernel(z, float(k), out, start, end, int(side))
    return out[:m].copy(), start[:m].copy(), end[:m].copy()


def _check_number(value: Any, what: str, low: float, strict: bool = False,
                  allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DetectorError(f"CUSUM: {what} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) and not (allow_inf and v == math.inf):
        raise DetectorError(f"CUSUM: {what} must be finite, got {value!r}")
    if v < low or (strict and v == low):
        raise DetectorError(f"CUSUM: {what} must be {'>' if strict else '>='} {low}, "
                            f"got {value!r}")
    return v


class CUSUM(HeldAlarm, Detector):
    r"""Two-sided CUSUM of standardised values against a known (baseline) mean.

    Parameters
    ----------
    mean, scale : float
        Baseline mean and standard deviation the values are standardised with
        (``scale`` > 0).
    threshold : float, default inf
        Alarm when :math:`\max(S^+, S^-)` exceeds it (``h``).  ``inf`` never alarms.
    k : float, default 0.25
        Allowance, in units of ``scale``.
    min_effect : float, default 0.0
        Mean shift, in baseline standard deviations, too small to be worth an
        alarm: the allowance used is ``k + min_effect``, so a shift of
        ``min_effect`` moves the sums exactly as no shift moves them without it,
        and alarms no more often than the calibrated false-alarm rate; smaller
        shifts alarm less often still.
    clip : (float, float), optional
        Winsorise values to ``[low, high]`` before standardising.
    hold : int, default 0
        Episodes (see :meth:`configure_episodes`): a crossing opens an episode,
        which stays open while a sum has not returned to 0 since crossing or the
        moving average of the values is more than ``release`` × k away from the mean
        (see :meth:`configure_episodes`) or the values since it opened differ significantly
        from the baseline (:attr:`mean_hold`, MEAN_HOLD_LOG_LEVEL), and closes after ``hold``
        further values; crossings in an open
        episode are not alarms.  0: every crossing is an alarm.
    name : str, optional
        Feature name, used in error messages.
    threshold_down : float, optional
        A threshold of its own for :math:`S^-` (its share of the budget differs from
        :math:`S^+`'s: the concept detector); the statistic reads :math:`S^-` scaled by
        ``threshold / threshold_down``.  None: ``threshold``.

    Attributes
    ----------
    statistic : float
        :math:`\max(S^+, S^-)` now, at most ``2h`` (while an alarm is held: at
        least the value that raised it).
    drift_detected : bool
        Whether a sum is above ``h``, or an alarm was raised less than ``hold``
        values ago.
    direction : int
        +1 when :math:`S^+` is the larger sum (the mean looks higher than the
        baseline), -1 when :math:`S^-` is, 0 when both are 0.
    width : int
        Values since the larger sum last left 0: the evidence's run length, an
        estimate of how long ago a change began.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> det = CUSUM(mean=0.0, scale=1.0, threshold=12.0, name="latency")
    >>> det.update(rng.normal(0.0, 1.0, 1000))
    array([], dtype=int64)
    >>> det.update(rng.normal(0.5, 1.0, 1000))  # one alarm for the whole shift
    array([44])
    >>> det.direction, det.drift_detected, round(det.statistic, 1)
    (1, True, 23.1)
    >>> det.update(rng.normal(0.0, 1.0, 1000)), det.drift_detected  # back to normal
    (array([], dtype=int64), False)
    """

    kind: ClassVar[str] = "cusum"
    input_kind: ClassVar[str] = "numeric"
    column_types: ClassVar[tuple[str, ...]] = ("numeric",)
    budget_weight: ClassVar[float] = 8.0
    sequential: ClassVar[bool] = True

    def __init__(self, mean: float = 0.0, scale: float = 1.0, threshold: float = math.inf,
                 k: float = CUSUM_K, min_effect: float = 0.0,
                 clip: tuple[float, float] | None = None, hold: int = 0,
                 name: str | None = None, threshold_down: float | None = None) -> None:
        self.mean = _check_number(mean, "mean", -math.inf)
        self.scale = _check_number(scale, "scale", 0.0, strict=True)
        self.h = _check_number(threshold, "threshold", 0.0, strict=True, allow_inf=True)
        self.h_down = None if threshold_down is None else _check_number(
            threshold_down, "threshold_down", 0.0, strict=True, allow_inf=True)
        self.k = _check_number(k, "k", 0.0)
        self.min_effect = _check_number(min_effect, "min_effect", 0.0)
        self.clip = check_clip(clip, "CUSUM")
        if isinstance(hold, bool) or not isinstance(hold, (int, np.integer)) or hold < 0:
            raise DetectorError(f"CUSUM: hold must be an integer >= 0, got {hold!r}")
        self.hold = int(hold)
        #: the release level may exceed k: set where k is smaller than the moving average's
        #: noise (the concept detector's 2-point CUSUM: k 0.03σ against a 99th percentile of
        #: 0.08σ over a span of 1,000), whose episodes would otherwise never close
        self.release_above_allowance = False
        #: with ``hold``: the release level of the moving average, as a share of ``k``
        self.release = 1.0
        self.name = name
        # the two sums, the episode's peak, the moving average
        self._f = np.zeros(4, dtype=np.float64)
        # run lengths, alarms, armed flags, episode open, values without evidence
        self._i = np.array([0, 0, 0, 1, 1, 0, 0], dtype=np.int64)
        self._counts = np.zeros(3, dtype=np.int64)  # kernel output: hold counts, closes
        # the values since the episode opened (see MEAN_HOLD_LOG_LEVEL): the current block's
        # sum, the ring of the newest blocks' sums, the same of z² - 1; the block's count,
        # blocks in the ring, next slot, whether the hold is on
        self._hf = np.zeros(2 * (1 + MEAN_HOLD_BLOCKS), dtype=np.float64)
        self._hi = np.array([0, 0, 0, 1], dtype=np.int64)
        self._drift = False
        self._since = -1  # valid values since the last alarm; -1: none yet
        self._det_stat = 0.0
        self.alarm_statistics = np.empty(0)

    @property
    def allowance(self) -> float:
        """The ``k`` in use: ``k + min_effect``."""
        return self.k + self.min_effect

    # -- the protocol -------------------------------------------------------
    def update(self, values: np.ndarray) -> np.ndarray:
        """Feed a batch; return the int64 positions in it where an alarm was raised."""
        arr = np.ascontiguousarray(as_float_batch(values, self.name or "values"))
        if arr.size == 0:
            self._drift = False
            self.alarm_statistics = np.empty(0)
            self.close_positions = EMPTY_POSITIONS
            return EMPTY_POSITIONS.copy()
        out = np.empty(arr.size, dtype=np.int64)
        out_stat = np.empty(arr.size, dtype=np.float64)
        out_close = np.empty(arr.size, dtype=np.int64)
        lo, hi = self.clip if self.clip is not None else (-math.inf, math.inf)
        counts = self._counts
        m = _cusum_kernel(arr, self.mean, 1.0 / self.scale, self.allowance, self.h,
                          CAP_FACTOR * self.h, lo, hi, self._f, self._i, out, out_stat, counts,
                          self.hold, out_close, self.release_level, self._lambda, self._hf,
                          self._hi, self._c4inv, self._hn, CAP_FACTOR * self._hn, self._rn)
        positions = out[:m].copy()
        self.close_positions = out_close[:int(counts[2])].copy()
        self.alarm_statistics = out_stat[:m].copy()
        self._drift = m > 0
        if self.hold:
            self._advance_hold(int(counts[0]), int(counts[1]), self.alarm_statistics)
        return positions

    @property
    def _hn(self) -> float:
        """The lower sum's threshold."""
        return self.h if self.h_down is None else self.h_down

    @property
    def _rn(self) -> float:
        """The lower sum in the upper's units: ``h / h_down`` (1 without its own)."""
        hn = self._hn
        return self.h / hn if math.isfinite(self.h) and math.isfinite(hn) else 1.0

    def _sums(self) -> tuple[float, float]:
        """The two sums, the lower one in the upper's units."""
        return float(self._f[_S_POS]), float(self._f[_S_NEG]) * self._rn

    @property
    def _c4inv(self) -> float:
        """``1 / c⁴``, ``c`` the largest standardised value (0 without a clip)."""
        if self.clip is None:
            return 0.0
        c = max(abs(self.clip[0] - self.mean), abs(self.clip[1] - self.mean)) / self.scale
        return 1.0 / c ** 4 if c > 0 else 0.0

    @property
    def mean_hold(self) -> bool:
        """Whether an open episode holds while the mean of the values since it opened is
        significantly away from the baseline's (see MEAN_HOLD_LOG_LEVEL; on by default)."""
        return bool(self._hi[3])

    @mean_hold.setter
    def mean_hold(self, on: bool) -> None:
        self._hi[3] = int(bool(on))

    @property
    def _lambda(self) -> float:
        """Weight of the newest value in the moving average (span ``hold``)."""
        return 2.0 / (self.hold + 1.0) if self.hold else 0.0

    @property
    def release_level(self) -> float:
        """The moving average's release level: ``release`` × k, but never below the
        average's 99th percentile (two-sided) under no shift, 2.58 × √(λ / (2 − λ)), nor
        above k (unless :attr:`release_above_allowance`).  With a short release stretch the
        average is noisy and a lower level would keep false episodes open."""
        lam = self._lambda
        floor = EWMA_RELEASE_Z * math.sqrt(lam / (2.0 - lam))
        level = max(self.release * self.allowance, floor)
        return level if self.release_above_allowance else min(level, self.allowance)

    @property
    def statistic(self) -> float:
        s = max(self._sums())
        if self._holding:
            s = max(s, self._det_stat)
        return s if math.isfinite(s) else 0.0

    @property
    def threshold(self) -> float:
        return self.h

    @property
    def drift_detected(self) -> bool:
        """With ``hold``: whether an episode is open; without: whether this batch alarmed
        or a sum is above ``h``."""
        if self.hold:
            return bool(self._i[_EP_OPEN])
        return self._drift or bool(max(self._sums()) > self.h)

    def configure_episodes(self, release: float, release_values: int) -> None:
        """Hysteresis in the allowance: the episode is open while a sum has not returned to
        0 since crossing, or while the moving average of the standardised values (span
        ``release_values``) is more than ``release`` × k away from the baseline mean.  A
        shift smaller than k crosses the threshold only now and then; while it stays
        above ``release`` × k (0.125σ with the defaults) its crossings are one episode.
        With :attr:`mean_hold`, it also holds while the values since it opened have a mean
        significantly away from the baseline's or a variance above it.  The episode closes
        after ``release_values`` values without any of these."""
        self.release, self.hold = check_release(release, release_values,
                                                self.name or self.kind)

    @property
    def episode_peak(self) -> float:
        return float(self._f[_PEAK])

    @property
    def _n_alarms(self) -> int:
        return int(self._i[_N_ALARMS])

    @property
    def direction(self) -> int:
        sp, sn = self._sums()
        return 0 if sp == sn == 0.0 else (1 if sp >= sn else -1)

    @property
    def width(self) -> int:
        sp, sn = self._sums()
        return int(self._i[_N_POS] if sp >= sn else self._i[_N_NEG])

    def summary(self) -> dict[str, Any]:
        s = super().summary()
        s["direction"] = self.direction
        return s

    # -- state -------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "mean": self.mean, "scale": self.scale,
            "threshold": None if math.isinf(self.h) else self.h,
            "k": self.k, "min_effect": self.min_effect,
            "clip": list(self.clip) if self.clip is not None else None,
            "hold": self.hold, "release": self.release, "name": self.name,
            "sums": [float(v) for v in self._f[:2]], "runs": [int(v) for v in self._i],
            "peak": float(self._f[_PEAK]),
            "moving_average": float(self._f[_EWMA]),
            "mean_hold": [*(int(v) for v in self._hi[:3]), *(float(v) for v in self._hf)],
            "drift_detected": self._drift, "since_detection": self._since,
            "detection_statistic": self._det_stat,
        } | ({} if self.h_down is None else {
            "threshold_down": None if math.isinf(self.h_down) else self.h_down})

    @staticmethod
    def _shared_kwargs(state: dict[str, Any]) -> dict[str, Any]:
        """Constructor arguments every CUSUM's state holds."""
        thr = state["threshold"]
        down = {} if "threshold_down" not in state else {  # states before it: none
            "threshold_down": math.inf if state["threshold_down"] is None
            else state["threshold_down"]}
        return {"threshold": math.inf if thr is None else thr, "k": state["k"],
                "min_effect": state.get("min_effect", 0.0),
                "hold": int(state.get("hold", 0)), "name": state.get("name"), **down}

    @classmethod
    def _kwargs_from_state(cls, state: dict[str, Any]) -> dict[str, Any]:
        """Constructor arguments saved in a state."""
        return {**cls._shared_kwargs(state), "mean": state["mean"], "scale": state["scale"],
                "clip": state.get("clip")}

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> CUSUM:
        try:
            det = cls(**cls._kwargs_from_state(state))
        except DetectorError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise DetectorError(f"{cls.kind} state: malformed ({exc!r})") from None
        det._restore_sums(state)
        return det

    def _restore_sums(self, state: dict[str, Any]) -> None:
        """The running part of a state: sums, run counters, alarm and hold."""
        try:
            sums = [float(v) for v in state["sums"]]
            runs = [int(v) for v in state["runs"]]
            if len(sums) != 2 or len(runs) not in (5, 7) or min(sums) < 0 or min(runs) < 0:
                raise DetectorError(f"{self.kind} state: sums/runs malformed")
            if len(runs) == 5:  # written before episodes: open while a sum is above h
                runs += [int(max(sums) > self.h or bool(state.get("drift_detected"))), 0]
            self.release = float(state.get("release", 1.0))
            self._f[:2] = sums
            self._f[_PEAK] = float(state.get("peak", max(sums)))
            ew = float(state.get("moving_average", 0.0))
            if not math.isfinite(ew):
                raise DetectorError(f"{self.kind} state: moving_average malformed")
            self._f[_EWMA] = ew
            hold = state.get("mean_hold")  # states before the hold: none yet
            if hold is not None:
                hold = [float(v) for v in hold]
                if (len(hold) != 3 + self._hf.size or not all(map(math.isfinite, hold))
                        or hold[0] < 0 or not 0 <= hold[1] <= MEAN_HOLD_BLOCKS
                        or not 0 <= hold[2] < MEAN_HOLD_BLOCKS):
                    raise DetectorError(f"{self.kind} state: mean_hold malformed")
                self._hi[:3] = [int(v) for v in hold[:3]]
                self._hf[:] = hold[3:]
            self._i[:] = runs
            self._drift = bool(state.get("drift_detected", False))
            self._since = int(state.get("since_detection", -1))
            self._det_stat = float(state.get("detection_statistic", 0.0))
        except DetectorError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise DetectorError(f"{self.kind} state: malformed ({exc!r})") from None


def surprisal_table(probs: Any, ref_count: int) -> tuple[np.ndarray, float, float, tuple[float, float]]:
    """Surprisal of each category code, and its baseline mean, scale and winsorising range.

    The surprisal of a category is ``-log p`` with ``p`` smoothed as the chi2
    test smooths it (``(count + 0.5) / (n + 0.5 K)``), so a category absent
    from the baseline has a large but finite one.  Values are winsorised to
    the surprisal range of the categories the baseline holds (an unseen
    category counts as the rarest seen one; the unseen-rate test is the
    detector for those), and the mean and standard deviation are taken under
    the baseline frequencies after winsorising.  A column with one category
    gets scale 1 (its standardised values are all 0).

    >>> table, mean, scale, clip = surprisal_table([0.5, 0.5, 0.0], 1000)
    >>> [round(float(v), 2) for v in table], round(mean, 2), scale, [round(v, 2) for v in clip]
    ([0.69, 0.69, 7.6], 0.69, 1.0, [0.69, 0.69])
    """
    p = np.asarray(probs, dtype=np.float64)
    p = p / p.sum()
    table = -smoothed_log_probs(p, ref_count)
    held = table[p > 0]
    clip = (float(held.min()), float(held.max()))
    w = np.clip(table, *clip)
    mean = float(p @ w)
    var = float(p @ (w - mean) ** 2)
    sd = math.sqrt(var) if var > 0 else 0.0
    return table, mean, (sd if sd > 1e-12 * max(abs(mean), 1.0) else 1.0), clip


class SurprisalCUSUM(CUSUM):
    r"""Two-sided CUSUM of the surprisal of categories: the sequential test of a categorical.

    Each category is scored by its surprisal under the baseline, ``-log p``
    (see :func:`surprisal_table`), and a :class:`CUSUM` runs on the scores.  A
    rise in the mean surprisal means that rarer categories are becoming
    common: the distribution is flattening, moving mass away from the
    baseline's frequent categories (the typical shape of a categorical drift);
    a fall means it is concentrating on the frequent ones (a default value
    flooding in).  Like the numeric CUSUM it accumulates evidence value by
    value, so it catches a persistent shift sooner than a window test can;
    the multi-scale chi2 test covers the changes that leave the mean
    surprisal alone.  The threshold is calibrated by simulation from the
    baseline frequencies (:func:`detectors.calibration.calibrate_cusum`).

    Parameters
    ----------
    categories : sequence of str
        The baseline's categories; any other value counts as the *other* code.
    probs : array
        Baseline frequency of each category plus one for *other*.
    threshold, k, min_effect, hold, name :
        As for :class:`CUSUM` (``min_effect`` in baseline standard deviations
        of the surprisal).
    ref_count : int
        Size of the baseline (for the smoothing of absent categories).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> cats, p = ["a", "b", "c", "d"], np.array([0.6, 0.2, 0.15, 0.05])
    >>> det = SurprisalCUSUM(cats, [*p, 0.0], threshold=12.0, ref_count=10_000)
    >>> det.update(rng.choice(cats, 2000, p=p)).size
    0
    >>> det.update(rng.choice(cats, 2000, p=[0.4, 0.3, 0.2, 0.1]))  # flattening
    array([35])
    >>> det.direction
    1
    """

    kind: ClassVar[str] = "surprisal"
    input_kind: ClassVar[str] = "categorical"
    column_types: ClassVar[tuple[str, ...]] = ("categorical",)
    budget_weight: ClassVar[float] = 4.0

    def __init__(self, categories: Any, probs: Any, threshold: float = math.inf,
                 k: float = CUSUM_K, min_effect: float = 0.0, ref_count: int = 0,
                 hold: int = 0, name: str | None = None) -> None:
        self.categories = [str(c) for c in categories]
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        if (p.size != len(self.categories) + 1 or not np.isfinite(p).all() or (p < 0).any()
                or not p.sum() > 0):
            raise DetectorError(f"{name or 'surprisal'}: needs one probability >= 0 per "
                                f"category plus one for 'other', not all 0")
        self.probs = p / p.sum()
        self.ref_count = int(ref_count)
        table, mean, scale, clip = surprisal_table(self.probs, self.ref_count)
        super().__init__(mean, scale, threshold, k, min_effect, clip, hold, name)
        self.table = table
        self._codes = {c: i for i, c in enumerate(self.categories)}

    def update(self, values: Any) -> np.ndarray:
        """Feed a batch of categories (strings, None = missing, or integer codes)."""
        codes, pos = category_codes(values, self._codes, self.name)
        hits = self.update_codes(codes)
        return pos[hits] if hits.size else hits

    def update_codes(self, codes: np.ndarray) -> np.ndarray:
        """Feed category codes (``0 .. len(categories)``, the last one *other*)."""
        return super().update(self.table[codes])

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "categories": self.categories,
                "probs": self.probs.tolist(), "ref_count": self.ref_count}

    @classmethod
    def _kwargs_from_state(cls, state: dict[str, Any]) -> dict[str, Any]:
        # mean, scale and clip follow from the frequencies
        return {**cls._shared_kwargs(state), "categories": state["categories"],
                "probs": state["probs"], "ref_count": state["ref_count"]}
