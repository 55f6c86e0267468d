"""The bias drift detector (detectors.bias) as a statistic: its reference figures, its
false episodes on clean streams against the budget, its detection of one facet value's
positive rate moving (the others silent), and its independence from batch boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.bias import BiasBaseline, build_baseline, gaps
from detectors.errors import DetectorError

SHARES = np.array([0.45, 0.30, 0.20, 0.05])
RATES = np.array([0.30, 0.40, 0.35, 0.25])
VALUES = ["a", "b", "c", "other"]


def draw(n: int, rng: np.random.Generator, rates: np.ndarray = RATES,
         shares: np.ndarray = SHARES) -> tuple[np.ndarray, np.ndarray]:
    cdf = np.cumsum(shares)
    codes = np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(n), side="right"),
                       len(shares) - 1)
    return codes, rng.random(n) < rates[codes]


def baseline(seed: int, n: int = 40_000, window: int = 10_000, cadence: int = 250,
             ) -> BiasBaseline:
    codes, pos = draw(n, np.random.default_rng(seed))
    return build_baseline("f", VALUES, codes, pos, window, cadence, False)


def test_reference_figures_follow_clarify_s_definitions() -> None:
    # DPPL = q_rest - q_value, DI = q_value / q_rest, the rest being every other bucket
    n = np.array([100, 300, 600])
    pos = np.array([50, 60, 120])
    q_d, q_a, dppl, di = gaps(pos, n)
    assert q_d.tolist() == pytest.approx([0.5, 0.2, 0.2])
    assert q_a.tolist() == pytest.approx([180 / 900, 170 / 700, 110 / 400])
    assert dppl.tolist() == pytest.approx((q_a - q_d).tolist())
    assert di.tolist() == pytest.approx((q_d / q_a).tolist())
    base = baseline(0)
    truth_rest = [(SHARES @ RATES - SHARES[i] * RATES[i]) / (1 - SHARES[i]) for i in range(4)]
    assert base.ref_dppl == pytest.approx(np.array(truth_rest) - RATES, abs=0.02)


def test_bad_baselines_are_refused() -> None:
    with pytest.raises(DetectorError, match="multiple of cadence"):
        BiasBaseline("f", ["a"], [10, 10], [1, 1], 1000, 300)
    with pytest.raises(DetectorError, match="do not match"):
        BiasBaseline("f", ["a", "b", "c"], [10], [1], 1000, 100)
    with pytest.raises(DetectorError, match="target_events"):
        baseline(0).calibrate(0.5)


@pytest.mark.parametrize("target", [50_000, pytest.param(500_000, marks=pytest.mark.slow)])
def test_false_episodes_on_clean_streams_stay_within_the_budget(target: int) -> None:
    """Each of 4 seeds: a reference of 40,000 events, a threshold calibrated for
    ``target`` events between false episodes (any value), then 40 x target clean events
    from the true distribution.  The episodes over all seeds (160 x target events, 160
    expected at the target) are at most the budget with a Poisson allowance, and not
    far below it either (the calibration counts up-crossings, an upper bound, and the
    reference's error is in the simulation): between 0.2 and 1.3 of the budget."""
    episodes, events = 0, 0
    for seed in range(4):
        base = baseline(seed).calibrate(target, seed=seed)
        mon = base.monitor()
        rng = np.random.default_rng(1000 + seed)
        n = 40 * target
        for _ in range(n // 100_000 or 1):
            codes, pos = draw(min(n, 100_000), rng)
            episodes += len(mon.update(codes, pos))
        events += max(n, 100_000)
    expected = events / target
    print(f"target {target}: {episodes} false episodes in {events} events, {expected:.0f} "
          f"at the budget")
    assert episodes <= 1.3 * expected + 3 * np.sqrt(expected), (episodes, expected)
    assert episodes >= 0.2 * expected, (episodes, expected)


def test_a_facet_value_whose_positive_rate_moves_is_caught_the_others_silent() -> None:
    """The 5 % value's positive rate +0.15 (0.25 -> 0.40): caught within 15,000 events in
    every one of 5 seeds, at a budget of 10^6 events; no other value opens an episode, and
    nothing opens before the change."""
    for seed in range(5):
        base = baseline(seed).calibrate(1_000_000, seed=seed)
        mon = base.monitor()
        rng = np.random.default_rng(500 + seed)
        for _ in range(5):
            codes, pos = draw(10_000, rng)
            assert mon.update(codes, pos) == []
        moved = RATES.copy()
        moved[3] += 0.15
        found = []
        for i in range(15):
            codes, pos = draw(1000, rng, moved)
            found += [(i, a.value) for a in mon.update(codes, pos)]
        assert found, seed
        assert {v for _, v in found} == {"other"}, found


def test_a_change_of_every_value_alike_is_not_bias_drift() -> None:
    """Every value's positive rate +0.1 (prediction drift, no change in the gaps): the
    gaps' statistic keeps its null distribution: over 3 seeds x 100,000 events at a budget
    of 10^6 events, 0.3 false episodes are expected; at most 2 (a rate test on one value
    would fire at once: +0.1 is 4 standard errors of the 5 % value's window rate)."""
    alarms = 0
    for seed in range(3):
        base = baseline(seed).calibrate(1_000_000, seed=seed)
        mon = base.monitor()
        rng = np.random.default_rng(700 + seed)
        for _ in range(20):
            codes, pos = draw(5000, rng, RATES + 0.1)
            alarms += len(mon.update(codes, pos))
    assert alarms <= 2


def test_the_same_alarms_however_the_stream_is_split() -> None:
    base = baseline(3).calibrate(100_000, seed=3)
    rng = np.random.default_rng(9)
    moved = RATES.copy()
    moved[0] -= 0.1
    c1, p1 = draw(30_000, rng)
    c2, p2 = draw(30_000, rng, moved)
    codes, pos = np.concatenate([c1, c2]), np.concatenate([p1, p2])
    whole = base.monitor()
    one = [(a.value, a.position) for a in whole.update(codes, pos)]
    assert one
    split = base.monitor()
    parts, at = [], 0
    for size in rng.integers(1, 3000, size=200):
        if at >= codes.size:
            break
        hi = min(at + int(size), codes.size)
        parts += [(a.value, a.position + at) for a in split.update(codes[at:hi], pos[at:hi])]
        at = hi
    assert parts == one
    assert np.array_equal(split.dppl, whole.dppl)


def test_serialisation_keeps_the_threshold() -> None:
    base = baseline(1).calibrate(100_000)
    again = BiasBaseline.from_dict(base.to_dict())
    assert again.threshold == base.threshold and again.values == base.values
    assert np.array_equal(again.ref_dppl, base.ref_dppl)
