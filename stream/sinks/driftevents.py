"""Drift events out: a record when a column's drift episode opens on a partition, one when
it closes, written to a Kafka topic for retraining pipelines and audit; model-quality
episodes (concept drift through the labels) too (:func:`quality_records`).

Layout (``source.drift_events.topic``; see docs/reliability.md#drift-events):

* key ``{group_id}/{model}/{topic}/{partition}/{column}`` (UTF-8), so that the records of
  one column on one input partition land in one partition of the drift-events topic, in
  order;
* value: a JSON object, ``"schema": 1``, ``"type": "open"`` or ``"close"`` (see
  :func:`episode_record`).  Non-finite numbers are written as ``null`` (strict JSON).

Delivery is at-least-once and without duplicates after a restore: the runner writes the
records of a batch, and waits for their acknowledgement, before it commits the batch's
offsets or checkpoints a state that includes them.  After a crash the restored state
processes again the events since its checkpoint and finds the same episodes at the same
offsets; on assignment, :meth:`DriftEventWriter.recall` reads back what was written since
that checkpoint, and :meth:`DriftEventWriter.write` skips a record already there (same
type, group, model, column, input partition and offset).

>>> from stream.engine.episodes import Episode
>>> ep = Episode("m1", "x1", ("events", 0), 7, 1700000000.0, open_offset=1207,
...              open_event_time=1699999990.5, detectors=["ks"],
...              open_scores={"ks": (0.5, 0.25)})
>>> r = episode_record("open", ep, group_id="g", version="3", role="feature",
...                    baseline_id="b1")
>>> r.key
b'g/m1/events/0/x1'
>>> r.value["type"], r.value["open_offset"], r.value["scores"]["ks"]["score"]
('open', 1207, 2.0)
>>> r.ident
('open', 'g', 'm1', 'x1', 'events', 0, 1207)
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stream.engine.episodes import Episode
from stream.engine.figures import PartitionKey
from stream.engine.pipeline import Pipeline
from stream.sinks.checkpoints import StateError
from stream.sinks.producer import ProducerSink, create_topic

log = logging.getLogger("streamdrift.run")

#: version of the record layout (the ``schema`` field)
DRIFT_EVENTS_SCHEMA = 1
#: bound of one write attempt (produce and acknowledgement)
DRIFT_EVENTS_TIMEOUT_S = 10.0
#: on restore the topic is read back from this long before the checkpoint was written
#: (room for the clocks of the broker and of the previous owner; records are few)
RECALL_MARGIN_S = 300.0
#: producer settings: acknowledged by all in-sync replicas, no duplicate on a retry
DRIFT_PRODUCER_SETTINGS: dict[str, Any] = {"acks": "all", "enable_idempotence": True,
                                           "linger_ms": 5}

#: the ``role`` of a model-quality episode's records (column ``(labels)``)
QUALITY_ROLE = "quality"

#: (type, group id, model, column, input topic, input partition, offset)
Ident = tuple[str, str, str, str, str, int, int]


class DriftEventsError(StateError):
    """The drift-events topic could not be read back (a restore waits for it)."""


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _scores(pairs: Mapping[str, tuple[float, float]]) -> dict[str, dict[str, float | None]]:
    return {k: {"statistic": _num(s), "threshold": _num(t),
                "score": _num(s / t) if t > 0 else None} for k, (s, t) in pairs.items()}


@dataclass(frozen=True)
class DriftRecord:
    """One record of the drift-events topic."""

    key: bytes
    value: dict[str, Any]

    @property
    def partition(self) -> PartitionKey:
        """The input partition it is about."""
        return (self.value["topic"], self.value["partition"])

    @property
    def ident(self) -> Ident | None:
        return ident_of(self.value)

    def encode(self) -> bytes:
        return json.dumps(self.value, separators=(",", ":"), allow_nan=False).encode()


def ident_of(value: Any) -> Ident | None:
    """What makes a record unique (None: a record without a known offset, or not ours).  A
    model-quality record has no offset: the ordinal of its joined pair stands for it (its
    column, ``(labels)``, is no input column's)."""
    if not isinstance(value, dict) or value.get("schema") != DRIFT_EVENTS_SCHEMA:
        return None
    kind = value.get("type")
    end = "open" if kind == "open" else "close"
    offset = value.get(f"{end}_offset")
    if offset is None and value.get("role") == QUALITY_ROLE:
        offset = value.get(f"{end}_pair")
    fields = (value.get("group_id"), value.get("model"), value.get("column"),
              value.get("topic"))
    part = value.get("partition")
    if kind not in ("open", "close") or not all(isinstance(f, str) for f in fields) \
            or not isinstance(part, int) or not isinstance(offset, int):
        return None
    return (kind, *fields, part, offset)  # type: ignore[return-value]


def episode_record(kind: str, ep: Episode, *, group_id: str, version: str, role: str,
                   baseline_id: str, now: float | None = None) -> DriftRecord:
    """The ``open`` or ``close`` record of column episode ``ep``.

    Both carry ``schema``, ``type``, ``group_id``, ``model``, ``version``, ``column``,
    ``role``, ``topic``, ``partition`` (the input partition), ``baseline_id``,
    ``open_offset`` and ``open_event_time`` (of the event that opened it; null when
    unknown), ``opened_at`` (wall time), ``detectors`` and ``scores`` (detector ->
    statistic, threshold, score).  At open, ``detectors`` are those that opened it and
    ``scores`` theirs at that event.  A close adds ``close_offset`` and
    ``close_event_time`` (the event that closed it), ``duration_s`` (event time, null when
    either end is unknown), ``closed_at``, ``peak_score`` and lists every detector that
    had an episode in it, ``scores`` being each one's peak.
    """
    topic, partition = ep.partition
    value: dict[str, Any] = {
        "schema": DRIFT_EVENTS_SCHEMA, "type": kind, "group_id": group_id,
        "model": ep.model, "version": version, "column": ep.feature, "role": role,
        "topic": topic, "partition": partition, "baseline_id": baseline_id,
        "open_offset": ep.open_offset, "open_event_time": _num(ep.open_event_time),
        "opened_at": _num(ep.opened_at),
    }
    if ep.segment:  # an episode of a segment's monitors (models[].segments)
        value["segment"] = ep.segment
    if role == QUALITY_ROLE:  # the joined pair that opened it (its identity: ident_of)
        value["open_pair"] = ep.open_pair
    if kind == "open":
        value["detectors"] = list(ep.open_scores) or list(ep.detectors)
        value["scores"] = _scores(ep.open_scores)
        if ep.root_cause:  # a prediction's episode: its top features (stream.engine.attribution)
            value["root_cause"] = [dict(c) for c in ep.root_cause]
    else:
        start, end = _num(ep.open_event_time), _num(ep.close_event_time)
        value.update(
            close_offset=ep.close_offset, close_event_time=end,
            duration_s=None if start is None or end is None else round(end - start, 6),
            closed_at=_num(time.time() if now is None else now),
            detectors=list(ep.detectors), scores=_scores(ep.peaks),
            peak_score=_num(ep.peak_score))
        if role == QUALITY_ROLE:
            value["close_pair"] = ep.close_pair
    key = f"{group_id}/{ep.model}/{topic}/{partition}/{ep.feature}".encode() if not ep.segment \
        else f"{group_id}/{ep.model}/{topic}/{partition}/{ep.feature}/{ep.segment}".encode()
    return DriftRecord(key, value)


def episode_records(pipeline: Pipeline, group_id: str) -> list[DriftRecord]:
    """The records of the column episodes the pipeline's last ``process`` opened or closed."""
    now = time.time()
    return [episode_record(kind, ep, group_id=group_id, version=pipeline.versions[ep.model],
                           role=pipeline.roles[ep.model].get(ep.feature, "feature"),
                           baseline_id=pipeline.baseline_ids[ep.model], now=now)
            for kind, ep in pipeline.last_episodes]


def quality_records(pipeline: Pipeline, group_id: str) -> list[DriftRecord]:
    """The records of the model-quality episodes (concept drift through the labels: column
    ``(labels)``, detector ``concept``, role ``quality``) opened or closed since the last
    call (it takes the pipeline's quality steps, see Pipeline.take_quality_steps).

    Such an episode opens and closes on a joined label, not at an inference event: its
    ``open_offset`` and ``close_offset`` are null, its event times are the labels', and
    ``open_pair`` / ``close_pair`` (the ordinal of the joined pair of its label join that
    opened / closed it, counted across restores) are its identity after a restore (see
    docs/reliability.md#drift-events)."""
    now = time.time()
    return [episode_record(kind, ep, group_id=group_id, version=pipeline.versions[ep.model],
                           role=QUALITY_ROLE, baseline_id=pipeline.baseline_ids[ep.model],
                           now=now)
            for kind, ep, _ in pipeline.take_quality_steps()]


class DriftEventWriter(ProducerSink):
    """Writes drift records to ``topic`` and remembers, per input partition, what a previous
    owner wrote since the checkpoint it was restored from.

    ``client_kwargs`` are the kafka-python connection settings; ``count(result, n)`` counts
    records by result (``ok``, ``failed``, ``duplicate``: already on the topic, skipped).
    A failed write closes the producer, so the next attempt connects anew.
    """

    what = "drift-events"
    unit = "records"

    def __init__(self, topic: str, client_kwargs: Mapping[str, Any],
                 count: Callable[[str, int], None],
                 make_producer: Callable[[], Any] | None = None) -> None:
        self.client_kwargs = dict(client_kwargs)
        super().__init__(topic, make_producer or self._new_producer, count)
        #: input partition -> idents of the records already on the topic (see recall)
        self.written: dict[PartitionKey, set[Ident]] = {}

    def _new_producer(self) -> Any:
        from kafka import KafkaProducer

        ms = int(DRIFT_EVENTS_TIMEOUT_S * 1000)
        return KafkaProducer(**self.client_kwargs, **DRIFT_PRODUCER_SETTINGS, max_block_ms=ms,
                             request_timeout_ms=ms, delivery_timeout_ms=3 * ms,
                             bootstrap_timeout_ms=ms)

    # -- set-up ------------------------------------------------------------------
    def ensure_topic(self, timeout_s: float = 30.0) -> bool:
        """Create the topic (1 partition, the broker's retention) if missing; True if created."""
        from kafka import KafkaAdminClient

        from stream.config import ConfigError

        ms = max(1000, int(timeout_s * 1000))
        admin = KafkaAdminClient(**self.client_kwargs, request_timeout_ms=ms,
                                 bootstrap_timeout_ms=ms)
        try:
            if self.topic in set(admin.list_topics()):
                return False
            error = create_topic(admin, self.topic, ms)
            if error is not None:
                raise ConfigError(
                    f"source.drift_events.topic: cannot create {self.topic!r}: error "
                    f"{error}; create the topic or allow streamdrift to, or remove "
                    "source.drift_events")
            log.info("drift-events topic created", extra={"topic": self.topic})
            return True
        finally:
            admin.close()

    # -- writes ------------------------------------------------------------------
    def write(self, records: list[DriftRecord]) -> list[DriftRecord]:
        """Write ``records`` and wait for the acknowledgements; returns those that failed.

        A record already on the topic (see :meth:`recall`) is skipped."""
        todo = [r for r in records if r.ident is None
                or r.ident not in self.written.get(r.partition, ())]
        if len(todo) < len(records):
            self.count("duplicate", len(records) - len(todo))
            log.info("drift records already written before the restore: not written again",
                     extra={"records": len(records) - len(todo), "topic": self.topic})
        if not todo:
            return []
        def written(r: DriftRecord) -> None:
            log.info("drift episode record written", extra={
                k: r.value[k] for k in ("type", "model", "column", "topic", "partition",
                                        "open_offset")} | {
                "close_offset": r.value.get("close_offset")})

        return self.send_all(todo, lambda producer, r: producer.send(
            self.topic, key=r.key, value=r.encode()), DRIFT_EVENTS_TIMEOUT_S, written)

    # -- restore ---------------------------------------------------------------------
    def recall(self, since: Mapping[PartitionKey, float | None], group_id: str,
               timeout_s: float = 15.0) -> None:
        """Read back what this group wrote about the input partitions ``since`` names, from
        ``RECALL_MARGIN_S`` before their time (a checkpoint's ``written_at``; None: the
        partition has no checkpoint, nothing to read).  DriftEventsError if the topic
        cannot be read to its end within ``timeout_s``."""
        for key in since:
            self.written[key] = set()
        times = [t for t in since.values() if t is not None]
        if not times:
            return
        start_ms = int((min(times) - RECALL_MARGIN_S) * 1000)
        wanted = {key for key, t in since.items() if t is not None}
        found = 0
        try:
            for value in self._read_since(start_ms, timeout_s):
                ident = ident_of(value)
                if ident is not None and ident[1] == group_id and (ident[4], ident[5]) in wanted:
                    self.written[(ident[4], ident[5])].add(ident)
                    found += 1
        except DriftEventsError:
            raise
        except Exception as exc:  # noqa: BLE001 - broker gone, timeouts, ...
            raise DriftEventsError(f"cannot read the drift-events topic {self.topic!r}: "
                                   f"{type(exc).__name__}: {exc}") from exc
        log.info("drift records written before the restore", extra={
            "records": found, "partitions": sorted(f"{t}/{p}" for t, p in wanted)})

    def _read_since(self, start_ms: int, timeout_s: float) -> Iterable[Any]:
        """The decoded values of the topic's records from ``start_ms`` (their timestamps)."""
        from kafka import KafkaConsumer, TopicPartition

        deadline = time.monotonic() + timeout_s
        ms = max(1000, int(timeout_s * 1000))
        reader = KafkaConsumer(**self.client_kwargs, group_id=None, enable_auto_commit=False,
                               request_timeout_ms=max(ms, 5000), bootstrap_timeout_ms=ms)
        try:
            parts = reader.partitions_for_topic(self.topic)
            if not parts:
                return
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            reader.assign(tps)
            ends = reader.end_offsets(tps, timeout_ms=ms)
            starts = reader.offsets_for_times({tp: max(0, start_ms) for tp in tps},
                                              timeout_ms=ms)
            for tp in tps:
                at = starts.get(tp)
                reader.seek(tp, ends[tp] if at is None else at.offset)
            while any(reader.position(tp, timeout_ms=ms) < ends[tp] for tp in tps):
                if time.monotonic() > deadline:
                    raise DriftEventsError(f"reading the drift-events topic {self.topic!r} "
                                           f"timed out after {timeout_s:g}s")
                for recs in reader.poll(timeout_ms=200, max_records=10_000).values():
                    for r in recs:
                        try:
                            yield json.loads(r.value)
                        except (TypeError, ValueError):
                            continue  # not ours
        finally:
            reader.close()

    def forget(self, key: PartitionKey) -> None:
        """The input partition is no longer ours."""
        self.written.pop(key, None)

