"""Detector state per partition: checkpoint records and the state topic.

``streamdrift run`` keeps one :class:`~detectors.model.ModelMonitor` per (model,
topic-partition).  Each is checkpointed, together with the offset it covers (the
next offset to read), to a compacted Kafka topic; a restarted or newly assigned
consumer restores the monitors and seeks the partition to that offset, so the
(state, offset) pair always moves together.  See docs/reliability.md.

Record layout (one record per model and partition):

* key ``{group_id}/{model}/{topic}/{partition}`` (UTF-8).  Model and topic names
  cannot hold ``/``; the group id can, so the key is split from the right.
* value: a JSON object ``{"version", "group_id", "model", "topic", "partition",
  "offset", "baseline_id", "calibration_key", "written_at", "state"}`` where
  ``state`` is :meth:`ModelMonitor.to_dict`.  Python's ``json`` writes it, so a
  non-finite float survives the round trip as ``NaN``/``Infinity``.

>>> cp = Checkpoint("g", "m1", "events", 3, 1200, "b1", "k1", {"name": "m1"}, 1.5)
>>> cp.key
'g/m1/events/3'
>>> Checkpoint.decode(cp.key.encode(), cp.encode()) == cp
True
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from detectors.errors import StreamdriftError
from stream.sinks.producer import create_topic

log = logging.getLogger("streamdrift.state")

#: version of the checkpoint value layout
STATE_VERSION = 1
#: topic configuration of a state topic created by streamdrift
STATE_TOPIC_CONFIGS = {
    "cleanup.policy": "compact",
    # a checkpoint is one record; leave room for large windows / many columns
    "max.message.bytes": str(16 * 1024 * 1024),
}
#: producer settings of checkpoint writes: acknowledged by all in-sync replicas, no
#: duplicates or reordering on retries
STATE_PRODUCER_SETTINGS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "compression_type": "gzip",
    "linger_ms": 0,
    "max_request_size": 16 * 1024 * 1024,
}



class StateError(StreamdriftError):
    """A checkpoint could not be written, read or decoded."""


# --------------------------------------------------------------------------
# checkpoint records
# --------------------------------------------------------------------------
def checkpoint_key(group_id: str, model: str, topic: str, partition: int) -> str:
    """``group_id/model/topic/partition``."""
    return f"{group_id}/{model}/{topic}/{int(partition)}"


def parse_checkpoint_key(key: bytes | str) -> tuple[str, str, str, int]:
    """Inverse of :func:`checkpoint_key` (StateError if malformed).

    >>> parse_checkpoint_key(b"team/a/m1/events/0")
    ('team/a', 'm1', 'events', 0)
    """
    try:
        text = key.decode("utf-8") if isinstance(key, bytes | bytearray) else str(key)
        group_id, model, topic, part = text.rsplit("/", 3)
        partition = int(part)
    except (UnicodeDecodeError, ValueError):
        raise StateError(f"malformed checkpoint key {key!r}") from None
    if not (group_id and model and topic) or partition < 0 or part != str(partition):
        raise StateError(f"malformed checkpoint key {key!r}")
    return group_id, model, topic, partition


def group_checkpoints(latest: Mapping[bytes, bytes], group_id: str,
                      wanted: Iterable[tuple[str, int]] | None = None
                      ) -> dict[tuple[str, str, int], Checkpoint]:
    """The checkpoints of ``group_id`` among ``latest`` (key -> value of the state topic's
    latest records; tombstones and empty values left out), per (model, topic, partition),
    limited to the (topic, partition) pairs ``wanted``.

    The group is compared whole: a key prefix alone would give group ``a`` the records of
    group ``a/b`` (``a/b/m1/events/0`` starts with ``a/``), whose model ``m1`` on the same
    topic would then overwrite, or stand in for, ``a``'s own."""
    want = None if wanted is None else set(wanted)
    out: dict[tuple[str, str, int], Checkpoint] = {}
    for key, value in latest.items():
        if not value:
            continue
        try:
            group, model, topic, partition = parse_checkpoint_key(key)
            if group != group_id or (want is not None and (topic, partition) not in want):
                continue
            cp = Checkpoint.decode(key, value)
        except StateError as exc:
            log.warning("skipping a checkpoint that does not decode: %s", exc)
            continue
        out[(model, topic, partition)] = cp
    return out


