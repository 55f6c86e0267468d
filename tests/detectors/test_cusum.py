"""The CUSUM detector: exact against a per-value reference, calibrated, fast to detect."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from detectors.base import Detector
from detectors.calibration import calibrate_cusum
from detectors.catalogue import make_detector
from detectors.cusum import CUSUM, cusum_excursion_maxima
from detectors.errors import DetectorError
from detectors.model import ColumnSpec, DetectionSettings, ModelBaseline
from detectors.profile import NumericProfile, cusum_reference
from tests.detectors.conftest import draw


def reference_cusum(values, mean, scale, k, h, clip=None):
    """Two-sided tabular CUSUM, one value at a time: a sum alarms when it crosses h while
    armed, re-arms when it returns to 0, and is capped at 2h."""
    s = [0.0, 0.0]
    armed = [True, True]
    alarms = []
    for i, x in enumerate(values):
        if not math.isfinite(x) or abs(x) > 1e100:
            continue
        if clip is not None:
            x = min(max(x, clip[0]), clip[1])
        z = (x - mean) / scale
        raised = False
        for side, step in ((0, z - k), (1, -z - k)):
            s[side] = min(max(0.0, s[side] + step), 2 * h)
            if s[side] == 0.0:
                armed[side] = True
            if s[side] > h and armed[side]:
                armed[side] = False
                raised = True
        if raised:
            alarms.append(i)
    return alarms


def batched(det: CUSUM, x: np.ndarray, rng: np.random.Generator) -> list[int]:
    out, start = [], 0
    while start < x.size:
        n = int(rng.integers(0, 300))
        out.extend((det.update(x[start:start + n]) + start).tolist())
        start += n
    return out


@pytest.mark.parametrize("seed", range(8))
def test_matches_the_per_value_reference_under_any_batching(seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.standard_t(3, 3_000), rng.standard_t(3, 2_000) + 0.7])
    x[rng.choice(x.size, 200, replace=False)] = rng.choice([np.nan, np.inf, -np.inf, 1e300], 200)
    mean, scale, h = 0.1, 1.3, float(rng.uniform(3, 9))
    clip = (-5.0, 5.0) if seed % 2 else None
    want = reference_cusum(x.tolist(), mean, scale, 0.25, h, clip)
    assert want, "the stream should alarm"
    det = CUSUM(mean, scale, h, clip=clip)
    assert batched(det, x, rng) == want
    assert det.n_alarms == len(want)
    whole = CUSUM(mean, scale, h, clip=clip)
    assert whole.update(x).tolist() == want


def test_save_restore_mid_stream_gives_identical_output():
    rng = np.random.default_rng(5)
    x = rng.normal(0.3, 1.0, 20_000)
    a = CUSUM(0.0, 1.0, 6.0, hold=100, clip=(-3, 3), name="f")
    a.update(x[:7_777])
    b = Detector.from_dict(json.loads(json.dumps(a.to_dict())))
    assert isinstance(b, CUSUM)
    assert (b.statistic, b.width, b.direction, b.drift_detected) == \
        (a.statistic, a.width, a.direction, a.drift_detected)
    for chunk in np.array_split(x[7_777:], 9):
        assert a.update(chunk).tolist() == b.update(chunk).tolist()
        assert a.summary() == b.summary()


def test_figures_hold_and_one_alarm_per_drift():
    det = CUSUM(0.0, 1.0, 5.0, hold=10)
    assert det.statistic == 0.0 and det.direction == 0 and not det.drift_detected
    det.update(np.full(3, -1.25))  # S- grows by 1 per value
    assert det.statistic == pytest.approx(3.0) and det.direction == -1 and det.width == 3
    hits = det.update(np.full(4, -1.25))
    assert hits.tolist() == [2]  # S- = 6 > 5 on the 6th value: an episode opens
    assert det.drift_detected and det.alarm_statistics.tolist() == pytest.approx([6.0])
    assert det.update(np.full(100, -1.25)).size == 0  # the same drift: no new alarm
    assert det.statistic == pytest.approx(10.0)  # capped at 2h
    assert det.drift_detected  # above h, long after the hold
    det.update(np.zeros(21))  # S- falls by k = 0.25 per value: 4.75, below h
    assert det.statistic == pytest.approx(4.75)
    assert det.drift_detected  # the sum has not returned to 0: the episode goes on
    assert det.update(np.full(30, -1.25)).size == 0  # not back to 0 yet: not re-armed
    det.update(np.zeros(60))  # back to 0 (re-armed) 20 values ago: > hold, closed
    assert det.statistic == 0.0 and not det.drift_detected
    assert det.close_positions.size == 1 and det.episode_peak == pytest.approx(10.0)
    assert det.update(np.full(10, -1.25)).tolist() == [5]
    assert det.n_alarms == 2


def test_a_crossing_soon_after_the_sum_returned_to_0_is_the_same_episode():
    det = CUSUM(0.0, 1.0, 5.0, hold=50)
    assert det.update(np.full(8, -1.25)).tolist() == [5]
    det.update(np.zeros(40))  # S- = 8 - 10 = 0 after 32 values: re-armed, 8 values quiet
    assert det.drift_detected and det.close_positions.size == 0
    assert det.update(np.full(8, -1.25)).size == 0  # crosses again within the hold
    assert det.drift_detected and det.n_alarms == 1
    det.update(np.zeros(100))
    assert not det.drift_detected and det.close_positions.size == 1
    assert det.update(np.full(8, -1.25)).tolist() == [5] and det.n_alarms == 2


def _in_alarm(det: CUSUM, x: np.ndarray) -> tuple[int, float]:
    """Alarms raised over ``x`` and the share of batches of 1,000 that end above h."""
    alarms, states = 0, []
    for b in np.split(x, x.size // 1_000):
        alarms += det.update(b).size
        states.append(det.statistic > det.threshold)
    return alarms, float(np.mean(states))


def test_min_effect_silences_smaller_shifts():
    """A shift of ``min_effect`` alarms as rarely as no shift does without it."""
    rng = np.random.default_rng(2)
    null, null_share = _in_alarm(CUSUM(0.0, 1.0, 10.0), rng.normal(0.0, 1.0, 400_000))
    assert null > 100 and null_share < 0.1
    x = rng.normal(0.35, 1.0, 400_000)  # a real but small shift (0.35σ)
    assert _in_alarm(CUSUM(0.0, 1.0, 10.0), x)[1] > 0.8  # a weak drift: mostly above h
    alarms, share = _in_alarm(CUSUM(0.0, 1.0, 10.0, min_effect=0.35), x)
    assert alarms <= 1.5 * null + 5 and share < 0.1
    assert _in_alarm(CUSUM(0.0, 1.0, 10.0, min_effect=0.35), x - 0.2)[0] < null
    assert _in_alarm(CUSUM(0.0, 1.0, 10.0, min_effect=0.35), x + 0.6)[1] > 0.95


@pytest.mark.parametrize("bad", [
    {"scale": 0.0}, {"scale": -1.0}, {"threshold": 0.0}, {"k": -0.1}, {"mean": math.nan},
    {"clip": (1.0, 0.0)}, {"clip": "ab"}, {"hold": -1}, {"min_effect": -1.0},
])
def test_bad_settings_fail_clearly(bad):
    with pytest.raises(DetectorError, match="CUSUM"):
        CUSUM(**bad)


def test_excursion_maxima_count_the_alarms_of_every_threshold():
    """Excursions higher than h = alarms of a CUSUM with threshold h.

    Exact but for the cap at 2h: a capped sum returns to 0 sooner, so one long
    uncapped excursion can be two capped ones.  That needs an excursion above 2h,
    rare at calibrated thresholds (h ≈ 10-40); at these low ones it is 0.2 %.
    """
    rng = np.random.default_rng(9)
    z = rng.normal(size=400_000)
    z = np.concatenate([z, np.full(100, -1.0), np.full(100, 1.0)])  # close every excursion
    heights = cusum_excursion_maxima(z)
    for h in (6.0, 8.0, 10.0):
        alarms = CUSUM(0.0, 1.0, h).update(z).size
        assert alarms > 20
        assert np.count_nonzero(heights > h) == pytest.approx(alarms, rel=0.005)


@pytest.mark.parametrize("family", ["normal", "student_t3", "lognormal", "poisson3",
                                    "zero_inflated"])
def test_calibrated_false_alarm_rate_and_fast_detection(family):
    """Direct calibration at 5,000 events: within ±35 % over four baselines."""
    target = 5_000
    alarms = events = 0
    for seed in range(4):
        rng = np.random.default_rng(50 + seed)
        spec = ColumnSpec("x", "numeric", detectors=("cusum",))
        settings = DetectionSettings(false_alarm_events=target, seed=seed,
                                     calibration_values=500_000)
        base = ModelBaseline.build("m", {"x": draw(family, rng, 10_000)}, [spec], settings)
        assert base.calibrations["x"]["cusum"].method == "direct"
        det = base.monitor([spec], settings).columns["x"].detectors["cusum"]
        n = 100 * target
        alarms += det.update(draw(family, rng, n)).size
        events += n
    achieved = events / alarms
    assert target / 1.35 <= achieved <= target * 1.35, (achieved, alarms)


def test_detects_a_half_sigma_shift_within_tens_of_values():
    rng = np.random.default_rng(4)
    prof = NumericProfile.from_values(rng.normal(size=10_000))
    mean, scale, clip = cusum_reference(prof)
    cal = calibrate_cusum(lambda r, n: (np.clip(prof.sample(r, n), *clip) - mean) / scale,
                          10_000, 0.25, 2_000_000, offset_sd=0.01)
    delays = []
    for _ in range(200):
        det = make_detector("cusum", prof, 1000, 50, threshold=cal.threshold)
        det.update(rng.normal(size=1_000))
        hits = det.update(rng.normal(0.5, 1.0, 2_000))
        delays.append(hits[0] if hits.size else 2_000)
    # Gaussian theory for k = 0.25 at an ARL of 10,000: about 45 values
    assert 30 <= np.median(delays) <= 60


def test_constant_column_gets_a_floor_and_never_alarms():
    prof = NumericProfile.from_values(np.full(1_000, 3.0))
    mean, scale, clip = cusum_reference(prof)
    assert (mean, scale, clip) == (3.0, 1.0, (3.0, 3.0))
    cal = calibrate_cusum(lambda r, n: (np.clip(prof.sample(r, n), *clip) - mean) / scale,
                          1e6, 0.25, 100_000)
    assert cal.method == "floor"
    det = make_detector("cusum", prof, 100, 10, threshold=cal.threshold)
    assert det.update(np.full(10_000, 3.0)).size == 0


# -- the surprisal CUSUM of categorical columns ----------------------------------------
CATS = ["a", "b", "c", "d"]
CAT_P = np.array([0.6, 0.2, 0.15, 0.05])


class TestSurprisalCUSUM:
    def make(self, **kw):
        from detectors.cusum import SurprisalCUSUM

        return SurprisalCUSUM(CATS, [*CAT_P, 0.0], ref_count=10_000, **kw)

    def test_table_mean_and_scale(self):
        det = self.make()
        counts = np.append(CAT_P * 10_000, 0.0) + 0.5
        np.testing.assert_allclose(det.table, -np.log(counts / counts.sum()))
        clipped = np.clip(det.table[:4], *det.clip)
        assert det.clip == (pytest.approx(det.table[0]), pytest.approx(det.table[3]))
        assert det.mean == pytest.approx(float(CAT_P @ clipped))
        assert det.scale == pytest.approx(math.sqrt(float(CAT_P @ (clipped - det.mean) ** 2)))

    @pytest.mark.parametrize("seed", range(4))
    def test_equals_a_cusum_of_the_surprisal(self, seed):
        rng = np.random.default_rng(seed)
        det = self.make(threshold=8.0)
        vals = np.array(CATS + ["zz"], dtype=object)[
            rng.choice(5, 6_000, p=[0.4, 0.2, 0.2, 0.1, 0.1])]
        vals[rng.random(vals.size) < 0.05] = None  # missing: skipped
        present = np.flatnonzero(vals != None)  # noqa: E711
        codes = np.array([CATS.index(v) if v in CATS else 4 for v in vals[present]])
        want = present[reference_cusum(det.table[codes], det.mean, det.scale, det.k, det.h,
                                       det.clip)]
        got = batched(det, vals, rng)  # type: ignore[arg-type]
        assert got == want.tolist() and len(got) >= 1

    def test_codes_and_strings_agree(self):
        rng = np.random.default_rng(1)
        codes = rng.choice(4, 3_000, p=[0.3, 0.3, 0.2, 0.2])
        a, b = self.make(threshold=10.0), self.make(threshold=10.0)
        assert a.update(np.array(CATS, dtype=object)[codes]).tolist() == \
            b.update(codes).tolist()
        assert a.statistic == b.statistic and a.direction == 1

    def test_floats_are_a_type_error_naming_the_column(self):
        with pytest.raises(TypeError, match="city"):
            self.make(name="city").update(np.array([1.5, 2.5]))

    def test_concentration_is_the_negative_side(self):
        rng = np.random.default_rng(2)
        det = self.make(threshold=12.0)
        det.update(rng.choice(CATS, 1_000, p=CAT_P))
        hits = det.update(rng.choice(CATS, 1_000, p=[0.85, 0.1, 0.04, 0.01]))
        assert hits.size == 1 and det.direction == -1

    def test_state_round_trip_mid_stream(self):
        rng = np.random.default_rng(3)
        det = self.make(threshold=10.0, hold=100, name="city")
        stream = rng.choice(CATS, 4_000, p=[0.4, 0.3, 0.2, 0.1])
        det.update(stream[:1_500])
        back = Detector.from_dict(json.loads(json.dumps(det.to_dict())))
        assert type(back) is type(det) and back.to_dict() == det.to_dict()
        assert back.update(stream[1_500:]).tolist() == det.update(stream[1_500:]).tolist()
        with pytest.raises(DetectorError, match="surprisal state"):
            Detector.from_dict({"kind": "surprisal", "state": {"categories": CATS}})

    def test_bad_probabilities(self):
        from detectors.cusum import SurprisalCUSUM

        for probs in ([0.5, 0.5], [0.5, 0.5, np.nan, 0, 0], [0, 0, 0, 0, 0], [1, -1, 0, 0, 0]):
            with pytest.raises(DetectorError, match="probability"):
                SurprisalCUSUM(CATS, probs)

    def test_one_category_never_alarms(self):
        from detectors.cusum import SurprisalCUSUM

        det = SurprisalCUSUM(["only"], [1.0, 0.0], threshold=1.0, ref_count=100)
        assert det.scale == 1.0
        assert det.update(np.array(["only"] * 50 + ["new"] * 50, dtype=object)).size == 0

    @pytest.mark.parametrize("seed", range(3))
    def test_calibrated_in_the_model(self, seed):
        """Achieved spacing of false alarms near the target, and a flattening is caught."""
        rng = np.random.default_rng(seed)
        p = 1.0 / np.arange(1, 9)
        p /= p.sum()
        cats = np.array([f"k{i}" for i in range(8)], dtype=object)
        spec = ColumnSpec("c", "categorical", detectors=("surprisal",))
        settings = DetectionSettings(false_alarm_events=2_000, seed=seed)
        base = ModelBaseline.build("m", {"c": cats[rng.choice(8, 10_000, p=p)]}, [spec],
                                   settings)
        assert base.calibrations["c"]["surprisal"].method == "direct"
        mon = base.monitor([spec], settings)
        alarms = sum(len(mon.update({"c": cats[rng.choice(8, 10_000, p=p)]}))
                     for _ in range(6))
        assert 10 <= alarms <= 75  # 30 expected; a factor of 2.5 either way
        flat = 0.5 * p + 0.5 / 8
        hits = mon.update({"c": cats[rng.choice(8, 3_000, p=flat)]})
        assert hits and hits[0].detector == "surprisal" and hits[0].position < 400
