"""The pooled CUSUM's runtime parts without a broker: its configuration, the pool records,
and the tap (stream/runtime/pooltap.py) that takes exactly the values each column's CUSUM
steps with."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from detectors.cusum import CUSUM
from detectors.cusum_merge import standardise
from stream.config import load_config, parse_config
from stream.engine.baselines import resolve_baselines
from stream.engine.pipeline import Pipeline
from stream.runtime.pooltap import (
    PoolRecordError,
    PoolTap,
    PoolValues,
    column_cusum,
    pack,
    record_of,
    thresholds_of,
    unpack,
)
from tests.support.configs import config_errors, m1_config, minimal_config, write_config
from tests.support.events import CLEAN, COLUMNS, SHIFTED, m1_events

KAFKA = {"bootstrap_servers": "k:9092", "topics": ["events"], "group_id": "g"}


def _config(repartition: Any, **source: Any) -> dict[str, Any]:
    return minimal_config(source={"kafka": dict(KAFKA), "repartition": repartition, **source})

def test_pooling_is_off_by_default_and_validated() -> None:
    rp = parse_config(_config({}), "/cfg").source.repartition
    assert rp is not None and (rp.pooled, rp.pool_topic) == (False, "g-pool")
    rp = parse_config(_config({"pooled": True, "pool_topic": "p"}), "/cfg").source.repartition
    assert rp is not None and (rp.pooled, rp.pool_topic) == (True, "p")
    assert any("source.repartition.pooled: must be true or false" in e
               for e in config_errors(_config({"pooled": "yes"})))
    assert any("the pool topic must be a topic of its own" in e
               for e in config_errors(_config({"pool_topic": "events"})))


def test_pool_records_round_trip_and_refuse_damage() -> None:
    cov = np.array([3, 5, 9, 10])
    cols = {("m1", "x1"): PoolValues(np.array([3, 3, 10]), np.array([0.5, -1.0, 2.0]),
                                     np.array([1.0, math.nan, 3.0])),
            ("m1", "score"): PoolValues(np.empty(0, np.int64), np.empty(0), np.empty(0))}
    raw = pack(cov, cols)
    got_cov, got = unpack(raw)
    assert got_cov.tolist() == cov.tolist() and set(got) == set(cols)
    v = got[("m1", "x1")]
    assert v.positions.tolist() == [3, 3, 10] and v.values.tolist() == [0.5, -1.0, 2.0]
    assert v.times[0] == 1.0 and math.isnan(v.times[1])
    for bad in (raw[:-1], raw + b"x", b"junk", raw[:4] + b"\x07" + raw[5:]):
        with pytest.raises(PoolRecordError):
            unpack(bad)
    outside = pack(cov, {("m1", "x1"): PoolValues(np.array([4]), np.array([0.0]),
                                                  np.array([0.0]))})
    with pytest.raises(PoolRecordError, match="outside"):
        unpack(outside)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    d = tmp_path_factory.mktemp("pooltap")
    (d / "reference.jsonl").write_bytes(b"\n".join(m1_events(77, [(5000, CLEAN)], COLUMNS)))
    path = write_config(d / "c.yaml", m1_config(bootstrap="k:9092", topic="t", group="g",
                                                 port=0))
    cfg = load_config(path)
    return Pipeline(cfg, resolve_baselines(cfg))


def _damaged(events: list[bytes], rng: np.random.Generator) -> list[bytes]:
    """Events with missing, null and invalid x1 / score values, incomplete events (most
    columns missing), another model's events and junk."""
    out = []
    for raw in events:
        e = orjson.loads(raw)
        u = rng.random()
        if u < 0.05:
            del e["f"]["x1"]
        elif u < 0.1:
            e["f"]["x1"] = None
        elif u < 0.13:
            e["f"]["x1"] = "oops"
        elif u < 0.16:
            e["f"] = {"x1": e["f"]["x1"]}  # incomplete: only x1 left
            del e["p"]
        elif u < 0.18:
            e["model"] = "other"
        elif u < 0.19:
            out.append(b"{not json")
            continue
        elif u < 0.2:
            e["f"]["x1"] = 1e300
        out.append(orjson.dumps(e))
    return out


