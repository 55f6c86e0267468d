"""Drift events out (source.drift_events) on a real broker: one open and one close record per
drifted column per partition, at the offsets an offline replay of each partition finds, and
no duplicate after a kill -9 (the restored state meets the same episodes again) nor after a
restart with episodes open (restored open: no second open record).

``pytest -s`` prints the figures docs/reliability.md quotes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from stream.broker import read_to_end
from stream.config import load_config
from stream.engine.baselines import resolve_baselines
from stream.engine.pipeline import Pipeline
from stream.sinks.driftevents import episode_records
from tests.support.configs import m1_config, write_config
from tests.support.events import CLEAN, SHIFTED, m1_events
from tests.support.kafka import produce
from tests.support.metrics import sample, samples
from tests.support.ports import free_port
from tests.support.processes import StreamdriftRun
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

COLUMNS = ("x1", "c1", "score")
PARTITIONS = 2
#: per partition: clean, drifting (x1 and c1), clean long enough for the episodes to close
CLEAN_1, DRIFT, CLEAN_2 = 1000, 1500, 3000
DRIFT_EVENTS = "streamdrift_drift_events_total"


def _read_topic(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every record of ``topic`` (its value, with the record's key)."""
    return [{**json.loads(r.value), "_key": r.key.decode()}
            for recs in read_to_end(bootstrap, topic).values() for r in recs]


def _ident(v: dict[str, Any]) -> tuple[Any, ...]:
    return (v["partition"], v["column"], v["type"], v["open_offset"], v.get("close_offset"))


