"""The first stage with several writers: ``source.repartition.writers: several`` (issue 14).

With one writer (onewriter.py) the first stage does not scale: one process forwards every
source partition.  With ``several``, :class:`SeveralWritersAssignor` spreads the source
partitions over the members of the first stage's group (by load, balance.py: the source
partitions' backlogs and rates, and the pool's holder given less; a range over every
subscribed topic's partitions when nothing tells them apart; the members in the order
static members, then member ids) and tells
each member, in its assignment's ``user_data``, the number of writers and its index among
them.  Every member is a writer, with or without partitions (more members than source
partitions): each one heartbeats, so the monitors never wait ``max_wait_s`` for a member
that has nothing to forward.  Each member forwards its own partitions merged in timestamp
order, as one writer does (repartition.py), in **version-3 frames** (frames.py): its writer
id (16 random bytes per start), the group's generation, the writer count and index, and
its **watermark**, which the monitors' merge (writermerge.py) uses to merge the writers by
event time.

* The watermark is per internal partition (what one ``WriterMerge`` per internal
  partition needs): a frame's newest timestamp (the messages to that partition after it
  in the merged batch are at least as new), and in the batch's last frame to that
  partition the merge limit (:func:`~stream.runtime.catchup.merge_plan`: the batch's
  newest timestamp, which every later record of the writer's partitions reaches **as long
  as each source partition's timestamps do not go back**: a producer's clock set back, a
  producer that sets old timestamps, a partition found caught up that then receives an
  older record).  A record older than a watermark already sent is forwarded all the same;
  the monitors release it as *late*, counted, never dropped.  Within a generation the
  watermark of a partition never goes back (the largest so far is kept); a new generation
  starts afresh (writermerge.py merges the generations by timestamp, below the current
  generation's watermarks).
* A writer **caught up and idle** (every assigned partition empty and at its end offset,
  catchup.py; or none assigned) sends a heartbeat (a frame of no messages) to every
  internal partition every ``heartbeat_ms``, with watermark = max(the last one, now -
  ``lateness_ms``): ``lateness_ms`` is the producers' clock skew and delivery delay the
  writers tolerate; a record that comes later and older than that is late at the monitors.
* **Alignment** (:class:`Alignment`): a writer whose watermark runs ahead of another's
  waits while its own process's monitors hold many of its messages (they would
  otherwise be released past their bound and the other writer's come late).  A writer
  whose process has no such view (its monitors hold no internal partition, or it runs
  ``--stage repartition``) cannot, and is reported unaligned (:meth:`Writer.check_view`).
* Rebalances: a writer forwards each batch and sends its commit before it polls again,
  and the commit is answered before the next batch is written, so what it
  gives up is committed but for one batch in flight (the next owner forwards that batch
  again: the bound of one writer, reliability.md); frames written after an assignment
  carry its generation.  From a revocation to the next assignment no heartbeat is sent
  (it would reach the monitors after the new generation's frames).
* A group that mixes releases or settings agrees on a protocol: the list is several
  writers, one writer, range, round-robin.  Under one writer the member that holds every
  partition writes version 3 as writer 0 of 1; under range or round-robin (members of a
  release without either) the writer count is not known, and the member writes version-2
  frames and no heartbeats, with a warning, as a first stage before issue 14 did.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka.coordinator.assignors.abstract import (
    AbstractPartitionAssignor,
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
)
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from stream.config.tree import RepartitionConfig
from stream.runtime.balance import Load, Weights, balance, extra, pack_load, unpack_load
from stream.runtime.frames import WRITER_ID_BYTES, WriterHeader, heartbeat
from stream.runtime.onewriter import OneWriterAssignor

log = logging.getLogger("streamdrift.repartition")

#: the assignment's ``user_data``: a tag, the writer count and this member's index
_ROLE = struct.Struct(">4sHH")
_TAG = b"SDW1"


@dataclass(frozen=True)
class Role:
    """What a member writes as in one generation of the first stage's group."""

    generation: int
    writers: int
    index: int
    #: False: the group's protocol does not say (range, round-robin), or this member
    #: stands by (one writer): version-2 frames, no heartbeats
    several: bool


