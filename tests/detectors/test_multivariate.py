"""The joint test of a group of numeric columns (detectors.multivariate).

Statistics are tested as statistics: the calibrated false-alarm spacing is measured on
long null streams over several reference seeds (pooled, with a tolerance band, and per
seed within a wider one), and detection over several seeds.  The measured figures are
printed (``-s``) so that the report can quote them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from detectors.errors import DetectorError
from detectors.model import CALIBRATION_VERSION, ColumnSpec, DetectionSettings, ModelBaseline
from detectors.multivariate import GroupSpec, JointProfile, JointTest, calibrate_joint
from detectors.multivariate_model import DETECTOR

COLS = ("a", "b", "u", "v")


def flip_rows(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    """a, b standard normal with correlation ``rho``; u, v independent."""
    x = rng.normal(size=(n, 4))
    x[:, 1] = rho * x[:, 0] + np.sqrt(1 - rho * rho) * x[:, 1]
    return x


def skewed_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """A heavy-tailed, skewed and discrete group sharing one factor: t3, lognormal,
    Poisson and a zero-inflated column."""
    f = rng.normal(size=n)
    return np.column_stack([
        rng.standard_t(3, n) + f,
        np.exp(0.5 * f + rng.normal(0, 0.7, n)),
        rng.poisson(np.exp(0.3 * f + 1.0)).astype(float),
        np.where(rng.random(n) < 0.8, 0.0, rng.exponential(2.0, n) + f.clip(0)),
    ])


def test_profile_picks_its_method_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    prof = JointProfile.from_rows(GroupSpec("g", COLS), flip_rows(rng, 3_000, 0.8))
    assert prof.method == "moments" and prof.n_features == 4 + 10 and prof.dim == 14
    wide = GroupSpec("w", tuple(f"c{i}" for i in range(30)))
    assert wide.resolved_method == "rff"
    again = JointProfile.from_dict(json.loads(json.dumps(prof.to_dict())))
    np.testing.assert_allclose(again.proj, prof.proj)
    rffp = JointProfile.from_rows(GroupSpec("r", COLS, "rff"), flip_rows(rng, 3_000, 0.8))
    assert rffp.n_features == 4 + 64
    np.testing.assert_allclose(JointProfile.from_dict(rffp.to_dict()).rff, rffp.rff)


def test_profile_rejects_bad_input() -> None:
    with pytest.raises(DetectorError, match="at least 200"):
        JointProfile.from_rows(GroupSpec("g", ("a", "b")), np.ones((50, 2)))
    x = np.random.default_rng(1).normal(size=(1_000, 2))
    x[:900, 1] = np.nan  # complete rows only: 100 of them
    with pytest.raises(DetectorError, match="100 events with all"):
        JointProfile.from_rows(GroupSpec("g", ("a", "b")), x)
    with pytest.raises(DetectorError, match="at least 2 columns"):
        GroupSpec("g", ("a",))
    with pytest.raises(DetectorError, match="method"):
        GroupSpec("g", ("a", "b"), "pca")
    with pytest.raises(DetectorError, match="joint profile"):
        JointProfile.from_dict({"columns": ["a", "b"], "method": "moments", "lo": [0],
                                "hi": [1, 1], "center": [0, 0], "scale": [1, 1], "rff": None,
                                "rows": [[0, 0]] * 300, "n_ref": 300})
    prof = JointProfile.from_rows(GroupSpec("g", ("a", "b")), np.random.default_rng(2)
                                  .normal(size=(500, 2)))
    with pytest.raises(DetectorError, match="shape"):
        JointTest(prof, 100, 10).update(np.zeros((5, 3)))


def _run(test: JointTest, x: np.ndarray, cuts: list[int]) -> tuple[list[int], list[int],
                                                                  list[float]]:
    opened, closed, stats = [], [], []
    start = 0
    for stop in [*cuts, x.shape[0]]:
        opened += (test.update(x[start:stop]) + start).tolist()
        closed += (test.close_positions + start).tolist()
        stats.append(test.statistic)
        start = stop
    return opened, closed, stats


def test_output_does_not_depend_on_batches_nor_on_a_state_round_trip() -> None:
    rng = np.random.default_rng(3)
    prof = JointProfile.from_rows(GroupSpec("g", COLS), flip_rows(rng, 5_000, 0.8))
    x = np.vstack([flip_rows(rng, 3_000, 0.8), flip_rows(rng, 1_500, -0.8),
                   flip_rows(rng, 3_000, 0.8)])

    def fresh() -> JointTest:
        t = JointTest(prof, 500, 50, 60.0, "g")
        t.configure_episodes(0.5, 500)
        return t

    whole = _run(fresh(), x, [])
    assert whole[0] and whole[1], "the flip opens an episode and its end closes it"
    cuts = sorted(rng.choice(np.arange(1, x.shape[0]), 40, replace=False).tolist())
    split = _run(fresh(), x, cuts)
    assert split[0] == whole[0] and split[1] == whole[1]
    # chunks and windows are summed on their own; the whitening's matrix product may round
    # differently with the number of tests in a batch
    assert split[2][-1] == pytest.approx(whole[2][-1], rel=1e-12)
    # round trip (through JSON) in the middle of the flip
    t = fresh()
    first = _run(t, x[:3_700], [1_234])
    t2 = JointTest.from_dict(json.loads(json.dumps(t.to_dict())), prof)
    rest = _run(t2, x[3_700:], [333])
    assert first[0] + [p + 3_700 for p in rest[0]] == whole[0]
    assert first[1] + [p + 3_700 for p in rest[1]] == whole[1]
    assert t2.n_alarms == len(whole[0])
    assert rest[2][-1] == pytest.approx(whole[2][-1], rel=1e-12)


def test_incomplete_rows_are_left_out() -> None:
    rng = np.random.default_rng(4)
    prof = JointProfile.from_rows(GroupSpec("g", COLS), flip_rows(rng, 5_000, 0.8))
    x = np.vstack([flip_rows(rng, 2_000, 0.8), flip_rows(rng, 1_000, -0.8)])
    gappy = np.full((4_000, 4), np.nan)
    keep = np.sort(rng.choice(4_000, 3_000, replace=False))
    gappy[keep] = x
    drop = np.setdiff1d(np.arange(4_000), keep)
    # every dropped row has one bad value (missing or invalid), the rest of it is valid
    gappy[drop] = rng.normal(size=(drop.size, 4))
    gappy[drop, rng.integers(0, 4, drop.size)] = rng.choice([np.nan, np.inf, -np.inf],
                                                            drop.size)
    plain, gaps = JointTest(prof, 500, 50, 60.0), JointTest(prof, 500, 50, 60.0)
    p1 = plain.update(x)
    p2 = gaps.update(gappy)
    assert p1.size >= 1 and keep[p1].tolist() == p2.tolist()
    assert gaps.n_rows == 3_000 and gaps.statistic == pytest.approx(plain.statistic, rel=1e-12)


#: (name, rows of the reference and of the null stream, method)
FAMILIES = {
    "normal_corr": (lambda rng, n: flip_rows(rng, n, 0.8), "auto"),
    "skewed_discrete": (skewed_rows, "auto"),
    "normal_corr_rff": (lambda rng, n: flip_rows(rng, n, 0.8), "rff"),
}
SEEDS = (0, 1, 2, 3)
TARGET = 2_000
NULL_EVENTS = 300_000


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_calibrated_false_alarm_spacing_over_seeds(family: str) -> None:
    """Episodes on null streams are TARGET events apart: pooled over four reference seeds
    within 0.6-1.6 of the target, each seed within 0.4-2.5 (one reference is one draw;
    the calibration targets the average over them)."""
    sample, method = FAMILIES[family]
    ratios, alarms_all = [], 0
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        prof = JointProfile.from_rows(GroupSpec("g", COLS, method), sample(rng, 5_000))
        cal = calibrate_joint(prof, 200, 20, TARGET, release=0.5, release_values=200,
                              seed=seed, n_values=400_000, n_paths=16)
        test = JointTest(prof, 200, 20, cal.threshold)
        test.configure_episodes(min(1.0, max(0.5, cal.release_floor / cal.threshold)), 200)
        alarms = sum(test.update(sample(rng, 50_000)).size
                     for _ in range(NULL_EVENTS // 50_000))
        alarms_all += alarms
        ratios.append(NULL_EVENTS / max(alarms, 1) / TARGET)
    pooled = NULL_EVENTS * len(SEEDS) / max(alarms_all, 1) / TARGET
    print(f"\njoint {family}: achieved/target spacing per seed "
          f"{[round(r, 2) for r in ratios]}, pooled {pooled:.2f}")
    assert 0.6 <= pooled <= 1.6, (ratios, pooled)
    assert all(0.4 <= r <= 2.5 for r in ratios), ratios


@pytest.mark.slow
def test_extrapolated_threshold_is_conservative_enough() -> None:
    """At a target beyond the simulation the threshold is extrapolated; a null stream 5x
    the simulated length raises at most a handful of episodes at a 1e7 target."""
    rng = np.random.default_rng(5)
    prof = JointProfile.from_rows(GroupSpec("g", COLS), flip_rows(rng, 5_000, 0.8))
    cal = calibrate_joint(prof, 500, 50, 1e7, release_values=500, seed=5, n_values=400_000,
                          n_paths=16)
    assert cal.method == "extrapolated"
    direct = calibrate_joint(prof, 500, 50, 4_000, release_values=500, seed=5,
                             n_values=400_000, n_paths=16)
    assert cal.threshold > direct.threshold
    test = JointTest(prof, 500, 50, cal.threshold)
    test.configure_episodes(0.5, 500)
    assert sum(test.update(flip_rows(rng, 100_000, 0.8)).size for _ in range(20)) <= 2


@pytest.mark.slow
def test_detects_the_correlation_flip_and_a_spread_mean_shift() -> None:
    """The issue's scenarios at a calibrated 1e6 budget (window 500): a flip of +0.8 to
    -0.8 within 150 events and a 0.3 sd shift of 10 of 20 columns within 400 (median of
    10 seeds, each seen within 1,000)."""
    rng = np.random.default_rng(6)
    prof = JointProfile.from_rows(GroupSpec("g", COLS), flip_rows(rng, 10_000, 0.8))
    cal = calibrate_joint(prof, 500, 50, 1e6, release_values=500, seed=6, n_values=400_000,
                          n_paths=16)
    delays = []
    for seed in range(10):
        r = np.random.default_rng(100 + seed)
        t = JointTest(prof, 500, 50, cal.threshold)
        assert t.update(flip_rows(r, 2_000, 0.8)).size == 0
        hit = t.update(flip_rows(r, 1_000, -0.8))
        delays.append(int(hit[0]) if hit.size else 10**6)
    d20 = tuple(f"c{i}" for i in range(20))
    prof20 = JointProfile.from_rows(GroupSpec("g", d20), rng.normal(size=(10_000, 20)))
    cal20 = calibrate_joint(prof20, 500, 50, 1e6, release_values=500, seed=7,
                            n_values=200_000, n_paths=8)
    shift = np.r_[np.zeros(10), np.full(10, 0.3)]
    delays20 = []
    for seed in range(10):
        r = np.random.default_rng(200 + seed)
        t = JointTest(prof20, 500, 50, cal20.threshold)
        assert t.update(r.normal(size=(2_000, 20))).size == 0
        hit = t.update(r.normal(size=(1_000, 20)) + shift)
        delays20.append(int(hit[0]) if hit.size else 10**6)
    print(f"\njoint flip delays {sorted(delays)}; 0.3 sd x 10 of 20 delays {sorted(delays20)}")
    assert max(delays) < 1_000 and np.median(delays) <= 150
    assert max(delays20) < 1_000 and np.median(delays20) <= 400


# -- the model's baseline and monitor ---------------------------------------------------
def _data(rng: np.random.Generator, n: int, rho: float) -> dict[str, np.ndarray]:
    x = flip_rows(rng, n, rho)
    return {c: x[:, i] for i, c in enumerate(COLS)}


SETTINGS = DetectionSettings(false_alarm_events=200_000, window=500, cadence=50,
                             calibration_values=200_000)
SPECS = [ColumnSpec(c, "numeric", detectors=("ks",)) for c in COLS]
GROUPS = [GroupSpec("joint", COLS)]


def test_baseline_with_groups_round_trips_and_without_keeps_its_key() -> None:
    import hashlib
    from dataclasses import asdict

    rng = np.random.default_rng(8)
    base = ModelBaseline.build("m", _data(rng, 5_000, 0.8), SPECS, SETTINGS, groups=GROUPS)
    again = ModelBaseline.from_dict(json.loads(json.dumps(base.to_dict())))
    assert again.id == base.id and set(again.groups) == {"joint"}
    assert again.group_calibrations["joint"].threshold == base.group_calibrations[
        "joint"].threshold
    assert not again.needs_calibration(SPECS, SETTINGS, GROUPS)
    assert again.needs_calibration(SPECS, SETTINGS)  # the key covers the groups
    with pytest.raises(DetectorError, match="no profile of multivariate group 'other'"):
        again.check(SPECS, SETTINGS, [GroupSpec("other", COLS)])
    # a model without groups: the key as before groups existed, no "multivariate" section
    plain = ModelBaseline.build("m", _data(rng, 5_000, 0.8), SPECS, SETTINGS)
    s = asdict(SETTINGS)
    s.pop("calibration_values")
    old_key = hashlib.sha256(json.dumps(
        [CALIBRATION_VERSION, s, [[c.name, c.type, sorted(c.detectors)] for c in SPECS]],
        sort_keys=True).encode()).hexdigest()[:16]
    assert plain.key == old_key and "multivariate" not in plain.to_dict()
    # the group takes a share of the budget: the columns' thresholds are a little higher
    assert base.thresholds["a"]["ks"] >= plain.thresholds["a"]["ks"]


def test_model_monitor_opens_a_group_episode_on_the_flip_and_restores() -> None:
    rng = np.random.default_rng(9)
    base = ModelBaseline.build("m", _data(rng, 5_000, 0.8), SPECS, SETTINGS, groups=GROUPS)
    mon = base.monitor(SPECS, SETTINGS, GROUPS)
    assert mon.update(_data(rng, 3_000, 0.8)) == []
    state = json.loads(json.dumps(mon.to_dict()))
    found = mon.update(_data(rng, 1_000, -0.8))
    assert [(a.column, a.detector) for a in found] == [("joint", DETECTOR)]
    assert found[0].position < 300
    restored = type(mon).from_dict(state, base, base.monitor(SPECS, SETTINGS, GROUPS))
    assert restored.groups is not None
    rng2 = np.random.default_rng(10)
    again = restored.update(_data(rng2, 1_000, -0.8))
    assert [(a.column, a.detector) for a in again] == [("joint", DETECTOR)]
    assert mon.summary()["groups"]["joint"]["alarms"] == 1
