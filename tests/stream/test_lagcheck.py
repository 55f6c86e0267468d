"""The lag check of ``streamdrift run``: with confluent-kafka the loop never waits for it.

librdkafka queues its watermark queries behind the consumer's long-poll fetch; in the loop
a check of 8 partitions stalled the plain runner for about 4 s each second (491 events/s
instead of 41,000 on a backlog).  The fake consumer below holds its end-offset read until
the test releases it: a check that ran in the loop would have to return without the
release, which it cannot (the read would time out and report False)."""

from __future__ import annotations

import threading
from typing import Any

from kafka import TopicPartition

from stream.engine.figures import RunnerHealth
from stream.runtime.lagcheck import LagCheck
from stream.runtime.runner import KafkaRunner
from tests.support.configs import m1_config

TPS = [TopicPartition("events", p) for p in range(8)]


class HeldConsumer:
    """end_offsets waits for ``release`` (at most 10 s) and records whether it came."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.reads: list[bool] = []

    def assignment(self) -> set[Any]:
        return set(TPS)

    def end_offsets(self, tps: list[Any], timeout_ms: int) -> dict[Any, int]:
        self.reads.append(self.release.wait(10))
        return {tp: 100 for tp in tps}

    def position(self, tp: Any, timeout_ms: int) -> int:
        return 40


def test_background_check_returns_before_the_broker_answers() -> None:
    health = RunnerHealth()
    check = LagCheck(health, "events", 2000, background=True)
    c = HeldConsumer()
    check(c)  # returns while the read waits for the release
    check(c)  # due again while the first still runs: skipped, not queued
    c.release.set()
    check.wait(15)
    check.close()
    assert c.reads == [True]
    assert check.skipped == 1
    assert health.snapshot().consumer_lag == {("events", p): 60 for p in range(8)}


def test_in_loop_check_with_kafka_python_reads_at_once() -> None:
    health = RunnerHealth()
    check = LagCheck(health, "events", 2000, background=False)
    c = HeldConsumer()
    c.release.set()
    check(c)
    assert c.reads == [True]
    assert health.snapshot().consumer_lag == {("events", p): 60 for p in range(8)}


class DownConsumer(HeldConsumer):
    def end_offsets(self, tps: list[Any], timeout_ms: int) -> dict[Any, int]:
        raise OSError("broker down")


def test_a_failed_background_read_sets_source_down() -> None:
    health = RunnerHealth()
    check = LagCheck(health, "events", 2000, background=True)
    check(DownConsumer())
    check.wait(15)
    check.close()
    assert health.source_up == 0


def _runner(client: str, tmp_path: Any) -> KafkaRunner:
    from stream.config import load_config
    from stream.engine.baselines import resolve_baselines
    from stream.engine.pipeline import Pipeline
    from tests.support.configs import write_config
    from tests.support.events import CLEAN, COLUMNS, m1_events

    (tmp_path / "reference.jsonl").write_bytes(
        b"\n".join(m1_events(7, [(2000, CLEAN)], COLUMNS)))
    cfg = load_config(write_config(tmp_path / "c.yaml", m1_config(
        bootstrap="127.0.0.1:1", topic="events", group="g", port=0,
        kafka={"client": client})))
    return KafkaRunner(cfg, Pipeline(cfg, resolve_baselines(cfg)))


def test_the_runner_checks_off_the_loop_with_confluent_kafka(tmp_path: Any) -> None:
    runner = _runner("confluent-kafka", tmp_path)
    c = HeldConsumer()
    runner.consumer = c
    runner._update_lag()
    c.release.set()
    assert runner._lag is not None
    runner._lag.wait(15)
    runner._lag.close()
    assert c.reads == [True]


def test_the_runner_checks_in_the_loop_with_kafka_python(tmp_path: Any) -> None:
    runner = _runner("kafka-python", tmp_path)
    assert runner._lag is None or not runner._lag.background
    c = HeldConsumer()
    c.release.set()
    runner.consumer = c
    runner._update_lag()
    assert runner._lag is not None and not runner._lag.background
    assert c.reads == [True]


def test_the_librdkafka_long_poll_is_short_and_can_be_overridden(tmp_path: Any) -> None:
    """The loop commits after every batch; librdkafka sends the commit on the connection
    its fetcher long-polls: 500 ms (its default) per commit once a backlog is pre-fetched."""
    from stream.sources.confluent import librdkafka_config

    runner = _runner("confluent-kafka", tmp_path)
    assert librdkafka_config(runner.kafka, 1_000_000)["fetch.wait.max.ms"] <= 100
    import dataclasses

    k = dataclasses.replace(runner.kafka, librdkafka={"fetch.wait.max.ms": 500})
    assert librdkafka_config(k, 1_000_000)["fetch.wait.max.ms"] == 500
