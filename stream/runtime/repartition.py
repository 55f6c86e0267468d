"""The first stage of ``streamdrift run`` with ``source.repartition``: re-mix a keyed topic.

A topic keyed by a feature (tenant, region, country ...) puts a different slice of the
traffic in each partition, and a monitor that compares one partition with the model-wide
baseline alarms for ever.  With ``source.repartition`` the run has two stages, each a
consumer of its own on its own thread:

1. :class:`Repartitioner` consumes the source topics in ``source.kafka.group_id``, merges
   the records of its partitions **in Kafka-timestamp order** (catchup.merge_plan; a
   partition with nothing buffered that may be behind is waited for, and records newer
   than the wall clock minus ``lateness_ms`` are held back: catchup.py), and writes them
   (original bytes, key, timestamp, source position) **spread over the repartition topic's
   partitions by a hash of their source position** (:func:`spread`), in **frames** of many
   messages (frames.py).  Each message carries its dense **merge position** (frames v2) for
   the pooled CUSUM (pool.py), committed with the source offsets (commit metadata,
   :data:`SEQ_PREFIX`).  It does not decode (the monitors do), and commits a source offset
   only after every frame before it was acked.  One member of the group forwards
   everything (onewriter.py), or, with ``writers: several``, each its own partitions, in
   version-3 frames with a watermark (writers.py).
2. The monitors, :class:`~stream.runtime.monitors.FramedRunner` (the
   :class:`~stream.runtime.runner.KafkaRunner` of a plain run, unpacking frames), consume
   the repartition topic in their own group (:func:`monitor_config`), with per-partition
   state, checkpoints and rebalance handling as without repartition; a frame is processed
   and committed as a whole.

At-least-once end to end: a crash of the first stage writes again what it forwarded since
its last commit (at most one merged batch, never more messages than its partitions had
buffered); the second stage's bound is that of ``streamdrift run``, counted in frames.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import logging
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from stream.config import Config, require_kafka
from stream.engine.figures import RunnerHealth
from stream.engine.pipeline import Pipeline
from stream.runtime.catchup import CatchUp, Lateness, merge_plan
from stream.runtime.frames import blob_lengths, cuts, pack_columns, pick, record_columns
from stream.runtime.monitors import frame_events
from stream.runtime.onewriter import STRATEGY
from stream.runtime.writers import ALIGN_STEP_S, Alignment, Writer, tick
from stream.sinks.producer import create_topic, send_and_wait
from stream.sources.commits import CommitFlight, begin_commit, settle_commit
from stream.sources.kafka import (
    kafka_client_kwargs,
    kafka_python_consumer,
    partition_lag,
    partition_names,
)

log = logging.getLogger("streamdrift.repartition")

#: at most this many records (times max_poll_records) are buffered per partition; what a
#: poll returns beyond that is given back (sought to) and read again later
BUFFER_POLLS = 4
#: bound of one forward (send, flush, acknowledgements)
FORWARD_TIMEOUT_S = 10.0
#: pause after a failed forward or commit before the next attempt
RETRY_BACKOFF_S = 1.0
LAG_INTERVAL_S = 1.0
#: the commit metadata of the source offsets: this prefix and the next merge position
SEQ_PREFIX = "streamdrift-seq="


def parse_seq(metadata: Any) -> int | None:
    """The next merge position a commit's metadata names (None: none, or not ours).

    >>> parse_seq("streamdrift-seq=42"), parse_seq(""), parse_seq(None), parse_seq("x=1")
    (42, None, None, None)
    """
    if not isinstance(metadata, str) or not metadata.startswith(SEQ_PREFIX):
        return None
    tail = metadata[len(SEQ_PREFIX):]
    return int(tail) if tail.isdigit() else None


_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def spread(records: Sequence[Any], partitions: int) -> list[int]:
    """The repartition-topic partition of each source record: splitmix64 of (source topic,
    partition, offset), modulo ``partitions``.

    Not round-robin over the merged order, which interleaves the source partitions
    regularly (A, B, C, D, A, ...): over two internal partitions that sent A and C to one,
    B and D to the other, each a slice of the keys (false ``c1`` episodes).  A hash of the
    source position is unrelated to the key and the order, and a record written again
    lands where it landed before.

    >>> class R:
    ...     def __init__(self, p, o): self.topic, self.partition, self.offset = "t", p, o
    >>> recs = [R(p, o) for o in range(4000) for p in range(4)]
    >>> import collections
    >>> split = collections.Counter((r.partition, q) for r, q in zip(recs, spread(recs, 2)))
    >>> all(1900 < split[(p, q)] < 2100 for p in range(4) for q in range(2))
    True
    >>> spread(recs[:6], 3) == spread(recs[:6], 3)
    True
    """
    if partitions <= 1:
        return [0] * len(records)
    topics = {t: zlib.crc32(t.encode()) for t in {r.topic for r in records}}
    n = len(records)
    return _spread(np.fromiter((topics[r.topic] for r in records), np.uint64, n),
                   np.fromiter((r.partition for r in records), np.int64, n),
                   np.fromiter((r.offset for r in records), np.int64, n),
                   partitions).tolist()


def _spread(crcs: np.ndarray, parts: np.ndarray, offsets: np.ndarray, partitions: int,
            ) -> np.ndarray:
    """:func:`spread` of columns: the CRC-32 of each record's topic, its partition and
    offset."""
    if partitions <= 1:
        return np.zeros(len(offsets), dtype=np.int64)
    x: np.ndarray = ((crcs.astype(np.uint64) << np.uint64(32))
                     ^ (parts.astype(np.uint64) << np.uint64(40)) ^ offsets.astype(np.uint64))
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * _MIX1
        x = (x ^ (x >> np.uint64(27))) * _MIX2
        x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(partitions)).astype(np.int64)


class Repartitioner:
    """Stage 1: source topics -> validated, time-merged, hash-spread -> repartition topic."""

    def __init__(self, config: Config, pipeline: Pipeline,
                 stop: threading.Event | None = None) -> None:
        self.config = config
        self.kafka = require_kafka(config)
        rp = config.source.repartition
        assert rp is not None, "source.repartition is not configured"
        self.rp = rp
        self.pipeline = pipeline
        self.stop_event = stop or threading.Event()
        self.health = RunnerHealth()
        self.health.count_repartitioned("ok", 0)
        self.health.count_repartitioned("failed", 0)
        self.consumer: Any = None
        self.producer: Any = None
        #: partition -> buffered records (offset order) and their timestamps
        self.buffers: dict[Any, list[Any]] = {}
        self.stamps: dict[Any, np.ndarray] = {}
        #: whether a partition with nothing buffered is waited for (catchup.py)
        self.catchup = CatchUp()
        #: whether the partitions that set the merge limit have all of its millisecond
        #: (merge_plan's ``complete``; the same check, its own progress and warnings)
        self.tail = CatchUp()
        self.lateness = Lateness(rp.lateness_ms)
        #: partitions assigned and not yet sought to their committed offset
        self.to_seek: set[Any] = set()
        #: partition -> next offset to read; everything before is forwarded and acknowledged
        self.done: dict[Any, int] = {}
        self.committed: dict[Any, int] = {}
        #: the source offset commit sent and not answered yet (_commit)
        self.commit_flight: CommitFlight | None = None
        #: partition -> next offset to fetch (after its newest polled record)
        self.fetched: dict[Any, int] = {}
        self.topic_ready = False
        self.retry_at = 0.0
        self.consumed = 0
        self.forwarded = 0
        #: the merge position of the next message forwarded (frames version 2)
        self.seq = 0
        #: where :attr:`seq` jumped (it numbers on from a commit of another writer): the
        #: position and the count of messages forwarded before it, so that
        #: :meth:`unread` counts messages, not positions
        self.segments: list[tuple[int, int]] = [(0, 0)]
        self.buffer_max = BUFFER_POLLS * self.kafka.max_poll_records
        #: the most messages in one frame (the monitors poll FRAMES_PER_POLL frames)
        self.frame_events = frame_events(self.kafka.max_poll_records)
        #: ``writers: several``: this process's writer (writers.py); None: one writer
        self.writer = Writer(rp) if rp.writers == "several" else None
        self.health.writer = self.writer  # (streamdrift_writer_unaligned)
        if self.writer is not None:
            self.writer.weights.earliest = self.kafka.auto_offset_reset == "earliest"
        #: the writers' watermark alignment (writers.Alignment), set by a two-stage runner
        self.align: Alignment | None = None
        #: whether this process's monitors hold an internal partition (None: not known yet),
        #: set by a two-stage runner; None: no monitors here (``--stage repartition``)
        self.view: Callable[[], bool | None] | None = None

    # -- clients ---------------------------------------------------------------------
    def _consumer(self) -> Any:
        # one writer at a time (onewriter.py), or several (writers.py); a strategy under
        # source.kafka.options wins
        k = dataclasses.replace(self.kafka, options={"partition_assignment_strategy": (
            STRATEGY if self.writer is None else self.writer.strategy), **self.kafka.options})
        revoked = self._on_revoked if self.writer is None else self.writer.revoking(
            self._on_revoked)  # (on kafka-python's IO thread: no heartbeat meanwhile)
        return kafka_python_consumer(k, self.config.source.max_message_bytes,
                                     self._on_assigned, revoked, revoked,
                                     self.health.count_consumer_restarts)

    def _producer(self) -> Any:
        """The producer of the repartition topic (a test can override it): librdkafka's with
        ``source.kafka.client: confluent-kafka`` (about 1 µs per record instead of tens),
        else kafka-python's."""
        from kafka import KafkaProducer

        ms = int(FORWARD_TIMEOUT_S * 1000)
        if self.kafka.client == "confluent-kafka":
            from stream.sources.confluent import librdkafka_producer

            return librdkafka_producer(
                self.kafka, acks="all",
                enable_idempotence=True, linger_ms=5, compression_type=self.rp.compression,
                message_timeout_ms=3 * ms,
                message_max_bytes=max(1_048_576, self.config.source.max_message_bytes + 4096))
        kw = kafka_client_kwargs(self.kafka)
        codec = None if self.rp.compression == "none" else self.rp.compression
        kw.update(acks="all", enable_idempotence=True, linger_ms=5, batch_size=65536,
                  compression_type=codec, max_block_ms=ms, request_timeout_ms=ms,
                  delivery_timeout_ms=3 * ms,
                  max_request_size=max(1_048_576, self.config.source.max_message_bytes + 4096))
        return KafkaProducer(**kw)

    def ensure_topic(self, timeout_s: float = 30.0) -> bool:
        """Create the repartition topic if missing; True if created.  An existing topic is
        used as it is, with a warning when its partition count differs from the setting."""
        from kafka import KafkaAdminClient

        from stream.config import ConfigError

        ms = max(1000, int(timeout_s * 1000))
        admin = KafkaAdminClient(**kafka_client_kwargs(self.kafka), request_timeout_ms=ms,
                                 bootstrap_timeout_ms=ms)
        try:
            if self.rp.topic in set(admin.list_topics()):
                meta = admin.describe_topics([self.rp.topic])
                n = len(meta[0].get("partitions", [])) if meta else None
                if n is not None and n != self.rp.partitions:
                    log.warning("the repartition topic exists with another partition count; "
                                "it is used as it is", extra={
                                    "topic": self.rp.topic, "partitions": n,
                                    "configured": self.rp.partitions})
                self.topic_ready = True
                return False
            error = create_topic(admin, self.rp.topic, ms,
                                 {"retention.ms": str(self.rp.retention_ms)},
                                 partitions=self.rp.partitions)
            if error is not None:
                raise ConfigError(
                    f"source.repartition.topic: cannot create {self.rp.topic!r}: error "
                    f"{error}; create it ({self.rp.partitions} partitions) or allow "
                    "streamdrift to")
            self.topic_ready = True
            log.info("repartition topic created", extra={
                "topic": self.rp.topic, "partitions": self.rp.partitions,
                "retention_ms": self.rp.retention_ms})
            return True
        finally:
            admin.close()

    def stop(self) -> None:
        self.stop_event.set()

    # -- rebalance callbacks (consumer IO thread: record only) ----------------------------
    def _on_assigned(self, assigned: set[Any]) -> None:
        if assigned:
            log.info("source partitions assigned",
                     extra={"partitions": partition_names(assigned)})
        self.to_seek |= assigned

    def _on_revoked(self, revoked: set[Any]) -> None:
        # everything forwarded is committed in the loop (or will be read again by the next
        # owner: a bounded duplicate); buffered records are dropped and read again
        self.to_seek -= revoked
        for tp in revoked:
            self._forget(tp)

    def _forget(self, tp: Any) -> None:
        self.buffers.pop(tp, None)
        self.stamps.pop(tp, None)
        self.catchup.forget(tp)
        self.tail.forget(tp)
        self.lateness.forget(tp)
        self.done.pop(tp, None)
        self.committed.pop(tp, None)
        self.fetched.pop(tp, None)

    def unread(self, last: int | None) -> int:
        """The messages this stage forwarded after merge position ``last`` (None: all of
        them); a jump of the positions (:attr:`segments`) holds no message."""
        if last is None:
            return self.forwarded
        starts = [p for p, _ in self.segments]
        k = bisect.bisect_right(starts, last) - 1
        if k < 0:
            return self.forwarded
        pos, count = self.segments[k]
        upto = self.segments[k + 1][1] if k + 1 < len(self.segments) else self.forwarded
        return self.forwarded - min(upto, count + last - pos + 1)

    def _committed_all(self, tps: list[Any]) -> dict[Any, int | None]:
        """The group's committed offsets of ``tps`` (one request where kafka-python's
        coordinator is at hand)."""
        coordinator = getattr(self.consumer, "_coordinator", None)
        if coordinator is None:
            return {tp: self.consumer.committed(tp, timeout_ms=2000) for tp in tps}
        got = coordinator.fetch_committed_offsets(set(tps), timeout_ms=2000)
        return {tp: None if got.get(tp) is None or got[tp].offset < 0 else int(got[tp].offset)
                for tp in tps}

    def _seek_assigned(self, polled: dict[Any, Any]) -> None:
        """Start newly assigned partitions at their committed offset (:meth:`_start_at`):
        kafka-python keeps the fetch position of a partition revoked and assigned again to
        the same consumer, which would skip the records that were buffered but not
        forwarded; the merge positions number on from the last commit's (of this writer
        or a previous one)."""
        assignment = set(self.consumer.assignment())
        self.to_seek &= assignment
        for tp in sorted(self.to_seek):
            polled.pop(tp, None)
            try:
                meta = self.consumer.committed(tp, metadata=True, timeout_ms=2000)
                committed = None if meta is None else int(meta.offset)
                seq = None if meta is None else parse_seq(meta.metadata)
                start = self._start_at(tp, committed)
            except Exception as exc:  # noqa: BLE001 - broker calls: retried next iteration
                log.warning("cannot start a source partition at its committed offset; "
                            "retried: %s: %s", type(exc).__name__, exc,
                            extra={"partitions": partition_names([tp])})
                continue  # not buffered: what it polls is dropped until the start works
            if seq is not None and seq > self.seq:
                self.seq = seq
                self.segments.append((seq, self.forwarded))
            if committed is not None:
                self.done[tp] = self.committed[tp] = committed
            if start is not None:
                self.fetched[tp] = start
            self.buffers[tp], self.stamps[tp] = [], np.empty(0, dtype=np.int64)
            self.catchup.forget(tp)
            self.tail.forget(tp)
            self.lateness.forget(tp)
            self.to_seek.discard(tp)

    def _start_at(self, tp: Any, committed: int | None) -> int | None:
        """Seek ``tp`` to ``committed`` (None: the ``auto_offset_reset`` end); the offset
        read next if known."""
        if committed is not None:
            self.consumer.seek(tp, committed)
        elif self.kafka.auto_offset_reset == "earliest":
            self.consumer.seek_to_beginning(tp)
        else:
            self.consumer.seek_to_end(tp)
        return committed

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> int:
        """Forward until stopped; returns the number of source messages consumed."""
        if not self.topic_ready:
            self.ensure_topic()
        self.producer = self._producer()
        self.consumer = self._consumer()
        log.info("repartitioning", extra={
            "topics": list(self.kafka.topics), "group_id": self.kafka.group_id,
            "repartition_topic": self.rp.topic, "partitions": self.rp.partitions})
        last_lag = 0.0
        try:
            while not self.stop_event.is_set():
                if self.writer is not None:  # several writers: spread by load (balance.py)
                    now = time.monotonic()
                    if self.writer.weights.due(now):
                        self.writer.weights.refresh(self.consumer, self.kafka.topics, now,
                                                    self._committed_all)
                    self.writer.rejoin_if_load_changed(self.consumer, now)
                if self.align is not None and self.align.hold():
                    self.stop_event.wait(ALIGN_STEP_S)  # ahead of another writer
                    continue
                self._iteration()
                now = time.monotonic()
                if now - last_lag >= LAG_INTERVAL_S:
                    self._update_lag()
                    last_lag = now
        finally:
            self.close()
        log.info("repartition stopped", extra={"consumed": self.consumed,
                                               "forwarded": self.forwarded})
        return self.consumed

    def _iteration(self) -> None:
        k = self.kafka
        try:
            polled = self.consumer.poll(timeout_ms=k.poll_timeout_ms,
                                        max_records=k.max_poll_records)
        except Exception as exc:  # noqa: BLE001 - broker outage, rebalance errors
            log.warning("poll failed: %s: %s", type(exc).__name__, exc)
            self.health.set_source_up(False)
            self.stop_event.wait(min(1.0, k.poll_timeout_ms / 1000))
            return
        polled = {tp: recs for tp, recs in polled.items() if recs}
        if self.to_seek:
            self._seek_assigned(polled)
        if polled:
            self.health.set_source_up(True)
            self.catchup.polled()
            self.tail.polled()
        now = time.monotonic()
        for tp, recs in polled.items():
            if tp not in self.buffers:  # revoked meanwhile
                continue
            room = self.buffer_max - len(self.buffers[tp])
            if len(recs) > room:
                # flow control: the partition is far ahead of the others; give back what
                # does not fit (pausing some partitions while others are read can stall the
                # paused one for good in kafka-python 3.0.12, see FramedRunner._hold: never
                # used here)
                self.consumer.seek(tp, recs[max(0, room)].offset)
                recs = recs[:max(0, room)]
                if not recs:
                    continue
            self._append(tp, recs)
        if now >= self.retry_at:
            self._forward(now)
        if self.writer is not None:
            tick(self, time.monotonic())

    def _append(self, tp: Any, recs: list[Any]) -> None:
        """Buffer a partition's polled records (within the flow-control bound)."""
        self.buffers[tp].extend(recs)
        self.stamps[tp] = np.concatenate([
            self.stamps[tp], np.fromiter((r.timestamp for r in recs), np.int64, len(recs))])
        self.fetched[tp] = recs[-1].offset + 1
        self.consumed += len(recs)
        self.lateness.arrived(tp, len(recs), time.monotonic())

    def _waiting(self, now: float) -> bool:
        """Whether a partition with nothing buffered may be behind, or one assigned is not
        sought yet (its seek failed), while others have records to forward (catchup.py:
        its position short of its end offset, and it makes progress)."""
        empty = [tp for tp, recs in self.buffers.items() if not recs]
        unsought = sorted(self.to_seek - set(self.buffers))
        if len(empty) == len(self.buffers) or not (empty or unsought):
            return False
        return self.catchup.waiting(self._positions(), empty, now, unsought)

    def _positions(self) -> Any:
        """What the catch-up check asks for positions, watermarks and end offsets."""
        return self.consumer

    def _forward(self, now: float) -> None:
        tps = sorted(self.buffers)
        counts, order = merge_plan(
            [self.stamps[tp] for tp in tps], self._waiting(now),
            self.lateness.cap(self.stamps, now),
            lambda setting: not self.tail.waiting(self._positions(),
                                                  [tps[i] for i in setting], now))
        if not len(order):
            return
        records = [r for tp, n in zip(tps, counts, strict=True) for r in self.buffers[tp][:n]]
        records = [records[i] for i in order.tolist()]
        # not decoded here: the monitors decode every message anyway, and count and
        # dead-letter the invalid ones (with the source position the frame records)
        self._settle_commit()  # the last batch's, sent while this one was polled
        if not self._send(records):
            self.retry_at = time.monotonic() + RETRY_BACKOFF_S
            return
        self.forwarded += len(records)
        self.seq += len(records)
        for tp, n in zip(tps, counts, strict=True):
            if n:
                self.done[tp] = self.buffers[tp][n - 1].offset + 1
                del self.buffers[tp][:n]
                self.stamps[tp] = self.stamps[tp][n:]
                self.lateness.taken(tp, n)
        self._commit(wait=False)

    def _frames(self, records: list[Any]) -> list[tuple[int, bytes, int]]:
        """``records`` (in merged order) as frames: (internal partition, frame, newest
        Kafka timestamp), each partition's messages in merged order with their merge
        positions (from :attr:`seq` on).  Each field is read once per batch into a column
        (frames.pack_columns): the same frames as :func:`spread`, :func:`frames` and
        :func:`pack` record by record (tests/stream/test_repartition.py)."""
        names, tix, parts, offsets, stamps, keys, values = record_columns(records)
        klen, vlen = blob_lengths(keys), blob_lengths(values)
        sizes = np.maximum(klen, 0).astype(np.int64) + np.maximum(vlen, 0)
        crcs = np.array([zlib.crc32(t.encode()) for t in names], dtype=np.uint64)[tix]
        targets = _spread(crcs, parts, offsets, self.rp.partitions)
        out, limit = [], int(stamps.max())  # the merge limit: the newest timestamp
        for q in range(max(1, self.rp.partitions)):
            idx = np.flatnonzero(targets == q)
            at = 0
            for end in cuts(sizes[idx], self.frame_events):
                sel, at = idx[at:end], end
                top = int(stamps[sel].max())
                # several writers: version 3 with a watermark (writers.Writer.header)
                head = None if self.writer is None else self.writer.header(
                    q, limit if end == len(idx) else top)
                used, local = np.unique(tix[sel], return_inverse=True)
                out.append((q, pack_columns(
                    [names[i] for i in used.tolist()], local, parts[sel], offsets[sel],
                    stamps[sel], pick(keys, sel), pick(values, sel), self.seq + sel,
                    klen[sel], vlen[sel], head), top))
        return out

    def _send(self, records: list[Any]) -> bool:
        """Write ``records`` over the repartition topic's partitions (:func:`spread`), in
        frames; False (counted, logged) if any failed."""
        return bool(not records or self._write(lambda: self._frames(records), len(records)))

    def _write(self, make: Callable[[], list[tuple[int, bytes, int]]], records: int) -> bool:
        """Write the frames (internal partition, frame, timestamp) ``make`` gives, of
        ``records`` messages, and wait for every acknowledgement; False if any failed."""
        try:
            out = make()
            if self.producer is None:
                self.producer = self._producer()
            send_and_wait(self.producer, self.rp.topic, out, FORWARD_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - retried; nothing is committed meanwhile
            self.health.count_repartitioned("failed", records)
            log.warning("repartition write failed; the source offsets are not committed and "
                        "the records are written again: %s: %s", type(exc).__name__, exc,
                        extra={"records": records, "topic": self.rp.topic})
            self._drop_producer()
            return False
        self.health.count_repartitioned("ok", records)
        return True

    def _drop_producer(self) -> None:
        if self.producer is not None:
            with contextlib.suppress(Exception):
                if hasattr(self.producer, "close"):
                    self.producer.close(timeout=1)
            self.producer = None

    def _commit(self, wait: bool = True) -> bool:
        """Commit the forwarded source offsets, with the next merge position.  Without
        ``wait`` it overlaps the next poll (commits.py): the next forward settles it before
        writing, so no more than one acknowledged batch is ever uncommitted (the bound).  A
        failure is retried with the next forward."""
        ok = self._settle_commit()
        self.commit_flight = begin_commit(self.consumer, self.done, self.committed, 5000,
                                          "source offset commit", f"{SEQ_PREFIX}{self.seq}")
        return (self._settle_commit() if wait else True) and ok

    def _settle_commit(self) -> bool:
        flight, self.commit_flight = self.commit_flight, None
        return settle_commit(flight, self.committed, 5000, owned=self.done, logger=log) is None

    def _update_lag(self) -> None:
        """Source lag per partition: end offset minus what is forwarded and acknowledged
        (buffered records count as lag)."""
        c = self.consumer
        try:
            parts = list(c.assignment())
            if not parts:
                self.health.set_consumer_lag({})
                return
            self.health.set_consumer_lag(partition_lag(c, parts, 2000, self.done))
        except Exception as exc:  # noqa: BLE001 - an outage must not stop the loop
            log.warning("cannot read the source lag: %s", exc)
            self.health.set_source_up(False)

    def close(self) -> None:
        """Forward nothing more; commit what is acknowledged; close the clients."""
        if self.consumer is not None:
            self._commit()
        if self.producer is not None:
            try:
                self.producer.flush(10)
                if hasattr(self.producer, "close"):
                    self.producer.close(timeout=10)
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the repartition producer: %s", exc)
            self.producer = None
        if self.consumer is not None:
            try:
                self.consumer.close(autocommit=False, timeout_ms=5000)
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the source consumer: %s", exc)
            self.consumer = None
