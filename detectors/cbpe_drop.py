"""The estimated-performance drop alarm, calibrated to the model's false-alarm knob.

The drop rule (:class:`detectors.cbpe.CBPEReference`): a metric's recent estimate over a
full window is below the reference's estimate by more than ``k`` standard deviations of
that estimate under the reference (``null_sd``, scaled as 1/sqrt(n)).  Every other
detector's threshold comes from the one knob, ``false_alarm_events``; so does ``k`` here.
The alarm takes its share of the model's rate (:func:`stream.config.estimate.estimate_budget`),
``target_events`` model events per false drop episode, and :func:`calibrate_drop_sigmas`
finds the ``k`` at which the null stream raises that many:

* **the null**: streams of predictions drawn from the reference's scores, each path first
  drawing its "true" score distribution from a Dirichlet posterior around the reference (a
  window is compared with a finite reference's estimate, not the truth, as in
  :mod:`detectors.calibration`);
* **what production computes**: the estimate over the last ``window`` predictions, each of
  the five metrics against its baseline in units of its ``null_sd``, the alarm being their
  worst (the model's one drop alarm: an episode opens when any metric falls through its
  band while none was);
* **the cadence**: tested after every prediction (accuracy, precision, recall and F1 from
  running sums; ROC AUC, from histograms, every ``window / 20`` predictions, held between,
  or less often on long paths of short windows).
  Production tests at scrape time, a subset of those points, and a subset of a series of
  tests never has more runs of alarms than the series, so its rate is at most this one;
  and several partitions merge their windows into a longer one, which crosses less often;
* **the rate**: episodes (up-crossings of ``k``) per prediction.  Where the target is
  beyond the simulation the observed tail is extrapolated on the scale of the nominal
  one-sided p-value (``log rate ~ a + b log Phi(-k)``), as the window tests' are.

>>> import numpy as np
>>> from detectors.cbpe import CBPEReference
>>> s = np.random.default_rng(0).beta(2, 2, 20_000)
>>> ref = CBPEReference.build(s, None, window=500, threshold=0.5)
>>> cal = calibrate_drop_sigmas(s, s, 0.5, 500, 2e4, ref.baseline, ref.null_sd)
>>> 2.0 < cal.sigmas < 4.0, cal.method
(True, 'direct')
>>> calibrate_drop_sigmas(s, s, 0.5, 500, 1e8, ref.baseline, ref.null_sd).sigmas > cal.sigmas + 1
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy import stats as _stats

from detectors.calibration import MIN_EVENTS
from detectors.errors import DetectorError

__all__ = ["DROP_PATHS", "DropCalibration", "calibrate_drop_sigmas", "drop_statistic",
           "episode_rate"]

#: simulated null paths (each its own posterior draw of the reference)
DROP_PATHS: Final = 8
#: predictions simulated in all: at least this many, and at least 160 windows
DROP_EVENTS: Final = 1_600_000
#: ROC AUC is tested every window / AUC_STRIDES predictions in the simulation, at most
#: AUC_TESTS times a path (an estimate from two histograms costs ~50 us)
AUC_STRIDES: Final = 20
AUC_TESTS: Final = 2_000
#: never below this many standard deviations (a drop is never inside the noise of a window)
MIN_SIGMAS: Final = 2.0
#: the extrapolated tail: the points with at most this many simulated episodes
TAIL_EVENTS: Final = 200 * MIN_EVENTS
#: the grid of ``k`` the rate curve is read on
_GRID: Final = np.round(np.arange(1.0, 12.0, 0.05), 2)

Estimator = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class DropCalibration:
    """``sigmas``: the band in null standard deviations; ``method``: ``direct`` (read off
    the simulated rate), ``extrapolated`` or ``floor`` (:data:`MIN_SIGMAS`, when the
    calibrated value is lower); ``episodes``/``predictions``: what the simulation saw at
    ``sigmas`` (fewer than :data:`detectors.calibration.MIN_EVENTS` when extrapolated)."""

    sigmas: float
    target_events: float
    method: str
    episodes: int
    predictions: int


def _running(x: np.ndarray, w: int) -> np.ndarray:
    c = np.concatenate([[0.0], np.cumsum(x)])
    return c[w:] - c[:-w]


def drop_statistic(s: np.ndarray, p: np.ndarray, threshold: float, window: int,
                   baseline: Mapping[str, float], null_sd: Mapping[str, float],
                   auc: Estimator | None = None) -> np.ndarray:
    """Per prediction from the ``window``-th on: the largest fall of a metric's estimate over
    the last ``window`` predictions below ``baseline``, in units of its ``null_sd`` (NaN
    where no metric is defined).  ``auc(s, p)``: the ROC AUC estimate of a window, tested
    every ``window // AUC_STRIDES`` predictions (or fewer: at most :data:`AUC_TESTS`
    times) and held between (None: left out)."""
    pred = (s >= threshold).astype(np.float64)
    npp = _running(pred, window)
    a = _running(p * pred, window)
    b = _running(p * (1.0 - pred), window)
    n = float(window)
    with np.errstate(divide="ignore", invalid="ignore"):
        est = {"accuracy": (a + n - npp - b) / n, "precision": a / npp, "recall": a / (a + b),
               "f1": 2 * a / (npp + a + b)}
    worst = np.full(npp.shape[0], -np.inf)
    for m, e in est.items():
        sd = null_sd.get(m, math.nan)
        if math.isfinite(sd) and sd > 0 and math.isfinite(baseline.get(m, math.nan)):
            z = (baseline[m] - e) / sd
            worst = np.fmax(worst, np.where(np.isfinite(z), z, -np.inf))
    sd = null_sd.get("roc_auc", math.nan)
    if auc is not None and math.isfinite(sd) and sd > 0 \
            and math.isfinite(baseline.get("roc_auc", math.nan)):
        stride = max(1, window // AUC_STRIDES, -(-npp.shape[0] // AUC_TESTS))
        starts = np.arange(0, npp.shape[0], stride)
        z = np.array([(baseline["roc_auc"] - auc(s[i:i + window], p[i:i + window])) / sd
                      for i in starts])
        z = np.where(np.isfinite(z), z, -np.inf)
        worst = np.fmax(worst, np.repeat(z, stride)[:npp.shape[0]])
    return np.where(np.isfinite(worst), worst, np.nan)


def _upcrossings(z: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Episodes of ``z >= k`` for each ``k`` of ``grid`` (NaN: no alarm; the first test
    opens one when it alarms)."""
    z = np.where(np.isnan(z), -np.inf, z)
    lo = np.concatenate([[-np.inf], z[:-1]])
    up = z > lo
    lo, hi = np.sort(lo[up]), np.sort(z[up])
    # an episode opens at k when lo < k <= hi
    return np.searchsorted(lo, grid, "left") - np.searchsorted(hi, grid, "left")


