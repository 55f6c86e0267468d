"""The pooled CUSUM with several writers, without a broker: the version-2 pool records
(stream/runtime/poolkeys.py), what FramedRunner publishes per internal partition, and the
pool member folding them (stream/runtime/pool.py with detectors/cusum_keyed.py)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from detectors.cusum_keyed import KeyedPoolMerge, at_or_below
from stream.config import load_config
from stream.engine.baselines import resolve_baselines
from stream.engine.pipeline import Pipeline
from stream.runtime import poolkeys
from stream.runtime.pooltap import PoolRecordError, PoolValues
from stream.runtime.writermerge import WriterMerge
from tests.stream.test_mergerun import TPX, Clock, _beat, _polls, _runner, _stream
from tests.stream.test_pool import _drain, _member, _same_cusum, _Store
from tests.stream.test_writermerge import FAR, beat, frame
from tests.support.configs import m1_config, write_config
from tests.support.events import CLEAN, COLUMNS, m1_events

TOP = poolkeys.TOP


def test_keyed_records_round_trip_and_refuse_damage() -> None:
    keys = np.array([[1, 10, 0, 3], [1, 11, 1, 0], [1, 11, 1, 1]])
    cols = {("m1", "x1"): PoolValues(np.array([7, 7, 9]), np.array([0.5, -1.0, 2.0]),
                                     np.array([1.0, math.nan, 3.0]))}
    raw = poolkeys.pack(poolkeys.KeyedRecord(3, 1234, 7, keys, (1, 11, 1, 1), cols))
    assert poolkeys.version_of(raw) == 2 and poolkeys.version_of(b"junk") is None
    got = poolkeys.unpack(raw)
    assert (got.partition, got.epoch, got.start, got.promise) == (3, 1234, 7, (1, 11, 1, 1))
    assert got.keys.tolist() == keys.tolist()
    v = got.columns[("m1", "x1")]
    assert v.positions.tolist() == [7, 7, 9] and v.values.tolist() == [0.5, -1.0, 2.0]
    beat_only = poolkeys.unpack(poolkeys.pack(poolkeys.KeyedRecord(
        0, 1, 40, np.empty((0, 4), np.int64), None, {})))
    assert beat_only.promise is None and beat_only.keys.shape == (0, 4)
    for bad in (raw[:-1], raw + b"x", raw[:4] + b"\x01" + raw[5:]):
        with pytest.raises(PoolRecordError):
            poolkeys.unpack(bad)
    outside = poolkeys.pack(poolkeys.KeyedRecord(0, 1, 7, keys, None, {
        ("m1", "x1"): PoolValues(np.array([10]), np.array([0.0]), np.array([0.0]))}))
    with pytest.raises(PoolRecordError, match="outside"):
        poolkeys.unpack(outside)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_merge_releases_nothing_not_late_at_or_below_its_promise(seed: int) -> None:
    """The promise (the frontier, or just below the writers' smallest watermark) holds:
    every message released after it, unless late, has a larger key."""
    rng = np.random.default_rng(seed)
    merge = WriterMerge(clock=Clock())
    clock = [0, 0, 0]
    pos = [0, 0, 0]
    promises: list[Any] = []
    for offset in range(300):
        w = int(rng.integers(0, 3))
        if rng.random() < 0.2:
            clock[w] += int(rng.integers(0, 3))  # (a writer keeps its watermark's promise)
            f = beat(w, 3, clock[w])
        else:
            msgs = []
            for _ in range(int(rng.integers(1, 4))):
                clock[w] += int(rng.integers(0, 3))
                msgs.append((clock[w], pos[w]))
                pos[w] += 1
            f = frame(w, 3, msgs)
        rel = merge.add(offset, f)
        keys = rel.columns[:, :4]
        for p in promises:  # released later than each promise: above it, or late
            below = at_or_below(keys, p) & ~rel.late
            assert not below.any(), (p, keys[below])
        promise = poolkeys.promise_of(merge)
        if promise is not None:
            promises.append(promise)
    assert promises and promises[-1] > promises[0]


class _Outbox:
    def __init__(self) -> None:
        self.records: list[bytes] = []

    def add(self, record: bytes) -> None:
        self.records.append(record)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_monitors_publish_each_partition_s_sequence_densely_with_keys_and_promises(
        monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    recs, total = _stream(seed)
    runner = _runner(monkeypatch, {})
    runner.pool_out = _Outbox()  # type: ignore[assignment]
    for batch in _polls(recs):
        runner._process({TPX: batch})
    out = runner.pool_out.records  # type: ignore[union-attr]
    n = len(out)
    # heartbeats: one that moves nothing publishes nothing, one that moves the promise
    # (the smallest watermark) publishes a record of no message
    runner._process({TPX: [_beat(len(recs), 0, 2, FAR + 5)]})
    assert len(out) == n
    runner._process({TPX: [_beat(len(recs) + 1, 1, 2, FAR + 5)]})
    assert len(out) == n + 1
    got = [poolkeys.unpack(r) for r in out]
    assert all(r.partition == TPX.partition and r.epoch > 0 for r in got)
    assert [r.start for r in got] == np.cumsum([0] + [len(r.keys) for r in got])[:-1].tolist()
    keys = np.concatenate([r.keys for r in got])
    assert len(keys) == len(total)
    assert (np.lexsort(keys.T[::-1]) == np.arange(len(keys))).all()  # the total order
    for i, r in enumerate(got):
        later = np.concatenate([x.keys for x in got[i + 1:]] + [np.empty((0, 4), np.int64)])
        assert r.promise is not None and not at_or_below(later, r.promise).any()
    assert len(got[-1].keys) == 0 and got[-1].promise == (FAR + 4, TOP, TOP, TOP)
    pool = KeyedPoolMerge({}, [TPX.partition])
    for r in got:
        pool.add(r.partition, r.epoch, r.start, r.keys, r.promise, {})
        pool.advance()
    assert pool.folded == len(total) and pool.late == pool.forced == 0


# -- the pool member ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed_config(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("poolkeyed")
    (d / "reference.jsonl").write_bytes(b"\n".join(m1_events(77, [(5000, CLEAN)], COLUMNS)))
    data = m1_config(bootstrap="k:9092", topic="t", group="g", port=0)
    data["source"]["repartition"] = {"topic": "t-rp", "partitions": 2, "pooled": True,
                                     "pool_topic": "t-pool", "writers": "several"}
    config = load_config(write_config(d / "c.yaml", data))
    return config, Pipeline(config, resolve_baselines(config))


def _keyed_stream(n: int, seed: int) -> tuple[list[bytes], dict[str, np.ndarray]]:
    """Version-2 records of two internal partitions over ``n`` messages of two writers,
    partition 1 running ahead; returns them and each column's values in key order."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, n // 2, n))
    keys = np.stack([t, np.ones(n, np.int64), np.arange(n) % 2, np.arange(n) // 2], axis=1)
    z = {c: rng.normal(0.0, 1.0, n) + np.where(np.arange(n) > n // 2, 0.6, 0.0)
         for c in ("x1", "x2", "score")}
    part = rng.integers(0, 2, n)
    chunks = []
    for q in (0, 1):
        mine = np.flatnonzero(part == q)
        for a in range(0, mine.size + 1, 40):
            at = mine[a:a + 40]
            nxt = mine[a + 40] if a + 40 < mine.size else None
            promise = (int(t[nxt]) - 1, poolkeys.TOP, poolkeys.TOP, poolkeys.TOP) \
                if nxt is not None else (poolkeys.TOP, 0, 0, 0)
            idx = np.arange(a, a + at.size)
            rec = poolkeys.KeyedRecord(q, 5, a, keys[at], promise, {
                ("m1", c): PoolValues(idx, z[c][at], np.full(at.size, np.nan)) for c in z})
            chunks.append((a + (60 if q == 1 else 0), poolkeys.pack(rec)))
    chunks.sort(key=lambda c: c[0])
    order = np.lexsort(keys.T[::-1])
    return [v for _, v in chunks], {c: v[order] for c, v in z.items()}


def test_a_keyed_member_folds_in_key_order_and_a_successor_resumes(keyed_config: Any) -> None:
    from stream.runtime.pool import pool_columns

    values, z = _keyed_stream(2000, 3)
    store = _Store()
    first, topic = _member(keyed_config, values[:20], store)
    _drain(first, topic)
    assert isinstance(first.merge, KeyedPoolMerge)
    first._checkpoint()
    cp = store.saved[("__pool__", "t-pool", 0)]
    assert cp.state["version"] == 2 and 0 <= cp.offset < 20
    second, topic = _member(keyed_config, values, store, committed=cp.offset)
    _drain(second, topic)
    m = second.merge
    assert isinstance(m, KeyedPoolMerge) and topic.seeks == [cp.offset]
    assert m.pending == 0 and m.late == m.forced == m.skipped == 0 and m.duplicates > 0
    ref = pool_columns(keyed_config[1])
    for c, v in z.items():
        ref[("m1", c)].update(v)
    for key, det in ref.items():
        assert _same_cusum(m.columns[key], det), key
    fig = second.figures()
    assert fig is not None and fig["frontier"] == m.folded
    assert any(a.kind == "open" and a.column == "x1" and a.partition in (0, 1)
               for a in second.alarms)
    # a version-1 record on a pool of several writers does not read: counted
    from stream.runtime.pooltap import pack

    one, topic = _member(keyed_config, [pack(np.arange(3), {})], _Store())
    _drain(one, topic)
    assert one.bad_records == 1


def test_a_keyed_member_defers_its_folds_and_loses_no_alarm_at_a_checkpoint(
        keyed_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """While records keep coming the member folds at most every ``FOLD_EVERY_S``: the
    alarms, closes and CUSUMs are those of a fold after every record, also when the pool
    is taken away while the fold that alarms is deferred (the checkpoint folds first and
    raises it; the successor resumes from that checkpoint)."""
    import stream.runtime.pool as pool

    values, _ = _keyed_stream(2000, 3)
    monkeypatch.setattr(pool, "POLL_RECORDS", 1)  # one record a poll
    monkeypatch.setattr(pool, "FOLD_EVERY_S", 0.0)
    every, topic = _member(keyed_config, values, _Store())
    first_alarm = None
    while topic.position < len(values):
        every._iteration()
        first_alarm = topic.position if first_alarm is None and every.alarms else first_alarm
    every._iteration()
    assert first_alarm is not None

    monkeypatch.setattr(pool, "FOLD_EVERY_S", 1e9)  # only at an empty poll or a checkpoint
    store = _Store()
    deferred, topic = _member(keyed_config, values, store)
    while topic.position < first_alarm:
        deferred._iteration()
    m = deferred.merge
    assert isinstance(m, KeyedPoolMerge) and len(m._steps) >= 3 and not deferred.alarms
    deferred.revoked = True
    deferred._iteration()  # the pool taken away: a checkpoint, then no merge
    assert deferred.merge is None and deferred.alarms  # (raised by the checkpoint's fold)
    cp = store.saved[("__pool__", "t-pool", 0)]
    successor, topic = _member(keyed_config, values, store, committed=cp.offset)
    _drain(successor, topic)

    def seen(alarms: list[Any]) -> list[Any]:
        return [(a.kind, a.column, a.partition, a.position, a.statistic) for a in alarms]

    assert seen(deferred.alarms + successor.alarms) == seen(every.alarms)
    for key, det in every.merge.columns.items():
        assert _same_cusum(successor.merge.columns[key], det), key


def test_a_one_writer_checkpoint_starts_a_keyed_pool_fresh(keyed_config: Any) -> None:
    from stream.runtime.pool import PoolMember, pool_columns

    member = PoolMember(*keyed_config)
    cols = pool_columns(keyed_config[1])
    fresh = member._merge(cols, {"frontier": 10, "columns": []}, 10)
    assert isinstance(fresh, KeyedPoolMerge) and fresh.frontier is None


@pytest.mark.parametrize("seed", [4, 5])
def test_a_restore_republishes_the_same_sequence_with_the_same_epoch_and_keys(
        monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """From any checkpoint, the restored monitors publish again from the checkpoint's
    *delivered* index with its epoch, each index with the key it had: the pool drops them
    as copies, and the pooled stream is the same."""
    from stream.runtime.mergerun import MERGE_KEY

    recs, total = _stream(seed)
    polls = _polls(recs)

    def published(runner: Any) -> dict[int, tuple[int, tuple[int, ...]]]:
        out = {}
        for raw in runner.pool_out.records:
            r = poolkeys.unpack(raw)
            for j, k in enumerate(r.keys.tolist()):
                out.setdefault(r.start + j, (r.epoch, tuple(k)))
        return out

    whole = _runner(monkeypatch, {})
    whole.pool_out = _Outbox()  # type: ignore[assignment]
    for batch in polls:
        whole._process({TPX: batch})
    first = published(whole)
    assert sorted(first) == list(range(len(total)))
    for cut in range(1, len(polls)):
        runner = _runner(monkeypatch, {})
        runner.pool_out = _Outbox()  # type: ignore[assignment]
        for batch in polls[:cut]:
            done, _, _ = runner._process({TPX: batch})
            runner.done.update(done)
        before = published(runner)
        states = runner._export(TPX)
        again = _runner(monkeypatch, {})
        again.pool_out = _Outbox()  # type: ignore[assignment]
        again.merges.restore(TPX, {n: s[MERGE_KEY] for n, s in states.items()})
        rest = [r for r in recs if r.offset >= runner.done[TPX]]
        for batch in _polls(rest):
            again._process({TPX: batch})
        after = published(again)
        epoch = {s[MERGE_KEY]["epoch"] for s in states.values()}
        assert len(epoch) == 1 and next(iter(epoch)) > 0
        assert {e for e, _ in before.values()} | {e for e, _ in after.values()} <= epoch
        assert sorted(set(before) | set(after)) == list(range(len(total))), cut
        for i in set(before) & set(after):  # published again: the same key
            assert before[i][1] == after[i][1], (cut, i)
        keys = {i: (after.get(i) or before[i])[1] for i in range(len(total))}
        assert [keys[i] for i in range(len(total))] == sorted(keys.values())
