"""Estimated performance without labels (detectors.cbpe), tested as statistics: several
seeds, tolerance bands from the estimator's own standard deviations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detectors.cbpe import (
    ESTIMATED,
    CBPEReference,
    ScoreCalibration,
    ScoreWindow,
    cbpe_estimates,
    cbpe_stats,
    hosmer_lemeshow,
)
from detectors.errors import DetectorError
from detectors.quality_metrics import QualityMetrics

SEEDS = (0, 1, 2, 3, 4)


def _world(rng: np.random.Generator, n: int, shift: float = 0.0, scale: float = 1.0,
           ) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated scores of a logistic model: x ~ N(shift, scale), P(y=1|x) = sigmoid(2x - 1)
    (the same P(y|x) whatever the shift: covariate shift only)."""
    x = rng.normal(shift, scale, n)
    s = 1 / (1 + np.exp(-(2 * x - 1)))
    y = (rng.random(n) < s).astype(np.float64)
    return s, y


def _realised(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    q = QualityMetrics("binary", window=10)
    q.update(y, s)
    return q.metrics()


@pytest.mark.parametrize("seed", SEEDS)
def test_estimates_track_realised_within_their_band(seed: int) -> None:
    """200 windows of 2,000 calibrated predictions: the standardised error of every metric
    has mean ~0 and standard deviation ~1, and the 95 % band covers ~95 %."""
    rng = np.random.default_rng(seed)
    z = []
    for _ in range(200):
        s, y = _world(rng, 2000)
        est, sd = cbpe_estimates(cbpe_stats(s, s, 0.5))
        real = _realised(y, s)
        z.append([(real[m] - est[m]) / sd[m] for m in ESTIMATED])
    za = np.array(z)
    assert np.all(np.abs(za.mean(0)) < 0.3), za.mean(0)
    # Hanley & McNeil's AUC variance is conservative here (labels drawn given the scores
    # vary less than a fresh sample): its z has a standard deviation of about 0.8
    lo = np.array([0.8, 0.8, 0.8, 0.8, 0.6])
    assert np.all((za.std(0) > lo) & (za.std(0) < 1.25)), za.std(0)
    cover = (np.abs(za) <= 1.96).mean(0)
    assert np.all((cover > 0.89) & (cover < 0.999)), cover


def test_estimate_of_a_known_case() -> None:
    """Four predictions, worked by hand: expected cells TP = .9 + .6, FP = .1 + .4, FN = .2,
    TN = .8; AUC from the weighted pairs."""
    s = np.array([0.9, 0.6, 0.2, 0.0])
    est, sd = cbpe_estimates(cbpe_stats(s, s, 0.5))
    assert est["accuracy"] == pytest.approx((1.5 + 1.8) / 4)
    assert est["precision"] == pytest.approx(1.5 / 2)
    assert est["recall"] == pytest.approx(1.5 / 1.7)
    assert est["f1"] == pytest.approx(3.0 / (2 + 1.7))
    # positives' weight per score (.9, .6, .2, 0), negatives' (.1, .4, .8, 1): pairs of two
    # predictions with the positive above the negative, over the expected pairs
    pos, neg = np.array([0.9, 0.6, 0.2, 0.0]), np.array([0.1, 0.4, 0.8, 1.0])
    good = sum(pos[i] * neg[j] for i in range(4) for j in range(4) if s[i] > s[j])
    pairs = sum(pos[i] * neg[j] for i in range(4) for j in range(4) if i != j)
    assert est["roc_auc"] == pytest.approx(good / pairs)
    assert sd["accuracy"] == pytest.approx(math.sqrt(.09 + .24 + .16) / 4)


def test_undefined_metrics_are_nan() -> None:
    est, _ = cbpe_estimates(cbpe_stats(np.empty(0), np.empty(0), 0.5))
    assert all(math.isnan(v) for v in est.values())
    s = np.array([0.1, 0.2, 0.3])  # no predicted positive
    est, _ = cbpe_estimates(cbpe_stats(s, s, 0.5))
    assert math.isnan(est["precision"]) and est["accuracy"] == pytest.approx(0.8)


def test_windows_and_partitions_merge_by_adding_statistics() -> None:
    rng = np.random.default_rng(3)
    s, _ = _world(rng, 3000)
    whole = cbpe_estimates(cbpe_stats(s, s, 0.4))[0]
    parts = sum(cbpe_stats(c, c, 0.4) for c in np.array_split(s, 3))
    assert cbpe_estimates(parts)[0] == pytest.approx(whole)


# ----------------------------------------------------------------------- calibration
def test_the_calibration_test_accepts_calibrated_and_rejects_miscalibrated_scores() -> None:
    rejected_good, rejected_bad = 0, 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        s, y = _world(rng, 10_000)
        rejected_good += hosmer_lemeshow(s, y)[1] < 0.01
        # over-confident scores: the logit doubled
        bad = 1 / (1 + np.exp(-2 * np.log(s / (1 - s))))
        rejected_bad += hosmer_lemeshow(bad, y)[1] < 0.01
    assert rejected_good <= 2  # a 1 % test: 0.2 expected in 20
    assert rejected_bad == 20


@pytest.mark.parametrize("seed", SEEDS)
def test_recalibration_on_the_reference_corrects_miscalibrated_scores(seed: int) -> None:
    """Scores that are over-confident (logit x 2) and shifted: the raw scores' estimate of
    accuracy is far off; after isotonic recalibration on a labelled reference it is within
    3 standard deviations of the realised accuracy, under covariate shift too."""
    rng = np.random.default_rng(seed)

    def distort(s: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(2 * np.log(s / (1 - s)) + 0.5)))

    s_ref, y_ref = _world(rng, 20_000)
    ref = CBPEReference.build(distort(s_ref), y_ref, window=2000, threshold=0.5)
    assert ref.calibration.recalibrated and ref.calibration.p_value < 0.01
    for shift in (0.0, -0.6):
        s, y = _world(rng, 5000, shift)
        raw = distort(s)
        real = _realised(y, raw)["accuracy"]
        naive, _ = cbpe_estimates(cbpe_stats(raw, raw, 0.5))
        est, sd = cbpe_estimates(cbpe_stats(raw, ref.calibration.apply(raw), 0.5))
        assert abs(est["accuracy"] - real) < 3 * sd["accuracy"] + 0.005
        assert abs(naive["accuracy"] - real) > abs(est["accuracy"] - real)


