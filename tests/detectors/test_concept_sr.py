"""The Shiryaev-Roberts mixture of the error stream (detectors.concept_sr): its calibration as
a statistic (false-alarm rate pooled over references and seeds, as the CUSUMs' in
``test_concept_calibration.py``), batch against one-at-a-time updates, episodes, and the
state's round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detectors.concept_sr import (
    SR_GRID_BEFORE,
    SR_KIND,
    SR_SHIFTS,
    SR_WEIGHTS,
    ConceptSR,
    concept_sr,
)
from detectors.errors import DetectorError

REF = 20_000


def _detector(p: float, target: float, seed: int) -> tuple[ConceptSR, np.random.Generator]:
    rng = np.random.default_rng(9_000 + seed)
    ref = (rng.random(REF) < p).astype(float)
    return concept_sr(ref, target, seed=seed, n_values=2_000_000), rng


@pytest.mark.parametrize(("p", "target"), [(0.10, 2_000), (0.25, 2_000), (0.10, 10_000)])
def test_the_false_alarm_rate_over_references_is_the_target(p: float, target: float) -> None:
    n = int(60 * target)  # about 60 alarms per seed
    alarms, episodes, arls = 0, 0, []
    for seed in range(5):
        det, rng = _detector(p, target, seed)
        null = (rng.random(n) < p).astype(float)
        a = len(det.fresh().update(null))
        alarms += a
        arls.append(n / max(a, 1))
        # with episodes (as the join runs it) the statistic restarts only when one closes:
        # on clean data no more episodes than the renewal alarms calibration counts
        ep = det.fresh()
        ep.configure_episodes(0.5, 200)
        episodes += len(ep.update(null))
    pooled = 5 * n / max(alarms, 1)
    # one seed: the reference's error and 60 alarms' Poisson noise; pooled: the calibration
    assert all(0.6 * target <= a <= 1.7 * target for a in arls), arls
    assert 0.8 * target <= pooled <= 1.25 * target, (pooled, arls)
    assert 0 < episodes <= alarms, (episodes, alarms)


def test_an_extrapolated_threshold_keeps_its_target() -> None:
    # 400,000 simulated values see 25 alarms at a target of 16,000: 40,000 is extrapolated
    # along ARL0 ∝ A, and the measured rate stays near it
    rng = np.random.default_rng(3)
    ref = (rng.random(REF) < 0.2).astype(float)
    alarms = 0
    n = 2_000_000
    for seed in range(3):
        det = concept_sr(ref, 40_000, seed=seed, n_values=400_000)
        alarms += len(det.fresh().update((rng.random(n) < ref.mean()).astype(float)))
    assert 0.6 * 40_000 <= 3 * n / max(alarms, 1) <= 1.6 * 40_000, alarms


def test_a_rise_is_caught_sooner_the_larger_it_is_and_a_fall_too() -> None:
    det, rng = _detector(0.10, 2_000, 0)
    delays = {}
    for drop in (0.02, 0.05, 0.10, -0.05):
        d = []
        for _ in range(60):
            x = (rng.random(20_000) < 0.10 + drop).astype(float)
            hits = det.fresh().update(x)
            d.append(hits[0] if hits.size else 20_000)
        delays[drop] = float(np.median(d))
    assert delays[0.10] < delays[0.05] < delays[0.02] < 2_000, delays
    assert delays[-0.05] < 5_000, delays


def test_regression_errors_take_the_gaussian_ratio() -> None:
    rng = np.random.default_rng(1)
    ref = np.abs(rng.normal(size=REF))
    det = concept_sr(ref, 2_000, shifts=[0.1, 0.4, -0.1], seed=0, n_values=500_000)
    assert not det.binary and det.hi < ref.max()
    n = 200_000
    a = len(det.fresh().update(np.abs(rng.normal(size=n))))
    assert 0.5 * 2_000 <= n / max(a, 1) <= 2.0 * 2_000, a
    hits = det.fresh().update(np.abs(rng.normal(size=5_000)) + 0.4)
    assert hits.size and hits[0] < 300


def _stream(rng: np.random.Generator) -> np.ndarray:
    x = np.concatenate([rng.random(3_000) < 0.1, rng.random(1_500) < 0.3, rng.random(3_000) < 0.1,
                        rng.random(800) < 0.25]).astype(float)
    x[rng.choice(x.size, 50, replace=False)] = np.nan  # skipped, no tick
    x[7] = np.inf
    return x


@pytest.mark.parametrize("hold", [0, 300])
def test_batches_and_one_at_a_time_agree(hold: int) -> None:
    det, rng = _detector(0.10, 2_000, 1)
    x = _stream(rng)
    whole = det.fresh()
    whole.configure_episodes(0.5, hold)
    opens = whole.update(x)
    closes = whole.close_positions
    one = det.fresh()
    one.configure_episodes(0.5, hold)
    o1, c1, s1 = [], [], []
    for i, v in enumerate(x):
        o1 += [i + p for p in one.update(np.array([v])).tolist()]
        c1 += [i + p for p in one.close_positions.tolist()]
        s1.append(one.statistic)
    assert opens.size >= 2 and o1 == opens.tolist()
    assert c1 == closes.tolist()
    assert (one.statistic, one.drift_detected, one.episode_peak) == \
        (whole.statistic, whole.drift_detected, whole.episode_peak)
    if hold:  # the 20-point drift opens an episode that holds until after it ends
        first = opens[(opens >= 3_000) & (opens < 4_500)]
        assert first.size == 1, opens
        assert not np.any((closes > first[0]) & (closes < 4_500)), (opens, closes)
        assert np.any((closes >= 4_500) & (closes < 4_500 + 2 * hold)), closes


def test_the_state_round_trips_mid_stream() -> None:
    det, rng = _detector(0.25, 2_000, 2)
    x = _stream(rng)
    a = det.fresh()
    a.configure_episodes(0.5, 250)
    b = det.fresh()
    b.configure_episodes(0.5, 250)
    cut = 3_700  # inside the first drift, an episode open
    a.update(x[:cut])
    b.update(x[:cut])
    saved = json.loads(json.dumps(b.to_dict()))
    assert saved["kind"] == SR_KIND
    c = ConceptSR.from_dict(saved)
    assert c.same_calibration(det) and c.drift_detected == b.drift_detected
    assert a.update(x[cut:]).tolist() == c.update(x[cut:]).tolist()
    assert a.close_positions.tolist() == c.close_positions.tolist()
    assert a.to_dict() == c.to_dict()


def test_bad_state_and_arguments_raise() -> None:
    det, _ = _detector(0.10, 2_000, 0)
    with pytest.raises(DetectorError):
        ConceptSR.from_dict({"kind": "concept", "state": {}})
    bad = det.to_dict()
    bad["state"]["logr"] = [1.0]
    with pytest.raises(DetectorError):
        ConceptSR.from_dict(bad)
    with pytest.raises(DetectorError):
        ConceptSR.from_dict({"kind": SR_KIND})
    ref = np.zeros(REF)
    ref[:2_000] = 1
    with pytest.raises(DetectorError, match="weights"):
        concept_sr(ref, 2_000, weights=[0.5, 0.5])
    with pytest.raises(DetectorError, match="shifts"):
        concept_sr(ref, 2_000, shifts=[0.0, *SR_SHIFTS[1:]])
    with pytest.raises(DetectorError, match="100"):
        concept_sr(ref[:50], 2_000)


def test_an_error_free_reference_gives_a_test_not_a_clock() -> None:
    # a reference without errors: the rate cannot fall, so the falling shifts are left out;
    # kept, each error-free event raised their ratio and the mixture alarmed every ~A
    # events on a stream without a single error (21 alarms in 40,000 at a target of 2,000)
    det = concept_sr(np.zeros(10_000), 2_000, seed=0, n_values=400_000)
    rises = [j for j, s in enumerate(SR_SHIFTS) if s > 0]
    assert det.shifts == [SR_SHIFTS[j] for j in rises]
    total = sum(SR_WEIGHTS[j] for j in rises)
    assert det.weights == pytest.approx([SR_WEIGHTS[j] / total for j in rises])
    assert det.fresh().update(np.zeros(40_000)).size == 0
    # errors are the change it watches: caught at once
    x = np.zeros(5_000)
    x[3_000::50] = 1.0
    hits = det.fresh().update(x)
    assert hits.size and 3_000 <= hits[0] < 3_200, hits[:3]


def test_a_low_error_rate_keeps_only_the_falls_it_can_make_and_its_target() -> None:
    # 1 % errors: a fall of 2 or 8 points is impossible, both left out; the rate of false
    # alarms over references and seeds is still the target
    target, n, alarms = 2_000, 120_000, 0
    for seed in range(4):
        rng = np.random.default_rng(500 + seed)
        det = concept_sr((rng.random(REF) < 0.01).astype(float), target, seed=seed,
                         n_values=1_000_000)
        assert det.shifts == [s for s in SR_SHIFTS if s > 0]
        alarms += len(det.fresh().update((rng.random(n) < 0.01).astype(float)))
    assert 0.7 * target <= 4 * n / max(alarms, 1) <= 1.4 * target, alarms
    with pytest.raises(DetectorError, match="out of"):
        concept_sr(np.zeros(1_000), 2_000, shifts=[-0.02], weights=[1.0])


def test_a_jump_past_the_grid_is_caught_sooner_than_by_the_grid_before() -> None:
    # issue 15: a new concept raised the tree's error from 10 % by 16.5 points (Hyperplane),
    # twice the old grid's largest rise (+8); the +20-point component takes ~12 % off the
    # median delay (bench/concept_sr_variant.py, 3,000 runs: 0.84 and 0.89).  Same draws,
    # three references; the old grid is at least 5 % slower here unless the component is
    # missing or mis-weighted
    old, new = [], []
    for seed in range(3):
        rng = np.random.default_rng(700 + seed)
        ref = (rng.random(REF) < 0.10).astype(float)
        a = concept_sr(ref, 2_000, seed=seed, n_values=1_000_000)
        b = concept_sr(ref, 2_000, *SR_GRID_BEFORE, seed=seed, n_values=1_000_000)
        for _ in range(300):
            u = rng.random(1_500)
            x = np.concatenate([u[:500] < 0.10, u[500:] < 0.265]).astype(float)
            for det, out in ((a, new), (b, old)):
                hits = det.fresh().update(x)
                out.append(np.nan if hits.size and hits[0] < 500
                           else (hits[0] - 500 if hits.size else 1_000))
    ratio = np.nanmedian(new) / np.nanmedian(old)
    assert ratio <= 0.95, (ratio, np.nanmedian(new), np.nanmedian(old))


def test_a_state_saved_with_the_grid_before_loads_as_another_calibration() -> None:
    # a checkpoint from before the +20-point component: it restores as what it was (its own
    # shifts, ratios and threshold), and the label join, comparing calibrations, starts the
    # model's detector now afresh instead of running the old statistic under the new grid
    rng = np.random.default_rng(5)
    ref = (rng.random(REF) < 0.10).astype(float)
    old = concept_sr(ref, 2_000, *SR_GRID_BEFORE, seed=0, n_values=400_000)
    old.update((rng.random(3_000) < 0.12).astype(float))
    back = ConceptSR.from_dict(json.loads(json.dumps(old.to_dict())))
    assert back.shifts == list(SR_GRID_BEFORE[0]) and back.statistic == old.statistic
    now = concept_sr(ref, 2_000, seed=0, n_values=400_000)
    assert not now.same_calibration(back) and now.same_calibration(now.fresh())
