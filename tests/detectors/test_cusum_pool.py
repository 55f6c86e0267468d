"""The pool member's merge (detectors/cusum_pool.py): whatever monitor published which
message, in whatever order the records arrive and however often, the pooled CUSUM is one
CUSUM over the stream in position order (each position's first copy), bit for bit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.cusum import CUSUM
from detectors.cusum_merge import standardise
from detectors.cusum_pool import PooledCUSUM, PoolMerge, pooled_cusum

COLS = ("a", "b")


def _column_cusum(h: float = 4.0) -> CUSUM:
    det = CUSUM(mean=1.5, scale=2.0, threshold=h, clip=(-4.0, 7.0), name="x", min_effect=0.05)
    det.configure_episodes(0.5, 20)
    return det


def _messages(rng: np.random.Generator, n: int, shift_at: int) -> list[dict[str, np.ndarray]]:
    """Per message (position), per column: its standardised values (0 to 3 of them)."""
    base = _column_cusum()
    out = []
    for p in range(n):
        msg = {}
        for c in COLS:
            k = int(rng.integers(0, 4))
            x = rng.normal(1.5 + (1.6 if p >= shift_at else 0.0), 2.0, k)
            x[rng.random(k) < 0.1] = np.nan  # a missing value: no step
            msg[c] = standardise(x, base.mean, base.scale, base.clip)
        out.append(msg)
    return out


def _record(msgs: list[dict[str, np.ndarray]], positions: list[int], alt: bool = False,
            ) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
    cov = np.asarray(positions, dtype=np.int64)
    values = {}
    for c in COLS:
        pos = [p for p in positions for _ in range(msgs[p][c].size)]
        z = [v + (0.5 if alt else 0.0) for p in positions for v in msgs[p][c].tolist()]
        values[c] = (np.asarray(pos, dtype=np.int64), np.asarray(z, dtype=np.float64))
    return cov, values


def _pool(frontier: int = 0, max_pending: int = 10**6) -> PoolMerge:
    return PoolMerge({c: pooled_cusum(_column_cusum()) for c in COLS}, frontier, max_pending)


def _reference(order: list[tuple[np.ndarray, dict[str, Any]]], n: int,
               ) -> dict[str, tuple[CUSUM, list[int]]]:
    """One CUSUM per column over each position's first copy, in position order."""
    first: dict[int, dict[str, np.ndarray]] = {}
    for cov, values in order:
        for p in cov.tolist():
            if p not in first:
                first[p] = {c: values[c][1][values[c][0] == p] for c in COLS}
    out = {}
    for c in COLS:
        z = np.concatenate([first[p][c] for p in range(n) if p in first] or [np.empty(0)])
        at = np.concatenate([np.full(first[p][c].size, p) for p in range(n) if p in first]
                            or [np.empty(0, dtype=np.int64)])
        det = pooled_cusum(_column_cusum())
        hits = det.update(z)
        out[c] = (det, at[hits].astype(int).tolist())
    return out


