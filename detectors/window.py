"""Sliding-window tests against a baseline, vectorised over batches.

All window tests share one engine.  Each value is mapped to a *bin* (a quantile
bin of a numeric baseline, a category, or a 0/1 flag).  The window of the last
``window`` values is kept as a ring of ``window / cadence`` chunk histograms,
so memory is ``(window / cadence) × bins`` integers whatever the stream length.
A batch is processed by one compiled pass (:mod:`detectors._window_kernel`)
that counts each value into the unfinished chunk, swaps each completed chunk
into the ring (a circular buffer) while keeping the window's histogram up to
date, and computes the statistic at each test point; the cost per call is a few
microseconds plus a few nanoseconds per value, whatever the window.

A test runs each time a chunk of ``cadence`` values completes and the window is
full.  An alarm opens an *episode* when the statistic exceeds the threshold (and
the effect size reaches ``min_effect``).  The episode stays open while the
evidence persists: it closes only once no test has shown a statistic above the
*release level* (``release`` × threshold, and ``release`` × ``min_effect`` for
the effect) for
``release_values`` values (hysteresis); a rate test's episode also holds while the flags
counted since it opened are significantly above the baseline rate (see
:data:`detectors._window_kernel.RATE_HOLD_LOG_LEVEL`), so a rate shift below the threshold,
which crosses it now and then, is one episode; a KS test's while the values since it
opened are significantly different from the reference (see
:data:`detectors._window_kernel.KS_HOLD_LOG_LEVEL`).  A persistent drift, or a statistic
hovering around the threshold, is therefore one alarm, not one per test or per
crossing.  The false-alarm rate is the rate of episodes, which is what
:mod:`detectors.calibration` calibrates.  ``release=1`` with
``release_values=cadence`` gives one alarm per up-crossing of the threshold.

Detectors
---------
``ks``
    Kolmogorov–Smirnov distance between the window's distribution and the
    baseline's, evaluated on the baseline's quantile bin edges (ties and discrete
    values are exact bins, so they do not break the test).
``chi2``
    Likelihood-ratio chi-square (G) test of the category frequencies against
    the baseline's top categories plus one *other* bucket, which also receives
    categories never seen in the baseline; multi-scale: the largest G over the
    newest 10 %, 20 %, 40 % and 100 % of the window.
``missing`` / ``out_of_range`` / ``unseen``
    One-sided tests of the rate of a flag in the window (missing value; numeric
    value outside the baseline's [min, max]; category absent from the baseline)
    against its baseline rate.
"""

from __future__ import annotations

import math
from itertools import repeat
from typing import Any, ClassVar

import numpy as np
from scipy import special, stats

from detectors import _window_kernel as _wk
from detectors.base import EMPTY_POSITIONS, Detector, as_float_batch, check_release
from detectors.errors import DetectorError

_NO_CODES = np.empty(0, dtype=np.int64)
_NO_REF = np.empty(0, dtype=np.float64)
_NO_HOLD = np.zeros((1, 1), dtype=np.int64)


