"""The lag check of ``streamdrift run`` with confluent-kafka: one broker query per check.

librdkafka queues a watermark query behind the fetcher's long poll, so each query costs
the loop up to ``fetch.wait.max.ms``; one per partition every second held the plain runner
to 491 events/s on an 8-partition backlog (40,000 without).  The fake librdkafka consumer
below counts the queries that go to the broker (``cached=False``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from kafka import TopicPartition

from stream.engine.figures import RunnerHealth
from stream.runtime.lagcheck import LagCheck
from stream.sources.confluent import ConfluentConsumer, librdkafka_config

TPS = [TopicPartition("events", p) for p in range(8)]


class FakeRdkafka:
    """get_watermark_offsets: cached values for the partitions in ``known``; broker
    queries are counted (and fail while ``down``)."""

    def __init__(self, known: set[int]) -> None:
        self.known = known
        self.queries: list[int] = []
        self.down = False

    def get_watermark_offsets(self, tp: Any, timeout: float | None = None,
                              cached: bool = False) -> tuple[int, int]:
        if cached:
            return (0, 100) if tp.partition in self.known else (-1001, -1001)
        if self.down:
            raise OSError("broker down")
        self.queries.append(tp.partition)
        return 0, 100

    def position(self, parts: list[Any]) -> list[Any]:
        return [dataclasses.replace(_Pos(p.topic, p.partition), offset=40) for p in parts]


@dataclasses.dataclass
class _Pos:
    topic: str
    partition: int
    offset: int = -1


def _consumer(rd: FakeRdkafka) -> ConfluentConsumer:
    c = object.__new__(ConfluentConsumer)
    c._c = rd
    c._assigned = set(TPS)
    c._lag_turn = -1
    return c


def test_one_broker_query_per_check_in_turn() -> None:
    rd = FakeRdkafka(known=set(range(8)))
    health = RunnerHealth()
    check, consumer = LagCheck(health, "events", 2000), _consumer(rd)
    for _ in range(10):
        check(consumer)
    # one query per check (it says whether the cluster answers), each partition in turn
    assert rd.queries == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]
    assert health.snapshot().consumer_lag == {("events", p): 60 for p in range(8)}


def test_partitions_without_a_cached_watermark_are_asked() -> None:
    rd = FakeRdkafka(known={0, 1, 2})
    ends = _consumer(rd).lag_end_offsets(TPS, 2000)
    assert ends == {tp: 100 for tp in TPS}
    assert sorted(rd.queries) == [0, 3, 4, 5, 6, 7]  # the unknown ones, and partition 0's turn


def test_a_failed_query_sets_source_down() -> None:
    rd = FakeRdkafka(known=set(range(8)))
    rd.down = True
    health = RunnerHealth()
    LagCheck(health, "events", 2000)(_consumer(rd))
    assert health.source_up == 0


def test_the_librdkafka_long_poll_is_short_and_can_be_overridden() -> None:
    """The loop commits after every batch; librdkafka sends the commit on the connection
    its fetcher long-polls: 500 ms (its default) per commit once a backlog is pre-fetched."""
    from stream.config import KafkaConfig

    k = KafkaConfig(bootstrap_servers=("127.0.0.1:1",), topics=("t",), group_id="g",
                    client="confluent-kafka")
    assert librdkafka_config(k, 1_000_000)["fetch.wait.max.ms"] <= 100
    k = dataclasses.replace(k, librdkafka={"fetch.wait.max.ms": 500})
    assert librdkafka_config(k, 1_000_000)["fetch.wait.max.ms"] == 500