class Roles:
    """The role of the newest assignment (set on kafka-python's IO thread) and every one
    so far (a test reads them)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: Role | None = None
        self.history: list[Role] = []
        #: the partitions were revoked and no new assignment came yet (a rebalance)
        self.rebalancing = False

    def set(self, role: Role) -> None:
        with self.lock:
            self.current = role
            self.history.append(role)
            self.rebalancing = False


def member_order(members: list[Any]) -> list[str]:
    """Static members first, then the others, each by member id (as onewriter.py)."""
    return sorted(m.member_id for m in members if m.group_instance_id is not None) + \
        sorted(m.member_id for m in members if m.group_instance_id is None)


class SeveralWritersAssignor(AbstractPartitionAssignor):
    """The source partitions spread over every member, each member told the writer count
    and its index in ``user_data``: by load (balance.py) when the leader knows the
    partitions' weights or the members' loads differ, else a range over all of them."""

    name = "streamdrift-several-writers"
    version = 0

    def __init__(self, roles: Roles | None = None, load: Callable[[], Load] | None = None,
                 weights: Callable[[], dict[tuple[str, int], float]] | None = None,
                 internal: int = 1) -> None:
        self.roles = roles or Roles()
        #: what this member's process does besides its source partitions (balance.Load),
        #: said at each join
        self.load = load or (lambda: (0, False))
        #: the source partitions' weights as this process last saw them (balance.Weights)
        self.weights = weights or dict
        self.internal = internal
        #: the load said at the last join (None: not joined yet)
        self.joined_load: Load | None = None
        #: the members' share of the weights plus their extra at the last assignment led
        #: here (a test and the log read it)
        self.loads: dict[str, float] = {}

    def assign(self, cluster: Any, members: list[Any]) -> dict[str, Any]:
        order = member_order(members)
        by_id = {m.member_id: m for m in members}
        topics_of = {m.member_id: set(m.metadata.topics) for m in members}
        pairs = [(t, p) for t in sorted(set().union(*topics_of.values()))
                 for p in sorted(cluster.partitions_for_topic(t) or ())]
        got: dict[str, dict[str, list[int]]] = {m: {} for m in order}
        n = len(order)
        extras = [extra(unpack_load(getattr(by_id[m].metadata, "user_data", None)),
                        self.internal) for m in order]
        known = self.weights()
        ws = [float(known.get(pair, 0.0)) for pair in pairs]
        weighed = all(pair in known for pair in pairs) and sum(ws) > 0
        if not weighed:  # (some partitions not weighed yet: all count alike)
            ws = [1.0] * len(pairs)
        if n > 1 and (weighed or len(set(extras)) > 1) and \
                all(topics_of[m] == topics_of[order[0]] for m in order):
            ats = balance(ws, extras)
            total = sum(ws)
            self.loads = {m: extras[i] + sum(w / total if total > 0 else 1 / len(ws)
                                             for w, a in zip(ws, ats, strict=True) if a == i)
                          for i, m in enumerate(order)}
            log.info("the source partitions spread over %d writers by load: %s", n,
                     ", ".join(f"{sum(a == i for a in ats)} partition(s), load "
                               f"{self.loads[m]:.3f} (extra {extras[i]:.3f})"
                               for i, m in enumerate(order)))
        else:  # contiguous blocks of nearly equal size
            ats = [i * n // len(pairs) for i in range(len(pairs))]
        for (topic, p), at in zip(pairs, ats, strict=True):
            # a member that does not subscribe to the topic hands it to the next one that does
            member = next(order[(at + k) % n] for k in range(n)
                          if topic in topics_of[order[(at + k) % n]])
            got[member].setdefault(topic, []).append(p)
        return {m: ConsumerProtocolAssignment(self.version, sorted(got[m].items()),
                                              _ROLE.pack(_TAG, n, i))
                for i, m in enumerate(order)}

    def metadata(self, topics: Any) -> Any:
        self.joined_load = load = self.load()
        return ConsumerProtocolSubscription(self.version, list(topics), pack_load(load))

    def on_assignment(self, assignment: Any, generation: Any = None) -> None:
        data = bytes(getattr(assignment, "user_data", b"") or b"")
        gen = int(generation or 0)
        if len(data) == _ROLE.size and data[:4] == _TAG:
            _, writers, index = _ROLE.unpack(data)
            if 0 <= index < writers:
                self.roles.set(Role(gen, writers, index, True))
                return
        log.warning("an assignment of the several-writers protocol without a writer count; "
                    "this member writes version-2 frames", extra={"generation": gen})
        self.roles.set(Role(gen, 0, 0, False))


class _OneWriter(OneWriterAssignor):
    """The one-writer protocol (a group with a ``writers: one`` member): the member that
    holds every partition is writer 0 of 1."""

    def __init__(self, roles: Roles) -> None:
        super().__init__()
        self.roles = roles

    def on_assignment(self, assignment: Any, generation: Any = None) -> None:
        super().on_assignment(assignment, generation)
        self.roles.set(Role(int(generation or 0), 1, 0, self.writing))


class _Unknown:
    """Range and round-robin (members of an older release): the writer count is not
    known."""

    roles: Roles
    name: str

    def on_assignment(self, assignment: Any, generation: Any = None) -> None:
        log.warning("the first stage's group agreed on %s, not several writers (a member of "
                    "an older release?): this member writes version-2 frames", self.name)
        self.roles.set(Role(int(generation or 0), 0, 0, False))


class _Range(_Unknown, RangePartitionAssignor):
    def __init__(self, roles: Roles) -> None:
        self.roles = roles


class _RoundRobin(_Unknown, RoundRobinPartitionAssignor):
    def __init__(self, roles: Roles) -> None:
        self.roles = roles


def strategy(roles: Roles, load: Callable[[], Load] | None = None,
             weights: Callable[[], dict[tuple[str, int], float]] | None = None,
             internal: int = 1) -> tuple[Any, ...]:
    """The first stage's ``partition_assignment_strategy`` with ``writers: several``:
    instances that report each assignment's role to ``roles``; ``load`` and ``weights``
    as :class:`SeveralWritersAssignor`'s."""
    return (SeveralWritersAssignor(roles, load, weights, internal), _OneWriter(roles),
            _Range(roles), _RoundRobin(roles))


