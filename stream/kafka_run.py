"""``streamdrift run``: the Kafka consumer loop (at-least-once, state per partition).

Each iteration of the loop:

1. ``poll()`` (at most ``max_poll_records`` records; rebalance callbacks run in
   here and only record what changed);
2. restore the newly assigned partitions: read their latest checkpoints from the
   state topic, restore the monitors and ``seek`` each partition to the offset
   its checkpoint covers (no checkpoint: fresh monitors, committed offset);
3. process the records partition by partition (one monitor per model and
   partition);
4. forward poison messages to the dead-letter topic and wait for the
   acknowledgement; while it fails, the partitions stay paused, the write is
   retried with back-off and nothing past the poison message is committed;
5. every ``state.checkpoint_interval_s``: write each partition's state with the
   offset it covers (the next offset to read) and wait for the acknowledgement;
6. commit the offsets (last processed + 1), synchronously.

A crash therefore replays at most the events since the last checkpoint (with
state) or the uncommitted batch (without), and the replayed events meet the
state that had not seen them.  SIGINT/SIGTERM stop polling; the runner then
writes a final checkpoint, commits synchronously, flushes the producers and
closes.  See docs/reliability.md.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from detectors.errors import StreamdriftError
from detectors.model import ModelMonitor
from stream.config import Config, KafkaConfig, require_kafka
from stream.pipeline import Pipeline
from stream.state import Checkpoint, StateError, StateStore

log = logging.getLogger("streamdrift.run")

LAG_INTERVAL_S = 1.0
#: bound of every blocking call to the broker made by the loop (lag, offsets)
BROKER_CALL_TIMEOUT_S = 2.0
#: bound of a checkpoint write or an offset commit in the loop and at shutdown
CHECKPOINT_TIMEOUT_S = 5.0
#: pause of checkpoint writes and commits after one failed (the loop keeps polling)
WRITE_BACKOFF_S = 5.0
#: bound of the checkpoint write in the revocation callback (it blocks the consumer's IO loop)
REVOKE_CHECKPOINT_TIMEOUT_S = 5.0
#: bound of reading the state topic on assignment
RESTORE_TIMEOUT_S = 15.0
#: bound of one dead-letter write attempt
DEAD_LETTER_TIMEOUT_S = 10.0
#: back-off between failed dead-letter writes (doubles up to the maximum)
DEAD_LETTER_BACKOFF_S = (0.5, 30.0)
#: kafka-python waits up to 30 s between reconnection attempts by default; after a broker
#: restart that is up to 30 s of outage more than needed (source.kafka.options overrides it
#: for the consumer)
RECONNECT_BACKOFF_MAX_MS = 2000


class KafkaConnectError(StreamdriftError):
    """The brokers cannot be reached, or refused the TLS handshake or the SASL login."""


def connection_error(k: KafkaConfig, exc: BaseException) -> KafkaConnectError:
    """A clear error for a failed connection: how we connected and what to check.

    Never holds a secret: the settings named are the protocol, mechanism, user name and
    CA file; ``exc`` comes from kafka-python, whose messages hold no credentials.
    """
    how = [f"security_protocol {k.security_protocol}"]
    checks = ["source.kafka.bootstrap_servers"]
    if k.sasl_mechanism:
        how.append(f"sasl_mechanism {k.sasl_mechanism}, sasl_username {k.sasl_username!r}")
    if k.ssl_cafile:
        how.append(f"ssl_cafile {k.ssl_cafile}")
    if k.security_protocol.endswith("SSL"):
        checks.append("ssl_cafile (the CA that signed the brokers' certificates)")
    if k.sasl_mechanism:
        checks.append("sasl_mechanism, sasl_username and sasl_password (a broker closes the "
                      "connection on wrong credentials and logs 'Failed authentication')")
    detail = str(exc) or type(exc).__name__
    if not detail.startswith(type(exc).__name__):
        detail = f"{type(exc).__name__}: {detail}"
    return KafkaConnectError(
        f"cannot connect to Kafka at {', '.join(k.bootstrap_servers)} ({'; '.join(how)}): "
        f"{detail}; check {', '.join(checks)}")


def kafka_client_kwargs(k: KafkaConfig) -> dict[str, Any]:
    """kafka-python connection settings (shared by consumer, producer and admin)."""
    kw = k.connection_kwargs()
    kw["reconnect_backoff_max_ms"] = RECONNECT_BACKOFF_MAX_MS
    # TLS/SASL settings given under options (ssl_check_hostname, ssl_crlfile, ssl_ciphers,
    # sasl_kerberos_*, ...) apply to every client: the dead-letter producer and the state
    # store connect to the same brokers as the consumer
    kw.update({key: value for key, value in k.options.items()
               if key.startswith(("ssl_", "sasl_"))})
    return kw


@dataclass
class _PendingDeadLetters:
    """Poison messages of processed records whose dead-letter write is not acknowledged."""

    #: (record, reason) still to write
    entries: list[tuple[Any, str]]
    #: partition -> next offset, committed once every entry is written
    done: dict[Any, int]
    attempts: int = 0
    next_try: float = 0.0
    first_failure: float = field(default_factory=time.monotonic)


def _listener_class() -> type:
    from kafka import ConsumerRebalanceListener

    class _Listener(ConsumerRebalanceListener):
        """Runs on the consumer's IO thread: record what changed, return quickly."""

        def __init__(self, runner: KafkaRunner) -> None:
            self.runner = runner

        def on_partitions_revoked(self, revoked: Any) -> None:
            self.runner._on_revoked(set(revoked))

        def on_partitions_assigned(self, assigned: Any) -> None:
            self.runner._on_assigned(set(assigned))

        def on_partitions_lost(self, lost: Any) -> None:
            self.runner._on_lost(set(lost))

    return _Listener


