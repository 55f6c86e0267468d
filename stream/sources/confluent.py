"""confluent-kafka (librdkafka) as the consumer of ``streamdrift run``.

kafka-python decodes every record in Python: at full speed its ``poll`` costs about as
much CPU as all of streamdrift's own work.  librdkafka fetches, checks and parses in C on
its own threads.  :class:`ConfluentConsumer` wraps ``confluent_kafka.Consumer`` in the
small part of kafka-python's ``KafkaConsumer`` interface that :class:`stream.runtime.runner.
KafkaRunner` uses, so that the runner (restores, checkpoints, commits, dead letters, lag)
is the same code for both clients.  Only the consumer changes: the dead-letter producer
and the state store stay on kafka-python (a few messages per second at most).

The one real difference is where a newly assigned partition starts.  librdkafka can only
``seek`` a partition that is already being fetched, so the start offsets (a checkpoint's,
the committed one, or the ``auto_offset_reset`` end) are decided inside the assignment
callback: the runner restores the partitions there, its ``seek`` calls are collected, and
the partitions are assigned with those offsets.  Partitions are identified by
kafka-python's ``TopicPartition`` (a ``(topic, partition)`` named tuple) on both sides.

Select it with ``source.kafka.client: confluent-kafka``; install it with
``pip install 'streamdrift[confluent]'``.  librdkafka settings go under
``source.kafka.librdkafka`` (its own dotted property names).
"""

from __future__ import annotations

import itertools
import logging
import operator
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, NamedTuple, overload

import numpy as np

from stream.config import KafkaConfig

log = logging.getLogger("streamdrift.run")
#: librdkafka's own log lines (otherwise printed raw to stderr, e.g. one per reconnect
#: attempt through a broker outage): JSON lines like ours, each kind at most every 30 s
rdlog = logging.getLogger("streamdrift.librdkafka")
RDKAFKA_REPEAT_S = 30.0


class RepeatFilter(logging.Filter):
    """Let one record of a kind through per ``every_s`` seconds (the kind: its text with
    the digits dropped); the next one that passes carries how many were held back."""

    def __init__(self, every_s: float = RDKAFKA_REPEAT_S) -> None:
        super().__init__()
        self.every_s = every_s
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = "".join(c for c in record.getMessage() if not c.isdigit())
        now = time.monotonic()
        last, held = self._seen.get(kind, (-1e18, 0))
        if now - last < self.every_s:
            self._seen[kind] = (last, held + 1)
            return False
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[kind] = (now, 0)
        if held:
            record.repeated = held
        return True


if not rdlog.filters:
    rdlog.addFilter(RepeatFilter())

_Message: Any
try:
    from confluent_kafka import Message as _Message
except ImportError:  # the optional client: nothing below reads a message without it
    _Message = None
#: ``confluent_kafka.Message``'s accessors as plain functions: ``list(map(_value, msgs))``
#: reads a batch in C, ~30 ns per message, where ``[m.value() for m in msgs]`` (a method
#: lookup and call per message in the interpreter) takes ~65
_error: Any = getattr(_Message, "error", None)
_partition: Any = getattr(_Message, "partition", None)
_topic: Any = getattr(_Message, "topic", None)
_value: Any = getattr(_Message, "value", None)
_offset: Any = getattr(_Message, "offset", None)
_key: Any = getattr(_Message, "key", None)
_timestamp: Any = getattr(_Message, "timestamp", None)


