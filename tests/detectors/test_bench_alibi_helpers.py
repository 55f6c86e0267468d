"""The pure helpers of ``bench/bench_alibi.py`` (the benchmark itself needs Alibi Detect's
own venv and is not run by the suite)."""

from __future__ import annotations

import numpy as np

from bench.bench_alibi import (
    AFTER,
    CHANGE,
    change_stream,
    first_alarm_delays,
    per_seed,
    pooled_arl0,
)


def test_first_alarm_delays_splits_early_missed_and_delays() -> None:
    got = first_alarm_delays([CHANGE - 1, CHANGE, CHANGE + 30, None, CHANGE + 10])
    assert got["early"] == 1 and got["missed"] == 1
    assert got["delays"] == [0, 30, 10] and got["median"] == 10.0
    assert first_alarm_delays([None])["median"] is None


def test_pooled_arl0_is_events_per_alarm() -> None:
    rows = [{"null_events": 5_000, "null_alarms": 4}, {"null_events": 5_000, "null_alarms": 6}]
    assert pooled_arl0(rows) == (1_000.0, 10, 10_000)  # type: ignore[arg-type]
    assert pooled_arl0([{"null_events": 100, "null_alarms": 0}])[0] == 100.0  # type: ignore[list-item]


def test_change_streams_are_reproducible_and_change_where_said() -> None:
    a = change_stream("mv", 1, "shift", 3)
    assert a.shape == (CHANGE + AFTER, 20)
    assert np.array_equal(a, change_stream("mv", 1, "shift", 3))
    assert abs(a[CHANGE:, 10:].mean() - 0.3) < 0.05 and abs(a[:CHANGE, 10:].mean()) < 0.05


def test_per_seed_rows_give_each_seed_its_own_median_and_ratio() -> None:
    al = {"mmd": [{"seed": s, "null_events": 5_000, "null_alarms": 5,
                   "first": {f"shift{r}": CHANGE + 10 * s + r for r in range(3)}}
                  for s in (1, 2)]}
    ours = [{"family": "mv", "seed": s, "window": 100, "cadence": 10, "n_ref": 10_000,
             "null_events": 1_000, "null_alarms": 2, "shift": [CHANGE + 9, CHANGE - 1, None]}
            for s in (1, 2)]
    rows = per_seed(al, ours, "mv", "shift", [1, 2], ((100, 10, 10_000),), 1_000)  # type: ignore[arg-type]
    assert rows[-2] == "| 1 | 1,000 / 11 / 3 | 500 / 9 / 1 | 0.82 |"
    assert rows[-1] == "| 2 | 1,000 / 21 / 3 | 500 / 9 / 1 | 0.43 |"
