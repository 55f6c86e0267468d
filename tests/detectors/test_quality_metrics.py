"""Model-quality metrics against hand computation (scipy's Mann-Whitney U for ROC AUC)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from detectors.quality_metrics import QualityMetrics


def _exact_binary(y: np.ndarray, s: np.ndarray, t: float = 0.5) -> dict[str, float]:
    pos, pred = y == 1, s >= t
    tp, fp = np.sum(pos & pred), np.sum(~pos & pred)
    fn, tn = np.sum(pos & ~pred), np.sum(~pos & ~pred)
    c = np.clip(s, 1e-15, 1 - 1e-15)
    u = mannwhitneyu(s[pos], s[~pos]).statistic
    bins = np.minimum((s * 10).astype(int), 9)
    ece = sum(abs(s[bins == b].mean() - y[bins == b].mean()) * np.mean(bins == b)
              for b in range(10) if np.any(bins == b))
    return {"accuracy": (tp + tn) / len(y), "precision": tp / (tp + fp), "recall": tp / (tp + fn),
            "f1": 2 * tp / (2 * tp + fp + fn), "roc_auc": u / (pos.sum() * (~pos).sum()),
            "log_loss": -np.mean(y * np.log(c) + (1 - y) * np.log(1 - c)),
            "brier": np.mean((s - y) ** 2), "ece": ece}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_match_hand_computation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 5000
    y = (rng.random(n) < 0.3).astype(float)
    s = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * y - 1)))
    q = QualityMetrics("binary", window=700)
    for part in np.array_split(np.arange(n), 7):  # batches add up
        q.update(y[part], s[part])
    got, want = q.metrics(), _exact_binary(y, s)
    for k, v in want.items():
        # the AUC comes from 1000-bin histograms: within half the share of tied-bin pairs
        tol = 2e-3 if k == "roc_auc" else 1e-9
        assert got[k] == pytest.approx(v, abs=tol), k
    recent, want_recent = q.metrics(recent=True), _exact_binary(y[-700:], s[-700:])
    for k, v in want_recent.items():
        assert recent[k] == pytest.approx(v, abs=2e-3 if k == "roc_auc" else 1e-9), k


def test_auc_of_tied_and_discrete_scores() -> None:
    y = np.array([1, 1, 0, 0, 1, 0], float)
    s = np.array([0.5, 0.5, 0.5, 0.2, 0.9, 0.9])
    q = QualityMetrics("binary")
    q.update(y, s)
    u = mannwhitneyu(s[y == 1], s[y == 0]).statistic  # ties count one half, as ours
    assert q.metrics()["roc_auc"] == pytest.approx(u / 9)


def test_multiclass_accuracy_and_macro_f1() -> None:
    rng = np.random.default_rng(3)
    classes = np.array(["a", "b", "c", "d"])
    y = classes[rng.integers(0, 4, 3000)]
    p = np.where(rng.random(3000) < 0.7, y, classes[rng.integers(0, 4, 3000)])
    q = QualityMetrics("multiclass", window=500)
    q.update(q.class_index(y), q.class_index(p))
    f1s = []
    for c in classes:
        tp = np.sum((y == c) & (p == c))
        f1s.append(2 * tp / (np.sum(y == c) + np.sum(p == c)))
    m = q.metrics()
    assert m["accuracy"] == pytest.approx(np.mean(y == p))
    assert m["macro_f1"] == pytest.approx(np.mean(f1s))
    assert q.metrics(recent=True)["accuracy"] == pytest.approx(np.mean(y[-500:] == p[-500:]))


def test_regression_metrics() -> None:
    rng = np.random.default_rng(4)
    y = rng.normal(size=1000)
    p = y + rng.normal(0.3, 1.0, 1000)
    q = QualityMetrics("regression", window=100)
    q.update(y[:400], p[:400])
    q.update(y[400:], p[400:])
    m = q.metrics()
    assert m["mae"] == pytest.approx(np.mean(np.abs(p - y)))
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((p - y) ** 2)))
    assert m["mean_error"] == pytest.approx(np.mean(p - y))
    assert q.metrics(recent=True)["mae"] == pytest.approx(np.mean(np.abs(p - y)[-100:]))


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_round_trip_mid_stream_gives_identical_later_metrics(task: str) -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(900) < 0.5).astype(float) if task != "regression" else rng.normal(size=900)
    p = rng.random(900) if task != "multiclass" else (rng.random(900) < 0.5).astype(float)
    a = QualityMetrics(task, window=128)
    a.update(y[:333], p[:333])
    b = QualityMetrics.from_dict(a.to_dict())
    for q in (a, b):
        q.update(y[333:], p[333:])
    assert a.metrics() == pytest.approx(b.metrics(), nan_ok=True)
    assert a.metrics(recent=True) == pytest.approx(b.metrics(recent=True), nan_ok=True)


def test_empty_and_bad_arguments() -> None:
    q = QualityMetrics("binary")
    assert np.isnan(q.metrics()["accuracy"]) and np.isnan(q.metrics(recent=True)["roc_auc"])
    with pytest.raises(ValueError, match="task"):
        QualityMetrics("ranking")
    with pytest.raises(ValueError, match="differ"):
        q.update(np.zeros(2), np.zeros(3))
