"""Categorical columns given as codes into a table (``CodedColumn``): the same monitors'
results as the object column alone.

The scanner (``stream.formats.scan``) hands the monitors each categorical column twice:
the object array of strings and, bound to it, the row codes into the batch's table of
distinct strings.  The monitors then look each table entry up once instead of each value.
These tests feed two monitors of the same baseline the same random batches, one with the
codes and one without, and require every alarm, close, counter, summary and exported
state to be equal after every batch: known, unseen and missing values, invalid masks,
incomplete events (the quality monitor's path), tables with duplicate and unused entries.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.column import CodedColumn
from detectors.model import ColumnSpec, DetectionSettings, ModelBaseline, ModelMonitor
from tests.detectors.conftest import CATEGORIES, CATEGORY_PROBS

SETTINGS = DetectionSettings(false_alarm_events=20_000, window=200, cadence=20,
                             calibration_values=200_000)
SPECS = [ColumnSpec("x", "numeric"), ColumnSpec("c", "categorical"),
         ColumnSpec("d", "categorical", role="prediction")]
#: the reference's categories, then values it never saw
VALUES = np.array([*CATEGORIES.tolist(), "new", "zz", "é", ""], dtype=object)


@pytest.fixture(scope="module")
def baseline() -> ModelBaseline:
    rng = np.random.default_rng(0)
    n = 5_000
    x = rng.normal(size=n)
    c = CATEGORIES[rng.choice(8, n, p=CATEGORY_PROBS)]
    c[rng.random(n) < 0.02] = None
    d = CATEGORIES[rng.choice(3, n)]
    return ModelBaseline.build("m", {"x": x, "c": c, "d": d}, SPECS, SETTINGS)


def coded_batch(rng: np.random.Generator, n: int, probs: np.ndarray, p_missing: float,
                duplicates: bool) -> tuple[np.ndarray, CodedColumn]:
    """Values drawn with ``probs`` over VALUES (None with ``p_missing``), and their codes
    into a shuffled table of entries (None last, as the scanner builds it; with
    ``duplicates``, some values twice and some entries unused)."""
    picks = rng.choice(VALUES.size, n, p=probs)
    missing = rng.random(n) < p_missing
    entries = rng.permutation(VALUES.size)
    if duplicates:
        entries = np.concatenate([entries, rng.choice(VALUES.size, 3)])
    table = np.empty(entries.size + 1, dtype=object)
    table[:-1] = VALUES[entries]
    # the code of a value: one of its entries in the table
    where: dict[int, list[int]] = {}
    for k, v in enumerate(entries.tolist()):
        where.setdefault(v, []).append(k)
    codes = np.array([rng.choice(where[int(p)]) for p in picks], dtype=np.int32)
    codes[missing] = -1
    values = table[codes]
    return values, CodedColumn(values, codes, table)


def feed(a: ModelMonitor, b: ModelMonitor, columns: dict[str, Any],
         coded: dict[str, CodedColumn], invalid: dict[str, np.ndarray] | None,
         missing: dict[str, np.ndarray] | None) -> list[Any]:
    """Feed the batch to ``a`` with the codes and to ``b`` without; both must agree."""
    got = a.update(columns, invalid, missing, coded)
    want = b.update(columns, invalid, missing)
    assert got == want
    assert a.closes == b.closes
    assert a.summary() == b.summary()
    assert a.to_dict() == b.to_dict()
    for name, mon in a.columns.items():
        other = b.columns[name]
        assert mon.last_shift == other.last_shift
        np.testing.assert_array_equal(mon.last_codes, other.last_codes)
    return got


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), sizes=st.lists(st.integers(0, 700), min_size=1,
                                                        max_size=6),
       p_unseen=st.sampled_from([0.0, 0.05, 0.5]), p_missing=st.sampled_from([0.0, 0.02, 0.6]),
       p_invalid=st.sampled_from([0.0, 0.01]), with_masks=st.booleans(),
       duplicates=st.booleans())
def test_codes_give_the_object_columns_results(baseline: ModelBaseline, seed: int,
                                               sizes: list[int], p_unseen: float,
                                               p_missing: float, p_invalid: float,
                                               with_masks: bool, duplicates: bool) -> None:
    rng = np.random.default_rng(seed)
    a, b = baseline.monitor(SPECS, SETTINGS), baseline.monitor(SPECS, SETTINGS)
    known = np.concatenate([CATEGORY_PROBS * (1 - p_unseen), np.full(4, p_unseen / 4)])
    for step, n in enumerate(sizes):
        # drift after the first batch: the chi-square and surprisal tests get to alarm
        probs = known if step == 0 else np.roll(known, step)
        c, c_coded = coded_batch(rng, n, probs, p_missing, duplicates)
        d, d_coded = coded_batch(rng, n, probs, p_missing / 2, duplicates)
        x = rng.normal(size=n)
        x[rng.random(n) < p_missing] = np.nan
        columns = {"x": x, "c": c, "d": d}
        invalid = None
        missing = None
        if with_masks:
            invalid = {k: rng.random(n) < p_invalid for k in columns}
            for k in ("c", "d"):  # an invalid value is None in the column, as decoded
                columns[k][invalid[k]] = None
            missing = {k: np.asarray(np.equal(v, None) | (v != v), dtype=bool) & ~invalid[k]
                       for k, v in columns.items()}
        feed(a, b, columns, {"c": c_coded, "d": d_coded}, invalid, missing)


def test_incomplete_events_keep_the_codes_of_the_complete_ones(baseline: ModelBaseline) -> None:
    """The quality monitor takes incomplete events out; the codes follow the values."""
    rng = np.random.default_rng(5)
    a, b = baseline.monitor(SPECS, SETTINGS), baseline.monitor(SPECS, SETTINGS)
    assert a.quality is not None
    alarms = []
    for step in range(8):
        n = 1_000
        probs = np.concatenate([CATEGORY_PROBS, np.zeros(4)]) if step < 4 else \
            np.full(VALUES.size, 1 / VALUES.size)
        c, c_coded = coded_batch(rng, n, probs, 0.05, True)
        d, d_coded = coded_batch(rng, n, probs, 0.0, False)
        x = rng.normal(size=n)
        incomplete = rng.random(n) < (0.02 if step < 4 else 0.4)
        x[incomplete] = np.nan
        d[incomplete] = None  # d is a view of nothing: set both the values and the codes
        d_coded.codes[incomplete] = -1
        columns = {"x": x, "c": c, "d": d}
        missing = {k: np.asarray(np.equal(v, None) | (v != v), dtype=bool)
                   for k, v in columns.items()}
        invalid = {k: np.zeros(n, dtype=bool) for k in columns}
        alarms += feed(a, b, columns, {"c": c_coded, "d": d_coded}, invalid, missing)
    assert {al.detector for al in alarms if al.column == "c"} & {"chi2", "unseen"}
    assert any(al.column == "" for al in alarms), "the incomplete events raise the model test"


def test_codes_of_other_values_are_not_used(baseline: ModelBaseline) -> None:
    """Codes bound to another array (a copy, a slice) are ignored: the values decide."""
    rng = np.random.default_rng(9)
    a, b = baseline.monitor(SPECS, SETTINGS), baseline.monitor(SPECS, SETTINGS)
    probs = np.concatenate([CATEGORY_PROBS, np.zeros(4)])
    c, _ = coded_batch(rng, 500, probs, 0.1, False)
    _, wrong = coded_batch(rng, 500, np.full(VALUES.size, 1 / VALUES.size), 0.5, False)
    d, d_coded = coded_batch(rng, 500, probs, 0.0, False)
    columns = {"x": rng.normal(size=500), "c": c, "d": d}
    # the codes of other values, and codes bound to a copy of d's values
    feed(a, b, columns, {"c": wrong, "d": d_coded._replace(values=d.copy())}, None, None)