def available() -> bool:
    """Whether confluent-kafka can be imported."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return False
    return True


def librdkafka_config(k: KafkaConfig, max_message_bytes: int) -> dict[str, Any]:
    """librdkafka consumer properties for ``k`` (secrets revealed)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": ",".join(k.bootstrap_servers),
        "client.id": k.client_id,
        "group.id": k.group_id,
        "auto.offset.reset": k.auto_offset_reset,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "security.protocol": k.security_protocol.lower(),
        # kafka-python's defaults, so both clients notice a dead member equally fast
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 3_000,
        "max.partition.fetch.bytes": max(1_048_576, max_message_bytes),
        "reconnect.backoff.max.ms": 2_000,
        # librdkafka pre-fetches up to 64 MiB per consumer by default; 16 MiB still holds
        # many poll batches of typical events and keeps the process's memory small and flat.
        # Once the queue is full, the next fetch waits fetch.queue.backoff.ms (1 s by
        # default): a consumer that drains 16 MiB in less than that would sit idle
        "queued.max.messages.kbytes": 16_384,
        "fetch.queue.backoff.ms": 20,
        # the fetcher's long poll (500 ms by default) holds the broker connection, and the
        # loop's synchronous offset commit (and any broker query) waits behind it: once a
        # backlog is pre-fetched every partition is at its end, so each commit waited up to
        # 500 ms.  With 50 ms the plain runner read an 8-partition backlog at 35,800
        # events/s instead of 2,800 (an idle consumer fetches 20 times a second)
        "fetch.wait.max.ms": 50,
        # a broker outage is reported by the lag check and the failing commits
        "log.connection.close": False,
    }
    if k.sasl_mechanism is not None:
        conf["sasl.mechanism"] = k.sasl_mechanism
    if k.sasl_username is not None:
        conf["sasl.username"] = k.sasl_username
    if k.sasl_password is not None:
        conf["sasl.password"] = k.sasl_password.reveal()
    for name, prop in (("ssl_cafile", "ssl.ca.location"),
                       ("ssl_certfile", "ssl.certificate.location"),
                       ("ssl_keyfile", "ssl.key.location")):
        value = getattr(k, name)
        if value is not None:
            conf[prop] = str(value)
    if k.ssl_password is not None:
        conf["ssl.key.password"] = k.ssl_password.reveal()
    conf.update(k.librdkafka)
    return conf


#: librdkafka consumer properties of :func:`librdkafka_config` that a producer does not take
CONSUMER_ONLY = frozenset({
    "group.id", "auto.offset.reset", "enable.auto.commit", "enable.auto.offset.store",
    "session.timeout.ms", "heartbeat.interval.ms", "max.partition.fetch.bytes",
    "queued.max.messages.kbytes", "fetch.queue.backoff.ms", "fetch.wait.max.ms"})


def librdkafka_producer(k: KafkaConfig, **props: Any) -> Any:
    """A ``confluent_kafka.Producer`` for ``k`` (its connection and security properties,
    without the consumer's), with ``props`` (librdkafka names, ``.`` as ``_``) over them."""
    from confluent_kafka import Producer

    conf = {key: v for key, v in librdkafka_config(k, 0).items()
            if key not in CONSUMER_ONLY}
    conf.update({key.replace("_", "."): v for key, v in props.items()})
    return Producer(conf)


class Record:
    """One consumed message, with kafka-python's ``ConsumerRecord`` attribute names."""

    __slots__ = ("msg",)

    def __init__(self, msg: Any) -> None:
        self.msg = msg

    topic = property(lambda self: self.msg.topic())
    partition = property(lambda self: self.msg.partition())
    offset = property(lambda self: self.msg.offset())
    key = property(lambda self: self.msg.key())
    value = property(lambda self: self.msg.value())
    headers = property(lambda self: self.msg.headers())


