"""Peer drift detectors for the benchmarks, and their tuning to a false-alarm rate.

Peers are fed one value at a time in a Python loop (``update(x)`` then
``drift_detected``), and reset after an alarm as they do natively:

``river_adwin_c1`` / ``river_adwin_c32``
    ``river.drift.ADWIN`` with ``clock=1`` and River's default ``clock=32``;
    tuned parameter ``delta``.
``river_kswin``
    River's KSWIN (``window_size=100, stat_size=30``, River's defaults); tuned
    parameter ``alpha``.  By default the benchmark runs :class:`KSWINClone`, a
    re-implementation of ``river.drift.KSWIN.update`` that makes the same calls
    to the same ``random.Random`` and takes the p-value from
    ``scipy.stats.ks_2samp`` (memoised: for fixed sample sizes it depends only
    on the statistic), so its output is identical to River's;
    :func:`check_kswin_clone` verifies that on every run.  River's own
    ``KSWIN.update`` costs ~370 µs per value (one ``ks_2samp`` call each), the
    clone ~30 µs, which is what makes 200 runs per cell affordable.
``river_ph``
    ``river.drift.PageHinkley`` (defaults, ``mode="both"``); tuned ``threshold``.
``cusum``
    Two-sided CUSUM on standardised values, ``k = 0.25`` σ (written here); tuned
    ``h``.

Tuning (:func:`tune_peer`) bisects the parameter so that the mean number of
values between alarms on a null stream matches the target.  The bisection uses
a fast simulator of the same algorithm on a fixed (common) null stream: our
River-bit-compatible ADWIN kernel for ADWIN, small numba kernels for
PageHinkley, CUSUM and KSWIN (KSWIN's kernel draws its subsample with numpy's
generator, so it is statistically, not bit-, identical).  The achieved ARL0 is
then measured with the peer itself (River's objects, the clone, the CUSUM
class) on an independent null stream by :func:`measure_arl`.
"""

from __future__ import annotations

import collections
import itertools
import math
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit
from river import drift as river_drift
from scipy import stats

PEERS = ("river_adwin_c1", "river_adwin_c32", "river_kswin", "river_ph", "cusum")
#: tuned parameter of each peer and whether the ARL0 rises with it
PARAM = {
    "river_adwin_c1": ("delta", False),
    "river_adwin_c32": ("delta", False),
    "river_kswin": ("alpha", False),
    "river_ph": ("threshold", True),
    "cusum": ("h", True),
}
#: bisection bracket of each parameter
BRACKET = {
    "river_adwin_c1": (1e-14, 0.99),
    "river_adwin_c32": (1e-14, 0.99),
    "river_kswin": (1e-14, 0.5),
    "river_ph": (0.5, 2000.0),
    "cusum": (0.1, 100.0),
}
CUSUM_K = 0.25
KSWIN_WINDOW, KSWIN_STAT = 100, 30


# -- the CUSUM peer -----------------------------------------------------------
class CUSUM:
    """Two-sided tabular CUSUM on standardised values.

    ``z = (x - mean) / sd``; ``S+ = max(0, S+ + z - k)``, ``S- = max(0, S- - z - k)``;
    alarm when either exceeds ``h``; both restart from 0 on the next value.
    """

    def __init__(self, h: float, k: float = CUSUM_K, mean: float = 0.0, sd: float = 1.0) -> None:
        self.h, self.k, self.mean = float(h), float(k), float(mean)
        self.inv_sd = 1.0 / float(sd) if sd > 0 else 1.0
        self.s_pos = self.s_neg = 0.0
        self.drift_detected = False

    def update(self, x: float) -> None:
        if self.drift_detected:
            self.s_pos = self.s_neg = 0.0
        z = (x - self.mean) * self.inv_sd
        sp = self.s_pos + z - self.k
        sn = self.s_neg - z - self.k
        self.s_pos = sp if sp > 0.0 else 0.0
        self.s_neg = sn if sn > 0.0 else 0.0
        self.drift_detected = self.s_pos > self.h or self.s_neg > self.h


# -- KSWIN, same output as river.drift.KSWIN, faster ----------------------------
_KS_MEMO: dict[tuple[int, int, int], tuple[float, float]] = {}


