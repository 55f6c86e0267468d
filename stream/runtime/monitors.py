"""The second stage of ``source.repartition``: the monitors on the repartition topic.

:class:`FramedRunner` is :class:`~stream.runtime.runner.KafkaRunner` with one step more:
each polled record of the repartition topic is a frame of many source messages
(frames.py), unpacked into the messages the runner decodes and processes as it does
without repartition.  Every message of a frame carries the frame's offset, so a frame is
processed (checkpointed, committed, replayed) as a whole; a poison message is counted by
reason and dead-lettered here with the source topic, partition and offset the frame
recorded; a record that is not a readable frame is counted as ``bad_frame`` and
dead-lettered as it is.

Frames of version 3 (several first-stage writers, issue 14) go through a
:class:`~stream.runtime.writermerge.WriterMerge` per internal partition instead
(mergerun.py): the messages it releases are processed in its order (by event time), each
at its own frame's offset; the partition is committed and checkpointed no further than the
oldest frame the merge still holds messages of, with the merge's state in the checkpoint.
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
from stream.runtime import poolkeys
from stream.runtime.frames import BAD_FRAME, Frame, FrameError, is_frame, unpack
from stream.runtime.mergerun import MERGE_KEY, PartitionMerges
from stream.runtime.pooltap import PoolTap, record_of, thresholds_of
from stream.runtime.runner import WRITE_BACKOFF_S, KafkaRunner
from stream.runtime.writermerge import COLUMNS, Released
from stream.sources.confluent import Fetched
from stream.sources.kafka import connection_error, record_values

log = logging.getLogger("streamdrift.run")

#: the monitors poll at most this many frames at a time (a frame holds at most
#: ``max_poll_records`` / FRAMES_PER_POLL messages: a poll, at most ``max_poll_records``)
FRAMES_PER_POLL = 2


def frame_events(max_poll_records: int) -> int:
    """The most messages the first stage puts in one frame."""
    return max(1, max_poll_records // FRAMES_PER_POLL)


OFFSET, ROW = COLUMNS.index("offset"), COLUMNS.index("row")
LOWEST = -(2**63)

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
        #: per frame or record: the merge positions of its messages (-1: none), and their
        #: keys in the several-writer order (released by a merge; else the lowest key)
        self._positions: list[np.ndarray] = []
        self._keys: list[np.ndarray] = []

    def add_frame(self, offset: int, frame: Frame) -> None:
        self._starts.append(len(self.values))
        self._parts.append((offset, frame, None))
        self.values += [v or b"" for v in frame.values]
        self._positions.append(np.full(len(frame), -1, dtype=np.int64)
                               if frame.positions is None else frame.positions)
        self._keys.append(np.full((len(frame), 4), LOWEST, dtype=np.int64))

    def add_record(self, record: Any) -> None:
        self._starts.append(len(self.values))
        self._parts.append((int(record.offset), None, record))
        self.values.append(record.value or b"")
        self._positions.append(np.full(1, -1, dtype=np.int64))
        self._keys.append(np.full((1, 4), LOWEST, dtype=np.int64))

    def add_released(self, rel: Released) -> None:
        """Messages a :class:`WriterMerge` released (of version-3 frames), in its order:
        each carries the offset of its own frame."""
        if not len(rel):
            return
        self._starts.append(len(self.values))
        self._parts.append((-1, None, rel))
        self.values += [v or b"" for v in rel.values]
        offsets, rows = rel.column("offset"), rel.column("row")
        positions = np.full(len(rel), -1, dtype=np.int64)
        for o, frame in rel.frames.items():  # (a loop over frames)
            at = offsets == o
            if frame.positions is not None:
                positions[at] = frame.positions[rows[at]]
        self._positions.append(positions)
        self._keys.append(rel.columns[:, :4])

    def keys(self) -> np.ndarray:
        """int64 (n, 4): each message's key in the several-writer order (a message not
        released by a merge: the lowest key, folded by the pool as late)."""
        return np.concatenate(self._keys) if self._keys else np.empty((0, 4), np.int64)

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
        if isinstance(record, Released):  # released by the merge: the row of its frame
            j = i - self._starts[k]
            offset = int(record.columns[j, OFFSET])
            frame, j = record.frames[offset], int(record.columns[j, ROW])
            src = SourceRecord(frame.topics[int(frame.topic_index[j])],
                               int(frame.partitions[j]), int(frame.offsets[j]),
                               int(frame.timestamps[j]), frame.keys[j], frame.values[j])
        elif frame is None:
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
        from stream.runtime.pool import PoolMember
        from stream.runtime.pooloutbox import PoolOutbox

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
        #: the several-writer merges of the internal partitions (mergerun.py)
        self.merges = PartitionMerges()
        self.health.writer_merge = self.merges
        #: the loop's own poll (not the hold's): an idle one polls the merges too
        self._ticking = False

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
        self._ticking = True
        try:
            return super()._iteration(max_events)
        finally:
            self._ticking = False

    def _poll(self) -> dict[Any, list[Any]] | None:
        """The poll; on the loop's own, the merges of the partitions it returned nothing
        for are polled too (a writer silent for ``max_wait_s`` is left out, and what that
        releases must not wait for the next record): such a partition is returned with no
        records, its released messages kept for :meth:`_process`."""
        polled = super()._poll()
        pm = self._pm()
        if polled is None or not self._ticking or not pm.merges or self.pending is not None \
                or self.to_restore or self.rebalanced:
            return polled
        idle = set(pm.merges) & set(self.done) - set(polled) - set(self.consumer.paused())
        for tp in pm.tick(idle):
            polled[tp] = []
        return polled

    def _pm(self) -> PartitionMerges:
        pm = getattr(self, "merges", None)
        if pm is None:  # (a runner built without __init__: the unit tests')
            pm = self.merges = PartitionMerges()
        return pm

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
        pm = self._pm()
        pm.exporting.clear()
        ok = super()._checkpoint(tps, timeout_s, in_callback)
        if ok:
            pm.saved.update(pm.exporting)
        pm.exporting.clear()
        return ok

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
        """Frames of version 3 go through their partition's :class:`WriterMerge`, and the
        messages it releases are processed in its order; a frame of version 1 or 2, or a
        plain record, is processed at once as before, also on a partition that has a merge
        (a rolling upgrade of the first stage mixes them: such a message is not ordered
        with the merged ones).  A version-3 frame the merge refuses (an offset out of order)
        is counted and dead-lettered as ``bad_frame``, as an unreadable one."""
        pm = self._pm()
        messages: dict[Any, Any] = {}
        bad: list[tuple[Any, str]] = []
        for tp, recs in polled.items():
            m = Messages(tp.topic, tp.partition)
            ticked = pm.ticked.pop(tp, None)
            if ticked is not None:
                m.add_released(ticked)
            for r in recs:
                off = int(r.offset)
                if not is_frame(r.value):
                    if not pm.replayed(tp, off):
                        m.add_record(r)  # a message of its own (written before frames)
                    continue
                try:
                    frame = unpack(r.value)
                except FrameError:
                    if not pm.replayed(tp, off):
                        bad.append((r, BAD_FRAME))
                    continue
                if frame.writer is None:
                    if not pm.replayed(tp, off):
                        m.add_frame(off, frame)
                    continue
                try:
                    m.add_released(pm.add(tp, off, frame))
                except ValueError as exc:
                    log.warning("a frame the several-writer merge refuses: %s", exc,
                                extra={"topic": tp.topic, "partition": tp.partition,
                                       "offset": off})
                    bad.append((r, BAD_FRAME))
            if recs and pm.has(tp):
                pm.read[tp] = int(recs[-1].offset)
            messages[tp] = m
        self.tap.taken.clear()
        done, poison, drift = super()._process(messages)
        if self.pool_out is not None:
            for tp, m in messages.items():
                taken = self.tap.taken.get(self._key(tp))
                rec = self._keyed_record(tp, m, taken) if pm.has(tp) \
                    else record_of(taken, m.merge_positions())
                if rec is not None:
                    self.pool_out.add(rec)
        self.tap.taken.clear()
        for tp, recs in polled.items():
            if recs:  # also a partition whose records were all bad frames
                done[tp] = int(recs[-1].offset) + 1
            if pm.has(tp):  # no further than the oldest frame the merge holds messages of
                pm.delivered[tp] = pm.delivered.get(tp, 0) + len(messages[tp])
                at = pm.done(tp, int(recs[-1].offset) if recs else None, self.done.get(tp))
                if at is None:
                    done.pop(tp, None)
                else:
                    done[tp] = at
        if bad:
            self.pipeline.count_rejected({BAD_FRAME: len(bad)})
            if self.config.source.dead_letter is not None:
                poison = bad + poison
        return done, poison, drift

    def _keyed_record(self, tp: Any, m: Messages, taken: Any) -> bytes | None:
        """The pool record (version 2, poolkeys.py) of a partition of several writers: its
        messages of this poll, or, with none, its promise if it moved (a heartbeat)."""
        pm = self._pm()
        promise = poolkeys.promise_of(pm.merges[tp])
        # partition -> the promise of its last record (a runner built without __init__:
        # the unit tests')
        promised: dict[Any, Any] = self.__dict__.setdefault("_promised", {})
        if not len(m) and promise == promised.get(tp):
            return None
        promised[tp] = promise
        return poolkeys.record_of(taken, tp.partition, pm.epochs.get(tp, 0),
                                  pm.delivered.get(tp, 0), m.keys(), promise)

    def _write_dead_letters(self, entries: list[tuple[Any, str]]) -> list[tuple[Any, str]]:
        # a message of a frame is dead-lettered with its source coordinates and key
        return super()._write_dead_letters([(getattr(r, "source", r), why)
                                            for r, why in entries])

    # -- the several-writer merges' checkpoints and restores (mergerun.py) ---------------
    def _export(self, tp: Any) -> dict[str, dict[str, Any]]:
        states = super()._export(tp)
        entry = self._pm().export(tp) if states else None
        if entry is None:
            return states
        return {name: {**state, MERGE_KEY: entry} for name, state in states.items()}

    def _moved(self, tp: Any) -> bool:
        return super()._moved(tp) or self._pm().moved(tp)

    def _forget(self, tp: Any, keep_monitors: bool) -> None:
        super()._forget(tp, keep_monitors)
        if keep_monitors:  # read again from the offset it covers, if it comes back unchanged
            self._pm().rewind(tp)
        else:
            self._pm().drop(tp)

    def _restore(self, polled: dict[Any, list[Any]]) -> None:
        super()._restore(polled)
        pm = self._pm()
        keep = set(self.done) | set(self.parked) | set(self.lost) | self.to_restore
        for tp in set(pm.merges) - keep:  # (their monitors were dropped)
            pm.drop(tp)

    def _restore_without_state(self, tp: Any, polled: dict[Any, list[Any]]) -> None:
        parked = self.parked.get(tp)
        super()._restore_without_state(tp, polled)
        if parked is None or self.done.get(tp) != parked:  # fresh monitors
            self._pm().drop(tp)

    def _restore_one(self, tp: Any, latest: dict[tuple[str, str, int], Any],
                     polled: dict[Any, list[Any]]) -> None:
        """As the runner's, and the partition's merge is restored from the checkpoint its
        detectors' state came from (mergerun.py); the models skip, in place of the leading
        messages up to their checkpoint's offset, the messages their state holds beyond the
        oldest."""
        pm = self._pm()
        pm.drop(tp)
        super()._restore_one(tp, latest, polled)
        saved: dict[str, dict[str, Any]] = {}
        for name in self.pipeline.fresh:
            cp = latest.get((name, tp.topic, tp.partition))
            if cp is None or cp.baseline_id != self.pipeline.baseline_ids[name] \
                    or cp.calibration_key != self.pipeline.baselines[name].key:
                continue
            entry = cp.state.get(MERGE_KEY)
            if isinstance(entry, dict) and isinstance(entry.get("merge"), dict):
                saved[name] = entry
        if not saved or self.starts.get(tp, ("",))[0] != "checkpoint":
            return
        try:
            skips = pm.restore(tp, saved)
        except (KeyError, TypeError, ValueError) as exc:  # a bad checkpoint: go on
            log.warning("the several-writer merge of a checkpoint does not restore: %s; "
                        "it starts empty", exc,
                        extra={"topic": tp.topic, "partition": tp.partition})
            pm.drop(tp)
            return
        self.skip_until.pop(tp, None)  # (offsets: the merge's order is not theirs)
        if skips:
            self.skip_until[tp] = skips
            pm.counted.add(tp)
        elif len(saved) == len(self.pipeline.fresh) and tp in self.done:
            self.checkpointed[tp] = self.done[tp]
            pm.saved[tp] = pm.delivered[tp]
        log.info("several-writer merge restored", extra={
            "topic": tp.topic, "partition": tp.partition, "offset": self.done.get(tp),
            "delivered": pm.delivered[tp], "skips": skips})

    def _skip_for(self, tp: Any, recs: Any) -> dict[str, int] | None:
        ahead = self.skip_until.get(tp)
        pm = self._pm()
        if ahead is None or tp not in pm.counted:
            return super()._skip_for(tp, recs)
        skip = pm.skip(tp, ahead, len(recs))
        if not ahead:
            del self.skip_until[tp]
        return skip
