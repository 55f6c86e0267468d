"""Offset commits that overlap the next batch (stream/sources/commits.py)."""

from __future__ import annotations

import threading
from collections import namedtuple
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka.errors import CommitFailedError, KafkaTimeoutError
from kafka.future import Future as KafkaFuture
from kafka.structs import TopicPartition

from stream.config import load_config, parse_config
from stream.engine.baselines import resolve_baselines
from stream.engine.pipeline import Pipeline
from stream.runtime.repartition import Repartitioner
from stream.runtime.runner import KafkaRunner
from stream.sources.commits import begin_commit, settle_commit
from tests.support.configs import m1_config, minimal_config, write_config
from tests.support.events import CLEAN, COLUMNS, m1_events

A, B = TopicPartition("t", 0), TopicPartition("t", 1)
Rec = namedtuple("Rec", "topic partition offset timestamp key value")


class SyncOnly:
    """A consumer with only a synchronous commit (a test's stand-in)."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.calls: list[dict[Any, Any]] = []
        self.fail = fail

    def commit(self, offsets: dict[Any, Any], timeout_ms: int) -> None:
        self.calls.append(offsets)
        if self.fail is not None:
            raise self.fail


class Coordinator:
    def __init__(self, unknown: bool) -> None:
        self.unknown = unknown

    def coordinator_unknown(self) -> bool:
        return self.unknown


class KafkaPythonLike(SyncOnly):
    """kafka-python's shape: ``commit_async`` returns its Future; ``_coordinator``."""

    def __init__(self, unknown: bool = False) -> None:
        super().__init__()
        self._coordinator = Coordinator(unknown)
        self.futures: list[tuple[dict[Any, Any], KafkaFuture]] = []

    def commit_async(self, offsets: dict[Any, Any]) -> KafkaFuture:
        future = KafkaFuture()
        self.futures.append((offsets, future))
        return future


class Answering(KafkaPythonLike):
    """Each commit is answered from another thread 50 ms after it is sent."""

    def commit_async(self, offsets: dict[Any, Any]) -> KafkaFuture:
        future = super().commit_async(offsets)
        threading.Timer(0.05, future.success, (None,)).start()
        return future


