"""Compiled core of the window tests (numba): one pass over a batch, no per-call numpy work.

The window of a :class:`~detectors.window.WindowTest` is a ring of
``window / cadence`` chunk histograms kept as a circular buffer (``buf``, shape
``(chunks, bins)``), the histogram of the unfinished chunk (``partial``) and the
running sum of the ring (``win``).  Each value adds one to its bin of
``partial``; when a chunk completes it replaces the oldest chunk of the ring and
``win`` is updated by the difference, so a test costs ``O(bins)`` whatever the
window.  The integer state ``ist`` is ``[next slot, chunks in the ring, values
in partial]``.  The multi-scale chi2 test sums the newest chunks of the ring
for each of its shorter windows, ``O(chunks × bins)`` per test.

The statistics are computed as the numpy engine computed them: KS and the rates
from the same integer counts with the same single float division (exact, bit
for bit), the G statistic and the total variation in numpy's pairwise summation
order.  The ``log`` is the C library's, which numpy uses too unless it was built
with a SIMD ``log`` of its own (AVX-512), where G may differ in the last bit.

Inputs are ``int64`` codes; the bin of a code is ``(code >> shift) & mask``
(``shift=0, mask=-1`` for plain bins), so the column monitor can pack a bin and
a flag in one code and feed two windows from one array.  A batch of ``n``
copies of one bin (``const_bin >= 0``) is advanced chunk by chunk without
materialising it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "CODE_INVALID",
    "CODE_MISSING",
    "KIND_CHI2",
    "KIND_GENERIC",
    "KIND_KS",
    "KIND_RATE",
    "classify_numeric",
    "window_kernel",
]

#: the statistic computed in the kernel (GENERIC: window histograms are returned instead)
KIND_GENERIC, KIND_KS, KIND_CHI2, KIND_RATE = 0, 1, 2, 3
#: codes of :func:`classify_numeric` (and of the categorical hot path) for unusable values
CODE_MISSING, CODE_INVALID = -1, -2

#: An open episode of a rate test also holds while the flags among the values since it
#: opened (fresh values only, at most the last ``len(hbuf)`` chunks: RATE_HOLD_WINDOWS
#: windows) are significantly above the baseline rate ``hold_p0``: while
#: ``n · KL(k / n ‖ p0) > RATE_HOLD_LOG_LEVEL`` (Chernoff's bound on the binomial tail,
#: ``P(Bin(n, p0) ≥ k) ≤ exp(-n · KL)``, here at most 0.1).  A rate shift smaller than the
#: threshold (crossed now and then) is then one episode, not one per crossing; on clean
#: data the fresh count is rarely significant, so the episode closes as before.  The
#: horizon is bounded so that the flags of a burst stop holding the episode once the
#: burst is that far behind.
RATE_HOLD_LOG_LEVEL = math.log(10.0)
RATE_HOLD_WINDOWS = 4

#: An open episode of a KS test also holds while the values since it opened (fresh values
#: only, at most the newest KS_HOLD_WINDOWS windows of them) are significantly different
#: from the reference: while ``2 · n_eff · D² > KS_HOLD_LOG_LEVEL``, ``D`` their KS distance
#: to the reference (on its bins) and ``n_eff = n·m / (n + m)`` with ``m`` the reference's
#: size (Dvoretzky–Kiefer–Wolfowitz: ``P(D > d) ≤ 2·exp(-2·n_eff·d²)``, here at most 0.1;
#: ``m`` keeps a small reference's own sampling error from holding an episode forever).  A
#: weak shift whose window statistic dips below the release level now and then is then one
#: episode; on clean data the fresh values are rarely significant, so the episode closes as
#: before.  The horizon is bounded so that a burst stops holding its episode once it is
#: that far behind.
KS_HOLD_LOG_LEVEL = math.log(20.0)
KS_HOLD_WINDOWS = 2

#: numpy's pairwise summation block (``PW_BLOCKSIZE``)
_PW_BLOCK = 128
#: up to this many bin edges, a value's bin is found by counting (SIMD) rather than bisecting
_LINEAR_EDGES = 160


@njit(cache=True, nogil=True)
def _pairwise_leaf(a, lo, n):  # pragma: no cover - compiled
    """A block of at most ``_PW_BLOCK`` values, as numpy's ``pairwise_sum_DOUBLE``."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0 = a[lo]
    r1 = a[lo + 1]
    r2 = a[lo + 2]
    r3 = a[lo + 3]
    r4 = a[lo + 4]
    r5 = a[lo + 5]
    r6 = a[lo + 6]
    r7 = a[lo + 7]
    i = 8
    stop = n - n % 8
    while i < stop:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True, nogil=True)
