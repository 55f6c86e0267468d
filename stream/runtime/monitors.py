"""The second stage of ``source.repartition``: the monitors on the repartition topic.

:class:`FramedRunner` is :class:`~stream.runtime.runner.KafkaRunner` with one step more:
each polled record of the repartition topic is a frame of many source messages
(frames.py), unpacked into the messages the runner decodes and processes as it does
without repartition.  Every message of a frame carries the frame's offset, so a frame is
processed (checkpointed, committed, replayed) as a whole; a poison message is counted by
reason and dead-lettered here with the source topic, partition and offset the frame
recorded; a record that is not a readable frame is counted as ``bad_frame`` and
dead-lettered as it is.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence
from typing import Any, overload

from stream.config import Config, require_kafka
from stream.runtime.frames import BAD_FRAME, Frame, FrameError, is_frame, unpack
from stream.runtime.runner import KafkaRunner
from stream.sources.kafka import record_values

#: the monitors poll at most this many frames at a time (a frame holds at most
#: ``max_poll_records`` / FRAMES_PER_POLL messages: a poll, at most ``max_poll_records``)
FRAMES_PER_POLL = 2


def frame_events(max_poll_records: int) -> int:
    """The most messages the first stage puts in one frame."""
    return max(1, max_poll_records // FRAMES_PER_POLL)


@dataclasses.dataclass(frozen=True)
class SourceRecord:
    """Where a message of a frame came from (what a dead letter names), and its bytes."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


@dataclasses.dataclass(frozen=True)
class Message:
    """One message of a frame, at the frame's position on the repartition topic."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    source: SourceRecord


class Messages(Sequence[Message]):
    """The messages of the frames of one internal partition, in order (built lazily: the
    runner reads ``values`` for the whole batch, single messages only for its logs, dead
    letters and restores)."""

    def __init__(self, topic: str, partition: int) -> None:
        self.topic, self.partition = topic, partition
        self.values: list[bytes] = []
        #: per frame: its first message's index, record offset, and the frame (None for a
        #: record that is a message of its own)
        self._starts: list[int] = []
        self._parts: list[tuple[int, Frame | None, Any]] = []

    def add_frame(self, offset: int, frame: Frame) -> None:
        self._starts.append(len(self.values))
        self._parts.append((offset, frame, None))
        self.values += [v or b"" for v in frame.values]

    def add_record(self, record: Any) -> None:
        self._starts.append(len(self.values))
        self._parts.append((int(record.offset), None, record))
        self.values.append(record.value or b"")

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, i: int) -> Message: ...
    @overload
    def __getitem__(self, i: slice) -> list[Message]: ...

    def __getitem__(self, i: int | slice) -> Message | list[Message]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = bisect.bisect_right(self._starts, i) - 1
        offset, frame, record = self._parts[k]
        if frame is None:
            src = SourceRecord(record.topic, record.partition, offset,
                               int(getattr(record, "timestamp", 0) or 0),
                               getattr(record, "key", None), record.value)
        else:
            j = i - self._starts[k]
            src = SourceRecord(frame.topics[int(frame.topic_index[j])],
                               int(frame.partitions[j]), int(frame.offsets[j]),
                               int(frame.timestamps[j]), frame.keys[j], frame.values[j])
        return Message(self.topic, self.partition, offset, src.value, src)


def _values(recs: Any) -> list[bytes]:
    return recs.values if isinstance(recs, Messages) else record_values(recs)


def monitor_config(config: Config) -> Config:
    """The configuration of the second stage: the repartition topic, read from the start in
    the monitors' own consumer group (``source.repartition.group_id``), at most
    :data:`FRAMES_PER_POLL` frames per poll."""
    k = require_kafka(config)
    rp = config.source.repartition
    assert rp is not None
    kafka = dataclasses.replace(k, topics=(rp.topic,), group_id=rp.group_id,
                                auto_offset_reset="earliest",
                                max_poll_records=FRAMES_PER_POLL)
    return dataclasses.replace(config, source=dataclasses.replace(config.source, kafka=kafka))


class FramedRunner(KafkaRunner):
    """:class:`KafkaRunner` on the repartition topic (built with :func:`monitor_config`)."""

    def __init__(self, config: Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._values = _values

    def _confluent_consumer(self) -> Any:
        consumer = super()._confluent_consumer()
        self._values = _values
        return consumer

    def _process(self, polled: dict[Any, list[Any]]) -> tuple[
            dict[Any, int], list[tuple[Any, str]], list[Any]]:
        messages: dict[Any, Any] = {}
        bad: list[tuple[Any, str]] = []
        for tp, recs in polled.items():
            m = Messages(tp.topic, tp.partition)
            for r in recs:
                if not is_frame(r.value):
                    m.add_record(r)  # a message of its own (written before frames)
                    continue
                try:
                    m.add_frame(int(r.offset), unpack(r.value))
                except FrameError:
                    bad.append((r, BAD_FRAME))
            messages[tp] = m
        done, poison, drift = super()._process(messages)
        for tp, recs in polled.items():
            if recs:  # also a partition whose records were all bad frames
                done[tp] = int(recs[-1].offset) + 1
        if bad:
            self.pipeline.count_rejected({BAD_FRAME: len(bad)})
            if self.config.source.dead_letter is not None:
                poison = bad + poison
        return done, poison, drift

    def _write_dead_letters(self, entries: list[tuple[Any, str]]) -> list[tuple[Any, str]]:
        # a message of a frame is dead-lettered with its source coordinates and key
        return super()._write_dead_letters([(getattr(r, "source", r), why)
                                            for r, why in entries])