def _expected(config_path: Path, messages: dict[int, list[bytes]], topic: str,
              ) -> list[dict[str, Any]]:
    """The records an offline run of each partition's messages gives (offsets from 0)."""
    config = load_config(config_path)
    group = config.source.kafka.group_id  # type: ignore[union-attr]
    out = []
    for part, msgs in messages.items():
        p = Pipeline(config, resolve_baselines(config))
        for i in range(0, len(msgs), 500):
            p.process(msgs[i:i + 500], base_index=i, partition=(topic, part),
                      offset_of=lambda j, base=i: base + j)
            out += [r.value for r in episode_records(p, group)]
    return out


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_one_open_and_one_close_per_episode_and_none_twice_after_kill9_or_restart(
        kafka_bootstrap, make_topic, tmp_path, client):
    topic = make_topic(partitions=PARTITIONS)
    drift_topic = f"{topic}-drift"
    (tmp_path / "reference.jsonl").write_bytes(
        b"\n".join(m1_events(77, [(10_000, CLEAN)], COLUMNS)))
    port = free_port()
    config = m1_config(bootstrap=kafka_bootstrap, topic=topic, group=f"g-{topic}", port=port,
                       columns=COLUMNS,
                       kafka={"max_poll_records": 500, "poll_timeout_ms": 200,
                              "client": client,
                              # the dead member's partitions come back after 10 s (as
                              # librdkafka's default)
                              **({"options": {"session_timeout_ms": 10_000}}
                                 if client == "kafka-python" else {})},
                       state={"topic": f"{topic}-state", "checkpoint_interval_s": 8})
    config["source"]["drift_events"] = {"topic": drift_topic}
    cfg = write_config(tmp_path / "drift.yaml", config)
    messages = {p: m1_events(10 + p, [(CLEAN_1, CLEAN), (DRIFT, SHIFTED), (CLEAN_2, CLEAN)],
                             COLUMNS) for p in range(PARTITIONS)}
    expected = _expected(cfg, messages, topic)  # builds the baseline cache for the runs too
    opens = [v for v in expected if v["type"] == "open"]
    assert {(v["partition"], v["column"]) for v in opens} >= {
        (p, c) for p in range(PARTITIONS) for c in ("x1", "c1")}, "the test needs drift"
    assert all(CLEAN_1 <= v["open_offset"] < CLEAN_1 + DRIFT for v in opens)
    assert sorted(_ident(v) for v in expected if v["type"] == "close") == sorted(
        (v["partition"], v["column"], "close", v["open_offset"], v["close_offset"])
        for v in expected if v["type"] == "close")
    assert len([v for v in expected if v["type"] == "close"]) == len(opens)

    def produce_part(lo: int, hi: int) -> None:
        for p, msgs in messages.items():
            produce(kafka_bootstrap, topic, msgs[lo:hi], partition=p, linger_ms=5, acks="all")

    def on_topic(kind: str) -> int:
        return sum(v["type"] == kind for v in _read_topic(kafka_bootstrap, drift_topic))

    # run 1: a checkpoint of the clean start, then the drift: open records written, and
    # kill -9 before the next checkpoint (8 s later)
    t0 = time.monotonic()
    run1 = StreamdriftRun(cfg, port=port, name="run1")
    try:
        produce_part(0, CLEAN_1)
        run1.wait_consumed(PARTITIONS * CLEAN_1, timeout=60)
        wait_for(lambda: {p for r in run1.logs("checkpoint written")
                          for p in range(PARTITIONS)
                          if r["offsets"].get(f"{topic}/{p}") == CLEAN_1} == set(
                              range(PARTITIONS)), 30, "a checkpoint of the clean start")
        produce_part(CLEAN_1, CLEAN_1 + DRIFT)
        run1.wait_consumed(PARTITIONS * (CLEAN_1 + DRIFT), timeout=60)
        wait_for(lambda: on_topic("open") == len(opens), 10, "the open records")
        run1.kill9()
    finally:
        if run1.proc.poll() is None:
            run1.kill9()
    assert not [r for r in run1.logs("checkpoint written")
                if any(o > CLEAN_1 for o in r["offsets"].values())], \
        "a checkpoint after the opens: the restart would not meet them again"

    # run 2: restores the clean-start checkpoint, processes the drift again (same episodes,
    # same offsets: not written again), then stops with the episodes open
    run2 = StreamdriftRun(cfg, port=port, name="run2")
    try:
        run2.wait_consumed(PARTITIONS * DRIFT, timeout=90)
        wait_for(lambda: run2.value(DRIFT_EVENTS, result="duplicate") >= len(opens), 10,
                 "the re-opened episodes counted as duplicates")
        time.sleep(0.5)
        text = run2.scrape()
    finally:
        run2.stop(check=True)
    restored = run2.logs("state restored")
    # (a rebalance in the group join can restore a partition twice: the same checkpoint)
    assert {(r["partition"], r["offset"]) for r in restored} == {
        (p, CLEAN_1) for p in range(PARTITIONS)}, restored
    duplicates = sample(samples(text), DRIFT_EVENTS, result="duplicate")
    assert duplicates == len(opens)
    assert sample(samples(text), DRIFT_EVENTS, result="ok") == 0
    assert on_topic("open") == len(opens) and on_topic("close") == 0

    # run 3: restores the episodes open (no open record), then the drift ends: one close each
    run3 = StreamdriftRun(cfg, port=port, name="run3")
    try:
        produce_part(CLEAN_1 + DRIFT, CLEAN_1 + DRIFT + CLEAN_2)
        run3.wait_consumed(PARTITIONS * CLEAN_2, timeout=90)
        wait_for(lambda: on_topic("close") == len(opens), 15, "the close records")
        time.sleep(0.5)  # room for a wrong extra record
    finally:
        run3.stop(check=True)
    elapsed = time.monotonic() - t0
    restored = run3.logs("state restored")
    assert {(r["partition"], r["offset"]) for r in restored} == {
        (p, CLEAN_1 + DRIFT) for p in range(PARTITIONS)}, restored

    got = _read_topic(kafka_bootstrap, drift_topic)
    assert sorted(_ident(v) for v in got) == sorted(_ident(v) for v in expected)
    assert len({_ident(v) for v in got}) == len(got)  # exactly once each
    for v in got:
        want = next(e for e in expected if _ident(e) == _ident(v))
        # identical but for the wall-clock times
        assert {k: x for k, x in v.items() if k not in ("opened_at", "closed_at", "_key")} == \
            {k: x for k, x in want.items() if k not in ("opened_at", "closed_at")}
        assert v["_key"] == f"g-{topic}/m1/{topic}/{v['partition']}/{v['column']}"
        assert v["open_event_time"] == 1.7e9 + v["open_offset"]
        if v["type"] == "close":
            assert v["close_event_time"] == 1.7e9 + v["close_offset"]
            assert v["duration_s"] == v["close_offset"] - v["open_offset"]
    print(f"\n[drift events, {client}] {PARTITIONS} partitions x {CLEAN_1 + DRIFT + CLEAN_2} events; "
          f"{len(opens)} episodes: opens at "
          f"{sorted((v['partition'], v['column'], v['open_offset']) for v in opens)}, closes at "
          f"{sorted((v['partition'], v['column'], v['close_offset']) for v in got if v['type'] == 'close')}; "
          f"after kill -9 {duplicates:g} opens met again and skipped; records on the topic "
          f"{len(got)} (expected {len(expected)}); {elapsed:.0f} s")