def _pairwise(a, lo, n):  # pragma: no cover - compiled
    """``a[lo:lo + n]`` summed in the order of numpy's ``pairwise_sum_DOUBLE``.

    Above a block, numpy sums the halves (split at a multiple of 8) recursively;
    this walks the same tree with an explicit stack (a cached numba function
    must not call itself).
    """
    if n <= _PW_BLOCK:
        return _pairwise_leaf(a, lo, n)
    s_lo = np.empty(64, dtype=np.int64)
    s_n = np.empty(64, dtype=np.int64)
    s_stage = np.empty(64, dtype=np.int64)
    s_left = np.empty(64, dtype=np.float64)
    top = 0
    s_lo[0] = lo
    s_n[0] = n
    s_stage[0] = 0
    ret = 0.0
    while top >= 0:
        cn = s_n[top]
        cl = s_lo[top]
        if cn <= _PW_BLOCK:  # a leaf: its sum goes to the parent
            ret = _pairwise_leaf(a, cl, cn)
            top -= 1
            continue
        h = cn // 2
        h -= h % 8
        stage = s_stage[top]
        if stage == 0:  # sum the left half first
            s_stage[top] = 1
            top += 1
            s_lo[top] = cl
            s_n[top] = h
            s_stage[top] = 0
        elif stage == 1:  # left half done: keep it, sum the right half
            s_left[top] = ret
            s_stage[top] = 2
            top += 1
            s_lo[top] = cl + h
            s_n[top] = cn - h
            s_stage[top] = 0
        else:  # both halves done
            ret = s_left[top] + ret
            top -= 1
    return ret


@njit(cache=True, nogil=True)
def _np_sum(a):  # pragma: no cover - compiled
    """``np.add.reduce(a)`` of a contiguous row, bit for bit (identity 0.0, then pairwise)."""
    return 0.0 + _pairwise(a, 0, a.shape[0])


@njit(cache=True, nogil=True)
def _statistic(kind, win, ref, probs, w, base, tmp):  # pragma: no cover - compiled
    """Statistic and effect size of one window histogram ``win``."""
    k = win.shape[0]
    if kind == KIND_KS:
        # max |cumsum(win[:-1]) / window - ref_cdf|
        c = 0
        d = 0.0
        for j in range(k - 1):
            c += win[j]
            x = abs(c / w - ref[j])
            if x > d:
                d = x
        return d, d
    if kind == KIND_CHI2:
        return _g_and_tv(win, ref, probs, w, tmp)
    # KIND_RATE
    rate = win[1] / w
    return rate, rate - base


@njit(cache=True, nogil=True)
def rate_held(k, n, p0):  # pragma: no cover - compiled
    """Whether ``k`` flags among ``n`` values are significantly above the rate ``p0``
    (see RATE_HOLD_LOG_LEVEL)."""
    if n <= 0 or p0 <= 0.0:
        return False
    q = k / n
    if q <= p0:
        return False
    kl = q * math.log(q / p0)
    if q < 1.0:
        kl += (1.0 - q) * math.log((1.0 - q) / (1.0 - p0))
    return n * kl > RATE_HOLD_LOG_LEVEL


@njit(cache=True, nogil=True)
def ks_held(hist, ref, n, m):  # pragma: no cover - compiled
    """Whether the histogram ``hist`` of ``n`` values is significantly different from the
    reference CDF ``ref`` (at the upper edges of all bins but the last) of ``m`` values
    (see KS_HOLD_LOG_LEVEL)."""
    if n <= 0 or m <= 0.0:
        return False
    c = 0
    d = 0.0
    for j in range(hist.shape[0] - 1):
        c += hist[j]
        x = abs(c / n - ref[j])
        if x > d:
            d = x
    return 2.0 * (n * m / (n + m)) * d * d > KS_HOLD_LOG_LEVEL


