"""Calibration of the vector test as one test: its joint test and its share CUSUM together.

A :class:`~detectors.embedding.VectorTest` alarms when either part does, and its episode is
open while either part's is.  Calibrating each part on its own for a share of the budget
(the joint test ``target / (1 - s)``, the CUSUM ``target / s``) and adding their rates
misses twice:

* the parts see the same vectors (the joint test's share block and the CUSUM watch the
  same cluster shares), so their alarms coincide more often than by chance and the union
  alarms less often than the sum: on the issue's scenario at a target of 2,000 (window
  500) the episodes came 15-25 % further apart than the target;
* an episode spacing is not a run length: each CUSUM episode stays open for at least
  ``release_values`` vectors, during which no new one can open.  A test restarted after
  each alarm (the run length from a fresh test, Alibi Detect's expected run time, the
  ARL0 of ``bench/bench_alibi.py``) alarms sooner than its episodes are apart, by about
  the mean episode length: with window 200 (release 200) at a target of 441 the run
  length was 294 while the episodes were 576 apart (seed 1, 300,000 clean vectors).

Here both parts are simulated on the *same* null paths (rows drawn from the profile's row
sample, each path's reference a resample of it: the joint test refitted, the CUSUM's shares
re-estimated) and the union itself is counted.  The split of the budget is kept as a rule
(the parts' own thresholds are those of ``kappa target / (1 - s)`` and
``kappa target / s``) and the common factor ``kappa`` is solved so that the union meets
the target:

* ``run_length=False`` (the stream's meaning: episodes of one running test ``target``
  vectors apart): the union's episodes are counted on long paths; where the simulation
  cannot see :data:`READ_EPISODES` of them (production targets) the parts are
  extrapolated each as before and their rates added.  (``kappa`` read at the rarest rate
  the simulation sees, divided by what independent parts give there, each path's joint
  test paired with another path's labels, was 0.90-0.95 at window 200; applied at a target
  of 20,000 it moved the achieved spacing from 0.89 and 1.06 of it to 0.80 and 0.96, two
  seeds of 4e6 clean vectors: below the parts' own extrapolation error, so not applied);
* ``run_length=True``: independent runs of a fresh test (the joint test tests only once
  its window is full, the CUSUM starts from 0), the first alarm of the union read off the
  running maxima of both statistics for any pair of thresholds; the mean run length is the
  exposure over the alarms (runs longer than the simulated length are censored).  When the
  target is beyond what the runs see, it falls back to ``run_length=False`` (at such
  targets an episode's length is a small part of the spacing).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from numba import njit

from detectors._window_kernel import episode_counts
from detectors.calibration import MIN_EVENTS, RELEASE_FLOOR_QUANTILE, Calibration
from detectors.multivariate import JointTest, calibrate_joint
from detectors.share_cusum import ShareCusum, calibrate_share_cusum, increments

#: union episodes the simulation must see for ``kappa`` to be read directly
READ_EPISODES = 8 * MIN_EVENTS
#: the range ``kappa`` is searched in
KAPPA_RANGE = (0.02, 50.0)


@njit(cache=True)
def _union_counts(jstats: np.ndarray, jrows: np.ndarray, labels: np.ndarray, a: np.ndarray,
                  b: np.ndarray, hj: float, rl: float, release_tests: int, hc: float,
                  release_values: int) -> np.ndarray:  # pragma: no cover - compiled
    """(union episodes, joint episodes, CUSUM episodes) over one path: the joint test's
    statistics ``jstats`` at the rows ``jrows`` (threshold ``hj``, release level ``rl``,
    closing after ``release_tests`` quiet tests), the CUSUM over ``labels`` (threshold
    ``hc``, Page's restart at each crossing, closing after ``release_values`` quiet
    vectors), as :class:`~detectors.embedding.VectorTest` runs them."""
    k = a.size
    s = np.zeros(k)
    out = np.zeros(3, dtype=np.int64)
    aj, ac = False, False
    qj, qc, nxt = 0, 0, 0
    for t in range(labels.size):
        before = aj or ac
        lab = labels[t]
        m = 0.0
        for j in range(k):
            v = s[j] + (a[j] if lab == j else b[j])
            if v < 0.0:
                v = 0.0
            s[j] = v
            if v > m:
                m = v
        if m > hc:
            for j in range(k):
                s[j] = 0.0
            if not ac:
                ac = True
                out[2] += 1
            qc = 0
        elif ac:
            qc += 1
            if qc >= release_values:
                ac, qc = False, 0
        if nxt < jrows.size and jrows[nxt] == t:
            st = jstats[nxt]
            nxt += 1
            if not aj:
                if st > hj:
                    aj, qj = True, 0
                    out[1] += 1
            elif st > rl:
                qj = 0
            else:
                qj += 1
                if qj >= release_tests:
                    aj, qj = False, 0
        if (aj or ac) and not before:
            out[0] += 1
    return out


def _reference_paths(joint: Any, rng: np.random.Generator, n_paths: int,
                     ) -> list[tuple[Any, np.ndarray, np.ndarray]]:
    """``n_paths`` bootstrap references: (the joint profile refitted on a resample of the
    row sample, the CUSUM's increments of that resample's shares)."""
    m = joint.rows.shape[0]
    k = joint.centres.shape[0]
    lab = joint.labels(joint.rows)
    out = []
    for _ in range(n_paths):
        idx = rng.integers(m, size=m)
        p = np.maximum(np.bincount(lab[idx], minlength=k) / m, 1.0 / (4.0 * m))
        a, b = increments(p)
        out.append((joint.refit(joint.rows[idx]), a, b))
    return out


def _solve_increasing(f: Callable[[float], float], want: float, lo: float, hi: float,
                      log: bool = False, iters: int = 50) -> float:
    """The ``x`` in [lo, hi] at which the non-decreasing ``f`` reaches ``want`` (bisection;
    on the log scale of ``x`` with ``log``)."""
    for _ in range(iters):
        mid = math.sqrt(lo * hi) if log else 0.5 * (lo + hi)
        if f(mid) < want:
            lo = mid
        else:
            hi = mid
    return hi


class _RunLengths:
    """First alarms of independent fresh runs: the running maxima of the joint test's
    statistic (per test) and of the CUSUM's (per vector, no restart before the first
    crossing), from which the mean run length of any pair of thresholds is read."""

    def __init__(self, joint: Any, window: int, cadence: int, run_len: int, n_values: int,
                 n_paths: int, rng: np.random.Generator) -> None:
        m = joint.rows.shape[0]
        share = getattr(joint, "centres", None) is not None
        lab = joint.labels(joint.rows) if share else np.zeros(m, dtype=np.int64)
        refs = (_reference_paths(joint, rng, n_paths) if share else
                [(joint.refit(joint.rows[rng.integers(m, size=m)]), np.zeros(1), np.zeros(1))
                 for _ in range(n_paths)])
        runs = max(n_values // run_len, n_paths)
        jmax, cmax, allstats = [], [], []
        self.rows: np.ndarray | None = None
        for r in range(runs):
            ref, a, b = refs[r % n_paths]
            idx = rng.integers(m, size=run_len)
            at, st = JointTest(ref, window, cadence)._advance(joint.rows[idx])
            self.rows = at
            allstats.append(st)
            jmax.append(np.maximum.accumulate(st))
            if share:
                c = ShareCusum(np.full(a.size, 0.5))
                c.a, c.b = a, b
                cmax.append(np.maximum.accumulate(c.steps(lab[idx])[0]))
            else:  # a joint test alone: a CUSUM that never alarms
                cmax.append(np.full(1, np.inf))
        self.jmax = np.vstack(jmax)
        self.cmax = np.vstack(cmax)
        self.run_len = run_len
        self.floor = float(np.quantile(np.concatenate(allstats), RELEASE_FLOOR_QUANTILE))

    def _first(self, hj: float, hc: float) -> tuple[np.ndarray, np.ndarray]:
        """Per run, the events up to the first alarm (the run's length if none) and
        whether it alarmed."""
        assert self.rows is not None
        nj = (self.jmax <= hj).sum(axis=1)
        tj = np.where(nj < self.rows.size, self.rows[np.minimum(nj, self.rows.size - 1)] + 1,
                      self.run_len + 1)
        tc = np.where(np.isinf(self.cmax[:, -1]), self.run_len + 1,
                      (self.cmax <= hc).sum(axis=1) + 1)
        t = np.minimum(tj, tc)
        hit = t <= self.run_len
        return np.minimum(t, self.run_len), hit

    def arl(self, hj: float, hc: float) -> tuple[float, int]:
        """(mean run length, alarms) of the union at thresholds ``hj``, ``hc``."""
        t, hit = self._first(hj, hc)
        n = int(hit.sum())
        return float(t.sum()) / max(n, 1) if n else math.inf, n

    def exposure(self) -> int:
        return int(self.jmax.shape[0] * self.run_len)


def _split_thresholds(arl_j: Callable[[float], float], arl_c: Callable[[float], float],
                      target: float, share: float, kappa: float, j_range: tuple[float, float],
                      c_range: tuple[float, float]) -> tuple[float, float]:
    hj = _solve_increasing(arl_j, kappa * target / (1.0 - share), *j_range)
    hc = _solve_increasing(arl_c, kappa * target / share, *c_range)
    return hj, hc


def calibrate_union_run_length(joint: Any, window: int, cadence: int, target: float,
                               share: float, seed: int = 0, n_values: int = 2_000_000,
                               n_paths: int = 32) -> tuple[Calibration, Calibration] | None:
    """(joint test's, CUSUM's) calibrations whose union's mean run length from a fresh test
    is ``target`` vectors; None when the runs would see fewer than :data:`READ_EPISODES`
    alarms of the union at the target (use the episodes' calibration there)."""
    run_len = int(max(3 * target, 4 * window))
    if n_values / run_len < 4 * n_paths or n_values / target < READ_EPISODES:
        return None
    rl = _RunLengths(joint, window, cadence, run_len, n_values, n_paths,
                     np.random.default_rng(seed))
    j_range = (float(rl.jmax.min()), float(rl.jmax.max()) + 1e-9)
    c_range = (float(rl.cmax.min()), float(rl.cmax.max()) + 1e-9)

    def arl_j(h: float) -> float:
        return rl.arl(h, math.inf)[0]

    def arl_c(h: float) -> float:
        return rl.arl(math.inf, h)[0]

    def union(kappa: float) -> float:
        return rl.arl(*_split_thresholds(arl_j, arl_c, target, share, kappa, j_range,
                                         c_range))[0]

    kappa = _solve_increasing(union, target, *KAPPA_RANGE, log=True, iters=40)
    hj, hc = _split_thresholds(arl_j, arl_c, target, share, kappa, j_range, c_range)
    arl, n = rl.arl(hj, hc)
    exposure = rl.exposure()
    cj = Calibration(hj, float(target), "run-length", exposure, n, arl, rl.floor)
    cc = Calibration(hc, float(target), "run-length", exposure, n, arl, 0.0)
    return cj, cc


def calibrate_joint_run_length(profile: Any, window: int, cadence: int, target: float,
                               seed: int = 0, n_values: int = 2_000_000, n_paths: int = 32,
                               ) -> Calibration | None:
    """The threshold of a :class:`~detectors.multivariate.JointTest` alone (a group's, or
    a vector profile's joint test without centres) whose mean run length from a fresh test
    is ``target`` rows, as :func:`calibrate_union_run_length`; None beyond the runs."""
    run_len = int(max(3 * target, 4 * window))
    if n_values / run_len < 4 * n_paths or n_values / target < READ_EPISODES:
        return None
    rl = _RunLengths(profile, window, cadence, run_len, n_values, n_paths,
                     np.random.default_rng(seed))
    h = _solve_increasing(lambda x: rl.arl(x, math.inf)[0], target, float(rl.jmax.min()),
                          float(rl.jmax.max()) + 1e-9)
    arl, n = rl.arl(h, math.inf)
    return Calibration(h, float(target), "run-length", rl.exposure(), n, arl, rl.floor)


class _EpisodePaths:
    """Long null paths of one running test: the joint test's statistics at its tests and
    the CUSUM's labels, on the same rows."""

    def __init__(self, joint: Any, window: int, cadence: int, release: float,
                 release_values: int, n_values: int, n_paths: int,
                 rng: np.random.Generator) -> None:
        m = joint.rows.shape[0]
        lab = joint.labels(joint.rows)
        per_path = max(n_values // n_paths, window * 4)
        self.paths = []
        step = 8 * window
        allstats = []
        for ref, a, b in _reference_paths(joint, rng, n_paths):
            t = JointTest(ref, window, cadence)
            idx = rng.integers(m, size=per_path)
            ats, sts = [], []
            for start in range(0, per_path, step):
                at, st = t._advance(joint.rows[idx[start:start + step]])
                ats.append(at + start)
                sts.append(st)
            st = np.concatenate(sts)
            allstats.append(st)
            self.paths.append((st, np.concatenate(ats).astype(np.int64),
                               np.ascontiguousarray(lab[idx]), a, b))
        self.floor = float(np.quantile(np.concatenate(allstats), RELEASE_FLOOR_QUANTILE))
        self.release = release
        self.release_tests = max(-(-int(release_values) // cadence), 1)
        self.release_values = max(int(release_values), 1)
        self.exposure = float(per_path * n_paths)

    def counts(self, hj: float, hc: float, cusum_only: bool = False) -> np.ndarray:
        """(union, joint, CUSUM) episodes over all paths (``cusum_only``: the joint test
        left out)."""
        rl = min(max(self.release * hj, self.floor), hj)
        out = np.zeros(3, dtype=np.int64)
        none = np.zeros(0, dtype=np.int64)
        for st, at, lab, a, b in self.paths:
            out += _union_counts(st[:0] if cusum_only else st, none if cusum_only else at,
                                 lab, a, b, hj, rl, self.release_tests,
                                 hc if math.isfinite(hc) else 1e300, self.release_values)
        return out


def _curve_threshold(grid: np.ndarray, counts: np.ndarray, want: float) -> float:
    """The threshold on the falling count curve (``grid`` ascending, ``counts`` from its
    peak on) at which the count is ``want``, linear in the log count between grid points."""
    c = np.maximum(counts.astype(np.float64), 0.5)
    if want >= c[0] or c.size < 2:
        return float(grid[0] if want >= c[0] else grid[-1])
    i = int(np.argmax(c <= want))
    if c[i] > want:  # below the last point: extend its last step's slope
        i = c.size - 1
    lo, hi = np.log(c[i - 1]), np.log(c[i])
    f = 0.0 if lo == hi else (lo - math.log(want)) / (lo - hi)
    return float(grid[i - 1] + f * (grid[i] - grid[i - 1]))


def calibrate_union_episodes(joint: Any, window: int, cadence: int, target: float,
                             share: float, release: float = 0.5, release_values: int = 1000,
                             seed: int = 0, n_values: int = 2_000_000, n_paths: int = 32,
                             ) -> tuple[Calibration, Calibration]:
    """(joint test's, CUSUM's) calibrations whose union's episodes under the null are
    ``target`` vectors apart (see the module's docstring)."""
    per_path = max(n_values // n_paths, window * 4)
    if target > per_path * n_paths / READ_EPISODES:
        return _parts(joint, window, cadence, target, share, release, release_values, seed,
                      n_values, n_paths)
    ep = _EpisodePaths(joint, window, cadence, release, release_values, n_values, n_paths,
                       np.random.default_rng(seed))
    # each part's episode count on a grid of its thresholds, from the count's peak on
    # (below it an episode that never closes holds the count down)
    jall = np.concatenate([p[0] for p in ep.paths])
    starts = np.zeros(len(ep.paths) + 1, dtype=np.int64)
    starts[1:] = np.cumsum([p[0].size for p in ep.paths])
    jgrid = np.unique(np.quantile(jall, np.linspace(0.5, 1.0, 801)))
    jcount = episode_counts(jall, starts, jgrid, float(release), int(ep.release_tests),
                            float(ep.floor))
    pk = int(np.argmax(jcount))
    jgrid, jcount = jgrid[pk:], jcount[pk:]
    # (a grid of 0.2: the log count is close to linear in h; it stops below 10 episodes,
    # fewer than the part is ever read at, READ_EPISODES times its share over kappa)
    cgrid = np.arange(0.2, 60.0, 0.2)
    ccount = []
    for h in cgrid:
        ccount.append(int(ep.counts(-math.inf, float(h), cusum_only=True)[2]))
        if ccount[-1] < 10 and max(ccount) > ccount[-1]:
            break
    cgrid, ccount_a = cgrid[:len(ccount)], np.asarray(ccount)
    pk = int(np.argmax(ccount_a))
    cgrid, ccount_a = cgrid[pk:], ccount_a[pk:]

    def thresholds(goal: float, kappa: float) -> tuple[float, float]:
        n_j = ep.exposure * (1.0 - share) / (kappa * goal)
        n_c = ep.exposure * share / (kappa * goal)
        return (_curve_threshold(jgrid, jcount, n_j), _curve_threshold(cgrid, ccount_a, n_c))

    def union_at(goal: float) -> tuple[float, float, float]:
        def spacing(kappa: float) -> float:
            n = int(ep.counts(*thresholds(goal, kappa))[0])
            return ep.exposure / n if n else math.inf
        kappa = _solve_increasing(spacing, goal, *KAPPA_RANGE, log=True, iters=24)
        return (kappa, *thresholds(goal, kappa))

    _, hj, hc = union_at(target)
    n = int(ep.counts(hj, hc)[0])
    est = ep.exposure / max(n, 1)
    return (Calibration(hj, float(target), "direct", int(ep.exposure), n, est, ep.floor),
            Calibration(hc, float(target), "direct", int(ep.exposure), n, est))


def _parts(joint: Any, window: int, cadence: int, target: float, share: float,
           release: float, release_values: int, seed: int, n_values: int, n_paths: int,
           ) -> tuple[Calibration, Calibration]:
    """Each part calibrated on its own (extrapolated) at its share of the target, their
    rates added (the union's is at most their sum: an ARL0 at or above the target)."""
    cj = calibrate_joint(joint, window, cadence, target / (1.0 - share), release,
                         release_values, seed, n_values, n_paths)
    cc = calibrate_share_cusum(joint.labels(joint.rows), joint.centres.shape[0],
                               target / share, release_values, seed, n_values, n_paths)
    # the parts' own targets are target / share: the union's is the target
    return replace(cj, target_events=float(target)), replace(cc, target_events=float(target))
