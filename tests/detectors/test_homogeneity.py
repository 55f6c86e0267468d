"""The homogeneity test across partitions (detectors.homogeneity), tested as statistics.

Calibration: on tables drawn from one distribution the rejection rate at ``alpha`` stays
within a tolerance band of ``alpha`` (numeric-like ordered bins, skewed categories, very
unequal bins, 2 to 8 partitions); power: a column split between partitions, or shifted on
one partition, is rejected.
"""

from __future__ import annotations

import numpy as np
import pytest

from detectors.errors import DetectorError
from detectors.homogeneity import BlockedCounts, homogeneity_test, merge_sparse

_ZIPF = 1.0 / np.arange(1, 52) ** 1.2
FAMILIES = {
    "quantile32": (np.full(32, 1 / 32), True),
    "zipf51": (_ZIPF / _ZIPF.sum(), False),
    "rare": (np.array([0.97, 0.02, 0.005, 0.005]), False),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("partitions", [2, 4, 8])
def test_rejection_rate_on_alike_partitions_is_alpha(family: str, partitions: int) -> None:
    probs, ordered = FAMILIES[family]
    alpha, reps = 0.01, 1500
    rejected = 0
    for seed in range(3):
        rng = np.random.default_rng(seed * 100 + partitions)
        for _ in range(reps // 3):
            sizes = rng.integers(800, 3000, partitions)
            tab = np.stack([rng.multinomial(n, probs) for n in sizes])
            rejected += homogeneity_test(tab, alpha, ordered=ordered).rejected
    # expected 15; the band is about ±2.6 standard deviations of a binomial
    assert 5 <= rejected <= 27, rejected


def test_tiny_alpha_never_rejects_alike_partitions() -> None:
    rng = np.random.default_rng(7)
    probs = FAMILIES["zipf51"][0]
    p_values = [homogeneity_test(rng.multinomial(1_500, probs, size=4), 1e-7,
                                 ordered=False).p_value for _ in range(1_000)]
    assert min(p_values) > 1e-5
    # p-values of alike partitions are uniform: their median is near 1/2
    assert 0.4 < float(np.median(p_values)) < 0.6


def test_a_column_split_between_partitions_is_rejected_as_the_key() -> None:
    rng = np.random.default_rng(1)
    cats = rng.multinomial(4_000, FAMILIES["zipf51"][0])
    owner = np.arange(cats.size) % 4  # each category on one partition, as a keyed topic
    tab = np.zeros((4, cats.size), dtype=np.int64)
    tab[owner, np.arange(cats.size)] = cats
    r = homogeneity_test(tab, 1e-9, ordered=False, skip_purity=cats.size - 1)
    assert r.rejected and r.purity > 0.95 and r.effect > 0.3


@pytest.mark.parametrize("seed", range(4))
def test_a_small_shift_on_one_partition_is_found_and_placed(seed: int) -> None:
    rng = np.random.default_rng(seed)
    edges = np.quantile(rng.normal(size=20_000), np.arange(1, 32) / 32)
    rows = []
    for p in range(4):
        x = rng.normal(0.4 if p == 2 else 0.0, 1.0, 3_000)
        rows.append(np.bincount(np.searchsorted(edges, x), minlength=32))
    r = homogeneity_test(np.stack(rows), 1e-7, ordered=True, min_effect=0.05)
    assert r.rejected and r.worst == 2 and r.purity < 0.5


def test_min_effect_keeps_a_significant_but_negligible_difference_quiet() -> None:
    tab = np.array([[505_000, 495_000], [495_000, 505_000]])
    assert homogeneity_test(tab, 1e-6).rejected
    assert not homogeneity_test(tab, 1e-6, min_effect=0.05).rejected


def test_too_few_partitions_or_bins_test_nothing() -> None:
    one = homogeneity_test(np.array([[100, 200], [3, 2]]), 1e-3, min_count=50)
    assert one.partitions == 1 and not one.rejected
    flat = homogeneity_test(np.array([[100, 0], [90, 0]]), 1e-3)
    assert flat.dof == 0 and not flat.rejected


def test_merging_gives_every_group_the_minimum_total() -> None:
    rng = np.random.default_rng(3)
    for ordered in (True, False):
        for _ in range(200):
            t = rng.integers(0, 20, rng.integers(2, 40))
            groups = merge_sparse(t, 15, ordered)
            sums = np.bincount(groups, weights=t)
            if t.sum() >= 15:
                assert sums.min() >= 15 or groups.max() == 0
            if ordered:
                assert np.all(np.diff(groups) >= 0)


def test_bad_input_is_refused() -> None:
    with pytest.raises(DetectorError, match="alpha"):
        homogeneity_test(np.ones((2, 2)), 0.0)
    with pytest.raises(DetectorError, match="table"):
        homogeneity_test(np.array([[1, -1], [1, 1]]), 0.1)
    with pytest.raises(DetectorError, match="blocks"):
        BlockedCounts(4, 10, blocks=1)


def test_blocked_counts_keep_a_bounded_recent_window() -> None:
    bc = BlockedCounts(size=3, block_events=100, blocks=5)
    rng = np.random.default_rng(0)
    for i in range(200):  # 10,000 events: once full, the ring holds the last 400 to 499
        bc.update(rng.integers(0, 3, 50), 50)
        assert bc.events == (i + 1) * 50 if i < 9 else 400 <= bc.events < 500
    bc.update(np.full(50, 2), 50)
    assert bc.counts.sum() == bc.events
    again = BlockedCounts.from_dict(bc.to_dict())
    for b in (bc, again):
        b.update(np.zeros(60, dtype=np.int64), 60)
    assert again.counts.tolist() == bc.counts.tolist()


def test_blocks_that_close_together_cover_the_same_stretch() -> None:
    fast, slow = BlockedCounts(2, None, blocks=3), BlockedCounts(2, None, blocks=3)
    for step in range(9):  # the fast stream gets 4 events per step, the slow one 1
        fast.update(np.full(4, step % 2), 4)
        slow.update(np.full(1, step % 2), 1)
        if step % 3 == 2:
            for b in (fast, slow):
                b.next_block()
    # after 3 closes the windows hold the last 2 full blocks and an empty current one:
    # steps 3-8 for both, whatever their rates
    assert fast.events == 24 and slow.events == 6
    assert fast.counts.tolist() == [12, 12] and slow.counts.tolist() == [3, 3]
