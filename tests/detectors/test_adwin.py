"""Tests of detectors.adwin: exact equivalence with river.drift.ADWIN and the protocol."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.adwin import ADWIN, adwin_detections
from detectors.base import Detector, registered_detectors
from detectors.errors import DetectorError

river_drift = pytest.importorskip("river.drift")

SETTING_GRID = {
    "delta": [0.002, 0.05, 0.5],
    "clock": [1, 4, 32],
    "max_buckets": [3, 5],
    "min_window_length": [0, 1, 5, 10],
    "grace_period": [0, 10, 50],
}


# -- helpers ------------------------------------------------------------------
def river_run(values: np.ndarray, **kw) -> tuple[list[int], object]:
    """Feed the finite values one at a time to River; positions index ``values``."""
    ref = river_drift.ADWIN(**kw)
    positions = []
    for i, v in enumerate(values.tolist()):
        if not math.isfinite(v):
            continue
        ref.update(v)
        if ref.drift_detected:
            positions.append(i)
    return positions, ref


def ours_run(values: np.ndarray, rng: np.random.Generator | None = None, **kw):
    """Feed ``values`` to our ADWIN in random batches (one batch if rng is None)."""
    det = ADWIN(**kw)
    if rng is None:
        return det.update(values).tolist(), det
    n = len(values)
    cuts = np.sort(rng.integers(0, n + 1, size=int(rng.integers(0, 12))))
    bounds = [0, *cuts.tolist(), n]
    positions: list[int] = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        got = det.update(values[lo:hi])
        assert got.dtype == np.int64
        positions.extend((got + lo).tolist())
    return positions, det


def assert_same_figures(det: ADWIN, ref) -> None:
    assert det.width == ref.width
    for ours, theirs in (
        (det.estimation, ref.estimation),
        (det.variance, ref.variance),
        (det.total, ref.total),
    ):
        assert math.isclose(ours, theirs, rel_tol=1e-9, abs_tol=1e-12), (ours, theirs)


def random_stream(rng: np.random.Generator, kind: str) -> np.ndarray:
    n = int(rng.integers(50, 6000))
    if kind == "normal":
        x = rng.normal(rng.normal(0, 3), rng.uniform(0.1, 3), n)
        for at in rng.integers(0, n, size=int(rng.integers(1, 4))):
            x[at:] += rng.normal(0, 2)
    elif kind == "bernoulli":
        p = rng.uniform(0.02, 0.5, size=2)
        at = int(rng.integers(0, n))
        x = np.concatenate([rng.random(at) < p[0], rng.random(n - at) < p[1]]).astype(float)
    elif kind == "t3":
        x = rng.standard_t(3, n) * rng.uniform(0.5, 5)
        x[int(rng.integers(0, n)) :] += rng.normal(0, 1)
    else:  # constant, with values that are not exact in binary
        x = np.full(n, rng.choice([0.0, 0.1, 1.0, -3.3, 1e6 + 0.7]))
    return x


def random_settings(rng: np.random.Generator) -> dict:
    return {key: rng.choice(options).item() for key, options in SETTING_GRID.items()}


def sprinkle_non_finite(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    x = x.copy()
    mask = rng.random(len(x)) < rng.uniform(0.01, 0.2)
    x[mask] = rng.choice([np.nan, np.inf, -np.inf], size=int(mask.sum()))
    return x


# -- equivalence with River ---------------------------------------------------
@pytest.mark.parametrize("seed", range(10))
def test_equivalence_with_river_random_streams(seed):
    rng = np.random.default_rng(1000 + seed)
    kinds = ["normal", "bernoulli", "t3", "constant"]
    n_detections = 0
    for j in range(40):
        kind = kinds[j % len(kinds)]
        x = random_stream(rng, kind)
        if rng.random() < 0.3:
            x = sprinkle_non_finite(rng, x)
        kw = random_settings(rng) if j % 3 else {}  # a third at River's defaults
        expected, ref = river_run(x, **kw)
        got, det = ours_run(x, rng, **kw)
        assert got == expected, (kind, kw)
        assert_same_figures(det, ref)
        assert det.n_detections == len(expected) == det.n_alarms
        # the plain function gives the same answer on the whole array
        assert adwin_detections(x, **({"delta": 0.002} | kw)).tolist() == expected
        n_detections += len(expected)
    assert n_detections > 0  # the comparison exercised detections, not only quiet streams


def test_equivalence_long_stream_many_detections():
    rng = np.random.default_rng(7)
    # Piecewise-constant mean, 40 segments: many detections and window resets.
    x = np.concatenate([rng.normal(rng.normal(0, 2), 1, 1500) for _ in range(40)])
    for kw in ({}, {"clock": 1, "delta": 0.05}, {"max_buckets": 3, "grace_period": 0}):
        expected, ref = river_run(x, **kw)
        got, det = ours_run(x, rng, **kw)
        assert len(expected) > 20
        assert got == expected
        assert_same_figures(det, ref)
        # Same IEEE operations in the same order: the running sums agree bit for bit.
        assert (det.total, det.variance) == (ref.total, ref.variance)


def test_drift_detected_matches_river_value_by_value():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 1, 500), rng.normal(3, 1, 500), rng.normal(0, 1, 500)])
    ref = river_drift.ADWIN(clock=4)
    det = ADWIN(clock=4)
    seen = 0
    for v in x:
        ref.update(float(v))
        got = det.update(np.array([v]))
        assert det.drift_detected == ref.drift_detected == (got.size == 1)
        seen += ref.drift_detected
        assert_same_figures(det, ref)
    assert seen >= 2


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.integers(-3, 3).map(float),
            st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
        ),
        min_size=0,
        max_size=400,
    ),
    clock=st.sampled_from([1, 2, 32]),
    max_buckets=st.sampled_from([2, 3, 5]),
    min_window_length=st.sampled_from([0, 1, 2, 5]),
    grace_period=st.sampled_from([0, 5, 10]),
    delta=st.sampled_from([0.002, 0.1, 0.9]),
)
def test_equivalence_property(values, clock, max_buckets, min_window_length, grace_period, delta):
    x = np.asarray(values, dtype=np.float64)
    kw = {
        "delta": delta,
        "clock": clock,
        "max_buckets": max_buckets,
        "min_window_length": min_window_length,
        "grace_period": grace_period,
    }
    expected, ref = river_run(x, **kw)
    got, det = ours_run(x, np.random.default_rng(len(values)), **kw)
    assert got == expected
    assert_same_figures(det, ref)


# -- save / restore ---------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_save_restore_mid_stream(seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(rng.normal(0, 2), 1, 700) for _ in range(8)])
    x = sprinkle_non_finite(rng, x)
    kw = random_settings(rng)
    reference = ADWIN(**kw).update(x)
    # split points: random ones and right after a detection (reset pending)
    splits = [int(rng.integers(1, len(x)))]
    if reference.size:
        splits.append(int(reference[0]) + 1)
    for split in splits:
        det = ADWIN(name="f", **kw)
        first = det.update(x[:split])
        blob = json.dumps(det.to_dict())
        restored = Detector.from_dict(json.loads(blob))
        assert isinstance(restored, ADWIN)
        assert restored.to_dict() == det.to_dict()
        assert restored.name == "f"
        for d in (det, restored):
            later = d.update(x[split:])
            assert np.concatenate([first, later + split]).tolist() == reference.tolist()
        for attr in ("width", "estimation", "variance", "total", "statistic", "n_detections"):
            assert getattr(restored, attr) == getattr(det, attr)
        assert restored.drift_detected == det.drift_detected


def test_from_dict_rejects_malformed_state():
    good = ADWIN().to_dict()
    with pytest.raises(DetectorError):
        Detector.from_dict({"kind": "adwin", "state": {"delta": 0.002}})
    bad = json.loads(json.dumps(good))
    bad["state"]["counts"] = [7]
    bad["state"]["totals"] = [[1.0] * 7]
    bad["state"]["variances"] = [[0.0] * 7]
    with pytest.raises(DetectorError):
        Detector.from_dict(bad)


# -- bad input ----------------------------------------------------------------
def test_non_finite_values_do_not_change_state():
    rng = np.random.default_rng(11)
    x = rng.normal(0, 1, 1000)
    det = ADWIN()
    det.update(x)
    before = det.to_dict()["state"]
    assert det.update(np.array([np.nan, np.inf, -np.inf, np.nan])).size == 0
    after = det.to_dict()["state"]
    before.pop("drift_detected")
    after.pop("drift_detected")
    assert after == before
    # non-finite entries neither tick the clock nor shift later positions
    y = np.concatenate([rng.normal(0, 1, 1000), rng.normal(4, 1, 500)])
    y_holes = np.insert(y, [100, 1000, 1000, 1200], [np.nan, np.inf, np.nan, -np.inf])
    plain = ADWIN().update(y)
    holed = ADWIN().update(y_holes)
    assert plain.size > 0
    finite_index = np.flatnonzero(np.isfinite(y_holes))
    assert finite_index[plain].tolist() == holed.tolist()


def test_clip_winsorises_measurable_values_only():
    rng = np.random.default_rng(12)
    x = np.concatenate([rng.standard_t(2, 3000), rng.standard_t(2, 3000) + 0.7])
    x[::97] *= 1e3  # wild outliers
    holes = np.insert(x, [10, 500, 4000], [np.nan, np.inf, 1e200])
    clip = (-4.0, 4.0)
    det = ADWIN(clip=clip, clock=4)
    got = det.update(holes)
    # exactly what plain ADWIN does on the clipped values, with the holes still skipped
    plain = np.clip(holes, *clip)
    plain[~(np.abs(holes) <= 1e100)] = np.nan
    assert got.tolist() == ADWIN(clock=4).update(plain).tolist()
    assert got.tolist() == adwin_detections(holes, 0.002, clock=4, clip=clip).tolist()
    assert got.size > 0 and det.width <= x.size
    assert abs(det.estimation) <= 4.0
    # the input array is not modified, and clip survives a state round trip
    assert np.isnan(holes[10]) and holes[::97].max() > 4.0
    restored = Detector.from_dict(json.loads(json.dumps(det.to_dict())))
    assert restored.clip == clip
    tail = rng.standard_t(2, 500) * 50
    assert restored.update(tail).tolist() == det.update(tail).tolist()
    assert ADWIN().clip is None


def test_empty_batch_and_scalar_and_integers():
    det = ADWIN()
    out = det.update(np.array([], dtype=np.float64))
    assert out.dtype == np.int64 and out.size == 0
    assert det.update([]).size == 0
    assert det.width == 0 and det.estimation == 0.0 and det.statistic == 0.0
    det.update(3.0)
    det.update(np.array([1, 2, 3], dtype=np.int32))
    det.update(np.array([True, False]))
    assert det.width == 6 and det.total == 10.0


def test_strings_raise_type_error_naming_the_feature():
    det = ADWIN(name="latency_ms")
    with pytest.raises(TypeError, match="latency_ms"):
        det.update(np.array(["1.0", "2.0"]))
    with pytest.raises(TypeError, match="latency_ms"):
        det.update(np.zeros((2, 2)))
    assert det.width == 0


@pytest.mark.parametrize(
    "kw",
    [
        {"delta": 0.0},
        {"delta": 1.0},
        {"delta": "x"},
        {"clock": 0},
        {"clock": 1.5},
        {"max_buckets": 1},
        {"min_window_length": -1},
        {"grace_period": -1},
        {"min_effect": -0.1},
        {"min_effect": math.inf},
        {"clip": (1.0, 0.0)},
        {"clip": (0.0, math.inf)},
        {"clip": (math.nan, 1.0)},
        {"clip": "ab"},
        {"clip": 3.0},
    ],
)
def test_invalid_settings(kw):
    with pytest.raises(DetectorError):
        ADWIN(**kw)


# -- protocol figures -------------------------------------------------------
def test_protocol_figures():
    assert registered_detectors()["adwin"] is ADWIN
    det = ADWIN()
    assert det.kind == "adwin" and det.input_kind == "numeric"
    assert det.statistic == 0.0 and det.threshold == 1.0 and det.p_value is None
    assert not det.drift_detected and det.n_alarms == 0
    summary = det.summary()
    assert summary["alarms"] == 0 and summary["drift"] is False


def test_statistic_crosses_one_exactly_at_detections():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 1, 600), rng.normal(1.5, 1, 600)])
    det = ADWIN(clock=1)
    checks = 0
    for i, v in enumerate(x):
        hit = det.update(np.array([v])).size > 0
        if i >= 11:  # past the grace period every value is tested (clock=1)
            checks += 1
            assert det.statistic >= 1.0 if hit else det.statistic <= 1.0, i
            assert det.score == det.statistic
    assert checks > 0 and det.n_detections >= 1


def test_min_effect_suppresses_small_changes():
    rng = np.random.default_rng(9)
    x = np.concatenate([rng.normal(0, 1, 2000), rng.normal(1, 1, 2000)])
    assert adwin_detections(x, 0.002).size >= 1
    assert adwin_detections(x, 0.002, min_effect=0.0).tolist() == river_run(x)[0]
    assert adwin_detections(x, 0.002, min_effect=3.0).size == 0
    det = ADWIN(min_effect=3.0)
    det.update(x)
    assert det.n_detections == 0 and det.statistic <= 1.0


# -- statistics and resources -------------------------------------------------
def test_detects_one_sigma_shift_quickly():
    hits = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        x = np.concatenate([rng.normal(0, 1, 2000), rng.normal(1, 1, 1000)])
        pos = adwin_detections(x, delta=0.002)
        hits += bool(np.any((pos >= 2000) & (pos < 2200)))
    assert hits >= 9


def test_state_is_bounded_after_ten_million_values():
    rng = np.random.default_rng(0)
    det = ADWIN()
    sizes = []
    for _ in range(10):
        det.update(rng.normal(0, 1, 1_000_000))
        sizes.append(len(json.dumps(det.to_dict())))
    assert 0 < det.width <= 10_000_000
    # 64 levels x (max_buckets + 1) buckets x 2 floats is the hard cap; in
    # practice ~log2(width) levels are used.
    assert max(sizes) < 20_000
    assert sizes[-1] < 2 * sizes[0]


def test_throughput_smoke():
    """Guards against the kernel silently falling back to slow code (not a benchmark)."""
    x = np.random.default_rng(1).normal(0, 1, 1_000_000)
    det = ADWIN()
    det.update(x[:10_000])  # JIT / cache load
    t0 = time.perf_counter()
    for i in range(0, len(x), 10_000):
        det.update(x[i : i + 10_000])
    rate = len(x) / (time.perf_counter() - t0)
    assert rate > 2e6, f"{rate:.3g} values/s"


def test_hold_keeps_the_alarm_for_a_window_of_values_whatever_the_batching():
    """With hold=H the alarm state lasts exactly H valid values after a detection."""
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.normal(0, 1, 4000), rng.normal(1.5, 1, 3000)])
    x[rng.random(x.size) < 0.01] = np.nan  # skipped values do not count towards the hold
    hold = 500
    whole = ADWIN(hold=hold)
    pos = whole.update(x)
    assert pos.size >= 1
    first = int(pos[0])
    valid_after = np.cumsum(np.isfinite(x[first + 1:]))
    for cut in (1, 7, 333):
        det = ADWIN(hold=hold)
        states = []
        for i in range(0, x.size, cut):
            det.update(x[i:i + cut])
            states.append((min(i + cut, x.size) - 1, det.drift_detected, det.score))
        for end, active, score in states:
            if end <= first or det.n_alarms > 1 and end > first + 2 * hold:
                continue
            n_after = int(valid_after[end - first - 1]) if end > first else 0
            if end >= first and n_after < hold and end < (pos[1] if pos.size > 1 else x.size):
                assert active and score >= 1.0, (cut, end, n_after)
            elif pos.size == 1 and n_after >= hold:
                assert not active, (cut, end, n_after)
        restored = Detector.from_dict(json.loads(json.dumps(det.to_dict())))
        assert restored.drift_detected == det.drift_detected
        assert restored.statistic == det.statistic
