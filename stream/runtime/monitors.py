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
import logging
import time
from collections.abc import Sequence
from typing import Any, overload

import numpy as np

from stream.config import Config, require_kafka
from stream.runtime.frames import BAD_FRAME, Frame, FrameError, is_frame, unpack
from stream.runtime.pooltap import PoolTap, record_of, thresholds_of
from stream.runtime.runner import WRITE_BACKOFF_S, KafkaRunner
from stream.sources.confluent import Fetched
from stream.sources.kafka import connection_error, record_values

log = logging.getLogger("streamdrift.run")

#: the monitors poll at most this many frames at a time (a frame holds at most
#: ``max_poll_records`` / FRAMES_PER_POLL messages: a poll, at most ``max_poll_records``)
FRAMES_PER_POLL = 2


def frame_events(max_poll_records: int) -> int:
    """The most messages the first stage puts in one frame."""
    return max(1, max_poll_records // FRAMES_PER_POLL)


#: where a message of a frame came from (what a dead letter names), and its bytes
SourceRecord = Fetched


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
        #: per frame or record: the merge positions of its messages (-1: none)
        self._positions: list[np.ndarray] = []

    def add_frame(self, offset: int, frame: Frame) -> None:
        self._starts.append(len(self.values))
        self._parts.append((offset, frame, None))
        self.values += [v or b"" for v in frame.values]
        self._positions.append(np.full(len(frame), -1, dtype=np.int64)
                               if frame.positions is None else frame.positions)

    def add_record(self, record: Any) -> None:
        self._starts.append(len(self.values))
        self._parts.append((int(record.offset), None, record))
        self.values.append(record.value or b"")
        self._positions.append(np.full(1, -1, dtype=np.int64))

    def merge_positions(self) -> np.ndarray:
        """The merge position of each message (frames version 2; -1 where none)."""
        if not self._positions:
            return np.empty(0, dtype=np.int64)
        return np.concatenate(self._positions).astype(np.int64, copy=False)

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
    """:class:`KafkaRunner` on the repartition topic (built with :func:`monitor_config`).

    With ``source.repartition.pooled`` it also publishes, per poll and partition, the
    pooled columns' standardised values to the pool topic before it commits or
    checkpoints (pooltap.py), and runs a pool member candidate (pool.py) on a thread of
    its own."""

    def __init__(self, config: Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._values = _values
        rp = config.source.repartition
        self.pooled = rp is not None and rp.pooled
        # with pooling off too: gives back the thresholds a pooled run muted
        self.tap = PoolTap(self.pooled, thresholds_of(self.pipeline))
        self.pipeline.pool_tap = self.tap
        from stream.runtime.pool import PoolMember, PoolOutbox

        self.pool_out: PoolOutbox | None = None
        self.pool: PoolMember | None = None
        if self.pooled:
            assert rp is not None
            self.pool_out = PoolOutbox(self.kafka, rp.pool_topic, self.health,
                                       rp.pool_outbox_max_bytes)
            self.pool = PoolMember(config, self.pipeline, self.stop_event)
            self.health.pool = self.pool
            self.health.pool_outbox = self.pool_out
        #: since when the monitors take no new batch (the outbox is full); None: they do
        self.holding: float | None = None

    def run(self, max_events: int | None = None, idle_timeout: float | None = None) -> int:
        if self.pool is None:
            return super().run(max_events=max_events, idle_timeout=idle_timeout)
        assert self.pool_out is not None
        from kafka.errors import KafkaError

        try:
            self.pool_out.ensure_topic()
        except KafkaError as exc:  # unreachable, refused: as the runner says it
            raise connection_error(self.kafka, exc) from None
        thread = self.pool.start()
        try:
            return super().run(max_events=max_events, idle_timeout=idle_timeout)
        finally:
            self.pool.stop()
            thread.join(timeout=30)
            self.pool_out.close()

    def _iteration(self, max_events: int | None) -> bool:
        out = self.pool_out
        if out is not None and out.full():
            return self._hold(out)
        if self.holding is not None:
            self._release()
        return super()._iteration(max_events)

    def _hold(self, out: Any) -> bool:
        """The pool outbox is full (publishing fails): take no new batch until it is
        published.  The partitions are paused and whatever a poll still returns (a
        partition just assigned) is given back by a seek, so nothing is skipped with
        either client whatever pause() does with records already fetched; the loop keeps
        polling (group membership, ``max.poll.interval.ms``, rebalances and restores)
        and retries the publish with the checkpoint and commit, at their back-off.

        Every partition is paused at once: kafka-python 3.0.12 never returns again the
        parsed records of a partition paused while they were next in line if another
        partition's records are consumed before it is resumed (its fetcher restores them
        only while nothing else is in line), which pausing some partitions only risks."""
        if self.holding is None:
            self.holding = time.monotonic()
            log.warning("the pool outbox is full: the monitors take no new batch until the "
                        "pooled values are published (pooled and per-monitor detection "
                        "lag meanwhile; nothing is dropped)", extra={
                            "bytes": out.bytes, "max_bytes": out.max_bytes,
                            "records": len(out.records), "topic": out.topic})
        self._pause_assigned()
        polled = self._poll() or {}  # (a partition just assigned is restored as the loop does)
        if self.to_restore or self.rebalanced:
            self._restore(polled)
        self._rewind(polled)
        self._pause_assigned()  # a partition assigned in that poll
        self._last_data = time.monotonic()  # records wait: not idle
        self.pipeline.heartbeat()
        self._checkpoint_and_commit()
        return True

    def _pause_assigned(self) -> None:
        parts = set(self.consumer.assignment()) - set(self.consumer.paused())
        if parts:
            self.consumer.pause(*parts)

    def _release(self) -> None:
        assert self.holding is not None
        if self.pending is None:  # else the dead-letter retries resume them when done
            paused = set(self.consumer.paused()) - set(self.blocked)
            if paused:
                self.consumer.resume(*paused)
        log.info("the pool outbox is published: the monitors take batches again",
                 extra={"seconds": round(time.monotonic() - self.holding, 1)})
        self.holding = None

    def _checkpoint(self, tps: Any, timeout_s: float, in_callback: bool = False) -> bool:
        # also the checkpoint on revocation: never a state past values not yet published
        if self.pool_out is not None and not self.pool_out.flush(connect=not in_callback):
            return False
        return super()._checkpoint(tps, timeout_s, in_callback)

    def _checkpoint_and_commit(self, force: bool = False) -> None:
        # the pooled values are published before the offsets (and states) that cover them
        if self.pool_out is not None and not self.pool_out.flush():
            self.writes_paused_until = time.monotonic() + WRITE_BACKOFF_S
            return
        super()._checkpoint_and_commit(force)

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
        self.tap.taken.clear()
        done, poison, drift = super()._process(messages)
        if self.pool_out is not None:
            for tp, m in messages.items():
                rec = record_of(self.tap.taken.get(self._key(tp)), m.merge_positions())
                if rec is not None:
                    self.pool_out.add(rec)
        self.tap.taken.clear()
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