class KafkaRunner:
    """Consumes the configured topics into a :class:`Pipeline` until stopped."""

    def __init__(self, config: Config, pipeline: Pipeline,
                 stop: threading.Event | None = None) -> None:
        self.config = config
        self.kafka = require_kafka(config)
        self.pipeline = pipeline
        self.stop_event = stop or threading.Event()
        self.consumer: Any = None
        self.producer: Any = None
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
        #: without state: revoked partitions whose monitors are kept in case they come back,
        #: with the offset they cover
        self.parked: dict[Any, int] = {}
        #: partition -> model -> checkpoint offset still ahead of the partition's position
        self.skip_until: dict[Any, dict[str, int]] = {}
        self.pending: _PendingDeadLetters | None = None
        self.last_checkpoint = time.monotonic()
        self.rebalanced = False
        self.closing = False
        self.writes_paused_until = 0.0
        self._last_data = time.monotonic()
        #: the records' message values (the clients' records differ)
        self._values: Any = _record_values

    # -- clients ----------------------------------------------------------------
    def _consumer(self) -> Any:
        if self.kafka.client == "confluent-kafka":
            return self._confluent_consumer()
        from kafka import KafkaConsumer

        k = self.kafka
        kw = kafka_client_kwargs(k)
        kw.update(group_id=k.group_id, enable_auto_commit=False,
                  auto_offset_reset=k.auto_offset_reset, max_poll_records=k.max_poll_records,
                  max_partition_fetch_bytes=max(1_048_576, self.config.source.max_message_bytes))
        kw.update(dict(k.options))
        consumer = KafkaConsumer(**kw)
        try:
            # have the topics' partitions in the metadata before the first join: a group leader
            # that joins without them assigns nothing, and only a later metadata refresh
            # (up to metadata_max_age_ms) would fix that
            for topic in k.topics:
                consumer.partitions_for_topic(topic)
        except Exception as exc:  # noqa: BLE001 - the join copes, only later
            log.warning("cannot read the metadata of the topics: %s", exc)
        consumer.subscribe(list(k.topics), listener=_listener_class()(self))
        return consumer

    def _confluent_consumer(self) -> Any:
        from stream.confluent import ConfluentConsumer, record_values

        consumer = ConfluentConsumer(self.kafka, self.config.source.max_message_bytes,
                                     on_assign=self._assign_and_restore,
                                     on_revoke=self._on_revoked, on_lost=self._on_lost)
        try:
            consumer.raise_startup_error(RESTORE_TIMEOUT_S)
        except Exception:
            consumer.close()
            raise
        consumer.subscribe(list(self.kafka.topics))
        self._values = record_values
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

    @staticmethod
    def _key(tp: Any) -> tuple[str, int]:
        return (tp.topic, tp.partition)

    # -- rebalance callbacks (consumer IO thread; the loop is blocked in poll) ------------
    def _on_assigned(self, assigned: set[Any]) -> None:
        if assigned:
            log.info("partitions assigned", extra={"partitions": _names(assigned)})
        self.to_restore |= assigned
        self.rebalanced = True

    def _on_revoked(self, revoked: set[Any]) -> None:
        self.to_restore -= revoked
        if self.closing or not revoked:
            return
        log.info("partitions revoked", extra={"partitions": _names(revoked)})
        if self.store is not None:
            # checkpoint what we processed, so the next owner resumes from exactly here;
            # a partition whose dead-letter write is pending has a state ahead of its
            # committed offset: its previous checkpoint stays the valid one
            try:
                self._checkpoint(revoked, REVOKE_CHECKPOINT_TIMEOUT_S, in_callback=True)
            except Exception as exc:  # noqa: BLE001 - never raise into the consumer
                log.warning("checkpoint on revocation failed: %s", exc)
            for tp in revoked:
                self._forget(tp, keep_monitors=False)
        else:
            for tp in revoked:
                if tp in self.done and not (self.pending and tp in self.pending.done):
                    self.parked[tp] = self.done[tp]
                self._forget(tp, keep_monitors=True)
        self._drop_pending(revoked)

    def _on_lost(self, lost: set[Any]) -> None:
        # the partitions may already belong to another member: no checkpoint, no commit
        if lost:
            log.warning("partitions lost", extra={"partitions": _names(lost)})
        self.to_restore -= lost
        for tp in lost:
            self._forget(tp, keep_monitors=False)
            self.parked.pop(tp, None)
        self._drop_pending(lost)

    def _forget(self, tp: Any, keep_monitors: bool) -> None:
        self.done.pop(tp, None)
        self.committed.pop(tp, None)
        self.checkpointed.pop(tp, None)
        self.skip_until.pop(tp, None)
        if not keep_monitors:
            self.pipeline.drop_partition(self._key(tp))

    def _drop_pending(self, tps: set[Any]) -> None:
        p = self.pending
        if p is None:
            return
        p.entries = [(r, why) for r, why in p.entries
                     if (r.topic, r.partition) not in {self._key(tp) for tp in tps}]
        for tp in tps:
            p.done.pop(tp, None)
        if not p.done:
            self.pending = None

    # -- restore ---------------------------------------------------------------------
    def _restore(self, polled: dict[Any, list[Any]]) -> None:
        """Restore the partitions assigned since the last iteration (before using their records).

        Every restored partition is sought explicitly (to its checkpoint's offset, else to
        the committed offset, else by ``auto_offset_reset``): kafka-python keeps the fetch
        position of a partition that is revoked and assigned again to the same consumer,
        which would otherwise skip what was processed but not committed.
        """
        assignment = set(self.consumer.assignment())
        self.to_restore &= assignment
        tps = set(self.to_restore)
        if self.rebalanced:
            # without state: parked partitions that went to another member lose their monitors
            self.rebalanced = False
            for tp in list(self.parked):
                if tp not in assignment:
                    self.pipeline.drop_partition(self._key(tp))
                    del self.parked[tp]
        if not tps:
            return
        latest: dict[tuple[str, str, int], Checkpoint] = {}
        if self.store is not None:
            try:
                latest = self.store.read({self._key(tp) for tp in tps}, RESTORE_TIMEOUT_S)
            except StateError as exc:
                # never process these partitions with fresh state while their checkpoint
                # may exist: pause them and try again in the next iteration
                self._restore_failed(tps, polled, exc)
                return
        failed = set()
        for tp in sorted(tps):
            try:
                if self.store is None:
                    self._restore_without_state(tp, polled)
                else:
                    self._restore_one(tp, latest, polled)
            except Exception as exc:  # noqa: BLE001 - broker calls: retried next iteration
                failed.add(tp)
                self._restore_failed({tp}, polled, exc)
        done = tps - failed
        paused = set(self.consumer.paused())
        if self.pending is None and done & paused:
            self.consumer.resume(*(done & paused))
        self.to_restore -= done

    def _restore_failed(self, tps: set[Any], polled: dict[Any, list[Any]],
                        exc: BaseException) -> None:
        self.pipeline.restores["failed"] += len(tps)
        log.warning("cannot restore partitions; they stay paused until it works: %s", exc,
                    extra={"partitions": _names(tps)})
        self._rewind(polled, tps)
        self.consumer.pause(*tps)

    def _seek_committed(self, tp: Any, polled: dict[Any, list[Any]]) -> int | None:
        """Seek ``tp`` to its committed offset (or by auto_offset_reset); returns the offset."""
        committed = self.consumer.committed(tp, timeout_ms=int(BROKER_CALL_TIMEOUT_S * 1000))
        recs = polled.get(tp)
        if committed is not None:
            if not recs or recs[0].offset != committed:
                polled.pop(tp, None)
                self.consumer.seek(tp, committed)
            return int(committed)
        polled.pop(tp, None)
        if self.kafka.auto_offset_reset == "earliest":
            self.consumer.seek_to_beginning(tp)
        else:
            self.consumer.seek_to_end(tp)
        return None

    def _restore_one(self, tp: Any, latest: dict[tuple[str, str, int], Checkpoint],
                     polled: dict[Any, list[Any]]) -> None:
        key = self._key(tp)
        found: dict[str, tuple[int, ModelMonitor]] = {}
        for name, base in self.pipeline.baselines.items():
            if name not in self.pipeline.fresh:
                continue
            cp = latest.get((name, tp.topic, tp.partition))
            if cp is None:
                continue
            if cp.baseline_id != self.pipeline.baseline_ids[name] or cp.calibration_key != base.key:
                self.pipeline.restores["ignored"] += 1
                log.warning("ignoring a checkpoint of another baseline; this model starts "
                            "with fresh state", extra={
                                "model": name, "topic": tp.topic, "partition": tp.partition,
                                "checkpoint_baseline_id": cp.baseline_id,
                                "baseline_id": self.pipeline.baseline_ids[name]})
                continue
            try:
                found[name] = (cp.offset, ModelMonitor.from_dict(cp.state, base))
            except Exception as exc:  # noqa: BLE001 - a bad checkpoint must not stop the run
                self.pipeline.restores["ignored"] += 1
                log.warning("ignoring a checkpoint that does not restore: %s", exc,
                            extra={"model": name, "topic": tp.topic, "partition": tp.partition})
        if not found:
            start = self._seek_committed(tp, polled)
            self.pipeline.restore_partition(key, {})
            self.pipeline.restores["fresh"] += 1
            log.info("no checkpoint: fresh state from the committed offset",
                     extra={"topic": tp.topic, "partition": tp.partition, "offset": start})
            return
        start = min(off for off, _ in found.values())
        self.consumer.seek(tp, start)
        polled.pop(tp, None)
        self.pipeline.restore_partition(key, {name: mon for name, (_, mon) in found.items()})
        self.done[tp] = start
        ahead = {name: off for name, (off, _) in found.items() if off > start}
        if ahead:
            # the checkpoints of one partition were cut by a crash between two writes:
            # each model skips what its own state already holds
            self.skip_until[tp] = ahead
        elif len(found) == len(self.pipeline.fresh):
            self.checkpointed[tp] = start
        self.pipeline.restores["checkpoint"] += 1
        log.info("state restored", extra={
            "topic": tp.topic, "partition": tp.partition, "offset": start,
            "events": {name: mon.n_events for name, (_, mon) in found.items()}})

    def _restore_without_state(self, tp: Any, polled: dict[Any, list[Any]]) -> None:
        parked = self.parked.pop(tp, None)
        committed = self._seek_committed(tp, polled)
        if parked is not None and committed == parked:
            self.done[tp] = parked
            return  # nobody processed it meanwhile: the kept monitors go on
        self.pipeline.restore_partition(self._key(tp), {})
        self.pipeline.restores["fresh"] += 1

    def _rewind(self, polled: dict[Any, list[Any]], tps: Iterable[Any] | None = None) -> None:
        """Give back polled records that will not be processed now (seek to the first one)."""
        for tp in list(polled if tps is None else tps):
            recs = polled.pop(tp, None)
            if recs:
                try:
                    self.consumer.seek(tp, recs[0].offset)
                except Exception as exc:  # noqa: BLE001 - revoked meanwhile
                    log.debug("cannot rewind %s: %s", tp, exc)

    # -- processing ----------------------------------------------------------------
    def _skip_for(self, tp: Any, recs: list[Any]) -> dict[str, int] | None:
        ahead = self.skip_until.get(tp)
        if not ahead:
            return None
        offsets = [r.offset for r in recs]
        skip = {name: bisect.bisect_left(offsets, off) for name, off in ahead.items()}
        last = recs[-1].offset
        for name, off in list(ahead.items()):
            if last + 1 >= off:
                del ahead[name]
        if not ahead:
            del self.skip_until[tp]
        return skip

    def _process(self, polled: dict[Any, list[Any]]) -> tuple[dict[Any, int],
                                                               list[tuple[Any, str]]]:
        done: dict[Any, int] = {}
        poison: list[tuple[Any, str]] = []
        for tp in sorted(polled):
            recs = polled[tp]
            if not recs:
                continue
            found, batch = self.pipeline.process(self._values(recs),
                                                 base_index=self.consumed,
                                                 partition=self._key(tp),
                                                 skip=self._skip_for(tp, recs))
            for d in found:
                r = recs[d.index - self.consumed]
                log.info("drift alarm", extra={**d.to_dict(), "topic": r.topic,
                                               "partition": r.partition, "offset": r.offset})
            if self.config.source.dead_letter is not None:
                poison.extend((recs[pos], reason) for pos, reason in
                              zip(batch.invalid_positions.tolist(), batch.invalid_reasons,
                                  strict=True))
            done[tp] = recs[-1].offset + 1
            self.consumed += len(recs)
        return done, poison

    # -- dead letters ------------------------------------------------------------------
    def _write_dead_letters(self, entries: list[tuple[Any, str]]) -> list[tuple[Any, str]]:
        """Write poison messages to the dead-letter topic; returns the entries that failed."""
        dl = self.config.source.dead_letter
        assert dl is not None
        try:
            if self.producer is None:
                self.producer = self._producer()
            futures = []
            for r, reason in entries:
                headers = [("source_topic", r.topic.encode()),
                           ("source_partition", str(r.partition).encode()),
                           ("source_offset", str(r.offset).encode()),
                           ("error", reason.encode())]
                futures.append(self.producer.send(dl.topic, value=r.value, key=r.key,
                                                  headers=headers))
            self.producer.flush(timeout=DEAD_LETTER_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - counted, retried
            self.pipeline.dead_letter["failed"] += len(entries)
            log.warning("dead-letter write failed: %s: %s", type(exc).__name__, exc,
                        extra={"messages": len(entries), "topic": dl.topic})
            self._close_producer()
            return entries
        failed = []
        error: Exception | None = None
        for entry, f in zip(entries, futures, strict=True):
            try:
                f.get(timeout=DEAD_LETTER_TIMEOUT_S)
                self.pipeline.dead_letter["ok"] += 1
            except Exception as exc:  # noqa: BLE001
                self.pipeline.dead_letter["failed"] += 1
                failed.append(entry)
                error = exc
        if failed:
            log.warning("dead-letter write failed: %s", error,
                        extra={"messages": len(failed), "topic": dl.topic})
            self._close_producer()
        return failed

    def _retry_pending(self) -> bool:
        """Retry the pending dead-letter writes if due; True once none is left."""
        p = self.pending
        if p is None:
            return True
        if time.monotonic() < p.next_try:
            return False
        p.entries = self._write_dead_letters(p.entries)
        if p.entries:
            p.attempts += 1
            lo, hi = DEAD_LETTER_BACKOFF_S
            p.next_try = time.monotonic() + min(hi, lo * 2 ** min(p.attempts, 16))
            return False
        log.info("dead-letter write succeeded after retries",
                 extra={"attempts": p.attempts + 1,
                        "seconds": round(time.monotonic() - p.first_failure, 1)})
        self.done.update(p.done)
        self.pending = None
        paused = set(self.consumer.paused())
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
        for tp in tps:
            off = self.done.get(tp)
            if off is None or self.checkpointed.get(tp) == off or tp in self.skip_until:
                continue  # nothing new (or a cut checkpoint still being caught up)
            if tp in held:
                continue  # its state is ahead of `off` until the dead letters are written
            states = self.pipeline.export_partition(self._key(tp))
            if not states:
                continue
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
            self.pipeline.checkpoints["failed"] += len(cps)
            log.warning("checkpoint failed; offsets are not committed until one succeeds: %s",
                        exc)
            self._maybe_down(exc)
            return False
        self.pipeline.checkpoints["ok"] += len(cps)
        self.pipeline.last_checkpoint_ts = time.time()
        self.checkpointed.update(offsets)
        log.info("checkpoint written", extra={
            "offsets": {f"{tp.topic}/{tp.partition}": off for tp, off in offsets.items()},
            "records": len(cps), "bytes": size,
            "ms": round((time.monotonic() - t0) * 1000, 1)})
        return True

    def _commit(self) -> bool:
        from kafka.structs import OffsetAndMetadata

        todo = {tp: off for tp, off in self.done.items() if self.committed.get(tp) != off}
        if not todo:
            return True
        try:
            self.consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in todo.items()},
                                 timeout_ms=int(CHECKPOINT_TIMEOUT_S * 1000))
        except Exception as exc:  # noqa: BLE001 - retried with the next iteration
            log.warning("offset commit failed: %s: %s", type(exc).__name__, exc)
            self._maybe_down(exc)
            return False
        self.committed.update(todo)
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
        if not self._commit():
            self.writes_paused_until = time.monotonic() + WRITE_BACKOFF_S

    # -- lag and source health ---------------------------------------------------------
    def _maybe_down(self, exc: BaseException) -> None:
        """A write failed: if for want of a broker, say so at once (the lag check, which
        runs between iterations, sets source_up back to 1)."""
        if _is_connection_error(exc):
            with self.pipeline.lock:
                self.pipeline.source_up = 0

    def _update_lag(self) -> None:
        c = self.consumer
        try:
            from kafka import TopicPartition

            parts = list(c.assignment())
            ms = int(BROKER_CALL_TIMEOUT_S * 1000)
            if not parts:
                # nothing assigned (yet): still check that the cluster answers
                c.end_offsets([TopicPartition(self.kafka.topics[0], 0)], timeout_ms=ms)
                with self.pipeline.lock:
                    self.pipeline.consumer_lag = {}
                    self.pipeline.source_up = 1
                return
            ends = c.end_offsets(parts, timeout_ms=ms)
            lag = {}
            for tp in parts:
                pos = c.position(tp, timeout_ms=ms)
                if pos is not None and tp in ends:
                    lag[(tp.topic, tp.partition)] = max(0, int(ends[tp]) - int(pos))
            with self.pipeline.lock:
                self.pipeline.consumer_lag = lag
                self.pipeline.source_up = 1
        except Exception as exc:  # noqa: BLE001 - an outage must not stop the loop
            log.warning("cannot read consumer lag: %s", exc)
            with self.pipeline.lock:
                self.pipeline.source_up = 0

    # -- the loop --------------------------------------------------------------------
    def run(self, max_events: int | None = None, idle_timeout: float | None = None) -> int:
        """Consume until stopped (or ``max_events`` processed, or idle for ``idle_timeout`` s).

        Returns the number of messages consumed.
        """
        from kafka.errors import KafkaError

        k = self.kafka
        try:
            if self.state_cfg.enabled:
                self.store = self._state_store()
                self.store.ensure_topic()
                self.store.connect()
            self.consumer = self._consumer()
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
        try:
            while not self.stop_event.is_set():
                more = self._iteration(max_events)
                now = time.monotonic()
                if now - last_lag >= LAG_INTERVAL_S:
                    self._update_lag()
                    last_lag = now
                if not more:
                    break
                if idle_timeout is not None and now - self._last_data > idle_timeout:
                    break
        finally:
            self.close()
        log.info("stopped", extra={"consumed": self.consumed, "batches": self.batches})
        return self.consumed

    def _iteration(self, max_events: int | None) -> bool:
        """One poll and what follows; False once ``max_events`` are consumed."""
        k = self.kafka
        try:
            polled = self.consumer.poll(timeout_ms=k.poll_timeout_ms,
                                        max_records=k.max_poll_records)
        except Exception as exc:  # noqa: BLE001 - broker outage, rebalance errors
            log.warning("poll failed: %s: %s", type(exc).__name__, exc)
            with self.pipeline.lock:
                self.pipeline.source_up = 0
            self.stop_event.wait(min(1.0, k.poll_timeout_ms / 1000))
            return True
        polled = {tp: recs for tp, recs in polled.items() if recs}
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
            with self.pipeline.lock:
                self.pipeline.source_up = 1
        done, poison = self._process(polled)
        self.batches += 1
        self._last_data = time.monotonic()
        if poison:
            failed = self._write_dead_letters(poison)
            if failed:
                # keep the batch's offsets uncommitted until the dead letters are written
                self.pending = _PendingDeadLetters(
                    failed, done, next_try=time.monotonic() + DEAD_LETTER_BACKOFF_S[0])
                parts = list(self.consumer.assignment())
                if parts:
                    self.consumer.pause(*parts)
                return True
        self.done.update(done)
        self._checkpoint_and_commit()
        return max_events is None or self.consumed < max_events

    def _close_producer(self) -> None:
        if self.producer is not None:
            try:
                self.producer.close(timeout=1)
            except Exception:  # noqa: BLE001
                pass
            self.producer = None

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
        if self.producer is not None:
            try:
                self.producer.flush(timeout=10)
                self.producer.close(timeout=10)
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the dead-letter producer: %s", exc)
            self.producer = None
        if self.store is not None:
            self.store.close()
        if self.consumer is not None:
            try:
                self.consumer.close(autocommit=False,
                                    timeout_ms=int(CHECKPOINT_TIMEOUT_S * 1000))
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the consumer: %s", exc)
            self.consumer = None


