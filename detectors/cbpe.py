"""Estimated performance without labels: confidence-based performance estimation (CBPE).

A binary classifier's score is meant to be P(positive).  When it is *calibrated*, the label
of a prediction with score ``p`` is a Bernoulli(``p``) draw, so the expected cells of the
confusion matrix of a set of predictions follow from the scores alone (NannyML's CBPE):

* expected true positives ``A = sum(p | predicted positive)``, false positives
  ``npp - A``, false negatives ``B = sum(p | predicted negative)``, true negatives
  ``n - npp - B`` (``npp``: predictions at or above the threshold);
* accuracy ``(A + n - npp - B) / n``, precision ``A / npp``, recall ``A / (A + B)``,
  F1 ``2A / (npp + A + B)``;
* ROC AUC from two score histograms of :data:`SCORE_BINS` bins over the *raw* score (the
  ranking the realised AUC uses), one weighted by ``p`` (expected positives) and one by
  ``1 - p`` (expected negatives), exactly as the realised AUC is computed from its two
  histograms (:mod:`detectors.quality_metrics`), less the pairs of a prediction with
  itself.

Everything is a sum over predictions (:func:`cbpe_stats`), so windows and partitions merge
by adding vectors, and the estimate costs nothing on the hot path: a window only keeps the
raw scores (:class:`ScoreWindow`).

**Bands.**  :func:`cbpe_estimates` also gives, per metric, the standard deviation of the
*realised* metric of these predictions when each label is an independent Bernoulli(``p``):
``sum p(1-p)`` over the predicted positives (``vA``) and negatives (``vB``) for the counts,
the delta method for recall and F1, and Hanley & McNeil's (1982) formula with the expected
class counts for AUC.  The realised value should lie within ± 1.96 of them 95 % of the time.
:class:`CBPEReference` adds the *drop band*: ``sigmas`` standard deviations of the estimate
itself over windows of the configured size drawn from the reference (a seeded bootstrap),
``sigmas`` calibrated so that the drop alarm takes its share of the model's false-alarm
knob (:mod:`detectors.cbpe_drop`; :data:`DROP_SIGMAS` without a target).

**Calibration.**  :meth:`ScoreCalibration.fit` tests the labelled reference's scores with
the Hosmer-Lemeshow statistic over :data:`HL_GROUPS` equal-count groups (chi-square with
:data:`HL_GROUPS` degrees of freedom, the held-out form).  When it rejects at
:data:`HL_ALPHA` the scores are recalibrated by isotonic regression (pool adjacent
violators) of the labels on the raw-score bins, a lookup table of :data:`SCORE_BINS`
entries; otherwise they are used as they are.

Assumptions: the (recalibrated) scores are calibrated on the production data as on the
reference (covariate shift only: P(y|x) unchanged, no concept drift).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> s = rng.beta(2, 2, 20_000)
>>> y = (rng.random(20_000) < s).astype(float)            # calibrated scores
>>> est, sd = cbpe_estimates(cbpe_stats(s, s, 0.5))
>>> realised = float(np.mean((s >= 0.5) == (y > 0.5)))
>>> abs(est["accuracy"] - realised) < 3 * sd["accuracy"]
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from scipy import stats as _stats

from detectors.cbpe_drop import DropCalibration, calibrate_drop_sigmas
from detectors.errors import DetectorError
from detectors.quality_metrics import SCORE_BINS

__all__ = ["CALIBRATION_MODES", "ESTIMATED", "HL_ALPHA", "HL_GROUPS", "CBPEReference",
           "ScoreCalibration", "ScoreWindow", "cbpe_estimates", "cbpe_stats",
           "hosmer_lemeshow"]

#: the metrics estimated, in export order
ESTIMATED: Final = ("accuracy", "precision", "recall", "f1", "roc_auc")
#: ``auto``: recalibrate when the reference fails the test; ``always``; ``never``
CALIBRATION_MODES: Final = ("auto", "always", "never")
HL_GROUPS: Final = 10
HL_ALPHA: Final = 0.01
#: labelled reference pairs needed to test and recalibrate the scores
MIN_CALIBRATION_PAIRS: Final = 500
#: bootstrap windows behind the drop band
BOOTSTRAP: Final = 200
#: standard deviations of the estimate under the reference in the drop band when no
#: false-alarm target is given (the fixed rule of before the calibration)
DROP_SIGMAS: Final = 3.0
#: the head of the statistics vector: n, npp, A, B, vA, vB
_HEAD: Final = 6


def _bins(s: np.ndarray) -> np.ndarray:
    return np.minimum((np.clip(s, 0.0, 1.0) * SCORE_BINS).astype(np.int64), SCORE_BINS - 1)


def cbpe_stats(s: np.ndarray, p: np.ndarray, threshold: float) -> np.ndarray:
    """The additive statistics of predictions with raw scores ``s`` and calibrated
    probabilities ``p``: ``[n, npp, A, B, vA, vB]``, then the raw-score histogram weighted
    by ``p`` and the one weighted by ``1 - p`` (:data:`SCORE_BINS` bins each)."""
    s = np.asarray(s, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    pred = s >= threshold
    q = p * (1.0 - p)
    b = _bins(s)
    head = np.array([s.shape[0], np.count_nonzero(pred), p[pred].sum(), p[~pred].sum(),
                     q[pred].sum(), q[~pred].sum()], dtype=np.float64)
    return np.concatenate([head, np.bincount(b, weights=p, minlength=SCORE_BINS),
                           np.bincount(b, weights=1.0 - p, minlength=SCORE_BINS)])


def _div(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def cbpe_estimates(st: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
    """The estimates of :data:`ESTIMATED` from :func:`cbpe_stats` (summed over any number
    of windows), and the standard deviation of each realised metric around it (NaN where
    undefined)."""
    n, npp, a, b, va, vb = (float(x) for x in st[:_HEAD])
    hp = st[_HEAD:_HEAD + SCORE_BINS]
    hn = st[_HEAD + SCORE_BINS:]
    nan = math.nan
    if n <= 0:
        return dict.fromkeys(ESTIMATED, nan), dict.fromkeys(ESTIMATED, nan)
    est: dict[str, float] = {}
    sd: dict[str, float] = {}
    est["accuracy"] = (a + (n - npp - b)) / n
    sd["accuracy"] = math.sqrt(va + vb) / n
    est["precision"] = _div(a, npp)
    sd["precision"] = _div(math.sqrt(va), npp)
    pos = a + b
    est["recall"] = _div(a, pos)
    sd["recall"] = _div(math.sqrt(b * b * va + a * a * vb), pos * pos)
    d = npp + pos
    est["f1"] = _div(2 * a, d)
    sd["f1"] = _div(2 * math.sqrt((npp + b) ** 2 * va + a * a * vb), d * d)
    neg = n - pos
    below = np.cumsum(hn) - hn
    # a prediction is never paired with itself: its own p(1 - p), counted half in its bin
    # above, comes off the pairs and off the expected number of pairs
    auc = _div(float((hp * (below + 0.5 * hn)).sum()) - 0.5 * (va + vb),
               pos * neg - (va + vb))
    est["roc_auc"] = auc
    if math.isfinite(auc) and pos > 1 and neg > 1:
        q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
        var = (auc * (1 - auc) + (pos - 1) * (q1 - auc * auc) + (neg - 1) * (q2 - auc * auc)) \
            / (pos * neg)
        sd["roc_auc"] = math.sqrt(max(var, 0.0))
    else:
        sd["roc_auc"] = nan
    return est, sd


def hosmer_lemeshow(s: np.ndarray, y: np.ndarray, groups: int = HL_GROUPS,
                    ) -> tuple[float, float]:
    """Hosmer-Lemeshow statistic and p-value of scores ``s`` against labels ``y`` (0/1):
    ``groups`` groups of equal count by score, chi-square with ``groups`` degrees of freedom
    (scores not fitted on these labels).

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> s = rng.random(5_000); y = (rng.random(5_000) < s).astype(float)
    >>> hosmer_lemeshow(s, y)[1] > 0.01, hosmer_lemeshow(s ** 2, y)[1] < 1e-6
    (True, True)
    """
    order = np.argsort(s, kind="stable")
    stat = 0.0
    for idx in np.array_split(order, groups):
        if not idx.size:
            continue
        e = float(s[idx].sum())
        o = float(y[idx].sum())
        k = idx.size
        var = e * (1 - e / k)
        if var > 0:
            stat += (o - e) ** 2 / var
        elif o != e:
            stat = math.inf
    return stat, float(_stats.chi2.sf(stat, groups))


def _pav(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted isotonic (non-decreasing) regression of ``y`` by pool adjacent violators."""
    vals: list[float] = []
    wts: list[float] = []
    sizes: list[int] = []
    for v, wt in zip(y.tolist(), w.tolist(), strict=True):
        vals.append(v)
        wts.append(wt)
        sizes.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            v2, w2, s2 = vals.pop(), wts.pop(), sizes.pop()
            tw = wts[-1] + w2
            vals[-1] = (vals[-1] * wts[-1] + v2 * w2) / tw
            wts[-1] = tw
            sizes[-1] += s2
    return np.repeat(np.asarray(vals), sizes)


