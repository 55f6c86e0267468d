"""Compiled core of the Shiryaev-Roberts mixture of the error stream (numba): the
detector's kernel over a batch, and the alarm count calibration bisects on.

State: ``log R_j`` per shift of the grid (``-inf``: ``R_j = 0``, a fresh start).  For each
valid value ``x`` (finite, winsorised to ``[lo, hi]``) every component advances as
``R_j <- (1 + R_j) · exp(c_j + d_j·x)`` (the likelihood ratio of a rate moved by the
``j``-th shift, linear in ``x``), and the statistic is ``log Σ_j w_j R_j``; it alarms when
that crosses ``log A`` and then restarts (every ``R_j`` back to 0), or with episodes goes
on until the episode closes (see :func:`sr_kernel`).  The Python side is in
:mod:`detectors.concept_sr`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, error_model="numpy")
def _log1p_exp(v: float) -> float:
    """``log(1 + e^v)`` without overflow (``v = -inf`` gives 0)."""
    if v > 30.0:
        return v + math.log1p(math.exp(-v))
    return math.log1p(math.exp(v))


@njit(cache=True, nogil=True, error_model="numpy")
def _step(logr, c, d, logw, x):
    """One value into every shift's log statistic ``logr`` (in place); returns the largest
    weighted one, ``max_j logr[j] + logw[j]``."""
    top = -np.inf
    for j in range(c.size):
        v = _log1p_exp(logr[j]) + c[j] + d[j] * x
        logr[j] = v
        if v + logw[j] > top:
            top = v + logw[j]
    return top


@njit(cache=True, nogil=True, error_model="numpy")
def sr_kernel(values, c, d, logw, log_a, lo, hi, logr, out, out_stat, out_close, fstate,
              istate, hold, rel_level, cap):
    """Feed ``values``; write alarm positions and statistics to ``out``/``out_stat`` and
    episode closes to ``out_close``; return ``(alarms, closes)``.  ``logr`` (one per
    component) is updated in place.  ``fstate``: the statistic after the last valid value,
    the open episode's peak; ``istate``: episode open, valid values in a row at or below
    ``rel_level`` in the open episode, whether the last valid value crossed.

    With ``hold`` 0 every crossing is an alarm and the statistic restarts (all ``R_j`` at
    0): the renewal alarms calibration counts.  Otherwise a crossing opens an episode and
    the statistic goes on, scaled down to at most ``cap`` (as a CUSUM's sums are capped), so
    a persisting drift holds it high; the episode closes once ``hold`` valid values in a row
    have left it at or below ``rel_level``, and the statistic restarts there."""
    g = c.size
    m = 0
    nc = 0
    stat = fstate[0]
    peak = fstate[1]
    ep = istate[0]
    quiet = istate[1]
    crossed = istate[2]
    for i in range(values.size):
        x = values[i]
        if not (abs(x) <= 1e100):  # NaN, inf, absurd: skipped, no tick
            continue
        x = min(max(x, lo), hi)
        top = _step(logr, c, d, logw, x)
        tot = 0.0
        for j in range(g):
            tot += math.exp(logr[j] + logw[j] - top)
        stat = top + math.log(tot)
        crossed = 1 if stat > log_a else 0
        if hold == 0:
            if crossed:
                out[m] = i
                out_stat[m] = stat
                m += 1
                for j in range(g):
                    logr[j] = -np.inf
                stat = -np.inf
            continue
        if ep == 0:
            if crossed:
                out[m] = i
                out_stat[m] = stat
                m += 1
                ep = 1
                peak = stat
                quiet = 0
        else:
            if stat > peak:
                peak = stat
            if stat > rel_level:
                quiet = 0
            else:
                quiet += 1
                if quiet >= hold:
                    ep = 0
                    quiet = 0
                    out_close[nc] = i
                    nc += 1
                    for j in range(g):
                        logr[j] = -np.inf
                    stat = -np.inf
        if stat > cap:
            for j in range(g):
                logr[j] -= stat - cap
            stat = cap
    fstate[0] = stat
    fstate[1] = peak
    istate[0] = ep
    istate[1] = quiet
    istate[2] = crossed
    return m, nc


@njit(cache=True, nogil=True, error_model="numpy")
def sr_alarm_count(paths, c, d, logw, log_a, lo, hi):
    """Alarms (with their restarts) over the rows of ``paths``, each from a fresh start."""
    g = c.size
    logr = np.empty(g)
    total = 0
    for p in range(paths.shape[0]):
        for j in range(g):
            logr[j] = -np.inf
        row = paths[p]
        for i in range(row.size):
            x = min(max(row[i], lo), hi)
            top = _step(logr, c, d, logw, x)
            if top <= log_a:  # the mixture is at most top + log(g): often decided here
                tot = 0.0
                for j in range(g):
                    tot += math.exp(logr[j] + logw[j] - top)
                if top + math.log(tot) <= log_a:
                    continue
            total += 1
            for j in range(g):
                logr[j] = -np.inf
    return total
