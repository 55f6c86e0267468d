"""Segment summaries of the CUSUM: one CUSUM over several monitors' streams (issue 14).

Each step of a one-sided CUSUM of :class:`~detectors.cusum.CUSUM` is the clamp
``S -> min(max(S + x, 0), C)`` (``x`` the standardised value minus the allowance, or its
negative minus the allowance for the lower sum; ``C`` the cap, ``2h``).  Clamps compose into
clamps, ``g(S) = min(max(S + a, lo), hi)``, so a segment of values summarised by
``(a, lo, hi)`` carries any start ``S0`` to the end state exactly, whatever the segment's
length.  Before the first crossing of ``h`` the cap does not bind (it is above ``h``), so the
segment's peak from ``S0`` crosses ``h`` exactly when ``max(S0 + P, L) > h``, ``P`` the
largest prefix sum of the ``x`` and ``L`` the largest value of the floored sum started at 0
(the max-subarray monoid's prefix and subarray maxima).  And the sum touches 0 in the
segment (which re-arms it) exactly when some prefix clamp maps ``S0`` to 0: ``hi_j == 0``
for some ``j`` (``zall``), or ``S0 + a_j <= 0`` for some ``j`` with ``lo_j == 0`` (``zmin``,
the least such ``a_j``).

A fold of summaries in any order is thus one CUSUM over the concatenation of their
segments: the same end state, bit for bit when the values are exact in binary (sums of
dyadic numbers; in general the additions are associated differently and agree to
rounding), and the first alarm in the same segment as the event-level CUSUM's.  Under no
drift, independent values from several monitors concatenated in any order are distributed
as one stream, so the per-event threshold keeps its false-alarm rate counted in total
events.  Limits of the fold (see :func:`fold`): at most one alarm per segment and side, and
after an alarm the sum re-arms only from a later segment that touches 0, so it raises no
more alarms than the event-level CUSUM (some a segment later), and its first alarm from an
armed state is in the same segment.

``bench/bench_pooled_cusum.py`` measures what this gives for a drift counted in total
events: the fold is exact over the order it is given, so the delay depends on how finely
the monitors' segments interleave in event time.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from detectors.cusum import CAP_FACTOR

__all__ = ["FIELDS", "N_FIELDS", "fold", "fold_kernel", "standardise", "summarise"]

#: the fields of a side's summary, in order (``zall`` is 1.0 or 0.0)
FIELDS = ("a", "lo", "hi", "pmax", "lmax", "zall", "zmin")
N_FIELDS = len(FIELDS)
_A, _LO, _HI, _PMAX, _LMAX, _ZALL, _ZMIN = range(N_FIELDS)


@njit(cache=True, nogil=True, error_model="numpy")
def _standardise(values, mean, inv_scale, lo, hi, out):  # pragma: no cover - compiled
    n = 0
    for i in range(values.size):
        x = values[i]
        if not np.isfinite(x) or abs(x) > 1e100:
            continue
        x = min(max(x, lo), hi)
        out[n] = (x - mean) * inv_scale
        n += 1
    return n


def standardise(values: np.ndarray, mean: float, scale: float,
                clip: tuple[float, float] | None = None) -> np.ndarray:
    """The standardised values the CUSUM's kernel steps with: non-finite and ``|x| > 1e100``
    dropped, the others winsorised to ``clip`` and ``(x - mean) / scale``, computed as the
    kernel does (``(x - mean) * (1 / scale)``)."""
    arr = np.ascontiguousarray(values, dtype=np.float64)
    lo, hi = clip if clip is not None else (-math.inf, math.inf)
    out = np.empty(arr.size, dtype=np.float64)
    n = _standardise(arr, float(mean), 1.0 / float(scale), float(lo), float(hi), out)
    return out[:n]


@njit(cache=True, nogil=True, error_model="numpy")
def _summarise(z, bounds, k, cap, capn, out):  # pragma: no cover - compiled
    for s in range(bounds.size - 1):
        for side in range(2):
            c = cap if side == 0 else capn
            a = 0.0
            lo = -np.inf
            hi = np.inf
            pmax = -np.inf
            lfl = 0.0
            lmax = 0.0
            zall = 0.0
            zmin = np.inf
            for i in range(bounds[s], bounds[s + 1]):
                # the kernel's association: (S + z) - k for the upper sum, (S - z) - k lower
                if side == 0:
                    a = (a + z[i]) - k
                    lo = min(max((lo + z[i]) - k, 0.0), c)
                    hi = min(max((hi + z[i]) - k, 0.0), c)
                    lfl = max((lfl + z[i]) - k, 0.0)
                else:
                    a = (a - z[i]) - k
                    lo = min(max((lo - z[i]) - k, 0.0), c)
                    hi = min(max((hi - z[i]) - k, 0.0), c)
                    lfl = max((lfl - z[i]) - k, 0.0)
                pmax = max(pmax, a)
                lmax = max(lmax, lfl)
                if hi == 0.0:
                    zall = 1.0
                if lo == 0.0 and a < zmin:
                    zmin = a
            if bounds[s + 1] == bounds[s]:  # empty: the identity, and a peak of S0
                lo = 0.0
                hi = c
                pmax = 0.0
            out[s, side, _A] = a
            out[s, side, _LO] = lo
            out[s, side, _HI] = hi
            out[s, side, _PMAX] = pmax
            out[s, side, _LMAX] = lmax
            out[s, side, _ZALL] = zall
            out[s, side, _ZMIN] = zmin


def summarise(z: np.ndarray, bounds: np.ndarray, k: float, h: float,
              h_down: float | None = None, cap_factor: float = CAP_FACTOR) -> np.ndarray:
    """Summaries of the segments ``z[bounds[s]:bounds[s + 1]]`` of standardised values, an
    array ``(segments, 2, N_FIELDS)``: side 0 the upper sum (steps ``z - k``), side 1 the
    lower (``-z - k``), fields :data:`FIELDS`.  ``k`` is the allowance in use
    (``CUSUM.allowance``); the caps are ``cap_factor`` times ``h`` and ``h_down``."""
    z = np.ascontiguousarray(z, dtype=np.float64)
    b = np.ascontiguousarray(bounds, dtype=np.int64)
    if b.size < 1 or b[0] < 0 or b[-1] > z.size or (np.diff(b) < 0).any():
        raise ValueError("bounds must be non-decreasing offsets into z")
    out = np.empty((max(b.size - 1, 0), 2, N_FIELDS), dtype=np.float64)
    hn = h if h_down is None else h_down
    _summarise(z, b, float(k), cap_factor * float(h), cap_factor * float(hn), out)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def fold_kernel(summ, order, state, h, hn, cap_factor, peaks, alarms):  # pragma: no cover - compiled
    """Fold the summaries ``summ[order[i]]`` in turn into ``state`` (``[S+, S-, armed+,
    armed-]``, updated in place); ``peaks[i]`` receives the segment's capped peak of
    ``max(S+, S- * h / hn)``, ``alarms[i]`` 1 when the segment raised an alarm.  Returns the
    number of alarms."""
    m = 0
    rn = h / hn
    for i in range(order.size):
        s = order[i]
        raised = False
        top = 0.0
        for side in range(2):
            s0 = state[side]
            hh = h if side == 0 else hn
            c = summ[s, side, _HI]  # the end state from S0 = cap is at most hi
            peak = max(s0 + summ[s, side, _PMAX], summ[s, side, _LMAX])
            armed = state[2 + side] == 1.0
            if armed and peak > hh:
                raised = True
                state[2 + side] = 0.0
            elif not armed and (summ[s, side, _ZALL] == 1.0 or s0 + summ[s, side, _ZMIN] <= 0.0):
                state[2 + side] = 1.0
            end = min(max(s0 + summ[s, side, _A], summ[s, side, _LO]), c)
            state[side] = end
            cap = cap_factor * hh
            p = min(peak, cap) * (1.0 if side == 0 else rn)
            if p > top:
                top = p
        peaks[i] = top
        alarms[i] = 1 if raised else 0
        if raised:
            m += 1
    return m


def fold(summ: np.ndarray, state: np.ndarray, h: float, h_down: float | None = None,
         order: np.ndarray | None = None, cap_factor: float = CAP_FACTOR,
         ) -> tuple[np.ndarray, np.ndarray]:
    """Fold segment summaries (:func:`summarise`) into ``state`` (float64 ``[S+, S-,
    armed+, armed-]``, armed 1.0 / 0.0; a fresh CUSUM is ``[0, 0, 1, 1]``), in ``order``
    (default: as given).  Returns each segment's capped peak and whether it raised an
    alarm (a sum crossing its threshold while armed).

    Exact for the end state and for the first alarm from an armed state.  A segment raises
    at most one alarm per side, and a sum that alarmed re-arms only in a later segment that
    touches 0.  The event-level CUSUM can alarm again inside a segment (the fold then
    alarms a segment later, or not at all), so the fold never raises more alarms than it."""
    o = np.arange(summ.shape[0], dtype=np.int64) if order is None else \
        np.ascontiguousarray(order, dtype=np.int64)
    peaks = np.empty(o.size, dtype=np.float64)
    alarms = np.empty(o.size, dtype=np.int64)
    hn = h if h_down is None else h_down
    fold_kernel(np.ascontiguousarray(summ), o, state, float(h), float(hn), float(cap_factor),
                peaks, alarms)
    return peaks, alarms.astype(bool)
