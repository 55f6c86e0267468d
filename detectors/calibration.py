"""Threshold calibration from one false-alarm knob.

A model is configured with the expected number of events between false alarms
(``false_alarm_events``) across all its columns and detectors.  The budget is
split Šidák-style: with ``m`` alarming detectors, each gets a per-event false
alarm probability ``1 - (1 - 1/false_alarm_events) ** (1/m)``.  Detectors may
weigh differently (:func:`detectors.catalogue.budget_weight`: a CUSUM takes eight
shares): one of weight ``w`` out of a total ``W`` gets the share of ``w``
unit detectors, ``1 - (1 - 1/false_alarm_events) ** (w/W)``.

A CUSUM's threshold is calibrated from the heights of its excursions on
bootstrap paths (:func:`calibrate_cusum`), extrapolated along their exponential
tail where the target is beyond the simulation.

Each detector's threshold is then calibrated by simulation under the null
hypothesis, drawn from the baseline itself (bootstrap), so calibration is
distribution-free: skewed, heavy-tailed, discrete and zero-inflated columns get
thresholds for *their* distribution, ties included.  The uncertainty of the
baseline is part of the simulation (each simulated path draws its "true"
distribution from a Dirichlet posterior around the baseline's counts), because
a window is compared with a finite reference, not with the truth.

For the window tests the simulated quantity is exactly what the detector does
in production: the rate of episodes (up-crossings of the threshold, with the
detector's hysteresis merging those that come before the statistic has stayed
below its release level long enough) of overlapping windows re-tested every
``cadence`` values.  Naive per-test
p-values would ignore that overlap and be far off.  When the target rate is too
small to observe in the simulation, the observed tail is extrapolated on the
scale of the test's nominal p-value (``log rate ≈ a + b · log p``), a relation
that is close to linear for rare events.  ADWIN's ``delta`` is calibrated the
same way on its detection rate.

The rate tests (``missing``, ``out_of_range``, ``unseen``) are not simulated: their
false-alarm rate has a closed form (:mod:`detectors.rate_calibration`), which also
holds for a flag the reference never showed, where no simulated path would see one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from detectors._window_kernel import episode_counts
from detectors.errors import DetectorError
from detectors.window import WindowTest

#: fewest simulated alarms for a rate to be read directly rather than extrapolated
MIN_EVENTS = 25
#: a directly read threshold may alarm at most this factor more often than the target
#: (about one standard error of MIN_EVENTS simulated alarms)
STEP_TOLERANCE = 1.25


def per_detector_arl(false_alarm_events: float, n_detectors: float) -> float:
    """Šidák split of a model's false-alarm budget over ``n_detectors`` detectors.

    ``n_detectors`` may be fractional: a detector with weight ``w`` out of total
    weight ``W`` gets ``per_detector_arl(budget, W / w)``, and the weighted
    shares still multiply up to the model's budget.

    Examples
    --------
    >>> round(per_detector_arl(10_000, 1))
    10000
    >>> round(per_detector_arl(10_000, 10), -2)
    100000.0
    """
    if not false_alarm_events > 1:
        raise DetectorError(f"false_alarm_events must be > 1, got {false_alarm_events!r}")
    if n_detectors < 1:
        raise DetectorError("at least one alarming detector is needed to split the budget")
    alpha = -math.expm1(math.log1p(-1.0 / false_alarm_events) / n_detectors)
    return 1.0 / alpha


@dataclass(frozen=True)
class Calibration:
    """Outcome of one calibration: the threshold and how it was obtained."""

    threshold: float
    target_events: float
    method: str  # "direct" | "extrapolated" | "floor" | "bound" | "analytic" (rate tests)
    simulated_values: int
    simulated_alarms: int
    estimated_events: float
    #: lowest release level of an episode (a window test's 99th percentile on clean data)
    release_floor: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(
            threshold=float(data["threshold"]),
            target_events=float(data["target_events"]),
            method=str(data["method"]),
            simulated_values=int(data["simulated_values"]),
            simulated_alarms=int(data["simulated_alarms"]),
            estimated_events=math.inf if data["estimated_events"] is None
            else float(data["estimated_events"]),
            release_floor=float(data.get("release_floor") or 0.0),
        )


def posterior_probs(rng: np.random.Generator, counts: Any, closed: bool = False) -> np.ndarray:
    """Bin probabilities drawn from ``Dirichlet(counts + 0.5)``: the baseline's uncertainty.

    The live stream's frequencies are not the baseline's but differ from them by
    the baseline's sampling error; each calibration path draws its own.  With
    ``closed``, bins the baseline never saw keep probability 0: a categorical
    column whose baseline saw every category at least twice looks closed (as
    :func:`detectors.catalogue.can_false_alarm` reads it), new categories are the
    unseen-rate test's business, and budgeting the chi2 test for them made it
    alarm 1.6 times less often than its share.
    """
    c = np.asarray(counts, dtype=np.float64)
    if not closed:
        return rng.dirichlet(c + 0.5)
    out = np.zeros(c.size)
    seen = c > 0
    out[seen] = rng.dirichlet(c[seen] + 0.5)
    return out


def sample_bins(probs: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` bin indices drawn with probabilities ``probs`` (need not sum exactly to 1)."""
    cdf = np.cumsum(probs)
    cdf /= cdf[-1]
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), probs.size - 1)


