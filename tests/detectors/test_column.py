"""ColumnMonitor / ModelMonitor / ModelBaseline: one pass per batch, counts, state, settings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from detectors.base import Detector
from detectors.calibration import calibrate_window_test
from detectors.catalogue import (
    can_false_alarm,
    default_detectors,
    make_detector,
    reference_counts,
)
from detectors.column import ColumnMonitor
from detectors.distances import jensen_shannon, psi, wasserstein_binned
from detectors.errors import DetectorError
from detectors.model import (
    ColumnSpec,
    DetectionSettings,
    ModelBaseline,
    ModelMonitor,
    calibration_key,
)
from detectors.profile import CategoricalProfile, NumericProfile, adwin_clip, range_breakers
from tests.detectors.conftest import CATEGORIES, CATEGORY_PROBS, random_splits

SETTINGS = DetectionSettings(false_alarm_events=20_000, window=200, cadence=20,
                             calibration_values=200_000)
SPECS = [ColumnSpec("x", "numeric"), ColumnSpec("c", "categorical", role="prediction")]


def reference(rng: np.random.Generator, n: int = 5_000) -> dict[str, np.ndarray]:
    x = rng.normal(size=n)
    x[rng.random(n) < 0.02] = np.nan
    c = CATEGORIES[rng.choice(8, n, p=CATEGORY_PROBS)]
    c[rng.random(n) < 0.02] = None
    return {"x": x, "c": c}


@pytest.fixture(scope="module")
def baseline() -> ModelBaseline:
    return ModelBaseline.build("m", reference(np.random.default_rng(0)), SPECS, SETTINGS)


def drifting_batches(rng: np.random.Generator, n: int = 6_000) -> dict[str, np.ndarray]:
    """Null for the first half, then a mean shift, a missing-rate jump and new categories."""
    half = n // 2
    x = np.concatenate([rng.normal(size=half), rng.normal(1.5, 1.0, n - half)])
    x[rng.random(n) < 0.02] = np.nan
    x[rng.random(n) < 0.01] = np.inf
    x[half + np.flatnonzero(rng.random(n - half) < 0.2)] = np.nan
    c = CATEGORIES[rng.choice(8, n, p=CATEGORY_PROBS)]
    c[half:][rng.random(n - half) < 0.2] = "new"
    c[rng.random(n) < 0.02] = None
    return {"x": x, "c": c}


class TestColumnMonitor:
    def test_numeric_classification_and_counts(self, baseline):
        mon = baseline.monitor(SPECS, SETTINGS).columns["x"]
        x = np.array([0.1, np.nan, np.inf, -np.inf, 2.0, np.nan, 0.3])
        mask = np.array([False, False, False, False, True, True, False])
        assert mon.update(x, mask) == []
        # NaN is missing, ±inf and masked entries are invalid (masked NaN too)
        assert (mon.n_values, mon.n_missing, mon.n_invalid) == (2, 1, 4)
        assert mon.update(np.empty(0)) == []
        assert mon.update(np.array([1, 2, 3])) == []  # integers are numbers
        assert (mon.n_values, mon.n_missing, mon.n_invalid) == (5, 1, 4)

    def test_categorical_classification_and_counts(self, baseline):
        mon = baseline.monitor(SPECS, SETTINGS).columns["c"]
        c = np.array(["a", None, "zz", "b", None], dtype=object)
        mon.update(c, np.array([False, False, False, False, True]))
        assert (mon.n_values, mon.n_missing, mon.n_invalid) == (3, 1, 1)
        mon.update(["a", "b"])  # a list of str works too
        assert mon.n_values == 5

    @pytest.mark.parametrize("column, batch", [
        ("x", np.array(["1.0", "2.0"])),
        ("x", np.array([object(), None], dtype=object)),
        ("c", np.array([1.0, 2.0])),
    ])
    def test_wrong_dtype_names_the_column(self, baseline, column, batch):
        mon = baseline.monitor(SPECS, SETTINGS).columns[column]
        with pytest.raises(TypeError, match=f"^{column}: "):
            mon.update(batch)
        assert (mon.n_values, mon.n_missing, mon.n_invalid) == (0, 0, 0)

    def test_drift_raises_alarms_from_each_detector(self, baseline):
        rng = np.random.default_rng(1)
        mm = baseline.monitor(SPECS, SETTINGS)
        data = drifting_batches(rng)
        alarms = []
        for lo, hi in random_splits(rng, 6_000, 20):
            got = mm.update({k: v[lo:hi] for k, v in data.items()})
            assert [a.position for a in got] == sorted(a.position for a in got)
            alarms.extend(a._replace(position=a.position + lo) for a in got)
        kinds = {(a.column, a.detector) for a in alarms if a.position >= 3_000}
        assert {("x", "ks"), ("x", "adwin"), ("x", "missing"), ("c", "unseen")} <= kinds
        assert all(a.statistic > a.threshold or a.detector == "adwin" for a in alarms)
        first = min(a.position for a in alarms if a.detector == "ks")
        assert 3_000 <= first < 3_000 + SETTINGS.window
        assert mm.n_events == 6_000
        s = mm.summary()
        json.dumps(s, allow_nan=False)
        x = s["columns"]["x"]
        assert x["values"] + x["missing"] + x["invalid"] == 6_000
        assert x["drift"] and x["missing_ratio"] > 0.1
        assert s["columns"]["c"]["role"] == "prediction" and s["columns"]["c"]["unseen_ratio"] > 0.1

    def test_column_state_round_trip_mid_stream(self, baseline):
        rng = np.random.default_rng(2)
        data = drifting_batches(rng)
        bounds = random_splits(rng, 6_000, 30)
        a = baseline.monitor(SPECS, SETTINGS)
        cut = len(bounds) // 2
        for lo, hi in bounds[:cut]:
            a.update({k: v[lo:hi] for k, v in data.items()})
        b = ModelMonitor.from_dict(json.loads(json.dumps(a.to_dict(), allow_nan=False)),
                                   ModelBaseline.from_dict(json.loads(json.dumps(
                                       baseline.to_dict()))))
        assert b.to_dict() == a.to_dict()
        for lo, hi in bounds[cut:]:
            batch = {k: v[lo:hi] for k, v in data.items()}
            assert a.update(batch) == b.update(batch)
        assert b.summary() == a.summary()

    @staticmethod
    def run_batched(baseline, data, bounds):
        mm = baseline.monitor(SPECS, SETTINGS)
        alarms = []
        for lo, hi in bounds:
            alarms.extend(a._replace(position=a.position + lo)
                          for a in mm.update({k: v[lo:hi] for k, v in data.items()}))
        return sorted(alarms), mm

    def test_run_and_replay_agree(self, baseline):
        """Different batchings of the same events give the same alarms and figures."""
        rng = np.random.default_rng(3)
        data = drifting_batches(rng)
        ref_alarms, ref = self.run_batched(baseline, data, [(0, 6_000)])
        assert len({a.detector for a in ref_alarms}) >= 5
        for _ in range(3):
            alarms, mm = self.run_batched(baseline, data, random_splits(rng, 6_000, 50))
            assert [a[:3] for a in alarms] == [a[:3] for a in ref_alarms]
            # window tests report the statistic of the test that raised the alarm
            assert [a for a in alarms if a.detector != "adwin"] == [
                a for a in ref_alarms if a.detector != "adwin"]
            assert _without_adwin_flag(mm.summary()) == _without_adwin_flag(ref.summary())
            assert _without_adwin_flag(mm.to_dict()) == _without_adwin_flag(ref.to_dict())

    def test_adwin_alarm_statistic_is_batching_invariant(self, baseline):
        rng = np.random.default_rng(3)
        data = drifting_batches(rng)
        ref_alarms, _ = self.run_batched(baseline, data, [(0, 6_000)])
        alarms, _ = self.run_batched(baseline, data, [(i, i + 7) for i in range(0, 6_000, 7)])
        assert alarms == ref_alarms

    def test_trackers_without_detectors(self):
        """Ratios and distances are exported even with no matching detector enabled."""
        rng = np.random.default_rng(4)
        prof = NumericProfile.from_values(rng.normal(size=5_000), bins=16)
        mon = ColumnMonitor("x", prof, {}, window=100, cadence=10)
        assert mon.distances() == {"psi": 0.0, "jensen_shannon": 0.0, "wasserstein": 0.0}
        x = rng.normal(size=500)
        x[::10] = np.nan
        x[1::25] = 1e9
        assert mon.update(x) == []
        r = mon.ratios()
        assert r["missing_ratio"] > 0 and r["out_of_range_ratio"] > 0
        assert r["invalid_ratio"] == 0.0
        d = mon.distances()
        assert all(math.isfinite(v) and v >= 0 for v in d.values())
        back = ColumnMonitor.from_dict(json.loads(json.dumps(mon.to_dict())), prof)
        assert back.to_dict() == mon.to_dict() and back.ratios() == r

    def test_distances_grow_with_drift(self):
        rng = np.random.default_rng(5)
        prof = NumericProfile.from_values(rng.normal(size=10_000), bins=16)
        null = ColumnMonitor("x", prof, {}, window=2_000, cadence=100)
        null.update(rng.normal(size=2_000))
        moved = ColumnMonitor("x", prof, {}, window=2_000, cadence=100)
        moved.update(rng.normal(1.0, 1.0, 2_000))
        dn, dm = null.distances(), moved.distances()
        for k in dn:
            assert dm[k] > 5 * dn[k], k
        assert dm["wasserstein"] == pytest.approx(1.0, abs=0.25)  # a 1σ shift, in σ units

    def test_detectors_must_fit_the_column_type(self):
        num = NumericProfile.from_values(np.arange(100.0))
        cat = CategoricalProfile.from_values(np.array(["a", "b"], dtype=object))
        with pytest.raises(DetectorError, match="chi2"):
            ColumnMonitor("x", num, {"chi2": make_detector("chi2", cat, 10, 5)})
        with pytest.raises(DetectorError, match="does not apply"):
            make_detector("ks", cat, 10, 5)
        with pytest.raises(DetectorError):
            ColumnSpec("x", "numeric", detectors=("unseen",))
        with pytest.raises(DetectorError):
            ColumnSpec("x", "text")
        assert ColumnSpec("x", "numeric").detectors == default_detectors("numeric")
        assert ColumnSpec("c", "categorical").detectors == default_detectors("categorical")


def _without_adwin_flag(d: dict) -> dict:
    """A monitor's summary or state without ADWIN's ``drift_detected`` flag, which is
    documented as "detected by the most recent update call" and so follows the batching.
    The CUSUMs' states keep the same per-call flag (their summaries' ``drift`` is batching-
    invariant: the alarm is held for a window of values)."""
    dets = d["columns"]["x"]["detectors"]
    adwin = dets["adwin"]
    (adwin.get("state") or adwin).pop("drift_detected" if "state" in adwin else "drift")
    for col, kind in (("x", "cusum"), ("c", "surprisal")):
        det = d["columns"].get(col, {}).get("detectors", {}).get(kind, {})
        if "state" in det:
            det["state"].pop("drift_detected")
    return d


class TestModelMonitor:
    def test_missing_column_is_an_error(self, baseline):
        mm = baseline.monitor(SPECS, SETTINGS)
        with pytest.raises(DetectorError, match="'c'"):
            mm.update({"x": np.zeros(3)})

    def test_settings_change_recalibrates(self, baseline):
        base = ModelBaseline.from_dict(json.loads(json.dumps(baseline.to_dict())))
        assert not base.needs_calibration(SPECS, SETTINGS)
        other = DetectionSettings(**{**SETTINGS.__dict__, "false_alarm_events": 40_000})
        assert base.needs_calibration(SPECS, other)
        # the calibration sample size is not part of the key
        bigger = DetectionSettings(**{**SETTINGS.__dict__, "calibration_values": 300_000})
        assert calibration_key(SPECS, bigger) == calibration_key(SPECS, SETTINGS)
        old = base.thresholds["x"]["ks"]
        base.monitor(SPECS, other)
        assert base.key == calibration_key(SPECS, other)
        assert base.thresholds["x"]["ks"] > old  # a smaller false-alarm budget
        assert base.id != baseline.id

    def test_calibration_version_is_part_of_the_key(self, baseline, monkeypatch):
        import detectors.model as model

        key = calibration_key(SPECS, SETTINGS)
        monkeypatch.setattr(model, "CALIBRATION_VERSION", model.CALIBRATION_VERSION + 1)
        assert calibration_key(SPECS, SETTINGS) != key
        assert baseline.needs_calibration(SPECS, SETTINGS)

    def test_live_adwin_is_clipped_like_its_calibration(self, baseline):
        adwin = baseline.monitor(SPECS, SETTINGS).columns["x"].detectors["adwin"]
        lo, hi = adwin.clip
        r = baseline.profiles["x"].reservoir
        assert adwin.clip == adwin_clip(baseline.profiles["x"])
        assert r.min() < lo < hi < r.max()
        assert np.mean(r < lo) <= 0.002 and np.mean(r > hi) <= 0.002

    def test_baseline_needs_data(self):
        with pytest.raises(DetectorError, match="no column"):
            ModelBaseline.build("m", {"x": np.zeros(10)}, SPECS, SETTINGS)
        with pytest.raises(DetectorError, match="no valid value"):
            ModelBaseline.build("m", {"x": np.full(10, np.nan)}, SPECS[:1], SETTINGS)

    def test_settings_validation(self):
        with pytest.raises(DetectorError):
            DetectionSettings(false_alarm_events=1)
        with pytest.raises(DetectorError):
            DetectionSettings(window=1000, cadence=300)

    def test_baseline_is_reproducible(self):
        a = ModelBaseline.build("m", reference(np.random.default_rng(9)), SPECS, SETTINGS)
        b = ModelBaseline.build("m", reference(np.random.default_rng(9)), SPECS, SETTINGS)
        assert a.id == b.id and a.thresholds == b.thresholds

    def test_progress_callback(self):
        seen = []
        ModelBaseline.build("m", reference(np.random.default_rng(9)), SPECS[1:], SETTINGS,
                            progress=lambda what, i, n: seen.append((what, i, n)))
        assert seen[0] == ("c/chi2", 0, 4) and seen[-1] == ("done", 4, 4)


class TestBudgetHelpers:
    def test_range_breakers(self):
        rng = np.random.default_rng(6)
        assert range_breakers(NumericProfile.from_values(rng.normal(size=1_000))) == 2
        # tied minimum (zero-inflated): only the top can be exceeded
        zi = np.where(rng.random(1_000) < 0.9, 0.0, rng.exponential(size=1_000))
        assert range_breakers(NumericProfile.from_values(zi)) == 1
        # a bounded discrete column, every extreme value repeated
        assert range_breakers(NumericProfile.from_values(rng.integers(1, 6, 1_000))) == 0
        assert range_breakers(NumericProfile()) == 0
        big = NumericProfile.from_values(rng.normal(size=50_000), reservoir_size=1_000)
        assert range_breakers(big) == 2  # extremes missing from a subsample count as untied

    def test_out_of_range_base_rate_follows_the_ties(self):
        rng = np.random.default_rng(7)
        prof = NumericProfile.from_values(rng.integers(1, 6, 1_000))
        det = make_detector("out_of_range", prof, 100, 10)
        assert det.base_rate == 0.0
        assert reference_counts("out_of_range", prof).tolist() == [1_000, 0]
        cont = NumericProfile.from_values(rng.normal(size=999))
        assert make_detector("out_of_range", cont, 100, 10).base_rate == pytest.approx(2 / 1000)

    def test_unseen_base_rate_of_a_truncated_profile(self):
        """Categories folded away by max_tracked are unseen to the monitor: they count."""
        rng = np.random.default_rng(12)

        def draw(n):
            return np.array([f"c{v}" for v in rng.zipf(1.3, n)], dtype=object)

        prof = CategoricalProfile.from_values(draw(20_000), top_k=10, max_tracked=200)
        assert prof.truncated and prof.singletons == 0  # the singletons were folded
        fresh = draw(20_000)
        share = np.mean([v not in prof.counts for v in fresh])
        det = make_detector("unseen", prof, 500, 25)
        assert det.base_rate == pytest.approx(share, rel=0.1)
        assert can_false_alarm("unseen", prof)
        counts = reference_counts("unseen", prof)
        assert counts.sum() == prof.count and counts[1] == prof.other_count
        # calibrated on those counts, a null stream does not sit in the alarm state
        cal = calibrate_window_test(det, 5_000, counts, n_values=400_000)
        mon = ColumnMonitor("c", prof, {"unseen": make_detector("unseen", prof, 500, 25,
                                                               threshold=cal.threshold)},
                            window=500, cadence=25)
        alarms = mon.update(draw(50_000))
        assert len(alarms) < 40 and mon.ratios()["unseen_ratio"] < 0.3

    def test_can_false_alarm(self):
        rng = np.random.default_rng(8)
        clean = NumericProfile.from_values(rng.normal(size=1_000))
        dirty = NumericProfile.from_values(np.append(rng.normal(size=1_000), np.nan))
        closed = CategoricalProfile.from_values(np.array(list("ab") * 50, dtype=object))
        open_ = CategoricalProfile.from_values(np.array([*"ab" * 50, "z"], dtype=object))
        assert not can_false_alarm("missing", clean) and can_false_alarm("missing", dirty)
        assert not can_false_alarm("unseen", closed) and can_false_alarm("unseen", open_)
        for kind in ("ks", "adwin", "out_of_range"):
            assert can_false_alarm(kind, clean)
        assert can_false_alarm("chi2", closed)

    def test_budget_split_over_detectors_that_can_alarm(self):
        rng = np.random.default_rng(10)
        data = {"x": rng.normal(size=3_000)}  # no missing value in the reference
        specs = [ColumnSpec("x", "numeric", detectors=("ks", "missing", "out_of_range"))]
        base = ModelBaseline.build("m", data, specs, SETTINGS)
        assert base.meta["per_detector_events"] == pytest.approx(
            1 / (1 - (1 - 1 / SETTINGS.false_alarm_events) ** 0.5))
        # the missing detector is still calibrated: missing values arriving do alarm
        mm = base.monitor(specs, SETTINGS)
        x = rng.normal(size=1_000)
        x[500:] = np.nan
        assert any(a.detector == "missing" for a in mm.update({"x": x}))


class TestDistances:
    def test_identical_histograms_are_at_distance_zero(self):
        p = np.array([0.1, 0.2, 0.3, 0.4])
        counts = p * 1000
        assert psi(counts, p) == pytest.approx(0.0, abs=1e-12)
        assert jensen_shannon(counts, p) == pytest.approx(0.0, abs=1e-6)
        assert wasserstein_binned(counts, p, np.array([0.0, 1.0, 2.0]), 1.0) == pytest.approx(0.0)

    def test_bounds_and_degenerate_input(self):
        rng = np.random.default_rng(11)
        for _ in range(50):
            q, p = rng.integers(0, 50, 6), rng.dirichlet(np.full(6, 0.3))
            assert 0.0 <= jensen_shannon(q, p) <= 1.0
            assert 0.0 <= psi(q, p) < math.inf
        assert psi(np.zeros(3), np.array([0.5, 0.5, 0.0])) >= 0.0
        assert wasserstein_binned(np.zeros(4), np.full(4, 0.25), np.arange(3.0), 1.0) == 0.0
        assert wasserstein_binned(np.ones(4), np.full(4, 0.25), np.arange(3.0), 0.0) == 0.0


def test_detector_registry_restores_column_trackers(baseline):
    mon = baseline.monitor(SPECS, SETTINGS).columns["x"]
    data = mon.to_dict()
    for d in [*data["detectors"].values(), *data["trackers"].values()]:
        assert isinstance(Detector.from_dict(d), Detector)
