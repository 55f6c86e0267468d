"""``streamdrift run``: the Kafka consumer loop (at-least-once, state per partition).

Each iteration of the loop:

1. ``poll()`` (at most ``max_poll_records`` records; rebalance callbacks run in
   here and only record what changed);
2. restore the newly assigned partitions: read their latest checkpoints from the
   state topic, restore the monitors and ``seek`` each partition to the offset
   its checkpoint covers (no checkpoint: fresh monitors, committed offset);
3. process the records partition by partition (one monitor per model and partition);
4. forward poison messages to the dead-letter topic and wait for the
   acknowledgement; while it fails, the partitions stay paused, the write is
   retried with back-off and nothing past the poison message is committed;
5. every ``state.checkpoint_interval_s``: write each partition's state with the offset
   it covers (the next offset to read) and wait for the acknowledgement;
6. commit the offsets (last processed + 1): with state the commit is sent and answered
   while the next batch is polled and processed (settled before the next commit;
   stream/sources/commits.py), without state synchronously.

A crash therefore replays at most the events since the last checkpoint (with
state: the restore starts from it, not from the committed offset) or the uncommitted
batch (without), and the replayed events meet the state that had not seen them.
SIGINT/SIGTERM stop polling; the runner then writes a final checkpoint, commits
synchronously, flushes the producers and closes.  See docs/reliability.md.
"""

from __future__ import annotations

import functools
import gc
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from stream.config import Config, require_kafka
from stream.engine.attribution import root_cause_text
from stream.engine.figures import RunnerHealth
from stream.engine.pipeline import Pipeline
from stream.formats.decoders import wants_records
from stream.runtime.codecblock import CodecBlocking
from stream.runtime.labelsrun import LabelTopics
from stream.runtime.lagcheck import LagCheck
from stream.runtime.restore import (
    BROKER_CALL_TIMEOUT_S,
    RESTORE_TIMEOUT_S,
    RESUME_KEY,
    LostPartition,
)
from stream.sinks.checkpoints import Checkpoint, StateError, StateStore
from stream.sinks.deadletters import (
    DEAD_LETTER_BACKOFF_S,
    DEAD_LETTER_TIMEOUT_S,
    DeadLetterWriter,
    PendingDeadLetters,
)
from stream.sinks.driftevents import DriftEventWriter, DriftRecord, episode_records, quality_records
from stream.sources.commits import CommitFlight, begin_commit, settle_commit
from stream.sources.kafka import (
    Consumer,
    connection_error,
    is_connection_error,
    kafka_client_kwargs,
    kafka_python_consumer,
    record_offsets,
    record_values,
    unsupported_codec,
)

log = logging.getLogger("streamdrift.run")

LAG_INTERVAL_S = 1.0
#: bound of a checkpoint write or an offset commit in the loop and at shutdown
CHECKPOINT_TIMEOUT_S = 5.0
#: pause of checkpoint writes and commits after one failed (the loop keeps polling)
WRITE_BACKOFF_S = 5.0


