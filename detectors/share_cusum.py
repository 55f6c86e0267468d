"""A sequential test of the shares of an embedding column's clusters: one Bernoulli CUSUM
per cluster on the nearest-centre indicator.

The share block of the vector test (:func:`detectors.joint_blocks.share_block`) tests each
cluster's share over a window, every ``cadence`` vectors.  For "one cluster's share went
up" the natural statistic is sequential: with ``p_j`` the reference's share of cluster
``j`` and ``q_j`` the alternative share (:data:`SHARE_RATIO` times ``p_j``, at most half
way to 1), each vector adds the log-likelihood ratio of its indicator ``1[nearest = j]``,

* ``a_j = log(q_j / p_j)`` when the vector is nearest to centre ``j``,
* ``b_j = log((1 - q_j) / (1 - p_j))`` (negative) otherwise,

to ``S_j = max(0, S_j + increment)`` (Page's CUSUM), and the statistic after each vector
is ``max_j S_j``.  It is evaluated at every vector, not every ``cadence`` vectors: its
alarm is the first vector at which it exceeds its threshold.

An episode opens when the statistic exceeds the threshold ``h``, and each crossing
restarts the sums from 0 (Page's restart); the episode closes after ``release_values``
vectors in a row without a crossing.  A change that persists crosses again about every
``h / KL`` vectors (``KL`` the information per vector: 0.058 for a share from 12.5 % to
25 %, ~95 vectors at ``h`` 5.5, ~220 at a production ``h`` of 13), which holds its
episode open when ``release_values`` exceeds that; on clean data the crossings are ARL0
apart, so the episode rate is the crossing rate and falls with ``h``.  A weaker change
(``h / KL`` above ``release_values``: a share from 12.5 % to 18 % with a window of 1,000)
opens one CUSUM episode per crossing; the vector test's episode is the union with the
joint test's, which such a change usually holds open.  (A release level on the largest of the ``k`` sums,
as the window tests have, does not work here: the sum of a cluster with a small share
drifts down slowly, about -0.017 per vector at 5 %, and the largest of 8 sums has a
median of 2.3 on clean data, so an episode with a release level of ``h / 2`` stayed
open for thousands of vectors and the episode rate stopped falling with ``h``.)

Calibration (:func:`calibrate_share_cusum`), as the joint test's: paths of nearest-centre
labels drawn from the reference's row sample, each path's shares re-estimated from a
resample of that sample (the reference's own uncertainty), episodes counted; the threshold
is read where their rate meets the target when the simulation sees :data:`MIN_EVENTS` of
them, else extrapolated from the far tail on a log-rate linear in ``h`` (the exponential
tail of a CUSUM's excursions) with Lundberg's exponent of the increments
(:func:`exponent`: 1 for exact likelihood ratios, Wald's bound ``P(max S > h) <= e^-h``;
about 0.92 for 8 clusters and a 10,000-row reference, whose share errors make the tail
heavier; with the exponent 1 a target of 1e6 vectors was met at 0.67-0.74 of it, with the
computed exponent at 1.02, and 1e5 at 1.05, on 60e6 and 10e6 clean labels).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from detectors.base import EMPTY_POSITIONS
from detectors.calibration import MIN_EVENTS, Calibration
from detectors.errors import DetectorError

#: the alternative share of a cluster, as a multiple of its reference share
SHARE_RATIO = 2.0
#: the exponent of the episode rate's tail the extrapolation may use (per unit of h)
SLOPE_RANGE = (0.5, 1.2)
#: state vector indices: episode open, vectors quiet since, alarms
_ACTIVE, _QUIET, _ALARMS = 0, 1, 2


def increments(shares: np.ndarray, ratio: float = SHARE_RATIO) -> tuple[np.ndarray, np.ndarray]:
    """(``a``, ``b``): the log-likelihood ratio of a vector nearest to cluster ``j``
    (``a_j``) and of one nearest to another (``b_j``) for the share ``p_j -> q_j``,
    ``q_j = min(ratio p_j, (1 + p_j) / 2)``; shares are floored at 1e-6 and capped at
    1 - 1e-6."""
    p = np.clip(np.asarray(shares, dtype=np.float64), 1e-6, 1.0 - 1e-6)
    q = np.minimum(ratio * p, 0.5 * (1.0 + p))
    return np.log(q / p), np.log((1.0 - q) / (1.0 - p))


def exponent(shares: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """The smallest over the clusters of the positive root ``t`` of
    ``p e^(t a) + (1 - p) e^(t b) = 1`` (Lundberg's exponent of the increments ``a``,
    ``b`` under the shares ``p``: the rate at which a sum's tail falls with ``h``; 1 when
    ``a``, ``b`` are the likelihood ratios of ``p`` itself), at most 5."""
    p = np.asarray(shares, dtype=np.float64)
    lo, hi = np.full(p.size, 1e-6), np.full(p.size, 5.0)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = p * np.exp(mid * a) + (1.0 - p) * np.exp(mid * b) < 1.0
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return float(hi.min())


@njit(cache=True)
def _cusum_steps(labels: np.ndarray, a: np.ndarray, b: np.ndarray, s: np.ndarray,
                 h: float, release_values: int, ist: np.ndarray,
                 peak: np.ndarray, stats: np.ndarray, opened: np.ndarray,
                 closed: np.ndarray) -> None:  # pragma: no cover - compiled
    k = s.size
    active, quiet = ist[_ACTIVE], ist[_QUIET]
    for t in range(labels.size):
        lab = labels[t]
        if lab < 0:  # a row left out (a non-finite value): no step, not counted
            stats[t] = np.nan
            continue
        m = 0.0
        for j in range(k):
            v = s[j] + (a[j] if lab == j else b[j])
            if v < 0.0:
                v = 0.0
            s[j] = v
            if v > m:
                m = v
        stats[t] = m
        if m > h:
            for j in range(k):  # Page's restart after each crossing
                s[j] = 0.0
            if active == 0:
                opened[t] = True
                active, peak[0] = 1, m
                ist[_ALARMS] += 1
            elif m > peak[0]:
                peak[0] = m
            quiet = 0
        elif active:
            quiet += 1
            if quiet >= release_values:
                closed[t] = True
                active, quiet = 0, 0
    ist[_ACTIVE], ist[_QUIET] = active, quiet


@njit(cache=True)
def nearest_labels(rows: np.ndarray, centres: np.ndarray) -> np.ndarray:  # pragma: no cover
    """The nearest of ``centres`` (k x c) to the first ``c`` values of each row (the
    projected coordinates; the residual after them is not used), -1 for a row with a
    non-finite value anywhere (the joint test leaves it out too)."""
    n, w = rows.shape
    k, c = centres.shape
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        ok = True
        for d in range(w):
            if not math.isfinite(rows[i, d]):
                ok = False
                break
        if not ok:
            out[i] = -1
            continue
        best, arg = np.inf, 0
        for j in range(k):
            acc = 0.0
            for d in range(c):
                diff = rows[i, d] - centres[j, d]
                acc += diff * diff
            if acc < best:
                best, arg = acc, j
        out[i] = arg
    return out


class ShareCusum:
    """Bernoulli CUSUMs of the shares of ``k`` clusters (labels ``0..k-1`` per vector).

    Examples
    --------
    >>> c = ShareCusum(np.full(4, 0.25), threshold=3.0)
    >>> opened, _ = c.update(np.zeros(20, dtype=np.int64))  # every vector in cluster 0
    >>> # log 2 = 0.693 per vector: above 3 at the 5th, and again every 5th after a restart
    >>> opened.tolist(), round(c.statistic, 3), c.n_alarms
    ([4], 3.466, 1)
    """

    def __init__(self, shares: np.ndarray, threshold: float = math.inf,
                 release_values: int = 1000) -> None:
        self.shares = np.asarray(shares, dtype=np.float64)
        self.a, self.b = increments(self.shares)
        self.threshold = float(threshold)
        self.release_values = max(int(release_values), 1)
        self.s = np.zeros(self.shares.size)
        self.ist = np.zeros(3, dtype=np.int64)
        self.peak = np.zeros(1)
        self.statistic = 0.0

    def steps(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Feed ``labels`` (-1: a row left out, its statistic NaN); (statistic after each,
        masks of opened and closed)."""
        lab = np.ascontiguousarray(labels, dtype=np.int64)
        n = lab.size
        stats = np.empty(n)
        opened = np.zeros(n, dtype=np.bool_)
        closed = np.zeros(n, dtype=np.bool_)
        if n:
            h = self.threshold if math.isfinite(self.threshold) else 1e300
            _cusum_steps(lab, self.a, self.b, self.s, h, self.release_values, self.ist, self.peak, stats, opened, closed)
            self.statistic = float(stats[-1])
        return stats, opened, closed

    def update(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed ``labels`` (-1: a row left out); (indices at which an episode opened, at
        which one closed)."""
        _, opened, closed = self.steps(labels)
        if not opened.any() and not closed.any():
            return EMPTY_POSITIONS, EMPTY_POSITIONS
        return np.flatnonzero(opened), np.flatnonzero(closed)

    @property
    def active(self) -> bool:
        return bool(self.ist[_ACTIVE])

    @property
    def n_alarms(self) -> int:
        return int(self.ist[_ALARMS])

    @property
    def score(self) -> float:
        t = self.threshold
        return self.statistic / t if 0 < t < math.inf else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold if math.isfinite(self.threshold) else None,
                "release_values": self.release_values, "s": self.s.tolist(),
                "ist": self.ist.tolist(), "peak": float(self.peak[0]),
                "stat": self.statistic}

    def restore(self, data: Any) -> None:
        """Take the running state of ``data`` (a :meth:`to_dict`), keeping this one's
        shares, threshold and release."""
        try:
            s = np.asarray(data["s"], dtype=np.float64)
            ist = np.asarray(data["ist"], dtype=np.int64)
            peak, stat = float(data["peak"]), float(data["stat"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DetectorError(f"not a serialised share CUSUM: {exc}") from None
        if s.shape != self.s.shape or ist.shape != (3,) or not np.isfinite(s).all():
            raise DetectorError("share CUSUM state: sums or counters of the wrong shape")
        self.s, self.ist, self.peak, self.statistic = s, ist, np.array([peak]), stat


def _episodes(paths: list[tuple[np.ndarray, np.ndarray, np.ndarray]], h: float,
              release_values: int) -> int:
    """Episodes opened over the label paths (each with its own increments, from 0)."""
    total = 0
    for lab, a, b in paths:
        c = ShareCusum(np.full(a.size, 0.5), h, release_values)
        c.a, c.b = a, b
        total += int(c.steps(lab)[1].sum())
    return total


def calibrate_share_cusum(labels: np.ndarray, k: int, target_events: float,
                          release_values: int = 1000, seed: int = 0,
                          n_values: int = 2_000_000, n_paths: int = 32) -> Calibration:
    """The threshold of a :class:`ShareCusum` whose episodes under the null are
    ``target_events`` vectors apart, from ``labels`` (the nearest centre, ``0..k-1``, of
    each reference row in the profile's sample).

    Examples
    --------
    >>> lab = np.random.default_rng(0).integers(0, 8, size=10_000)
    >>> cal = calibrate_share_cusum(lab, 8, 1_000, release_values=100, n_values=400_000,
    ...                             n_paths=8)
    >>> cal.method, 3 < cal.threshold < 7
    ('direct', True)
    """
    if not target_events > 0:
        raise DetectorError(f"target_events must be > 0, got {target_events!r}")
    labels = np.asarray(labels, dtype=np.int64)
    m = labels.size
    rng = np.random.default_rng(seed)
    per_path = max(n_values // n_paths, 10 * release_values)
    paths = []
    for _ in range(n_paths):
        # the path's reference: a resample of the sample's labels (its shares' error)
        p = np.bincount(labels[rng.integers(m, size=m)], minlength=k) / m
        p = np.maximum(p, 1.0 / (4.0 * m))
        a, b = increments(p)
        paths.append((labels[rng.integers(m, size=per_path)], a, b))
    shares = np.bincount(labels, minlength=k) / m  # the shares the paths are drawn with
    exposure = float(per_path * n_paths)
    need = exposure / target_events

    def count(h: float) -> int:
        return _episodes(paths, h, release_values)

    # the episode count rises with h at first (a low h opens an episode that never closes)
    # and falls after its peak: a grid up to where it falls below what is read
    floor = min(need, MIN_EVENTS)
    grid, counts = [0.25], [count(0.25)]
    while grid[-1] < 200 and not (counts[-1] < max(counts) and counts[-1] <= floor):
        grid.append(grid[-1] + 0.25)
        counts.append(count(grid[-1]))
    peak = int(np.argmax(counts))
    g, c = np.array(grid[peak:]), np.array(counts[peak:], dtype=np.float64)
    if need >= MIN_EVENTS:  # read directly: the h whose episode count meets the target
        i = int(np.argmax(c <= need))
        lo, hi = (float(g[i - 1]), float(g[i])) if i > 0 else (float(g[0]), float(g[0]))
        for _ in range(20 if i > 0 else 0):
            mid = 0.5 * (lo + hi)
            if count(mid) > need:
                lo = mid
            else:
                hi = mid
        n = count(hi)
        return Calibration(hi, float(target_events), "direct", int(exposure), n,
                           exposure / max(n, 1), 0.0)
    # extrapolate from the far tail: the log rate falls by 1 per unit of h (the increments
    # are log-likelihood ratios, E[exp(increment)] = 1 under the null: Wald's and
    # Lundberg's exponent), the level fitted where the simulation still sees MIN_EVENTS to
    # 8 MIN_EVENTS episodes (nearer the peak, episodes merged within release_values lower
    # the count and would set the threshold too low)
    tail = (c >= MIN_EVENTS) & (c <= 8 * MIN_EVENTS)
    if tail.sum() < 2:
        tail = np.zeros(c.size, dtype=bool)
        tail[np.flatnonzero(c >= MIN_EVENTS)[-3:]] = True
    if not tail.any():
        return Calibration(2.0 * float(g[-1]), float(target_events), "floor", int(exposure),
                           0, math.inf, 0.0)
    lr = np.log(c[tail] / exposure)
    # the exponent: 1 for exact likelihood ratios; a path's increments come from its
    # resampled shares, not the shares its labels are drawn with, and the smallest root
    # over the clusters (below 1: a heavier tail) sets the far tail's slope
    slope = float(np.median([exponent(shares, a, b) for (_, a, b) in paths]))
    slope = min(max(slope, SLOPE_RANGE[0]), SLOPE_RANGE[1])
    icpt = float(np.mean(lr + slope * g[tail]))
    h = (icpt - math.log(1.0 / target_events)) / slope
    return Calibration(max(h, float(g[tail].max())), float(target_events), "extrapolated",
                       int(exposure), 0, float(target_events), 0.0)
