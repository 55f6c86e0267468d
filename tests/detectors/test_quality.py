"""Model-level data quality (detectors.quality): incomplete events, one common cause.

The statistics are tested as statistics: the closed-form threshold against the exact
binomial tail and against simulated null streams at the reference's rate; the power on
a broken producer; and the common-cause split in ModelMonitor (one model-level alarm,
no column alarm, the columns' counts untouched by the incomplete events).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from detectors.base import Detector
from detectors.model import ColumnSpec, DetectionSettings, ModelBaseline, ModelMonitor
from detectors.quality import (
    INCOMPLETE_MIN_EFFECT,
    CompletenessMonitor,
    IncompleteRate,
    count_incomplete,
    incomplete_min_columns,
    incomplete_threshold,
    reference_incomplete,
)

NAMES = [f"x{i}" for i in range(7)] + ["c", "score"]
SPECS = [ColumnSpec(n, "categorical" if n == "c" else "numeric",
                    "prediction" if n == "score" else "feature") for n in NAMES]
SETTINGS = DetectionSettings(false_alarm_events=100_000, window=200, cadence=20,
                             calibration_values=200_000)


def clean(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    data: dict[str, np.ndarray] = {n_: rng.normal(size=n) for n_ in NAMES if n_ != "c"}
    data["c"] = np.array(["a", "b", "c"], dtype=object)[rng.choice(3, n)]
    return data


@pytest.fixture(scope="module")
def baseline() -> ModelBaseline:
    rng = np.random.default_rng(1)
    data = clean(rng, 5_000)
    data["x0"][rng.random(5_000) < 0.01] = np.nan  # missing, but never most columns at once
    base = ModelBaseline.build("m", data, SPECS, SETTINGS)
    base.meta.update({"reference_events": 5_000, "incomplete_events": 0})
    return base


def batch_masks(data: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    missing = {k: (np.isnan(v) if v.dtype.kind == "f" else np.equal(v, None).astype(bool))
               for k, v in data.items()}
    return {k: np.zeros(v.shape[0], bool) for k, v in data.items()}, missing


def single_field(data: dict[str, np.ndarray], rows: np.ndarray) -> None:
    """Events at ``rows`` carry only x0 (8 of 9 columns gone)."""
    for name, values in data.items():
        if name != "x0":
            values[rows] = None if values.dtype == object else np.nan


def test_min_columns_and_reference_counts() -> None:
    assert [incomplete_min_columns(n) for n in (0, 1, 2, 3, 4, 5, 9, 20)] == \
        [None, None, 2, 2, 2, 3, 5, 10]
    data = {"a": np.array([1.0, np.nan, np.nan, np.nan]),
            "b": np.array([np.nan, np.nan, 2.0, np.nan]),
            "c": np.array(["u", None, None, "v"], dtype=object),
            "d": np.array([1.0, 2.0, 3.0, np.nan])}
    # events 1 (a, b, c gone), 2 (a, c) and 3 (a, b, d) lack at least 2 of 4
    assert count_incomplete(data, ["a", "b", "c", "d"]) == (4, 3)
    assert count_incomplete(data, ["a"]) == (4, 0)


def test_reference_bound_without_meta(baseline: ModelBaseline) -> None:
    # exact from the builder's meta; else an upper bound from the profiles' gaps
    assert reference_incomplete(baseline.profiles, baseline.meta, NAMES) == (5_000, 0)
    events, bound = reference_incomplete(baseline.profiles, {}, NAMES)
    gaps = int(baseline.profiles["x0"].n_missing)
    assert events == 5_000 and bound == gaps // 5 and 0 < gaps


@pytest.mark.parametrize(("events", "incomplete"), [(5_000, 0), (20_000, 60), (2_000, 40)])
@pytest.mark.parametrize(("window", "cadence", "target"),
                         [(200, 20, 1e5), (1000, 50, 1e7), (500, 50, 1e6)])
def test_threshold_keeps_the_exceedance_rate_within_the_share(
        events: int, incomplete: int, window: int, cadence: int, target: float) -> None:
    thr = incomplete_threshold(events, incomplete, window, cadence, target)
    k = int(np.floor(thr * window)) + 1  # the smallest count above the threshold
    assert (k - 0.5) / window == pytest.approx(thr)
    # the posterior's 99 % quantile: exceedances at that rate are rarer than one per
    # target events, and one count fewer would not be
    p = stats.beta.ppf(0.99, incomplete + 0.5, events - incomplete + 0.5)
    assert stats.binom.sf(k - 1, window, p) * target <= cadence
    if k > 1:
        assert stats.binom.sf(k - 2, window, p) * target > cadence
    # ... and at the reference's own rate, with room to spare
    p_hat = incomplete / events
    assert stats.binom.sf(k - 1, window, p_hat) * target <= cadence


def _run(test: IncompleteRate, flags: np.ndarray, batch: int = 5_000) -> int:
    alarms = 0
    for i in range(0, flags.size, batch):
        alarms += int(test.update(flags[i:i + batch]).size)
    return alarms


def test_null_stream_at_the_reference_rate_stays_within_budget() -> None:
    # a reference with incomplete events at 1 %; a null stream at that rate, 1e6 events,
    # with a budget of one false alarm per 2e5 events for this test: at most 5 expected
    rng = np.random.default_rng(7)
    events, incomplete, window, cadence, target = 20_000, 200, 500, 50, 2e5
    thr = incomplete_threshold(events, incomplete, window, cadence, target)
    alarms = 0
    for _ in range(4):
        test = IncompleteRate(incomplete / events, window, cadence, thr, 0.0, events)
        alarms += _run(test, rng.random(250_000) < incomplete / events)
    assert alarms <= 5, alarms


def test_power_on_a_broken_producer() -> None:
    # reference rate 0; 5 % of events incomplete from event 10,000 on: found within two
    # windows, one alarm (the state stays raised while the rate stays up)
    thr = incomplete_threshold(5_000, 0, 1000, 50, 1e7)
    test = IncompleteRate(0.0, 1000, 50, thr, INCOMPLETE_MIN_EFFECT, 5_000)
    rng = np.random.default_rng(3)
    flags = np.concatenate([np.zeros(10_000, bool), rng.random(20_000) < 0.05])
    hits = test.update(flags)
    assert hits.size == 1 and 10_000 < int(hits[0]) < 12_000
    assert test.drift_detected


def test_sparse_incomplete_events_are_counted_not_paged() -> None:
    # 0.1 % incomplete against a reference of none: statistically a change, but below
    # the minimum effect (1 percentage point): counted, never alarmed
    thr = incomplete_threshold(5_000, 0, 200, 20, 1e5)
    q = CompletenessMonitor(IncompleteRate(0.0, 200, 20, thr, INCOMPLETE_MIN_EFFECT, 5_000), 9)
    rng = np.random.default_rng(5)
    n, alarms = 200_000, 0
    gone = rng.random(n) < 0.001
    ok = np.zeros(n, bool)
    masks = {name: (ok if name == "x0" else gone) for name in NAMES}
    for i in range(0, n, 5_000):
        found, _ = q.update(None, {k: v[i:i + 5_000] for k, v in masks.items()}, 5_000)
        alarms += len(found)
    assert alarms == 0 and q.n_incomplete == int(gone.sum()) > 100


def test_one_model_alarm_no_column_alarm_for_a_common_cause(baseline: ModelBaseline) -> None:
    rng = np.random.default_rng(11)
    mon = baseline.monitor(SPECS, SETTINGS)
    # the same columns fed only the complete events: what the columns must see
    ref = baseline.monitor(SPECS, SETTINGS)
    assert mon.quality is not None and mon.quality.min_columns == 5
    alarms, expected = [], []
    n_batches, size = 20, 2_000
    for b in range(n_batches):
        data = clean(rng, size)
        if b >= 10:  # the producer breaks: a quarter of the events carry x0 only
            single_field(data, np.flatnonzero(rng.random(size) < 0.25))
        invalid, missing = batch_masks(data)
        alarms += [(b, a) for a in mon.update(data, invalid, missing)]
        complete = np.flatnonzero(sum(m.astype(int) for m in missing.values()) < 5)
        expected += [(b, a._replace(position=int(complete[a.position])))
                     for a in ref.update({k: v[complete] for k, v in data.items()})]
    model_level = [a for _, a in alarms if a.column == ""]
    assert len(model_level) == 1 and model_level[0].detector == "incomplete"
    assert [ba for ba in alarms if ba[1].column] == expected
    assert not [a for _, a in expected if a.detector == "missing"]
    assert [b for b, a in alarms if a.column == ""] == [10]
    assert mon.quality.active and 4_000 < mon.quality.n_incomplete < 6_000
    assert mon.n_events == n_batches * size
    # the incomplete events never reached the columns: no missing value in x1 at all
    assert mon.columns["x1"].n_missing == 0
    for name in NAMES:
        assert mon.columns[name].summary() == ref.columns[name].summary()


def test_without_the_split_every_column_alarms(baseline: ModelBaseline) -> None:
    # what the split prevents: the same stream fed without missing masks
    rng = np.random.default_rng(11)
    mon = baseline.monitor(SPECS, SETTINGS)
    columns = set()
    for b in range(20):
        data = clean(rng, 2_000)
        if b >= 10:
            single_field(data, np.flatnonzero(rng.random(2_000) < 0.25))
        columns |= {a.column for a in mon.update(data) if a.detector == "missing"}
    assert columns == set(NAMES) - {"x0"}


def test_alarm_positions_are_batch_positions(baseline: ModelBaseline) -> None:
    rng = np.random.default_rng(2)
    mon = baseline.monitor(SPECS, SETTINGS)
    data = clean(rng, 3_000)
    data["x1"][2_000:] += 3.0  # a real drift of one column
    rows = np.arange(0, 3_000, 3)  # and a third of the events incomplete
    single_field(data, rows)
    invalid, missing = batch_masks(data)
    found = mon.update(data, invalid, missing)
    x1 = [a for a in found if a.column == "x1"]
    assert x1 and all(a.position >= 2_000 and a.position % 3 for a in x1)
    assert [a.position for a in found] == sorted(a.position for a in found)


def test_state_round_trip(baseline: ModelBaseline) -> None:
    rng = np.random.default_rng(4)
    mon = baseline.monitor(SPECS, SETTINGS)
    data = clean(rng, 1_000)
    single_field(data, np.arange(0, 1_000, 2))
    mon.update(data, *batch_masks(data))
    again = ModelMonitor.from_dict(mon.to_dict(), baseline)
    assert again.quality is not None and again.quality.n_incomplete == 500
    assert again.quality.to_dict() == mon.quality.to_dict()
    assert isinstance(Detector.from_dict(mon.quality.test.to_dict()), IncompleteRate)
    old = mon.to_dict()
    del old["quality"]  # a checkpoint written before the model-level test
    assert ModelMonitor.from_dict(old, baseline).quality is None
