"""The share CUSUM of an embedding column's clusters (detectors/share_cusum.py) and its
union with the joint test in the vector test."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from detectors.embedding import (
    VectorProfile,
    VectorSpec,
    VectorTest,
    calibrate_vector,
    union_episodes,
)
from detectors.errors import DetectorError
from detectors.multivariate import calibrate_joint
from detectors.share_cusum import (
    ShareCusum,
    calibrate_share_cusum,
    exponent,
    increments,
    nearest_labels,
)
from tests.support.embeddings import SHIFTED_SHARE, Mixture


def test_increments_are_the_log_likelihood_ratios_of_the_doubled_share() -> None:
    a, b = increments(np.array([0.5, 0.25, 0.25]))
    # 0.5 -> min(1.0, 0.75) = 0.75; 0.25 -> 0.5
    np.testing.assert_allclose(a, [math.log(1.5), math.log(2), math.log(2)])
    np.testing.assert_allclose(b, [math.log(0.5), math.log(2 / 3), math.log(2 / 3)])


def test_statistic_against_a_hand_computation() -> None:
    c = ShareCusum(np.array([0.5, 0.25, 0.25]), threshold=1.5, release_values=2)
    stats, opened, closed = c.steps(np.array([1, 1, 0, 2, 1, 0, 0, 0, 0]))
    l2, l23, l15 = math.log(2), math.log(2 / 3), math.log(1.5)
    s1 = [l2, 2 * l2, 2 * l2 + l23, 2 * l2 + 2 * l23, 3 * l2 + 2 * l23]
    s1 += [3 * l2 + 3 * l23, 3 * l2 + 4 * l23, max(0, 3 * l2 + 5 * l23), 0.0]
    s0 = [0, 0, l15, 0, 0, l15, 2 * l15, 3 * l15, 4 * l15]
    s2 = [0, 0, 0, l2, l2 + l23, max(0, l2 + 2 * l23), 0, 0, 0]
    want = np.maximum.reduce([s0, s1, s2])
    np.testing.assert_allclose(stats, want)
    # above 1.5 first at the last label (4 log 1.5 = 1.62): an episode opens and the sums
    # restart from 0
    assert np.flatnonzero(opened).tolist() == [8] and not closed.any()
    np.testing.assert_allclose(c.s, [0.0, 0.0, 0.0])
    assert c.n_alarms == 1 and c.active and c.statistic == pytest.approx(4 * l15)
    stats, opened, closed = c.steps(np.array([1, 2]))  # quiet for 2 labels: it closes
    np.testing.assert_allclose(stats, [l2, l2])  # S1: l2, l2 + l23; S2: 0, l2
    assert not opened.any() and np.flatnonzero(closed).tolist() == [1] and not c.active


def _reference(labels: np.ndarray, shares: np.ndarray, h: float, release_values: int,
               ) -> tuple[list[float], list[int], list[int]]:
    """The CUSUMs and their episodes written out plainly, one label at a time."""
    p = np.asarray(shares)
    q = np.minimum(2 * p, (1 + p) / 2)
    s = [0.0] * p.size
    stats, opened, closed, active, quiet = [], [], [], False, 0
    for t, lab in enumerate(labels.tolist()):
        for j in range(p.size):
            inc = math.log(q[j] / p[j]) if lab == j else math.log((1 - q[j]) / (1 - p[j]))
            s[j] = max(0.0, s[j] + inc)
        m = max(s)
        stats.append(m)
        if m > h:
            s = [0.0] * p.size
            if not active:
                opened.append(t)
            active, quiet = True, 0
        elif active:
            quiet += 1
            if quiet >= release_values:
                closed.append(t)
                active, quiet = False, 0
    return stats, opened, closed


@pytest.mark.parametrize("h", [2.5, 4.0, 5.5])
def test_kernel_matches_the_plain_reference(h: float) -> None:
    rng = np.random.default_rng(int(h * 10))
    shares = np.array([0.4, 0.3, 0.2, 0.1])
    lab = rng.choice(4, size=20_000, p=shares)
    stats, opened, closed = ShareCusum(shares, h, 7).steps(lab)
    r_stats, r_opened, r_closed = _reference(lab, shares, h, 7)
    np.testing.assert_allclose(stats, r_stats, atol=1e-9)
    assert np.flatnonzero(opened).tolist() == r_opened
    assert np.flatnonzero(closed).tolist() == r_closed
    assert len(r_opened) >= 2 and len(r_closed) >= 1, (len(r_opened), len(r_closed))


def test_a_held_change_holds_its_episode_by_crossing_again() -> None:
    c = ShareCusum(np.full(4, 0.25), threshold=2.0, release_values=5)
    # cluster 0 only: 3 log 2 = 2.08 > 2 every 3rd label (restart between): one episode
    stats, opened, closed = c.steps(np.zeros(30, dtype=np.int64))
    assert np.flatnonzero(opened).tolist() == [2] and not closed.any()
    np.testing.assert_allclose(stats[:6], [math.log(2) * i for i in (1, 2, 3, 1, 2, 3)])
    assert c.n_alarms == 1
    # then even labels: no crossing, closed 5 labels later
    _, opened, closed = c.steps(np.tile(np.arange(4), 5))
    assert not opened.any() and np.flatnonzero(closed).tolist() == [4]


def test_batches_do_not_change_the_output_and_state_round_trips() -> None:
    rng = np.random.default_rng(0)
    lab = rng.choice(8, size=5_000, p=[0.16] + [0.12] * 7)
    one = ShareCusum(np.full(8, 0.125), threshold=6.0, release_values=50)
    whole = one.steps(lab)
    two = ShareCusum(np.full(8, 0.125), threshold=6.0, release_values=50)
    parts = [two.steps(lab[i:i + 333]) for i in range(0, 1_998, 333)]
    three = ShareCusum(np.full(8, 0.125), threshold=6.0, release_values=50)
    three.restore(json.loads(json.dumps(two.to_dict())))
    parts.append(three.steps(lab[1_998:]))  # 1,998 = 6 x 333
    for i in range(3):
        np.testing.assert_array_equal(np.concatenate([p[i] for p in parts]), whole[i])
    assert whole[1].sum() >= 1
    with pytest.raises(DetectorError):
        three.restore({"s": [0.0] * 3, "ist": [0, 0, 0], "peak": 0, "stat": 0})


SEEDS = (0, 1, 2, 3)


def test_calibrated_episode_spacing_over_seeds() -> None:
    """Labels of a reference of 10,000 rows (shares not uniform): episodes ``target``
    labels apart on fresh null labels, per seed within 0.6-1.6 of the target, pooled
    within 0.75-1.33."""
    target, n = 2_000, 1_000_000
    p = np.array([0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05])
    ratios, total = [], 0
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        ref = rng.choice(8, size=10_000, p=p)
        cal = calibrate_share_cusum(ref, 8, target, release_values=200, seed=seed,
                                    n_values=1_000_000, n_paths=16)
        assert cal.method == "direct"
        shares = np.bincount(ref, minlength=8) / ref.size
        c = ShareCusum(shares, cal.threshold, 200)
        alarms = int(c.steps(rng.choice(8, size=n, p=p))[1].sum())
        total += alarms
        ratios.append(n / max(alarms, 1) / target)
    pooled = n * len(SEEDS) / max(total, 1) / target
    print(f"\nshare CUSUM: achieved/target spacing per seed {[round(r, 2) for r in ratios]}, "
          f"pooled {pooled:.2f}")
    assert all(0.6 <= r <= 1.6 for r in ratios), ratios
    assert 0.75 <= pooled <= 1.33, pooled


def test_extrapolated_threshold_near_the_direct_one() -> None:
    lab = np.random.default_rng(0).integers(0, 8, size=10_000)
    far = calibrate_share_cusum(lab, 8, 20_000, release_values=100, n_values=400_000,
                                n_paths=8)
    direct = calibrate_share_cusum(lab, 8, 20_000, release_values=100, n_values=4_000_000,
                                   n_paths=8)
    assert (far.method, direct.method) == ("extrapolated", "direct")
    assert abs(far.threshold - direct.threshold) < 0.6, (far, direct)


def test_exponent_is_one_for_exact_likelihood_ratios_and_below_for_a_wrong_share() -> None:
    p = np.array([0.5, 0.25, 0.25])
    a, b = increments(p)
    assert exponent(p, a, b) == pytest.approx(1.0, abs=1e-9)
    # the test believes cluster 2 has 0.2 while it has 0.25: its sum's tail is heavier
    a, b = increments(np.array([0.5, 0.3, 0.2]))
    t = exponent(p, a, b)
    assert t < 1.0
    j = 2  # the root of the cluster that sets it, by hand
    assert p[j] * math.exp(t * a[j]) + (1 - p[j]) * math.exp(t * b[j]) == pytest.approx(1.0)


@pytest.mark.slow
def test_extrapolated_calibration_meets_a_far_target() -> None:
    """Target 200,000 labels from 1,000,000 simulated (extrapolated): the achieved spacing
    on 20,000,000 null labels within 0.7-1.43 of the target."""
    rng = np.random.default_rng(11)
    ref = rng.integers(0, 8, size=10_000)
    cal = calibrate_share_cusum(ref, 8, 200_000, release_values=1_000, seed=3,
                                n_values=1_000_000, n_paths=16)
    assert cal.method == "extrapolated"
    c = ShareCusum(np.bincount(ref, minlength=8) / ref.size, cal.threshold, 1_000)
    eps = sum(int(c.steps(rng.integers(0, 8, size=5_000_000))[1].sum()) for _ in range(4))
    print(f"\nshare CUSUM extrapolated to 200,000: threshold {cal.threshold:.2f}, "
          f"achieved spacing {20_000_000 / max(eps, 1):,.0f} ({eps} episodes)")
    assert 0.7 <= 20_000_000 / max(eps, 1) / 200_000 <= 1.43


def test_union_of_two_episode_processes() -> None:
    e = np.array([], dtype=np.int64)

    def arr(*v: int) -> np.ndarray:
        return np.array(v, dtype=np.int64)

    o, c = union_episodes((False, False), [(arr(5), arr(20)), (arr(10), arr(30))])
    assert (o.tolist(), c.tolist()) == ([5], [30])
    o, c = union_episodes((True, False), [(e, arr(7)), (arr(3), arr(9))])
    assert (o.tolist(), c.tolist()) == ([], [9])
    o, c = union_episodes((False, False), [(arr(4), e), (e, e)])
    assert (o.tolist(), c.tolist()) == ([4], [])
    # at one position an opening of one counts before the closing of the other
    o, c = union_episodes((True, False), [(e, arr(6)), (arr(6), e)])
    assert (o.tolist(), c.tolist()) == ([], [])


def _profile(seed: int = 0) -> tuple[Mixture, VectorProfile]:
    mix = Mixture(seed)
    prof = VectorProfile.from_matrix(VectorSpec("e", 64, 8),
                                     mix.draw(np.random.default_rng(seed), 5_000))
    return mix, prof


def test_vector_test_alarms_on_the_cusum_at_the_event_not_the_cadence() -> None:
    mix, prof = _profile()
    rng = np.random.default_rng(5)
    # the joint test cannot alarm (infinite threshold): only the CUSUM can
    t = VectorTest(prof, 200, 50, math.inf, share_threshold=6.0)
    t.configure_episodes(0.5, 200)
    assert t.cusum is not None
    x = mix.draw(rng, 3_000, 0.5)
    hit = t.update(x)
    assert hit.size == 1 and t.drift_detected and t.n_alarms == 1
    # the first event at which the CUSUM (fed one event at a time) exceeded 6
    c = ShareCusum(t.cusum.shares, 6.0, 200)
    stats = c.steps(prof.joint.labels(prof.project(x)))[0]
    assert hit[0] == int(np.argmax(stats > 6.0))
    assert t.threshold == 6.0 and t.score > 0.0  # the CUSUM leads (the joint test: inf)
    # round trip: the same output afterwards
    u = VectorTest.from_dict(json.loads(json.dumps(t.to_dict())), prof)
    more = mix.draw(rng, 2_000)
    np.testing.assert_array_equal(u.update(more), t.update(more))
    np.testing.assert_array_equal(u.close_positions, t.close_positions)
    assert (u.drift_detected, u.n_alarms) == (t.drift_detected, t.n_alarms)
    # a state saved without the CUSUM (before it) restores with a fresh CUSUM
    old = {k: v for k, v in t.to_dict().items() if k != "share_cusum"}
    w = VectorTest.from_dict(old, prof, VectorTest(prof, 200, 50, 9.0, share_threshold=7.0))
    assert w.cusum is not None and w.cusum.threshold == 7.0 and w.cusum.statistic == 0.0


@pytest.mark.slow
def test_calibrate_vector_splits_the_budget_and_the_union_meets_it() -> None:
    """Clean 64-d mixture streams, the union of the joint test and the share CUSUM
    calibrated together: the episodes of one running test ``target`` valid vectors apart
    (the calibration's knob), pooled over three seeds within 0.6-1.6 of the target, and
    the CUSUM opening some of them but not all."""
    target, n = 2_000, 200_000
    alarms, share_alarms, joint_alarms = 0, 0, 0
    for seed in (1, 2, 3):
        mix, prof = _profile(seed)
        cal = calibrate_vector(prof, 100, 10, target, release_values=100, seed=seed,
                               n_values=400_000, n_paths=16)
        assert cal.share is not None and math.isfinite(cal.share_threshold)
        t = VectorTest(prof, 100, 10, cal.threshold, share_threshold=cal.share_threshold)
        t.configure_episodes(min(1.0, max(0.5, cal.release_floor / cal.threshold)), 100)
        rng = np.random.default_rng(40 + seed)
        for _ in range(n // 10_000):
            alarms += t.update(mix.draw(rng, 10_000)).size
        assert t.cusum is not None
        share_alarms += t.cusum.n_alarms
        joint_alarms += t.test.n_alarms
    spacing = 3 * n / max(alarms, 1)
    print(f"\nvector test + share CUSUM: episodes {spacing:.0f} apart for {target} "
          f"({alarms}; the CUSUM's {share_alarms}, the joint test's {joint_alarms})")
    assert 0.6 <= spacing / target <= 1.6
    assert share_alarms > 0 and joint_alarms > 0


def test_vector_test_sees_the_share_change_sooner_with_the_cusum() -> None:
    """At one calibrated budget (window 100, cadence 10, ARL0 1,000), over 40 change
    streams of 600 events: the median first alarm with the CUSUM is no later than the
    joint test's alone at the whole budget."""
    mix, prof = _profile(7)
    both = calibrate_vector(prof, 100, 10, 1_000, release_values=100, seed=7,
                            n_values=400_000, n_paths=16)
    # the joint test (with its windowed share block) alone, at the whole budget
    alone = calibrate_joint(prof.joint, 100, 10, 1_000, release_values=100, seed=7,
                            n_values=400_000, n_paths=16)
    rng = np.random.default_rng(70)
    d_both, d_alone = [], []
    for _ in range(40):
        x = mix.draw(rng, 600, SHIFTED_SHARE)
        a = VectorTest(prof, 100, 10, both.threshold, share_threshold=both.share_threshold)
        b = VectorTest(prof, 100, 10, alone.threshold)
        for t, d in ((a, d_both), (b, d_alone)):
            hit = t.update(x)
            d.append(int(hit[0]) if hit.size else 600)
    print(f"\nshare change, first alarm: with the CUSUM {np.median(d_both)}, joint test alone "
          f"{np.median(d_alone)}")
    assert np.median(d_both) <= np.median(d_alone)


def test_nearest_labels_kernel_matches_numpy_and_leaves_out_non_finite_rows() -> None:
    mix, prof = _profile(2)
    rows = prof.project(mix.draw(np.random.default_rng(9), 2_000))
    rows[[3, 17], [0, 8]] = [np.nan, np.inf]  # a coordinate, a residual
    centres = prof.joint.centres
    assert centres is not None
    got = nearest_labels(rows, centres)
    ok = np.isfinite(rows).all(axis=1)
    assert got[~ok].tolist() == [-1, -1]
    np.testing.assert_array_equal(got[ok], prof.joint.labels(rows[ok]))
    # a left-out row does not step the sums
    c = ShareCusum(prof.joint.shares(), 1e9, 10)
    stats = c.steps(got)[0]
    d = ShareCusum(prof.joint.shares(), 1e9, 10)
    np.testing.assert_array_equal(stats[ok], d.steps(got[ok])[0])
    assert np.isnan(stats[~ok]).all()