class Writer:
    """One first-stage process's part as a writer: its id, role, watermark and
    heartbeats."""

    def __init__(self, rp: RepartitionConfig) -> None:
        self.rp = rp
        self.writer_id = os.urandom(WRITER_ID_BYTES)
        self.roles = Roles()
        #: what this process does besides forwarding (balance.Load; a two-stage runner
        #: sets it), said at each join; a change asks for a rebalance (:meth:`rejoin_if_load_changed`)
        self.load: Callable[[], Load] = lambda: (0, False)
        #: the source partitions' weights, refreshed by the stage (balance.Weights)
        self.weights = Weights()
        self.strategy = strategy(self.roles, lambda: self.load(),
                                 lambda: self.weights.current, max(1, rp.partitions))
        #: rebalances asked for because the load changed, and since when it differs
        self.load_rejoins = 0
        self._load_seen: tuple[Load, float] | None = None
        #: internal partition -> the watermark sent last there, in :attr:`generation`
        self.marks: dict[int, int] = {}
        self.generation: int | None = None
        #: monotonic time of the last heartbeat
        self.beat_at = 0.0
        self.heartbeats = 0
        #: True while this writer is one of several with no view of the monitors' merges
        #: (:meth:`check_view`; ``streamdrift_writer_unaligned``); None: not one of several
        self.unaligned: bool | None = None
        self._blind_since: float | None = None

    def rejoin_if_load_changed(self, consumer: Any, now: float) -> bool:
        """Ask the first stage's group (``consumer``, kafka-python's, polled on the
        calling thread) to rebalance when this process's load (:attr:`load`) has differed
        from what it said at its last join for ``LOAD_SETTLE_S`` (the monitors' and the
        pool's groups settle first), so that the source partitions are spread by load
        (balance.py); one writer alone never asks.  True when it asked."""
        assignor: SeveralWritersAssignor = self.strategy[0]
        role, joined, load = self.roles.current, assignor.joined_load, self.load()
        coordinator = getattr(consumer, "_coordinator", None)
        if joined is None or load == joined or role is None or not role.several \
                or role.writers < 2 or self.roles.rebalancing or coordinator is None:
            self._load_seen = None
            return False
        if self._load_seen is None or self._load_seen[0] != load:
            self._load_seen = (load, now)
        if now - self._load_seen[1] < LOAD_SETTLE_S:
            return False
        self._load_seen = None
        assignor.joined_load = load  # (once per change: the join says it again)
        coordinator.request_rejoin()
        self.load_rejoins += 1
        log.info("this process's load changed (internal partitions monitored, pool held: "
                 "%s, %s at the last join): the first stage's group rebalances to spread "
                 "the source partitions by load", load, joined)
        return True

    def revoking(self, then: Callable[[set[Any]], None]) -> Callable[[set[Any]], None]:
        """``then``, the stage's revocation callback, after noting that a rebalance is
        under way (kafka-python calls it on its IO thread before it joins, with or
        without partitions): no heartbeat of the old generation until the next
        assignment, which would reach the internal partitions after the new generation's
        frames (stale at the monitors)."""
        def revoked(tps: set[Any]) -> None:
            self.roles.rebalancing = True
            then(tps)

        return revoked

    def _role(self) -> Role | None:
        role = self.roles.current
        if role is None or not role.several:
            return None
        if role.generation != self.generation:
            self.generation, self.marks = role.generation, {}
        return role

    def _mark(self, q: int, at_least: int) -> int:
        """The watermark of the next frame to internal partition ``q``: ``at_least``, or
        the last one sent there if larger (it never goes back within a generation)."""
        self.marks[q] = max(self.marks.get(q, at_least), at_least)
        return self.marks[q]

    def header(self, q: int, mark: int) -> WriterHeader | None:
        """The writer block of a frame to internal partition ``q`` with watermark ``mark``
        (at least; :meth:`_mark`): the frame's newest timestamp (the messages to ``q``
        after it in the merged batch are at least as new), or the batch's merge limit in
        the last frame of the batch to ``q``.  None: version-2 frames (no role of several
        writers)."""
        role = self._role()
        if role is None:
            return None
        return WriterHeader(self.writer_id, role.generation, role.writers, role.index,
                            self._mark(q, mark))

    def beat(self, now: float) -> list[tuple[int, bytes, int]] | None:
        """The heartbeat frames (internal partition, frame, timestamp) due at ``now``
        (monotonic) from a writer caught up and idle; None if none is due."""
        if now - self.beat_at < self.rp.heartbeat_ms / 1000:
            return None
        role = self._role()
        if role is None:
            return None
        # not below the merge limit of any batch forwarded (its records are all older)
        clock = max([int(time.time() * 1000) - self.rp.lateness_ms, *self.marks.values()])
        out = []
        for q in range(max(1, self.rp.partitions)):
            mark = self._mark(q, clock)
            out.append((q, heartbeat(WriterHeader(self.writer_id, role.generation,
                                                  role.writers, role.index, mark)), mark))
        return out

    def sent(self, now: float) -> None:
        """The heartbeats of :meth:`beat` were acknowledged."""
        self.beat_at = now
        self.heartbeats += 1

    def check_view(self, view: bool | None, forwarding: bool, now: float,
                   monitors: bool = True) -> None:
        """Note whether this writer can hold back with the others (:class:`Alignment`):
        ``view``, whether its process's monitors hold a partition of the internal topic
        (None: not known yet, before their first assignment; ``monitors`` False: the
        process runs no monitors, ``--stage repartition``); ``forwarding``, whether it
        holds source partitions.  A writer of two or more that forwards with no view for
        ``UNALIGNED_AFTER_S`` (a rebalance of the monitors' group passes through none held)
        is **unaligned**: it never holds back, and on a backlog it can run ahead of the
        others, whose messages then reach the merges late, in blocks of their source
        partitions' keys (false drift of categorical columns on clean data,
        docs/benchmarks.md 2026-12-06).  Warned once per episode, exported as
        ``streamdrift_writer_unaligned``."""
        role = self.roles.current
        if role is None or not role.several:
            self.unaligned, self._blind_since = None, None
            return
        if role.writers < 2 or not forwarding or view is not False:
            self._blind_since = None
            if self.unaligned:
                log.info("this process's first-stage writer sees the monitors' merges "
                         "again: it holds back with the other writers")
            self.unaligned = False
            return
        if self._blind_since is None:
            self._blind_since = now
        if self.unaligned or now - self._blind_since < UNALIGNED_AFTER_S:
            self.unaligned = bool(self.unaligned)
            return
        self.unaligned = True
        if monitors:
            log.warning(
                "this process's first-stage writer is one of %d, but its monitors hold no "
                "partition of the internal topic %s (%d partition(s)): it cannot see the "
                "merges and never holds back, so on a backlog it can run ahead of the other "
                "writers and their messages reach the monitors late, in blocks of their "
                "source partitions' keys (false drift on categorical columns); give "
                "source.repartition.partitions at least as many partitions as processes "
                "run both stages (%d here), or run the extra processes with --stage monitor",
                role.writers, self.rp.topic, self.rp.partitions, role.writers)
        else:
            log.warning(
                "this process runs only the first stage (--stage repartition) as one of %d "
                "writers: it cannot see the monitors' merges and never holds back, so on a "
                "backlog it can run ahead of the other writers and their messages reach the "
                "monitors late, in blocks of their source partitions' keys (false drift on "
                "categorical columns); run both stages in every writer's process, or set "
                "source.repartition.writers: one", role.writers)


