"""ADWIN (ADaptive WINdowing) change detector, bit-compatible with River.

The per-value core is a numba kernel over fixed-size numpy arrays, so whole
batches are processed without a Python-level loop and memory is bounded by
the settings (at most 64 levels of ``max_buckets + 1`` buckets), never by the
stream length.

It reproduces ``river.drift.ADWIN`` (River 0.26, Rust core
``rust_src/adwin.rs`` plus the Python wrapper) step by step, including the
floating-point operation order.  Two River details worth knowing:

* River's wrapper **resets the whole detector** (window, clock, counters) on
  the update *after* a detection: a detection at value ``i`` means value
  ``i + 1`` starts a brand-new window, grace period and clock phase.  This is
  reproduced here (the reset is deferred to the next finite value, so the
  figures read right after a detection are those of the shrunk window, as in
  River).
* River's ``variance`` is the *sum of squared deviations* of the window, not
  the variance; ``variance_in_window`` is ``variance / width``.  The same
  names mean the same things here.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from numba import njit

from detectors.base import (
    EMPTY_POSITIONS,
    Detector,
    HeldAlarm,
    as_float_batch,
    check_clip,
    check_release,
)
from detectors.errors import DetectorError

__all__ = ["ADWIN", "adwin_detections", "adwin_episode_counts"]

#: Fixed number of levels in the state arrays.  Level ``i`` holds buckets of
#: ``2**i`` values; 64 levels can never fill (that takes ~2**64 values).
MAX_LEVELS = 64

# Indices into the float / int scalar state vectors of the kernel.
_F_TOTAL, _F_VARIANCE, _F_WIDTH, _F_STATISTIC = 0, 1, 2, 3
_I_LEVELS, _I_TICK, _I_PENDING, _I_DETECTIONS = 0, 1, 2, 3

_I32_MAX = 2147483647


# Relative margins of the screen: 1e-12 covers the rounding of the screen's own
# products and of River's divisions (a few ulp, ~1e-15); 1e-9 shrinks the bound
# on epsilon far beyond every rounding on either side.
_SCREEN_SLACK = 1e-12
_SCREEN_SHRINK = 1.0 - 1e-9


@njit(cache=True, nogil=True, error_model="numpy")
def _no_cut_can_fire(totals, counts, n_levels, pow2, width, total, variance, delta_prime,
                     mwl, buf_s, buf_t):  # pragma: no cover - compiled
    """True when River's exact scan provably finds no significant cut.

    River fires at a cut when ``|u0/n0 - u1/n1| > sqrt(2 m var dp) + 2/3 dp m``
    with ``m = 1/(n0 - L + 1) + 1/(n1 - L + 1)``.  For ``L >= 1`` and tested
    cuts (``n0, n1 >= L``), ``m >= 1/n0 + 1/n1 = W/(n0 n1)``; multiplied by
    ``P = n0 n1`` the condition needs ``|u0 n1 - u1 n0| > sqrt(2 var dp W P) +
    2/3 dp W``: products only, no division or sqrt per cut.  Rounding: every
    difference between these products and River's quotients (times ``P``),
    including the order in which the sums ``u0``, ``u1`` are formed, is below
    a few ulp per bucket of ``(sum |bucket totals| + |total|) * W``; the left
    side is raised by a far larger slack and the right side lowered by
    ``_SCREEN_SHRINK``.  NaN or overflow makes a comparison fail, which sends
    the check to the exact scan.  ``delta_prime``: River's ``delta'`` at a width
    no larger than ``width`` (a lower bound: ``delta'`` grows with the width).
    ``buf_s``/``buf_t``: scratch, at least ``totals.size + 1`` long.
    """
    var_in_window = variance / width
    if not (var_in_window >= 0.0 and delta_prime > 0.0):
        return False
    # The buckets oldest first, without a branch per level (the bucket counts
    # change from check to check: mispredicted loop exits would cost more).
    cap = totals.shape[1]
    nb = 0
    for lv in range(n_levels - 1, -1, -1):
        bucket_size = pow2[lv]
        cnt = counts[lv]
        for j in range(cap):
            buf_s[nb] = bucket_size
            buf_t[nb] = totals[lv, j]
            nb += j < cnt
    # Cumulative size and sum of W0 at every cut (the newest bucket is no cut).
    magnitude = abs(total) + abs(buf_t[nb - 1])
    n0 = 0.0
    u0 = 0.0
    for b in range(nb - 1):
        t = buf_t[b]
        magnitude += abs(t)
        n0 += buf_s[b]
        u0 += t
        buf_s[b] = n0
        buf_t[b] = u0
    slack = (_SCREEN_SLACK + nb * 1e-15) * 2.0 * magnitude * width
    c = 2.0 / 3.0 * delta_prime * width * _SCREEN_SHRINK - slack
    k = 2.0 * var_in_window * delta_prime * width * (_SCREEN_SHRINK * _SCREEN_SHRINK)
    n_bad = 0
    for b in range(nb - 1):
        n0 = buf_s[b]
        u0 = buf_t[b]
        n1 = width - n0
        d = abs(u0 * n1 - (total - u0) * n0) - c
        cleared = (d <= 0.0) | (d * d < k * (n0 * n1))
        n_bad += (n0 >= mwl) & (n1 >= mwl) & (cleared == False)  # noqa: E712
    return n_bad == 0


@njit(cache=True, nogil=True, error_model="numpy")
def _adwin_kernel(
    values, totals, variances, counts, fstate, istate,
    delta, clock, max_buckets, min_window_length, grace_period, min_effect,
    out, out_stat, clip_lo, clip_hi, out_level, out_change, screen=True,
):  # fmt: skip
    """Feed ``values`` one at a time; write detection positions to ``out``.

    Mirrors River's ``AdaptiveWindowing.update`` followed by the wrapper's
    reset-after-drift.  Non-finite values are skipped entirely; the others are
    winsorised to ``[clip_lo, clip_hi]`` (±inf: unclipped).  Returns the number
    of positions written.  For each detection, ``out_level`` receives the mean of
    the window at the first significant cut (the level before the change: mostly
    older values when a change is detected soon after it began; and the mean of
    many values, not of a short sub-window that a false detection may have cut off
    with an extreme mean) and ``out_change`` that cut's ``|mean0 - mean1|``.

    ``screen``: a check that is not the last of the batch first runs
    :func:`_no_cut_can_fire` (no division, no sqrt); when it proves that no cut
    is significant, River's exact scan is skipped.  That check's ``statistic``
    is never observable (the next check of the batch overwrites it), and every
    check that detects, or ends the batch, runs River's exact scan, so the
    outputs and the state are those of the unscreened kernel bit for bit.
    """
    cap = max_buckets + 1
    mwl = float(min_window_length)
    grace = float(grace_period)
    pow2 = np.empty(MAX_LEVELS, dtype=np.float64)
    p = 1.0
    for lv in range(MAX_LEVELS):
        pow2[lv] = p
        p *= 2.0

    total = fstate[_F_TOTAL]
    variance = fstate[_F_VARIANCE]
    width = fstate[_F_WIDTH]
    stat = fstate[_F_STATISTIC]
    n_levels = istate[_I_LEVELS]
    tick = istate[_I_TICK]
    pending = istate[_I_PENDING]
    n_det = istate[_I_DETECTIONS]
    phase = tick % clock
    n_out = 0
    max_cuts = MAX_LEVELS * cap + 1
    cut_n0 = np.empty(max_cuts, dtype=np.float64)
    cut_n1 = np.empty(max_cuts, dtype=np.float64)
    cut_u0 = np.empty(max_cuts, dtype=np.float64)
    cut_u1 = np.empty(max_cuts, dtype=np.float64)
    cut_dm = np.empty(max_cuts, dtype=np.float64)
    cut_eps = np.empty(max_cuts, dtype=np.float64)
    # The screen needs min_window_length >= 1 (its bound on m^-1, see
    # _no_cut_can_fire) and the number of valid values still to come, to know
    # whether a later check of this batch will overwrite the statistic.
    screening = screen and min_window_length >= 1
    remaining = 0
    dp_width = 0.0  # the width at which dp_low = River's delta' was computed
    dp_low = 0.0
    if screening:
        for i in range(values.shape[0]):
            x = values[i]
            if np.isfinite(x) and abs(x) <= 1e100:
                remaining += 1

    for i in range(values.shape[0]):
        x = values[i]
        # non-finite values are skipped; so are values whose square would overflow
        # the window's sum of squares (|x| > 1e100 is no measurement of anything)
        if not np.isfinite(x) or abs(x) > 1e100:
            continue
        remaining -= 1  # valid values after this one
        if x < clip_lo:
            x = clip_lo
        elif x > clip_hi:
            x = clip_hi

        # River: ``if self.drift_detected: self._reset()`` before the update.
        if pending != 0:
            for lv in range(n_levels):
                for j in range(cap):
                    totals[lv, j] = 0.0
                    variances[lv, j] = 0.0
                counts[lv] = 0
            n_levels = 1
            total = 0.0
            variance = 0.0
            width = 0.0
            tick = 0
            phase = 0
            stat = 0.0
            pending = 0

        # -- insert_element(x, 0.0) ------------------------------------------
        c = counts[0]
        totals[0, c] = x
        variances[0, c] = 0.0
        counts[0] = c + 1
        width += 1.0
        inc = 0.0
        if width > 1.0:
            dv = x - total / (width - 1.0)
            inc = (width - 1.0) * dv * dv / width
        variance += inc
        total += x

        # -- compress_buckets -------------------------------------------------
        lv = 0
        while counts[lv] == cap:
            n1 = pow2[lv]
            t0 = totals[lv, 0]
            t1 = totals[lv, 1]
            v0 = variances[lv, 0]
            v1 = variances[lv, 1]
            mu1 = t0 / n1
            mu2 = t1 / n1
            total12 = t0 + t1
            temp = n1 * 0.5 * (mu1 - mu2) * (mu1 - mu2)
            v12 = v0 + v1 + temp
            if lv + 1 >= n_levels:
                n_levels = lv + 2
            cn = counts[lv + 1]
            totals[lv + 1, cn] = total12
            variances[lv + 1, cn] = v12
            counts[lv + 1] = cn + 1
            # compress(2): shift left by two, clear the tail.
            for j in range(cap - 2):
                totals[lv, j] = totals[lv, j + 2]
                variances[lv, j] = variances[lv, j + 2]
            for j in range(cap - 2, cap):
                totals[lv, j] = 0.0
                variances[lv, j] = 0.0
            counts[lv] = cap - 2
            if counts[lv + 1] <= max_buckets:
                break
            lv += 1

        # -- detect_change ----------------------------------------------------
        detected = False
        cut_level = 0.0
        cut_change = 0.0
        # River's tick is an i32 (wraps in release builds); ``phase`` tracks
        # ``tick % clock`` without an integer division per value.
        tick += 1
        phase += 1
        if phase == clock:
            phase = 0
        if tick > _I32_MAX:
            tick -= 4294967296
            phase = tick % clock
        # Not the batch's last check (another comes ``clock`` valid values on,
        # with a wider window, before the tick wraps) and no cut can be
        # significant: the exact scan would only compute a statistic that the
        # next check overwrites.
        screened = False
        if (phase == 0 and width > grace and screening and remaining >= clock
                and tick + remaining <= _I32_MAX):
            if not dp_width <= width <= 2.0 * dp_width:  # delta' of a width <= this one
                dp_width = width
                dp_low = math.log(2.0 * math.log(width) / delta)
            screened = _no_cut_can_fire(totals, counts, n_levels, pow2, width, total,
                                        variance, dp_low, mwl, cut_n0, cut_u0)
        if phase == 0 and width > grace and not screened:
            stat = 0.0
            reduce_width = True
            while reduce_width:
                reduce_width = False
                # River's scan, split in three loops so that the costly middle
                # one (divisions, sqrt) vectorises.  Each cut's figures are
                # computed by exactly River's operations, in River's order.
                # 1) Cumulative sizes/sums of W0 and W1 at every cut, oldest
                #    bucket first; the last bucket of level 0 is never a cut.
                n0 = 0.0
                n1 = width
                u0 = 0.0
                u1 = total
                nc = 0
                for lv in range(n_levels - 1, -1, -1):
                    bucket_size = pow2[lv]
                    cnt = counts[lv]
                    for k in range(cnt):
                        n0 += bucket_size
                        n1 -= bucket_size
                        t = totals[lv, k]
                        u0 += t
                        u1 -= t
                        if lv == 0 and k == cnt - 1:
                            break
                        cut_n0[nc] = n0
                        cut_n1[nc] = n1
                        cut_u0[nc] = u0
                        cut_u1[nc] = u1
                        nc += 1
                # 2) |mean0 - mean1| and epsilon_cut at every cut.  delta' and
                #    the window variance are constant over a pass (River
                #    recomputes them per cut from identical inputs).
                delta_prime = math.log(2.0 * math.log(width) / delta)
                var_in_window = variance / width
                for c in range(nc):
                    delta_mean = (cut_u0[c] / cut_n0[c]) - (cut_u1[c] / cut_n1[c])
                    m_recip = 1.0 / (cut_n0[c] - mwl + 1.0) + 1.0 / (cut_n1[c] - mwl + 1.0)
                    cut_dm[c] = abs(delta_mean)
                    cut_eps[c] = (
                        math.sqrt(2.0 * m_recip * var_in_window * delta_prime)
                        + 2.0 / 3.0 * delta_prime * m_recip
                    )
                # 3) River's test, first significant cut wins.
                for c in range(nc):
                    if cut_n1[c] >= mwl and cut_n0[c] >= mwl:
                        abs_mean = cut_dm[c]
                        epsilon = cut_eps[c]
                        if epsilon == epsilon:  # NaN when rounding made variance < 0
                            ratio = abs_mean / (epsilon if epsilon > min_effect else min_effect)
                            if ratio > stat:
                                stat = ratio
                        if abs_mean > epsilon and abs_mean >= min_effect:
                            reduce_width = True
                            if not detected:
                                cut_level = (cut_u0[c] + cut_u1[c]) / (cut_n0[c]
                                                                       + cut_n1[c])
                                cut_change = abs_mean
                            detected = True
                            if width > 0.0:
                                # -- delete_element (oldest bucket) ----------
                                last = n_levels - 1
                                nb = pow2[last]
                                ub = totals[last, 0]
                                vb = variances[last, 0]
                                mu = ub / nb
                                width -= nb
                                total -= ub
                                mu_window = total / width
                                variance -= vb + nb * width * (mu - mu_window) * (
                                    mu - mu_window
                                ) / (nb + width)
                                cl = counts[last]
                                for j in range(cl - 1):
                                    totals[last, j] = totals[last, j + 1]
                                    variances[last, j] = variances[last, j + 1]
                                totals[last, cl - 1] = 0.0
                                variances[last, cl - 1] = 0.0
                                counts[last] = cl - 1
                                if cl - 1 == 0 and last > 0:
                                    n_levels -= 1
                                break

        if detected:
            n_det += 1
            pending = 1
            out[n_out] = i
            out_stat[n_out] = stat
            out_level[n_out] = cut_level
            out_change[n_out] = cut_change
            n_out += 1

    fstate[_F_TOTAL] = total
    fstate[_F_VARIANCE] = variance
    fstate[_F_WIDTH] = width
    fstate[_F_STATISTIC] = stat
    istate[_I_LEVELS] = n_levels
    istate[_I_TICK] = tick
    istate[_I_PENDING] = pending
    istate[_I_DETECTIONS] = n_det
    return n_out


def _check_settings(
    delta: float,
    clock: int,
    max_buckets: int,
    min_window_length: int,
    grace_period: int,
    min_effect: float,
) -> tuple[float, int, int, int, int, float]:
    def _int(value: Any, what: str, low: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise DetectorError(f"ADWIN: {what} must be an integer, got {value!r}")
        if value < low:
            raise DetectorError(f"ADWIN: {what} must be >= {low}, got {value}")
        return int(value)

    try:
        delta = float(delta)
        min_effect = float(min_effect)
    except (TypeError, ValueError):
        raise DetectorError(
            f"ADWIN: delta and min_effect must be numbers, got {delta!r}, {min_effect!r}"
        ) from None
    if not 0.0 < delta < 1.0:
        raise DetectorError(f"ADWIN: delta must be in (0, 1), got {delta}")
    if not (math.isfinite(min_effect) and min_effect >= 0.0):
        raise DetectorError(f"ADWIN: min_effect must be finite and >= 0, got {min_effect}")
    # River's clock is an i32 and panics on 0; max_buckets=1 makes River panic
    # (an empty intermediate level is eventually "deleted"), so require >= 2.
    clock = _int(clock, "clock", 1)
    if clock > _I32_MAX:
        raise DetectorError(f"ADWIN: clock must be < 2**31, got {clock}")
    max_buckets = _int(max_buckets, "max_buckets", 2)
    if max_buckets > 1024:
        raise DetectorError(f"ADWIN: max_buckets must be <= 1024, got {max_buckets}")
    min_window_length = _int(min_window_length, "min_window_length", 0)
    grace_period = _int(grace_period, "grace_period", 0)
    return delta, clock, max_buckets, min_window_length, grace_period, min_effect


def _check_clip(clip: Any) -> tuple[float, float] | None:
    return check_clip(clip, "ADWIN")


class _KernelState:
    """The arrays the kernel mutates in place."""

    __slots__ = ("counts", "fstate", "istate", "last_changes", "last_levels", "last_stats",
                 "totals", "variances")

    def __init__(self, max_buckets: int) -> None:
        self.totals = np.zeros((MAX_LEVELS, max_buckets + 1), dtype=np.float64)
        self.variances = np.zeros((MAX_LEVELS, max_buckets + 1), dtype=np.float64)
        self.counts = np.zeros(MAX_LEVELS, dtype=np.int64)
        self.fstate = np.zeros(4, dtype=np.float64)
        self.istate = np.zeros(4, dtype=np.int64)
        self.istate[_I_LEVELS] = 1
        self.last_stats = np.empty(0)
        self.last_levels = np.empty(0)
        self.last_changes = np.empty(0)

    def run(
        self,
        values: np.ndarray,
        delta: float,
        clock: int,
        max_buckets: int,
        min_window_length: int,
        grace_period: int,
        min_effect: float,
        clip: tuple[float, float] | None = None,
        screen: bool = True,
    ) -> np.ndarray:
        """Detection positions in ``values``; ``screen=False`` runs River's exact
        scan at every check (the reference the screened kernel is tested against)."""
        if values.size == 0:
            self.last_stats = self.last_levels = self.last_changes = np.empty(0)
            return EMPTY_POSITIONS.copy()
        out = np.empty(values.size, dtype=np.int64)
        out_stat = np.empty(values.size, dtype=np.float64)
        out_level = np.empty(values.size, dtype=np.float64)
        out_change = np.empty(values.size, dtype=np.float64)
        lo, hi = clip if clip is not None else (-np.inf, np.inf)
        n = _adwin_kernel(
            values, self.totals, self.variances, self.counts, self.fstate, self.istate,
            delta, clock, max_buckets, min_window_length, grace_period, min_effect,
            out, out_stat, float(lo), float(hi), out_level, out_change, screen,
        )  # fmt: skip
        #: statistic of the check that detected each change, parallel to the positions
        self.last_stats = out_stat[:n].copy()
        #: the level before each change and the size of the change (see _adwin_kernel)
        self.last_levels = out_level[:n].copy()
        self.last_changes = out_change[:n].copy()
        return out[:n].copy()


@njit(cache=True, nogil=True, error_model="numpy")
def _episode_kernel(values, clip_lo, clip_hi, det_pos, det_stat, det_level, det_change,
                    release, hold, fstate, istate, out_open, out_open_stat, out_close,
                    counts):  # pragma: no cover - compiled
    """Group ADWIN's detections (at ``det_pos`` of ``values``) into episodes.

    A detection opens an episode when none is open; the episode's level is the
    mean before the change (``det_level``) and its release gap ``release`` ×
    the detected change.  After each detection ADWIN starts afresh; the mean of
    the (winsorised) values since is evidence while it is more than the gap
    away from the level.  The episode closes after ``hold`` valid values
    without evidence and without a detection.  A ramp or a shift that holds is
    thus one episode; a false detection's episode closes once the values since
    it have settled back.  ``fstate``: level, gap, sum since the last detection,
    peak; ``istate``: open, quiet values, values since the last detection.
    """
    j = 0
    n_det = det_pos.shape[0]
    no = 0
    nc = 0
    ep = istate[0]
    quiet = istate[1]
    n = istate[2]
    level = fstate[0]
    gap = fstate[1]
    tot = fstate[2]
    peak = fstate[3]
    for i in range(values.shape[0]):
        x = values[i]
        if not np.isfinite(x) or abs(x) > 1e100:
            continue
        if j < n_det and det_pos[j] == i:
            st = det_stat[j]
            if ep == 0:
                ep = 1
                out_open[no] = i
                out_open_stat[no] = st
                no += 1
                level = det_level[j]
                gap = release * det_change[j]
                peak = st
            elif st > peak:
                peak = st
            quiet = 0
            n = 0
            tot = 0.0
            j += 1
            continue
        if ep == 1:
            x = min(max(x, clip_lo), clip_hi)
            tot += x
            n += 1
            if abs(tot / n - level) > gap:
                quiet = 0
            else:
                quiet += 1
                if quiet >= hold:
                    ep = 0
                    quiet = 0
                    out_close[nc] = i
                    nc += 1
    istate[0] = ep
    istate[1] = quiet
    istate[2] = n
    fstate[0] = level
    fstate[1] = gap
    fstate[2] = tot
    fstate[3] = peak
    counts[0] = no
    counts[1] = nc


class EpisodeGrouper:
    """ADWIN's episodes over its detections: the state of :func:`_episode_kernel`."""

    __slots__ = ("fstate", "istate", "opened")

    def __init__(self) -> None:
        self.fstate = np.zeros(4, dtype=np.float64)
        self.istate = np.zeros(3, dtype=np.int64)
        self.opened = 0

    def run(self, values: np.ndarray, positions: np.ndarray, stats: np.ndarray,
            levels: np.ndarray, changes: np.ndarray, release: float, hold: int,
            clip: tuple[float, float] | None,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Opening positions, their statistics and closing positions in ``values``."""
        if not positions.size and not self.istate[0]:  # no detection, none open: no step
            return np.empty(0, np.int64), np.empty(0), np.empty(0, np.int64)
        lo, hi = clip if clip is not None else (-np.inf, np.inf)
        out_open, out_stat = np.empty(positions.size, np.int64), np.empty(positions.size)
        out_close, counts = np.empty(positions.size + 1, np.int64), np.zeros(2, np.int64)
        _episode_kernel(values, float(lo), float(hi), positions, stats, levels, changes,
                        float(release), max(int(hold), 1), self.fstate, self.istate,
                        out_open, out_stat, out_close, counts)
        no, nc = int(counts[0]), int(counts[1])
        self.opened += no
        return out_open[:no].copy(), out_stat[:no].copy(), out_close[:nc].copy()

    @property
    def is_open(self) -> bool:
        return bool(self.istate[0])

    @property
    def peak(self) -> float:
        return float(self.fstate[3])

    def state(self) -> dict[str, Any]:
        return {"episode_open": self.is_open, "episode_quiet": int(self.istate[1]),
                "episode_peak": self.peak, "episodes": self.opened,
                "episode_level": float(self.fstate[0]), "episode_gap": float(self.fstate[1]),
                "episode_sum": float(self.fstate[2]), "episode_values": int(self.istate[2])}

    def restore(self, state: dict[str, Any], detections: int, holding: bool, since: int,
                det_stat: float) -> None:
        """A state written before level evidence (or before episodes) closes on
        detections alone: its gap is infinite."""
        is_open = bool(state.get("episode_open", holding))
        self.istate[0] = int(is_open)
        self.istate[1] = int(state.get("episode_quiet", max(since, 0) if is_open else 0))
        self.istate[2] = int(state.get("episode_values", 0))
        self.fstate[0] = float(state.get("episode_level", 0.0))
        self.fstate[1] = float(state.get("episode_gap", math.inf))
        self.fstate[2] = float(state.get("episode_sum", 0.0))
        self.fstate[3] = float(state.get("episode_peak", det_stat))
        self.opened = int(state.get("episodes", detections))
        if min(self.istate) < 0 or self.opened < 0 or not math.isfinite(self.fstate[0] +
                                                                        self.fstate[2]):
            raise DetectorError("ADWIN state: episode fields malformed")


def adwin_detections(
    values: np.ndarray,
    delta: float,
    clock: int = 32,
    max_buckets: int = 5,
    min_window_length: int = 5,
    grace_period: int = 10,
    min_effect: float = 0.0,
    clip: tuple[float, float] | None = None,
) -> np.ndarray:
    """Positions at which a fresh ADWIN detects a change over ``values``.

    Meant for calibration by simulation: it runs the compiled kernel once over
    the whole array with no Python object around it.  Non-finite values are
    skipped (positions still index ``values``).

    Parameters
    ----------
    values : numpy.ndarray
        1-D stream of numbers.
    delta, clock, max_buckets, min_window_length, grace_period, min_effect, clip
        As for :class:`ADWIN`.

    Returns
    -------
    numpy.ndarray
        int64 positions of detections, increasing.
    """
    settings = _check_settings(
        delta, clock, max_buckets, min_window_length, grace_period, min_effect
    )
    arr = np.ascontiguousarray(as_float_batch(values))
    return _KernelState(settings[2]).run(arr, *settings, clip=_check_clip(clip))


class ADWIN(HeldAlarm, Detector):
    r"""ADaptive WINdowing change detector, identical in output to River's ADWIN.

    ADWIN keeps a variable-length window of recent values, compressed into
    exponential-histogram buckets, and every ``clock`` values tests every
    bucket boundary as a cut into an older sub-window :math:`W_0` and a newer
    :math:`W_1`.  A change is detected at a cut when

    .. math::

        |\hat\mu_{W_0} - \hat\mu_{W_1}| > \epsilon_{cut}
        = \sqrt{2 m^{-1} \sigma^2_W \delta'} + \tfrac{2}{3}\delta' m^{-1},

    with :math:`\delta' = \ln(2 \ln|W| / \delta)`,
    :math:`m^{-1} = 1/(n_0 - L + 1) + 1/(n_1 - L + 1)` (:math:`L` =
    ``min_window_length``) and :math:`\sigma^2_W` the window variance; the
    oldest bucket is then dropped and the test repeated until no cut is
    significant.  As in River, the detector starts afresh (empty window,
    new grace period, clock restarted) with the first value after a
    detection.  Non-finite values are skipped: they are not inserted and do
    not tick the clock.

    Parameters
    ----------
    delta : float, default 0.002
        Significance value, in (0, 1).  Smaller means fewer false alarms.
    clock : int, default 32
        Test for a change every ``clock`` values.
    max_buckets : int, default 5
        Buckets of each size kept before two are merged (>= 2; River panics
        with 1).
    min_window_length : int, default 5
        Minimum length of each sub-window for a cut to be tested.
    grace_period : int, default 10
        No test until the window holds more than this many values.
    min_effect : float, default 0.0
        Minimum absolute difference between the sub-window means for a cut
        to count as a change.  0 gives River's behaviour exactly.
    clip : (float, float), optional
        Winsorise values to ``[low, high]`` before they enter the window.
        streamdrift sets it to the range of the baseline's reservoir, so that
        the values ADWIN sees in production have the same support as the
        bootstrap draws its ``delta`` was calibrated on: one value far beyond
        the reference (a heavy tail's outlier) would otherwise make the mean
        jump and alarm far more often than budgeted.  Values beyond the range
        are watched by the out-of-range test.  ``None`` (default) gives
        River's behaviour exactly.
    name : str, optional
        Feature name, used in error messages.

    Attributes
    ----------
    statistic : float
        At the last test: the largest :math:`|\hat\mu_{W_0} -
        \hat\mu_{W_1}| / \max(\epsilon_{cut}, \text{min\_effect})` over the
        tested cuts; 0.0 before any test and after a reset.
    threshold : float
        Always 1.0, so ``score == statistic``.
    drift_detected : bool
        Whether the most recent :meth:`update` call detected a change (for
        single-value calls this is River's ``drift_detected``).
    width, estimation, variance, total
        As in River: window length, window mean, window *sum of squared
        deviations* and window sum.
    n_detections : int
        Detections since creation (River's own counter restarts with every
        reset, so it is at most 1 there).

    See Also
    --------
    adwin_detections : the same kernel as a plain function, for calibration.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.adwin import ADWIN
    >>> rng = np.random.default_rng(7)
    >>> stream = np.concatenate([rng.normal(0.0, 1.0, 1000), rng.normal(1.0, 1.0, 1000)])
    >>> det = ADWIN(name="latency")
    >>> det.update(stream[:1000])
    array([], dtype=int64)
    >>> det.update(stream[1000:])  # positions within this batch
    array([55])
    >>> det.drift_detected, det.n_detections
    (True, 1)
    >>> det.width, round(det.estimation, 2)  # a fresh window since the change
    (944, 1.0)

    The same kernel as a plain function, for calibration by simulation:

    >>> from detectors.adwin import adwin_detections
    >>> adwin_detections(stream, delta=0.002)
    array([1055])
    """

    kind: ClassVar[str] = "adwin"
    input_kind: ClassVar[str] = "numeric"
    column_types: ClassVar[tuple[str, ...]] = ("numeric",)
    sequential: ClassVar[bool] = True

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
        min_effect: float = 0.0,
        name: str | None = None,
        hold: int = 0,
        clip: tuple[float, float] | None = None,
    ) -> None:
        #: winsorising range of the values fed in, or None
        self.clip = _check_clip(clip)
        if isinstance(hold, bool) or not isinstance(hold, (int, np.integer)) or hold < 0:
            raise DetectorError(f"hold must be an integer >= 0, got {hold!r}")
        #: values after a detection during which ``drift_detected`` stays true (0: River's
        #: per-call flag). Counted in values, so it does not depend on the batching.
        self.hold = int(hold)
        self._since = -1  # valid values since the last detection; -1: none yet
        self._det_stat = 0.0
        (
            self.delta,
            self.clock,
            self.max_buckets,
            self.min_window_length,
            self.grace_period,
            self.min_effect,
        ) = _check_settings(delta, clock, max_buckets, min_window_length, grace_period, min_effect)
        self.name = name
        self._k = _KernelState(self.max_buckets)
        self._drift = False
        #: with ``hold``: the release gap of an episode, as a share of the detected change
        #: (None, as constructed: detections alone keep an episode open)
        self.release: float | None = None
        self._eps = EpisodeGrouper()

    # -- the protocol -------------------------------------------------------
    def update(self, values: np.ndarray) -> np.ndarray:
        """Feed a batch; return the int64 positions in it where a change was detected."""
        arr = np.ascontiguousarray(as_float_batch(values, self.name or "values"))
        positions = self._k.run(
            arr,
            self.delta,
            self.clock,
            self.max_buckets,
            self.min_window_length,
            self.grace_period,
            self.min_effect,
            self.clip,
        )
        self._drift = positions.size > 0
        stats = self._k.last_stats
        self._track_hold(arr, positions, stats)
        if self.hold:  # episodes: see _episode_kernel
            opens, self.alarm_statistics, self.close_positions = self._eps.run(
                arr, positions, stats, self._k.last_levels, self._k.last_changes,
                math.inf if self.release is None else self.release, self.hold, self.clip)
            return opens
        self.alarm_statistics = stats
        return positions

    @property
    def statistic(self) -> float:
        s = float(self._k.fstate[_F_STATISTIC])
        if self._holding:  # the detecting check's statistic while the alarm is held
            s = max(s, self._det_stat)
        return s if math.isfinite(s) else 0.0

    @property
    def threshold(self) -> float:
        return 1.0

    @property
    def drift_detected(self) -> bool:
        """With ``hold``: whether an episode is open; without: River's per-call flag."""
        return self._eps.is_open if self.hold else self._drift

    @property
    def _n_alarms(self) -> int:
        """Episodes opened (with ``hold``), else detections."""
        return self._eps.opened if self.hold else int(self._k.istate[_I_DETECTIONS])

    def configure_episodes(self, release: float, release_values: int) -> None:
        """A detection opens an episode at the level before the change; the episode stays
        open while the mean since ADWIN's last detection is more than ``release`` × the
        detected change away from that level, and closes after ``release_values`` values
        without that evidence or a detection.  A ramp, whose every step is a new change
        to ADWIN, and a shift that holds are one episode each."""
        self.release, self.hold = check_release(release, release_values,
                                                self.name or self.kind)

    @property
    def episode_peak(self) -> float:
        return self._eps.peak if self.hold else self.statistic

    # -- River's figures ------------------------------------------------------
    @property
    def n_detections(self) -> int:
        """Number of changes detected since creation."""
        return int(self._k.istate[_I_DETECTIONS])

    @property
    def width(self) -> int:
        """Number of values in the window."""
        return int(self._k.fstate[_F_WIDTH])

    @property
    def total(self) -> float:
        """Sum of the values in the window."""
        return float(self._k.fstate[_F_TOTAL])

    @property
    def variance(self) -> float:
        """Sum of squared deviations from the mean in the window (River's ``variance``)."""
        return float(self._k.fstate[_F_VARIANCE])

    @property
    def variance_in_window(self) -> float:
        """``variance / width`` (population variance of the window); 0.0 when empty."""
        w = self._k.fstate[_F_WIDTH]
        return float(self._k.fstate[_F_VARIANCE] / w) if w > 0 else 0.0

    @property
    def estimation(self) -> float:
        """Mean of the window (0.0 when empty)."""
        w = self._k.fstate[_F_WIDTH]
        return float(self._k.fstate[_F_TOTAL] / w) if w > 0 else 0.0

    # -- state -------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        k = self._k
        n_levels = int(k.istate[_I_LEVELS])
        counts = [int(c) for c in k.counts[:n_levels]]
        return {
            "delta": self.delta,
            "clock": self.clock,
            "max_buckets": self.max_buckets,
            "min_window_length": self.min_window_length,
            "grace_period": self.grace_period,
            "min_effect": self.min_effect,
            "name": self.name,
            "total": float(k.fstate[_F_TOTAL]),
            "variance": float(k.fstate[_F_VARIANCE]),
            "width": float(k.fstate[_F_WIDTH]),
            "statistic": float(k.fstate[_F_STATISTIC]),
            "tick": int(k.istate[_I_TICK]),
            "reset_pending": bool(k.istate[_I_PENDING]),
            "n_detections": int(k.istate[_I_DETECTIONS]),
            "drift_detected": self._drift,
            "hold": self.hold,
            "release": self.release,
            "clip": list(self.clip) if self.clip is not None else None,
            "since_detection": self._since,
            "detection_statistic": self._det_stat,
            **self._eps.state(),
            "counts": counts,
            "totals": [k.totals[lv, : counts[lv]].tolist() for lv in range(n_levels)],
            "variances": [k.variances[lv, : counts[lv]].tolist() for lv in range(n_levels)],
        }

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> ADWIN:
        try:
            det = cls(
                delta=state["delta"],
                clock=state["clock"],
                max_buckets=state["max_buckets"],
                min_window_length=state["min_window_length"],
                grace_period=state["grace_period"],
                min_effect=state.get("min_effect", 0.0),
                name=state.get("name"),
                hold=int(state.get("hold", 0)),
                clip=state.get("clip"),
            )
            det._since = int(state.get("since_detection", -1))
            det._det_stat = float(state.get("detection_statistic", 0.0))
            counts = [int(c) for c in state["counts"]]
            totals = state["totals"]
            variances = state["variances"]
            n_levels = len(counts)
            if not 1 <= n_levels <= MAX_LEVELS:
                raise DetectorError(f"ADWIN state: {n_levels} levels (1..{MAX_LEVELS} allowed)")
            if len(totals) != n_levels or len(variances) != n_levels:
                raise DetectorError("ADWIN state: counts/totals/variances lengths differ")
            k = det._k
            for lv, c in enumerate(counts):
                if not 0 <= c <= det.max_buckets or len(totals[lv]) != c or len(variances[lv]) != c:
                    raise DetectorError(f"ADWIN state: bad bucket level {lv}")
                k.counts[lv] = c
                k.totals[lv, :c] = np.asarray(totals[lv], dtype=np.float64)
                k.variances[lv, :c] = np.asarray(variances[lv], dtype=np.float64)
            k.fstate[_F_TOTAL] = float(state["total"])
            k.fstate[_F_VARIANCE] = float(state["variance"])
            k.fstate[_F_WIDTH] = float(state["width"])
            k.fstate[_F_STATISTIC] = float(state.get("statistic", 0.0))
            k.istate[_I_LEVELS] = n_levels
            k.istate[_I_TICK] = int(state["tick"])
            k.istate[_I_PENDING] = int(bool(state["reset_pending"]))
            k.istate[_I_DETECTIONS] = int(state["n_detections"])
            det._drift = bool(state.get("drift_detected", False))
            release = state.get("release")
            det.release = None if release is None else float(release)
            det._eps.restore(state, int(state["n_detections"]), det._holding, det._since,
                             det._det_stat)
        except DetectorError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise DetectorError(f"ADWIN state: malformed ({exc!r})") from None
        return det


def adwin_episode_counts(values: np.ndarray, delta: float, clock: int = 32,
                         clip: tuple[float, float] | None = None,
                         release: float | None = None, hold: int = 0) -> tuple[int, int]:
    """Detections and episodes (see :meth:`ADWIN.configure_episodes`; ``hold`` 0: one
    per detection) of a fresh ADWIN over ``values``, for calibration by simulation.

    >>> import numpy as np
    >>> x = np.r_[np.zeros(2_000), np.linspace(0, 2, 4_000), np.full(2_000, 2.0)]
    >>> x = x + np.random.default_rng(1).normal(size=x.size)
    >>> adwin_episode_counts(x, 0.002, hold=500)  # a ramp: four detections
    (4, 4)
    >>> adwin_episode_counts(x, 0.002, release=0.5, hold=500)  # one episode
    (4, 1)
    """
    settings = _check_settings(delta, clock, 5, 5, 10, 0.0)
    arr = np.ascontiguousarray(as_float_batch(values))
    k = _KernelState(settings[2])
    clip = _check_clip(clip)
    pos = k.run(arr, *settings, clip=clip)
    if hold <= 0:
        return int(pos.size), int(pos.size)
    opens, _, _ = EpisodeGrouper().run(arr, pos, k.last_stats, k.last_levels,
                                       k.last_changes,
                                       math.inf if release is None else release, hold, clip)
    return int(pos.size), int(opens.size)