@dataclass(frozen=True)
class ScoreCalibration:
    """A map from raw scores to calibrated probabilities (identity when ``table`` is None).

    ``statistic`` and ``p_value``: the Hosmer-Lemeshow test of the reference (NaN when it
    was not tested: no labelled reference, or too few pairs)."""

    table: np.ndarray | None = None
    statistic: float = math.nan
    p_value: float = math.nan
    pairs: int = 0

    @property
    def recalibrated(self) -> bool:
        return self.table is not None

    def apply(self, s: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of the raw scores ``s`` (in [0, 1])."""
        s = np.asarray(s, dtype=np.float64)
        if self.table is None:
            return np.clip(s, 0.0, 1.0)
        return self.table[_bins(s)]

    @classmethod
    def fit(cls, s: np.ndarray, y: np.ndarray, mode: str = "auto",
            alpha: float = HL_ALPHA) -> ScoreCalibration:
        """Test the reference's scores ``s`` against its labels ``y`` and, when the test
        rejects at ``alpha`` (``mode="auto"``) or always (``"always"``), fit the isotonic
        map on :data:`SCORE_BINS` raw-score bins.  Fewer than
        :data:`MIN_CALIBRATION_PAIRS` pairs, or ``mode="never"``: the identity.

        >>> import numpy as np
        >>> rng = np.random.default_rng(2)
        >>> s = rng.random(20_000); y = (rng.random(20_000) < s).astype(float)
        >>> ScoreCalibration.fit(s, y).recalibrated, ScoreCalibration.fit(s ** 3, y).recalibrated
        (False, True)
        """
        if mode not in CALIBRATION_MODES:
            raise DetectorError(f"calibration mode must be one of "
                                f"{', '.join(CALIBRATION_MODES)}, got {mode!r}")
        s = np.clip(np.asarray(s, dtype=np.float64), 0.0, 1.0)
        y = np.asarray(y, dtype=np.float64)
        if s.shape != y.shape:
            raise DetectorError(f"scores and labels differ in length: {s.shape} vs {y.shape}")
        if mode == "never" or s.size < MIN_CALIBRATION_PAIRS:
            return cls(pairs=int(s.size))
        stat, pv = hosmer_lemeshow(s, y)
        if mode == "auto" and pv >= alpha:
            return cls(None, stat, pv, int(s.size))
        b = _bins(s)
        cnt = np.bincount(b, minlength=SCORE_BINS).astype(np.float64)
        pos = np.bincount(b, weights=y, minlength=SCORE_BINS)
        seen = np.flatnonzero(cnt > 0)
        fitted = _pav(pos[seen] / cnt[seen], cnt[seen])
        centres = (np.arange(SCORE_BINS) + 0.5) / SCORE_BINS
        table = np.interp(centres, centres[seen], fitted)
        return cls(table, stat, pv, int(s.size))


class ScoreWindow:
    """The raw scores of the last ``window`` predictions (a ring; bounded memory).

    >>> import numpy as np
    >>> w = ScoreWindow(3)
    >>> w.update(np.array([0.1, 0.2, 0.3, 0.4])); w.scores().tolist(), w.n
    ([0.2, 0.3, 0.4], 4)
    """

    def __init__(self, window: int) -> None:
        if window < 1:
            raise DetectorError(f"window must be >= 1, got {window}")
        self.window = int(window)
        self.ring = np.zeros(self.window)
        #: scores seen (the ring holds the last min(n, window))
        self.n = 0

    def update(self, s: np.ndarray) -> None:
        """Add scores; those not finite or outside [0, 1] are left out."""
        s = np.asarray(s, dtype=np.float64)
        s = s[np.isfinite(s) & (s >= 0.0) & (s <= 1.0)]
        k = s.shape[0]
        if not k:
            return
        s = s[-self.window:]
        m = s.shape[0]
        self.ring[(self.n + k - m + np.arange(m)) % self.window] = s
        self.n += k

    def scores(self) -> np.ndarray:
        """The last min(n, window) scores, oldest first."""
        m = min(self.n, self.window)
        return self.ring[(self.n - m + np.arange(m)) % self.window]

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window, "n": self.n, "scores": self.scores().tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoreWindow:
        w = cls(int(d["window"]))
        s = np.asarray(d["scores"], dtype=np.float64)[-w.window:]
        m = s.shape[0]
        w.n = max(int(d["n"]), m)
        w.ring[(w.n - m + np.arange(m)) % w.window] = s  # read back from position n - m
        return w

    def __repr__(self) -> str:
        return f"ScoreWindow(window={self.window}, n={self.n})"


@dataclass(frozen=True)
class CBPEReference:
    """What a model's estimates are compared with: the calibration, the estimates on the
    reference's scores (``baseline``), the standard deviation of the estimate over a
    window of ``window`` predictions drawn from the reference (``null_sd``) and the drop
    band's width in those (``sigmas``; ``drop``: its calibration, None when fixed)."""

    calibration: ScoreCalibration
    threshold: float
    window: int
    baseline: dict[str, float] = field(default_factory=dict)
    null_sd: dict[str, float] = field(default_factory=dict)
    sigmas: float = DROP_SIGMAS
    drop: DropCalibration | None = None

    @classmethod
    def build(cls, scores: np.ndarray | None, labels: np.ndarray | None, *, window: int,
              threshold: float, mode: str = "auto", seed: int = 0,
              target_events: float | None = None) -> CBPEReference:
        """From the reference's raw scores and, where it has them, its labels (same length;
        NaN = unlabelled).  Without scores: identity calibration, no baseline.
        ``target_events``: the drop alarm's share of the false-alarm knob, in predictions
        per false drop episode (None: the fixed :data:`DROP_SIGMAS` band)."""
        if scores is None or not np.asarray(scores).size:
            return cls(ScoreCalibration(), threshold, window)
        s = np.asarray(scores, dtype=np.float64)
        ok = np.isfinite(s) & (s >= 0.0) & (s <= 1.0)
        s = s[ok]
        cal = ScoreCalibration()
        if labels is not None:
            y = np.asarray(labels, dtype=np.float64)[ok]
            has = np.isfinite(y)
            cal = ScoreCalibration.fit(s[has], y[has], mode)
        if not s.size:
            return cls(cal, threshold, window)
        p = cal.apply(s)
        baseline, _ = cbpe_estimates(cbpe_stats(s, p, threshold))
        rng = np.random.default_rng(seed)
        draws = np.empty((BOOTSTRAP, len(ESTIMATED)))
        for i in range(BOOTSTRAP):
            idx = rng.integers(0, s.size, window)
            e, _ = cbpe_estimates(cbpe_stats(s[idx], p[idx], threshold))
            draws[i] = [e[m] for m in ESTIMATED]
        null_sd = {}
        for j, m in enumerate(ESTIMATED):
            col = draws[:, j][np.isfinite(draws[:, j])]
            null_sd[m] = float(col.std()) if col.size > 1 else math.nan
        if target_events is None:
            return cls(cal, threshold, window, baseline, null_sd)

        def auc(si: np.ndarray, pi: np.ndarray) -> float:
            return cbpe_estimates(cbpe_stats(si, pi, threshold))[0]["roc_auc"]

        drop = calibrate_drop_sigmas(s, p, threshold, window, target_events, baseline,
                                     null_sd, auc=auc, seed=seed)
        return cls(cal, threshold, window, baseline, null_sd, drop.sigmas, drop)

    def band(self, n: int) -> dict[str, float]:
        """The drop band for an estimate over ``n`` predictions: ``sigmas`` bootstrap
        standard deviations, scaled from ``window`` to ``n`` as 1/sqrt(n)."""
        if not self.null_sd or n <= 0:
            return {}
        f = math.sqrt(self.window / n)
        return {m: self.sigmas * v * f for m, v in self.null_sd.items() if math.isfinite(v)}

    def drops(self, est: dict[str, float], n: int) -> dict[str, bool]:
        """Per metric with a band: whether ``est``, an estimate over ``n`` predictions, is a
        drop (a full window, and below the baseline by more than the band)."""
        band = self.band(n) if self.baseline else {}
        return {m: bool(n >= self.window and math.isfinite(est.get(m, math.nan))
                        and math.isfinite(self.baseline.get(m, math.nan))
                        and est[m] < self.baseline[m] - band[m])
                for m in band}