def _same_state(a: CUSUM, b: CUSUM) -> bool:
    return (a._f.tobytes() == b._f.tobytes() and a._i.tobytes() == b._i.tobytes()
            and a._hf.tobytes() == b._hf.tobytes() and a._hi.tobytes() == b._hi.tobytes())


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(5, 120), st.data())
def test_any_interleaving_and_duplicates_give_one_cusum_over_the_merged_stream(
        seed: int, monitors: int, n: int, data: Any) -> None:
    rng = np.random.default_rng(seed)
    msgs = _messages(rng, n, shift_at=n // 3)
    owner = rng.integers(0, monitors, n)
    records = []
    for m in range(monitors):
        mine = np.flatnonzero(owner == m).tolist()
        cuts = sorted(set(rng.integers(0, len(mine) + 1, int(rng.integers(0, 6))).tolist()))
        for a, b in zip([0, *cuts], [*cuts, len(mine)], strict=True):
            if b > a:
                records.append(_record(msgs, mine[a:b]))
    # republished records (a monitor restarted), and positions forwarded again by the first
    # stage with other content (a later copy: never folded)
    dups = data.draw(st.lists(st.integers(0, len(records) - 1), max_size=4)) if records else []
    records += [records[i] for i in dups]
    if data.draw(st.booleans()):
        records.append(_record(msgs, rng.choice(n, min(n, 5), replace=False).tolist(), True))
    order = data.draw(st.permutations(range(len(records))))
    arrivals = [records[i] for i in order]
    pool = _pool()
    alarms: dict[str, list[int]] = {c: [] for c in COLS}
    for cov, values in arrivals:
        pool.add(cov, values)
        pool.advance()
        for a in pool.alarms:
            alarms[a.column].append(a.position)
    assert pool.frontier == n and pool.pending == 0 and pool.skipped == 0
    ref = _reference(arrivals, n)
    for c in COLS:
        det, hits = ref[c]
        assert _same_state(pool.columns[c], det), c
        assert alarms[c] == hits
    ALARMED.append(bool(hits))


ALARMED: list[bool] = []


def test_the_interleaving_property_saw_alarms() -> None:
    """(after the property above) its drift raised alarms in many examples: the equality
    is not only that of sums at rest"""
    if not ALARMED:
        pytest.skip("run with the property test")
    assert sum(ALARMED) >= len(ALARMED) // 4, (sum(ALARMED), len(ALARMED))


def test_the_pooled_cusum_steps_as_the_column_cusum_on_raw_values() -> None:
    """mean 0, scale 1, no clip: the kernel adds exactly the standardised value."""
    rng = np.random.default_rng(5)
    col = _column_cusum(6.0)
    pooled = pooled_cusum(col)
    for _ in range(20):
        x = rng.normal(2.5, 2.5, int(rng.integers(0, 300)))
        x[rng.random(x.size) < 0.05] = np.nan
        x[rng.random(x.size) < 0.01] = np.inf
        hc = col.update(x)
        z = standardise(x, col.mean, col.scale, col.clip)
        hp = pooled.update(z)
        valid = np.flatnonzero(np.isfinite(x))
        assert valid[hp].tolist() == hc.tolist()
        assert _same_state(col, pooled)
    assert col._n_alarms > 0 and col.close_positions is not None


def test_restart_from_the_state_and_the_resume_offset_gives_the_same_result() -> None:
    rng = np.random.default_rng(11)
    n = 600
    msgs = _messages(rng, n, 200)
    owner = rng.integers(0, 3, n)
    records = []
    for m in range(3):
        mine = np.flatnonzero(owner == m).tolist()
        records += [_record(msgs, mine[i:i + 9]) for i in range(0, len(mine), 9)]
    # arrival: the monitors' records interleaved roughly by position
    records.sort(key=lambda r: int(r[0][-1]) + int(rng.integers(0, 40)))
    whole = _pool()
    for off, (cov, values) in enumerate(records):
        whole.add(cov, values, off)
        whole.advance()
    cut = len(records) // 2
    first = _pool()
    for off, (cov, values) in enumerate(records[:cut]):
        first.add(cov, values, off)
        first.advance()
    state, resume = first.state(), first.resume_offset()
    assert resume is not None and resume < cut  # out-of-order records still held
    again = PoolMerge.from_state(state, {c: pooled_cusum(_column_cusum()) for c in COLS})
    for off in range(resume, len(records)):
        cov, values = records[off]
        again.add(cov, values, off)
        again.advance()
    assert again.frontier == whole.frontier == n
    assert again.duplicates > 0  # read again from the resume offset: dropped by position
    for c in COLS:
        assert _same_state(again.columns[c], whole.columns[c])
        assert isinstance(again.columns[c], PooledCUSUM)


def test_a_gap_is_waited_for_then_skipped_past_the_bound() -> None:
    pool = _pool(max_pending=50)
    z = {c: (np.arange(1, 41), np.zeros(40)) for c in COLS}
    pool.add(np.arange(1, 41), z)  # position 0 missing
    assert pool.advance() == 0 and pool.frontier == 0 and pool.pending == 40
    pool.add(np.arange(41, 61), {c: (np.arange(41, 61), np.zeros(20)) for c in COLS})
    assert pool.advance() == 60 and pool.frontier == 61 and pool.skipped == 1
    assert pool.folded == 60
    pool.add(np.array([0, 61]), {c: (np.array([0, 61]), np.array([9.0, 0.0])) for c in COLS})
    pool.advance()  # position 0 came too late: dropped with its value
    assert pool.frontier == 62 and pool.duplicates == 1
    assert pool.columns["a"].statistic == 0.0


def test_settings_changed_since_the_state_start_fresh() -> None:
    pool = _pool()
    pool.add(np.arange(10), {c: (np.arange(10), np.full(10, 3.0)) for c in COLS})
    pool.advance()
    assert pool.columns["a"].statistic > 0
    other = {c: pooled_cusum(_column_cusum(h=9.0)) for c in COLS}
    again = PoolMerge.from_state(pool.state(), other)
    assert again.frontier == 10 and again.columns["a"].statistic == 0.0
    same = PoolMerge.from_state(pool.state(), {c: pooled_cusum(_column_cusum()) for c in COLS})
    assert same.columns["a"].statistic == pool.columns["a"].statistic


def test_values_and_positions_must_pair() -> None:
    with pytest.raises(ValueError):
        _pool().add(np.arange(3), {"a": (np.arange(3), np.zeros(2))})


def test_a_pool_without_a_frontier_starts_at_the_first_position_it_takes() -> None:
    pool = _pool()
    pool = PoolMerge(pool.columns, None)
    pool.add(np.arange(500, 510), {c: (np.arange(500, 510), np.zeros(10)) for c in COLS})
    assert pool.advance() == 10 and pool.frontier == 510
    assert PoolMerge.from_state(PoolMerge(pool.columns, None).state(), pool.columns).started \
        is False