def caught_up(stage: Any, now: float) -> bool:
    """Whether the first stage ``stage`` (a Repartitioner) is caught up and idle: nothing
    buffered, nothing waiting for its seek, and every assigned partition confirmed at its
    end offset (catchup.py; one left behind after ``MAX_WAIT_S`` without progress is not
    caught up)."""
    if stage.to_seek or any(stage.buffers.values()):
        return False
    tps = list(stage.buffers)
    if not tps:
        return True
    return not stage.catchup.waiting(stage._positions(), tps, now) and \
        not stage.catchup.left_behind


def tick(stage: Any, now: float) -> None:
    """A loop iteration of ``stage`` with several writers: a heartbeat to every internal
    partition if one is due and the stage is caught up and idle."""
    writer: Writer = stage.writer
    view = getattr(stage, "view", None)
    writer.check_view(view() if view is not None else False, bool(stage.buffers), now,
                      monitors=view is not None)
    if now - writer.beat_at < writer.rp.heartbeat_ms / 1000 or now < stage.retry_at \
            or writer.roles.rebalancing or not caught_up(stage, now):
        return
    frames = writer.beat(now)
    if frames is None:
        return
    if stage._write(lambda: frames, 0):
        writer.sent(now)
    else:
        stage.retry_at = time.monotonic() + 1.0  # as a failed forward (RETRY_BACKOFF_S)


