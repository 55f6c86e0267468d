"""The pooled CUSUM's runtime parts without a broker: its configuration, the pool records,
and the tap (stream/runtime/pooltap.py) that takes exactly the values each column's CUSUM
steps with."""

from __future__ import annotations

import math
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
    assert 'streamdrift_pooled_drift_threshold{detector="cusum",feature="x2"' in text


def test_the_outbox_keeps_what_was_not_acknowledged() -> None:
    from stream.runtime.pool import PoolOutbox

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