def test_calibration_modes() -> None:
    rng = np.random.default_rng(9)
    s, y = _world(rng, 5000)
    assert not ScoreCalibration.fit(s, y, "auto").recalibrated
    assert ScoreCalibration.fit(s, y, "always").recalibrated
    assert not ScoreCalibration.fit(s ** 3, y, "never").recalibrated
    assert not ScoreCalibration.fit(s[:100] ** 3, y[:100], "always").recalibrated  # too few
    cal = ScoreCalibration.fit(s ** 3, y)
    table = cal.apply(np.linspace(0, 1, 1001))
    assert np.all(np.diff(table) >= 0) and table.min() >= 0 and table.max() <= 1
    with pytest.raises(DetectorError, match="calibration mode"):
        ScoreCalibration.fit(s, y, "sometimes")


# ------------------------------------------------------------------------ drop band
@pytest.mark.parametrize("seed", SEEDS)
def test_the_drop_band_holds_under_the_reference_and_opens_on_a_drop(seed: int) -> None:
    """Windows drawn like the reference stay above baseline - band (3 sd: ~0.1 % of
    windows); a covariate shift that costs ~7 points of accuracy falls below it."""
    rng = np.random.default_rng(seed)
    s_ref, y_ref = _world(rng, 20_000)
    ref = CBPEReference.build(s_ref, y_ref, window=1000, threshold=0.5)
    band = ref.band(1000)
    assert set(band) == set(ESTIMATED)
    below = 0
    for _ in range(300):
        s, _ = _world(rng, 1000)
        est, _ = cbpe_estimates(cbpe_stats(s, s, 0.5))
        below += est["accuracy"] < ref.baseline["accuracy"] - band["accuracy"]
    assert below <= 3  # expected 0.4 of 300
    s, y = _world(rng, 1000, shift=0.5, scale=0.7)  # inputs near the boundary (x = 0.5)
    est, _ = cbpe_estimates(cbpe_stats(s, s, 0.5))
    real = _realised(y, s)["accuracy"]
    assert ref.baseline["accuracy"] - real > 0.05
    assert est["accuracy"] < ref.baseline["accuracy"] - band["accuracy"]


def test_a_reference_without_labels_or_scores() -> None:
    rng = np.random.default_rng(4)
    s, _ = _world(rng, 3000)
    ref = CBPEReference.build(s, None, window=500, threshold=0.5)
    assert not ref.calibration.recalibrated and ref.baseline and ref.band(500)
    empty = CBPEReference.build(None, None, window=500, threshold=0.5)
    assert not empty.baseline and empty.band(500) == {}


# ------------------------------------------------------------------------- window
def test_the_window_is_bounded_ignores_bad_scores_and_round_trips() -> None:
    w = ScoreWindow(100)
    rng = np.random.default_rng(5)
    for _ in range(7):
        w.update(rng.random(37))
    w.update(np.array([np.nan, np.inf, -0.1, 1.5]))  # bad input: left out, no error
    assert w.n == 7 * 37 and w.scores().shape == (100,)
    back = ScoreWindow.from_dict(w.to_dict())
    assert back.n == w.n and np.array_equal(back.scores(), w.scores())
    more = rng.random(55)
    w.update(more)
    back.update(more)
    assert np.array_equal(back.scores(), w.scores())
    with pytest.raises(DetectorError):
        ScoreWindow(0)
