"""Partition assignment in the Kafka runner: rebalance callbacks, restores and seeks.

Each newly assigned partition is restored before any of its records is processed:
from its latest checkpoint (monitors and the offset they cover), else with fresh
monitors from the committed offset.  Revoked partitions are checkpointed first (with
state) or parked (without), lost ones dropped.  See docs/reliability.md.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from detectors.model import ModelMonitor
from stream.config import KafkaConfig
from stream.engine.figures import RunnerHealth
from stream.engine.pipeline import Pipeline
from stream.runtime.labelsrun import LabelTopics
from stream.runtime.startpos import log_start
from stream.sinks.checkpoints import Checkpoint, StateError, StateStore
from stream.sinks.deadletters import PendingDeadLetters
from stream.sinks.driftevents import DriftEventWriter
from stream.sources.kafka import codec_fix, partition_names, unsupported_codec

log = logging.getLogger("streamdrift.run")

#: bound of every blocking call to the broker made by the loop (lag, offsets)
BROKER_CALL_TIMEOUT_S = 2.0
#: bound of the checkpoint write in the revocation callback (it blocks the consumer's IO loop)
REVOKE_CHECKPOINT_TIMEOUT_S = 5.0
#: bound of reading the state topic on assignment
RESTORE_TIMEOUT_S = 15.0
#: checkpoint state key (open-inference): the offset of the oldest half that waited in the
#: join buffer when the checkpoint was written; a restore reads again from there
RESUME_KEY = "resume_offset"


@dataclass(frozen=True)
class LostPartition:
    """A partition lost (its session timed out, e.g. in a broker outage) whose monitors are
    kept: if it comes back to this process with the committed offset still ``committed``
    (nobody committed past us meanwhile), they go on from ``done``."""

    done: int
    committed: int | None
    checkpointed: int | None
    #: offsets of our commits that timed out since ``committed`` (they may have landed)
    unacked: frozenset[int] = frozenset()


class Rebalancing:
    """The assignment half of :class:`~stream.runtime.runner.KafkaRunner` (a mixin: the
    runner's partition bookkeeping lives on the runner)."""

    # set by KafkaRunner.__init__
    kafka: KafkaConfig
    pipeline: Pipeline
    health: RunnerHealth
    consumer: Any
    store: StateStore | None
    #: partition -> next offset to read; everything before is processed and dead-lettered
    done: dict[Any, int]
    #: partition -> offset of our last successful commit
    committed: dict[Any, int]
    #: partition -> offset covered by our last acknowledged checkpoint
    checkpointed: dict[Any, int]
    #: partitions assigned but not restored yet (set by the rebalance callback)
    to_restore: set[Any]
    #: without state: revoked partitions whose monitors are kept in case they come back,
    #: with the offset they cover
    parked: dict[Any, int]
    #: with state: lost partitions whose monitors are kept in case they come back unchanged
    lost: dict[Any, LostPartition]
    #: partition -> offsets of failed commits since the last acknowledged one
    unacked: dict[Any, set[int]]
    #: partition -> model -> checkpoint offset still ahead of the partition's position
    skip_until: dict[Any, dict[str, int]]
    pending: PendingDeadLetters | None
    drift_events: DriftEventWriter | None
    #: partition -> compression codec the consumer cannot decompress (kept paused)
    blocked: dict[Any, str]
    #: partition -> (how its start offset was chosen, the offset) during a restore
    starts: dict[Any, tuple[str, int | None]]
    rebalanced: bool
    closing: bool
    labels: LabelTopics

    def _checkpoint(self, tps: Iterable[Any], timeout_s: float,
                    in_callback: bool = False) -> bool:
        raise NotImplementedError  # the runner's

    @staticmethod
    def _key(tp: Any) -> tuple[str, int]:
        return (tp.topic, tp.partition)

    # -- rebalance callbacks (consumer IO thread; the loop is blocked in poll) ------------
    def _on_assigned(self, assigned: set[Any]) -> None:
        if assigned:
            log.info("partitions assigned", extra={"partitions": partition_names(assigned)})
        self.to_restore |= assigned
        self.rebalanced = True

    def _on_revoked(self, revoked: set[Any]) -> None:
        self.to_restore -= revoked
        if self.closing or not revoked:
            return
        log.info("partitions revoked", extra={"partitions": partition_names(revoked)})
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
        # the partitions may already belong to another member: no checkpoint, no commit.
        # With state (and no label join), the monitors are kept: a broker outage longer
        # than the session timeout loses every partition, and when the same partitions come
        # back with their committed offset unchanged the state carries on (no fall-back to
        # the last checkpoint, nothing processed twice)
        if lost:
            log.warning("partitions lost", extra={"partitions": partition_names(lost)})
        self.to_restore -= lost
        pending = self.pending.done if self.pending is not None else {}
        for tp in lost:
            keep = (self.store is not None and not self.labels and tp in self.done
                    and tp not in pending and tp not in self.blocked)
            if keep:
                self.lost[tp] = LostPartition(self.done[tp], self.committed.get(tp),
                                              self.checkpointed.get(tp),
                                              frozenset(self.unacked.get(tp, ())))
            self._forget(tp, keep_monitors=keep)
            self.parked.pop(tp, None)
        self._drop_pending(lost)

    def _forget(self, tp: Any, keep_monitors: bool) -> None:
        self.done.pop(tp, None)
        self.committed.pop(tp, None)
        self.unacked.pop(tp, None)
        self.checkpointed.pop(tp, None)
        self.skip_until.pop(tp, None)
        if self.blocked.pop(tp, None) is not None:
            self.health.unblock([self._key(tp)])
        if not keep_monitors:
            self.pipeline.drop_partition(self._key(tp))
        if self.drift_events is not None:
            self.drift_events.forget(self._key(tp))

    def _drop_pending(self, tps: set[Any]) -> None:
        p = self.pending
        if p is None:
            return
        p.entries = [(r, why) for r, why in p.entries
                     if (r.topic, r.partition) not in {self._key(tp) for tp in tps}]
        p.drift = [r for r in p.drift if r.partition not in {self._key(tp) for tp in tps}]
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
            for tp in list(self.lost):
                if tp not in assignment:
                    self.pipeline.drop_partition(self._key(tp))
                    del self.lost[tp]
        for tp in sorted(tps & set(self.lost)):
            if self._resume_lost(tp, polled):
                tps.discard(tp)
                self.to_restore.discard(tp)
        if not tps:
            return
        latest: dict[tuple[str, str, int], Checkpoint] = {}
        if self.store is not None:
            try:
                latest = self.store.read({self._key(tp) for tp in tps}
                                         | self.labels.state_keys(tps), RESTORE_TIMEOUT_S)
                if self.drift_events is not None:
                    # what a previous owner wrote since the checkpoints: not written again
                    since: dict[tuple[str, int], float | None] = {
                        self._key(tp): None for tp in tps}
                    for (_, topic, part), cp in latest.items():
                        if (topic, part) in since:
                            since[(topic, part)] = min(since[(topic, part)] or cp.written_at,
                                                       cp.written_at)
                    self.drift_events.recall(since, self.kafka.group_id, RESTORE_TIMEOUT_S)
            except StateError as exc:
                # never process these partitions with fresh state while their checkpoint
                # may exist: pause them and try again in the next iteration
                self._restore_failed(tps, polled, exc)
                return
        failed = set()
        for tp in sorted(tps):
            try:
                if self.labels.is_label(tp):
                    self._restore_labels(tp, latest, polled)
                elif self.store is None:
                    self._restore_without_state(tp, polled)
                else:
                    self._restore_one(tp, latest, polled)
            except Exception as exc:  # noqa: BLE001 - broker calls: retried next iteration
                failed.add(tp)
                self._restore_failed({tp}, polled, exc)
        done = tps - failed
        starts, self.starts = {tp: self.starts[tp] for tp in done if tp in self.starts}, {}
        log_start(self.consumer, starts, self.kafka.auto_offset_reset,
                  int(BROKER_CALL_TIMEOUT_S * 1000))
        if self.labels:
            self.labels.check_assignment(assignment)
        paused = set(self.consumer.paused()) - set(self.blocked)
        if self.pending is None and done & paused:
            self.consumer.resume(*(done & paused))
        self.to_restore -= done

    def _restore_failed(self, tps: set[Any], polled: dict[Any, list[Any]],
                        exc: BaseException) -> None:
        self.health.count_restores("failed", len(tps))
        codec = unsupported_codec(exc.__cause__) if exc.__cause__ is not None else None
        fix = "" if codec is None else f"; the state topic holds {codec}-compressed " \
            f"records kafka-python cannot decompress here; fix: {codec_fix(codec)}"
        log.warning("cannot restore partitions; they are not read until it works: %s%s", exc,
                    fix, extra={"partitions": partition_names(tps)})
        self._rewind(polled, tps)
        if self.kafka.client != "kafka-python":
            # kafka-python 3.0.12 parks what it fetched for a paused partition and hands it
            # back only when no other partition's records are in line: with the others read
            # meanwhile, a partition paused here was never read again after its restore
            # (tests/integration/test_restore_retry.py). With it, the records polled are
            # given back (sought to, above) at every iteration until the restore works.
            self.consumer.pause(*tps)

    def _seek_committed(self, tp: Any, polled: dict[Any, list[Any]]) -> int | None:
        """Seek ``tp`` to its committed offset (or by auto_offset_reset); returns the offset."""
        committed = self.consumer.committed(tp, timeout_ms=int(BROKER_CALL_TIMEOUT_S * 1000))
        recs = polled.get(tp)
        self.starts[tp] = ("auto_offset_reset", None) if committed is None \
            else ("committed", int(committed))
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
        episodes: dict[str, Any] = {}
        joins: dict[str, Any] = {}
        states: dict[str, Any] = {}
        for name, base in self.pipeline.baselines.items():
            if name not in self.pipeline.fresh:
                continue
            cp = latest.get((name, tp.topic, tp.partition))
            if cp is None:
                continue
            if cp.baseline_id != self.pipeline.baseline_ids[name] or cp.calibration_key != base.key:
                self.health.count_restores("ignored")
                log.warning("ignoring a checkpoint of another baseline; this model starts "
                            "with fresh state", extra={
                                "model": name, "topic": tp.topic, "partition": tp.partition,
                                "checkpoint_baseline_id": cp.baseline_id,
                                "baseline_id": self.pipeline.baseline_ids[name]})
                continue
            try:
                found[name] = (cp.offset, ModelMonitor.from_dict(cp.state, base,
                                                               self.pipeline.new_monitor(name)))
                episodes[name] = cp.state.get("episodes")
                joins[name] = cp.state.get("labels")
                states[name] = cp.state
            except Exception as exc:  # noqa: BLE001 - a bad checkpoint must not stop the run
                self.health.count_restores("ignored")
                log.warning("ignoring a checkpoint that does not restore: %s", exc,
                            extra={"model": name, "topic": tp.topic, "partition": tp.partition})
        if not found:
            start = self._seek_committed(tp, polled)
            self.pipeline.restore_partition(key, {})
            self.health.count_restores("fresh")
            log.info("no checkpoint: fresh state from the committed offset" if start is not None
                     else f"no checkpoint and no committed offset: fresh state from "
                     f"auto_offset_reset {self.kafka.auto_offset_reset} (the 'consumption "
                     f"starts' line says where)",
                     extra={"topic": tp.topic, "partition": tp.partition, "offset": start})
            return
        start = min(off for off, _ in found.values())
        resumes = [s[RESUME_KEY] for s in states.values()
                   if isinstance(s.get(RESUME_KEY), int) and 0 <= s[RESUME_KEY] < start]
        if resumes:
            start = min(resumes)  # halves that waited in the join buffer are read again
        self.starts[tp] = ("checkpoint", start)
        self.consumer.seek(tp, start)
        polled.pop(tp, None)
        self.pipeline.restore_partition(key, {name: mon for name, (_, mon) in found.items()},
                                        episodes, joins, states)
        self.done[tp] = start
        ahead = {name: off for name, (off, _) in found.items() if off > start}
        if ahead:
            # the checkpoints of one partition were cut by a crash between two writes:
            # each model skips what its own state already holds
            self.skip_until[tp] = ahead
        elif len(found) == len(self.pipeline.fresh):
            self.checkpointed[tp] = start
        self.health.count_restores("checkpoint")
        log.info("state restored", extra={
            "topic": tp.topic, "partition": tp.partition, "offset": start,
            "events": {name: mon.n_events for name, (_, mon) in found.items()}})

    def _restore_labels(self, tp: Any, latest: dict[tuple[str, str, int], Checkpoint],
                        polled: dict[Any, list[Any]]) -> None:
        """A label partition resumes from the label offset its inference partition's
        checkpoint covers (else from its committed offset)."""
        start = self.labels.resume_offset(tp, latest)
        if start is None:
            start = self._seek_committed(tp, polled)
        else:
            self.consumer.seek(tp, start)
            polled.pop(tp, None)
        if start is not None:
            self.done[tp] = start
        log.info("label partition restored", extra={"topic": tp.topic, "partition": tp.partition,
                                                    "offset": start})

    def _restore_without_state(self, tp: Any, polled: dict[Any, list[Any]]) -> None:
        parked = self.parked.pop(tp, None)
        committed = self._seek_committed(tp, polled)
        if parked is not None and committed == parked:
            self.done[tp] = parked
            return  # nobody processed it meanwhile: the kept monitors go on
        self.pipeline.restore_partition(self._key(tp), {})
        self.health.count_restores("fresh")

    def _resume_lost(self, tp: Any, polled: dict[Any, list[Any]]) -> bool:
        """A lost partition is back: its kept monitors go on if nobody committed past our
        last commit meanwhile; otherwise they are dropped and it is restored as usual."""
        kept = self.lost.pop(tp)
        try:
            committed = self.consumer.committed(tp,
                                                timeout_ms=int(BROKER_CALL_TIMEOUT_S * 1000))
        except Exception as exc:  # noqa: BLE001 - then restore from the checkpoint
            log.warning("cannot read the committed offset of a partition that is back: %s; "
                        "restoring it from its checkpoint", exc,
                        extra={"topic": tp.topic, "partition": tp.partition})
            committed = -1
        if committed != kept.committed and committed not in kept.unacked:
            log.info("a lost partition came back, but another member committed it meanwhile: "
                     "restoring it", extra={"topic": tp.topic, "partition": tp.partition,
                                            "committed": committed})
            self.pipeline.drop_partition(self._key(tp))
            return False
        self.consumer.seek(tp, kept.done)
        polled.pop(tp, None)
        self.done[tp] = kept.done
        if committed is not None and committed >= 0:
            self.committed[tp] = committed
        if kept.checkpointed is not None:
            self.checkpointed[tp] = kept.checkpointed
        self.health.count_restores("resumed")
        log.info("a lost partition came back unchanged: its state goes on", extra={
            "topic": tp.topic, "partition": tp.partition, "offset": kept.done})
        return True

    def _rewind(self, polled: dict[Any, list[Any]], tps: Iterable[Any] | None = None) -> None:
        """Give back polled records that will not be processed now (seek to the first one)."""
        for tp in list(polled if tps is None else tps):
            recs = polled.pop(tp, None)
            if recs:
                try:
                    self.consumer.seek(tp, recs[0].offset)
                except Exception as exc:  # noqa: BLE001 - revoked meanwhile
                    log.debug("cannot rewind %s: %s", tp, exc)

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

