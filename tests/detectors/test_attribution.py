"""The attribution-drift test (detectors.attribution): NDCG, its calibration under the
null over several seeds, detection of a ranking swap, and the root-cause ranking."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from detectors.attribution import (
    AttributionMonitor,
    AttributionProfile,
    calibrate_level,
    ndcg,
    root_cause,
)
from detectors.errors import DetectorError

#: true mean |attribution| of the simulated model: two near-ties, so the null swaps often
MEANS = np.array([1.0, 0.8, 0.6, 0.5, 0.45, 0.4])
FEATURES = tuple(f"f{i}" for i in range(len(MEANS)))


def _draw(rng: np.random.Generator, n: int, means: np.ndarray = MEANS) -> np.ndarray:
    """Signed, skewed attributions (exponential magnitudes): not the Gaussian the
    calibration assumes, as real SHAP values are not."""
    signs = rng.choice([-1.0, 1.0], size=(n, len(means)))
    return signs * rng.exponential(means, size=(n, len(means)))


def _brute_ndcg(live: list[float], base: list[float]) -> float:
    order = sorted(range(len(live)), key=lambda i: (-live[i], i))
    dcg = sum(base[j] / math.log2(r + 2) for r, j in enumerate(order))
    idcg = sum(b / math.log2(r + 2) for r, b in enumerate(sorted(base, reverse=True)))
    return dcg / idcg


def test_ndcg_matches_the_definition_on_every_permutation() -> None:
    base = [0.9, 0.5, 0.3, 0.1]
    for perm in itertools.permutations(range(4)):
        live = [float(len(perm) - perm.index(i)) for i in range(4)]
        assert float(ndcg(np.array(live), np.array(base))) == pytest.approx(
            _brute_ndcg(live, base), abs=1e-12)
    # identity is 1, reversal is the minimum, batched rows agree with single ones
    rows = np.array([[4.0, 3, 2, 1], [1.0, 2, 3, 4]])
    got = ndcg(rows, np.array(base))
    assert got[0] == pytest.approx(1.0)
    assert got[1] == pytest.approx(_brute_ndcg([1, 2, 3, 4], base))
    assert got[1] < got[0]


def test_ndcg_weighs_a_swap_of_important_features_more() -> None:
    base = np.array([1.0, 0.8, 0.1, 0.05])
    top_swap = ndcg(np.array([0.8, 1.0, 0.1, 0.05]), base)
    tail_swap = ndcg(np.array([1.0, 0.8, 0.05, 0.1]), base)
    assert top_swap < tail_swap < 1.0
    # no relevance at all: nothing to lose
    assert float(ndcg(np.array([1.0, 2.0]), np.zeros(2))) == 1.0
    with pytest.raises(DetectorError):
        ndcg(np.ones(3), np.ones(2))


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6, 7, 8])
def test_monitor_windows_do_not_depend_on_batching(seed: int) -> None:
    rng = np.random.default_rng(seed)
    prof = AttributionProfile.from_rows(FEATURES, _draw(rng, 2000))
    data = _draw(rng, 5000, MEANS[::-1].copy())
    data[rng.random(5000) < 0.1] = np.nan  # events without attributions are skipped
    whole = AttributionMonitor(prof, 0.95, 300)
    parts = AttributionMonitor(prof, 0.95, 300)
    ev_whole = whole.update(data)
    ev_parts = []
    cuts = np.sort(rng.choice(np.arange(1, 5000), size=7, replace=False))
    lo = 0
    for hi in [*cuts.tolist(), 5000]:
        ev_parts += [(e.position + lo, e.opened) for e in parts.update(data[lo:hi])]
        lo = hi
    assert [(e.position, e.opened) for e in ev_whole] == ev_parts
    assert whole.n_windows == parts.n_windows == int((~np.isnan(data).all(1)).sum()) // 300
    assert np.allclose(whole.means, parts.means) and whole.rows == parts.rows
    assert whole.n_alarms >= 1  # the reversed ranking is caught


def test_false_alarms_within_budget_over_seeds() -> None:
    """Clean streams (fresh draws of the reference's distribution): the episodes opened
    stay within the budget, summed over seeds, and the level is not vacuous."""
    window, target = 200, 40_000.0  # alpha = 0.005 per window
    n_windows, expected, total = 400, 0.0, 0
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        prof = AttributionProfile.from_rows(FEATURES, _draw(rng, 5000))
        cal = calibrate_level(prof, window, target, seed=seed)
        assert cal.method == "direct" and 0.5 < cal.level < 1.0
        mon = AttributionMonitor(prof, cal.level, window)
        mon.update(_draw(rng, n_windows * window))
        total += mon.n_alarms
        expected += n_windows * window / target
    # expected 20; Poisson +- 4.5 plus the spread of the references
    assert 2 <= total <= 2.0 * expected, (total, expected)


def test_extrapolated_level_agrees_with_a_direct_quantile() -> None:
    rng = np.random.default_rng(7)
    prof = AttributionProfile.from_rows(FEATURES, _draw(rng, 5000))
    far = calibrate_level(prof, 500, 500 / 2e-4, seed=1, n_sim=25_000)  # 5 exceedances
    near = calibrate_level(prof, 500, 500 / 2e-4, seed=2, n_sim=1_000_000)  # 200
    assert far.method == "extrapolated" and near.method == "direct"
    # conservative (a higher bar for 1 - NDCG), by at most a factor 2.5
    assert 1.0 <= (1 - far.level) / (1 - near.level) < 2.5, (far, near)
    tighter = calibrate_level(prof, 500, 500 / 1e-6, seed=1, n_sim=25_000)
    assert tighter.level <= far.level


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15])
def test_a_swap_of_the_top_two_features_is_caught(seed: int) -> None:
    rng = np.random.default_rng(seed)
    window = 500
    prof = AttributionProfile.from_rows(FEATURES, _draw(rng, 5000))
    cal = calibrate_level(prof, window, 1e7, seed=seed)
    mon = AttributionMonitor(prof, cal.level, window)
    assert not mon.update(_draw(rng, 20 * window)) or mon.n_alarms <= 1
    before = mon.n_alarms
    swapped = MEANS.copy()
    swapped[[0, 3]] = swapped[[3, 0]]  # the top feature falls to 4th
    events = mon.update(_draw(rng, 4 * window, swapped))
    assert mon.n_alarms == before + 1 and events[0].opened, (cal, mon.ndcg)
    assert events[0].position < 2 * window  # within the first two drifted windows
    assert mon.active and mon.score > 1.0


def test_constant_feature_and_degenerate_references() -> None:
    rows = np.zeros((100, 3))
    rows[:, 0] = 1.0
    prof = AttributionProfile.from_rows(("a", "b", "c"), rows)
    cal = calibrate_level(prof, 50, 1e5)
    assert cal.method == "exact" and cal.level == 1.0
    with pytest.raises(DetectorError, match="at least 2"):
        AttributionProfile.from_rows(("a",), np.full((10, 1), np.nan))
    with pytest.raises(DetectorError):
        calibrate_level(prof, 50, 10)


def test_root_cause_ranks_by_score_times_importance() -> None:
    scores = {"income": 5.0, "age": 3.0, "zip": 4.0, "tenure": 0.1}
    imp = {"income": 0.1, "age": 1.0, "zip": 0.5, "tenure": 2.0}
    got = root_cause(scores, imp)
    assert [r["feature"] for r in got] == ["age", "zip", "income"]
    assert [r["rank"] for r in got] == [1, 2, 3]
    mean_imp = sum(imp.values()) / 4
    assert got[0]["contribution"] == pytest.approx(3.0 * 1.0 / mean_imp, rel=1e-5)
    # the documented fallback: without importances the drift score alone
    assert [r["feature"] for r in root_cause(scores, None)] == ["income", "zip", "age"]
    assert [r["feature"] for r in root_cause(scores, {"x": 0.0})] == ["income", "zip", "age"]
    # non-finite scores count as no drift; fewer features than three is fine
    assert root_cause({"a": float("nan"), "b": 1.0}, None)[0]["feature"] == "b"
    assert root_cause({}, None) == []