def _plain(value: Any) -> Any:
    """json ``default``: numpy scalars and arrays as Python values."""
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        return tolist()
    raise TypeError(f"cannot serialise {type(value).__name__} in a checkpoint")


@dataclass(frozen=True)
class Checkpoint:
    """The state of one model on one partition and the offset it covers."""

    group_id: str
    model: str
    topic: str
    partition: int
    #: the next offset to read: the state includes every event before it
    offset: int
    baseline_id: str
    calibration_key: str
    #: :meth:`ModelMonitor.to_dict`
    state: Mapping[str, Any]
    #: wall-clock time of the write, seconds since the epoch
    written_at: float

    @property
    def key(self) -> str:
        return checkpoint_key(self.group_id, self.model, self.topic, self.partition)

    def encode(self) -> bytes:
        body = {
            "version": STATE_VERSION,
            "group_id": self.group_id,
            "model": self.model,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "baseline_id": self.baseline_id,
            "calibration_key": self.calibration_key,
            "written_at": self.written_at,
            "state": self.state,
        }
        return json.dumps(body, separators=(",", ":"), default=_plain).encode()

    @classmethod
    def decode(cls, key: bytes | str, value: bytes) -> Checkpoint:
        """Parse and check one record of the state topic (StateError if it is not valid)."""
        group_id, model, topic, partition = parse_checkpoint_key(key)
        try:
            body = json.loads(value)
        except (TypeError, ValueError, UnicodeDecodeError) as exc:
            raise StateError(f"checkpoint {key!r}: value is not JSON ({exc})") from None
        if not isinstance(body, dict):
            raise StateError(f"checkpoint {key!r}: value is not a JSON object")
        if body.get("version") != STATE_VERSION:
            raise StateError(f"checkpoint {key!r}: unknown version {body.get('version')!r}")
        problems = []
        for name, kind in (("offset", int), ("partition", int), ("baseline_id", str),
                           ("calibration_key", str), ("group_id", str), ("model", str),
                           ("topic", str), ("state", dict)):
            got = body.get(name)
            if not isinstance(got, kind) or isinstance(got, bool):
                problems.append(f"{name} must be {kind.__name__}")
        written = body.get("written_at")
        if not isinstance(written, int | float) or isinstance(written, bool):
            problems.append("written_at must be a number")
        if problems:
            raise StateError(f"checkpoint {key!r}: " + "; ".join(problems))
        if body["offset"] < 0:
            raise StateError(f"checkpoint {key!r}: negative offset {body['offset']}")
        if (body["group_id"], body["model"], body["topic"], body["partition"]) != (
                group_id, model, topic, partition):
            raise StateError(f"checkpoint {key!r}: the value names another key")
        return cls(group_id, model, topic, partition, int(body["offset"]), body["baseline_id"],
                   body["calibration_key"], body["state"], float(written or 0.0))