class Fetched(NamedTuple):
    """One Kafka message's fields: read from librdkafka once (the first stage of
    ``source.repartition`` reads each several times: merge, spread, frames), and a frame's
    message with its source position (monitors.SourceRecord)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


_second = operator.itemgetter(1)


class Records(Sequence[Record]):
    """The messages of one partition from one poll, as a sequence of :class:`Record`.

    The runner reads a batch as a whole (:meth:`values`, the last offset); single records
    only for its logs, dead letters, restores and the formats that read headers.  So the
    ``Record`` wrappers are made on access: a wrapper per message cost ~0.35 µs, and
    reading five fields through ``operator.methodcaller`` maps ~0.25 µs each (a list
    comprehension calling the method: ~0.07), at ~7 µs per event in all."""

    __slots__ = ("msgs",)

    def __init__(self, msgs: list[Any]) -> None:
        self.msgs = msgs

    def __len__(self) -> int:
        return len(self.msgs)

    @overload
    def __getitem__(self, i: int) -> Record: ...
    @overload
    def __getitem__(self, i: slice) -> Records: ...

    def __getitem__(self, i: int | slice) -> Record | Records:
        if isinstance(i, slice):
            return Records(self.msgs[i])
        return Record(self.msgs[i])

    def __iter__(self) -> Iterator[Record]:
        return map(Record, self.msgs)

    def values(self) -> list[bytes]:
        """The message values, ``b""`` for a null value."""
        values = list(map(_value, self.msgs))
        if None in values:
            values = [v or b"" for v in values]
        return values

    def offsets(self) -> list[int]:
        return list(map(_offset, self.msgs))

    def fetched(self) -> list[Fetched]:
        """Every message as a :class:`Fetched` (each field read in one ``map``)."""
        m = self.msgs
        # ``tuple.__new__`` over zipped fields: ~0.26 µs per message, ``Fetched``'s own
        # (Python) ``__new__`` ~0.40
        return list(map(tuple.__new__, itertools.repeat(Fetched, len(m)), zip(
            map(_topic, m), map(_partition, m), map(_offset, m),
            map(_second, map(_timestamp, m)), map(_key, m), map(_value, m), strict=True)))

    def last_offset(self) -> int:
        return int(self.msgs[-1].offset())


def record_values(recs: Sequence[Any]) -> list[bytes]:
    """The message values of ``recs``, ``b""`` for a null value."""
    if isinstance(recs, Records):
        return recs.values()
    return [r.value or b"" for r in recs]


def record_offsets(recs: Sequence[Any]) -> list[int]:
    """The offsets of ``recs``."""
    if isinstance(recs, Records):
        return recs.offsets()
    return [int(r.offset) for r in recs]


def _run_ends(keys: list[Any]) -> list[int]:
    """Where each run of equal keys ends (exclusive), the last at ``len(keys)``.

    librdkafka queues a fetch response's messages partition by partition, so a batch of
    several partitions is a few long runs: found with numpy for partition numbers (~0.02 µs
    per message, where a dict look-up and an append per message took ~0.1)."""
    if keys and isinstance(keys[0], int):
        p = np.array(keys, dtype=np.int64)
        ends: list[int] = (np.flatnonzero(p[1:] != p[:-1]) + 1).tolist()
    else:
        ends = [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]]
    ends.append(len(keys))
    return ends


class ConfluentConsumer:
    """``confluent_kafka.Consumer`` behind the part of ``KafkaConsumer`` the runner uses.

    ``on_assign(tps)`` is called inside the assignment callback with the new partitions;
    the ``seek``/``seek_to_beginning``/``seek_to_end``/``pause`` calls it makes decide
    where each starts.  ``on_revoke(tps)`` and ``on_lost(tps)`` mirror kafka-python's
    rebalance listener.
    """

    def __init__(self, k: KafkaConfig, max_message_bytes: int,
                 on_assign: Callable[[set[Any]], None],
                 on_revoke: Callable[[set[Any]], None],
                 on_lost: Callable[[set[Any]], None]) -> None:
        from confluent_kafka import Consumer

        self._k = k
        self._errors: list[Any] = []
        conf = librdkafka_config(k, max_message_bytes)
        conf["error_cb"] = self._errors.append
        conf.setdefault("logger", rdlog)
        self._c = Consumer(conf)
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        self._paused: set[Any] = set()
        self._assigned: set[Any] = set()
        #: while assigning: partition -> start offset chosen by the runner
        self._starting: dict[Any, int] | None = None
        self._pause_after: set[Any] = set()
        #: the helper thread of bounded commits, and the commit it runs
        self._commits: ThreadPoolExecutor | None = None
        self._commit_flight: Future[Any] | None = None
        #: the partition the next lag check asks the broker about (lag_end_offsets)
        self._lag_turn = -1
        #: the one topic subscribed (None: several, or a pattern): see :meth:`poll`
        self._topic: str | None = None

    # -- helpers --------------------------------------------------------------------
    @staticmethod
    def _tp(tp: Any) -> Any:
        from kafka import TopicPartition

        return TopicPartition(tp.topic, tp.partition)

    @staticmethod
    def _ctp(tp: Any, offset: int | None = None) -> Any:
        from confluent_kafka import TopicPartition

        if offset is None:
            return TopicPartition(tp.topic, tp.partition)
        return TopicPartition(tp.topic, tp.partition, offset)

    def raise_startup_error(self, timeout_s: float) -> None:
        """Fail if the cluster cannot be reached (librdkafka only logs and retries).

        Reads the topics' metadata (which also has their partitions known before the
        group join) and raises ``confluent_kafka.KafkaException`` with the first error
        librdkafka reported (authentication, TLS, all brokers down) if that fails."""
        from confluent_kafka import KafkaError, KafkaException

        deadline = time.monotonic() + timeout_s
        for topic in self._k.topics:
            try:
                self._c.list_topics(topic, timeout=max(0.1, deadline - time.monotonic()))
            except KafkaException as exc:
                self._c.poll(0)  # deliver error callbacks
                fatal = [e for e in self._errors if e.code() in (
                    KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError._ALL_BROKERS_DOWN,
                    KafkaError._TRANSPORT)]
                if fatal:
                    raise KafkaException(fatal[0]) from None
                raise exc from None

    # -- kafka-python's interface ---------------------------------------------------------
    def subscribe(self, topics: list[str]) -> None:
        # one topic by name (not a ``^`` pattern): every message is of that topic
        self._topic = topics[0] if len(topics) == 1 and not topics[0].startswith("^") \
            else None
        self._c.subscribe(topics, on_assign=self._assign_cb, on_revoke=self._revoke_cb,
                          on_lost=self._lost_cb)

    def _assign_cb(self, consumer: Any, partitions: list[Any]) -> None:
        tps = {self._tp(p) for p in partitions}
        self._assigned = set(tps)
        self._starting = {}
        self._pause_after = set()
        try:
            self._on_assign(tps)
        except Exception as exc:  # noqa: BLE001 - never raise into librdkafka
            log.warning("restoring assigned partitions failed: %s", exc)
        starting, self._starting = self._starting, None
        consumer.assign([self._ctp(tp, starting.get(tp)) for tp in tps])
        if self._pause_after:
            consumer.pause([self._ctp(tp) for tp in self._pause_after])
            self._paused |= self._pause_after

    def _revoke_cb(self, consumer: Any, partitions: list[Any]) -> None:
        self._give_up(consumer, partitions, self._on_revoke, "revoked")

    def _lost_cb(self, consumer: Any, partitions: list[Any]) -> None:
        self._give_up(consumer, partitions, self._on_lost, "lost")

    def _give_up(self, consumer: Any, partitions: list[Any],
                 handler: Callable[[set[Any]], None], what: str) -> None:
        tps = {self._tp(p) for p in partitions}
        try:
            handler(tps)
        except Exception as exc:  # noqa: BLE001 - never raise into librdkafka
            log.warning("handling %s partitions failed: %s", what, exc)
        self._assigned -= tps
        self._paused -= tps
        consumer.unassign()

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, Records]:
        """Records by partition, returning as soon as some are there (like kafka-python).

        Per message only its error, partition (and, with more than one topic subscribed,
        topic) are read here, each in one ``map`` over the batch; the rest waits for the
        runner's batch reads (:class:`Records`)."""
        c = self._c
        msgs = c.consume(max_records, 0)
        if not msgs:
            first = c.poll(timeout_ms / 1000)
            if first is None:
                return {}
            msgs = [first]
            if max_records > 1:
                msgs += c.consume(max_records - 1, 0)
        errors = list(map(_error, msgs))
        # (not ``errors.count(None)``: comparing a ``KafkaError`` with None raises inside
        # confluent-kafka, which then surfaced as a SystemError and lost the whole batch)
        if any(errors):
            for err in (e for e in errors if e is not None):
                log.warning("consumer error: %s", err)
            msgs = [m for m, err in zip(msgs, errors, strict=True) if err is None]
            if not msgs:
                return {}
        from kafka import TopicPartition

        partitions = list(map(_partition, msgs))
        topic = self._topic
        if topic is not None:
            keys: list[Any] = partitions
        else:
            keys = list(zip(map(_topic, msgs), partitions, strict=True))
        # librdkafka can still hand out pre-fetched records of partitions it has just taken
        # away (lost during a broker outage); like kafka-python's poll, return only those
        # of the current assignment
        k0 = keys[0]
        if keys.count(k0) == len(keys):  # one partition (the usual case): no split
            tp = TopicPartition(topic, k0) if topic is not None else TopicPartition(*k0)
            return {tp: Records(msgs)} if tp in self._assigned else {}
        split: dict[Any, list[Any]] = {}
        start = 0
        for end in _run_ends(partitions if topic is not None else keys):
            # a run of one partition's messages (in the order of the batch): one slice
            key = keys[start]
            lst = split.get(key)
            if lst is None:
                split[key] = msgs[start:end]
            else:
                lst += msgs[start:end]
            start = end
        out = {}
        for key, lst in split.items():
            tp = TopicPartition(topic, key) if topic is not None else TopicPartition(*key)
            if tp in self._assigned:
                out[tp] = Records(lst)
        return out

    # -- manual assignment (no group: the first stage of source.repartition) ------------
    def assign_at(self, starts: dict[Any, int]) -> None:
        """Fetch the partitions of ``starts`` from the given offsets (numbers, or
        librdkafka's logical ``OFFSET_BEGINNING``/``OFFSET_END``), besides those assigned
        already; one assigned already starts over there."""
        again = [tp for tp in starts if tp in self._assigned]
        if again:
            self.unassign(again)
        self._c.incremental_assign([self._ctp(tp, int(off)) for tp, off in starts.items()])
        self._assigned |= set(starts)

    def unassign(self, tps: Iterable[Any]) -> None:
        """Stop fetching those of ``tps`` assigned: from now on :meth:`poll` returns none
        of their records (librdkafka drops what it pre-fetched of them)."""
        drop = {tp for tp in tps if tp in self._assigned}
        if drop:
            self._assigned -= drop
            self._paused -= drop
            self._c.incremental_unassign([self._ctp(tp) for tp in drop])

    def highwater(self, tp: Any) -> int | None:
        """The high watermark the newest fetch response of ``tp`` carried (None: none yet;
        no broker round trip)."""
        _, high = self._c.get_watermark_offsets(self._ctp(tp), cached=True)
        return None if high is None or high < 0 else int(high)

    def assignment(self) -> set[Any]:
        return set(self._assigned)

    def paused(self) -> set[Any]:
        return set(self._paused)

    def pause(self, *tps: Any) -> None:
        if self._starting is not None:
            self._pause_after |= set(tps)
            return
        if tps:
            self._c.pause([self._ctp(tp) for tp in tps])
            self._paused |= set(tps)

    def resume(self, *tps: Any) -> None:
        if self._starting is not None:
            self._pause_after -= set(tps)
            return
        if tps:
            self._c.resume([self._ctp(tp) for tp in tps])
            self._paused -= set(tps)

    def seek(self, tp: Any, offset: int) -> None:
        if self._starting is not None:
            self._starting[tp] = int(offset)
        else:
            self._c.seek(self._ctp(tp, int(offset)))

    def seek_to_beginning(self, *tps: Any) -> None:
        from confluent_kafka import OFFSET_BEGINNING

        for tp in tps:
            self.seek(tp, OFFSET_BEGINNING)

    def seek_to_end(self, *tps: Any) -> None:
        from confluent_kafka import OFFSET_END

        for tp in tps:
            self.seek(tp, OFFSET_END)

    def committed(self, tp: Any, timeout_ms: int) -> int | None:
        got = self._c.committed([self._ctp(tp)], timeout=timeout_ms / 1000)
        off = got[0].offset if got else -1
        return int(off) if off >= 0 else None

    #: :func:`stream.sources.commits.begin_commit` may call :meth:`commit_async`
    asynchronous_commits = True

    def commit(self, offsets: dict[Any, Any], timeout_ms: int) -> None:
        """Commit synchronously, bounded by ``timeout_ms``; ``offsets`` maps partitions to
        kafka-python's ``OffsetAndMetadata`` (or plain offsets).

        librdkafka's synchronous commit has no timeout: in a broker outage it waits until
        the broker is back, and the loop with it.  It runs on a helper thread here (the
        consumer is thread-safe); past the bound, or while an earlier commit is still in
        flight, ``KafkaTimeoutError`` is raised (an outage: the runner retries later)."""
        from kafka.errors import KafkaTimeoutError

        flight = self.commit_async(offsets)
        try:
            flight.result(timeout=timeout_ms / 1000)
        except FutureTimeout:
            raise KafkaTimeoutError(
                f"offset commit not acknowledged within {timeout_ms} ms") from None

    def commit_async(self, offsets: dict[Any, Any]) -> Future[Any]:
        """Start the commit of :meth:`commit` on the helper thread and return its future;
        ``KafkaTimeoutError`` while an earlier commit is still in flight."""
        from kafka.errors import KafkaTimeoutError

        if self._commit_flight is not None and not self._commit_flight.done():
            raise KafkaTimeoutError("an earlier offset commit is still waiting for the broker")
        parts = [self._ctp(tp, int(getattr(om, "offset", om))) for tp, om in offsets.items()]
        if self._commits is None:
            self._commits = ThreadPoolExecutor(1, thread_name_prefix="streamdrift-commit")
        flight = self._commits.submit(self._c.commit, offsets=parts, asynchronous=False)
        self._commit_flight = flight
        return flight

    def end_offsets(self, tps: Iterable[Any], timeout_ms: int) -> dict[Any, int]:
        out = {}
        for tp in tps:
            _, high = self._c.get_watermark_offsets(self._ctp(tp), timeout=timeout_ms / 1000)
            out[tp] = int(high)
        return out

    def lag_end_offsets(self, tps: Iterable[Any], timeout_ms: int) -> dict[Any, int]:
        """End offsets for the lag check, without a broker round trip per partition.

        librdkafka sends a watermark query on the connection its fetcher long-polls
        (``fetch.wait.max.ms``), so each one waits for the fetch: 8 partitions queried one
        by one held the loop about 4 s per check.  The high watermarks that came with the
        latest fetch responses are used instead (fresh within a fetch wait); one partition
        per call, in turn, and any without a known watermark, are asked of the broker,
        which keeps the check a test that the cluster answers (a failure raises)."""
        tps = sorted(tps)
        out: dict[Any, int] = {}
        ask = []
        for tp in tps:
            _, high = self._c.get_watermark_offsets(self._ctp(tp), cached=True)
            if high is None or high < 0:
                ask.append(tp)
            else:
                out[tp] = int(high)
        if tps:
            self._lag_turn = (self._lag_turn + 1) % len(tps)
            if tps[self._lag_turn] not in ask:
                ask.append(tps[self._lag_turn])
        out.update(self.end_offsets(ask, timeout_ms))
        return out

    def beginning_offsets(self, tps: Iterable[Any], timeout_ms: int) -> dict[Any, int]:
        out = {}
        for tp in tps:
            low, _ = self._c.get_watermark_offsets(self._ctp(tp), timeout=timeout_ms / 1000)
            out[tp] = int(low)
        return out

    def position(self, tp: Any, timeout_ms: int) -> int | None:
        got = self._c.position([self._ctp(tp)])
        off = got[0].offset if got else -1
        return int(off) if off >= 0 else None

    def close(self, autocommit: bool = False, timeout_ms: int = 5000) -> None:
        if self._commits is not None:
            self._commits.shutdown(wait=False, cancel_futures=True)
        self._c.close()