def _ks_h(a: list[float], b: list[float]) -> int:
    """Two-sample KS statistic as the integer ``h`` with ``D = h / lcm(n1, n2)``.

    ``D`` is the largest gap between the two empirical CDFs evaluated at every
    data point (right-continuous, so ties are handled as ``ks_2samp`` does).
    """
    a.sort()
    b.sort()
    n1, n2 = len(a), len(b)
    i = j = best = 0
    inf = math.inf
    while i < n1 or j < n2:
        va = a[i] if i < n1 else inf
        vb = b[j] if j < n2 else inf
        v = va if va < vb else vb
        while i < n1 and a[i] <= v:
            i += 1
        while j < n2 and b[j] <= v:
            j += 1
        d = i * n2 - j * n1
        if d < 0:
            d = -d
        if d > best:
            best = d
    return best // math.gcd(n1, n2)


def _ks_stat_p(a: list[float], b: list[float]) -> tuple[float, float]:
    """``(statistic, p-value)`` of ``ks_2samp(a, b, method="auto")``, memoised on ``h``."""
    key = (len(a), len(b), _ks_h(a, b))
    got = _KS_MEMO.get(key)
    if got is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            res = stats.ks_2samp(a, b, method="auto")
        got = (float(res.statistic), float(res.pvalue))
        _KS_MEMO[key] = got
    return got


class KSWINClone:
    """``river.drift.KSWIN`` step for step (same RNG calls, same test), ~12× faster."""

    def __init__(self, alpha: float = 0.005, window_size: int = KSWIN_WINDOW,
                 stat_size: int = KSWIN_STAT, seed: int | None = None) -> None:
        self.alpha, self.window_size, self.stat_size, self.seed = (
            alpha, window_size, stat_size, seed)
        self._reset()

    def _reset(self) -> None:
        self.drift_detected = False
        self.p_value = 0.0
        self.n = 0
        self.window: collections.deque[float] = collections.deque(maxlen=self.window_size)
        self._rng = random.Random(self.seed)
        self._range = range(self.window_size - self.stat_size)

    def update(self, x: float) -> None:
        if self.drift_detected:
            self._reset()
        self.n += 1
        w = self.window
        w.append(x)
        if len(w) >= self.window_size:
            rnd = [w[r] for r in self._rng.sample(self._range, self.stat_size)]
            recent = list(itertools.islice(w, self.window_size - self.stat_size,
                                           self.window_size))
            st, self.p_value = _ks_stat_p(rnd, recent)
            if self.p_value <= self.alpha and st > 0.1:
                self.drift_detected = True
                self.window = collections.deque(recent, maxlen=self.window_size)
            else:
                self.drift_detected = False
        else:
            self.drift_detected = False


def run_positions(det: Any, values: Sequence[float]) -> list[int]:
    """Positions at which a per-value detector signals, feeding ``values`` one by one."""
    out = []
    upd = det.update
    for i, v in enumerate(values):
        upd(v)
        if det.drift_detected:
            out.append(i)
    return out


