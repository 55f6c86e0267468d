"""The monitors' pool outbox while publishing to the pool topic fails (issue 14).

Over ``source.repartition.pool_outbox_max_bytes`` the monitors take no new batch: their
partitions are paused, what a poll still returns is given back by a seek, and the publish
is retried; once it succeeds they go on where they stopped.  Driven here through
:meth:`FramedRunner._iteration` with the repartition topic held in memory (the loop on the
real broker: tests/integration/test_pooled.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from kafka.structs import TopicPartition

from stream.config import load_config
from stream.engine.baselines import resolve_baselines
from stream.engine.pipeline import Pipeline
from stream.runtime.frames import pack as pack_frame
from stream.runtime.monitors import FramedRunner, monitor_config
from stream.runtime.pooltap import unpack
from tests.support.configs import m1_config, write_config
from tests.support.events import CLEAN, COLUMNS, m1_events

FRAME = 50
FRAMES = 40  # per internal partition
BOUND = 16 * 1024


class _Internal:
    """The repartition topic's two partitions in memory, consumed as kafka-python does for
    the monitors: a paused partition returns nothing, a seek moves the fetch position, and
    ``leak`` polls return one record of a paused partition (what a poll may still hand out
    for a partition assigned or paused meanwhile), which the runner must give back."""

    def __init__(self, records: dict[Any, list[Any]]) -> None:
        self.records = records
        self.position = dict.fromkeys(records, 0)
        self.paused_set: set[Any] = set()
        self.committed: dict[Any, int] = {}
        self.seeks: list[tuple[Any, int]] = []
        self.leak = 0

    def assignment(self) -> set[Any]:
        return set(self.records)

    def paused(self) -> set[Any]:
        return set(self.paused_set)

    def pause(self, *tps: Any) -> None:
        self.paused_set |= set(tps)

    def resume(self, *tps: Any) -> None:
        self.paused_set -= set(tps)

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.position[tp] = offset

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        out: dict[Any, list[Any]] = {}
        for tp in sorted(self.records):
            if tp in self.paused_set:
                if not self.leak:
                    continue
                self.leak -= 1
            take = self.records[tp][self.position[tp]:self.position[tp] + max_records]
            if take:
                out[tp] = take
                self.position[tp] += len(take)
                max_records -= len(take)
            if not max_records:
                break
        return out

    def commit(self, offsets: dict[Any, Any], timeout_ms: int) -> None:
        self.committed.update({tp: int(o.offset) for tp, o in offsets.items()})


class _Future:
    def __init__(self, ok: bool) -> None:
        self.ok = ok

    def get(self, timeout: float) -> None:
        if not self.ok:
            raise RuntimeError("MessageSizeTooLargeError: the pool topic refuses the record")


class _Producer:
    def __init__(self, ok: bool, sent: list[bytes]) -> None:
        self.ok, self.sent = ok, sent

    def send(self, topic: str, value: bytes, partition: int) -> _Future:
        if self.ok:
            self.sent.append(value)
        return _Future(self.ok)

    def flush(self, timeout: float) -> None:
        pass

    def close(self, timeout: float) -> None:
        pass


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    d: Path = tmp_path_factory.mktemp("outbox")
    (d / "reference.jsonl").write_bytes(b"\n".join(m1_events(77, [(5000, CLEAN)], COLUMNS)))
    data = m1_config(bootstrap="k:9092", topic="t", group="g", port=0)
    data["source"]["repartition"] = {"topic": "t-rp", "partitions": 2, "pooled": True,
                                     "pool_topic": "t-pool", "pool_outbox_max_bytes": BOUND}
    config = load_config(write_config(d / "c.yaml", data))
    return config, resolve_baselines(config)


def _internal(seed: int) -> tuple[_Internal, int]:
    """Frames of ``FRAME`` events with dense merge positions, round-robin over two
    internal partitions."""
    events = m1_events(seed, [(2 * FRAMES * FRAME, CLEAN)], COLUMNS)
    tps = [TopicPartition("t-rp", 0), TopicPartition("t-rp", 1)]
    records: dict[Any, list[Any]] = {tp: [] for tp in tps}
    for f in range(2 * FRAMES):
        src = [SimpleNamespace(topic="t", partition=0, offset=i, timestamp=i, key=None,
                               value=events[i]) for i in range(f * FRAME, (f + 1) * FRAME)]
        tp = tps[f % 2]
        value = pack_frame(src, np.arange(f * FRAME, (f + 1) * FRAME))
        records[tp].append(SimpleNamespace(topic=tp.topic, partition=tp.partition,
                                           offset=len(records[tp]), value=value,
                                           timestamp=0, key=None))
    return _Internal(records), len(events)


@pytest.mark.parametrize("seed", [3, 11])
def test_the_outbox_stays_bounded_while_publishing_fails_and_nothing_is_lost(
        setup: tuple[Any, dict[str, Any]], seed: int, caplog: pytest.LogCaptureFixture,
        ) -> None:
    config, baselines = setup
    runner = FramedRunner(monitor_config(config), Pipeline(config, baselines))
    box = runner.pool_out
    assert box is not None
    consumer, total = _internal(seed)
    runner.consumer = consumer
    sent: list[bytes] = []
    attempts: list[bool] = []

    def connect(ok: bool) -> _Producer:
        attempts.append(ok)
        return _Producer(ok, sent)

    box._connect = lambda: connect(False)  # type: ignore[method-assign]
    caplog.set_level(logging.INFO)
    biggest, peak = 0, 0
    for i in range(300):
        runner.writes_paused_until = 0.0  # retry every iteration (no back-off wait)
        if i in (100, 200):
            consumer.leak = 1  # one poll hands out a record of a paused partition
        before = len(box.records)
        runner._iteration(None)
        biggest = max([biggest, *(len(r) for r in box.records[before:])])
        peak = max(peak, box.bytes)
    processed = runner.pipeline.processed["m1"]
    # bounded: the bound plus at most one poll's records (FRAMES_PER_POLL of them)
    assert box.full() and peak <= BOUND + 2 * biggest, (peak, biggest)
    assert box.max_bytes == BOUND  # source.repartition.pool_outbox_max_bytes
    assert 0 < processed < total // 4
    assert consumer.paused() == consumer.assignment() and runner.holding is not None
    assert len(attempts) > 100 and not sent and consumer.committed == {}
    # the leaked polls were given back where they started, not processed
    assert runner.pipeline.processed["m1"] == processed
    assert all(consumer.position[tp] == runner.done.get(tp, 0) for tp in consumer.records)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("pool outbox is full" in w for w in warnings) == 1  # once per episode
    assert sum("publishing the pooled values failed" in w for w in warnings) == 1

    box._connect = lambda: connect(True)  # type: ignore[method-assign]
    for _ in range(2000):
        runner.writes_paused_until = 0.0
        runner._iteration(None)
        if runner.pipeline.processed["m1"] == total and not box.records:
            break
    assert runner.pipeline.processed["m1"] == total and box.bytes == 0
    assert runner.holding is None and not consumer.paused()
    ends = {tp: len(recs) for tp, recs in consumer.records.items()}
    assert consumer.committed == ends
    # every merge position published exactly once: nothing dropped, nothing twice
    covered = np.concatenate([unpack(r)[0] for r in sent])
    assert np.array_equal(np.sort(covered), np.arange(total))
    infos = [r.getMessage() for r in caplog.records]
    assert sum("the monitors take batches again" in m for m in infos) == 1
    assert sum("succeeded after retries" in m for m in infos) == 1


def test_the_bound_is_validated() -> None:
    from stream.config import parse_config
    from tests.support.configs import config_errors, minimal_config

    kafka = {"bootstrap_servers": "k:9092", "topics": ["events"], "group_id": "g"}

    def cfg(**rp: Any) -> dict[str, Any]:
        return minimal_config(source={"kafka": dict(kafka), "repartition": rp})

    rp = parse_config(cfg(), "/cfg").source.repartition
    assert rp is not None and rp.pool_outbox_max_bytes == 64 * 1024 * 1024
    rp = parse_config(cfg(pool_outbox_max_bytes=1 << 20), "/cfg").source.repartition
    assert rp is not None and rp.pool_outbox_max_bytes == 1 << 20
    for bad in (0, 100, "64MiB", 1.5):
        assert any("source.repartition.pool_outbox_max_bytes: must be an integer" in e
                   for e in config_errors(cfg(pool_outbox_max_bytes=bad))), bad


def test_every_process_exports_its_outbox_the_pool_series_only_the_holder() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from stream.runtime.pooloutbox import PoolOutbox
    from stream.sinks.pool_metrics import PoolCollector

    class Member:  # does not hold the pool
        def figures(self) -> None:
            return None

    box = PoolOutbox(None, "pool", None, max_bytes=2048)  # type: ignore[arg-type]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(Member(), box))
    text = generate_latest(registry).decode()
    assert "streamdrift_pool_outbox_bytes 0.0" in text
    assert "streamdrift_pool_outbox_full 0.0" in text and "streamdrift_pool_frontier" not in text
    box.add(b"x" * 1500)
    box.add(b"x" * 600)
    text = generate_latest(registry).decode()
    assert "streamdrift_pool_outbox_bytes 2100.0" in text
    assert "streamdrift_pool_outbox_full 1.0" in text