def _upcrossing_counts(paths: list[np.ndarray], thresholds: np.ndarray) -> np.ndarray:
    """Number of up-crossings (``s[j-1] <= t < s[j]``) of each threshold, over all paths."""
    lows, highs = [], []
    for s in paths:
        if s.size < 2:
            continue
        a, b = s[:-1], s[1:]
        up = a < b
        lows.append(a[up])
        highs.append(b[up])
    if not lows:
        return np.zeros(thresholds.size, dtype=np.int64)
    lo = np.sort(np.concatenate(lows))
    hi = np.sort(np.concatenate(highs))
    return (np.searchsorted(lo, thresholds, side="right")
            - np.searchsorted(hi, thresholds, side="right"))


#: a window test's release level is at least this quantile of its statistic on clean data
RELEASE_FLOOR_QUANTILE = 0.99
#: thresholds at which a window test's episode count is simulated (after the peak of its
#: up-crossing curve; episodes are counted path by path, so not at every distinct value)
EPISODE_GRID = 600


def _episode_curve(detector: WindowTest, paths: list[np.ndarray], allstats: np.ndarray,
                   cands: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds (a grid over ``cands``, the highest kept) and the episodes each opens.

    An episode of the detector may hold several up-crossings (its hysteresis),
    so the false-alarm rate it is calibrated for is the rate of episodes.  The
    release level is ``max(release × threshold, floor)``, at most the threshold.
    """
    if cands.size > EPISODE_GRID:
        top = cands[-EPISODE_GRID // 3:]  # the rare end, where the tail is read, in full
        rest = cands[:-EPISODE_GRID // 3]
        idx = np.linspace(0, rest.size - 1, EPISODE_GRID - top.size).round().astype(np.int64)
        cands = np.unique(np.concatenate([rest[idx], top]))
    starts = np.zeros(len(paths) + 1, dtype=np.int64)
    starts[1:] = np.cumsum([s.size for s in paths])
    tests = max(-(-detector.release_values // detector.cadence), 1)
    counts = episode_counts(allstats, starts, cands, float(detector.release), int(tests),
                            float(floor))
    peak = int(np.argmax(counts))
    return cands[peak:], counts[peak:]


def calibrate_window_test(
    detector: WindowTest,
    target_events: float,
    ref_counts: np.ndarray | None = None,
    seed: int = 0,
    n_values: int = 2_000_000,
    n_paths: int = 64,
    closed: bool = False,
) -> Calibration:
    """Calibrate ``detector.threshold`` so alarms under the null are ``target_events`` apart.

    Parameters
    ----------
    detector : WindowTest
        A configured window test; only its settings are used (it is not modified).
    target_events : float
        Expected number of values between false alarms of this detector.
    ref_counts : array, optional
        Counts behind ``detector.probs`` (baseline size per bin); each simulated
        path draws its null distribution from ``Dirichlet(ref_counts + 0.5)``.
        ``None`` simulates from ``detector.probs`` exactly.
    closed : bool
        Bins with a count of 0 keep probability 0 (see :func:`posterior_probs`).
    seed, n_values, n_paths :
        Simulation size: ``n_values`` values split into ``n_paths`` paths.

    Examples
    --------
    >>> from detectors.window import KSWindow
    >>> probs = np.full(16, 1 / 16)
    >>> ks = KSWindow(np.arange(1, 16), probs, window=200, cadence=20)
    >>> cal = calibrate_window_test(ks, 5_000, ref_counts=probs * 5000, n_values=400_000)
    >>> cal.method, 0.05 < cal.threshold < 0.3
    ('direct', True)
    """
    if not target_events > 0:
        raise DetectorError(f"target_events must be > 0, got {target_events!r}")
    rng = np.random.default_rng(seed)
    per_path = max(n_values // n_paths, detector.window * 4)
    state = detector.to_dict()["state"]
    paths = []
    for _ in range(n_paths):
        sim = type(detector)._from_state({**state, "threshold": None})
        sim.reset()
        probs = (detector.probs if ref_counts is None
                 else posterior_probs(rng, ref_counts, closed))
        s, _, _ = sim.scan(sample_bins(probs, per_path, rng))
        paths.append(s)
    total = per_path * n_paths
    # values at risk: an up-crossing needs two consecutive tests, and no test runs before a
    # path's window first fills, so the rate is per value *between* tests, as in production
    exposure = detector.cadence * sum(max(s.size - 1, 0) for s in paths)
    allstats = np.concatenate(paths)
    cands = np.unique(allstats)
    counts = _upcrossing_counts(paths, cands)
    # below the peak of the up-crossing curve the statistic is almost always above the
    # threshold (alarm state stuck on, hence few up-crossings): only the upper branch counts
    if cands.size:
        peak = int(np.argmax(counts))
        cands, counts = cands[peak:], counts[peak:]
    # the release level is never below where a clean stream's statistic lies 1 % of the time:
    # at small budgets the threshold itself is close to that, and half of it would be inside
    # the null's bulk, where episodes never end
    floor = float(np.quantile(allstats, RELEASE_FLOOR_QUANTILE)) if allstats.size else 0.0
    if cands.size and (detector.release < 1 or detector.release_values > detector.cadence):
        cands, counts = _episode_curve(detector, paths, allstats, cands, floor)
    target_rate = 1.0 / target_events
    need = target_rate * exposure

    if need >= MIN_EVENTS:
        # Closest rate on the log scale, but never one that alarms more often than the
        # target beyond the simulation's noise: a coarse statistic (a rare flag's count in
        # the window) has steps several-fold apart, and the budget is an upper bound.
        ok = (counts > 0) & (counts <= need * STEP_TOLERANCE)
        c, t = cands[ok], counts[ok]
        i = int(np.argmin(np.abs(np.log(t / exposure) - math.log(target_rate))))
        return Calibration(float(c[i]), float(target_events), "direct", total, int(t[i]),
                           float(exposure / t[i]), floor)

    # extrapolate on the nominal p-value scale from the observed tail
    tail = (counts >= MIN_EVENTS) & (counts <= max(40 * MIN_EVENTS, counts.max() // 20))
    if tail.sum() < 2:
        tail = counts >= MIN_EVENTS
    if tail.sum() < 2:
        top = float(allstats.max()) if allstats.size else 0.0
        return Calibration(top * 1.5 + 1e-9, float(target_events), "floor", total, 0, math.inf,
                           floor)
    lp = detector.log_p_values(cands[tail])
    lr = np.log(counts[tail] / exposure)
    finite = np.isfinite(lp)
    lp, lr = lp[finite], lr[finite]
    if lp.size < 2 or np.ptp(lp) == 0:
        top = float(cands[tail].max())
        return Calibration(top, float(target_events), "floor", total, int(counts[tail].min()),
                           math.inf, floor)
    slope, icpt = np.polyfit(lp, lr, 1)
    slope = max(slope, 0.25)  # guard against a degenerate fit: the rate must fall with p
    want_lp = (math.log(target_rate) - icpt) / slope
    lo = float(cands[tail].max())
    hi = lo * 2 + 1.0
    while float(detector.log_p_values(np.array([hi]))[0]) > want_lp and hi < 1e12:
        hi *= 2
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if float(detector.log_p_values(np.array([mid]))[0]) > want_lp:
            lo = mid
        else:
            hi = mid
    step = detector.lattice_step
    if step:
        hi = _lattice_threshold(detector, hi, step, slope, icpt, target_rate, cands, counts,
                                exposure)
    return Calibration(hi, float(target_events), "extrapolated", total, 0, float(target_events),
                       floor)


def _lattice_threshold(detector: WindowTest, hi: float, step: float, slope: float,
                       icpt: float, target_rate: float, cands: np.ndarray, counts: np.ndarray,
                       exposure: float) -> float:
    """Round an extrapolated threshold of a lattice statistic (a count) to a lattice step.

    Any threshold between two lattice values ``a < b`` alarms exactly when the
    statistic reaches ``b``, so it has the rate of ``a``: the continuous solution
    ``hi`` alarms as often as the lattice value below it, which is more often
    than the target, by up to the ratio of two steps (6x for a rare flag's count
    in a window).  Between the two lattice values around ``hi``, take the one
    whose rate is nearer the target on the log scale, but the lower one only if
    neither the fit nor the simulation shows it alarming more than
    :data:`STEP_TOLERANCE` times too often.  The threshold returned lies midway
    between lattice values (immune to rounding).
    """
    below = math.floor(hi / step + 1e-9) * step
    above = below + step

    def log_rate(a: float) -> float:  # the fit, read at threshold a (as it was fitted)
        return float(slope * detector.log_p_values(np.array([a]))[0] + icpt)

    lt = math.log(target_rate)
    seen = np.isclose(cands, below, rtol=0, atol=step * 1e-6)
    seen_rate = float(counts[seen].max()) / exposure if seen.any() else 0.0
    ok_below = (log_rate(below) <= lt + math.log(STEP_TOLERANCE)
                and seen_rate <= target_rate * STEP_TOLERANCE)
    pick = below if ok_below and abs(log_rate(below) - lt) < abs(log_rate(above) - lt) else above
    return pick + step / 2


#: a rate curve is extrapolated from its tail: the points with at least this many alarms
#: whose rate is within TAIL_SPAN of the lowest such rate
TAIL_MIN_ALARMS = 10
TAIL_SPAN = 100.0
#: the fitted log-log slope of a rate curve is taken as at least this (a guard against a
#: degenerate fit; heavy-tailed columns give ADWIN local slopes of about 0.5-0.6)
MIN_RATE_SLOPE = 0.3
#: alarms the probe run of a rate curve is sized to see (at the fitted rate)
PROBE_ALARMS = 40


def calibrate_rate_curve(
    run: Callable[[float, np.random.Generator, int], int],
    target_events: float,
    n_values: int,
    grid: np.ndarray,
    seed: int = 0,
    max_param: float = 1.0,
    bound_param: float | None = None,
    probe_values: int = 0,
) -> Calibration:
    """Calibrate a parameter whose false-alarm rate rises with it (ADWIN's ``delta``).

    ``run(param, rng, n)`` runs a fresh detector over ``n`` null values and returns
    its number of alarms.  The grid is explored from the most to the least
    sensitive value with ``n_values`` values each.  Where the target rate is
    observed, ``log rate`` is interpolated against ``log param`` between the
    bracketing points.  Below that the curve is extrapolated on the same scale
    from its tail (the points with at least :data:`TAIL_MIN_ALARMS` alarms within two
    decades of rate of the lowest of them), not from the
    whole curve: on heavy-tailed data the slope flattens as the parameter falls,
    and a global fit promises far fewer alarms than the tail delivers.  With
    ``probe_values`` > 0, one long run at the parameter the tail fit predicts to
    give about :data:`PROBE_ALARMS` alarms in ``probe_values`` values moves the
    extrapolation's starting point one to two decades closer to the target and
    measures the slope there.  When too few alarms are seen to extrapolate,
    ``bound_param`` (a value known to be conservative, such as ADWIN's own bound)
    is used; the result never exceeds a parameter whose observed rate was above
    the target.

    Examples
    --------
    >>> def run(p, rng, n):  # a detector whose alarm rate is 1e-3 * p per value
    ...     return int(rng.poisson(1e-3 * p * n))
    >>> cal = calibrate_rate_curve(run, 10_000, 1_000_000, np.array([1.0, 0.3, 0.1, 0.03]))
    >>> cal.method, round(cal.threshold, 1)
    ('direct', 0.1)
    >>> cal = calibrate_rate_curve(run, 1e7, 1_000_000, np.array([1.0, 0.3, 0.1, 0.03]),
    ...                            probe_values=10_000_000)
    >>> cal.method, 0.5 < cal.threshold / 1e-4 < 2
    ('extrapolated', True)
    """
    rng = np.random.default_rng(seed)
    target_rate = 1.0 / target_events
    pts: list[tuple[float, int, int]] = []  # (param, alarms, values)
    for param in sorted(grid, reverse=True):
        alarms = run(float(param), rng, n_values)
        pts.append((float(param), alarms, n_values))
        if alarms == 0 or (alarms < MIN_EVENTS and alarms / n_values < target_rate):
            break

    def rate(pt: tuple[float, int, int]) -> float:
        return pt[1] / pt[2]

    def verdict(p: float, method: str, alarms: int, est: float) -> Calibration:
        total = sum(n for _, _, n in pts)
        too_many = [q for q, a, n in pts if a / n > target_rate]
        cap = min(min(too_many) if too_many else max_param, max_param)
        if p > cap:  # capped at a grid value: report what was seen there, not the target
            p = cap
            seen = [(a, n) for q, a, n in pts if q == cap]
            est = seen[0][1] / seen[0][0] if seen and seen[0][0] else est
        return Calibration(float(p), float(target_events), method, total, alarms, est)

    if rate(pts[0]) <= target_rate and pts[0][1] >= MIN_EVENTS:
        return verdict(pts[0][0], "direct", pts[0][1], pts[0][2] / pts[0][1])
    direct = _interpolate(pts, target_rate)
    if direct is not None:
        return verdict(direct, "direct", pts[-1][1], float(target_events))

    def tail_fit(points: list[tuple[float, int, int]]) -> tuple[float, float] | None:
        fit = [pt for pt in points if pt[1] >= TAIL_MIN_ALARMS]
        if len(fit) < 2:
            fit = [pt for pt in points if pt[1] >= 3][-2:]
        else:
            floor = min(rate(pt) for pt in fit)
            fit = [pt for pt in fit if rate(pt) <= TAIL_SPAN * floor]
        if len(fit) < 2:
            return None
        lp = np.log([pt[0] for pt in fit])
        lr = np.log([rate(pt) for pt in fit])
        slope, icpt = np.polyfit(lp, lr, 1, w=np.sqrt([pt[1] for pt in fit]))
        slope = max(float(slope), MIN_RATE_SLOPE)
        # through the smallest fitted point, where the extrapolation starts
        return slope, float(lr[-1] - slope * lp[-1])

    fitted = tail_fit(pts)
    if fitted is None:
        bound = min(min([q for q, a, n in pts if a / n > target_rate], default=max_param),
                    bound_param if bound_param is not None else max_param)
        return verdict(bound, "bound", sum(a for _, a, _ in pts), math.inf)
    slope, icpt = fitted
    if probe_values > 0:
        want = max(target_rate, PROBE_ALARMS / probe_values)
        probe = math.exp((math.log(want) - icpt) / slope)
        probe = min(probe, min(q for q, _, _ in pts))
        alarms = run(probe, rng, probe_values)
        pts.append((probe, alarms, probe_values))
        pts.sort(key=lambda pt: -pt[0])
        # below the target with enough alarms: interpolated between the probe and the
        # reliable point above it (taking the probe itself would keep all of its margin)
        direct = _interpolate(pts, target_rate)
        if direct is not None:
            return verdict(direct, "direct", alarms, float(target_events))
        if alarms >= MIN_EVENTS and alarms / probe_values <= target_rate:
            return verdict(probe, "direct", alarms, probe_values / alarms)
        refit = tail_fit(pts) if alarms >= 3 else None
        if refit is not None:
            slope, icpt = refit
        # else: fewer alarms than the fit promised, the curve falls faster there; keeping
        # the earlier fit errs on the side of fewer false alarms
    p = math.exp((math.log(target_rate) - icpt) / slope)
    return verdict(p, "extrapolated", sum(a for _, a, _ in pts), float(target_events))


def _interpolate(pts: list[tuple[float, int, int]], target_rate: float) -> float | None:
    """The parameter at ``target_rate`` between two reliable points that bracket it."""
    good = [(p, a / n) for p, a, n in sorted(pts, key=lambda pt: -pt[0]) if a >= MIN_EVENTS]
    for (p1, r1), (p2, r2) in zip(good, good[1:], strict=False):
        if r1 >= target_rate >= r2:
            if r1 == r2:
                return p2
            w = (math.log(target_rate) - math.log(r1)) / (math.log(r2) - math.log(r1))
            return math.exp(math.log(p1) + w * (math.log(p2) - math.log(p1)))
    return None


#: a CUSUM threshold beyond the simulated range is extrapolated from the exponential tail
#: fitted to this many highest excursions (the tail of a random walk's excursion heights is
#: exponential: P(max > h) ~ C·exp(-θh), Cramér–Lundberg)
CUSUM_TAIL = 200


def _cusum_episode_threshold(maxima: np.ndarray, spans: np.ndarray, heights: np.ndarray,
                             want: float, release: int) -> tuple[float, int]:
    """The threshold of the sorted ``heights`` at which at most ``want`` episodes open,
    and their number: an excursion above it opens one, and excursions above it keep it
    open while each starts within ``release`` values of the end of the last (``spans``:
    start and end of each excursion)."""
    from detectors.cusum import cusum_episode_count

    order = np.argsort(spans[0], kind="stable")
    top, start, end = maxima[order], spans[0][order], spans[1][order]

    def episodes(h: float) -> int:
        return int(cusum_episode_count(top, start, end, h, h, release))

    # the episode count falls (almost always) as the threshold rises: bisect on the index
    # into the descending heights, between "c excursions" (at most c episodes) and more
    lo, hi = int(want), min(heights.size - 1, int(want) * 8)
    while episodes(float(heights[hi])) <= want and hi < heights.size - 1:
        lo, hi = hi, min(heights.size - 1, hi * 2)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if episodes(float(heights[mid])) <= want:
            lo = mid
        else:
            hi = mid
    h = float(heights[lo])
    return h, episodes(h)


def calibrate_cusum(
    sample: Callable[[np.random.Generator, int], np.ndarray],
    target_events: float,
    k: float,
    n_values: int = 8_000_000,
    n_paths: int = 32,
    offset_sd: float = 0.0,
    seed: int = 0,
    release: int = 0,
    side: int = 0,
) -> Calibration:
    """Calibrate a two-sided CUSUM's threshold ``h`` for ``target_events`` between alarms
    (``side`` 1 or -1: the threshold of the upper or the lower sum alone, for its alarms).

    ``sample(rng, n)`` draws ``n`` standardised null values (bootstrap from the
    baseline, winsorised and standardised exactly as the live detector does).
    Each of ``n_paths`` paths adds a constant drawn from ``N(0, offset_sd²)``:
    the baseline's mean is an estimate, and the live stream's true mean differs
    from it by about that much (``offset_sd = 1/√n_ref`` in standard units).
    One pass records the heights of all excursions of both sums
    (:func:`~detectors.cusum.cusum_excursion_maxima`); the threshold exceeded by
    ``n_values / target_events`` of them is read directly when at least
    :data:`MIN_EVENTS` are that high, and otherwise extrapolated from an
    exponential fitted to the :data:`CUSUM_TAIL` highest.  With ``release`` > 0 the
    alarms are episodes (see :class:`~detectors.cusum.CUSUM`): an excursion above the
    threshold that starts within ``release`` values of the end of the previous one
    is part of its episode, and the directly read threshold counts episodes.  The live
    detector also holds an episode while its moving average is beyond its release level
    (floored at the average's clean 99th percentile); that is not simulated here: it can
    only merge episodes, so the count is conservative (on clean data at a budget of
    2,000 it merges about 2 % of them).

    Examples
    --------
    >>> import numpy as np
    >>> normal = lambda rng, n: rng.normal(size=n)
    >>> cal = calibrate_cusum(normal, 2_000, k=0.25, n_values=2_000_000)
    >>> cal.method, round(cal.threshold, 1)
    ('direct', 11.3)
    >>> cal = calibrate_cusum(normal, 1e8, k=0.25, n_values=2_000_000)
    >>> cal.method, round(cal.threshold)
    ('extrapolated', 34)
    """
    from detectors.cusum import cusum_excursions

    rng = np.random.default_rng(seed)
    per_path = max(n_values // n_paths, 1)
    maxima, spans = [], []
    for p in range(n_paths):
        z = sample(rng, per_path)
        if offset_sd > 0:
            z = z + rng.normal(0.0, offset_sd)
        top, start, end = cusum_excursions(z, k, side)
        maxima.append(top)
        # paths are laid end to end, far enough apart that no episode spans two
        spans.append(np.stack([start, end]) + p * (per_path + release + 1))
    heights = np.sort(np.concatenate(maxima))[::-1]
    total = per_path * n_paths
    want = total / target_events  # excursions allowed above the threshold
    if heights.size == 0:  # the sums never leave 0 (a constant column): nothing to budget
        return Calibration(1.0, float(target_events), "floor", total, 0, math.inf)
    if want >= MIN_EVENTS and heights.size > want:
        c = int(want)
        h = float(heights[c])  # exceeded by at most c excursions (ties: fewer)
        seen = int(np.count_nonzero(heights > h))
        if release > 0:
            h, seen = _cusum_episode_threshold(np.concatenate(maxima),
                                               np.concatenate(spans, axis=1), heights, want,
                                               release)
        return Calibration(h, float(target_events), "direct", total, seen,
                           total / seen if seen else math.inf)
    t = min(CUSUM_TAIL, heights.size)
    if t < 10:
        raise DetectorError(f"CUSUM calibration saw only {heights.size} excursions in {total} "
                            f"values; the column is nearly constant")
    u = float(heights[t - 1])
    excess = heights[: t - 1] - u
    mean_excess = float(excess.mean())
    if mean_excess <= 0:  # all of the tail tied (a lattice): be conservative, one step up
        mean_excess = max(float(heights[0] - u), 1e-9)
    theta = 1.0 / mean_excess
    h = u + math.log((t - 1) / want) / theta if want < t - 1 else u
    return Calibration(float(h), float(target_events), "extrapolated", total,
                       t - 1, float(target_events))