@njit(cache=True, nogil=True)
def _g_and_tv(hist, ref, probs, w, tmp):  # pragma: no cover - compiled
    """G statistic and total variation of one window histogram of ``w`` values."""
    k = hist.shape[0]
    for j in range(k):
        o = float(hist[j])
        tmp[j] = o * (math.log(o / w) - ref[j]) if o > 0 else 0.0
    g = 2.0 * _np_sum(tmp)
    if not g >= 0.0:  # np.maximum(g, 0.0) (g is never NaN)
        g = 0.0
    for j in range(k):
        tmp[j] = abs(hist[j] / w - probs[j])
    return g, 0.5 * _np_sum(tmp)


@njit(cache=True, nogil=True)
def _multiscale_g(buf, pos, scales, cadence, ref, probs, tmp, acc):  # pragma: no cover
    """Largest G over the windows of the newest ``scales[i]`` chunks, and that window's TV.

    ``pos`` is the slot after the newest chunk of the ring ``buf``; ``scales``
    ascends.  Ties keep the shorter window.
    """
    nch = buf.shape[0]
    k = buf.shape[1]
    for j in range(k):
        acc[j] = 0
    best = -1.0
    best_tv = 0.0
    si = 0
    slot = pos
    for c in range(1, nch + 1):
        slot -= 1
        if slot < 0:
            slot = nch - 1
        for j in range(k):
            acc[j] += buf[slot, j]
        if c == scales[si]:
            g, tv = _g_and_tv(acc, ref, probs, float(c * cadence), tmp)
            if g > best:
                best = g
                best_tv = tv
            si += 1
            if si == scales.shape[0]:
                break
    return best, best_tv


