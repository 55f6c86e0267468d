"""Calibration: the model-level false-alarm budget is what a null stream achieves.

The core claim of streamdrift: with ``false_alarm_events = T`` a model raises, on a
stream drawn from its reference distribution, one false alarm every ``T`` events on
average, whatever the column's distribution.  ``test_model_false_alarm_rate`` builds
baselines with :meth:`ModelBaseline.build` from 10,000 reference values of six
families, runs long null streams through :meth:`ModelMonitor.update` and counts the
alarms raised (not tests).  The rate is pooled over several reference seeds, since
each reference is one draw and the calibration targets the average over them.

The table of measured figures is printed at the end of the run (see conftest.py).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from detectors.calibration import (
    Calibration,
    _upcrossing_counts,
    calibrate_rate_curve,
    calibrate_window_test,
    per_detector_arl,
)
from detectors.catalogue import budget_weight, make_detector, reference_counts
from detectors.errors import DetectorError
from detectors.model import ColumnSpec, DetectionSettings, ModelBaseline
from detectors.profile import NumericProfile
from detectors.quality import completeness_monitor, incomplete_threshold, reference_incomplete
from detectors.window import KSWindow, MissingRate
from tests.detectors.conftest import CALIBRATION_TABLE, NUMERIC_FAMILIES, draw


# -- Šidák split --------------------------------------------------------------
class TestPerDetectorArl:
    @pytest.mark.parametrize("target", [1.5, 2_000, 10_000, 1e7, 1e12])
    @pytest.mark.parametrize("m", [1, 2, 3, 7, 40, 1_000])
    def test_sidak_identity(self, target, m):
        arl = per_detector_arl(target, m)
        # m independent detectors with per-event alarm probability 1/arl: the chance of
        # at least one alarm per event is exactly the model's 1/target
        p_any = -math.expm1(m * math.log1p(-1.0 / arl))
        assert p_any == pytest.approx(1.0 / target, rel=1e-9)
        assert arl >= target
        if target > 100:
            assert arl == pytest.approx(m * target - (m - 1) / 2, rel=1e-6)

    def test_single_detector_gets_the_whole_budget(self):
        assert per_detector_arl(10_000, 1) == pytest.approx(10_000, rel=1e-12)

    def test_monotone(self):
        arls = [per_detector_arl(5_000, m) for m in range(1, 20)]
        assert all(b > a for a, b in zip(arls, arls[1:], strict=False))
        assert per_detector_arl(1e4, 3) < per_detector_arl(1e5, 3)

    @pytest.mark.parametrize("target, m", [(1, 1), (0.5, 2), (-3, 1), (float("nan"), 1),
                                           (100, 0)])
    def test_bad_input(self, target, m):
        with pytest.raises(DetectorError):
            per_detector_arl(target, m)


# -- the rate-curve calibration (ADWIN's delta) ------------------------------------
def power_curve(scale: float, power: float, n_values: int):
    """A detector whose null alarm rate per value is ``scale * param ** power``."""
    def run(param: float, rng: np.random.Generator, n: int = n_values) -> int:
        return int(rng.poisson(n * scale * param ** power))
    return run


GRID = np.array([0.9, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 5e-3, 2e-3, 1e-3, 5e-4, 2e-4, 1e-4])


class TestRateCurve:
    @pytest.mark.parametrize("power", [0.5, 1.0, 2.0])
    @pytest.mark.parametrize("target", [3_000, 20_000, 100_000])
    def test_recovers_a_monotone_curve(self, power, target):
        n, scale = 1_000_000, 1e-3
        cal = calibrate_rate_curve(power_curve(scale, power, n), target, n, GRID, seed=3)
        exact = (1.0 / (target * scale)) ** (1 / power)
        achieved = 1.0 / (scale * cal.threshold ** power)  # events between alarms
        assert cal.method in ("direct", "extrapolated")
        assert 0.75 < achieved / target < 1.35, (cal, exact)
        assert cal.target_events == target and GRID.min() <= exact <= GRID.max()

    def test_extrapolates_below_the_grid(self):
        n, scale = 1_000_000, 1e-3
        target = 1e8  # needs a parameter of 1e-5, below the grid
        cal = calibrate_rate_curve(power_curve(scale, 1.0, n), target, n, GRID, seed=4,
                                   probe_values=16 * n)
        assert cal.method == "extrapolated"
        assert 0.5 < cal.threshold / 1e-5 < 2.0

    def test_never_above_a_point_seen_to_alarm_too_often(self):
        n = 1_000_000
        cal = calibrate_rate_curve(power_curve(1e-3, 1.0, n), 30_000, n, GRID, seed=5)
        too_often = [p for p in GRID if 1e-3 * p * 30_000 > 1.3]
        assert cal.threshold < min(too_often)

    def test_a_flattening_tail_is_extrapolated_from_the_tail(self):
        # slope 0.9 down to 1e-2, then 0.5 (what heavy tails do to ADWIN): a fit of the
        # whole curve promises far fewer alarms than the tail gives; the tail fit and the
        # probe run near the target keep the achieved spacing within 2x of the target
        def curve(p: float) -> float:
            return 1e-3 * p ** 0.9 if p >= 1e-2 else 1e-3 * 1e-2 ** 0.9 * (p / 1e-2) ** 0.5

        def run(p: float, rng: np.random.Generator, n: int) -> int:
            return int(rng.poisson(n * curve(p)))

        target, n = 1e6, 1_000_000
        for seed in range(10):
            cal = calibrate_rate_curve(run, target, n, GRID, seed=seed, probe_values=16 * n)
            assert 0.5 < 1 / curve(cal.threshold) / target < 2, (seed, cal)
            assert cal.simulated_values > 16 * n  # the probe ran
        # without the probe the same curve is extrapolated from higher up, less well
        worse = [1 / curve(calibrate_rate_curve(run, target, n, GRID, seed=s).threshold)
                 / target for s in range(10)]
        assert np.median(worse) < 0.75

    def test_nothing_observed_falls_back_to_a_bound(self):
        def silent(param, rng, n):
            return 0
        cal = calibrate_rate_curve(silent, 10_000, 100_000, GRID, max_param=0.9)
        assert cal.threshold <= 0.9 and cal.method != "direct"
        assert cal.estimated_events == math.inf
        assert Calibration.from_dict(cal.to_dict()) == cal


# -- the window-test calibration ----------------------------------------------------
def null_rate(det, probs: np.ndarray, threshold: float, n: int, seed: int) -> float:
    """Events between up-crossings of ``threshold`` on a long null stream from ``probs``."""
    rng = np.random.default_rng(seed)
    sim = type(det)._from_state({**det.to_dict()["state"], "threshold": None})
    sim.reset()
    cdf = np.cumsum(probs)
    s, _, _ = sim.scan(np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(n), side="right"),
                                  probs.size - 1))
    ups = int(_upcrossing_counts([s], np.array([threshold]))[0])
    return (s.size - 1) * det.cadence / max(ups, 1)


class TestWindowCalibration:
    def test_direct_calibration_of_a_known_distribution(self):
        probs = np.full(16, 1 / 16)
        ks = KSWindow(np.arange(1, 16), probs, window=500, cadence=25)
        cal = calibrate_window_test(ks, 5_000, ref_counts=None, n_values=1_000_000, seed=1)
        assert cal.method == "direct" and cal.simulated_alarms >= 100
        assert ks.threshold == math.inf, "the detector itself is not modified"
        achieved = null_rate(ks, probs, cal.threshold, 3_000_000, seed=2)
        assert 0.7 < achieved / 5_000 < 1.4
        assert 0.7 < cal.estimated_events / 5_000 < 1.4

    @pytest.mark.parametrize("probs", [np.full(32, 1 / 32), np.array([0.95, 0.0188, 0.0312]),
                                       np.array([0.05, 0.15, 0.22, 0.22, 0.17, 0.1, 0.05,
                                                 0.022, 0.018])],
                             ids=["continuous", "zero_inflated", "poisson"])
    def test_extrapolated_ks_threshold(self, probs):
        """Targets beyond what the simulation observes are extrapolated on the p-value scale."""
        ks = KSWindow(np.arange(probs.size - 1.0), probs, window=1000, cadence=50)
        cal = calibrate_window_test(ks, 1e5, ref_counts=None, n_values=2_000_000, seed=1)
        assert cal.method == "extrapolated"
        achieved = null_rate(ks, probs, cal.threshold, 12_000_000, seed=3)
        assert 0.5 < achieved / 1e5 < 2.0, achieved

    def test_reproducible_and_rate_tests(self):
        det = MissingRate(0.02, window=500, cadence=25, ref_count=10_000)
        a = calibrate_window_test(det, 20_000, np.array([9_800, 200]), seed=7, n_values=1_000_000)
        b = calibrate_window_test(det, 20_000, np.array([9_800, 200]), seed=7, n_values=1_000_000)
        assert a == b and a.method == "direct"
        assert a.threshold > 0.02  # above the baseline rate
        assert Calibration.from_dict(a.to_dict()) == a

    def test_extrapolated_count_threshold_sits_on_a_safe_lattice_step(self):
        """A rare flag (2 values out of range in 10,000) at a target past the simulation.

        The count in the window moves the rate in steps 5-50x apart.  The continuous
        extrapolation used to land between steps, which alarms as often as the step below:
        with one seed of eight at "2 or more in 1,000", 5x the budget (the default set at
        10,000 on t3 and lognormal data then missed its target by 30 %).  Every seed now
        stops at 3 or more (1-2x the target in simulation) or 4 or more, midway between
        lattice values.
        """
        det = make_detector("out_of_range", NumericProfile.from_values(np.arange(10_000.0)),
                            1_000, 50)
        for seed in range(8):
            cal = calibrate_window_test(det, 110_000, np.array([9_998.0, 2.0]), seed=seed,
                                        n_values=2_000_000)
            assert cal.method == "extrapolated"
            k = cal.threshold * 1_000 - 0.5
            assert abs(k - round(k)) < 1e-9 and round(k) in (2, 3), (seed, cal.threshold)

    def test_constant_statistic_gives_a_floor(self):
        det = MissingRate(0.0, window=100, cadence=10)
        cal = calibrate_window_test(det, 1e6, ref_counts=None, n_values=100_000)
        assert cal.method == "floor" and cal.threshold > 0
        assert cal.estimated_events == math.inf
        assert Calibration.from_dict(cal.to_dict()).estimated_events == math.inf

    def test_bad_target(self):
        with pytest.raises(DetectorError):
            calibrate_window_test(MissingRate(0.1, 100, 10), 0)


# -- the core claim -------------------------------------------------------------------
SEEDS = (0, 1, 2, 3, 4, 5)
TARGETS = (2_000, 10_000)
#: null events per seed, in units of the target: ~15 expected alarms per seed
STREAM_FACTOR = 15
BATCH = 2_000
NUMERIC_SETS = {"ks": ("ks",), "adwin": ("adwin",), "cusum": ("cusum",), "default": ()}
CATEGORICAL_SETS = {"chi2": ("chi2",), "surprisal": ("surprisal",), "default": ()}
CASES = [(fam, name, target) for fam in NUMERIC_FAMILIES for name in NUMERIC_SETS
         for target in TARGETS] + [("categorical", name, target) for name in CATEGORICAL_SETS
                                   for target in TARGETS]


def measure(family: str, detectors: tuple[str, ...], target: float, seeds=SEEDS,
            factor: int = STREAM_FACTOR, **overrides) -> tuple[int, int, Counter]:
    """Alarms raised on null streams of the baselines of several reference seeds."""
    kind = "categorical" if family == "categorical" else "numeric"
    spec = ColumnSpec("x", kind, detectors=detectors)
    alarms, events, by = 0, 0, Counter()
    for seed in seeds:
        rng = np.random.default_rng(1_000 + seed)
        settings = DetectionSettings(false_alarm_events=target, seed=seed, **overrides)
        base = ModelBaseline.build(f"m{seed}", {"x": draw(family, rng, 10_000)}, [spec],
                                   settings)
        mon = base.monitor([spec], settings)
        n = int(factor * target)
        for _ in range(0, n, BATCH):
            got = mon.update({"x": draw(family, rng, BATCH)})
            by.update(a.detector for a in got)
            alarms += len(got)
        events += mon.n_events
    return alarms, events, by


@pytest.mark.slow
@pytest.mark.parametrize("family, detector_set, target", CASES)
def test_model_false_alarm_rate(family, detector_set, target):
    sets = CATEGORICAL_SETS if family == "categorical" else NUMERIC_SETS
    alarms, events, by = measure(family, sets[detector_set], target)
    achieved = events / max(alarms, 1)
    CALIBRATION_TABLE.append((family, detector_set, target, achieved, alarms, events,
                              dict(sorted(by.items()))))
    if detector_set != "default":
        assert set(by) <= {detector_set}
    assert alarms > 0
    assert target / 2 <= achieved <= 2 * target, (
        f"{family}/{detector_set}: one false alarm every {achieved:.0f} events, "
        f"target {target} ({alarms} alarms in {events} events: {dict(by)})")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["normal", "zero_inflated", "poisson3"])
def test_extrapolated_ks_calibration_at_model_level(family):
    """A target out of the simulation's direct reach, as production budgets always are.

    The budget holds (at most 2x more alarms than the target).  The other side gets 3x:
    for bins whose probability is near 0 or 1 (zero_inflated: 95 % in one bin) the
    Dirichlet posterior the calibration draws its null distributions from mirrors the
    skew of the reference's sampling error, which makes the simulated tail of the KS
    distance heavier than the real one; measured over 12 seeds at this target the
    zero-inflated column alarms 1.9x less often than budgeted (normal 1.1x, Poisson 0.7x).
    """
    target = 100_000  # needs 2.5 expected alarms per 2M simulated values: extrapolated
    alarms, events, by = measure(family, ("ks",), target, factor=4)
    achieved = events / max(alarms, 1)
    CALIBRATION_TABLE.append((family, "ks extrap.", target, achieved, alarms, events,
                              dict(by)))
    assert target / 2 <= achieved <= 3 * target, (achieved, alarms)


@pytest.mark.slow
@pytest.mark.parametrize("family", NUMERIC_FAMILIES)
def test_extrapolated_adwin_calibration_at_model_level(family):
    """ADWIN at a target far past the simulation, on every numeric family.

    Unclipped, the reference's bootstrap never shows the values beyond its range
    that heavy tails produce in production, and ADWIN alarmed 50-140x more often
    than budgeted on t3, lognormal and zero-inflated columns.  Its input is now
    winsorised to the reservoir's central 99.8 % in calibration and in production
    alike (``adwin_clip``), and the budget holds within 2x on every family.
    """
    target = 1_000_000  # ~1 expected alarm per 1M simulated values: extrapolated
    alarms, events, by = measure(family, ("adwin",), target, factor=4)
    achieved = events / max(alarms, 1)
    CALIBRATION_TABLE.append((family, "adwin extrap.", target, achieved, alarms, events,
                              dict(by)))
    assert target / 2 <= achieved <= 2 * target, (achieved, alarms)


@pytest.mark.slow
@pytest.mark.parametrize("family", NUMERIC_FAMILIES)
def test_extrapolated_cusum_calibration_at_model_level(family):
    """CUSUM at a target far past its simulation (exponential-tail extrapolation).

    At 1M events between false alarms the 8M simulated values see ~8 excursions
    above the threshold: too few to read, so ``h`` is extrapolated from the 200
    highest.  The budget holds within 2x on every family, heavy tails and lattices
    (Poisson, 95 % zeros) included.
    """
    target = 1_000_000
    alarms, events, by = measure(family, ("cusum",), target, factor=4)
    achieved = events / max(alarms, 1)
    CALIBRATION_TABLE.append((family, "cusum extrap.", target, achieved, alarms, events,
                              dict(by)))
    assert target / 2 <= achieved <= 2 * target, (achieved, alarms)


@pytest.mark.slow
def test_extrapolated_surprisal_calibration_at_model_level():
    """The surprisal CUSUM at 1M events between false alarms (extrapolated, as for cusum)."""
    target = 1_000_000
    alarms, events, by = measure("categorical", ("surprisal",), target, factor=4)
    achieved = events / max(alarms, 1)
    CALIBRATION_TABLE.append(("categorical", "surprisal extrap.", target, achieved, alarms,
                              events, dict(by)))
    assert target / 2 <= achieved <= 2 * target, (achieved, alarms)


def test_categorical_budget_shares():
    """chi2 and surprisal take four shares each; no singleton in the reference: unseen none."""
    rng = np.random.default_rng(0)
    c = np.array(list("abcd"), dtype=object)[rng.choice(4, 5_000, p=[.4, .3, .2, .1])]
    c[::50] = None
    spec = ColumnSpec("c", "categorical")
    settings = DetectionSettings(false_alarm_events=50_000, window=200, cadence=20,
                                 calibration_values=100_000)
    cals = ModelBaseline.build("m", {"c": c}, [spec], settings).calibrations["c"]
    parts = budget_weight("chi2") + budget_weight("surprisal") + 1  # + missing
    assert budget_weight("chi2") == budget_weight("surprisal") == 4.0
    for kind in ("chi2", "surprisal"):
        assert cals[kind].target_events == pytest.approx(per_detector_arl(50_000, parts / 4))
    assert cals["missing"].target_events == pytest.approx(per_detector_arl(50_000, parts))


def test_budget_shares_follow_the_weights():
    """A CUSUM takes BUDGET_WEIGHTS["cusum"] shares of the budget, other live detectors one."""
    w = budget_weight("cusum")
    assert w > 1 and budget_weight("ks") == 1.0
    rng = np.random.default_rng(0)
    specs = [ColumnSpec("a", "numeric", detectors=("ks", "cusum", "missing"))]
    settings = DetectionSettings(false_alarm_events=50_000, window=200, cadence=20,
                                 calibration_values=100_000)
    base = ModelBaseline.build("m", {"a": rng.normal(size=5_000)}, specs, settings)
    cals = base.calibrations["a"]
    # no missing value in the reference: the missing test cannot false-alarm, no share
    assert cals["ks"].target_events == pytest.approx(per_detector_arl(50_000, 1 + w))
    assert cals["cusum"].target_events == pytest.approx(per_detector_arl(50_000, (1 + w) / w))
    assert cals["missing"].target_events == pytest.approx(per_detector_arl(50_000, 1 + w))
    # the shares add up to the model's budget (Šidák: survival probabilities multiply)
    survive = ((1 - 1 / cals["ks"].target_events)
               * (1 - 1 / cals["cusum"].target_events))
    assert 1 / (1 - survive) == pytest.approx(50_000, rel=1e-9)


def test_budget_is_split_by_sidak_over_live_detectors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=5_000)
    x[::100] = np.nan
    specs = [ColumnSpec("a", "numeric", detectors=("ks", "missing")),
             ColumnSpec("b", "numeric", detectors=("ks",))]
    settings = DetectionSettings(false_alarm_events=50_000, window=200, cadence=20,
                                 calibration_values=100_000)
    base = ModelBaseline.build("m", {"a": x, "b": rng.normal(size=5_000)}, specs, settings)
    # 3 column detectors and the model-level test of incomplete events (two columns)
    assert base.meta["per_detector_events"] == pytest.approx(per_detector_arl(50_000, 4))
    events, incomplete = reference_incomplete(base.profiles, base.meta, ["a", "b"])
    want = incomplete_threshold(events, incomplete, 200, 20, per_detector_arl(50_000, 4))
    assert completeness_monitor(base.profiles, base.meta, specs, settings).test.threshold \
        == pytest.approx(want)
    for col in base.calibrations.values():
        for cal in col.values():
            assert cal.target_events == pytest.approx(per_detector_arl(50_000, 4))


def test_calibration_threshold_feeds_the_detectors():
    prof = NumericProfile.from_values(np.random.default_rng(1).normal(size=5_000), bins=16)
    det = make_detector("ks", prof, 200, 20)
    cal = calibrate_window_test(det, 5_000, reference_counts("ks", prof), n_values=400_000)
    live = make_detector("ks", prof, 200, 20, threshold=cal.threshold)
    assert live.threshold == cal.threshold and 0 < cal.threshold < 1