def test_the_tap_takes_exactly_what_each_column_cusum_steps_with(pipeline: Pipeline) -> None:
    rng = np.random.default_rng(3)
    events = _damaged(m1_events(8, [(1500, CLEAN), (1500, SHIFTED)], COLUMNS), rng)
    tap = PoolTap(True, thresholds_of(pipeline))
    assert set(tap.thresholds["m1"]) == {"x1", "x2", "score"}  # numeric columns only
    fed: dict[str, list[np.ndarray]] = {"x1": [], "x2": [], "score": []}
    key = ("t", 0)
    pipeline.process(events[:0], partition=key)  # the partition's monitors
    mon = pipeline.monitor("m1", key)
    assert mon is not None
    originals = {}
    for col in fed:
        det = column_cusum(mon, col)
        assert isinstance(det, CUSUM)
        originals[col] = det.h

        def spy(values: Any, det: CUSUM = det, col: str = col,
                update: Any = det.update) -> Any:
            fed[col].append(standardise(values, det.mean, det.scale, det.clip))
            return update(values)

        det.update = spy  # type: ignore[method-assign]
    pipeline.pool_tap = tap
    taken: dict[str, list[np.ndarray]] = {c: [] for c in fed}
    merge = np.arange(len(events), dtype=np.int64) * 3 + 7  # merge positions of the messages
    try:
        at = 0
        for n in (1, 7, 300, 1000, 2, 1690):
            batch = events[at:at + n]
            tap.taken.clear()
            pipeline.process(batch, base_index=at, partition=key)
            rec = record_of(tap.taken.get(key), merge[at:at + n])
            assert rec is not None
            cov, cols = unpack(rec)
            assert cov.tolist() == merge[at:at + n].tolist()  # every message, value or not
            for (model, col), v in cols.items():
                assert model == "m1" and np.isin(v.positions, cov).all()
                assert (np.diff(v.positions) >= 0).all()
                taken[col].append(v.values)
            at += n
        assert at == len(events)
    finally:
        pipeline.pool_tap = None
    for col in fed:
        want = np.concatenate(fed[col])
        got = np.concatenate(taken[col])
        assert want.size > 2000 and got.tobytes() == want.tobytes(), col
        # and the monitor's own CUSUM of a pooled column is muted: never alarms
        assert math.isinf(column_cusum(mon, col).h)  # type: ignore[union-attr]
    # with pooling off, a muted CUSUM gets its threshold back
    PoolTap(False, tap.thresholds)("m1", key, _batch(pipeline), mon)
    assert column_cusum(mon, "x1").h == originals["x1"]  # type: ignore[union-attr]


def _batch(pipeline: Pipeline) -> Any:
    return pipeline.decoder.decode(m1_events(1, [(3, CLEAN)], COLUMNS)).models["m1"]


def test_version_1_messages_publish_nothing() -> None:
    assert record_of(None, np.full(4, -1)) is None
    raw = record_of(None, np.array([-1, 5, -1, 6]))
    assert raw is not None and unpack(raw)[0].tolist() == [5, 6]


def test_config_file_with_pooling(tmp_path: Path) -> None:
    data = m1_config(bootstrap="k:9092", topic="t", group="g", port=0)
    data["source"]["repartition"] = {"partitions": 2, "pooled": True}
    (tmp_path / "reference.jsonl").write_bytes(b"{}")
    cfg = parse_config(data, tmp_path)
    assert cfg.source.repartition is not None and cfg.source.repartition.pooled