@njit(cache=True, nogil=True)
def window_kernel(codes, n, const_bin, shift, mask, cadence, buf, win, partial, ist,
                  kind, ref, probs, w, base, threshold, min_effect, active,
                  want_all, scales, release_level, release_values, hold_p0, hbuf,
                  fst, hold_m, hks):  # pragma: no cover - compiled
    """Feed ``n`` values to a window (the engine of ``scan`` and ``update_bins``).

    The values are ``(codes >> shift) & mask``, or ``n`` copies of ``const_bin``
    when it is ``>= 0`` (``codes`` is then ignored).  Returns ``(stats, effects,
    test_idx, hists, hit_idx, hit_stats, close_idx, n_tests, active, last_stat,
    last_effect, ok)``:

    * with ``want_all``, the statistic, effect and index of every test (for
      KIND_GENERIC, the window histogram of every test in ``hists`` instead);
    * ``hit_*``: the tests at which an episode opened (statistic above
      ``threshold``, effect at least ``min_effect``, no episode open), starting
      from ``active``;
    * ``close_idx``: the tests at
      which the open episode closed, because for ``release_values`` values
      (``ist[3]`` counts them) no test showed evidence (statistic above
      ``release_level`` with the effect at least ``min_effect`` scaled as the
      release level is scaled from the threshold) and, with ``hold_p0 > 0`` (rate
      tests), the flags of the values since the episode opened were not significantly
      above ``hold_p0`` (:func:`rate_held`; ``hbuf`` is the ring of the flags of the
      newest fresh chunks, ``ist[4]`` chunks in it, ``ist[5]`` their flags, ``ist[6]``
      the next slot);  with ``hold_m > 0`` (KS tests; the reference's size), while the
      values since the episode opened are significantly different from the reference
      (:func:`ks_held`; ``hks`` is the ring of the histograms of the newest fresh chunks,
      its last row their sum, ``ist[4]`` chunks in it, ``ist[6]`` the next slot);
    * arrays that would be empty are ``None`` (cheaper to hand back to Python).

    ``fst[0]`` holds the largest statistic of the open (or last) episode.

    With more than one entry in ``scales`` (ascending chunk counts, the last
    one the whole ring), a KIND_CHI2 test is the largest G over the windows of
    the newest ``scales[i]`` chunks, with the total variation of that window.

    Nothing changes, and ``ok`` is False, when a bin is out of range.
    """
    k = win.shape[0]
    nch = buf.shape[0]
    pos = ist[0]
    count = ist[1]
    pn = ist[2]
    generic = kind == KIND_GENERIC
    m = (pn + n) // cadence
    n_all = m if want_all else 0
    stats = np.empty(n_all if not generic else 0, dtype=np.float64)
    effects = np.empty(n_all if not generic else 0, dtype=np.float64)
    test_idx = np.empty(n_all, dtype=np.int64)
    hists = np.empty((n_all if generic else 0, k), dtype=np.int64)
    hit_idx = np.empty(m if not generic else 0, dtype=np.int64)
    hit_stats = np.empty(m if not generic else 0, dtype=np.float64)
    close_idx = np.empty(m if not generic else 0, dtype=np.int64)
    quiet = ist[3]
    n_open = ist[4]
    k_open = ist[5]
    hpos = ist[6]
    hlen = hbuf.shape[0]
    krows = hks.shape[0] - 1
    ks_hold = hold_m > 0.0 and kind == KIND_KS and krows > 0 and hks.shape[1] == k
    peak = fst[0]
    n_closes = 0
    # the effect size has the same hysteresis as the statistic
    release_effect = min_effect * (release_level / threshold) if threshold > 0 else 0.0
    if const_bin >= 0:
        bad = const_bin >= k
    else:
        bad = False
        for i in range(n):
            b = (codes[i] >> shift) & mask
            bad |= (b < 0) | (b >= k)
    if bad:
        return None, None, None, None, None, None, None, 0, active, 0.0, 0.0, False
    tmp = np.empty(k, dtype=np.float64)
    acc = np.empty(k, dtype=np.int64)
    multiscale = kind == KIND_CHI2 and scales.shape[0] > 1
    n_tests = 0
    n_hits = 0
    last_stat = 0.0
    last_eff = 0.0
    i = 0
    while i < n:
        take = min(cadence - pn, n - i)
        if const_bin >= 0:
            partial[const_bin] += take
        elif k == 2:  # flags: a vectorisable count
            s = 0
            for t in range(i, i + take):
                s += (codes[t] >> shift) & mask
            partial[1] += s
            partial[0] += take - s
        else:
            for t in range(i, i + take):
                partial[(codes[t] >> shift) & mask] += 1
        i += take
        pn += take
        if pn < cadence:
            break
        chunk_flags = partial[1] if k == 2 else 0
        # a chunk is complete: it replaces the oldest chunk of the ring
        if count == nch:
            for j in range(k):
                win[j] += partial[j] - buf[pos, j]
                buf[pos, j] = partial[j]
                partial[j] = 0
        else:
            for j in range(k):
                win[j] += partial[j]
                buf[pos, j] = partial[j]
                partial[j] = 0
            count += 1
        pos += 1
        if pos == nch:
            pos = 0
        pn = 0
        if count < nch:
            continue
        at = i - 1  # the value that completed the chunk
        if generic:
            if want_all:
                for j in range(k):  # (a loop: slice assignment is slow to compile)
                    hists[n_tests, j] = win[j]
                test_idx[n_tests] = at
            n_tests += 1
            continue
        if multiscale:
            st, eff = _multiscale_g(buf, pos, scales, cadence, ref, probs, tmp, acc)
        else:
            st, eff = _statistic(kind, win, ref, probs, w, base, tmp)
        if want_all:
            stats[n_tests] = st
            effects[n_tests] = eff
            test_idx[n_tests] = at
        n_tests += 1
        if not active:
            if (st > threshold) and (eff >= min_effect):  # an episode opens
                hit_idx[n_hits] = at
                hit_stats[n_hits] = st
                n_hits += 1
                active = True
                quiet = 0
                n_open = 0
                k_open = 0
                hpos = 0
                for j in range(hlen):
                    hbuf[j] = 0
                if ks_hold:
                    for r in range(krows + 1):
                        for j in range(k):
                            hks[r, j] = 0
                peak = st
        else:
            if hold_p0 > 0.0:  # the chunk enters the ring of fresh chunks
                k_open += chunk_flags - hbuf[hpos]
                hbuf[hpos] = chunk_flags
                hpos += 1
                if hpos == hlen:
                    hpos = 0
                if n_open < hlen:
                    n_open += 1
            elif ks_hold:  # the chunk's histogram enters the ring of fresh chunks
                slot = pos - 1 if pos > 0 else nch - 1
                for j in range(k):
                    hks[krows, j] += buf[slot, j] - hks[hpos, j]
                    hks[hpos, j] = buf[slot, j]
                hpos += 1
                if hpos == krows:
                    hpos = 0
                if n_open < krows:
                    n_open += 1
            if (st > release_level) and (eff >= release_effect):  # the evidence persists
                quiet = 0
                if st > peak:
                    peak = st
            elif hold_p0 > 0.0 and rate_held(k_open, n_open * cadence, hold_p0):
                quiet = 0  # the rate since the episode opened is still above the baseline's
            elif ks_hold and ks_held(hks[krows], ref, n_open * cadence, hold_m):
                quiet = 0  # the values since the episode opened still differ from the reference
            else:
                quiet += cadence
                if quiet >= release_values:  # quiet long enough: the episode closes
                    close_idx[n_closes] = at
                    n_closes += 1
                    active = False
                    quiet = 0
        last_stat = st
        last_eff = eff
    ist[0] = pos
    ist[1] = count
    ist[2] = pn
    ist[3] = quiet
    ist[4] = n_open
    ist[5] = k_open
    ist[6] = hpos
    fst[0] = peak
    closes = close_idx[:n_closes] if n_closes else None
    if want_all and n_tests:
        if generic:
            return (None, None, test_idx[:n_tests], hists[:n_tests], None, None, None, n_tests,
                    active, last_stat, last_eff, True)
        return (stats[:n_tests], effects[:n_tests], test_idx[:n_tests], None, None, None,
                closes, n_tests, active, last_stat, last_eff, True)
    if n_hits:
        return (None, None, None, None, hit_idx[:n_hits], hit_stats[:n_hits], closes, n_tests,
                active, last_stat, last_eff, True)
    return None, None, None, None, None, None, closes, n_tests, active, last_stat, last_eff, True