# --------------------------------------------------------------------------
# the state topic
# --------------------------------------------------------------------------
class StateStore:
    """Writes checkpoints to the compacted state topic and reads the latest ones back.

    ``client_kwargs`` are the kafka-python connection settings (bootstrap servers,
    security).  Writes go through an idempotent ``acks=all`` producer and return
    only once every record is acknowledged.  Reads use a consumer without a group
    that tails the whole topic and keeps the latest record of each of this group's
    keys, so each read only fetches what was written since the previous one.
    """

    def __init__(self, client_kwargs: Mapping[str, Any], topic: str, group_id: str) -> None:
        self.client_kwargs = dict(client_kwargs)
        self.topic = topic
        self.group_id = group_id
        self._prefix = f"{group_id}/".encode()
        self._producer: Any = None
        self._reader: Any = None
        self._parts: list[Any] = []
        #: key -> value of the latest record of this group's keys seen so far
        self._latest: dict[bytes, bytes] = {}

    # -- set-up --------------------------------------------------------------
    def ensure_topic(self, timeout_s: float = 30.0) -> bool:
        """Create the topic (compacted, 1 partition) if it is missing; True if created.

        An existing topic is used as it is; a warning says so when its
        ``cleanup.policy`` is not ``compact``.
        """
        from kafka import KafkaAdminClient
        from kafka.admin import ConfigResource, ConfigResourceType

        ms = max(1000, int(timeout_s * 1000))
        admin = KafkaAdminClient(**self.client_kwargs, request_timeout_ms=ms,
                                 bootstrap_timeout_ms=ms)
        try:
            existing = set(admin.list_topics())
            if self.topic not in existing:
                error = create_topic(admin, self.topic, ms, STATE_TOPIC_CONFIGS)
                if error is not None:
                    raise StateError(
                        f"cannot create the state topic {self.topic!r}: error {error}; "
                        "create it (cleanup.policy=compact) or set state.enabled: false")
                log.info("state topic created", extra={"topic": self.topic})
                return True
            try:
                res = admin.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, self.topic, ["cleanup.policy"])],
                    config_filter="all")
                policy = _find_config(res, "cleanup.policy")
                if policy is not None and "compact" not in str(policy):
                    log.warning("the state topic is not compacted: old checkpoints are deleted "
                                "by retention, not by key", extra={"topic": self.topic,
                                                                   "cleanup.policy": policy})
            except Exception as exc:  # noqa: BLE001 - only a check
                log.debug("cannot describe the state topic: %s", exc)
            return False
        finally:
            admin.close()

    # -- writes ----------------------------------------------------------------
    def connect(self, timeout_s: float = 15.0, write_timeout_s: float | None = None) -> None:
        """Open the producer now (a write from a rebalance callback must not have to).

        ``timeout_s`` bounds the connection; ``write_timeout_s`` (default: the same) bounds
        how long a later ``send`` may block, e.g. waiting for metadata in a broker outage:
        it must not exceed the bound of the writes, or a write blocks the loop longer."""
        self._producer_client(timeout_s, write_timeout_s)

    def _producer_client(self, timeout_s: float, block_s: float | None = None) -> Any:
        if self._producer is None:
            from kafka import KafkaProducer

            ms = max(1000, int(timeout_s * 1000))
            block_ms = ms if block_s is None else max(1000, int(block_s * 1000))
            self._producer = KafkaProducer(
                **self.client_kwargs, **STATE_PRODUCER_SETTINGS, max_block_ms=block_ms,
                request_timeout_ms=ms, delivery_timeout_ms=max(2 * ms, 30_000),
                bootstrap_timeout_ms=ms)
        return self._producer

    def write(self, checkpoints: Sequence[Checkpoint], timeout_s: float = 15.0,
              connect: bool = True) -> int:
        """Write and wait for every record's acknowledgement; returns the bytes written.

        Raises StateError if any record is not acknowledged within ``timeout_s``
        (the producer is then closed; the next write opens a new one).  With
        ``connect=False`` (a rebalance callback, on the consumer's IO thread) no
        producer is opened: StateError if none is open.
        """
        if not checkpoints:
            return 0
        if self._producer is None and not connect:
            raise StateError("no open producer for the state topic")
        deadline = time.monotonic() + timeout_s
        size = 0
        try:
            producer = self._producer_client(timeout_s)
            futures = []
            for cp in checkpoints:
                value = cp.encode()
                size += len(value)
                futures.append(producer.send(self.topic, key=cp.key.encode(), value=value))
            producer.flush(timeout=max(0.1, deadline - time.monotonic()))
            for f in futures:
                f.get(timeout=max(0.1, deadline - time.monotonic()))
        except Exception as exc:  # noqa: BLE001 - every failure means "not acknowledged"
            self._drop_producer()
            raise StateError(f"checkpoint write to {self.topic!r} not acknowledged: "
                             f"{type(exc).__name__}: {exc}") from exc
        return size

    def _drop_producer(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=1)
            except Exception:  # noqa: BLE001
                pass
            self._producer = None

    # -- reads -----------------------------------------------------------------
    def _reader_client(self, timeout_s: float) -> Any:
        if self._reader is None:
            from kafka import KafkaConsumer, TopicPartition

            ms = max(1000, int(timeout_s * 1000))
            reader = KafkaConsumer(**self.client_kwargs, group_id=None,
                                   enable_auto_commit=False, auto_offset_reset="earliest",
                                   request_timeout_ms=max(ms, 5000), bootstrap_timeout_ms=ms)
            try:
                parts = reader.partitions_for_topic(self.topic)
                if not parts:
                    raise StateError(f"the state topic {self.topic!r} does not exist")
                self._parts = [TopicPartition(self.topic, p) for p in sorted(parts)]
                reader.assign(self._parts)
                reader.seek_to_beginning(*self._parts)
            except BaseException:
                reader.close()
                raise
            self._reader = reader
            self._latest.clear()
        return self._reader

    def read(self, wanted: Iterable[tuple[str, int]] | None = None,
             timeout_s: float = 30.0) -> dict[tuple[str, str, int], Checkpoint]:
        """The latest checkpoint of this group per (model, topic, partition).

        Reads the state topic up to its current end.  ``wanted`` limits the
        result to those (topic, partition) pairs.  Records that do not decode are
        skipped with a warning.  Raises StateError when the end is not reached
        within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        try:
            reader = self._reader_client(timeout_s)
            ends = reader.end_offsets(self._parts, timeout_ms=int(timeout_s * 1000))
            while True:
                behind = [tp for tp in self._parts
                          if reader.position(tp, timeout_ms=max(100, int(
                              (deadline - time.monotonic()) * 1000))) < ends[tp]]
                if not behind:
                    break
                if time.monotonic() > deadline:
                    raise StateError(f"reading the state topic {self.topic!r} timed out "
                                     f"after {timeout_s:g}s")
                for recs in reader.poll(timeout_ms=200, max_records=10_000).values():
                    for r in recs:
                        if r.key is None or not r.key.startswith(self._prefix):
                            continue
                        if r.value is None:
                            self._latest.pop(r.key, None)  # tombstone
                        else:
                            self._latest[r.key] = r.value
        except StateError:
            self._drop_reader()
            raise
        except Exception as exc:  # noqa: BLE001 - broker gone, timeouts, ...
            self._drop_reader()
            raise StateError(f"cannot read the state topic {self.topic!r}: "
                             f"{type(exc).__name__}: {exc}") from exc
        return group_checkpoints(self._latest, self.group_id, wanted)

    def _drop_reader(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:  # noqa: BLE001
                pass
            self._reader = None

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.flush(timeout=5)
            except Exception as exc:  # noqa: BLE001
                log.warning("flushing the state producer: %s", exc)
        self._drop_producer()
        self._drop_reader()


def _find_config(res: Any, name: str) -> Any:
    """The value of config ``name`` in a describe_configs answer, whatever its shape."""
    if isinstance(res, Mapping):
        for key, value in res.items():
            if key == name:
                return value.get("value") if isinstance(value, Mapping) else value
            found = _find_config(value, name)
            if found is not None:
                return found
    elif isinstance(res, list | tuple):
        for item in res:
            found = _find_config(item, name)
            if found is not None:
                return found
    return None