def test_only_the_member_holding_the_pool_exports_the_pooled_series() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from stream.sinks.pool_metrics import PoolCollector

    class Member:
        fig: dict[str, Any] | None = None

        def figures(self) -> dict[str, Any] | None:
            return self.fig

    member = Member()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(member))
    assert generate_latest(registry) == b""  # not the member: nothing (no double count)
    member.fig = {"frontier": 120, "pending": 3, "skipped": 0, "duplicates": 7, "folded": 120,
                  "bad_records": 0,
                  "columns": {("m1", "x1"): (40.0, 28.0, True, 1, "feature"),
                              ("m1", "x2"): (1.0, math.inf, False, 0, "feature")}}
    text = generate_latest(registry).decode()
    assert ('streamdrift_pooled_drift_active{detector="cusum",feature="x1",model="m1",'
            'role="feature",scope="pooled"} 1.0') in text
    assert ('streamdrift_pooled_drift_alarms_total{detector="cusum",feature="x1",model="m1",'
            'role="feature",scope="pooled"} 1.0') in text
    assert "streamdrift_pool_frontier 120.0" in text
    assert "streamdrift_pool_duplicates_total 7.0" in text
    assert "streamdrift_pool_late_total 0.0" in text  # one writer: no late count, 0
    member.fig = {**member.fig, "late": 4}  # several writers (KeyedPoolMerge)
    assert "streamdrift_pool_late_total 4.0" in generate_latest(registry).decode()
    assert 'streamdrift_pooled_drift_threshold{detector="cusum",feature="x2"' in text


def test_the_outbox_keeps_what_was_not_acknowledged() -> None:
    from stream.runtime.pooloutbox import PoolOutbox

    class Future:
        def __init__(self, ok: bool) -> None:
            self.ok = ok

        def get(self, timeout: float) -> None:
            if not self.ok:
                raise TimeoutError("not acknowledged")

    class Producer:
        def __init__(self, ok: bool) -> None:
            self.ok, self.sent = ok, []

        def send(self, topic: str, value: bytes, partition: int) -> Future:
            self.sent.append(value)
            return Future(self.ok)

        def flush(self, timeout: float) -> None:
            pass

        def close(self, timeout: float) -> None:
            pass

    box = PoolOutbox(None, "pool", None)  # type: ignore[arg-type]
    box.add(b"a")
    assert box.flush(connect=False) is False and box.records == [b"a"]  # no client in a callback
    box.producer = Producer(False)
    box.add(b"b")
    assert box.flush() is False and box.records == [b"a", b"b"] and box.producer is None
    box.producer = ok = Producer(True)
    assert box.flush() and box.records == [] and ok.sent == [b"a", b"b"] and box.published == 2
    assert box.flush(connect=False)  # nothing waiting


# -- the pool member taking the pool over -----------------------------------------------------
class _PoolTopic:
    """A consumer of a one-partition pool topic held in memory, as kafka-python behaves for
    the member: the poll that brings the assignment returns records too, a partition
    assigned again keeps its fetch position, and a seek moves it."""

    def __init__(self, tp: Any, values: list[bytes], member: Any, committed: int | None) -> None:
        self.tp, self.values, self.member = tp, values, member
        self.position = 0 if committed is None else committed
        self.assigned = False
        self.committed_offset = committed
        self.seeks: list[int] = []

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        if not self.assigned:
            self.assigned = True
            self.member._on_assigned({self.tp})
        from types import SimpleNamespace

        end = min(len(self.values), self.position + max_records)
        recs = [SimpleNamespace(offset=o, value=self.values[o]) for o in range(self.position, end)]
        self.position = end
        return {self.tp: recs} if recs else {}

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append(offset)
        self.position = offset

    def committed(self, tp: Any, timeout_ms: int) -> int | None:
        return self.committed_offset

    def beginning_offsets(self, tps: list[Any], timeout_ms: int) -> dict[Any, int]:
        return dict.fromkeys(tps, 0)

    def commit(self, offsets: dict[Any, Any], timeout_ms: int) -> None:
        self.committed_offset = int(next(iter(offsets.values())).offset)


