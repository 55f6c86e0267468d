"""The pooled CUSUM of ``source.repartition.pooled``: one CUSUM per numeric column over
every monitor's values, in event order (issue 14; docs/reliability.md#keyed-topics-two-stages).

* The monitors (:class:`~stream.runtime.monitors.FramedRunner`) publish, per poll, a pool
  record (pooltap.py) to the one-partition **pool topic** through
  :class:`~stream.runtime.pooloutbox.PoolOutbox`,
  acknowledged before they checkpoint or commit the frames it covers (at-least-once: a
  monitor that restarts publishes again what it processes again).
* Every monitor process runs a :class:`PoolMember` candidate: a consumer of the pool
  topic in a group of its own (named as the topic).  The group gives its one partition to
  exactly one member (the election; a rebalance moves it).  That member merges the records
  (:class:`detectors.cusum_pool.PoolMerge`: dedup by merge position, dense frontier,
  bounded wait behind a gap) into one :class:`~detectors.cusum_pool.PooledCUSUM` per
  column, logs and counts its alarms, and checkpoints its state (the CUSUMs and the
  frontier, ``state.topic``, model ``__pool__``) with the pool-topic offset of the first
  record not wholly folded: a successor reads again from there and drops what it already
  folded by position.
* With ``writers: several`` the records are of version 2 (poolkeys.py: per internal
  partition, its sequence of delivered messages with their keys in the writers' total
  order and a promise) and the member folds them with
  :class:`detectors.cusum_keyed.KeyedPoolMerge`, in key order over all the internal
  partitions; its checkpoint holds the state of each partition's sequence.
* Only the member that holds the partition exports the pooled series
  (``streamdrift_pooled_*``, stream/sinks/pool_metrics.py), so nothing is counted twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import threading
import time
from typing import Any

import numpy as np

from detectors.cusum_keyed import KeyedPoolMerge
from detectors.cusum_pool import PoolAlarm, PooledCUSUM, PoolMerge, pooled_cusum
from stream.config import Config, require_kafka
from stream.runtime import poolkeys
from stream.runtime.pooloutbox import POOL_RECORD_MAX_BYTES, PUBLISH_TIMEOUT_S
from stream.runtime.pooltap import Column, PoolRecordError, column_cusum, pooled_columns, unpack
from stream.sinks.checkpoints import Checkpoint, StateError, StateStore
from stream.sources.groupjoin import holds
from stream.sources.kafka import kafka_client_kwargs, kafka_python_consumer

log = logging.getLogger("streamdrift.pool")

#: the model name of the pool member's checkpoints
POOL_MODEL = "__pool__"
POLL_RECORDS = 500
#: several writers: while records keep coming the member folds what it took at most this
#: often (at once when a poll brings none, and before every checkpoint).  The folds and
#: alarms are the same whenever it folds (KeyedPoolMerge.take defers them exactly), but
#: one fold per record cost 0.37 us per event and one per 20 records 0.20
#: (bench_pool_member.py --per-poll 1 / 20), on the process that also holds the pool
FOLD_EVERY_S = 0.1
#: kafka-python: a member whose consumer is not a stable member holding the pool's partition
#: (groupjoin.holds) writes no checkpoint, and after this long drops its pool as lost: it
#: would export the pooled series twice and overwrite the holder's checkpoints
UNHELD_S = 5.0


def pool_columns(pipeline: Any) -> dict[Column, PooledCUSUM]:
    """A fresh pooled CUSUM per numeric column with a CUSUM, with its settings."""
    out: dict[Column, PooledCUSUM] = {}
    for model in sorted(pipeline.baselines):
        mon = pipeline.new_monitor(model)
        for col in pooled_columns(mon):
            det = column_cusum(mon, col)
            assert det is not None
            out[(model, col)] = pooled_cusum(det)
    return out


@dataclasses.dataclass(frozen=True)
class PooledAlarm:
    """An alarm (or close) of the pooled CUSUM of one column."""

    model: str
    column: str
    position: int
    statistic: float
    threshold: float
    direction: int
    event_time: float | None
    kind: str = "open"
    #: several writers: the internal partition whose message ``position`` indexes
    partition: int = -1


def _largest(keys: np.ndarray) -> tuple[int, ...]:
    """The largest of the rows of ``keys`` (lexicographically)."""
    for i in range(keys.shape[1]):
        keys = keys[keys[:, i] == keys[:, i].max()]
    return tuple(int(x) for x in keys[0])


class PoolMember:
    """A candidate pool member (see the module); :attr:`merge` is set while it holds the
    pool topic's partition."""

    def __init__(self, config: Config, pipeline: Any,
                 stop: threading.Event | None = None) -> None:
        rp = config.source.repartition
        assert rp is not None and rp.pooled
        self.config, self.pipeline = config, pipeline
        self.topic = rp.pool_topic
        self.kafka = dataclasses.replace(require_kafka(config), topics=(rp.pool_topic,),
                                         group_id=rp.pool_topic, auto_offset_reset="earliest",
                                         max_poll_records=POLL_RECORDS)
        self.outer_stop = stop or threading.Event()
        self.stop_event = threading.Event()
        self.consumer: Any = None
        self.store: StateStore | None = None
        self.merge: PoolMerge | KeyedPoolMerge | None = None
        #: several writers: records of version 2, folded by key (module docstring)
        self.keyed = rp.writers == "several"
        self.partitions = rp.partitions
        self.tp: Any = None
        self.to_restore = False
        self.revoked = self.lost = False
        #: since when the consumer does not hold the partition it has a pool of (0: it does)
        self.unheld = 0.0
        #: set by :meth:`close` (librdkafka calls the revoke callback from ``close()``)
        self.closing = False
        self.next_offset: int | None = None
        self.last_checkpoint = time.monotonic()
        #: several writers: records taken since the last fold, and when that was
        self.unfolded = False
        self.folded_at = 0.0
        #: every pooled alarm and close this member raised (newest last), and counters
        self.alarms: list[PooledAlarm] = []
        self.bad_records = 0
        self.alarm_counts: dict[Column, int] = {}
        #: per column: chunks of (positions, event times, the largest position or key)
        #: not folded yet (for the alarms; several writers: a position is
        #: ``partition << 40 | index``)
        self._times: dict[Column, list[tuple[Any, Any, Any]]] = {}
        self.lock = threading.Lock()
        #: (model, column) -> the column's role (feature, prediction): a label of the series
        self.roles = {(m, spec.name): spec.role for m, specs in getattr(
            pipeline, "specs", {}).items() for spec in specs}

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="pool", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.stop_event.set()

    def _stopped(self) -> bool:
        return self.stop_event.is_set() or self.outer_stop.is_set()

    def run(self) -> None:
        try:
            if self.config.state.enabled:
                self.store = StateStore(kafka_client_kwargs(self.kafka),
                                        self.config.state.topic, self.kafka.group_id)
                self.store.ensure_topic()
            self.consumer = self._new_consumer()
            while not self._stopped():
                try:
                    self._iteration()
                except Exception as exc:  # noqa: BLE001 - retried: a rebalance mid-restore
                    log.warning("pool member iteration failed; retried from the "
                                "checkpoint: %s: %s", type(exc).__name__, exc)
                    if self.tp is not None:
                        # a poll taken in part must not be skipped: read again from the
                        # checkpoint (its offset and state go together)
                        self.to_restore = True
                    self.stop_event.wait(1.0)
        except Exception as exc:  # noqa: BLE001 - the monitors go on without the pool
            log.error("the pool member stopped: %s: %s", type(exc).__name__, exc)
        finally:
            self.close()

    def _new_consumer(self) -> Any:
        """The pool topic's consumer: librdkafka's with ``client: confluent-kafka``, whose
        rebalance callbacks run inside ``poll()`` on this thread and so take the pool over
        (or give it up) at once; else kafka-python's, whose callbacks run on its IO thread
        and only record what changed for :meth:`_iteration`.

        The pool records are large (thousands of messages each): kafka-python's fetch and
        group coordination, in Python, were ~6 % of the CPU of a process holding the pool
        (py-spy, 16 tenants, 2026-12-06), all of it on the process that also folds every
        pooled value."""
        if self.kafka.client == "confluent-kafka":
            from stream.sources.confluent import ConfluentConsumer

            consumer = ConfluentConsumer(self.kafka, POOL_RECORD_MAX_BYTES,
                                         on_assign=self._assign_now,
                                         on_revoke=self._revoke_now, on_lost=self._lose_now)
            consumer.subscribe([self.topic])
            return consumer
        return kafka_python_consumer(self.kafka, 64 * 1024 * 1024, self._on_assigned,
                                     self._on_revoked, self._on_lost)

    # -- rebalance callbacks, librdkafka (inside poll(), this thread) ----------------------
    def _assign_now(self, assigned: set[Any]) -> None:
        """Restore here: the seek of :meth:`_restore` sets the start offset of the
        assignment, so no record from before it is fetched (a restore that fails is
        retried from :meth:`_iteration`, with a seek of the partition then fetched)."""
        if assigned:
            self.tp = next(iter(assigned))
            self._restore()

    def _revoke_now(self, revoked: set[Any]) -> None:
        """The checkpoint on the state topic, without the offset commit: librdkafka holds
        a commit made inside the rebalance until the rebalance is over (it timed out after
        5 s, and held the rebalance as long).  The offset is committed with the next
        periodic checkpoint of whoever holds the pool."""
        if self.closing:  # (close() checkpointed; the merge stays readable, as with
            return        # kafka-python, whose close() calls no callback)
        if revoked:
            self._checkpoint(commit=False)
        self._lose_now(revoked)

    def _lose_now(self, lost: set[Any]) -> None:
        """Lost (the session expired): another member may hold the pool already, so no
        checkpoint of this one's state."""
        if lost:
            with self.lock:
                self.merge = None
            self.to_restore = False

    # -- rebalance callbacks, kafka-python (IO thread: record only) -------------------------
    def _on_assigned(self, assigned: set[Any]) -> None:
        if assigned:
            self.tp = next(iter(assigned))
            self.to_restore = True
        elif self.merge is not None:  # (a revocation it was not told of: lost)
            self.lost = True

    def _on_revoked(self, revoked: set[Any]) -> None:
        if revoked:
            self.revoked = True

    def _on_lost(self, lost: set[Any]) -> None:
        if lost:  # (another member may hold the pool already: no checkpoint, _lose_now)
            self.lost = True

    # -- the loop ------------------------------------------------------------------------
    def _iteration(self) -> None:
        try:
            polled = self.consumer.poll(timeout_ms=200, max_records=POLL_RECORDS)
        except Exception as exc:  # noqa: BLE001 - broker outage, rebalance
            log.warning("pool poll failed: %s: %s", type(exc).__name__, exc)
            self.stop_event.wait(1.0)
            return
        if self.revoked or self.lost:
            if self.revoked and not self.lost:
                self._checkpoint()
            self.revoked = self.lost = False
            with self.lock:
                self.merge = None
        if self.to_restore:
            self.to_restore = False
            self._restore()
            return  # what was polled before the seek is read again
        if self.merge is None or self._unheld():
            return
        for recs in polled.values():
            for r in recs:
                self._take(r)
            if recs:
                self.next_offset = int(recs[-1].offset) + 1
        if self.keyed:
            took = any(polled.values())
            self.unfolded = self.unfolded or took
            if self.unfolded and (not took
                                  or time.monotonic() - self.folded_at >= FOLD_EVERY_S):
                with self.lock:
                    self._advance()
        if not self.unheld and \
                time.monotonic() - self.last_checkpoint >= self.config.state.checkpoint_interval_s:
            self._checkpoint()

    def _unheld(self) -> bool:
        """Whether the pool was dropped: the consumer has not held its partition for
        ``UNHELD_S`` (a checkpoint waits until it does again)."""
        if holds(self.consumer, self.tp):
            self.unheld = 0.0
            return False
        now = time.monotonic()
        self.unheld = self.unheld or now
        if now - self.unheld < UNHELD_S:
            return False
        log.warning("the pool member's consumer has not held the pool topic's partition "
                    "for %.0f s: its pool is dropped (resumed from the checkpoint when it "
                    "is assigned again)", now - self.unheld, extra={"topic": self.topic})
        with self.lock:
            self.merge = None
        self.unheld = 0.0
        return True

    def _take(self, record: Any) -> None:
        assert self.merge is not None
        data = record.value or b""
        try:
            if self.keyed and poolkeys.version_of(data) == poolkeys.VERSION:
                self._take_keyed(poolkeys.unpack(data), int(record.offset))
                return
            cov, cols = unpack(data)
            if self.keyed:
                raise PoolRecordError("a record of one writer's positions (version 1) on a "
                                      "pool of several writers")
        except PoolRecordError as exc:
            self.bad_records += 1
            log.warning("a record of the pool topic does not read: %s", exc,
                        extra={"offset": int(record.offset)})
            return
        with self.lock:
            m = self.merge
            assert isinstance(m, PoolMerge)
            values = {k: (v.positions, v.values) for k, v in cols.items() if k in m.columns}
            for k, v in cols.items():
                if k in m.columns and v.positions.size:
                    self._times.setdefault(k, []).append((v.positions, v.times,
                                                          int(v.positions.max())))
            m.add(cov, values, int(record.offset))
            self._advance()

    def _take_keyed(self, rec: poolkeys.KeyedRecord, offset: int) -> None:
        with self.lock:
            m = self.merge
            assert isinstance(m, KeyedPoolMerge)
            values = poolkeys.keyed_values(rec, m.columns)
            n, whole = len(rec.keys), None
            for k, (idx, _) in values.items():
                if idx.size:
                    if idx.size == n and idx[0] == rec.start and idx[-1] == rec.start + n - 1 \
                            and (n < 3 or bool((np.diff(idx) == 1).all())):
                        # a value of every message: the record's largest key (once)
                        whole = _largest(rec.keys) if whole is None else whole
                        last = whole
                    else:
                        last = _largest(rec.keys[idx - rec.start])
                    self._times.setdefault(k, []).append((
                        (rec.partition << 40) + idx, rec.columns[k].times, last))
            # folded at the end of the poll (_iteration): the same folds and alarms
            m.take(rec.partition, rec.epoch, rec.start, rec.keys, rec.promise, values, offset)

    def _advance(self) -> None:
        m = self.merge
        assert m is not None
        if isinstance(m, KeyedPoolMerge):
            self.unfolded, self.folded_at = False, time.monotonic()
            m.flush()  # (take() appends the alarms: cleared once raised)
            for kind, a in m.raised:
                self._raise(a, kind)
            m.alarms, m.closes, m.raised = [], [], []
        else:
            m.advance()
            for kind, found in (("open", m.alarms), ("close", m.closes)):
                for a in found:
                    self._raise(a, kind)
        if m.frontier is None:
            return
        for chunks in self._times.values():  # (a key or a position: as the frontier)
            chunks[:] = [c for c in chunks if c[2] >= m.frontier]  # type: ignore[operator]

    def _time_of(self, column: Column, position: int) -> float | None:
        for pos, times, _ in self._times.get(column, []):
            hit = np.flatnonzero(pos == position)
            if hit.size and math.isfinite(float(times[hit[0]])):
                return float(times[hit[0]])
        return None

    def _raise(self, a: PoolAlarm, kind: str) -> None:
        model, col = a.column
        when = self._time_of(a.column, a.position if a.partition < 0
                             else (a.partition << 40) + a.position)
        alarm = PooledAlarm(model, col, a.position, a.statistic, a.threshold, a.direction,
                            when, kind, a.partition)
        self.alarms.append(alarm)
        if kind == "open":
            self.alarm_counts[a.column] = self.alarm_counts.get(a.column, 0) + 1
        log.info("pooled drift alarm" if kind == "open" else "pooled drift episode closed",
                 extra={"model": model, "feature": col, "detector": "cusum", "scope": "pooled",
                        "position": a.position,
                        **({"partition": a.partition} if a.partition >= 0 else {}), "statistic": round(a.statistic, 4),
                        "threshold": a.threshold, "direction": a.direction,
                        "event_time": when})

    # -- state ---------------------------------------------------------------------------
    def _restore(self) -> None:
        """Take the pool over: its checkpoint and the offset it covers, and a seek there.

        Always a seek: the poll that brought the assignment may have returned records
        already (they are dropped), and kafka-python keeps the fetch position of a partition
        assigned again to the same consumer; reading on from there skipped records, and the
        frontier waited for ever for their positions (or dropped them).  Without a
        checkpoint: the committed offset (state disabled), else the topic's first record,
        and a pool that reads the topic from offset 0 starts at position 0 (the first stage
        numbers from 0): the first record need not hold the smallest position, another
        monitor's record after it may.  A checkpoint that cannot be read is tried again:
        never a fresh pool while one may exist."""
        columns = pool_columns(self.pipeline)
        cp = None
        if self.store is not None:
            try:
                found = self.store.read([(self.tp.topic, self.tp.partition)])
            except StateError as exc:
                log.warning("cannot read the pool's checkpoint; retried: %s", exc)
                self.to_restore = True
                self.stop_event.wait(1.0)
                return
            cp = found.get((POOL_MODEL, self.tp.topic, self.tp.partition))
        frontier: int | None = None
        if cp is not None:
            start = int(cp.offset)
        else:
            ms = int(PUBLISH_TIMEOUT_S * 1000)
            meta = self.consumer.committed(self.tp, timeout_ms=ms)
            if meta is not None:
                start = int(meta)
            else:
                start = int(self.consumer.beginning_offsets([self.tp], timeout_ms=ms)[self.tp])
                frontier = 0 if start == 0 else None
        # first: a failed seek leaves the member without state (retried)
        self.consumer.seek(self.tp, start)
        with self.lock:
            self.merge = self._merge(columns, None if cp is None else dict(cp.state), frontier)
            self.next_offset = start
            self._times.clear()
        log.info("pool member elected", extra={
            "topic": self.topic, "client": self.kafka.client, "columns": len(columns),
            "frontier": self.merge.frontier if getattr(self.merge, "started", True) else None,
            "offset": None if cp is None else int(cp.offset), "read_from": start})
        self.last_checkpoint = time.monotonic()

    def _merge(self, columns: dict[Column, PooledCUSUM], state: dict[str, Any] | None,
               frontier: int | None) -> PoolMerge | KeyedPoolMerge:
        """The merge restored from ``state`` (None: a fresh one); a state of the other kind
        (``writers`` changed since) starts a fresh merge, logged."""
        if state is not None and (state.get("version") == 2) != self.keyed:
            log.warning("the pool's checkpoint is of %s: a fresh pooled CUSUM",
                        "several writers" if not self.keyed else "one writer")
            state, frontier = None, None
        if self.keyed:
            parts = range(self.partitions)
            return (KeyedPoolMerge(columns, parts) if state is None
                    else KeyedPoolMerge.from_state(state, columns, parts))
        return PoolMerge(columns, frontier) if state is None \
            else PoolMerge.from_state(state, columns)

    def _checkpoint(self, commit: bool = True) -> None:
        self.last_checkpoint = time.monotonic()
        with self.lock:
            m = self.merge
            if m is None or self.tp is None:
                return
            if isinstance(m, KeyedPoolMerge):
                self._advance()  # (the folds deferred, their alarms raised: not lost)
            off = m.resume_offset()
            if off is None:
                off = self.next_offset
            if off is None:
                return
            state, pending = m.state(), m.pending
        if self.store is not None:
            cp = Checkpoint(self.kafka.group_id, POOL_MODEL, self.tp.topic, self.tp.partition,
                            int(off), "pool", "", state, time.time())
            try:
                self.store.write([cp], 5.0)
            except StateError as exc:
                log.warning("pool checkpoint failed: %s", exc)
                return
            log.info("pool checkpoint written", extra={
                "offset": int(off), "frontier": state["frontier"], "pending": pending})
        if not commit:
            return
        from kafka.structs import OffsetAndMetadata

        try:
            self.consumer.commit({self.tp: OffsetAndMetadata(int(off), "", -1)},
                                 timeout_ms=5000)
        except Exception as exc:  # noqa: BLE001 - retried at the next checkpoint
            log.warning("pool offset commit failed: %s", exc)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._checkpoint()
        self.closing = True
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.close()
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                self.consumer.close(autocommit=False, timeout_ms=5000)
            self.consumer = None

    # -- figures ---------------------------------------------------------------------------
    def figures(self) -> dict[str, Any] | None:
        """The pooled series while this member holds the partition, else None (several
        writers: ``frontier`` is the messages this member folded, ``skipped`` counts the
        forced folds too, and ``duplicates`` the stale records)."""
        with self.lock:
            m = self.merge
            if m is None:
                return None
            if isinstance(m, KeyedPoolMerge):
                head = {"frontier": m.folded, "skipped": m.skipped + m.forced,
                        "duplicates": m.duplicates + m.stale, "late": m.late}
            else:
                head = {"frontier": m.frontier, "skipped": m.skipped,
                        "duplicates": m.duplicates}
            return {**head, "pending": m.pending, "folded": m.folded,
                    "bad_records": self.bad_records,
                    "columns": {k: (d.statistic, d.threshold, bool(d.drift_detected),
                                    self.alarm_counts.get(k, 0), self.roles.get(k, "feature"))
                                for k, d in m.columns.items()}}