def test_an_unwritable_drift_topic_holds_the_batch_back_and_loses_nothing(
        kafka_bootstrap, make_topic, tmp_path):
    """Writes fail (a producer pointed at a closed port): the batch with the opens is not
    committed, the partition waits, the write is retried; once it can succeed the records
    are written once and the offsets committed."""
    import threading

    from kafka import KafkaAdminClient, KafkaProducer

    from stream.runtime.runner import KafkaRunner
    from tests.support.ports import free_ports

    topic = make_topic(partitions=1)
    drift_topic = f"{topic}-drift"
    group = f"g-{topic}"
    (tmp_path / "reference.jsonl").write_bytes(
        b"\n".join(m1_events(77, [(10_000, CLEAN)], COLUMNS)))
    config = m1_config(bootstrap=kafka_bootstrap, topic=topic, group=group, port=free_port(),
                       columns=COLUMNS, kafka={"max_poll_records": 500, "poll_timeout_ms": 200},
                       state={"topic": f"{topic}-state", "checkpoint_interval_s": 1})
    config["source"]["drift_events"] = {"topic": drift_topic}
    cfg = write_config(tmp_path / "down.yaml", config)
    messages = m1_events(10, [(CLEAN_1, CLEAN), (DRIFT, SHIFTED)], COLUMNS)
    expected = [v for v in _expected(cfg, {0: messages}, topic) if v["type"] == "open"]
    assert expected, "the test needs drift"
    first_open = min(v["open_offset"] for v in expected)

    loaded = load_config(cfg)
    runner = KafkaRunner(loaded, Pipeline(loaded, resolve_baselines(loaded)))
    writer = runner.drift_events
    assert writer is not None
    closed_port = free_ports(1)[0]
    writer.make_producer = lambda: KafkaProducer(
        bootstrap_servers=f"127.0.0.1:{closed_port}", max_block_ms=500,
        request_timeout_ms=500, bootstrap_timeout_ms=500)
    thread = threading.Thread(target=runner.run, daemon=True)

    def committed() -> int:
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            got = admin.list_group_offsets({group: None}).get(group, {})
        finally:
            admin.close()
        return max((om.offset for om in got.values()), default=-1)

    produce(kafka_bootstrap, topic, messages, linger_ms=5, acks="all")
    thread.start()
    try:
        wait_for(lambda: runner.health.snapshot().drift_events.get("failed", 0) >= 2 * len(
            expected), 60, "two failed attempts")
        assert runner.pending is not None and runner.pending.drift
        assert committed() <= first_open  # the batch with the opens is held back
        assert _read_topic(kafka_bootstrap, drift_topic) == []
        failed = runner.health.snapshot().drift_events["failed"]
        writer.make_producer = writer._new_producer  # the topic can be written again
        wait_for(lambda: committed() == len(messages), 60, "the commit of everything")
    finally:
        runner.stop()
        thread.join(30)
    got = _read_topic(kafka_bootstrap, drift_topic)
    assert sorted(_ident(v) for v in got) == sorted(_ident(v) for v in expected)
    counts = runner.health.snapshot().drift_events
    assert counts.get("ok") == len(expected) and counts.get("duplicate", 0) == 0
    print(f"\n[drift events, topic down] {failed} failed record writes while down, committed "
          f"offset held at or before {first_open}; then {counts['ok']} written once, all "
          f"{len(messages)} offsets committed")