class _Store:
    def __init__(self, fail: int = 0) -> None:
        self.saved: dict[tuple[str, str, int], Any] = {}
        self.fail = fail

    def read(self, wanted: Any = None, timeout_s: float = 30.0) -> dict[Any, Any]:
        from stream.sinks.checkpoints import StateError

        if self.fail:
            self.fail -= 1
            raise StateError("reading the state topic timed out")
        return dict(self.saved)

    def write(self, cps: list[Any], timeout_s: float) -> int:
        for cp in cps:
            self.saved[(cp.model, cp.topic, cp.partition)] = cp
        return 1


def _pool_stream(n: int, seed: int) -> tuple[list[bytes], dict[str, np.ndarray]]:
    """Pool records of two monitors (internal partitions) over ``n`` positions, the second
    monitor's first: the topic's first record does not hold position 0."""
    rng = np.random.default_rng(seed)
    z = {c: rng.normal(0.0, 1.0, n) + np.where(np.arange(n) > n // 2, 0.6, 0.0)
         for c in ("x1", "x2", "score")}
    owner = rng.integers(0, 2, n)
    owner[0] = 0
    chunks = []
    for q in (1, 0):
        mine = np.flatnonzero(owner == q)
        for i in range(0, mine.size, 40):
            pos = mine[i:i + 40]
            chunks.append((int(pos[-1]) + (60 if q == 1 else 0), pack(pos, {
                ("m1", c): PoolValues(pos, z[c][pos], np.full(pos.size, np.nan)) for c in z})))
    chunks.sort(key=lambda c: c[0])  # roughly by position, monitor 1 a bit ahead
    return [v for _, v in chunks], z


@pytest.fixture(scope="module")
def pooled_config(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("poolmember")
    (d / "reference.jsonl").write_bytes(b"\n".join(m1_events(77, [(5000, CLEAN)], COLUMNS)))
    data = m1_config(bootstrap="k:9092", topic="t", group="g", port=0)
    data["source"]["repartition"] = {"topic": "t-rp", "partitions": 2, "pooled": True,
                                     "pool_topic": "t-pool"}
    config = load_config(write_config(d / "c.yaml", data))
    return config, Pipeline(config, resolve_baselines(config))


def _member(pooled: Any, values: list[bytes], store: _Store,
            committed: int | None = None) -> tuple[Any, _PoolTopic]:
    from kafka.structs import TopicPartition

    from stream.runtime.pool import PoolMember

    member = PoolMember(*pooled)
    member.store = store  # type: ignore[assignment]
    member.consumer = _PoolTopic(TopicPartition("t-pool", 0), values, member, committed)
    return member, member.consumer


def _drain(member: Any, topic: _PoolTopic, rounds: int = 400) -> None:
    for _ in range(rounds):
        member._iteration()
        if member.merge is not None and topic.position == len(topic.values) \
                and not member.to_restore:
            member._iteration()
            return
    raise AssertionError("the member did not read the pool topic to its end")


def _one_cusum(pooled: Any, z: dict[str, np.ndarray]) -> dict[tuple[str, str], Any]:
    from stream.runtime.pool import pool_columns

    ref = pool_columns(pooled[1])
    for c, v in z.items():
        ref[("m1", c)].update(v)
    return ref


def _same_cusum(a: Any, b: Any) -> bool:
    return a._f.tobytes() == b._f.tobytes() and a._i.tobytes() == b._i.tobytes()


def test_a_member_without_a_checkpoint_folds_every_position_from_the_start(
        pooled_config: Any) -> None:
    """The poll that brings the assignment returns records: they are read again (a seek to
    the topic's start), and the pool starts at position 0 though the first record does not
    hold it (it used to start at that record's smallest position and drop position 0, or
    skip the records of that poll and wait for ever for their positions)."""
    values, z = _pool_stream(3000, 4)
    member, topic = _member(pooled_config, values, _Store())
    _drain(member, topic)
    m = member.merge
    assert m is not None
    assert (m.frontier, m.pending, m.skipped, m.duplicates) == (3000, 0, 0, 0)
    ref = _one_cusum(pooled_config, z)
    for key, det in ref.items():
        assert _same_cusum(m.columns[key], det), key
    assert any(a.kind == "open" and a.column == "x1" for a in member.alarms)
    assert topic.seeks == [0]


def test_a_successor_resumes_from_the_checkpoint_and_an_unreadable_one_is_retried(
        pooled_config: Any) -> None:
    values, z = _pool_stream(3000, 5)
    store = _Store()
    first, topic = _member(pooled_config, values[:40], store)
    _drain(first, topic)
    first._checkpoint()
    cp = store.saved[("__pool__", "t-pool", 0)]
    assert 0 < cp.offset <= 40 and cp.state["frontier"] > 0
    # the successor: the state topic does not answer at first; the group's offset is
    # committed (as the checkpoint's): no fresh pool meanwhile, then the checkpoint's seek
    store.fail = 2
    second, topic = _member(pooled_config, values, store, committed=cp.offset)
    for _ in range(2):
        second._iteration()
        assert second.merge is None and second.to_restore and not topic.seeks
    _drain(second, topic)
    m = second.merge
    assert m is not None and topic.seeks == [cp.offset]
    assert (m.frontier, m.pending, m.skipped) == (3000, 0, 0)
    ref = _one_cusum(pooled_config, z)
    for key, det in ref.items():
        assert _same_cusum(m.columns[key], det), key


def _coordinator(state: str) -> Any:
    """A kafka-python group coordinator as joinwatch.member_state reads it."""
    from types import SimpleNamespace

    return SimpleNamespace(group_metadata=lambda: SimpleNamespace(state=state,
                                                                  generation_id=3))


def test_a_member_that_no_longer_holds_the_partition_drops_its_pool_unsaved(
        pooled_config: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """kafka-python can leave a member with a pool after the partition went to another
    member (seen in CI, 2026-12-06: two members exported pooled series, one of them
    committing in vain while "rebalancing").  Such a member wrote its stale state over the
    holder's checkpoint every interval; now it writes none, and drops the pool after
    UNHELD_S.  A lost partition is dropped unsaved too (kafka-python's callback used to
    checkpoint it as revoked)."""
    from stream.runtime import pool

    values, _ = _pool_stream(600, 6)
    store = _Store()
    member, topic = _member(pooled_config, values, store)
    _drain(member, topic)
    member._checkpoint()
    key = ("__pool__", "t-pool", 0)
    saved = store.saved[key]
    topic._coordinator = _coordinator("<rebalancing>")  # type: ignore[attr-defined]
    topic.assignment = lambda: set()  # type: ignore[attr-defined]
    monkeypatch.setattr(pool, "UNHELD_S", 0.3)
    member.last_checkpoint = -1e9  # a periodic checkpoint is due
    member._iteration()
    assert member.merge is not None and store.saved[key] is saved  # not written
    time.sleep(0.35)
    with caplog.at_level(logging.WARNING, logger="streamdrift.pool"):
        member._iteration()
    assert member.merge is None and store.saved[key] is saved
    assert any("has not held the pool topic's partition" in r.message for r in caplog.records)
    # a stable member that holds the partition checkpoints as before
    member2, topic2 = _member(pooled_config, values, store)
    topic2._coordinator = _coordinator("<stable>")  # type: ignore[attr-defined]
    topic2.assignment = lambda: {topic2.tp}  # type: ignore[attr-defined]
    _drain(member2, topic2)
    member2.last_checkpoint = -1e9
    member2._iteration()
    assert member2.merge is not None and store.saved[key] is not saved
    # lost (the session expired): dropped, not checkpointed
    newest = store.saved[key]
    member2._on_lost({topic2.tp})
    member2._iteration()
    assert member2.merge is None and store.saved[key] is newest
    # an assignment without the partition while it has a pool (kafka-python calls the
    # revocation listener once per rebalance attempt, not when a join is sent again)
    member3, topic3 = _member(pooled_config, values, store)
    _drain(member3, topic3)
    member3._on_assigned(set())
    member3.last_checkpoint = -1e9
    member3._iteration()
    assert member3.merge is None and store.saved[key] is newest