def _record_values(recs: list[Any]) -> list[bytes]:
    """kafka-python: the records' values, ``b""`` for a null value."""
    return [r.value or b"" for r in recs]


#: librdkafka error codes that mean that no broker answered (confluent_kafka.KafkaError)
_RDKAFKA_DOWN = ("_TRANSPORT", "_ALL_BROKERS_DOWN", "_TIMED_OUT", "_WAIT_COORD",
                 "COORDINATOR_NOT_AVAILABLE", "NOT_COORDINATOR", "_MSG_TIMED_OUT",
                 "REQUEST_TIMED_OUT", "_RESOLVE")


def _is_connection_error(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) says that no broker answered in time."""
    from kafka import errors

    kinds = tuple(getattr(errors, name) for name in (
        "KafkaTimeoutError", "KafkaConnectionError", "NodeNotReadyError", "RequestTimedOutError",
        "NoBrokersAvailable", "CoordinatorNotAvailableError") if hasattr(errors, name))
    try:
        from confluent_kafka import KafkaError, KafkaException

        down = {getattr(KafkaError, name) for name in _RDKAFKA_DOWN if hasattr(KafkaError, name)}
    except ImportError:
        KafkaException, down = None, set()  # type: ignore[assignment,misc]
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, kinds):
            return True
        if KafkaException is not None and isinstance(exc, KafkaException) and exc.args \
                and getattr(exc.args[0], "code", lambda: None)() in down:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _names(tps: Iterable[Any]) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in tps)


def run(config: Config, pipeline: Pipeline, stop: threading.Event | None = None,
        **kwargs: Any) -> int:
    return KafkaRunner(config, pipeline, stop).run(**kwargs)