class KafkaRunner(CodecBlocking):
    """Consumes the configured topics into a :class:`Pipeline` until stopped."""

    def __init__(self, config: Config, pipeline: Pipeline,
                 stop: threading.Event | None = None) -> None:
        self.config = config
        self.kafka = require_kafka(config)
        #: the label topics of the models with labels (subscribed beside the inference topic)
        self.labels = LabelTopics(config, self.kafka)
        if self.labels:
            self.kafka = self.labels.subscription(self.kafka)
        self.pipeline = pipeline
        self.stop_event = stop or threading.Event()
        self.consumer: Any = None
        #: counters and source health, exported with the pipeline's figures
        self.health = RunnerHealth()
        dl = config.source.dead_letter
        self.dead_letters = None if dl is None else DeadLetterWriter(
            dl.topic, self._producer, self.health.count_dead_letters)
        de = config.source.drift_events
        self.drift_events = None if de is None else DriftEventWriter(
            de.topic, kafka_client_kwargs(self.kafka), self.health.count_drift_events)
        self.batches = 0
        self.consumed = 0
        self.state_cfg = config.state
        self.store: StateStore | None = None
        #: partition -> next offset to read; everything before is processed and dead-lettered
        self.done: dict[Any, int] = {}
        #: partition -> offset of our last successful commit
        self.committed: dict[Any, int] = {}
        #: partition -> offset covered by our last acknowledged checkpoint
        self.checkpointed: dict[Any, int] = {}
        #: partitions assigned but not restored yet (set by the rebalance callback)
        self.to_restore: set[Any] = set()
        #: partition -> how its start offset was chosen, while it is restored (start-up log)
        self.starts: dict[Any, tuple[str, int | None]] = {}
        #: without state: revoked partitions whose monitors are kept in case they come back,
        #: with the offset they cover
        self.parked: dict[Any, int] = {}
        #: with state: lost partitions whose monitors are kept in case they come back
        self.lost: dict[Any, LostPartition] = {}
        #: partition -> offsets of our commits that failed (timed out) since the last that
        #: succeeded: they may still land
        self.unacked: dict[Any, set[int]] = {}
        #: the offset commit sent and not answered yet (_commit)
        self.commit_flight: CommitFlight | None = None
        #: partition -> model -> checkpoint offset still ahead of the partition's position
        self.skip_until: dict[Any, dict[str, int]] = {}
        self.pending: PendingDeadLetters | None = None
        #: partition -> compression codec its messages use that the consumer cannot
        #: decompress: paused (not read, not committed) while assigned
        self.blocked: dict[Any, str] = {}
        self._blocked_reminder = 0.0
        self.last_checkpoint = time.monotonic()
        self.rebalanced = False
        self.closing = False
        self.writes_paused_until = 0.0
        self._last_data = time.monotonic()
        #: the records' message values and offsets (the clients' records differ)
        self._values: Any = record_values
        self._offsets: Any = record_offsets
        #: whether the decoder reads whole records (headers, key, topic: source.format)
        self._records = wants_records(config)
        #: the lag check (lagcheck.py)
        self._lag: LagCheck | None = None

    # -- clients ----------------------------------------------------------------
    def _consumer(self) -> Consumer:
        if self.kafka.client == "confluent-kafka":
            return self._confluent_consumer()
        return kafka_python_consumer(self.kafka, self.config.source.max_message_bytes,
                                     self._on_assigned, self._on_revoked, self._on_lost,
                                     self.health.count_consumer_restarts)

    def _confluent_consumer(self) -> Consumer:
        from stream.sources.confluent import ConfluentConsumer, record_offsets, record_values

        consumer = ConfluentConsumer(self.kafka, self.config.source.max_message_bytes,
                                     on_assign=self._assign_and_restore,
                                     on_revoke=self._on_revoked, on_lost=self._on_lost)
        try:
            consumer.raise_startup_error(RESTORE_TIMEOUT_S)
        except Exception:
            consumer.close()
            raise
        consumer.subscribe(list(self.kafka.topics))
        self._values, self._offsets = record_values, record_offsets
        return consumer

    def _assign_and_restore(self, assigned: set[Any]) -> None:
        """confluent-kafka: restore in the assignment callback, where the seeks decide the
        partitions' start offsets (librdkafka cannot seek a partition not yet fetched)."""
        self._on_assigned(assigned)
        self._restore({})

    def _producer(self) -> Any:
        """The dead-letter producer (a test can override this to make writes fail)."""
        from kafka import KafkaProducer

        ms = int(DEAD_LETTER_TIMEOUT_S * 1000)
        kw = kafka_client_kwargs(self.kafka)
        kw.update(acks="all", linger_ms=5, max_block_ms=ms, request_timeout_ms=ms,
                  delivery_timeout_ms=3 * ms, bootstrap_timeout_ms=ms,
                  max_request_size=max(1_048_576, self.config.source.max_message_bytes + 4096))
        return KafkaProducer(**kw)

    def _state_store(self) -> StateStore:
        return StateStore(kafka_client_kwargs(self.kafka), self.state_cfg.topic,
                          self.kafka.group_id)

    def stop(self) -> None:
        self.stop_event.set()

    # -- processing ----------------------------------------------------------------
    def _process(self, polled: dict[Any, list[Any]]) -> tuple[
            dict[Any, int], list[tuple[Any, str]], list[DriftRecord]]:
        done: dict[Any, int] = {}
        poison: list[tuple[Any, str]] = []
        drift: list[DriftRecord] = []
        for tp in sorted(polled):
            recs = polled[tp]
            if not recs:
                continue
            if self.labels.is_label(tp):
                self.labels.process(self.pipeline, tp, self._values(recs),
                                    self._offsets(recs))
                done[tp] = recs[-1].offset + 1
                continue
            found, batch = self.pipeline.process(recs if self._records else self._values(recs),
                                                 base_index=self.consumed,
                                                 partition=self._key(tp),
                                                 skip=self._skip_for(tp, recs),
                                                 offset_of=functools.partial(_offset, recs))
            if self.drift_events is not None:
                drift += episode_records(self.pipeline, self.kafka.group_id)
            for kind, ep in self.pipeline.last_episodes:  # a prediction drifts: its root cause
                if kind == "open" and ep.root_cause:
                    log.info("drift episode opened", extra={
                        **ep.to_dict(), "root_cause_text": root_cause_text(ep.root_cause),
                        "topic": ep.partition[0], "partition": ep.partition[1],
                        "offset": ep.open_offset})
            for d in found:
                r = recs[d.index - self.consumed]
                log.info("drift alarm", extra={**d.to_dict(), "topic": r.topic,
                                               "partition": r.partition, "offset": r.offset})
            for d in self.pipeline.last_closes:
                r = recs[d.index - self.consumed]
                log.info("drift episode closed",
                         extra={**d.to_dict(), "peak_score": round(d.score, 4),
                                "topic": r.topic, "partition": r.partition, "offset": r.offset})
            if self.config.source.dead_letter is not None:
                poison.extend((recs[pos], reason) for pos, reason in
                              zip(batch.invalid_positions.tolist(), batch.invalid_reasons,
                                  strict=True))
            done[tp] = recs[-1].offset + 1
            self.consumed += len(recs)
        if self.drift_events is not None:  # model-quality episodes (inference or label records)
            drift += quality_records(self.pipeline, self.kafka.group_id)
        return done, poison, drift

    # -- dead letters ------------------------------------------------------------------
    def _write_dead_letters(self, entries: list[tuple[Any, str]]) -> list[tuple[Any, str]]:
        """Write poison messages to the dead-letter topic; returns the entries that failed."""
        assert self.dead_letters is not None
        return self.dead_letters.write(entries)

    def _retry_pending(self) -> bool:
        """Retry the pending dead-letter writes if due; True once none is left."""
        p = self.pending
        if p is None:
            return True
        if time.monotonic() < p.next_try:
            return False
        if p.entries:
            p.entries = self._write_dead_letters(p.entries)
        if p.drift and self.drift_events is not None:
            p.drift = self.drift_events.write(p.drift)
        if p.entries or p.drift:
            p.backoff()
            return False
        log.info("dead-letter / drift-events write succeeded after retries",
                 extra={"attempts": p.attempts + 1,
                        "seconds": round(time.monotonic() - p.first_failure, 1)})
        self.done.update(p.done)
        self.pending = None
        paused = set(self.consumer.paused()) - set(self.blocked)
        if paused:
            self.consumer.resume(*paused)
        return True

    # -- checkpoints and commits ----------------------------------------------------------
    def _checkpoint(self, tps: Iterable[Any], timeout_s: float, in_callback: bool = False) -> bool:
        """Write the state of ``tps`` that changed since their last checkpoint; True if acked.

        ``in_callback``: called from a rebalance callback (the consumer's IO thread), where
        no Kafka client may be created."""
        if self.store is None:
            return True
        cps: list[Checkpoint] = []
        offsets: dict[Any, int] = {}
        now = time.time()
        held = set(self.pending.done) if self.pending is not None else set()
        held_from = self._held_from()
        for tp in tps:
            off = self.done.get(tp)
            if off is None or tp in self.skip_until or (
                    self.checkpointed.get(tp) == off and not self._moved(tp)):
                continue  # nothing new (or a cut checkpoint still being caught up)
            if tp in held:
                continue  # its state is ahead of `off` until the dead letters are written
            states = self._export(tp)
            if not states:
                continue
            resume = held_from.get(self._key(tp))
            if resume is not None and resume < off:
                # a restore reads again from the oldest waiting half (its rows join then);
                # the models skip what their state already holds (skip_until)
                states = {name: {**state, RESUME_KEY: resume} for name, state in states.items()}
            offsets[tp] = off
            for name, state in states.items():
                base = self.pipeline.baselines[name]
                cps.append(Checkpoint(self.kafka.group_id, name, tp.topic, tp.partition, off,
                                      self.pipeline.baseline_ids[name], base.key, state, now))
        if not cps:
            return True
        t0 = time.monotonic()
        try:
            size = self.store.write(cps, timeout_s, connect=not in_callback)
        except StateError as exc:
            self.health.count_checkpoints("failed", len(cps))
            log.warning("checkpoint failed; offsets are not committed until one succeeds: %s",
                        exc)
            self._maybe_down(exc)
            return False
        self.health.count_checkpoints("ok", len(cps), at=time.time())
        self.checkpointed.update(offsets)
        log.info("checkpoint written", extra={
            "offsets": {f"{tp.topic}/{tp.partition}": off for tp, off in offsets.items()},
            "records": len(cps), "bytes": size,
            "ms": round((time.monotonic() - t0) * 1000, 1)})
        return True

    def _export(self, tp: Any) -> dict[str, dict[str, Any]]:
        """model -> the state of partition ``tp`` a checkpoint holds."""
        return self.pipeline.export_partition(self._key(tp))

    def _moved(self, tp: Any) -> bool:
        """Whether the state of ``tp`` changed since its checkpoint at an unchanged offset."""
        return self._labels_moved(tp)

    def _labels_moved(self, tp: Any) -> bool:
        """Whether the label joins of inference partition ``tp`` changed since exported."""
        book = self.pipeline.labels
        return book is not None and book.dirty(self._key(tp))

    def _held_from(self) -> dict[tuple[str, int], int]:
        """open-inference: per partition, the offset of the oldest half waiting in the
        join buffer (read again after a crash or a rebalance, so that it still joins)."""
        held = getattr(self.pipeline.decoder, "held_from", None)
        return held() if held is not None else {}

    def _commit_points(self) -> dict[Any, int]:
        """The offsets to commit: what is processed, but no further than a half still
        waiting in the join buffer."""
        held = self._held_from()
        if not held:
            return self.done
        return {tp: min(off, held.get(self._key(tp), off)) for tp, off in self.done.items()}

    def _commit(self, wait: bool = False) -> bool:
        """Commit what is processed.  With state the commit overlaps the next batch
        (commits.py): the one sent before is settled first, and a crash replays from the
        checkpoint, not the committed offset; without state (the crash bound is the
        uncommitted batch), or with ``wait``, it is acknowledged before returning.  A
        failure is retried with the next iteration."""
        ok = self._settle_commit()
        flight = begin_commit(self.consumer, self._commit_points(), self.committed,
                              int(CHECKPOINT_TIMEOUT_S * 1000))
        if flight is None:
            return ok  # nothing new
        # until answered, a commit may land or not (restore.py's lost partitions)
        for tp, off in flight.todo.items():
            self.unacked.setdefault(tp, set()).add(off)
        self.commit_flight = flight
        if wait or self.store is None:
            return self._settle_commit() and ok
        return ok

    def _settle_commit(self) -> bool:
        """Wait for the commit in flight, if any; False if it failed."""
        flight, self.commit_flight = self.commit_flight, None
        if flight is None:
            return True
        exc = settle_commit(flight, self.committed, int(CHECKPOINT_TIMEOUT_S * 1000),
                            owned=self.done)
        if exc is not None:
            self._maybe_down(exc)  # its offsets stay unacked: they may still land
            return False
        for tp, off in flight.todo.items():
            if self.committed.get(tp) == off:
                self.unacked.pop(tp, None)
        return True

    def _checkpoint_and_commit(self, force: bool = False) -> None:
        if not force and time.monotonic() < self.writes_paused_until:
            return  # a write just failed (broker down?): keep polling, retry a bit later
        if self.store is not None and (
                force or time.monotonic() - self.last_checkpoint
                >= self.state_cfg.checkpoint_interval_s):
            if not self._checkpoint(list(self.done), CHECKPOINT_TIMEOUT_S):
                # the state must be acknowledged before the offsets it covers
                self.writes_paused_until = time.monotonic() + WRITE_BACKOFF_S
                return
            self.last_checkpoint = time.monotonic()
        if not self._commit(wait=force):
            self.writes_paused_until = time.monotonic() + WRITE_BACKOFF_S

    # -- lag and source health ---------------------------------------------------------
    def _maybe_down(self, exc: BaseException) -> None:
        """A write failed: if for want of a broker, say so at once (the lag check, which
        runs between iterations, sets source_up back to 1)."""
        if is_connection_error(exc):
            self.health.set_source_up(False)

    def _update_lag(self) -> None:
        if self._lag is None:
            self._lag = LagCheck(self.health, self.kafka.topics[0],
                                 int(BROKER_CALL_TIMEOUT_S * 1000))
        self._lag(self.consumer)

    # -- the loop --------------------------------------------------------------------
    def run(self, max_events: int | None = None, idle_timeout: float | None = None) -> int:
        """Consume until stopped (or ``max_events`` processed, or idle for ``idle_timeout`` s).

        Idle time counts only while partitions are assigned: not the group join (after a
        kill -9 the broker keeps the dead member until its session times out, so a restart
        can wait longer than the timeout for its partitions), nor a rebalance that leaves
        none (a consumer that never gets a partition does not stop by ``idle_timeout``).
        Returns the number of messages consumed.
        """
        from kafka.errors import KafkaError

        k = self.kafka
        self._warn_missing_codecs()
        try:
            if self.state_cfg.enabled:
                self.store = self._state_store()
                self.store.ensure_topic()
                # a checkpoint write blocks the loop no longer than its bound, also when
                # the producer opened here waits for metadata through a broker outage
                self.store.connect(write_timeout_s=CHECKPOINT_TIMEOUT_S)
            if self.drift_events is not None:
                self.drift_events.ensure_topic()
            self.consumer = self._consumer()
            if self.labels:
                self.labels.check_partitions(self.consumer)
        except KafkaError as exc:  # unreachable, TLS refused, SASL login refused
            raise connection_error(k, exc) from None
        except Exception as exc:
            if type(exc).__name__ == "KafkaException":  # confluent-kafka's
                raise connection_error(k, exc) from None
            raise
        log.info("consuming", extra={"topics": list(k.topics), "group_id": k.group_id,
                                     "bootstrap_servers": list(k.bootstrap_servers),
                                     "state_topic": self.state_cfg.topic
                                     if self.store is not None else None})
        self.last_checkpoint = time.monotonic()
        last_lag = 0.0
        self._last_data = time.monotonic()
        # the start-up's objects (modules, baselines, clients: ~10^5) outlive the loop: kept
        # out of the cyclic GC, whose full collections scanned them all (0.2 CPU us per event)
        gc.collect()
        gc.freeze()
        try:
            while not self.stop_event.is_set():
                more = self._iteration(max_events)
                now = time.monotonic()
                if now - last_lag >= LAG_INTERVAL_S:
                    self._update_lag()
                    last_lag = now
                    self._remind_blocked(now)
                if not more:
                    break
                if idle_timeout is not None:
                    if not self.consumer.assignment():
                        self._last_data = now  # joining the group: not idle yet
                    elif now - self._last_data > idle_timeout:
                        break
        finally:
            gc.unfreeze()  # collectable again (another runner in this process, the tests)
            self.close()
        log.info("stopped", extra={"consumed": self.consumed, "batches": self.batches})
        return self.consumed

    def _poll(self) -> dict[Any, list[Any]] | None:
        """One poll's non-empty record lists, or None if it failed (see the except)."""
        k = self.kafka
        try:
            polled = self.consumer.poll(timeout_ms=k.poll_timeout_ms,
                                        max_records=k.max_poll_records)
        except Exception as exc:  # noqa: BLE001 - broker outage, rebalance errors
            codec = unsupported_codec(exc)
            if codec is not None:
                self._block_undecodable(exc, codec)
            else:
                log.warning("poll failed: %s: %s", type(exc).__name__, exc)
                self.health.set_source_up(False)
                self.stop_event.wait(min(1.0, k.poll_timeout_ms / 1000))
            return None
        return {tp: recs for tp, recs in polled.items() if recs}

    def _iteration(self, max_events: int | None) -> bool:
        """One poll and what follows; False once ``max_events`` are consumed."""
        polled = self._poll()
        if polled is None:
            return True
        if self.to_restore or self.rebalanced:
            self._restore(polled)
        if self.pending is not None:
            # nothing new is processed while a dead-letter write is pending
            self._rewind(polled)
            parts = set(self.consumer.assignment()) - set(self.consumer.paused())
            if parts:
                self.consumer.pause(*parts)
            if not self._retry_pending():
                self.pipeline.heartbeat()
                return True
        if not polled:
            self.pipeline.heartbeat()
            self._checkpoint_and_commit()
            return True
        if self.kafka.client == "kafka-python":
            # records came from a fetch just now. librdkafka, by contrast, hands out its
            # pre-fetch queue (up to 16 MiB) while the brokers are down: with it only the
            # lag check, a broker call every second, says whether the source is up
            self.health.set_source_up(True)
        done, poison, drift = self._process(polled)
        self.batches += 1
        self._last_data = time.monotonic()
        if poison or drift:
            failed = self._write_dead_letters(poison) if poison else []
            unsent = self.drift_events.write(drift) if drift and self.drift_events else []
            if failed or unsent:
                # keep the batch's offsets uncommitted until its dead letters and drift
                # records are written
                self.pending = PendingDeadLetters(
                    failed, done, unsent, next_try=time.monotonic() + DEAD_LETTER_BACKOFF_S[0])
                assigned = list(self.consumer.assignment())
                if assigned:
                    self.consumer.pause(*assigned)
                return True
        self.done.update(done)
        self._checkpoint_and_commit()
        return max_events is None or self.consumed < max_events

    def close(self) -> None:
        """Final checkpoint and synchronous commit, then flush and close every client."""
        if self.consumer is not None:
            if self.pending is not None:
                log.warning("stopping with dead-letter writes pending: their offsets are not "
                            "committed and the messages will be read again",
                            extra={"messages": len(self.pending.entries)})
            try:
                self._checkpoint_and_commit(force=True)
            except Exception as exc:  # noqa: BLE001 - broker gone: the next run replays
                log.warning("final checkpoint/commit failed: %s", exc)
        self.closing = True
        if self.dead_letters is not None:
            self.dead_letters.close()
        if self.drift_events is not None:
            self.drift_events.close()
        if self.store is not None:
            self.store.close()
        if self.consumer is not None:
            try:
                self.consumer.close(autocommit=False,
                                    timeout_ms=int(CHECKPOINT_TIMEOUT_S * 1000))
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the consumer: %s", exc)
            self.consumer = None


def _offset(records: list[Any], i: int) -> int:
    """The offset of ``records[i]`` (for :meth:`Pipeline.process`)."""
    return int(records[i].offset)


def run(config: Config, pipeline: Pipeline, stop: threading.Event | None = None,
        **kwargs: Any) -> int:
    return KafkaRunner(config, pipeline, stop).run(**kwargs)