#: a writer ahead waits while the merge that shows it holds this share of its bound
ALIGN_SHARE = 0.5
#: ... or while more of its messages than this are in flight to its own monitors (their
#: view of the other writers would be late by as much)
ALIGN_IN_FLIGHT = 25_000
#: the longest a writer waits at once (then one batch goes: a stale view never deadlocks)
ALIGN_MAX_S = 10.0
ALIGN_STEP_S = 0.02
#: a load that differs from the one said at the last join this long asks for a rebalance
LOAD_SETTLE_S = 2.0
#: a writer of several that forwards with no view of a merge this long is unaligned
#: (Writer.check_view)
UNALIGNED_AFTER_S = 5.0


class Alignment:
    """Watermark alignment of the writers (issue 14; as Flink's, FLIP-182): a writer that
    runs ahead of another in event time waits.

    Without it two processes reading a backlog at different speeds drift apart (the one
    that also holds the pool is slower): the monitors' merges buffer the faster writer's
    messages up to their bound (``MAX_BUFFERED``), then release them without the slower
    writer's, whose messages come late, out of event order, as a block (29 % of a 3 M
    backlog in the pooled scale-out run).  The monitors of this process see the writers'
    watermarks on their internal partitions: ``ahead(generation, index)`` (the
    :class:`~stream.runtime.twostage.TwoStageRunner`'s) says whether a merge of this
    generation holds at least ``ALIGN_SHARE`` of its bound while this writer's watermark
    is above another's there (or another is not heard from yet).  That view is only as
    fresh as what the monitors have read: ``in_flight()`` (the writer's messages
    forwarded and not read yet by its own monitors) above ``ALIGN_IN_FLIGHT`` holds the
    writer back too, so the internal topic keeps no backlog that hides a lead (the
    monitors are the slower stage on a backlog; before they are first assigned, all of
    them count).  Alone (one writer) it never waits.  The stage then skips its poll for
    ``ALIGN_STEP_S`` at a time, at most ``ALIGN_MAX_S`` in a row, and never during a
    rebalance: neither once its partitions are revoked nor while its group consumer must
    poll to (re)join (``rejoining``; a member that does not poll keeps the whole group's
    rebalance waiting).  A process whose monitors, once assigned, hold no internal
    partition has no view and never waits: its writer is reported unaligned
    (:meth:`Writer.check_view`)."""

    def __init__(self, writer: Writer, ahead: Callable[[int, int], bool],
                 in_flight: Callable[[], int | None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 rejoining: Callable[[], bool] = lambda: False) -> None:
        self.writer, self.ahead, self.in_flight, self.clock = writer, ahead, in_flight, clock
        self.rejoining = rejoining
        self.since: float | None = None
        #: times the writer began to wait, and seconds waited
        self.waits = 0
        self.waited_s = 0.0

    def hold(self) -> bool:
        """Whether to skip this poll (the caller then waits ``ALIGN_STEP_S``)."""
        role = self.writer.roles.current
        now = self.clock()
        if role is None or not role.several or self.writer.roles.rebalancing \
                or self.rejoining() or not (self.ahead(role.generation, role.index)
                        or self._flooding(role.writers)):
            self._end(now)
            return False
        if self.since is None:
            self.since = now
            self.waits += 1
        elif now - self.since >= ALIGN_MAX_S:
            self._end(now)  # one batch goes all the same
            return False
        return True

    def _flooding(self, writers: int) -> bool:
        if writers < 2:  # (one writer: nobody to align with)
            return False
        n = None if self.in_flight is None else self.in_flight()
        return n is not None and n > ALIGN_IN_FLIGHT

    def waited(self) -> float:
        """Seconds waited so far, the current wait included."""
        since = self.since
        return self.waited_s + (0.0 if since is None else max(0.0, self.clock() - since))

    def _end(self, now: float) -> None:
        if self.since is not None:
            self.waited_s += now - self.since
            self.since = None
