"""Compiled core of the CUSUM (numba): the detector's kernel over a batch, and the
excursion kernels calibration reads.

:func:`_cusum_kernel` advances the two sums, the episode (its moving average and the
hold since it opened) and the alarm bookkeeping of a :class:`~detectors.cusum.CUSUM` over a
whole batch, branch-free on the hot path; its state lives in the detector's small float
and integer vectors (the ``_S_*``, ``_N_*`` … indices below).  :func:`_excursion_kernel`
records the heights and spans of the sums' excursions over standardised values, and
:func:`cusum_episode_count` counts the episodes they form, which is how
:func:`~detectors.calibration.calibrate_cusum` reads the false-alarm rate of every
threshold in one pass.  The Python side (validation, state, the public wrappers) is in
:mod:`detectors.cusum`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# indices into the kernel's state vectors
_S_POS, _S_NEG = 0, 1
_N_POS, _N_NEG, _N_ALARMS, _ARMED_POS, _ARMED_NEG, _EP_OPEN, _EP_QUIET = 0, 1, 2, 3, 4, 5, 6
_PEAK = 2
_EWMA = 3  # the episode's evidence: a moving average of the standardised values

#: An open episode also holds while the standardised values since it opened (at most the
#: newest MEAN_HOLD_BLOCKS release stretches of them, the current one partly) are
#: significantly away from the baseline: their mean, while ``S² / (2n) > MEAN_HOLD_LOG_LEVEL``,
#: ``S`` their sum and ``n`` their number (Chernoff's bound for unit-variance values,
#: ``P(|S| / n ≥ d) ≤ 2·exp(-n·d² / 2)``, here at most 0.1); or, with a clip (the values
#: then lie within ``±c``), their second moment above the baseline's 1, which raises the
#: sums' excursions as a shift does: while ``2·V² / (n·c⁴) > MEAN_HOLD_LOG_LEVEL``, ``V``
#: the sum of ``z² - 1`` (Hoeffding's bound, ``z²`` in ``[0, c²]``).  A shift whose sums and
#: moving average dip back to the baseline now and then is then one episode; on clean data
#: the values since the opening are rarely significant, so the episode closes as before.
#: The horizon is bounded so that a burst stops holding its episode once it is that far
#: behind.
MEAN_HOLD_LOG_LEVEL = math.log(20.0)
MEAN_HOLD_BLOCKS = 2


@njit(cache=True, nogil=True, error_model="numpy")
def _cusum_kernel(values, mean, inv_scale, k, h, cap, lo, hi, fstate, istate, out, out_stat,
                  counts, release, out_close, k_release, lam, hf, hi_, c4inv, h_neg, capn, rn):
    """Feed ``values``; write alarm positions and statistics; return how many.

    Non-finite values and ``|x| > 1e100`` are skipped (no tick); the others are
    winsorised to ``[lo, hi]`` first.  A sum crosses ``h`` while armed; it is then
    disarmed until it returns to 0, and never exceeds ``cap``.  A crossing opens
    an episode (an alarm, written to ``out``) unless one is open.  The episode stays
    open while a sum is disarmed or the exponentially weighted moving average of
    the standardised values (weight ``lam``) is beyond ``±k_release``, and closes
    once neither has been for ``release`` valid values (positions written to ``out_close``; their number
    to ``counts[2]``).  ``counts`` also receives the valid values after the last
    crossing and in all (for the hold of the statistic).  With ``release`` 0,
    every crossing is an alarm and there are no episodes.

    With ``hi_[3]`` set, the episode also holds while the standardised values since it
    opened are significantly away from 0 (MEAN_HOLD_LOG_LEVEL): ``hf[0]`` and ``hi_[0]``
    are the sum and number of them in the current block of ``release`` values,
    ``hf[1:nb + 1]`` the sums of the newest complete blocks (a ring of ``nb`` slots,
    ``hi_[1]`` of them filled, ``hi_[2]`` the next slot); ``hf[nb + 1:]`` the same sums of
    ``z² - 1``, which hold the episode where ``c4inv`` (``1 / c⁴``, ``c`` the largest
    standardised value) is above 0.  The lower sum has its own threshold ``h_neg`` and cap
    ``capn`` (``h`` and ``cap`` unless set); ``rn = h / h_neg`` puts it in the upper's units.
    """
    sp = fstate[_S_POS]
    sn = fstate[_S_NEG]
    np_ = istate[_N_POS]
    nn = istate[_N_NEG]
    ap = istate[_ARMED_POS]
    an = istate[_ARMED_NEG]
    ep = istate[_EP_OPEN]
    quiet = istate[_EP_QUIET]
    peak = fstate[_PEAK]
    ew = fstate[_EWMA]
    m = 0
    mc = 0
    valid = 0
    tail = 0
    mean_hold = hi_[3] == 1 and release > 0
    nblk = (hf.shape[0] - 2) // 2
    vo = nblk + 1  # where the sums of z² - 1 start
    vsum = hf[vo]
    vtot = 0.0
    hsum = hf[0]
    hn = hi_[0]
    hb = hi_[1]
    hpos = hi_[2]
    btot = 0.0  # the sum of the ring's blocks
    for j in range(hb):
        btot += hf[1 + j]
        vtot += hf[vo + 1 + j]
    for i in range(values.size):
        x = values[i]
        if not np.isfinite(x) or abs(x) > 1e100:
            continue
        valid += 1
        tail += 1
        # branch-free: under no drift a sum touches 0 about every other value, and a
        # mispredicted branch there would cost more than the arithmetic
        x = min(max(x, lo), hi)
        z = (x - mean) * inv_scale
        sp = min(max(sp + z - k, 0.0), cap)
        pos = sp > 0.0
        np_ = (np_ + 1) * pos
        ap = ap | (1 - pos)
        sn = min(max(sn - z - k, 0.0), capn)
        neg = sn > 0.0
        nn = (nn + 1) * neg
        an = an | (1 - neg)
        raised = False
        ew += lam * (z - ew)
        if sp > h and ap == 1:
            ap = 0
            raised = True
        if sn > h_neg and an == 1:
            an = 0
            raised = True
        top = sp if sp > sn * rn else sn * rn
        if raised and release == 0:  # no episodes: every crossing is an alarm
            out[m] = i
            out_stat[m] = top
            m += 1
            tail = 0
        elif raised:
            if ep == 0:
                ep = 1
                out[m] = i
                out_stat[m] = top
                m += 1
                peak = top
                hsum = 0.0
                hn = 0
                hb = 0
                hpos = 0
                btot = 0.0
                vsum = 0.0
                vtot = 0.0
            quiet = 0
            tail = 0
        elif ep == 1:
            # a sum has not returned to 0 since it crossed h, or the mean is still away
            hs = hsum + btot
            hnn = hn + hb * release
            if ap == 0 or an == 0 or abs(ew) > k_release:
                quiet = 0
            elif mean_hold and hnn > 0 and hs * hs > 2.0 * MEAN_HOLD_LOG_LEVEL * hnn:
                quiet = 0  # the mean since the episode opened is still away from the baseline
            elif (mean_hold and hnn > 0 and vsum + vtot > 0.0 and 2.0 * (vsum + vtot) ** 2
                  * c4inv > MEAN_HOLD_LOG_LEVEL * hnn):
                quiet = 0  # so is their second moment
            else:
                quiet += 1
                if quiet >= release:
                    ep = 0
                    quiet = 0
                    out_close[mc] = i
                    mc += 1
        if ep == 1 and top > peak:
            peak = top
        if ep == 1 and mean_hold:  # the value joins those since the episode opened
            hsum += z
            vsum += z * z - 1.0
            hn += 1
            if hn == release:  # a complete block enters the ring
                hf[1 + hpos] = hsum
                hf[vo + 1 + hpos] = vsum
                hpos += 1
                if hpos == nblk:
                    hpos = 0
                if hb < nblk:
                    hb += 1
                hsum = 0.0
                vsum = 0.0
                hn = 0
                btot = 0.0
                vtot = 0.0
                for j in range(hb):
                    btot += hf[1 + j]
                    vtot += hf[vo + 1 + j]
    hf[0] = hsum
    hf[vo] = vsum
    hi_[0] = hn
    hi_[1] = hb
    hi_[2] = hpos
    counts[0] = tail
    counts[1] = valid
    counts[2] = mc
    istate[_EP_OPEN] = ep
    istate[_EP_QUIET] = quiet
    fstate[_PEAK] = peak
    fstate[_EWMA] = ew
    fstate[_S_POS] = sp
    fstate[_S_NEG] = sn
    istate[_N_POS] = np_
    istate[_N_NEG] = nn
    istate[_ARMED_POS] = ap
    istate[_ARMED_NEG] = an
    istate[_N_ALARMS] += m
    return m



@njit(cache=True, nogil=True, error_model="numpy")
def _excursion_kernel(z, k, out, start, end, side):
    """Maxima of the completed excursions above 0 of both one-sided sums (no restart),
    with the index of each one's first value above 0 and of its return to 0 (``side`` 1:
    of the upper sum only, -1: of the lower sum only)."""
    sp = 0.0
    sn = 0.0
    mp = 0.0
    mn = 0.0
    bp = 0
    bn = 0
    m = 0
    for i in range(z.size):
        x = z[i]
        sp = sp + x - k if side >= 0 else 0.0
        if sp > 0.0:
            if mp == 0.0:
                bp = i
            if sp > mp:
                mp = sp
        else:
            sp = 0.0
            if mp > 0.0:
                out[m] = mp
                start[m] = bp
                end[m] = i
                m += 1
                mp = 0.0
        sn = sn - x - k if side <= 0 else 0.0
        if sn > 0.0:
            if mn == 0.0:
                bn = i
            if sn > mn:
                mn = sn
        else:
            sn = 0.0
            if mn > 0.0:
                out[m] = mn
                start[m] = bn
                end[m] = i
                m += 1
                mn = 0.0
    return m



@njit(cache=True, nogil=True)
def cusum_episode_count(top, start, end, h, rl, release):  # pragma: no cover - compiled
    """Episodes over excursions sorted by start (heights ``top``, spans ``start``-``end``).

    An excursion higher than ``h`` opens an episode unless one is open; one
    higher than ``rl`` (the release level) is evidence that keeps it open; it
    closes when the next evidence starts more than ``release`` values after the
    end of the last.
    """
    c = 0
    is_open = False
    last_end = -1
    for i in range(top.shape[0]):
        t = top[i]
        if t <= rl:
            continue
        if is_open and start[i] - last_end > release:
            is_open = False
        if not is_open:
            if t > h:
                is_open = True
                c += 1
                last_end = end[i]
        elif end[i] > last_end:
            last_end = end[i]
    return c

