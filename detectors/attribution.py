"""Feature-attribution drift: the ranking of mean |attribution| against the baseline's.

Following SageMaker Clarify's definition, the baseline's mean absolute attribution
per feature ``b`` is the relevance, and a window's mean absolute attributions ``m``
give the live ranking.  Their agreement is the normalised discounted cumulative gain

    NDCG = DCG / iDCG,  DCG = sum_i b[r_i] / log2(i + 1),  iDCG = sum_i b[s_i] / log2(i + 1)

where ``r_i`` is the feature ranked ``i``-th (from 1) by ``m`` and ``s_i`` the one ranked
``i``-th by ``b``.  1 means the same ranking (or one that only swaps features of equal
baseline relevance); a swap of two important features costs more than one of two
minor features.

**Test.** The stream is cut into tumbling windows of ``window`` events that carry
attributions; at the end of each window its NDCG is computed and compared with a
calibrated level: below it, an episode opens (one alarm); the first window at or above
it closes the episode.

**Calibration.** Like the other detectors, the level comes from the model's
false-alarm knob by simulation under the null: a share of the budget gives ``target``
expected events between false alarms, so a window may alarm with probability
``alpha = window / target``.  Under the null a window's mean vector is the baseline's
plus the sampling error of the window and of the finite reference; by the central
limit theorem it is ``N(b, S (1/window + 1/n_ref))`` with ``S`` the reference's
covariance of |attribution|.  :func:`calibrate_level` draws that many times, computes
each draw's NDCG and takes its ``alpha`` quantile; when ``alpha`` is too small to
observe (fewer than :data:`MIN_TAIL` simulated exceedances), the observed tail of
``1 - NDCG`` is extrapolated as exponential (``log P(1 - NDCG > x) ~ a - c x``), as the
CUSUM's threshold is (see detectors.calibration).

Everything is vectorised: a batch's rows are reduced with one cumulative sum, and
Python loops run once per completed window, never per event or feature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.errors import DetectorError

#: the detector name of the attribution test (episodes and detections)
DETECTOR = "ndcg"
#: fewest simulated exceedances for the level to be read directly rather than extrapolated
MIN_TAIL = 25
#: simulated windows per calibration: at least N_SIM, more (up to MAX_SIM) when the
#: target needs them to see MIN_TAIL exceedances
N_SIM = 100_000
MAX_SIM = 400_000


def _discounts(n: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, n + 2, dtype=np.float64))


def ndcg(live: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """NDCG of the ranking by ``live`` (shape ``(..., F)``) with ``baseline`` (``(F,)``,
    non-negative) as relevance; 1.0 where the baseline has no relevance at all.

    Ties in ``live`` are broken by feature order (a stable sort).

    >>> b = np.array([3.0, 2.0, 1.0])
    >>> float(ndcg(np.array([0.3, 0.2, 0.1]), b))
    1.0
    >>> round(float(ndcg(np.array([0.1, 0.2, 0.3]), b)), 4)
    0.79
    """
    live = np.asarray(live, dtype=np.float64)
    base = np.asarray(baseline, dtype=np.float64)
    if base.ndim != 1 or live.shape[-1] != base.shape[0]:
        raise DetectorError(f"ndcg: {live.shape[-1]} live features vs {base.shape} baseline")
    disc = _discounts(base.shape[0])
    idcg = float(np.sort(base)[::-1] @ disc)
    if not idcg > 0:
        return np.ones(live.shape[:-1])
    order = np.argsort(-live, axis=-1, kind="stable")
    return np.asarray(base[order] @ disc / idcg)


@dataclass(frozen=True)
class AttributionProfile:
    """The reference's mean |attribution| per feature and their covariance."""

    features: tuple[str, ...]
    mean: np.ndarray
    cov: np.ndarray
    n: int

    @classmethod
    def from_rows(cls, features: Sequence[str], rows: np.ndarray) -> AttributionProfile:
        """From a ``(n, F)`` array of attributions (NaN: absent); rows without any value
        are ignored, absent values count as the feature's mean."""
        a = np.abs(np.asarray(rows, dtype=np.float64))
        a[~np.isfinite(a)] = np.nan
        a = a[~np.isnan(a).all(axis=1)] if a.size else a.reshape(0, len(features))
        if a.shape[0] < 2:
            raise DetectorError(f"attributions: the reference has {a.shape[0]} event(s) with "
                                f"attributions; at least 2 are needed (100s for a useful "
                                f"baseline)")
        mean = np.nan_to_num(np.nanmean(a, axis=0))
        filled = np.where(np.isnan(a), mean, a)
        cov = np.atleast_2d(np.cov(filled, rowvar=False))
        return cls(tuple(features), mean, cov, int(a.shape[0]))

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "mean": self.mean.tolist(),
                "cov": self.cov.tolist(), "n": self.n}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AttributionProfile:
        return cls(tuple(d["features"]), np.asarray(d["mean"], dtype=np.float64),
                   np.asarray(d["cov"], dtype=np.float64), int(d["n"]))