class ConfluentLike:
    asynchronous_commits = True

    def __init__(self) -> None:
        self.futures: list[Future[Any]] = []

    def commit_async(self, offsets: dict[Any, Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self.futures.append(future)
        return future


def test_nothing_new_sends_nothing() -> None:
    consumer = SyncOnly()
    assert begin_commit(consumer, {A: 5}, {A: 5}, 1000) is None
    assert consumer.calls == []
    assert settle_commit(None, {}, 1000) is None


def test_a_consumer_without_async_commits_synchronously_at_once() -> None:
    consumer = SyncOnly()
    committed: dict[Any, int] = {A: 5}
    flight = begin_commit(consumer, {A: 5, B: 7}, committed, 1000, metadata="m")
    assert flight is not None and flight.todo == {B: 7}
    assert [{tp: (om.offset, om.metadata) for tp, om in c.items()} for c in consumer.calls] \
        == [{B: (7, "m")}]
    assert flight.answered.is_set()
    assert settle_commit(flight, committed, 1000) is None
    assert committed == {A: 5, B: 7}


def test_a_synchronous_failure_is_the_flights_error() -> None:
    consumer = SyncOnly(fail=CommitFailedError("rebalance"))
    committed: dict[Any, int] = {}
    flight = begin_commit(consumer, {A: 5}, committed, 1000)
    exc = settle_commit(flight, committed, 1000)
    assert isinstance(exc, CommitFailedError)
    assert committed == {}


def test_kafka_python_commit_is_recorded_only_once_answered() -> None:
    consumer = KafkaPythonLike()
    committed: dict[Any, int] = {}
    flight = begin_commit(consumer, {A: 5, B: 7}, committed, 1000, metadata="seq:9")
    assert consumer.calls == []  # not synchronous
    offsets, future = consumer.futures[0]
    assert {tp: om.metadata for tp, om in offsets.items()} == {A: "seq:9", B: "seq:9"}
    assert flight is not None and not flight.answered.is_set()
    threading.Timer(0.05, future.success, (None,)).start()
    assert settle_commit(flight, committed, 5000) is None
    assert committed == {A: 5, B: 7}


def test_kafka_python_failure_leaves_committed_alone() -> None:
    consumer = KafkaPythonLike()
    committed: dict[Any, int] = {A: 1}
    flight = begin_commit(consumer, {A: 5}, committed, 1000)
    consumer.futures[0][1].failure(CommitFailedError("generation"))
    assert isinstance(settle_commit(flight, committed, 1000), CommitFailedError)
    assert committed == {A: 1}


def test_an_unanswered_commit_times_out() -> None:
    consumer = KafkaPythonLike()
    committed: dict[Any, int] = {}
    flight = begin_commit(consumer, {A: 5}, committed, 1000)
    assert isinstance(settle_commit(flight, committed, 50), KafkaTimeoutError)
    assert committed == {}


def test_kafka_python_without_a_coordinator_commits_synchronously() -> None:
    # its commit_async would return the coordinator lookup's future, not the commit's
    consumer = KafkaPythonLike(unknown=True)
    committed: dict[Any, int] = {}
    flight = begin_commit(consumer, {A: 5}, committed, 1000)
    assert consumer.futures == [] and len(consumer.calls) == 1
    assert settle_commit(flight, committed, 1000) is None and committed == {A: 5}


def test_confluent_future_and_its_error() -> None:
    consumer = ConfluentLike()
    committed: dict[Any, int] = {}
    flight = begin_commit(consumer, {A: 5}, committed, 1000)
    consumer.futures[0].set_result(None)
    assert settle_commit(flight, committed, 1000) is None and committed == {A: 5}
    flight = begin_commit(consumer, {A: 9}, committed, 1000)
    consumer.futures[1].set_exception(KafkaTimeoutError("broker away"))
    assert isinstance(settle_commit(flight, committed, 1000), KafkaTimeoutError)
    assert committed == {A: 5}


def test_a_send_that_raises_is_the_flights_error() -> None:
    class Busy(ConfluentLike):
        def commit_async(self, offsets: dict[Any, Any]) -> Future[Any]:
            raise KafkaTimeoutError("an earlier offset commit is still waiting")

    flight = begin_commit(Busy(), {A: 5}, {}, 1000)
    assert isinstance(settle_commit(flight, {}, 1000), KafkaTimeoutError)


def test_only_owned_partitions_are_recorded() -> None:
    # a partition revoked while its commit was in flight is not ours to record
    consumer = ConfluentLike()
    committed: dict[Any, int] = {}
    flight = begin_commit(consumer, {A: 5, B: 7}, committed, 1000)
    consumer.futures[0].set_result(None)
    assert settle_commit(flight, committed, 1000, owned={A: 5}) is None
    assert committed == {A: 5}


# -- the stages' use of it ----------------------------------------------------------------

@pytest.fixture(scope="module")
def runner_config(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    d: Path = tmp_path_factory.mktemp("commits")
    (d / "reference.jsonl").write_bytes(b"\n".join(m1_events(5, [(2000, CLEAN)], COLUMNS)))
    config = load_config(write_config(
        d / "c.yaml", m1_config(bootstrap="k:9092", topic="t", group="g", port=0)))
    return config, resolve_baselines(config)


@pytest.mark.parametrize("state", [True, False])
def test_the_monitors_commit_overlaps_the_next_batch_only_with_state(
        runner_config: tuple[Any, dict[str, Any]], state: bool) -> None:
    config, baselines = runner_config
    runner = KafkaRunner(config, Pipeline(config, baselines))
    consumer = KafkaPythonLike() if state else Answering()
    runner.consumer = consumer  # type: ignore[assignment]
    if state:
        runner.store = object()  # type: ignore[assignment]  # (only its presence matters)
    runner.done = {A: 10}
    assert runner._commit()
    if not state:
        assert runner.committed == {A: 10} and runner.commit_flight is None
        assert runner.unacked == {}
        return
    # sent, not waited for: it may land or not until answered
    assert runner.committed == {} and runner.unacked == {A: {10}}
    assert runner.commit_flight is not None
    runner.done = {A: 20}
    consumer.futures[0][1].success(None)
    assert runner._commit()  # settles the first, sends the second
    assert runner.committed == {A: 10} and runner.unacked == {A: {20}}
    consumer.futures[1][1].failure(CommitFailedError("rebalance"))
    runner.done = {A: 30}
    assert not runner._commit()  # the second failed: 20 stays unacked (it may have landed)
    assert runner.committed == {A: 10} and runner.unacked == {A: {20, 30}}
    consumer.futures[2][1].success(None)
    assert runner._commit(wait=True)  # (close: settled before returning)
    assert runner.committed == {A: 30} and runner.unacked == {} and runner.commit_flight is None


def test_the_first_stage_settles_a_batchs_commit_before_writing_the_next() -> None:
    """The bound of the first stage (one acknowledged batch uncommitted at most) holds
    with the commit overlapping the next poll."""
    config = parse_config(minimal_config(source={"kafka": {
        "bootstrap_servers": "k:9092", "topics": ["events"], "group_id": "g"},
        "repartition": {}}), "/cfg")
    stage = Repartitioner(config, pipeline=None)  # type: ignore[arg-type]
    consumer = KafkaPythonLike()
    stage.consumer = consumer
    written: list[tuple[int, list[bool]]] = []
    offsets: list[int] = []

    def send(records: list[Any]) -> bool:
        written.append((len(records), [f.is_done for _, f in consumer.futures]))
        return True

    stage._send = send  # type: ignore[method-assign]
    stage.buffers[A], stage.stamps[A] = [], np.empty(0, dtype=np.int64)
    for batch in range(3):
        recs = [Rec("events", 0, 100 * batch + i, 1_000 + 100 * batch + i, None, b"{}")
                for i in range(100)]
        stage._append(A, recs)
        if batch:  # the last commit is answered a little later, while this one waits
            last = consumer.futures[-1][1]
            threading.Timer(0.05, last.success, (None,)).start()
        stage._forward(0.0)
        assert not consumer.futures[-1][1].is_done  # _forward did not wait for its own
        sent = {tp: om.offset for tp, om in consumer.futures[-1][0].items()}
        assert sent == stage.done and sent[A] > 100 * batch
        offsets.append(sent[A])
    # each batch was written only once the one before was committed
    assert [w[1] for w in written] == [[], [True], [True, True]]
    assert stage.committed == {A: offsets[1]}
    consumer.futures[-1][1].success(None)
    stage.close()  # settles the last
    assert stage.committed == {A: offsets[2]}
