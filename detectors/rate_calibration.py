"""Analytic calibration of the rate tests (``missing``, ``out_of_range``, ``unseen``).

A rate test counts the flagged values among the last ``w`` values and alarms
when the count reaches ``c`` (threshold ``(c - 0.5) / w``, midway between two
lattice values, so the statistic's rounding never matters).  Its false alarms
need no simulation: they have a closed form.

Given the true flag rate ``p`` (flags i.i.d.), the window's count moves from
``c - 1`` to ``c`` at a value exactly when that value is flagged, the value
leaving the window is not, and the ``w - 1`` values in between hold ``c - 1``
flags, so the rate of up-crossings of ``count >= c`` per value is::

    p · (1 - p) · P(Bin(w - 1, p) = c - 1) = C(w-1, c-1) · p^c · (1 - p)^(w-c+1)

This counts every value as a test point.  Production tests every ``cadence``
values, and a crossing between two tests is seen only if the count is still
``>= c`` at the next test, so it alarms at most this often (the lead's alarm
episodes, with hysteresis, even less).  The formula is an upper bound.

The true rate is not the reference's: the reference is a finite sample.  With
a ``Beta(a, b)`` posterior of ``p`` the expected up-crossing rate is a ratio of
beta functions, the beta-binomial posterior predictive::

    C(w-1, c-1) · B(a + c, b + w - c + 1) / B(a, b)

The threshold is the smallest ``c`` whose expected rate is at most
``1 / target_events``.  The simulation this replaces saw no flag on any path
when the reference had none, fell back to a threshold just above 0, and let one
missing value alarm whatever the budget (issue #13).

Each kind reads its posterior from the profile (:func:`missing_posterior`,
:func:`out_of_range_posterior`, :func:`unseen_posterior`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from detectors.calibration import Calibration
from detectors.errors import DetectorError
from detectors.profile import CategoricalProfile, NumericProfile, Profile

#: the method reported by an analytic calibration
ANALYTIC = "analytic"


def log_crossing_rates(counts: np.ndarray | int, window: int, a: float, b: float) -> np.ndarray:
    """``log`` of the expected rate per value at which the window's count reaches ``counts``.

    The count of flags in a sliding window of ``window`` values, flags i.i.d. with
    rate ``p ~ Beta(a, b)``, tested at every value: the expected number of
    up-crossings of ``count >= c`` per value, for each ``c`` in ``counts``
    (``1 .. window``; ``-inf`` elsewhere).

    Examples
    --------
    >>> # p known to be 0.01 (a Beta with a huge a + b): p · (1 - p) · P(Bin(999, p) = 9)
    >>> from scipy import stats
    >>> exact = 0.01 * 0.99 * stats.binom.pmf(9, 999, 0.01)
    >>> rate = float(np.exp(log_crossing_rates(10, 1000, 0.01 * 1e9, 0.99 * 1e9))[0])
    >>> bool(abs(rate / exact - 1) < 1e-3)
    True
    """
    if not (a > 0 and b > 0):
        raise DetectorError(f"beta posterior parameters must be > 0, got a={a!r}, b={b!r}")
    c = np.atleast_1d(np.asarray(counts, dtype=np.float64))
    w = float(window)
    ok = (c >= 1) & (c <= w)
    cc = np.where(ok, c, 1.0)
    log_choose = special.gammaln(w) - special.gammaln(cc) - special.gammaln(w - cc + 1.0)
    out = log_choose + special.betaln(a + cc, b + w - cc + 1.0) - special.betaln(a, b)
    return np.where(ok, out, -np.inf)


def rate_threshold_count(window: int, a: float, b: float, target_events: float,
                         ) -> tuple[int, float]:
    """Smallest count ``c`` whose expected up-crossing rate is at most ``1 / target_events``.

    Returns ``c`` and that rate; ``c = window + 1`` (and rate 0) when even a window
    full of flags crosses too often, which cannot alarm.

    Examples
    --------
    >>> # a reference of 10,000 values without a single missing one, a 1,000-value window
    >>> rate_threshold_count(1000, 0.5, 10_000.5, 1e9)[0]
    6
    """
    if not target_events > 0:
        raise DetectorError(f"target_events must be > 0, got {target_events!r}")
    lr = log_crossing_rates(np.arange(1, window + 1), window, a, b)
    # the rate is E[p(1-p)] times the BetaBinomial(w - 1, a + 1, b + 1) pmf at c - 1,
    # log-concave (both shapes >= 1), so unimodal: the first count below the target after
    # the mode, not a small count below the mode (a window holding that few flags is rare
    # when p is large, but the count sits above it, and a threshold there alarms at once)
    mode = int(np.argmax(lr))
    ok = np.flatnonzero(lr[mode:] <= -math.log(target_events))
    if ok.size == 0:
        return window + 1, 0.0
    c = mode + int(ok[0]) + 1
    return c, float(math.exp(lr[c - 1]))


def calibrate_rate(window: int, a: float, b: float, target_events: float) -> Calibration:
    """The :class:`~detectors.calibration.Calibration` of a rate test with posterior ``Beta(a, b)``.

    ``threshold`` is ``(c - 0.5) / window`` for the count ``c`` of
    :func:`rate_threshold_count`; ``estimated_events`` is the reciprocal of its
    crossing-rate bound, so at least that many values between false alarms are
    expected (``inf`` when the test cannot alarm).  Nothing is simulated.

    Examples
    --------
    >>> cal = calibrate_rate(1000, 0.5, 10_000.5, 1e9)
    >>> cal.method, cal.threshold, cal.estimated_events >= 1e9
    ('analytic', 0.0055, True)
    """
    c, rate = rate_threshold_count(window, a, b, target_events)
    return Calibration((c - 0.5) / window, float(target_events), ANALYTIC, 0, 0,
                       1.0 / rate if rate > 0 else math.inf)


# -- the posterior of each kind's flag rate ---------------------------------------------------
def missing_posterior(profile: Profile) -> tuple[float, float]:
    """Jeffreys posterior ``Beta(k + 1/2, n - k + 1/2)`` of the missing rate.

    ``k`` missing values among the ``n`` values of the reference: each value is
    missing or not, a plain binomial sample.  The Jeffreys prior keeps the rate
    positive when the reference had no missing value (the rate is then below
    about ``2 / n``, not 0).
    """
    k = float(profile.n_missing)
    n = float(profile.count + profile.n_missing)
    return k + 0.5, n - k + 0.5


def out_of_range_posterior(profile: NumericProfile) -> tuple[float, float]:
    """``Beta(2, n - 1)``: the probability mass outside the range of ``n`` i.i.d. values.

    For a continuous distribution, with ``u = F(x)`` uniform, the mass below the
    minimum and above the maximum of ``n`` values is ``u_min + 1 - u_max``, two
    of the ``n + 1`` spacings of ``n`` uniforms: ``Beta(2, n - 1)`` exactly (the
    coverage of ``[min, max]`` is ``Beta(n - 1, 2)``), whatever the distribution.  For any
    other distribution (ties, atoms at the extremes, discrete values) coupling
    through the quantile function, ``x = F⁻¹(u)``, gives a mass strictly outside
    ``[min, max]`` no larger than the uniforms' ``u_min + 1 - u_max``: the law is
    then stochastically smaller, and ``Beta(2, n - 1)`` conservative.  It needs
    no estimate from the data at all, which is why the reservoir's view of ties
    (:func:`~detectors.profile.range_breakers`, exact only while the reservoir
    holds the whole reference) is not used here.
    """
    n = max(int(profile.count), 2)
    return 2.0, float(n - 1)


def unseen_posterior(profile: CategoricalProfile) -> tuple[float, float]:
    """Posterior of the share of values in categories the profile does not track.

    The monitor flags a value whose category is not in the profile's counts.  The
    reference's own leave-one-out count of such values is ``k = f1 + other``: the
    ``f1`` categories seen once (each new to the other ``n - 1`` values: Good–Turing's
    estimate ``f1 / n`` of the unseen mass) and the values of categories folded into
    ``other_count`` by truncation.  A binomial count of ``k`` would understate the
    uncertainty of the Good–Turing estimate, whose variance is about
    ``(f1 + 2 f2) / n²`` (Esty 1983; ``f2`` categories seen twice) rather than
    ``f1 / n²``; the counts are scaled down by that ratio ``φ = 1 + 2 f2 / f1``
    (a reference of ``n / φ`` effective values), then given the Jeffreys prior:
    ``Beta(k / φ + 1/2, (n - k) / φ + 1/2)``.
    """
    n = float(profile.count)
    f1 = float(profile.singletons)
    f2 = float(sum(1 for v in profile.counts.values() if v == 2))
    k = min(f1 + float(profile.other_count), n)
    phi = 1.0 + 2.0 * f2 / f1 if f1 > 0 else 1.0
    return k / phi + 0.5, (n - k) / phi + 0.5
