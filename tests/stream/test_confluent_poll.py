"""``ConfluentConsumer.poll``: a poll batch split by partition without a wrapper object per
message (:class:`stream.sources.confluent.Records` wraps on access).

The fake librdkafka consumer hands out real ``confluent_kafka.Message`` objects, made
with the class's constructor."""

from __future__ import annotations

from typing import Any

import pytest
from kafka import TopicPartition

from stream.sources.confluent import (
    ConfluentConsumer,
    Record,
    Records,
    record_offsets,
    record_values,
)

confluent_kafka = pytest.importorskip("confluent_kafka")


def Msg(topic: str, partition: int, offset: int, value: bytes | None,  # noqa: N802
        error: str | None = None, key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None) -> Any:
    """A real ``confluent_kafka.Message`` (the consumer reads it through the class's own
    accessors, so a look-alike object would not do)."""
    kw: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset,
                          "value": value, "key": key, "headers": headers}
    if error is not None:
        kw["error"] = confluent_kafka.KafkaError(confluent_kafka.KafkaError._FAIL, error)
    # (given as None, some arguments leave an exception set in confluent-kafka 2.16's
    # constructor, which a later call reports as a SystemError)
    return confluent_kafka.Message(**{k: v for k, v in kw.items() if v is not None})


class FakeRdkafka:
    """consume() hands out the queued batches; poll() the first message of the next."""

    def __init__(self, batches: list[list[Any]]) -> None:
        self.batches = batches

    def consume(self, n: int, timeout: float) -> list[Any]:
        if not self.batches:
            return []
        batch = self.batches.pop(0)
        assert len(batch) <= n
        return batch

    def poll(self, timeout: float) -> Any:
        return None


def _consumer(batches: list[list[Any]], topics: list[str],
              assigned: set[Any]) -> ConfluentConsumer:
    c = object.__new__(ConfluentConsumer)
    c._c = FakeRdkafka(batches)
    c._assigned = set(assigned)
    c._topic = topics[0] if len(topics) == 1 and not topics[0].startswith("^") else None
    return c


def _msgs(topic: str, partition: int, offsets: range) -> list[Any]:
    return [Msg(topic, partition, o, b"v%d" % o) for o in offsets]


def test_one_partition_is_one_batch_and_records_read_like_kafka_pythons() -> None:
    tp = TopicPartition("events", 3)
    msgs = _msgs("events", 3, range(10, 15))
    msgs[2] = Msg("events", 3, 12, None, key=b"k", headers=[("ce-id", b"1")])
    c = _consumer([msgs], ["events"], {tp})
    polled = c.poll(100, 500)
    assert list(polled) == [tp]
    recs = polled[tp]
    assert isinstance(recs, Records) and len(recs) == 5
    assert record_values(recs) == [b"v10", b"v11", b"", b"v13", b"v14"]
    assert record_offsets(recs) == [10, 11, 12, 13, 14]
    assert recs.last_offset() == 14
    r = recs[2]
    assert isinstance(r, Record)
    assert (r.topic, r.partition, r.offset, r.value, r.key, r.headers) == (
        "events", 3, 12, None, b"k", [("ce-id", b"1")])
    assert recs[-1].offset == 14
    assert [x.offset for x in recs] == [10, 11, 12, 13, 14]
    assert record_offsets(recs[1:3]) == [11, 12]
    assert isinstance(recs[1:3], Records)


@pytest.mark.parametrize("topics", [["events"], ["events", "labels"], ["^ev.*"]])
def test_partitions_and_topics_are_split_in_order(topics: list[str]) -> None:
    multi = len(topics) > 1
    a, b = TopicPartition("events", 0), TopicPartition("events", 1)
    lab = TopicPartition("labels", 0)
    msgs = [Msg("events", 0, 0, b"a0"), Msg("events", 1, 0, b"b0"),
            Msg("events", 0, 1, b"a1"), Msg("events", 1, 1, b"b1")]
    if multi:
        msgs.insert(2, Msg("labels", 0, 7, b"l7"))
    assigned = {a, b, lab} if multi else {a, b}
    polled = _consumer([msgs], topics, assigned).poll(100, 500)
    assert {tp: record_values(r) for tp, r in polled.items()} == {
        a: [b"a0", b"a1"], b: [b"b0", b"b1"], **({lab: [b"l7"]} if multi else {})}
    assert {tp: record_offsets(r) for tp, r in polled.items()} == {
        a: [0, 1], b: [0, 1], **({lab: [7]} if multi else {})}


def test_errors_are_dropped_and_unassigned_partitions_left_out() -> None:
    a, gone = TopicPartition("events", 0), TopicPartition("events", 5)
    msgs = [Msg("events", 0, 0, b"a0"), Msg("events", 0, 1, None, error="boom"),
            Msg("events", 5, 9, b"x"), Msg("events", 0, 2, b"a2")]
    c = _consumer([msgs, _msgs("events", 5, range(10, 12)),
                   [Msg("events", 0, 3, None, error="boom")]], ["events"], {a})
    polled = c.poll(100, 500)
    assert list(polled) == [a]
    assert record_offsets(polled[a]) == [0, 2]
    assert c.poll(100, 500) == {}  # all of a partition that was taken away
    assert c.poll(100, 500) == {}  # only an error
    assert gone not in c.assignment()


def test_record_helpers_take_kafka_python_records_too() -> None:
    class KpRecord:
        def __init__(self, offset: int, value: bytes | None) -> None:
            self.offset, self.value = offset, value

    recs = [KpRecord(4, b"x"), KpRecord(5, None)]
    assert record_values(recs) == [b"x", b""]
    assert record_offsets(recs) == [4, 5]


def test_runs_of_partitions_are_joined_in_order() -> None:
    """A batch is a few runs of one partition each (a fetch response's order); a partition's
    runs are joined in the order of the batch."""
    a, b, c = (TopicPartition("events", p) for p in (0, 1, 2))
    msgs = (_msgs("events", 0, range(0, 3)) + _msgs("events", 1, range(0, 2))
            + _msgs("events", 0, range(3, 5)) + _msgs("events", 2, range(7, 8))
            + _msgs("events", 1, range(2, 6)))
    polled = _consumer([msgs], ["events"], {a, b, c}).poll(100, 500)
    assert {tp: record_offsets(r) for tp, r in polled.items()} == {
        a: [0, 1, 2, 3, 4], b: [0, 1, 2, 3, 4, 5], c: [7]}
    assert record_values(polled[b]) == [b"v0", b"v1", b"v2", b"v3", b"v4", b"v5"]