def null_ndcg(profile: AttributionProfile, window: int, n: int,
              rng: np.random.Generator) -> np.ndarray:
    """``n`` draws of a window's NDCG under the null (see the module's docstring)."""
    f = len(profile.features)
    scale = math.sqrt(1.0 / window + 1.0 / profile.n)
    w, v = np.linalg.eigh(profile.cov)
    root = v * np.sqrt(np.clip(w, 0.0, None))  # S = root @ root.T (S may be singular)
    out = np.empty(n)
    chunk = max(1, 2_000_000 // max(f, 1))
    for lo in range(0, n, chunk):
        z = rng.standard_normal((min(chunk, n - lo), f))
        out[lo:lo + z.shape[0]] = ndcg(profile.mean + scale * (z @ root.T), profile.mean)
    return out


@dataclass(frozen=True)
class LevelCalibration:
    """The alarm level on NDCG and how it was found."""

    level: float
    #: per-window false-alarm probability aimed at
    alpha: float
    #: "direct" (an observed quantile), "extrapolated" (exponential tail) or "exact"
    #: (the null never changes the ranking often enough to matter: any change alarms)
    method: str
    simulations: int


def calibrate_level(profile: AttributionProfile, window: int, target_events: float,
                    seed: int = 0, n_sim: int | None = None) -> LevelCalibration:
    """The NDCG level below which a window alarms, so that false alarms come once per
    ``target_events`` events on average (one test per ``window`` events).

    The exponential extrapolation is conservative on this discrete statistic (1 - NDCG
    takes one value per ranking): measured against a direct quantile of 40x more
    simulations, its ``1 - level`` is up to about twice as large (fewer false alarms than
    the budget allows, a little less power)."""
    if window < 1 or not target_events > window:
        raise DetectorError(f"attributions: target_events ({target_events}) must exceed the "
                            f"window ({window})")
    alpha = window / float(target_events)
    if n_sim is None:
        n_sim = int(min(max(N_SIM, math.ceil(MIN_TAIL / alpha)), MAX_SIM))
    d = np.sort(1.0 - null_ndcg(profile, window, n_sim, np.random.default_rng(seed)))[::-1]
    d = np.clip(d, 0.0, None)
    positive = int(np.count_nonzero(d > 1e-12))
    if positive / n_sim <= alpha:
        return LevelCalibration(1.0, alpha, "exact", n_sim)
    k = int(math.floor(alpha * n_sim))
    if k >= MIN_TAIL:
        # count(d > d[k]) <= k: the (k+1)-th largest as the threshold on 1 - NDCG
        return LevelCalibration(float(1.0 - d[k]), alpha, "direct", n_sim)
    top = min(positive, max(10 * MIN_TAIL, n_sim // 100))
    ranks = np.arange(MIN_TAIL, top + 1)
    if ranks.size < 2 or d[MIN_TAIL - 1] <= d[top - 1]:
        thr = float(d[0])  # a tail too thin to fit: the largest simulated value
    else:
        x = d[ranks - 1]
        slope, icept = np.polyfit(x, np.log(ranks / n_sim), 1)
        thr = float((math.log(alpha) - icept) / slope) if slope < 0 else float(d[0])
        thr = max(thr, float(d[k]))
    return LevelCalibration(float(min(1.0, max(0.0, 1.0 - thr))), alpha, "extrapolated",
                            n_sim)


@dataclass(frozen=True)
class WindowEvent:
    """An attribution episode opened (alarm) or closed at the window ending at
    ``position`` (a row of the batch); shaped like :class:`detectors.column.Alarm`."""

    position: int
    column: str
    detector: str
    #: 1 - NDCG of the window
    statistic: float
    #: 1 - the calibrated level
    threshold: float
    opened: bool


@dataclass
class AttributionMonitor:
    """The tumbling-window NDCG test of one model on one partition."""

    profile: AttributionProfile
    level: float
    window: int
    column: str = "attribution"
    sums: np.ndarray = field(init=False)
    counts: np.ndarray = field(init=False)
    rows: int = 0
    ndcg: float = 1.0
    #: the last complete window's mean |attribution| per feature (baseline's until then)
    means: np.ndarray = field(init=False)
    active: bool = False
    n_windows: int = 0
    n_alarms: int = 0
    n_rows: int = 0

    def __post_init__(self) -> None:
        f = len(self.profile.features)
        self.sums = np.zeros(f)
        self.counts = np.zeros(f)
        self.means = self.profile.mean.copy()

    @property
    def threshold(self) -> float:
        return max(1.0 - self.level, 1e-9)

    @property
    def score(self) -> float:
        return (1.0 - self.ndcg) / self.threshold

    def update(self, values: np.ndarray) -> list[WindowEvent]:
        """Feed a batch's ``(n, F)`` attributions (NaN: absent; a row with none is not
        counted); the episodes opened and closed, in order."""
        a = np.abs(np.asarray(values, dtype=np.float64))
        a[~np.isfinite(a)] = np.nan
        present = ~np.isnan(a)
        has = present.any(axis=1)
        idx = np.flatnonzero(has)
        if not idx.size:
            return []
        self.n_rows += int(idx.size)
        vals = np.where(present[idx], a[idx], 0.0)
        cnts = present[idx].astype(np.float64)
        cs = np.cumsum(vals, axis=0)
        cc = np.cumsum(cnts, axis=0)
        need = self.window - self.rows
        cuts = np.arange(need - 1, idx.size, self.window)
        out: list[WindowEvent] = []
        prev_s = np.zeros_like(self.sums)
        prev_c = np.zeros_like(self.counts)
        for cut in cuts.tolist():  # once per completed window
            s = self.sums + cs[cut] - prev_s
            c = self.counts + cc[cut] - prev_c
            prev_s, prev_c = cs[cut], cc[cut]
            self.sums = np.zeros_like(self.sums)
            self.counts = np.zeros_like(self.counts)
            self.rows = 0
            self.means = np.divide(s, c, out=np.zeros_like(s), where=c > 0)
            self.ndcg = float(ndcg(self.means, self.profile.mean))
            self.n_windows += 1
            stat, thr = 1.0 - self.ndcg, self.threshold
            alarming = self.ndcg < self.level
            if alarming and not self.active:
                self.active = True
                self.n_alarms += 1
                out.append(WindowEvent(int(idx[cut]), self.column, DETECTOR, stat, thr, True))
            elif self.active and not alarming:
                self.active = False
                out.append(WindowEvent(int(idx[cut]), self.column, DETECTOR, stat, thr, False))
        self.sums = self.sums + cs[-1] - prev_s
        self.counts = self.counts + cc[-1] - prev_c
        self.rows += int(idx.size - (cuts[-1] + 1 if cuts.size else 0))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The running state (the current window's sums and counts, the last window's
        figures, the open episode and the counters), for a checkpoint; the profile, level
        and window come from the configuration (:meth:`from_dict`)."""
        return {"sums": self.sums.tolist(), "counts": self.counts.tolist(),
                "rows": self.rows, "ndcg": self.ndcg, "means": self.means.tolist(),
                "active": self.active, "n_windows": self.n_windows,
                "n_alarms": self.n_alarms, "n_rows": self.n_rows}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], profile: AttributionProfile, level: float,
                  window: int, column: str = "attribution") -> AttributionMonitor:
        """A monitor resuming :meth:`to_dict`'s state; a state that does not fit
        ``profile`` and ``window`` raises :class:`DetectorError`.

        >>> p = AttributionProfile.from_rows(["a", "b"], np.array([[2.0, 1.0], [3.0, 0.5]]))
        >>> m = AttributionMonitor(p, 0.9, 4)
        >>> _ = m.update(np.array([[1.0, 2.0], [1.5, 0.1]]))
        >>> r = AttributionMonitor.from_dict(m.to_dict(), p, 0.9, 4)
        >>> (r.rows, r.sums.tolist())
        (2, [2.5, 2.1])
        """
        f = len(profile.features)
        try:
            sums = np.asarray(d["sums"], dtype=np.float64)
            counts = np.asarray(d["counts"], dtype=np.float64)
            means = np.asarray(d["means"], dtype=np.float64)
            rows = int(d["rows"])
            state = (float(d["ndcg"]), bool(d["active"]), int(d["n_windows"]),
                     int(d["n_alarms"]), int(d["n_rows"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DetectorError(f"attribution state: malformed ({exc!r})") from None
        if sums.shape != (f,) or counts.shape != (f,) or means.shape != (f,):
            raise DetectorError(f"attribution state: {sums.shape[-1] if sums.ndim else 0} "
                                f"features saved, {f} configured")
        if not 0 <= rows < window or not (np.isfinite(sums).all()
                                          and np.isfinite(counts).all()):
            raise DetectorError(f"attribution state: {rows} rows in the current window "
                                f"(window {window}) or non-finite sums")
        mon = cls(profile, level, window, column)
        mon.sums, mon.counts, mon.means, mon.rows = sums, counts, means, rows
        mon.ndcg, mon.active, mon.n_windows, mon.n_alarms, mon.n_rows = state
        return mon


def root_cause(scores: Mapping[str, float], importance: Mapping[str, float] | None,
               top: int = 3) -> list[dict[str, Any]]:
    """The features ranked by contribution = drift score x importance, the ``top`` first.

    ``importance`` (feature -> weight >= 0: the baseline's mean |attribution| or the
    configured importances) is rescaled to a mean of 1 over ``scores``' features, so a
    contribution reads as a drift score; without importances (None or all zero) every
    feature weighs 1 and the ranking is by drift score alone.  Ties: by name.

    >>> [r["feature"] for r in root_cause({"a": 2.0, "b": 1.0, "c": 0.5}, {"a": 0.1, "b": 1,
    ...                                    "c": 1})]
    ['b', 'c', 'a']
    """
    names = sorted(scores)
    if not names:
        return []
    s = np.array([_finite(scores[n]) for n in names])
    w = np.ones(len(names)) if importance is None else \
        np.array([max(_finite((importance or {}).get(n, 0.0)), 0.0) for n in names])
    w = w / w.mean() if w.sum() > 0 else np.ones(len(names))
    c = s * w
    order = sorted(range(len(names)), key=lambda i: (-c[i], names[i]))[:top]
    return [{"rank": r + 1, "feature": names[i], "contribution": round(float(c[i]), 6),
             "score": round(float(s[i]), 6), "importance": round(float(w[i]), 6)}
            for r, i in enumerate(order)]


def _finite(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) else 0.0
