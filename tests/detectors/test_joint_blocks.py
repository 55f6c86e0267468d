"""The ``split`` statistic of the joint test (detectors.joint_blocks): old baselines keep
the statistic their thresholds are on, states of the other statistic restore, the block
scores are standard normal under the null, and a spread mean shift is seen sooner than
with one Hotelling statistic over every feature."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detectors.errors import DetectorError
from detectors.joint_blocks import split_scores
from detectors.multivariate import GroupSpec, JointProfile, JointTest, calibrate_joint

COLS20 = tuple(f"c{i}" for i in range(20))


def _hotelling(prof: JointProfile) -> JointProfile:
    """The same reference profiled as a baseline from before the split statistic."""
    data = json.loads(json.dumps(prof.to_dict()))
    del data["statistic"]
    return JointProfile.from_dict(data)


def test_new_profiles_split_old_ones_keep_hotelling() -> None:
    rng = np.random.default_rng(0)
    prof = JointProfile.from_rows(GroupSpec("g", ("a", "b", "c")), rng.normal(size=(3_000, 3)))
    assert prof.statistic == "split" and [b[2] for b in prof.blocks] == [3, 6]
    assert JointProfile.from_dict(prof.to_dict()).statistic == "split"
    old = _hotelling(prof)
    assert old.statistic == "hotelling" and old.blocks == []
    x = rng.normal(size=(400, 3)) + [0.5, 0, 0]
    t_old, t_new = JointTest(old, 100, 10), JointTest(prof, 100, 10)
    s_old, s_new = t_old.statistics(x), t_new.statistics(x)
    # the old statistic: the largest n |whitened mean|² over the scales, as before
    chunks = prof.chunk_sums(x[:100], 10)
    y = chunks.sum(axis=0) / 100 @ old.proj
    assert s_old[0] >= 100 * float(y @ y) - 1e-9
    assert s_old.min() > 0 and np.isfinite(s_new).all()
    assert t_old.p_value == pytest.approx(1.0) and 0 <= t_new.p_value <= 1
    with pytest.raises(DetectorError, match="statistic must be one of"):
        JointProfile.from_dict({**prof.to_dict(), "statistic": "nope"})


def test_state_of_the_other_statistic_keeps_its_window_and_takes_the_fresh_threshold() -> None:
    rng = np.random.default_rng(1)
    prof = JointProfile.from_rows(GroupSpec("g", ("a", "b", "c")), rng.normal(size=(3_000, 3)))
    old = JointTest(_hotelling(prof), 100, 10, threshold=80.0)
    old.configure_episodes(0.5, 100)
    x = rng.normal(size=(155, 3))
    old.update(x)
    state = json.loads(json.dumps(old.to_dict()))
    del state["statistic"]  # as a checkpoint from before the split statistic
    fresh = JointTest(prof, 100, 10, threshold=4.5)
    fresh.configure_episodes(0.6, 200)
    with pytest.raises(DetectorError, match="hotelling statistic"):
        JointTest.from_dict(state, prof)
    t = JointTest.from_dict(state, prof, fresh)
    assert (t.threshold, t.release, t.release_values) == (4.5, 0.6, 200)
    assert t.n_rows == 155 and t.window_rows == 100 and t.statistic == 0.0
    # the same window as a test fed the same rows under the new statistic
    ref = JointTest(prof, 100, 10, threshold=4.5)
    ref.update(x)
    more = rng.normal(size=(50, 3))
    np.testing.assert_allclose(t.statistics(more), ref.statistics(more))
    # a state of the same statistic keeps its own threshold
    same = JointTest.from_dict(json.loads(json.dumps(ref.to_dict())), prof, old)
    assert same.threshold == 4.5


def test_block_scores_are_standard_normal_under_the_null() -> None:
    """Window means of 50 null rows: each block's score has mean ~0 and sd ~1 (the
    Satterthwaite match of its exact mean and variance), for Gaussian and for skewed
    columns."""
    rng = np.random.default_rng(2)
    for rows in (rng.normal(size=(60_000, 6)), rng.exponential(size=(60_000, 6))):
        prof = JointProfile.from_rows(GroupSpec("g", tuple("abcdef")), rows[:10_000],
                                      sample=10_000)
        sums = prof.chunk_sums(rows[10_000:], 50)
        for block in prof.blocks:
            z = split_scores(sums / 50, 50, [block])
            assert abs(z.mean()) < 0.15 and 0.8 < z.std() < 1.25, (z.mean(), z.std())


@pytest.mark.slow
def test_split_sees_a_spread_mean_shift_sooner_than_one_hotelling() -> None:
    """Window 100, cadence 10, the same 1e5-event budget: a 0.3 sd shift of 10 of 20
    columns, median delay over 20 streams, split well below hotelling."""
    rng = np.random.default_rng(3)
    prof = JointProfile.from_rows(GroupSpec("g", COLS20), rng.normal(size=(10_000, 20)))
    shift = np.r_[np.zeros(10), np.full(10, 0.3)]
    medians = {}
    for p in (prof, _hotelling(prof)):
        cal = calibrate_joint(p, 100, 10, 1e5, release_values=100, seed=3,
                              n_values=400_000, n_paths=8)
        delays = []
        for seed in range(20):
            r = np.random.default_rng(300 + seed)
            t = JointTest(p, 100, 10, cal.threshold)
            t.configure_episodes(0.5, 100)
            t.update(r.normal(size=(300, 20)))
            hit = t.update(r.normal(size=(1_000, 20)) + shift)
            delays.append(int(hit[0]) if hit.size else 1_000)
        medians[p.statistic] = float(np.median(delays))
    print(f"\nshift median delay at window 100: {medians}")
    assert medians["split"] <= 0.7 * medians["hotelling"]


def test_share_block_scores_one_share_at_a_time_bonferroni_corrected() -> None:
    from scipy.special import ndtr, ndtri

    from detectors.joint_blocks import share_block

    onehot = np.eye(4)[np.arange(4_000) % 4]  # shares 0.25 each
    block = share_block(onehot, 0)
    assert block[0] == slice(0, 4) and block[2] == -4
    np.testing.assert_allclose(block[1], np.sqrt(0.25 * 0.75))
    # a window of 100 rows with share 0 at 0.35 (the others 0.65 / 3), centred
    mean = np.array([[0.10, -0.10 / 3, -0.10 / 3, -0.10 / 3]])
    z = np.sqrt(100) * 0.10 / np.sqrt(0.25 * 0.75)
    want = -ndtri(8 * ndtr(-z))
    np.testing.assert_allclose(split_scores(mean, 100, [block]), [want])
    # no change: the corrected p-value is capped at 0.5 (score 0), never below
    np.testing.assert_allclose(split_scores(np.zeros((1, 4)), 100, [block]), [0.0])
