"""Property tests: ColumnMonitor survives any input, keeps its counts and bounded state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.model import ColumnSpec, DetectionSettings, ModelBaseline
from tests.detectors.conftest import CATEGORIES, CATEGORY_PROBS

SETTINGS = DetectionSettings(false_alarm_events=5_000, window=200, cadence=20,
                             calibration_values=100_000)
NUM_SPEC = ColumnSpec("num", "numeric")  # ks, adwin, missing, out_of_range
#: the same column without ADWIN, for floats up to ±1.8e308 (see test_adwin_survives_huge_values)
WINDOW_SPEC = ColumnSpec("num", "numeric", detectors=("ks", "missing", "out_of_range"))
CAT_SPEC = ColumnSpec("cat", "categorical")  # chi2, surprisal, missing, unseen
#: JSON size of a column monitor's state can never exceed this, whatever the stream:
#: window rings of (window / cadence) x bins counts, ADWIN's 64 x 6 buckets of 2 floats
STATE_BOUND = 40_000

PROPERTY_SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                             suppress_health_check=[HealthCheck.too_slow,
                                                    HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def baseline() -> ModelBaseline:
    rng = np.random.default_rng(0)
    x = rng.normal(size=3_000)
    x[::50] = np.nan
    c = CATEGORIES[rng.choice(8, 3_000, p=CATEGORY_PROBS)]
    c[::40] = None
    c[7] = "rare"
    return ModelBaseline.build("m", {"num": x, "cat": c}, [NUM_SPEC, CAT_SPEC], SETTINGS)


# -- strategies -------------------------------------------------------------
special_floats = st.one_of(
    st.floats(),  # any float: NaN, ±inf, subnormals, ±1.8e308
    st.sampled_from([np.nan, np.inf, -np.inf, 1e308, -1e308, 5e-324, 0.0, -0.0]),
    st.floats(-5, 5),
)
#: finite values whose squares cannot overflow, and the non-finite ones
moderate_floats = st.one_of(
    st.floats(-1e100, 1e100),
    st.sampled_from([np.nan, np.inf, -np.inf, 1e100, -1e100, 5e-324, 0.0, -0.0]),
    st.floats(-5, 5),
)


@st.composite
def numeric_batch(draw, floats=special_floats) -> np.ndarray:
    """Small batches of arbitrary floats, or big ones mixing a palette into normal noise."""
    if draw(st.booleans()):
        return np.array(draw(st.lists(floats, max_size=300)), dtype=np.float64)
    n = draw(st.sampled_from([0, 1, 999, 5_000, 50_000]))
    palette = np.array(draw(st.lists(floats, min_size=1, max_size=6)))
    share = draw(st.floats(0, 1))
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    x = rng.normal(draw(st.floats(-3, 3)), draw(st.floats(0.1, 10)), n)
    pick = rng.random(n) < share
    x[pick] = rng.choice(palette, int(pick.sum()))
    return x


text_values = st.one_of(st.none(), st.text(max_size=8), st.sampled_from(list(CATEGORIES)))


@st.composite
def categorical_batch(draw) -> np.ndarray:
    if draw(st.booleans()):
        return np.array(draw(st.lists(text_values, max_size=300)), dtype=object)
    n = draw(st.sampled_from([0, 1, 999, 5_000, 50_000]))
    palette = draw(st.lists(text_values, min_size=1, max_size=10))
    share = draw(st.floats(0, 1))
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    out = CATEGORIES[rng.choice(8, n, p=CATEGORY_PROBS)].copy()
    pick = np.flatnonzero(rng.random(n) < share)
    pal = np.empty(len(palette), dtype=object)
    pal[:] = palette
    out[pick] = pal[rng.integers(0, len(palette), pick.size)]
    return out


def masks(n: int, draw) -> np.ndarray | None:
    if not n or not draw(st.booleans()):
        return None
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    return rng.random(n) < draw(st.floats(0, 1))


# -- checks -----------------------------------------------------------------
def check_monitor(mon, fed: int) -> None:
    assert mon.n_values + mon.n_missing + mon.n_invalid == fed
    assert min(mon.n_values, mon.n_missing, mon.n_invalid) >= 0
    summary = mon.summary()
    json.dumps(summary, allow_nan=False)  # every figure is finite
    for det in mon.detectors.values():
        assert math.isfinite(det.statistic) and math.isfinite(det.score)
        assert det.p_value is None or 0.0 <= det.p_value <= 1.0
    for v in (*mon.ratios().values(), *mon.distances().values()):
        assert math.isfinite(v) and v >= 0
    assert all(0.0 <= v <= 1.0 for v in mon.ratios().values())
    state = json.dumps(mon.to_dict(), allow_nan=False)
    assert len(state) < STATE_BOUND


@PROPERTY_SETTINGS
@given(data=st.data())
@pytest.mark.parametrize("spec, floats", [(WINDOW_SPEC, special_floats),
                                          (NUM_SPEC, moderate_floats)], ids=["any", "adwin"])
def test_numeric_column_never_breaks(baseline, spec, floats, data):
    mon = baseline.monitor([spec], SETTINGS).columns["num"]
    fed = 0
    for _ in range(data.draw(st.integers(1, 4))):
        x = data.draw(numeric_batch(floats))
        alarms = mon.update(x, masks(x.size, data.draw))
        assert all(0 <= a.position < x.size for a in alarms)
        assert all(math.isfinite(a.statistic) for a in alarms)
        fed += x.size
        check_monitor(mon, fed)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_categorical_column_never_breaks(baseline, data):
    mon = baseline.monitor([CAT_SPEC], SETTINGS).columns["cat"]
    fed = 0
    for _ in range(data.draw(st.integers(1, 4))):
        c = data.draw(categorical_batch())
        alarms = mon.update(c, masks(c.size, data.draw))
        assert all(0 <= a.position < c.size for a in alarms)
        fed += c.size
        check_monitor(mon, fed)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(values=st.lists(special_floats, max_size=50))
def test_float_batches_are_a_type_error_for_categorical_columns(baseline, values):
    mon = baseline.monitor([CAT_SPEC], SETTINGS).columns["cat"]
    arr = np.array(values, dtype=np.float64)
    if arr.size == 0:
        assert mon.update(arr) == []
        return
    with pytest.raises(TypeError, match="^cat: "):
        mon.update(arr)
    assert mon.n_values + mon.n_missing + mon.n_invalid == 0


@settings(max_examples=30, deadline=None, derandomize=True)
@given(values=st.lists(st.one_of(st.text(min_size=1), st.none()), min_size=1, max_size=50))
def test_text_batches_are_a_type_error_for_numeric_columns(baseline, values):
    mon = baseline.monitor([NUM_SPEC], SETTINGS).columns["num"]
    with pytest.raises(TypeError, match="^num: "):
        mon.update(np.array(values, dtype=object))
    assert mon.n_values + mon.n_missing + mon.n_invalid == 0
    check_monitor(mon, 0)


@pytest.mark.parametrize("column", ["num", "cat"])
def test_state_size_does_not_grow_with_the_stream(baseline, column):
    spec = NUM_SPEC if column == "num" else CAT_SPEC
    mon = baseline.monitor([spec], SETTINGS).columns[column]
    rng = np.random.default_rng(1)
    sizes = []
    for i in range(40):
        n = 25_000
        if column == "num":
            batch = rng.standard_t(2, n) * (1 + i % 5)
            batch[rng.random(n) < 0.05] = np.nan
        else:
            batch = CATEGORIES[rng.choice(8, n, p=CATEGORY_PROBS)].copy()
            batch[rng.random(n) < 0.05] = [f"u{k}" for k in rng.integers(0, 10**9, 1)][0]
        mon.update(batch)
        sizes.append(len(json.dumps(mon.to_dict(), allow_nan=False)))
    assert mon.n_values + mon.n_missing + mon.n_invalid == 40 * 25_000
    assert max(sizes) < STATE_BOUND
    assert max(sizes[20:]) <= 1.2 * max(sizes[:20])  # 1M values in: no trend


def test_adwin_survives_huge_values(baseline):
    mon = baseline.monitor([NUM_SPEC], SETTINGS).columns["num"]
    rng = np.random.default_rng(2)
    mon.update(np.array([1e200, -1e200, 1e308]))
    json.dumps(mon.to_dict(), allow_nan=False)
    alarms = mon.update(np.concatenate([rng.normal(size=5_000), rng.normal(5, 1, 5_000)]))
    assert "adwin" in {a.detector for a in alarms}
