"""Window tests: the shared engine, save/restore, batch-split invariance, detection power."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import special, stats

from detectors.adwin import ADWIN
from detectors.base import Detector, registered_detectors
from detectors.calibration import calibrate_window_test
from detectors.catalogue import make_detector, reference_counts
from detectors.errors import DetectorError
from detectors.profile import CategoricalProfile, NumericProfile
from detectors.window import (
    ChiSquareWindow,
    KSWindow,
    MissingRate,
    OutOfRangeRate,
    UnseenRate,
    WindowTest,
)
from tests.detectors.conftest import feed, random_splits

WINDOW, CADENCE = 1000, 50
LETTERS = np.array(list("abcdef"), dtype=object)
LETTER_P = np.array([0.35, 0.25, 0.15, 0.12, 0.08, 0.05])


@pytest.fixture(scope="module")
def normal_profile() -> NumericProfile:
    return NumericProfile.from_values(np.random.default_rng(11).normal(size=10_000), bins=32)


@pytest.fixture(scope="module")
def letter_profile() -> CategoricalProfile:
    rng = np.random.default_rng(12)
    return CategoricalProfile.from_values(LETTERS[rng.choice(6, 10_000, p=LETTER_P)])


def calibrated(kind: str, profile, target: float = 1e5, min_effect: float = 0.0,
               window: int = WINDOW, cadence: int = CADENCE) -> Detector:
    """A detector of ``kind`` whose threshold is calibrated for ``target`` events."""
    det = make_detector(kind, profile, window, cadence, min_effect=min_effect, name="col")
    if isinstance(det, WindowTest):
        cal = calibrate_window_test(det, target, reference_counts(kind, profile), seed=1,
                                    n_values=1_000_000)
        det.threshold = cal.threshold
    return det


# -- streams with a change at position 3000, for every detector kind ----------------
CHANGE = 3_000


def stream_for(kind: str, rng: np.random.Generator, n: int = 8_000):
    """(detector, values) with a clear change at CHANGE; detectors with fixed thresholds."""
    pre, post = CHANGE, n - CHANGE
    if kind == "ks":
        prof = NumericProfile.from_values(rng.normal(size=5_000), bins=16)
        det = KSWindow(prof.bin_edges, prof.bin_probabilities, 500, 25, threshold=0.08,
                       ref_count=5_000, name="x")
        x = np.concatenate([rng.normal(size=pre), rng.normal(1.0, 1.0, post)])
        x[rng.random(n) < 0.02] = np.nan
        x[rng.random(n) < 0.005] = np.inf
        return det, x
    if kind == "adwin":
        return ADWIN(delta=0.01, name="x"), np.concatenate(
            [rng.normal(size=pre), rng.normal(1.0, 1.0, post)])
    if kind == "chi2":
        det = ChiSquareWindow(list(LETTERS), [*LETTER_P, 0.0], 500, 25, threshold=25.0,
                              ref_count=10_000, name="c")
        x = np.concatenate([LETTERS[rng.choice(6, pre, p=LETTER_P)],
                            LETTERS[rng.choice(6, post, p=LETTER_P[::-1])]])
        x[rng.random(n) < 0.02] = None
        return det, x
    rate = {"missing": 0.02, "out_of_range": 0.001, "unseen": 0.005, "invalid_rate": 0.0}[kind]
    det = registered_detectors()[kind](base_rate=rate, window=500, cadence=25,
                                       threshold=rate + 0.03, ref_count=10_000, name="f")
    p = np.concatenate([np.full(pre, rate), np.full(post, rate + 0.1)])
    return det, rng.random(n) < p


ALL_KINDS = ["ks", "chi2", "missing", "out_of_range", "unseen", "invalid_rate", "adwin"]


class TestStateAndSplits:
    @pytest.mark.parametrize("kind", ALL_KINDS)
    @pytest.mark.parametrize("seed", range(4))
    def test_save_restore_mid_stream_gives_identical_output(self, kind, seed):
        rng = np.random.default_rng(seed)
        det, x = stream_for(kind, rng)
        bounds = random_splits(rng, x.size, max_cuts=15)
        cut = int(rng.integers(0, len(bounds) + 1))
        first = feed(det, x, bounds[:cut])
        restored = Detector.from_dict(json.loads(json.dumps(det.to_dict(), allow_nan=False)))
        assert type(restored) is type(det)
        assert restored.to_dict() == det.to_dict()
        a = feed(det, x, bounds[cut:])
        b = feed(restored, x, bounds[cut:])
        assert a == b
        assert first + a, "the stream should raise at least one alarm"
        assert restored.statistic == det.statistic
        assert restored.n_alarms == det.n_alarms == len(first) + len(a)
        assert restored.drift_detected == det.drift_detected
        assert restored.to_dict() == det.to_dict()

    @pytest.mark.parametrize("kind", ALL_KINDS)
    def test_batch_split_invariance(self, kind):
        rng = np.random.default_rng(99)
        det, x = stream_for(kind, rng)
        fresh = json.dumps(det.to_dict())
        reference = feed(det, x, [(0, x.size)])
        ref_state = det.to_dict()
        assert reference, "the change should be detected"
        for _ in range(12):
            other = Detector.from_dict(json.loads(fresh))
            got = feed(other, x, random_splits(rng, x.size, max_cuts=40))
            assert got == reference
            assert other.statistic == det.statistic
            state = other.to_dict()
            if kind == "adwin":
                state["state"]["drift_detected"] = ref_state["state"]["drift_detected"]
            assert state == ref_state
        # one value at a time, as a stream processor with tiny polls would
        other = Detector.from_dict(json.loads(fresh))
        assert feed(other, x[:4_000], [(i, i + 1) for i in range(4_000)]) == [
            p for p in reference if p < 4_000]

    def test_alarm_positions_index_the_original_batch(self, normal_profile):
        det = KSWindow(normal_profile.bin_edges, normal_profile.bin_probabilities, 100, 10,
                       threshold=0.3)
        x = np.full(200, np.nan)
        x[1::2] = 5.0  # far above the baseline: the first full window alarms
        hits = det.update(x)
        # the 100th finite value completes the first window; it sits at position 199
        assert hits.tolist() == [199]


class TestEngine:
    def test_ks_statistic_matches_brute_force(self, normal_profile):
        rng = np.random.default_rng(3)
        w, c = 400, 20
        det = KSWindow(normal_profile.bin_edges, normal_profile.bin_probabilities, w, c)
        x = np.concatenate([rng.normal(size=1_500), rng.normal(0.3, 1.2, 1_500)])
        edges, ref = normal_profile.bin_edges, np.cumsum(normal_profile.bin_probabilities)[:-1]
        got = []
        for lo, hi in random_splits(rng, x.size, 30):
            stats_, _, idx = det.scan(np.searchsorted(edges, x[lo:hi], side="left"))
            got.extend(zip((idx + lo).tolist(), stats_.tolist(), strict=True))
        assert [i for i, _ in got] == list(range(w - 1, x.size, c))
        for i, s in got:
            win = x[i - w + 1: i + 1]
            cdf = (win[:, None] <= edges[None, :]).mean(axis=0)
            assert s == pytest.approx(np.abs(cdf - ref).max(), abs=1e-12)

    def test_chi2_statistic_matches_brute_force(self, letter_profile):
        rng = np.random.default_rng(4)
        det = make_detector("chi2", letter_profile, 300, 30)
        assert isinstance(det, ChiSquareWindow)
        x = LETTERS[rng.choice(6, 2_000, p=LETTER_P[::-1])]
        x[::7] = "zz"  # unseen categories go to the other bucket
        m = letter_profile.count
        smooth = np.append(letter_profile.bin_probabilities[:-1], 0.0) * m + 0.5
        smooth /= smooth.sum()
        codes, pos = det.codes(x)
        s, tv, idx = det.scan(codes)
        for i, g, e in zip(idx.tolist(), s.tolist(), tv.tolist(), strict=True):
            o = np.bincount(codes[i - 299: i + 1], minlength=det.n_bins).astype(float)
            nz = o > 0
            assert g == pytest.approx(2 * np.sum(o[nz] * np.log(o[nz] / (300 * smooth[nz]))))
            assert e == pytest.approx(0.5 * np.abs(o / 300 - det.probs).sum())

    def test_one_alarm_per_excursion(self, normal_profile):
        rng = np.random.default_rng(5)
        det = KSWindow(normal_profile.bin_edges, normal_profile.bin_probabilities, 200, 20,
                       threshold=0.2)
        x = np.concatenate([rng.normal(size=1_000), rng.normal(3, 1, 3_000),
                            rng.normal(size=2_000), rng.normal(3, 1, 1_000)])
        hits = det.update(x).tolist()
        assert len(hits) == 2, hits
        assert 1_000 <= hits[0] < 1_200 and 6_000 <= hits[1] < 6_200
        assert det.drift_detected and det.n_alarms == 2 and det.score >= 1

    def test_reset_forgets_the_window_only(self, normal_profile):
        det = KSWindow(normal_profile.bin_edges, normal_profile.bin_probabilities, 100, 10,
                       threshold=0.2)
        det.update(np.full(300, 9.0))
        assert det.drift_detected and det.n_alarms == 1
        det.reset()
        assert (det.statistic, det.drift_detected, det.window_values, det.n_alarms) == (
            0.0, False, 0, 1)
        assert det.update(np.full(99, 9.0)).size == 0
        assert det.update(np.full(1, 9.0)).tolist() == [0]

    @pytest.mark.parametrize("window, cadence", [(0, 1), (10, 3), (10, 20), (10.0, 5),
                                                 (True, 1)])
    def test_bad_window_settings(self, window, cadence):
        with pytest.raises(DetectorError):
            MissingRate(0.1, window, cadence)

    @pytest.mark.parametrize("kwargs", [
        {"threshold": float("nan")}, {"threshold": "1"}, {"min_effect": -1.0},
    ])
    def test_bad_thresholds(self, kwargs):
        with pytest.raises(DetectorError):
            MissingRate(0.1, 100, 10, **kwargs)

    def test_bad_references(self):
        with pytest.raises(DetectorError):
            KSWindow([1.0, 1.0], [0.3, 0.3, 0.4])
        with pytest.raises(DetectorError):
            KSWindow([1.0], [0.5, 0.3, 0.2])
        with pytest.raises(DetectorError):
            ChiSquareWindow(["a"], [1.0])
        with pytest.raises(DetectorError):
            ChiSquareWindow(["a"], [np.nan, 1.0])
        with pytest.raises(DetectorError):
            MissingRate(1.5)

    def test_chi2_accepts_codes_and_strings(self):
        det = ChiSquareWindow(["a", "b"], [0.5, 0.5, 0.0], 10, 5)
        assert det.codes(np.array([0, 1, 2, 7, -1]))[0].tolist() == [0, 1, 2, 2, 2]
        codes, pos = det.codes(np.array(["b", None, "a", "q"], dtype=object))
        assert codes.tolist() == [1, 0, 2] and pos.tolist() == [0, 2, 3]


class TestDetection:
    """Clear shifts are detected within a bounded delay by calibrated detectors."""

    def first_alarm(self, det, before, after) -> int:
        assert det.update(before).size == 0, "false alarm before the change"
        hits = det.update(after)
        assert hits.size, "change not detected"
        return int(hits[0])

    def test_ks_mean_shift_of_one_sigma(self, normal_profile):
        rng = np.random.default_rng(21)
        det = calibrated("ks", normal_profile)
        delay = self.first_alarm(det, rng.normal(size=5_000), rng.normal(1.0, 1.0, 3_000))
        assert delay < WINDOW // 2

    def test_ks_variance_doubled_same_mean(self, normal_profile):
        rng = np.random.default_rng(22)
        det = calibrated("ks", normal_profile)
        delay = self.first_alarm(det, rng.normal(size=5_000),
                                 rng.normal(0.0, math.sqrt(2.0), 5_000))
        assert delay < 2 * WINDOW

    def test_adwin_mean_shift(self):
        rng = np.random.default_rng(23)
        det = ADWIN(delta=0.002)
        delay = self.first_alarm(det, rng.normal(size=5_000), rng.normal(1.0, 1.0, 3_000))
        assert delay < 300

    def test_chi2_frequency_change(self, letter_profile):
        rng = np.random.default_rng(24)
        det = calibrated("chi2", letter_profile)
        before = LETTERS[rng.choice(6, 5_000, p=LETTER_P)]
        p = LETTER_P.copy()
        p[[0, 2]] = p[[2, 0]]  # two categories swap frequencies (0.35 <-> 0.15)
        delay = self.first_alarm(det, before, LETTERS[rng.choice(6, 5_000, p=p)])
        assert delay < WINDOW

    def test_missing_rate_jump(self):
        rng = np.random.default_rng(25)
        x = rng.normal(size=10_000)
        x[rng.random(x.size) < 0.01] = np.nan
        prof = NumericProfile.from_values(x)
        det = calibrated("missing", prof)
        delay = self.first_alarm(det, rng.random(5_000) < 0.01, rng.random(5_000) < 0.08)
        assert delay < WINDOW // 2

    def test_out_of_range(self):
        # a reference whose true out-of-range share (2.0e-4) is the nominal 2 / (n + 1)
        prof = NumericProfile.from_values(np.random.default_rng(16).normal(size=10_000))
        rng = np.random.default_rng(26)
        det = calibrated("out_of_range", prof)
        lo, hi = prof.min, prof.max

        def flags(x):
            return (x < lo) | (x > hi)

        after = rng.normal(size=5_000)
        after[rng.random(after.size) < 0.03] = hi + 1.0
        delay = self.first_alarm(det, flags(rng.normal(size=5_000)), flags(after))
        assert delay < WINDOW // 2

    def test_unseen_categories(self):
        rng = np.random.default_rng(27)
        names = np.array([f"c{i}" for i in range(40)], dtype=object)
        prof = CategoricalProfile.from_values(names[rng.zipf(1.5, 10_000) % 40])
        assert prof.singletons >= 0
        det = calibrated("unseen", prof)
        known = set(prof.counts)

        def flags(x):
            return np.array([v not in known for v in x])

        after = names[rng.zipf(1.5, 5_000) % 40].astype(object)
        after[rng.random(after.size) < 0.05] = "brand-new"
        delay = self.first_alarm(det, flags(names[rng.zipf(1.5, 5_000) % 40]), flags(after))
        assert delay < WINDOW // 2

    def test_min_effect_suppresses_small_significant_shifts(self):
        rng = np.random.default_rng(28)
        # a missing rate going from 1 % to 2 % over windows of 5000 is highly significant...
        x = rng.normal(size=20_000)
        x[rng.random(x.size) < 0.01] = np.nan
        prof = NumericProfile.from_values(x)
        before, after = rng.random(10_000) < 0.01, rng.random(10_000) < 0.02
        plain = calibrated("missing", prof, window=5_000, cadence=250)
        assert plain.update(before).size == 0 and plain.update(after).size == 1
        assert plain.p_value < 1e-6 and plain.effect == pytest.approx(0.01, abs=0.004)
        # ...but below an effect of 3 points it does not alarm
        gated = calibrated("missing", prof, window=5_000, cadence=250, min_effect=0.03)
        assert gated.threshold == plain.threshold
        assert gated.update(before).size == 0 and gated.update(after).size == 0
        assert not gated.drift_detected and gated.statistic > gated.threshold

    def test_min_effect_on_chi2_is_total_variation(self, letter_profile):
        rng = np.random.default_rng(29)
        p = LETTER_P + np.array([0.03, -0.03, 0, 0, 0, 0])  # TV distance 0.03
        shifted = LETTERS[rng.choice(6, 30_000, p=p)]
        plain = calibrated("chi2", letter_profile, window=10_000, cadence=500)
        gated = calibrated("chi2", letter_profile, min_effect=0.06, window=10_000, cadence=500)
        assert plain.update(shifted).size >= 1
        assert gated.update(shifted).size == 0
        assert 0.01 < gated.effect < 0.06


class TestThresholdsAndPValues:
    def test_ks_p_value_is_kolmogorov_or_the_union_bound_over_edges(self, normal_profile):
        det = KSWindow(normal_profile.bin_edges, normal_profile.bin_probabilities, 1000, 50,
                       ref_count=0)
        d = np.linspace(0.0, 0.2, 41)
        lp = det.log_p_values(d)
        kolm = np.log(np.maximum(special.kolmogorov(np.sqrt(1000) * d), 1e-300))
        # the continuous-CDF law where it is the sharper bound (moderate distances)
        np.testing.assert_allclose(np.exp(lp[d < 0.06]), np.exp(kolm[d < 0.06]), rtol=1e-9)
        assert np.all(lp <= kolm + 1e-12)
        assert np.all(np.diff(lp) <= 0) and np.all(np.isfinite(lp)) and np.all(lp <= 0)
        two_sample = KSWindow(normal_profile.bin_edges, normal_profile.bin_probabilities,
                              1000, 50, ref_count=1000)
        assert two_sample.log_p_values(np.array([0.05]))[0] > lp[10]  # n_eff = 500 < 1000

    @pytest.mark.parametrize("probs", [[0.95, 0.02, 0.03], [0.3, 0.4, 0.3], np.full(16, 1 / 16)])
    def test_ks_p_value_is_valid_for_binned_data(self, probs):
        """P(statistic >= d) under the null never exceeds the nominal p-value (much)."""
        probs = np.asarray(probs)
        w = 500
        det = KSWindow(np.arange(probs.size - 1.0), probs, w, 50, ref_count=0)
        rng = np.random.default_rng(6)
        counts = rng.multinomial(w, probs, size=200_000)
        d = np.abs(np.cumsum(counts, axis=1)[:, :-1] / w - np.cumsum(probs)[:-1]).max(axis=1)
        levels = np.quantile(d, [0.9, 0.99, 0.999, 0.9999])
        for lvl in levels:
            emp = np.mean(d >= lvl - 1e-12)
            nominal = math.exp(det.log_p_values(np.array([lvl]))[0])
            # valid (conservative up to discreteness) and not absurdly conservative
            assert emp <= 1.5 * nominal and nominal < 100 * emp, (lvl, emp, nominal)
        if probs[0] == 0.95:
            # the Kolmogorov law alone would be off by orders of magnitude here
            kolm = special.kolmogorov(np.sqrt(w) * levels[-1])
            assert kolm > 100 * math.exp(det.log_p_values(levels[-1:])[0])

    def test_chi2_and_rate_p_values(self, letter_profile):
        chi = make_detector("chi2", letter_profile, 500, 50)
        g = np.array([0.0, 5.0, 20.0, 200.0])
        np.testing.assert_allclose(chi.log_p_values(g), stats.chi2.logsf(g, 6))
        rate = MissingRate(0.02, 500, 50, ref_count=10_000)
        s = np.array([0.0, 0.02, 0.05, 0.2])
        np.testing.assert_allclose(np.exp(rate.log_p_values(s)),
                                   stats.binom.sf(np.round(s * 500) - 1, 500, 0.02))
        assert np.exp(rate.log_p_values(np.array([0.0])))[0] == pytest.approx(1.0)

    @pytest.mark.parametrize("kind", ["ks", "chi2", "missing", "out_of_range", "unseen"])
    def test_p_value_sanity_along_a_stream(self, kind):
        rng = np.random.default_rng(31)
        det, x = stream_for(kind, rng)
        assert det.p_value == 1.0  # before the window fills
        pvals, statistics = [], []
        for lo, hi in random_splits(rng, x.size, 60):
            det.update(x[lo:hi])
            p = det.p_value
            assert p is not None and 0.0 <= p <= 1.0
            assert math.isfinite(det.statistic) and math.isfinite(det.score)
            pvals.append(p)
            statistics.append(det.statistic)
        assert min(pvals) < 1e-6  # the change is extreme
        order = np.argsort(statistics)
        assert np.all(np.diff(np.asarray(pvals)[order]) <= 1e-12)
        s = det.summary()
        assert s["score"] == pytest.approx(det.statistic / det.threshold)
        assert s["drift"] == det.drift_detected == (det.statistic > det.threshold)

    def test_infinite_threshold_never_alarms(self, normal_profile):
        det = KSWindow(normal_profile.bin_edges, normal_profile.bin_probabilities, 100, 10)
        assert det.update(np.full(1_000, 50.0)).size == 0
        assert det.statistic > 0.9 and not det.drift_detected
        assert det.score == 0.0 and det.summary()["threshold"] == 0.0
        assert json.loads(json.dumps(det.to_dict()))["state"]["threshold"] is None

    def test_threshold_setter(self):
        det = UnseenRate(0.0, 100, 10)
        det.threshold = 0.05
        assert det.threshold == 0.05
        assert det.update(np.ones(100, dtype=bool)).tolist() == [99]

    def test_statistic_never_nan_with_degenerate_references(self):
        dets = [
            KSWindow([], [1.0], 20, 5),
            ChiSquareWindow(["a"], [1.0, 0.0], 20, 5),
            ChiSquareWindow([], [1.0], 20, 5),
            OutOfRangeRate(0.0, 20, 5),
            MissingRate(1.0, 20, 5),
        ]
        batches = {
            "numeric": np.array([np.nan, np.inf, -np.inf, 1e308, -1e308, 0.0] * 10),
            "categorical": np.array(["a", None, "b", ""] * 15, dtype=object),
            "flags": np.array([True, False, True] * 20),
        }
        for det in dets:
            det.update(batches[det.input_kind])
            assert math.isfinite(det.statistic) and math.isfinite(det.p_value)


# -- the multi-scale chi2 test ----------------------------------------------------------
def brute_force_multiscale(codes: np.ndarray, probs: np.ndarray, ref_count: int,
                           scales: list[int], cadence: int) -> list[tuple[float, float]]:
    """(largest G over the scales, TV of that window) at every full-window test point."""
    counts = probs * max(ref_count, 1) + 0.5
    log_p = np.log(counts / counts.sum())
    out = []
    for end in range(scales[-1], codes.size + 1, cadence):
        best, best_tv = -1.0, 0.0
        for s in scales:
            obs = np.bincount(codes[end - s:end], minlength=probs.size).astype(float)
            nz = obs > 0
            g = max(2.0 * float((obs[nz] * (np.log(obs[nz] / s) - log_p[nz])).sum()), 0.0)
            if g > best:
                best, best_tv = g, 0.5 * float(np.abs(obs / s - probs).sum())
        out.append((best, best_tv))
    return out


class TestMultiScaleChiSquare:
    def test_default_scales(self):
        det = ChiSquareWindow(list("ab"), [0.5, 0.5, 0.0], 1000, 50)
        assert det.scales == [100, 200, 400, 1000]
        assert ChiSquareWindow(list("ab"), [0.5, 0.5, 0.0], 60, 20).scales == [20, 60]
        assert ChiSquareWindow(list("ab"), [0.5, 0.5, 0.0], 100, 100).scales == [100]

    @pytest.mark.parametrize("scales", [[100, 50], [100], [60, 100, 100], [30, 100], [0, 100],
                                        ["x", 100], [], [100.5], None.__class__])
    def test_bad_scales_name_the_fix(self, scales):
        if scales is None.__class__:
            scales = 7  # not iterable
        with pytest.raises(DetectorError, match="scales must be ascending multiples of cadence"):
            ChiSquareWindow(list("ab"), [0.5, 0.5, 0.0], 200, 20, scales=scales)

    @pytest.mark.parametrize("seed", range(3))
    def test_statistic_is_the_largest_g_over_the_scales(self, seed):
        rng = np.random.default_rng(seed)
        probs = np.array([0.5, 0.3, 0.15, 0.05, 0.0])
        codes = np.concatenate([rng.choice(5, 900, p=probs),
                                rng.choice(5, 700, p=[0.3, 0.3, 0.2, 0.1, 0.1])])
        det = ChiSquareWindow(list("abcd"), probs, 400, 20, ref_count=3_000,
                              scales=[40, 100, 400])
        stats_, effects, idx = det.scan(codes)
        want = brute_force_multiscale(codes, probs, 3_000, [40, 100, 400], 20)
        assert idx.tolist() == list(range(399, codes.size, 20))
        np.testing.assert_allclose(stats_, [w[0] for w in want], rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(effects, [w[1] for w in want], rtol=1e-12, atol=1e-12)

    def test_single_scale_is_the_classic_test(self):
        rng = np.random.default_rng(4)
        probs = np.array([0.6, 0.3, 0.1, 0.0])
        codes = rng.choice(4, 3_000, p=[0.5, 0.3, 0.2, 0.0])
        one = ChiSquareWindow(list("abc"), probs, 500, 50, ref_count=1_000, scales=[500])
        stats_, _, _ = one.scan(codes)
        want = brute_force_multiscale(codes, probs, 1_000, [500], 50)
        np.testing.assert_allclose(stats_, [w[0] for w in want], rtol=1e-12)

    def test_state_round_trip_and_old_states(self):
        det = ChiSquareWindow(list("ab"), [0.7, 0.3, 0.0], 200, 20, threshold=15.0,
                              scales=[40, 200])
        state = json.loads(json.dumps(det.to_dict()))
        assert state["state"]["scales"] == [40, 200]
        assert Detector.from_dict(state).scales == [40, 200]
        # a state written before the multi-scale test was a single-window test
        del state["state"]["scales"]
        assert Detector.from_dict(state).scales == [200]

    def test_short_windows_catch_a_large_shift_sooner(self):
        """At the same calibrated false-alarm rate, over several seeds."""
        probs = np.array([0.4, 0.3, 0.2, 0.1, 0.0])
        shifted = [0.2, 0.3, 0.2, 0.3, 0.0]
        delays = {}
        for name, scales in (("multi", None), ("single", [WINDOW])):
            det = ChiSquareWindow(list("abcd"), probs, WINDOW, CADENCE, ref_count=10**9,
                                  scales=scales)
            det.threshold = calibrate_window_test(det, 5_000, None, seed=1,
                                                  n_values=1_000_000).threshold
            out = []
            for seed in range(8):
                rng = np.random.default_rng(seed)
                d = Detector.from_dict(det.to_dict())
                d.update_bins(rng.choice(5, 2_000, p=probs))
                hits = d.update_bins(rng.choice(5, 2_000, p=shifted))
                out.append(int(hits[0]) if hits.size else 2_000)
            delays[name] = float(np.median(out))
        assert delays["multi"] <= 0.7 * delays["single"], delays