def episode_rate(z: np.ndarray, k: float) -> tuple[int, int]:
    """(episodes of ``z >= k``, tests) of a series of drop statistics."""
    return int(_upcrossings(z, np.array([k]))[0]), int(z.shape[0])


def calibrate_drop_sigmas(s: np.ndarray, p: np.ndarray, threshold: float, window: int,
                          target_events: float, baseline: Mapping[str, float],
                          null_sd: Mapping[str, float], *, auc: Estimator | None = None,
                          seed: int = 0) -> DropCalibration:
    """The drop band's ``k`` for a reference of raw scores ``s`` (calibrated ``p``) so that a
    null stream opens one drop episode per ``target_events`` predictions (see the module).
    ``baseline`` and ``null_sd``: the reference's estimates and their standard deviation
    over a window (:class:`detectors.cbpe.CBPEReference`); ``auc``: ROC AUC's estimator
    (None: the four count metrics only)."""
    if not target_events > 1:
        raise DetectorError(f"target_events must be > 1, got {target_events!r}")
    s = np.asarray(s, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    rng = np.random.default_rng(seed)
    per_path = max(DROP_EVENTS, 160 * window) // DROP_PATHS + window - 1
    counts = np.zeros(_GRID.shape[0], dtype=np.int64)
    tests = 0
    for _ in range(DROP_PATHS):
        w = rng.standard_exponential(s.shape[0])
        cdf = np.cumsum(w)
        idx = np.minimum(np.searchsorted(cdf, rng.random(per_path) * cdf[-1]), s.shape[0] - 1)
        z = drop_statistic(s[idx], p[idx], threshold, window, baseline, null_sd, auc)
        counts += _upcrossings(z, _GRID)
        tests += z.shape[0]
    return _read(counts, tests, float(target_events))


def _read(counts: np.ndarray, tests: int, target_events: float) -> DropCalibration:
    target = 1.0 / target_events
    rate = counts / max(tests, 1)
    ok = np.flatnonzero((rate <= target) & (counts >= MIN_EVENTS))
    if ok.size:
        i = int(ok[0])
        return _floor(DropCalibration(float(_GRID[i]), target_events, "direct",
                                      int(counts[i]), tests))
    seen = counts >= MIN_EVENTS
    if seen.sum() < 3:
        raise DetectorError("the drop alarm's null simulation saw too few episodes to "
                            "calibrate it (a reference with no score spread?)")
    # the tail: the points with up to 200 x MIN_EVENTS episodes (episodes of a sliding
    # window come in clusters, so fewer points make k a lot noisier: against a 10^8-
    # prediction direct simulation, window 1,000, target 10^6, a tail to 40 x spread k over
    # 4.4-5.0 across simulation seeds, to 200 x over 4.65-4.9 for a true 4.65-4.7)
    tail = seen & (counts <= max(TAIL_EVENTS, int(counts[seen].min()) * 4))
    if tail.sum() < 3:
        tail = seen
    lp = _stats.norm.logsf(_GRID[tail])
    lr = np.log(rate[tail])
    slope, icpt = np.polyfit(lp, lr, 1, w=np.sqrt(counts[tail]))
    if not slope > 0:
        raise DetectorError("the drop alarm's simulated rate does not fall with its band")
    k = float(_stats.norm.isf(math.exp((math.log(target) - icpt) / slope)))
    last = int(np.flatnonzero(seen)[-1])
    k = max(k, float(_GRID[last]))
    return _floor(DropCalibration(round(k, 3), target_events, "extrapolated",
                                  int(counts[min(int(np.searchsorted(_GRID, k)), counts.size - 1)]),
                                  tests))


def _floor(cal: DropCalibration) -> DropCalibration:
    if cal.sigmas >= MIN_SIGMAS:
        return cal
    return DropCalibration(MIN_SIGMAS, cal.target_events, "floor", cal.episodes,
                           cal.predictions)
