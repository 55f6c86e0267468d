"""``bench/alibi_ratio_ci.py``: the interval and the split-half ratio of ours / best Alibi,
on synthetic delays whose true ratio is known."""

from __future__ import annotations

import numpy as np

from bench.alibi_ratio_ci import (
    CHANGE,
    bootstrap_ratio,
    delays_by_run,
    seed_matrix,
    split_half_ratio,
)


def test_delays_by_run_leaves_out_early_and_missed_runs() -> None:
    got = delays_by_run([CHANGE + 7, CHANGE - 1, None, CHANGE])
    assert got[0] == 7 and got[3] == 0 and np.isnan(got[1]) and np.isnan(got[2])


def test_seed_matrix_keeps_the_runs_every_method_has_in_run_order() -> None:
    alibi = [{"seed": 1, "detector": "mmd",
              "first": {"cluster0": CHANGE + 5, "cluster2": CHANGE + 9, "cluster1": None}},
             {"seed": 1, "detector": "lsdd", "first": {"cluster1": CHANGE, "cluster0": 3}},
             {"seed": 2, "detector": "mmd", "first": {"cluster0": CHANGE}}]
    ours = [{"seed": 1, "window": 100, "cadence": 10, "cluster": [CHANGE + 1, CHANGE + 2,
                                                                  CHANGE + 3]}]
    names, m = seed_matrix(alibi, ours, 1, "cluster", 100, 10)  # type: ignore[arg-type]
    assert names == ["Alibi LSDD", "Alibi MMD", "ours"]
    assert m.shape == (3, 2)  # runs 0 and 1 (LSDD has no run 2)
    assert np.isnan(m[0, 0]) and m[0, 1] == 0 and m[1, 0] == 5 and np.isnan(m[1, 1])
    assert list(m[2]) == [1, 2]


def _runs(rng: np.random.Generator, n: int, scales: list[float]) -> np.ndarray:
    d = rng.exponential(1.0, size=(len(scales), n)) * np.array(scales)[:, None] * 50
    d[rng.random(d.shape) < 0.6] = np.nan  # most runs alarm before the change
    return d


def test_the_interval_covers_the_true_ratio_over_seeds() -> None:
    """One Alibi detector (no choice to bias it): ours is 1.2× slower in truth; the 95 %
    interval covers 1.2 in nearly all of 20 seeds and excludes it rarely."""
    covered = 0
    for seed in range(20):
        m = _runs(np.random.default_rng(seed), 240, [1.0, 1.2])
        point, lo, hi = bootstrap_ratio([m], n_boot=1_000, seed=seed)
        assert lo <= point <= hi
        covered += lo <= 1.2 <= hi
    assert covered >= 16


def test_pooled_interval_is_narrower_than_one_seeds() -> None:
    rng = np.random.default_rng(3)
    mats = [_runs(rng, 240, [1.0, 1.0, 1.1]) for _ in range(3)]
    _, lo1, hi1 = bootstrap_ratio(mats[:1], n_boot=1_000)
    _, lo, hi = bootstrap_ratio(mats, n_boot=1_000)
    assert hi - lo < hi1 - lo1


def test_split_half_removes_the_bias_of_choosing_the_smaller_of_two_equal_medians() -> None:
    """Two equally fast Alibi detectors and ours as fast: min of the two medians is biased
    low, so the bench's ratio is above 1 on average; choosing on the other half is not."""
    full, half, flips = [], [], []
    for seed in range(12):
        m = _runs(np.random.default_rng(100 + seed), 120, [1.0, 1.0, 1.0])
        full.append(bootstrap_ratio([m], n_boot=10)[0])
        h, f = split_half_ratio([m], n_splits=100, seed=seed)
        half.append(h)
        flips.append(f)
    assert np.mean(full) > 1.03
    assert abs(np.mean(half) - 1) < abs(np.mean(full) - 1)
    assert 0.25 < np.mean(flips) < 0.75  # equal detectors: the choice is a coin flip


def test_split_half_keeps_a_clearly_better_detector() -> None:
    m = _runs(np.random.default_rng(5), 240, [1.0, 2.0, 1.0])
    h, flips = split_half_ratio([m], n_splits=100)
    assert flips == 0 and 0.8 < h < 1.25