def _check_window(window: int, cadence: int) -> tuple[int, int]:
    for key, val in (("window", window), ("cadence", cadence)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise DetectorError(f"{key} must be a positive integer, got {val!r}")
    if cadence > window or window % cadence:
        raise DetectorError(
            f"window ({window}) must be a multiple of cadence ({cadence}); "
            f"for example window={cadence * max(1, round(window / cadence))}"
        )
    return int(window), int(cadence)


def _check_probs(probs: Any) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.size < 1 or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise DetectorError("baseline probabilities must be finite, non-negative and not all zero")
    return p / p.sum()


def episode_steps(stats_: np.ndarray, effects: np.ndarray, threshold: float, min_effect: float,
                  release_level: float, release_values: int, cadence: int, active: bool,
                  ist: np.ndarray, fst: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """The episode logic of the kernel over given test statistics (the generic path).

    Returns masks of the tests that opened and closed an episode, and the final
    state; ``ist[3]`` (values without evidence) and ``fst[0]`` (peak) are updated.
    """
    opened = np.zeros(stats_.size, dtype=bool)
    closed = np.zeros(stats_.size, dtype=bool)
    quiet, peak = int(ist[3]), float(fst[0])
    release_effect = min_effect * (release_level / threshold) if threshold > 0 else 0.0
    for j, (st, eff) in enumerate(zip(stats_.tolist(), effects.tolist(), strict=True)):
        if not active:
            if st > threshold and eff >= min_effect:
                opened[j], active, quiet, peak = True, True, 0, st
        elif st > release_level and eff >= release_effect:
            quiet, peak = 0, max(peak, st)
        else:
            quiet += cadence
            if quiet >= release_values:
                closed[j], active, quiet = True, False, 0
    ist[3], fst[0] = quiet, peak
    return opened, closed, active


class WindowTest(Detector):
    """Engine shared by the window tests; not a detector by itself."""

    kind: ClassVar[str] = ""
    has_p_value: ClassVar[bool] = True
    n_bins_extra: ClassVar[int] = 0

    @property
    def lattice_step(self) -> float | None:
        """Spacing of the values the statistic can take, if they lie on a lattice from 0."""
        return None

    def __init__(
        self,
        probs: Any,
        window: int = 1000,
        cadence: int = 50,
        threshold: float = math.inf,
        min_effect: float = 0.0,
        ref_count: int = 0,
        name: str = "",
    ) -> None:
        self.window, self.cadence = _check_window(window, cadence)
        self.probs = _check_probs(probs)
        if not (isinstance(threshold, (int, float)) and not math.isnan(threshold)):
            raise DetectorError(f"threshold must be a number, got {threshold!r}")
        if not (isinstance(min_effect, (int, float)) and min_effect >= 0):
            raise DetectorError(f"min_effect must be a number >= 0, got {min_effect!r}")
        self._threshold = float(threshold)
        self.min_effect = float(min_effect)
        self.ref_count = int(ref_count)
        self.name = name
        self.n_bins = self.probs.size
        self._chunks = self.window // self.cadence
        # the ring of chunk histograms, a circular buffer; _ist = [next slot, chunks held,
        # values in the partial chunk]; _win = sum of the ring (the window's histogram)
        self._buf = np.zeros((self._chunks, self.n_bins), dtype=np.int64)
        self._win = np.zeros(self.n_bins, dtype=np.int64)
        self._partial = np.zeros(self.n_bins, dtype=np.int64)
        # [3]: values without evidence in an episode; [4], [5], [6]: chunks and flags in
        # _hold, its next slot (rate tests: the newest chunks since the episode opened)
        self._ist = np.zeros(7, dtype=np.int64)
        self._hold = np.zeros(_wk.RATE_HOLD_WINDOWS * self._chunks if self._holds else 1,
                              dtype=np.int64)
        # KS tests: the histograms of the newest chunks since the episode opened (a ring of
        # KS_HOLD_WINDOWS windows, slots _ist[4] and _ist[6] as above) and their sum (last row)
        self._ks_hold = np.zeros((_wk.KS_HOLD_WINDOWS * self._chunks + 1, self.n_bins)
                                 if self._ks_holds else (1, 1), dtype=np.int64)
        self._fst = np.zeros(1, dtype=np.float64)  # [0]: the open episode's peak statistic
        self.release = 1.0
        self.release_values = self.cadence
        self.close_positions = EMPTY_POSITIONS
        self._stat = 0.0
        self._effect = 0.0
        self._active = False
        self._n_alarms = 0
        self.alarm_statistics = np.empty(0)
        #: chunk counts of the windows a test looks at (only the chi2 test has several)
        self._scales = np.array([self._chunks], dtype=np.int64)
        self._prepare_reference()
        self._kernel_kind = self._resolve_kernel_kind()

    def _prepare_reference(self) -> None:
        """Precompute reference arrays the statistic needs (subclasses)."""

    def configure_episodes(self, release: float, release_values: int) -> None:
        """Set the hysteresis: an episode closes after ``release_values`` values (rounded up
        to whole tests) in which no test showed a statistic above ``release`` × threshold."""
        release, release_values = check_release(release, release_values, self.name)
        self.release = release
        self.release_values = max(-(-release_values // self.cadence), 1) * self.cadence

    @property
    def _release_level(self) -> float:
        return self.release * self._threshold

    #: whether the flags since an episode opened can hold it (rate tests)
    _holds: ClassVar[bool] = False
    #: whether the values since an episode opened can hold it (KS tests)
    _ks_holds: ClassVar[bool] = False

    @property
    def _hold_m(self) -> float:
        """Size of the reference against which the values since an episode opened hold it
        (KS tests, see :data:`detectors._window_kernel.KS_HOLD_LOG_LEVEL`); -1: no such
        hold (also without a known reference size)."""
        return float(self.ref_count) if self._ks_holds and self.ref_count > 0 else -1.0

    @property
    def _hold_p0(self) -> float:
        """Baseline rate against which the flags since an episode opened hold it (rate
        tests, see :data:`detectors._window_kernel.RATE_HOLD_LOG_LEVEL`); -1: no such hold."""
        return -1.0

    @property
    def episode_peak(self) -> float:
        """The largest statistic of the open (or last) episode."""
        return float(self._fst[0])

    # -- the statistic (subclasses) ----------------------------------------
    def _statistics(self, hists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Statistic and effect size of each window histogram (rows)."""
        raise NotImplementedError

    def log_p_values(self, statistics: np.ndarray) -> np.ndarray:
        """Nominal log p-value of each statistic value (used for p-values and calibration)."""
        raise NotImplementedError

    def _bins(self, values: Any) -> tuple[np.ndarray, np.ndarray]:
        """Map a raw batch to (bin indices, their positions in the batch)."""
        raise NotImplementedError

    # -- the engine ------------------------------------------------------
    def _resolve_kernel_kind(self) -> int:
        """Which statistic the compiled kernel computes (GENERIC: ``_statistics`` in Python)."""
        stat = type(self)._statistics
        if stat is KSWindow._statistics:
            return _wk.KIND_KS
        if stat is ChiSquareWindow._statistics:
            return _wk.KIND_CHI2
        if stat is RateWindow._statistics:
            return _wk.KIND_RATE
        return _wk.KIND_GENERIC

    def _kernel_reference(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(reference array, probabilities, base rate) the kernel's statistic reads."""
        kind = self._kernel_kind
        if kind == _wk.KIND_KS:
            return self._ref_cdf, _NO_REF, 0.0  # type: ignore[attr-defined]
        if kind == _wk.KIND_CHI2:
            return self._log_p, self.probs, 0.0  # type: ignore[attr-defined]
        if kind == _wk.KIND_RATE:
            return _NO_REF, _NO_REF, float(self.base_rate)  # type: ignore[attr-defined]
        return _NO_REF, _NO_REF, 0.0

    def _as_codes(self, bins: Any) -> np.ndarray:
        """``bins`` as a writable, contiguous 1-D int64 array (integers and booleans only)."""
        b = np.asarray(bins)
        if b.dtype != np.int64:
            if b.dtype.kind not in "biu" or not np.can_cast(b.dtype, np.int64, "safe"):
                raise TypeError(f"{self.name or 'bins'}: bins must be integers, got dtype "
                                f"{b.dtype}")
            b = b.astype(np.int64)
        if b.ndim == 0:
            b = b.reshape(1)
        elif b.ndim != 1:
            raise ValueError(f"{self.name or 'bins'}: bins must be 1-D, got shape {b.shape}")
        if not (b.flags.c_contiguous and b.flags.writeable):
            b = np.array(b)
        return b

    def _bad_bins(self) -> DetectorError:
        return DetectorError(f"{self.name or 'window'}: bins must be in 0 .. {self.n_bins - 1}")

    def update(self, values: Any) -> np.ndarray:
        bins, positions = self._bins(values)
        return self.update_bins(bins, positions)

    def update_bins(self, bins: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
        """Feed pre-binned values; ``positions`` maps them to batch positions."""
        if np.size(bins) == 0:
            self.alarm_statistics = np.empty(0)
            self.close_positions = EMPTY_POSITIONS
            return EMPTY_POSITIONS
        return self._update_codes(self._as_codes(bins), positions, 0, -1)

    def update_constant(self, n: int, bin: int = 0) -> np.ndarray:
        """Feed ``n`` values all in bin ``bin`` (a run of zero flags) without materialising them.

        Same result and state as ``update_bins(np.full(n, bin))``; returns the
        indices (``0 .. n - 1``) at which alarms were raised.
        """
        n, b = int(n), int(bin)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if not 0 <= b < self.n_bins:
            raise self._bad_bins()
        if n == 0:
            self.alarm_statistics = np.empty(0)
            self.close_positions = EMPTY_POSITIONS
            return EMPTY_POSITIONS
        if self._kernel_kind == _wk.KIND_GENERIC:
            return self.update_bins(np.full(n, b, dtype=np.int64))
        if b == 0 and self._kernel_kind == _wk.KIND_RATE and self._quiet_run(n):
            return EMPTY_POSITIONS
        return self._run(_NO_CODES, n, b, 0, -1, None)

    def _quiet_run(self, n: int) -> bool:
        """Feed ``n`` zero flags to a rate test, without the kernel, where it would only move
        the ring on: no episode open, every chunk of the full ring and the open chunk without
        a flag, and a window without a flag unable to open one.  Then each chunk completed
        replaces a chunk of ``cadence`` zero flags by the same, every test sees the same
        window (rate 0), and the kernel would change nothing else but the ring's next slot,
        the open chunk's count and the last statistic: set here as it sets them (same state,
        same results; tests/detectors/test_window_quiet.py).  False: nothing done.

        A kernel call costs ~5 µs however short the run, and most batches hand each rate
        test of each column (missing, invalid, out of range...) a run of zero flags."""
        if self._active:
            return False
        ist, win, partial, cadence = self._ist, self._win, self._partial, self.cadence
        nch = self._chunks
        # (each chunk of the ring holds ``cadence`` values: a window of nch * cadence zero
        # flags is a ring of chunks of zero flags)
        if ist[1] != nch or win[0] != nch * cadence or partial[1] != 0:
            return False
        stat = 0.0  # the kernel's statistic of the window, win[1] / w, with win[1] = 0
        effect = stat - float(self.base_rate)  # type: ignore[attr-defined]
        if (stat > self._threshold) and (effect >= self.min_effect):
            return False  # (a threshold below 0) the kernel opens an episode
        pn = int(ist[2]) + n
        tests = pn // cadence
        ist[0] = (int(ist[0]) + tests) % nch
        ist[2] = partial[0] = pn % cadence  # (partial[0] was ist[2]: no flag in it)
        if tests:
            self._stat, self._effect = stat, effect
        self.alarm_statistics = np.empty(0)
        self.close_positions = EMPTY_POSITIONS
        return True

    def _update_codes(self, codes: np.ndarray, positions: np.ndarray | None, shift: int,
                      mask: int) -> np.ndarray:
        """Feed the bins ``(codes >> shift) & mask`` of a contiguous int64 array ``codes``."""
        if codes.size == 0:
            self.alarm_statistics = np.empty(0)
            self.close_positions = EMPTY_POSITIONS
            return EMPTY_POSITIONS
        if self._kernel_kind == _wk.KIND_GENERIC:
            return self._update_generic(codes if shift == 0 and mask == -1
                                        else (codes >> shift) & mask, positions)
        return self._run(codes, codes.size, -1, shift, mask, positions)

    def _run(self, codes: np.ndarray, n: int, const_bin: int, shift: int, mask: int,
             positions: np.ndarray | None) -> np.ndarray:
        ref, probs, base = self._kernel_reference()
        _, _, _, _, hits, hit_stats, closes, n_tests, active, stat, effect, ok = (
            _wk.window_kernel(
                codes, n, const_bin, shift, mask, self.cadence, self._buf, self._win,
                self._partial, self._ist, self._kernel_kind, ref, probs, float(self.window),
                base, float(self._threshold), float(self.min_effect), bool(self._active),
                False, self._scales, float(self._release_level), int(self.release_values),
                self._hold_p0, self._hold, self._fst, self._hold_m, self._ks_hold))
        if not ok:
            raise self._bad_bins()
        if n_tests == 0:
            self.alarm_statistics = np.empty(0)
            self.close_positions = EMPTY_POSITIONS
            return EMPTY_POSITIONS
        self._active = active
        self._stat = stat
        self._effect = effect
        if closes is None:
            self.close_positions = EMPTY_POSITIONS
        else:
            self.close_positions = (closes if positions is None
                                    else positions[closes]).astype(np.int64, copy=False)
        if hits is None or hit_stats is None:  # no alarm here; an episode may have closed
            self.alarm_statistics = np.empty(0)
            return EMPTY_POSITIONS
        self._n_alarms += int(hits.size)
        self.alarm_statistics = hit_stats
        if positions is not None:
            hits = positions[hits]
        return hits.astype(np.int64, copy=False)

    def _update_generic(self, bins: np.ndarray, positions: np.ndarray | None) -> np.ndarray:
        """The alarm logic over ``scan`` (subclasses with their own ``_statistics``)."""
        stats_, effects, test_idx = self.scan(bins)
        if stats_.size == 0:
            self.alarm_statistics = np.empty(0)
            self.close_positions = EMPTY_POSITIONS
            return EMPTY_POSITIONS
        raised, closed, active = episode_steps(
            stats_, effects, self._threshold, self.min_effect, self._release_level,
            self.release_values, self.cadence, self._active, self._ist, self._fst)
        self._active = bool(active)
        self._stat = float(stats_[-1])
        self._effect = float(effects[-1])
        hits = test_idx[raised]
        self.close_positions = (test_idx[closed] if positions is None
                                else positions[test_idx[closed]]).astype(np.int64, copy=False)
        self._n_alarms += int(hits.size)
        self.alarm_statistics = stats_[raised]
        if positions is not None:
            hits = positions[hits]
        return hits.astype(np.int64, copy=False)

    def scan(self, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance the window over ``bins``.

        Returns the statistic and effect size at every test point completed by
        this batch and, for each, the index in ``bins`` of the value that
        completed it.  Used by :meth:`update_bins` and by calibration.  The
        alarm state is left alone.
        """
        if np.size(bins) == 0:
            empty = np.empty(0)
            return empty, empty, EMPTY_POSITIONS
        codes = self._as_codes(bins)
        ref, probs, base = self._kernel_reference()
        stats_, effects, test_idx, hists, _, _, _, _, _, _, _, ok = _wk.window_kernel(
            codes, codes.size, -1, 0, -1, self.cadence, self._buf, self._win, self._partial,
            self._ist, self._kernel_kind, ref, probs, float(self.window), base, math.inf, 0.0,
            False, True, self._scales, math.inf, 1, -1.0, np.zeros(1, np.int64), np.zeros(1),
            -1.0, _NO_HOLD)
        if not ok:
            raise self._bad_bins()
        if test_idx is None:  # no test completed
            empty = np.empty(0)
            return empty, empty, EMPTY_POSITIONS
        if hists is not None:  # KIND_GENERIC: the subclass computes the statistic
            stats_, effects = self._statistics(hists)
        assert stats_ is not None and effects is not None
        return stats_, effects, test_idx

    @property
    def _ring(self) -> np.ndarray:
        """The chunk histograms of the window, oldest first (a copy)."""
        nch = self._buf.shape[0]
        pos, count = int(self._ist[0]), int(self._ist[1])
        if count == 0:
            return np.zeros((0, self.n_bins), dtype=np.int64)
        idx = (pos - count + np.arange(count)) % nch
        return self._buf[idx]

    @_ring.setter
    def _ring(self, ring: Any) -> None:
        ring = np.asarray(ring, dtype=np.int64).reshape(-1, self.n_bins)[-self._chunks:]
        count = ring.shape[0]
        self._buf[:] = 0
        self._buf[:count] = ring
        self._win[:] = ring.sum(axis=0)
        self._ist[0] = count % self._chunks
        self._ist[1] = count

    @property
    def _partial_n(self) -> int:
        return int(self._ist[2])

    def window_histogram(self) -> np.ndarray:
        """Counts per bin over the complete chunks currently in the window."""
        return self._win.copy()

    @property
    def window_values(self) -> int:
        """Number of values in the current (complete-chunk) window."""
        return int(self._ist[1]) * self.cadence

    # -- protocol -----------------------------------------------------------
    @property
    def statistic(self) -> float:
        return self._stat

    @property
    def effect(self) -> float:
        return self._effect

    @property
    def threshold(self) -> float:
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = float(value)

    @property
    def p_value(self) -> float | None:
        if int(self._ist[1]) < self._chunks:
            return 1.0
        lp = float(self.log_p_values(np.array([self._stat]))[0])
        return float(min(1.0, max(0.0, math.exp(lp))))

    @property
    def drift_detected(self) -> bool:
        return self._active

    def reset(self) -> None:
        """Forget the window (keeps settings and the alarm count)."""
        self._buf[:] = 0
        self._win[:] = 0
        self._partial[:] = 0
        self._ist[:] = 0
        self._hold[:] = 0
        self._ks_hold[:] = 0
        self._stat = self._effect = 0.0
        self._fst[:] = 0.0
        self._active = False

    def _settings(self) -> dict[str, Any]:
        return {
            "probs": self.probs.tolist(),
            "window": self.window,
            "cadence": self.cadence,
            "threshold": self._threshold if math.isfinite(self._threshold) else None,
            "min_effect": self.min_effect,
            "ref_count": self.ref_count,
            "name": self.name,
            "release": self.release,
            "release_values": self.release_values,
        }

    def _state(self) -> dict[str, Any]:
        return {
            **self._settings(),
            "ring": self._ring.tolist(),
            "partial": self._partial.tolist(),
            "partial_n": self._partial_n,
            "stat": self._stat,
            "effect": self._effect,
            "active": self._active,
            "quiet": int(self._ist[3]),
            **({"hold": self._ist[4:7].tolist(), "hold_ring": self._hold.tolist()}
               if self._holds else {}),
            **({"ks_hold": self._ks_hold_rows().tolist()} if self._ks_holds else {}),
            "peak": float(self._fst[0]),
            "n_alarms": self._n_alarms,
        }

    def _ks_hold_rows(self) -> np.ndarray:
        """The histograms of the fresh chunks of the KS hold, oldest first (a copy)."""
        rows = self._ks_hold.shape[0] - 1
        n, pos = int(self._ist[4]), int(self._ist[6])
        return self._ks_hold[(pos - n + np.arange(n)) % rows] if n else np.zeros(
            (0, self.n_bins), dtype=np.int64)

    @classmethod
    def _kwargs_from_state(cls, state: dict[str, Any]) -> dict[str, Any]:
        thr = state["threshold"]
        return {
            "probs": state["probs"],
            "window": state["window"],
            "cadence": state["cadence"],
            "threshold": math.inf if thr is None else thr,
            "min_effect": state["min_effect"],
            "ref_count": state["ref_count"],
            "name": state.get("name", ""),
        }

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> WindowTest:
        det = cls(**cls._kwargs_from_state(state))
        det._restore_running(state)
        return det

    def _restore_running(self, state: dict[str, Any]) -> None:
        partial = np.asarray(state["partial"], dtype=np.int64).reshape(-1)
        partial_n = int(state["partial_n"])
        if partial.size != self.n_bins or not 0 <= partial_n < self.cadence:
            raise DetectorError(f"{self.name or 'window'}: inconsistent state: partial chunk of "
                                f"{partial.size} bins and {partial_n} values (expected "
                                f"{self.n_bins} bins, fewer than {self.cadence} values)")
        self._ring = state["ring"]  # chronological list of chunk histograms
        self._partial = partial.copy()
        self._ist[2] = partial_n
        self._stat = float(state["stat"])
        self._effect = float(state["effect"])
        self._active = bool(state["active"])
        self._n_alarms = int(state["n_alarms"])
        # states written before episodes: one alarm per up-crossing, as they had
        self.configure_episodes(float(state.get("release", 1.0)),
                                int(state.get("release_values", self.cadence)))
        self._ist[3] = int(state.get("quiet", 0))
        if self._holds and "hold" in state:  # states before the hold: none yet
            ring = np.asarray(state["hold_ring"], dtype=np.int64).reshape(-1)
            n, k, pos = (int(v) for v in state["hold"])
            if ring.size != self._hold.size or not (0 <= n <= ring.size and 0 <= pos < ring.size):
                raise DetectorError(f"{self.name or 'window'}: inconsistent state: a hold ring "
                                    f"of {ring.size} chunks (expected {self._hold.size})")
            self._hold[:] = ring
            self._ist[4:7] = [n, k, pos]
        if self._ks_holds and state.get("ks_hold"):  # states before the hold: none yet
            hist = np.asarray(state["ks_hold"], dtype=np.int64)
            rows = self._ks_hold.shape[0] - 1
            if hist.ndim != 2 or hist.shape[1] != self.n_bins or not hist.shape[0] <= rows:
                raise DetectorError(f"{self.name or 'window'}: inconsistent state: a KS hold "
                                    f"of shape {hist.shape} (expected at most {rows} rows of "
                                    f"{self.n_bins} bins)")
            n = hist.shape[0]
            self._ks_hold[:n] = hist
            self._ks_hold[rows] = hist.sum(axis=0)
            self._ist[4], self._ist[6] = n, n % rows
        self._fst[0] = float(state.get("peak", self._stat))


class KSWindow(WindowTest):
    """Windowed Kolmogorov–Smirnov test against a numeric baseline.

    Parameters
    ----------
    edges : array
        Upper bin edges of the baseline (``NumericProfile.bin_edges``).
    probs : array
        Baseline probability of each bin (``len(edges) + 1`` entries).
    window, cadence : int
        Window length and test cadence in values.
    threshold : float
        Alarm when the KS distance exceeds it (from calibration).
    min_effect : float
        Minimum KS distance for an alarm to count.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.profile import NumericProfile
    >>> rng = np.random.default_rng(1)
    >>> base = NumericProfile.from_values(rng.normal(size=5000), bins=16)
    >>> ks = KSWindow(base.bin_edges, base.bin_probabilities, window=200, cadence=20,
    ...               threshold=0.15)
    >>> ks.update(rng.normal(size=2000)).size
    0
    >>> alarms = ks.update(rng.normal(1.0, 1.0, size=500))
    >>> int(alarms[0]) < 100, ks.drift_detected
    (True, True)
    """

    kind = "ks"
    input_kind = "numeric"
    column_types = ("numeric",)
    _ks_holds = True

    def __init__(self, edges: Any, probs: Any, window: int = 1000, cadence: int = 50,
                 threshold: float = math.inf, min_effect: float = 0.0, ref_count: int = 0,
                 name: str = "") -> None:
        self.edges = np.asarray(edges, dtype=np.float64).reshape(-1)
        if np.any(np.diff(self.edges) <= 0):
            raise DetectorError("KS bin edges must be strictly increasing")
        if np.asarray(probs).size != self.edges.size + 1:
            raise DetectorError("KS needs one more probability than edges")
        super().__init__(probs, window, cadence, threshold, min_effect, ref_count, name)

    def _prepare_reference(self) -> None:
        self._ref_cdf = np.cumsum(self.probs)[:-1]
        m = self.ref_count
        self._n_eff = self.window * m / (self.window + m) if m > 0 else float(self.window)
        # reference CDF at the edges where the window's CDF can deviate from it
        self._edge_cdf = self._ref_cdf[(self._ref_cdf > 0) & (self._ref_cdf < 1)]

    def _bins(self, values: Any) -> tuple[np.ndarray, np.ndarray]:
        x = as_float_batch(values, self.name or "values")
        finite = np.isfinite(x)
        if finite.all():
            return np.searchsorted(self.edges, x, side="left"), np.arange(x.size)
        pos = np.flatnonzero(finite)
        return np.searchsorted(self.edges, x[pos], side="left"), pos

    def _statistics(self, hists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._ref_cdf.size == 0:
            z = np.zeros(hists.shape[0])
            return z, z
        cdf = np.cumsum(hists[:, :-1], axis=1) / self.window
        d = np.abs(cdf - self._ref_cdf).max(axis=1)
        return d, d

    def log_p_values(self, statistics: np.ndarray) -> np.ndarray:
        x = np.sqrt(self._n_eff) * np.asarray(statistics, dtype=np.float64)
        with np.errstate(divide="ignore"):
            small = np.log(np.clip(special.kolmogorov(x), 1e-300, 1.0))
        # two-term tail of the Kolmogorov distribution, accurate where it underflows
        big = math.log(2.0) - 2.0 * x * x
        kolmogorov = np.where(x > 3.0, big, small)
        if self._edge_cdf.size == 0:
            return kolmogorov
        # The statistic is a maximum over the bin edges only, so the union bound over the
        # edges of the binomial tails P(|X / n - F_j| >= d), X ~ Bin(n_eff, F_j), is also
        # a p-value, and the sharper one for coarse or unequal bins (ties, zero inflation),
        # where the Kolmogorov law (a continuous CDF) overstates p by orders of magnitude.
        # It also gives calibration the right tail shape to extrapolate on.
        d = np.asarray(statistics, dtype=np.float64)
        n, f = self._n_eff, self._edge_cdf
        a = n * (f + d.reshape(-1, 1))  # upper tail: P(X >= a)
        b = n * (f - d.reshape(-1, 1))  # lower tail: P(X <= b)
        tiny = 1e-300
        with np.errstate(all="ignore"):
            up = np.where(a <= n, special.betainc(np.maximum(a, tiny),
                                                  np.maximum(n - a + 1.0, tiny), f), 0.0)
            lo = np.where(b >= 0, special.betainc(np.maximum(n - b, tiny), b + 1.0, 1.0 - f),
                          0.0)
        union = np.log(np.clip((up + lo).sum(axis=1), tiny, 1.0)).reshape(d.shape)
        return np.minimum(kolmogorov, union)

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "edges": self.edges.tolist()}

    @classmethod
    def _kwargs_from_state(cls, state: dict[str, Any]) -> dict[str, Any]:
        return {**super()._kwargs_from_state(state), "edges": state["edges"]}


def category_codes(values: Any, lookup: dict[str, int], name: str | None = None,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Codes of the present (not None) values of a categorical batch, and their positions.

    Strings are looked up in ``lookup`` (category → code); anything else, and
    integer codes out of ``0 .. len(lookup) - 1``, get the *other* code
    ``len(lookup)``.  Floats are rejected with a ``TypeError`` naming ``name``.

    >>> category_codes(["b", None, "zz", "a"], {"a": 0, "b": 1})
    (array([1, 2, 0]), array([0, 2, 3]))
    """
    other = len(lookup)
    arr = np.asarray(values)
    if arr.size == 0:  # an empty batch of any dtype, as for numeric detectors
        return EMPTY_POSITIONS, EMPTY_POSITIONS
    if arr.dtype.kind in "iu":
        codes = np.where((arr >= 0) & (arr <= other), arr, other).reshape(-1)
        return codes.astype(np.int64), np.arange(codes.size)
    if arr.dtype.kind == "f":
        raise TypeError(
            f"{name or 'values'}: categorical detectors take strings or integer codes, "
            f"got dtype {arr.dtype}"
        )
    obj = arr.astype(object).reshape(-1)
    present = np.not_equal(obj, None).astype(bool)  # type: ignore[call-overload]
    pos = np.flatnonzero(present)
    # dict.get through map runs in C: no Python-level loop over the values
    codes = np.fromiter(map(lookup.get, obj[pos], repeat(other)), dtype=np.int64,
                        count=pos.size)
    return codes, pos


def smoothed_log_probs(probs: np.ndarray, ref_count: int) -> np.ndarray:
    """``log`` of category frequencies smoothed by half a count (``ref_count`` values).

    A category absent from the reference gets a small, finite probability.
    Used by the chi2 test and the surprisal CUSUM alike.

    >>> np.exp(smoothed_log_probs(np.array([0.5, 0.5, 0.0]), 1)).round(3).tolist()
    [0.4, 0.4, 0.2]
    """
    counts = np.asarray(probs, dtype=np.float64) * max(int(ref_count), 1) + 0.5
    return np.log(counts / counts.sum())


#: the windows of the multi-scale chi2 test, as fractions of ``window`` (see ChiSquareWindow)
CHI2_SCALE_FRACTIONS = (0.1, 0.2, 0.4, 1.0)


def chi2_scales(window: int, cadence: int) -> list[int]:
    """Default window lengths of the chi2 test: ``window`` × 0.1, 0.2, 0.4 and 1.

    Each is rounded to a multiple of ``cadence`` (at least one cadence); the
    list ascends and ends with ``window``.

    >>> chi2_scales(1000, 50)
    [100, 200, 400, 1000]
    >>> chi2_scales(100, 50)
    [50, 100]
    """
    # window is a multiple of cadence, and the last fraction is 1: the list ends with window
    return sorted({max(1, round(window * f / cadence)) * cadence for f in CHI2_SCALE_FRACTIONS})


class ChiSquareWindow(WindowTest):
    """Multi-scale likelihood-ratio chi-square (G) test against category frequencies.

    Values are category codes ``0 .. n_categories - 1``, with the last code the
    *other* bucket (rare and unseen categories); :meth:`update` also accepts
    strings when ``categories`` is given.

    At each test the G statistic is computed on the newest ``scales[i]``
    values for every scale (by default 10 %, 20 %, 40 % and 100 % of
    ``window``, see :func:`chi2_scales`), and the test statistic is the
    largest of them.  All scales have the same degrees of freedom, so the
    largest G is the most significant window.  A short window sees a large
    shift a few hundred values sooner than the full window would, the full
    window sees small shifts; the threshold is calibrated for the maximum
    (:func:`detectors.calibration.calibrate_window_test` runs this very
    test), so looking at several windows costs no extra false alarms.  The
    effect size is the total variation distance of the window with the
    largest G.  ``scales=[window]`` gives the single-window test.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(2)
    >>> det = ChiSquareWindow(["a", "b", "c"], [0.5, 0.3, 0.2, 0.0], window=200, cadence=20,
    ...                       threshold=30.0, ref_count=10_000)
    >>> det.scales
    [20, 40, 80, 200]
    >>> det.update(rng.choice(["a", "b", "c"], 2000, p=[0.5, 0.3, 0.2])).size
    0
    >>> det.update(rng.choice(["a", "b", "c"], 400, p=[0.2, 0.3, 0.5])).size
    1
    """

    kind = "chi2"
    input_kind = "categorical"
    column_types = ("categorical",)
    budget_weight = 4.0

    def __init__(self, categories: Any, probs: Any, window: int = 1000, cadence: int = 50,
                 threshold: float = math.inf, min_effect: float = 0.0, ref_count: int = 0,
                 name: str = "", scales: Any = None) -> None:
        self.categories = [str(c) for c in categories]
        if np.asarray(probs).size != len(self.categories) + 1:
            raise DetectorError("chi2 needs one probability per category plus one for 'other'")
        super().__init__(probs, window, cadence, threshold, min_effect, ref_count, name)
        self._codes = {c: i for i, c in enumerate(self.categories)}
        self._scales = self._check_scales(chi2_scales(self.window, self.cadence)
                                          if scales is None else scales)

    def _check_scales(self, scales: Any) -> np.ndarray:
        try:
            vals = [int(v) for v in scales]
            ok = all(float(v) == int(v) for v in scales)
        except (TypeError, ValueError):
            ok, vals = False, []
        if (not ok or not vals or vals != sorted(set(vals)) or vals[-1] != self.window
                or any(v < self.cadence or v % self.cadence for v in vals)):
            raise DetectorError(
                f"{self.name or 'chi2'}: scales must be ascending multiples of cadence "
                f"({self.cadence}) ending with window ({self.window}), got {scales!r}; "
                f"for example {chi2_scales(self.window, self.cadence)}")
        return np.array([v // self.cadence for v in vals], dtype=np.int64)

    @property
    def scales(self) -> list[int]:
        """The window lengths (in values) the test looks at, ascending."""
        return [int(c) * self.cadence for c in self._scales]

    def _prepare_reference(self) -> None:
        self._log_p = smoothed_log_probs(self.probs, self.ref_count)

    def codes(self, values: Any) -> tuple[np.ndarray, np.ndarray]:
        """Category codes of the present values and their positions."""
        return category_codes(values, self._codes, self.name)

    def _bins(self, values: Any) -> tuple[np.ndarray, np.ndarray]:
        return self.codes(values)

    def _statistics(self, hists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # G and TV of whole-window histograms; the kernel computes the same per scale
        w = float(self.window)
        obs = hists.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(obs > 0, obs * (np.log(obs / w) - self._log_p), 0.0)
        g = np.maximum(2.0 * terms.sum(axis=1), 0.0)
        tv = 0.5 * np.abs(obs / w - self.probs).sum(axis=1)
        return g, tv

    def log_p_values(self, statistics: np.ndarray) -> np.ndarray:
        return stats.chi2.logsf(np.asarray(statistics, dtype=np.float64), max(self.n_bins - 1, 1))

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "categories": self.categories, "scales": self.scales}

    @classmethod
    def _kwargs_from_state(cls, state: dict[str, Any]) -> dict[str, Any]:
        # a state saved before the multi-scale test (no "scales") was a single-window test
        return {**super()._kwargs_from_state(state), "categories": state["categories"],
                "scales": state.get("scales", [state["window"]])}


class RateWindow(WindowTest):
    """One-sided test of the rate of a 0/1 flag in the window against ``base_rate``.

    The statistic is the share of flagged values in the window; the effect size
    is that share minus ``base_rate``.  Feed booleans (``True`` = flagged).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> det = MissingRate(base_rate=0.01, window=500, cadence=50, threshold=0.04)
    >>> det.update(rng.random(5000) < 0.01).size
    0
    >>> det.update(rng.random(1000) < 0.2).size
    1
    """

    kind: ClassVar[str] = ""

    def __init__(self, base_rate: float, window: int = 1000, cadence: int = 50,
                 threshold: float = math.inf, min_effect: float = 0.0, ref_count: int = 0,
                 name: str = "") -> None:
        if not (isinstance(base_rate, (int, float)) and 0.0 <= base_rate <= 1.0):
            raise DetectorError(f"base_rate must be between 0 and 1, got {base_rate!r}")
        self.base_rate = float(base_rate)
        super().__init__([1.0 - self.base_rate, self.base_rate] if self.base_rate < 1 else [0, 1],
                         window, cadence, threshold, min_effect, ref_count, name)

    def _bins(self, values: Any) -> tuple[np.ndarray, np.ndarray]:
        arr = np.asarray(values)
        if arr.size == 0:  # an empty batch of any dtype, as for numeric detectors
            return EMPTY_POSITIONS, EMPTY_POSITIONS
        if arr.dtype.kind not in "biu":
            raise TypeError(f"{self.name or 'values'}: rate detectors take boolean flags, "
                            f"got dtype {arr.dtype}")
        flags = (arr.reshape(-1) != 0).astype(np.int64)
        return flags, np.arange(flags.size)

    @property
    def lattice_step(self) -> float | None:
        return 1.0 / self.window  # the statistic is a count over the window

    _holds = True

    @property
    def _hold_p0(self) -> float:
        # the rate log_p_values tests against: never 0, a reference without a flag still
        # bounds its rate to about 1 / ref_count
        return min(max(self.base_rate, 0.5 / max(self.ref_count, 1)), 1.0)

    def _statistics(self, hists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rate = hists[:, 1] / float(self.window)
        return rate, rate - self.base_rate

    def log_p_values(self, statistics: np.ndarray) -> np.ndarray:
        k = np.round(np.asarray(statistics, dtype=np.float64) * self.window)
        p0 = min(max(self.base_rate, 0.5 / max(self.ref_count, 1)), 1.0)
        return stats.binom.logsf(k - 1, self.window, p0)

    @property
    def rate(self) -> float:
        """Share of flagged values over the current window (0 before it fills)."""
        n = self.window_values
        return float(self.window_histogram()[1] / n) if n else 0.0

    def _settings(self) -> dict[str, Any]:
        s = super()._settings()
        s.pop("probs")
        return {**s, "base_rate": self.base_rate}

    @classmethod
    def _kwargs_from_state(cls, state: dict[str, Any]) -> dict[str, Any]:
        kw = super()._kwargs_from_state({**state, "probs": None})
        kw.pop("probs")
        return {**kw, "base_rate": state["base_rate"]}


class MissingRate(RateWindow):
    """Rate of missing values (flag per event: value absent or null)."""

    kind = "missing"
    input_kind = "flags"
    column_types = ("numeric", "categorical")


class OutOfRangeRate(RateWindow):
    """Rate of numeric values outside the baseline's [min, max]."""

    kind = "out_of_range"
    input_kind = "flags"
    column_types = ("numeric",)


class UnseenRate(RateWindow):
    """Rate of categories that never occurred in the baseline."""

    kind = "unseen"
    input_kind = "flags"
    column_types = ("categorical",)
