"""The pure helpers of ``bench/bench_alibi.py`` (the benchmark itself needs Alibi Detect's
own venv and is not run by the suite)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from bench.bench_alibi import (
    AFTER,
    CHANGE,
    change_stream,
    common_prefix,
    extension_runs,
    first_alarm_delays,
    merge_alibi,
    per_seed,
    pooled_arl0,
    read_progress,
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


def test_extension_runs_redo_only_the_missing_runs_and_the_checked_ones() -> None:
    stored = {"first": {f"cluster{r}": CHANGE + r for r in range(4)}}
    runs, checked = extension_runs(stored, ("cluster",), 7, 2)
    assert runs == [0, 1, 4, 5, 6] and checked == ["cluster0", "cluster1"]
    assert extension_runs(stored, ("cluster",), 4, 0) == ([], [])


def _worker_row(first: dict[str, int | None], events: int, alarms: int,
                us: float) -> dict[str, object]:
    return {"detector": "mmd", "seed": 2, "first": first, "null_events": events,
            "null_alarms": alarms, "run_lengths": [events // max(alarms, 1)] * alarms,
            "us_per_event": us, "setup_wall_s": 1.0}


def test_merge_alibi_pools_streams_and_clean_events_and_refuses_a_changed_detector() -> None:
    stored = _worker_row({"cluster0": 510, "cluster1": 40}, 5_000, 10, 100.0)
    new = _worker_row({"cluster0": 510, "cluster2": 530}, 15_000, 30, 200.0)
    got = merge_alibi(stored, new, ["cluster0"])
    assert got["first"] == {"cluster0": 510, "cluster1": 40, "cluster2": 530}
    assert (got["null_events"], got["null_alarms"]) == (20_000, 40)
    assert pooled_arl0([got]) == (500.0, 40, 20_000)
    assert len(got["run_lengths"]) == 40  # type: ignore[arg-type]
    assert got["us_per_event"] == 175.0  # weighted by clean events
    # no new clean events: the stored cost stands (the worker's NaN is not pooled)
    empty = _worker_row({"cluster2": 530}, 0, 0, float("nan"))
    assert merge_alibi(stored, empty, [])["us_per_event"] == 100.0
    changed = _worker_row({"cluster0": 511}, 100, 0, 1.0)
    with pytest.raises(RuntimeError, match="not reproduced"):
        merge_alibi(stored, changed, ["cluster0"])


def test_a_stopped_workers_progress_gives_its_finished_streams() -> None:
    head = json.dumps({"detector": "lsdd", "null_events": 100, "null_alarms": 1})
    got = read_progress([head + "\n", '{"cluster0": 520}\n', '{"cluster1": null}\n',
                         '{"cluster2": 5'])  # the last line was cut by the stop
    assert got is not None and got["partial"] is True
    assert got["first"] == {"cluster0": 520, "cluster1": None}
    assert read_progress([]) is None


def test_partial_mode_reads_the_worker_cache_by_the_workers_own_key(tmp_path, monkeypatch,
                                                                   ) -> None:  # type: ignore[no-untyped-def]
    """--alibi-partial finds what a worker on the same inputs left: the finished result if
    any, else its progress file; nothing -> None."""
    from bench import alibi_worker, bench_alibi

    monkeypatch.setenv("ALIBI_WORKER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bench_alibi, "CHOSEN", {"cluster"})
    args = argparse.Namespace(n_ref=50, alibi_null=20, runs=3, ert=100.0, window=10,
                              bootstraps=30, alibi_partial=True)
    keys: list[str] = []
    real = alibi_worker.cache_path

    def spy(d: str, a: list[str]) -> str | None:
        keys.append(str(real(d, a)))
        return real(d, a)
    monkeypatch.setattr(alibi_worker, "cache_path", spy)
    assert bench_alibi.alibi_job("python", "emb", "lsdd", 2, args, [0, 2]) is None
    head = {"detector": "lsdd", "null_events": 20, "null_alarms": 0, "setup_wall_s": 1.0,
            "us_per_event": 5.0}
    Path(keys[0] + ".progress").write_text(json.dumps(head) + '\n{"cluster0": 530}\n')
    got = bench_alibi.alibi_job("python", "emb", "lsdd", 2, args, [0, 2])
    assert got is not None and got["first"] == {"cluster0": 530} and got["partial"]
    assert got["seed"] == 2 and got["family"] == "emb"
    # other runs are other inputs: another key
    bench_alibi.alibi_job("python", "emb", "lsdd", 2, args, [0, 1])
    assert keys[-1] != keys[0]
    Path(keys[0]).write_text(json.dumps({**head, "first": {"cluster0": 530, "cluster2": 9}}))
    got = bench_alibi.alibi_job("python", "emb", "lsdd", 2, args, [0, 2])
    assert got is not None and "partial" not in got and len(got["first"]) == 2  # type: ignore[arg-type]


def test_common_prefix_is_the_leading_runs_every_detector_has() -> None:
    rows = [{"first": {f"cluster{r}": 0 for r in [*range(5), 7]}},
            {"first": {f"cluster{r}": 0 for r in range(9)}}]
    assert common_prefix(rows, ("cluster",)) == 5  # type: ignore[arg-type]
    assert common_prefix([{"first": {}}], ("cluster",)) == 0  # type: ignore[arg-type]