def check_kswin_clone(n: int = 3000, alpha: float = 0.05, seed: int = 7) -> int:
    """Assert that :class:`KSWINClone` and River's KSWIN signal at the same positions.

    Uses normal values with a mean shift and a stretch of ties (rounded values),
    so that alarms, resets and tied samples all occur.  Returns the number of
    alarms compared.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x[n // 3: 2 * n // 3] += 0.8
    x[2 * n // 3:] = np.round(x[2 * n // 3:] * 2.0) / 2.0
    vals = x.tolist()
    ours = run_positions(KSWINClone(alpha=alpha, seed=seed), vals)
    ref = run_positions(river_drift.KSWIN(alpha=alpha, seed=seed), vals)
    if ours != ref:
        raise AssertionError(f"KSWIN clone differs from River: {ours[:10]} vs {ref[:10]}")
    return len(ref)


# -- peers by name ----------------------------------------------------------
def make_peer(name: str, param: float, mean: float = 0.0, sd: float = 1.0,
              seed: int | None = None, river_kswin: bool = False) -> Any:
    """A fresh peer; ``mean``/``sd`` standardise the input (only CUSUM uses them)."""
    if name == "river_adwin_c1":
        return river_drift.ADWIN(delta=param, clock=1)
    if name == "river_adwin_c32":
        return river_drift.ADWIN(delta=param, clock=32)
    if name == "river_kswin":
        if river_kswin:
            return river_drift.KSWIN(alpha=param, window_size=KSWIN_WINDOW,
                                     stat_size=KSWIN_STAT, seed=seed)
        return KSWINClone(alpha=param, seed=seed)
    if name == "river_ph":
        return river_drift.PageHinkley(threshold=param)
    if name == "cusum":
        return CUSUM(h=param, mean=mean, sd=sd)
    raise KeyError(name)


# -- fast simulators for tuning ---------------------------------------------
@njit(cache=True)
def _cusum_count(z, k, h):  # pragma: no cover - numba
    sp = 0.0
    sn = 0.0
    n = 0
    for i in range(z.shape[0]):
        sp = max(0.0, sp + z[i] - k)
        sn = max(0.0, sn - z[i] - k)
        if sp > h or sn > h:
            n += 1
            sp = 0.0
            sn = 0.0
    return n


@njit(cache=True)
def _ph_count(x, min_instances, delta, threshold, alpha):  # pragma: no cover - numba
    n = 0.0
    mean = 0.0
    s_inc = 0.0
    s_dec = 0.0
    min_inc = np.inf
    max_dec = -1.0
    alarms = 0
    for i in range(x.shape[0]):
        n += 1.0
        mean += (1.0 / n) * (x[i] - mean)
        dev = x[i] - mean
        s_inc = alpha * s_inc + dev - delta
        s_dec = alpha * s_dec + dev + delta
        if s_inc < min_inc:
            min_inc = s_inc
        if s_dec > max_dec:
            max_dec = s_dec
        if n >= min_instances and (s_inc - min_inc > threshold or max_dec - s_dec > threshold):
            alarms += 1
            n = 0.0
            mean = 0.0
            s_inc = 0.0
            s_dec = 0.0
            min_inc = np.inf
            max_dec = -1.0
    return alarms


@njit(cache=True)
def _kswin_count(x, window, stat, h_min, rng):  # pragma: no cover - numba
    buf = np.empty(window)
    a = np.empty(stat)
    b = np.empty(stat)
    idx = np.arange(window - stat)
    count = 0
    alarms = 0
    for t in range(x.shape[0]):
        if count < window:
            buf[count] = x[t]
            count += 1
        else:
            buf[:-1] = buf[1:]
            buf[-1] = x[t]
        if count < window:
            continue
        # subsample of `stat` of the first window - stat values, without replacement
        m = window - stat
        for s in range(stat):
            r = s + rng.integers(0, m - s)
            tmp = idx[s]
            idx[s] = idx[r]
            idx[r] = tmp
            a[s] = buf[idx[s]]
            b[s] = buf[m + s]
        a.sort()
        b.sort()
        i = 0
        j = 0
        best = 0
        while i < stat or j < stat:
            va = a[i] if i < stat else np.inf
            vb = b[j] if j < stat else np.inf
            v = va if va < vb else vb
            while i < stat and a[i] <= v:
                i += 1
            while j < stat and b[j] <= v:
                j += 1
            d = abs(i - j)
            if d > best:
                best = d
        if best >= h_min:
            alarms += 1
            count = 0
    return alarms


def kswin_p_table(n: int = KSWIN_STAT) -> np.ndarray:
    """p-value of River's KSWIN test (``ks_2samp``, equal sizes ``n``) for ``D = h / n``."""
    out = np.ones(n + 1)
    base = np.arange(n, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        for h in range(1, n + 1):
            out[h] = stats.ks_2samp(base, base + h - 0.5, method="auto").pvalue
    return out


def kswin_h_min(alpha: float, n: int = KSWIN_STAT) -> int:
    """Smallest ``h`` (``D = h / n``) at which KSWIN signals for this ``alpha``."""
    table = _p_table(n)
    for h in range(n + 1):
        if table[h] <= alpha and h / n > 0.1:
            return h
    return n + 1


_P_TABLES: dict[int, np.ndarray] = {}


def _p_table(n: int) -> np.ndarray:
    if n not in _P_TABLES:
        _P_TABLES[n] = kswin_p_table(n)
    return _P_TABLES[n]


def fast_alarm_count(name: str, param: float, z: np.ndarray, seed: int = 0) -> int:
    """Alarms of peer ``name`` over the standardised stream ``z`` (tuning simulator)."""
    from detectors.adwin import adwin_detections

    if name == "river_adwin_c1":
        return int(adwin_detections(z, param, clock=1).size)
    if name == "river_adwin_c32":
        return int(adwin_detections(z, param, clock=32).size)
    if name == "river_kswin":
        return int(_kswin_count(z, KSWIN_WINDOW, KSWIN_STAT, kswin_h_min(param),
                                np.random.default_rng(seed)))
    if name == "river_ph":
        return int(_ph_count(z, 30, 0.005, float(param), 1 - 0.0001))
    if name == "cusum":
        return int(_cusum_count(z, CUSUM_K, float(param)))
    raise KeyError(name)


@dataclass
class Tuning:
    """Outcome of tuning one peer to one ARL0."""

    peer: str
    target: float
    param: float
    sim_arl: float  # ARL0 of the simulator on the tuning stream
    iterations: int


def tune_peer(name: str, target: float, z: np.ndarray, seed: int = 0,
              rel_tol: float = 0.01, max_iter: int = 60) -> Tuning:
    """Bisect peer ``name``'s parameter (log scale) for ARL0 ``target`` on stream ``z``.

    ``z`` is a fixed null stream (common random numbers across bisection steps).
    ARL0 is read as ``len(z) / alarms``.  For KSWIN, whose statistic is discrete,
    ARL0 moves in steps; the bracket then closes on a step and the side whose
    ARL0 is nearer the target (in log) is kept.
    """
    _, rising = PARAM[name]
    lo, hi = BRACKET[name]
    n = z.size
    cache: dict[float, float] = {}

    def arl(p: float) -> float:
        key = float(kswin_h_min(p)) if name == "river_kswin" else p
        if key not in cache:
            a = fast_alarm_count(name, p, z, seed)
            cache[key] = n / a if a else math.inf
        return cache[key]

    it = 0
    while it < max_iter and hi / lo > 1 + rel_tol:
        it += 1
        mid = math.sqrt(lo * hi)
        too_many = arl(mid) < target  # too many alarms at mid
        # ARL rises with the parameter: too many alarms -> raise it
        if too_many == rising:
            lo = mid
        else:
            hi = mid
    a_lo, a_hi = arl(lo), arl(hi)
    score_lo = abs(math.log(a_lo / target)) if math.isfinite(a_lo) else math.inf
    score_hi = abs(math.log(a_hi / target)) if math.isfinite(a_hi) else math.inf
    if name == "river_kswin":
        # any alpha in [p(h), p(h - 1)) behaves the same: report p(h) itself
        table = _p_table(KSWIN_STAT)
        h_lo, h_hi = kswin_h_min(lo), kswin_h_min(hi)
        if h_lo < table.size:
            lo = float(table[h_lo]) * (1 + 1e-9)
        if h_hi < table.size:
            hi = float(table[h_hi]) * (1 + 1e-9)
    best, barl = (lo, a_lo) if score_lo <= score_hi else (hi, a_hi)
    return Tuning(name, float(target), float(best), float(barl), it)


def measure_arl(name: str, param: float, values: np.ndarray, mean: float = 0.0,
                sd: float = 1.0, seed: int = 0, river_kswin: bool = False) -> tuple[float, int]:
    """Achieved ARL0 of the real peer on a null stream: ``(len / alarms, alarms)``.

    The stream is fed without interruption; the peer resets itself after each
    alarm.  Values are standardised with ``mean``/``sd`` for every peer except
    CUSUM, which standardises internally.
    """
    if name == "cusum":
        vals = values.tolist()
    else:
        vals = ((values - mean) / sd).tolist()
    det = make_peer(name, param, mean, sd, seed=seed, river_kswin=river_kswin)
    alarms = len(run_positions(det, vals))
    return (values.size / alarms if alarms else math.inf), alarms


def standardiser(name: str, mean: float, sd: float) -> Callable[[np.ndarray], list[float]]:
    """How a peer's input is prepared: CUSUM standardises itself, the others get ``z``."""
    if name == "cusum":
        return lambda v: v.tolist()
    return lambda v: ((v - mean) / sd).tolist()