@njit(cache=True, nogil=True)
def classify_numeric(x, edges, lo, hi):  # pragma: no cover - compiled
    """Code of each value of a numeric batch, and the counts of each kind of code.

    ``NaN`` → CODE_MISSING, ``±inf`` → CODE_INVALID, a finite value →
    ``bin << 1 | out_of_range`` where ``bin`` is
    ``np.searchsorted(edges, value, side="left")`` and ``out_of_range`` is
    ``value < lo or value > hi``.  Returns ``(codes, n_missing, n_invalid,
    n_out_of_range)``.
    """
    n = x.shape[0]
    ne = edges.shape[0]
    codes = np.empty(n, dtype=np.int64)
    n_missing = 0
    n_invalid = 0
    n_oor = 0
    for i in range(n):
        v = x[i]
        if v != v:
            codes[i] = CODE_MISSING
            n_missing += 1
            continue
        if v == np.inf or v == -np.inf:
            codes[i] = CODE_INVALID
            n_invalid += 1
            continue
        # searchsorted(side="left") = the number of edges < v (edges sorted, NaN-free):
        # a vectorised count over few edges, a binary search over many
        b = 0
        if ne <= _LINEAR_EDGES:
            for j in range(ne):
                b += edges[j] < v
        else:
            length = ne
            while length > 0:
                half = length >> 1
                if edges[b + half] < v:
                    b += half + 1
                    length -= half + 1
                else:
                    length = half
        oor = 1 if (v < lo or v > hi) else 0
        n_oor += oor
        codes[i] = (b << 1) | oor
    return codes, n_missing, n_invalid, n_oor


@njit(cache=True, nogil=True)
def episode_counts(stats, starts, thresholds, release, release_tests,
                   floor):  # pragma: no cover
    """Episodes a window test would open over simulated paths, for each threshold.

    ``stats`` holds the test statistics of all paths back to back, path ``p``
    at ``stats[starts[p]:starts[p + 1]]``.  For threshold ``t`` an episode opens
    at a test above ``t`` while none is open and closes after ``release_tests``
    tests in a row at or below ``release * t``: the kernel's logic (with no
    effect size), the release level being ``max(release * t, floor)`` but at most ``t``.
    """
    out = np.zeros(thresholds.shape[0], dtype=np.int64)
    for j in range(thresholds.shape[0]):
        t = thresholds[j]
        rl = min(max(release * t, floor), t)
        c = 0
        for p in range(starts.shape[0] - 1):
            active = False
            quiet = 0
            for i in range(starts[p], starts[p + 1]):
                s = stats[i]
                if not active:
                    if s > t:
                        active = True
                        quiet = 0
                        c += 1
                elif s > rl:
                    quiet = 0
                else:
                    quiet += 1
                    if quiet >= release_tests:
                        active = False
                        quiet = 0
        out[j] = c
    return out
