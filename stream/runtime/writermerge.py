"""The monitors' merge of several first-stage writers on one internal partition (issue 14).

With ``source.repartition.writers: several`` (writers.py) FramedRunner keeps one per
internal partition (mergerun.py) for the version-3 frames. With several writers, each
forwarding its own source partitions in timestamp order, an internal partition holds their
frames interleaved as the writers' producers happened to deliver them: one writer ahead of
another puts its keys in a block (a false ``c1`` episode, onewriter.py).
:class:`WriterMerge` takes the version-3 frames of one internal partition (frames.py:
writer id, generation, writer count and index, watermark) in offset order and releases
their messages by event time.  Each message has a **key**, a total order::

    (Kafka timestamp, generation, writer index, the writer's own merge position)

and the merge releases up to the **frontier** the writers allow: a writer's watermark
promises that everything it forwards later has a timestamp ≥ the watermark, so the
buffered messages (of the current generation and of older ones) with a timestamp below
the smallest watermark of the current generation's writers can go; a message at that
timestamp waits (another writer may still send one in the same millisecond).  An idle
writer sends heartbeats (frames of no messages) so its watermark keeps up with the clock.

* **Within a millisecond the writers interleave.**  A fast producer puts tens of
  messages in one millisecond; in plain key order each writer's would follow the
  previous writer's, a block of its source partitions' keys (with a topic keyed by
  ``c1``, a false ``c1`` episode: docs/reliability.md).  So a release is ordered by
  (timestamp, *spread*, generation, writer index, position), where a message's spread is
  (its rank among the released messages of its (timestamp, generation, writer), in key
  order, + 1/2) / their count: each writer's (and generation's) messages spread evenly
  over their millisecond, as ``catchup.merge_plan`` spreads one writer's partitions.
  The **frontier** stays the largest *key* released (not the last message released).
  This keeps the release independent of where releases split the stream: a release
  holds every buffered message with a timestamp below the bound, and every message not
  late that comes later has a timestamp at or above that bound (the watermarks' promise;
  an older generation's messages are all buffered by then), so each millisecond is
  released whole, in one release, and its order depends only on its own messages.  A
  writer that breaks its watermark, or one left out, can split a millisecond (its
  message above the frontier goes with the next release, spread among that release's
  messages of the millisecond).  The messages the cap forces out (the smallest keys)
  keep the key order, and the late ones their arrival order.
* **A writer not heard from** (of the current generation, no frame on this partition
  yet) blocks the release, as a writer whose watermark lags does.  One silent for
  ``max_wait_s`` (since its last frame, or since the generation began here) is left out:
  the others' messages go on without it, with one warning until it is heard again; its
  messages that then come below the released frontier are *late*.
* **Late** messages (a key at or below the frontier: clock skew, a writer that broke its
  watermark, one left out, a zombie) are released at once, in their arrival order, and
  counted; never dropped.
* **Generations.** The first stage's writers forward (and wait for every
  acknowledgement) and commit each batch before they poll again, and a rebalance
  completes inside a poll, so once a frame of a newer generation arrives on the
  partition, no frame of an older one follows: what is buffered of older generations is
  complete.  It is **not** released at the generation change but merged by event time
  with the new generation's messages (the timestamp comes before the generation in the
  key): a rebalance while a backlog is read leaves one writer's whole share in one
  generation and another's in the next, and releasing the first before the second would
  give the detectors a block of one writer's keys (issue 14: pooled delay runs 1.7–5.5×
  one monitor).  The bound is the current generation's writers' (an older generation's
  messages need none: nothing more of it comes).  A frame of an older generation that
  still comes after a newer one (a zombie whose session had expired) breaks that
  promise: its messages are released at once as late and it is counted in
  ``stale_frames`` (after a restore, skipped as released when re-read: the state keeps
  the offsets where the generations began, to tell a zombie from a frame of an older
  generation read before the change).
* **Copies.**  A successor forwards again, in a newer generation, what its crashed (or
  revoked) predecessor had not committed.  A copy whose first is still buffered goes in
  the same release, side by side with it (the millisecond interleaves its generations):
  each value folded twice in a row doubles a CUSUM's steps (reliability.md, "Copies").
  So a release keeps one message per source record (topic, partition, offset), the first
  in key order, and counts the others in ``duplicates``; the frontier passes them.  A
  copy of a message released already is repeated: late, or, in the frontier's own
  millisecond, released with the next release, uncounted.
* **Bounded memory.** At most ``max_buffered`` messages wait: past that, the smallest
  keys are released in order (counted in ``over_cap``), moving the frontier, so that a
  writer that lags badly costs lateness, not memory.
* **Checkpoints** (:meth:`WriterMerge.state`, :class:`MergeState`): the offset of the
  oldest frame with messages not released yet (what the monitor may commit and re-read
  from), the offset of the newest frame read, the frontier, the generation, the
  watermarks and the offsets where the generations began (version 2; a version-1 state,
  of the generation-first key, restores with its frontier permuted).  A merge
  :meth:`~WriterMerge.restore`\\ d from it and fed again from the commit offset skips,
  in every frame up to the newest read, exactly the messages with a key at or below the
  frontier and every message of a zombie's frame (all of them were released: in order,
  late or over the cap; everything released is at or below the frontier and everything
  buffered above it, since released messages have timestamps below a bound the buffered
  ones are at or above), and buffers the others again: no loss and no double count, in
  the same order as without the restart (with the same clock; the interleaving within a
  millisecond too, since each millisecond is released whole, above).  Frames past the
  newest read were never seen and are merged as usual.  This holds when the state is
  checkpointed with the detectors' state it belongs to.  Duplicates remain where the
  first stage writes a message twice: after a writer's crash its successor (a new
  generation) forwards again what was not committed (the first stage's bound,
  reliability.md), and a static member that rejoins without a rebalance rewrites
  messages with the same keys in the same generation; such a copy is dropped when its
  first copy is still buffered, and released again, as late, when that was released
  (Copies, above).

Everything per message is numpy over the buffered columns (a ``lexsort`` by key per
release, and one by the spread); the loops are per frame and per writer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.runtime.catchup import spread
from stream.runtime.frames import Frame, pick

log = logging.getLogger("streamdrift.repartition")

#: a writer of the current generation silent for this long is left out of the frontier
MAX_WAIT_S = 30.0
#: the most messages one partition's merge holds back
MAX_BUFFERED = 50_000
#: the released values are dropped from the list once it holds this many more than
#: four times the buffered ones
COMPACT_AFTER = 4096

#: (timestamp, generation, writer index, writer's position)
Key = tuple[int, int, int, int]
_MIN = -(2**63)
#: the columns of the buffer: the key's four, the frame's offset, the message's row in it
COLUMNS = ("timestamp", "generation", "writer", "position", "offset", "row")
_EMPTY = np.empty((0, len(COLUMNS)), dtype=np.int64)
#: the buffer has one column more: each message's index into the list of values
_VI = len(COLUMNS)


#: the layout of :meth:`MergeState.to_dict`: 2 has the key (timestamp, generation, ...)
#: and the generations' first offsets; 1 (no ``version``) had (generation, timestamp, ...)
STATE_VERSION = 2


@dataclass(frozen=True)
class MergeState:
    """What a checkpoint keeps of a :class:`WriterMerge` to resume it exactly."""

    #: re-read from this offset (the oldest frame with unreleased messages); None: none read
    commit_offset: int | None
    #: the newest frame's offset read (frames up to it are replays after a restore)
    read_to: int | None
    #: every released message's key is at or below it
    frontier: Key | None
    generation: int | None
    writers: int
    watermarks: dict[int, int] = field(default_factory=dict)
    #: (offset, generation) where each generation began on the partition, from the last
    #: one at or before ``commit_offset`` on: a re-read frame of a generation older than
    #: the one in force at its offset was a zombie's (all released)
    starts: tuple[tuple[int, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"version": STATE_VERSION,
                "commit_offset": self.commit_offset, "read_to": self.read_to,
                "frontier": None if self.frontier is None else list(self.frontier),
                "generation": self.generation, "writers": self.writers,
                "watermarks": {str(k): v for k, v in self.watermarks.items()},
                "starts": [list(x) for x in self.starts]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MergeState:
        f = d.get("frontier")
        frontier = None if f is None else (int(f[0]), int(f[1]), int(f[2]), int(f[3]))
        gen = d.get("generation")
        if int(d.get("version", 1)) < 2:
            # (generation, timestamp, ...): everything released was at or below the
            # frontier and every older generation was released whole at its change, so
            # the permuted frontier, with every older generation's frame taken as
            # released (a generation in force from before any offset), skips the same
            if frontier is not None:
                frontier = (frontier[1], frontier[0], frontier[2], frontier[3])
            starts: tuple[tuple[int, int], ...] = () if gen is None else ((-1, int(gen)),)
        else:
            starts = tuple((int(o), int(g)) for o, g in d.get("starts") or ())
            if not starts and gen is not None:
                starts = ((-1, int(gen)),)
        return cls(d.get("commit_offset"), d.get("read_to"), frontier, gen,
                   int(d.get("writers", 0)),
                   {int(k): int(v) for k, v in (d.get("watermarks") or {}).items()}, starts)


@dataclass
class Released:
    """Messages released by the merge, in release order."""

    #: int64 (n, 6): :data:`COLUMNS`
    columns: np.ndarray
    #: whether each was late (released at once, below the frontier)
    late: np.ndarray
    values: list[bytes | None]
    #: the frames the messages are rows of, by offset
    frames: dict[int, Frame]

    def __len__(self) -> int:
        return len(self.values)

    def column(self, name: str) -> np.ndarray:
        return self.columns[:, COLUMNS.index(name)]

    def keys(self) -> list[Key]:
        """(timestamp, generation, writer, position) of each."""
        return [(int(a), int(b), int(c), int(d)) for a, b, c, d in self.columns[:, :4]]

    @classmethod
    def empty(cls) -> Released:
        return cls(_EMPTY, np.zeros(0, dtype=bool), [], {})

    @classmethod
    def concat(cls, parts: list[Released]) -> Released:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        frames: dict[int, Frame] = {}
        values: list[bytes | None] = []
        for p in parts:
            frames.update(p.frames)
            values += p.values
        return cls(np.concatenate([p.columns for p in parts]),
                   np.concatenate([p.late for p in parts]), values, frames)


def _order(cols: np.ndarray) -> np.ndarray:
    """The rows of ``cols`` in the total order (lexicographic over the key's columns)."""
    return np.lexsort((cols[:, 3], cols[:, 2], cols[:, 1], cols[:, 0]))


def _interleaved(cols: np.ndarray) -> np.ndarray:
    """The release order of ``cols`` (rows in key order, every message of each of their
    milliseconds): by (timestamp, spread, generation, writer, position), where a message's
    spread is (its rank among the rows of its (timestamp, generation, writer), in key
    order, + 0.5) / their count, so that the writers (and generations) of one millisecond
    interleave evenly instead of following each other in blocks (catchup.merge_plan does
    the same for the partitions of one writer).

    >>> keys = np.array([[7, 1, 0, 0], [7, 1, 0, 1], [7, 1, 0, 2], [7, 1, 0, 3],
    ...                  [7, 1, 1, 0], [7, 1, 1, 1], [8, 1, 1, 2]])
    >>> _interleaved(keys).tolist()
    [0, 4, 1, 2, 5, 3, 6]
    """
    t, g, w = cols[:, 0], cols[:, 1], cols[:, 2]
    first = np.empty(len(cols), dtype=bool)  # where a (timestamp, generation, writer) begins
    first[0] = True
    np.not_equal(t[1:], t[:-1], out=first[1:])
    first[1:] |= g[1:] != g[:-1]
    first[1:] |= w[1:] != w[:-1]
    return np.lexsort((spread(first), t))  # (stable: ties stay in key order)


def _at_or_below(cols: np.ndarray, key: Key | None) -> np.ndarray:
    """Whether each row's key is at or below ``key`` (lexicographically), vectorised."""
    if key is None:
        return np.zeros(len(cols), dtype=bool)
    t, g, w, p = (cols[:, i] for i in range(4))
    kt, kg, kw, kp = key
    return (t < kt) | ((t == kt) & ((g < kg) | ((g == kg) & (
        (w < kw) | ((w == kw) & (p <= kp))))))


class WriterMerge:
    """The frames of several writers on one internal partition, merged into one total
    order (module docstring).  :meth:`add` each frame in offset order, :meth:`poll` when
    none came (a writer's wait may have run out); both return what they release."""

    def __init__(self, max_wait_s: float = MAX_WAIT_S, max_buffered: int = MAX_BUFFERED,
                 clock: Callable[[], float] = time.monotonic, name: str = "") -> None:
        if max_buffered < 1:
            raise ValueError("max_buffered must be at least 1")
        self.max_wait_s, self.max_buffered, self.clock, self.name = \
            max_wait_s, max_buffered, clock, name
        #: the buffered messages' columns (and value index), chunks in arrival order
        self._chunks: list[np.ndarray] = []
        self._n = 0
        #: (generation, bound) of the last release, and how many chunks hold nothing below
        #: it since: a frame that changes neither adds its own messages only to check
        self._clear: tuple[int | None, int | None] = (None, None)
        self._checked = 0
        #: the values, appended; released ones stay until a compaction
        self._values: list[bytes | None] = []
        self._frames: dict[int, Frame] = {}
        self.frontier: Key | None = None
        self.generation: int | None = None
        self.writers = 0
        self.watermarks: dict[int, int] = {}
        self._heard: dict[int, float] = {}
        self._since = 0.0
        self._ids: dict[int, bytes] = {}
        self.left_out: set[int] = set()
        self.last_offset: int | None = None
        #: (offset, generation) where each generation began (see MergeState.starts)
        self._starts: list[tuple[int, int]] = []
        self._read_to: int | None = None
        self._commit: int | None = None
        #: messages released at once below the frontier
        self.late = 0
        #: messages released early because more than ``max_buffered`` waited
        self.over_cap = 0
        #: times a silent writer was left out
        self.skips = 0
        #: frames of an older generation after a newer one
        self.stale_frames = 0
        #: frames whose writer index had another writer id in the same generation
        self.conflicts = 0
        #: messages of re-read frames skipped as released before the restore
        self.replayed = 0
        #: later copies of a source record dropped in a release (:meth:`_once`)
        self.duplicates = 0
        #: writer -> its largest position read; whether copies may be buffered (a position
        #: read again, an older generation's rest); source topic -> id (_once)
        self._positions: dict[int, int] = {}
        self._rewrite = False
        self._source_ids: dict[str, int] = {}
        self._warned: set[str] = set()

    # -- checkpoints ---------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return self._n

    def commit_offset(self) -> int | None:
        """The offset to resume from: the oldest frame with a message not released yet,
        else the one after the newest read."""
        if self._n:
            return int(min(int(c[:, 4].min()) for c in self._chunks))
        return self._commit if self.last_offset is None else self.last_offset + 1

    def state(self) -> MergeState:
        read_to = self.last_offset if self._read_to is None or (
            self.last_offset is not None and self.last_offset > self._read_to) \
            else self._read_to
        commit = self.commit_offset()
        return MergeState(commit, read_to, self.frontier, self.generation,
                          self.writers, dict(self.watermarks),
                          tuple(self._since_commit(commit)))

    def _since_commit(self, commit: int | None) -> list[tuple[int, int]]:
        """The generations' starts a re-read from ``commit`` needs."""
        if commit is None:
            return list(self._starts)
        k = sum(1 for o, _ in self._starts if o <= commit)
        return self._starts[max(k - 1, 0):]

    def _in_force(self, offset: int) -> int | None:
        """The generation in force at ``offset`` (of the last start at or before it)."""
        out = None
        for o, g in self._starts:
            if o > offset:
                break
            out = g
        return out

    def restore(self, state: MergeState) -> None:
        """Resume from ``state`` (a fresh merge); then :meth:`add` the frames from
        ``state.commit_offset`` on."""
        if self._n or self.last_offset is not None:
            raise RuntimeError("restore() on a merge that has read frames")
        now = self.clock()
        self._commit, self._read_to, self.frontier = \
            state.commit_offset, state.read_to, state.frontier
        self.generation, self.writers = state.generation, state.writers
        self.watermarks = dict(state.watermarks)
        self._starts = list(state.starts)
        self._since = now
        self._heard = dict.fromkeys(self.watermarks, now)

    # -- merging -------------------------------------------------------------------------

    def add(self, offset: int, frame: Frame) -> Released:
        """Take the version-3 frame at ``offset`` (offsets increase); what it releases."""
        w = frame.writer
        if w is None:
            raise ValueError("WriterMerge reads version-3 frames (a writer block) only")
        if self.last_offset is not None and offset <= self.last_offset:
            raise ValueError(f"frame offset {offset} after {self.last_offset}")
        self.last_offset = offset
        now = self.clock()
        replay = self._read_to is not None and offset <= self._read_to
        out: list[Released] = []
        if self.generation is None or w.generation > self.generation:
            # (what older generations left buffered is complete: it goes by timestamp
            # with the new one's, below the new writers' bound)
            self._new_generation(w.generation, w.writers, now)
            self._starts = self._since_commit(self.commit_offset()) + [(offset, w.generation)]
        n = len(frame)
        if n:
            cols = np.empty((n, _VI + 1), dtype=np.int64)
            cols[:, 0], cols[:, 1], cols[:, 2] = frame.timestamps, w.generation, w.index
            assert frame.positions is not None  # (a version-3 frame has them)
            cols[:, 3] = frame.positions
            cols[:, 4], cols[:, 5] = offset, np.arange(n)
            if w.generation == self.generation:  # (positions again: perhaps a rewrite)
                last = self._positions.get(w.index)
                # (a writer's positions increase: its merge order, frames.py)
                self._rewrite |= last is not None and int(frame.positions[0]) <= last
                self._positions[w.index] = max(_MIN if last is None else last,
                                               int(frame.positions[-1]))
            stale = w.generation < self.generation  # type: ignore[operator]
            if replay:  # a zombie's frame (older than the generation in force) went whole
                force = self._in_force(offset)
                stale = force is not None and w.generation < force
            done = np.ones(n, dtype=bool) if stale else _at_or_below(cols, self.frontier)
            if replay:
                self.replayed += int(done.sum())
            elif done.any():
                self.late += int(done.sum())
                if stale:
                    self.stale_frames += 1
                    self._warn("stale", "a frame of an older generation of the first stage "
                               "came after a newer one (a zombie writer?): its messages are "
                               "released at once, as late", generation=w.generation,
                               current=self.generation)
                else:
                    self._warn("late", "messages came below the merged frontier (a writer "
                               "left out, clock skew or a broken watermark): released at "
                               "once, as late", writer=w.index, generation=w.generation)
                at = np.flatnonzero(done)
                out.append(Released(cols[at, :_VI], np.ones(len(at), dtype=bool),
                                    pick(frame.values, at), {offset: frame}))
            keep = np.flatnonzero(~done)
            if len(keep):
                self._rewrite |= w.generation != self.generation  # (older: after a restore)
                cols = cols[keep]
                cols[:, _VI] = np.arange(len(self._values), len(self._values) + len(keep))
                self._chunks.append(cols)
                self._n += len(keep)
                self._values += frame.values if len(keep) == n else pick(frame.values, keep)
                self._frames[offset] = frame
        if w.generation == self.generation:
            self._heard_from(w.index, w.writer_id, w.watermark, w.writers, now)
        out.append(self._release(now))
        return Released.concat(out)

    def poll(self) -> Released:
        """What the time releases: a silent writer's wait that ran out."""
        return self._release(self.clock())

    def _new_generation(self, generation: int, writers: int, now: float) -> None:
        self._rewrite |= self._n > 0  # (an older one's rest is buffered: copies may come)
        self.generation, self.writers = generation, writers
        self.watermarks, self._heard, self._ids, self._positions = {}, {}, {}, {}
        self.left_out.clear()
        self._since = now

    def _heard_from(self, index: int, writer_id: bytes, watermark: int, writers: int,
                    now: float) -> None:
        self.writers = max(self.writers, writers)
        known = self._ids.setdefault(index, writer_id)
        if known != writer_id:
            self.conflicts += 1
            self._warn("conflict", "two writers with the same index in one generation of "
                       "the first stage", index=index, generation=self.generation)
        self.watermarks[index] = max(self.watermarks.get(index, _MIN), watermark)
        self._heard[index] = now
        if index in self.left_out:
            self.left_out.discard(index)
            log.info("a first-stage writer left out of the merge is heard again",
                     extra={"partition": self.name, "writer": index})

    def leads(self, index: int) -> bool:
        """Whether writer ``index`` is ahead here: its watermark above another writer's of
        the current generation, or another not heard from yet (the release waits for
        it); a writer left out is not waited for.  Safe to call from another thread: a
        dict or set changing size while copied raises RuntimeError."""
        marks, out = dict(self.watermarks), set(self.left_out)
        mine = marks.get(index)
        others = [marks.get(i) for i in range(self.writers) if i != index and i not in out]
        if mine is None or not others:
            return False
        heard = [o for o in others if o is not None]
        return len(heard) < len(others) or mine > min(heard)

    def _bound(self, now: float) -> int | None:
        """The timestamp below which the current generation's messages go (None: all)."""
        bound: int | None = None
        waiting = False
        for i in range(self.writers):
            since = self._heard.get(i, self._since)
            if now - since >= self.max_wait_s:
                if i not in self.left_out:
                    self.left_out.add(i)
                    self.skips += 1
                    log.warning("a first-stage writer has sent nothing to this internal "
                                "partition for %.0f s: the merge goes on without it, and "
                                "its messages, when they come, are late", now - since,
                                extra={"partition": self.name, "writer": i,
                                       "generation": self.generation})
                continue
            wm = self.watermarks.get(i)
            if wm is None:
                waiting = True
            else:
                bound = wm if bound is None else min(bound, wm)
        if waiting:
            return _MIN
        return bound

    def _buffer(self) -> np.ndarray:
        if len(self._chunks) != 1:
            self._chunks = [np.concatenate(self._chunks) if self._chunks else _EMPTY]
        return self._chunks[0]

    def _release(self, now: float) -> Released:
        """Release what the writers allow (and what the cap forces), sorting only that."""
        if not self._n:
            return Released.empty()
        bound = self._bound(now)
        if bound is not None and self._clear == (self.generation, bound) and \
                self._n <= self.max_buffered:
            if not any(bool((c[:, 0] < bound).any()) for c in self._chunks[self._checked:]):
                self._checked = len(self._chunks)
                return Released.empty()
        cols = self._buffer()
        n = len(cols)
        if bound is None:
            go = np.ones(n, dtype=bool)
        else:  # a prefix of the total order: timestamps < bound, of every generation
            go = cols[:, 0] < bound  # (none newer than the current one is buffered)
        k = int(np.count_nonzero(go))
        if n - k > self.max_buffered:  # the smallest keys go, in order
            cols = cols[_order(cols)]
            cut = n - self.max_buffered
            # never split equal keys (a message written twice): all of them go
            same = (cols[cut:, :4] == cols[cut - 1, :4]).all(axis=1)
            cut += int(np.argmin(same)) if not same.all() else len(same)
            self.over_cap += cut - k
            out, rest = cols[:cut], cols[cut:]
            interleave = False
        elif k == 0:
            self._clear, self._checked = (self.generation, bound), len(self._chunks)
            return Released.empty()
        else:  # every buffered message below the bound: its milliseconds whole
            out, rest = cols[go], cols[~go]
            out = out[_order(out)]
            interleave = True
        last = out[-1, :4]  # (the largest key: before the release order is applied)
        key: Key = (int(last[0]), int(last[1]), int(last[2]), int(last[3]))
        if self.frontier is None or key > self.frontier:
            self.frontier = key  # (also past the copies dropped below: a restore skips them)
        out = self._once(out)
        if interleave:
            out = out[_interleaved(out)]
        values = pick(self._values, out[:, _VI])
        self._chunks = [rest] if len(rest) else []
        self._n = len(rest)
        self._rewrite = self._rewrite and self._n > 0
        self._clear, self._checked = (self.generation, bound), len(self._chunks)
        if len(self._values) > 4 * self._n + COMPACT_AFTER:  # drop the released values
            if self._n:
                self._values = pick(self._values, rest[:, _VI])
                rest[:, _VI] = np.arange(self._n)
            else:
                self._values = []
        frames = {o: self._frames[o] for o in np.unique(out[:, 4]).tolist()}
        oldest = int(rest[:, 4].min()) if len(rest) else None
        for o in list(self._frames):
            if oldest is None or o < oldest:
                del self._frames[o]
            else:
                break
        return Released(out[:, :_VI], np.zeros(len(out), dtype=bool), values, frames)

    def _once(self, out: np.ndarray) -> np.ndarray:
        """``out`` (rows in key order) without the later copies of a source record (module
        docstring, Copies: a newer generation's, or equal keys); the first stays."""
        if len(out) < 2 or not self._rewrite:
            return out  # (no position read twice, one generation buffered: no copies)
        src, off = np.empty(len(out), dtype=np.int64), np.empty(len(out), dtype=np.int64)
        by_frame = np.argsort(out[:, 4], kind="stable")
        offsets = out[by_frame, 4]
        starts = np.flatnonzero(np.r_[True, offsets[1:] != offsets[:-1]])
        for a, b in zip(starts.tolist(), [*starts[1:].tolist(), len(out)], strict=True):
            at = by_frame[a:b]  # (a loop over frames)
            frame, rows = self._frames[int(offsets[a])], out[at, 5]
            ids = np.fromiter((self._source_ids.setdefault(t, len(self._source_ids))
                               for t in frame.topics), np.int64, len(frame.topics))
            src[at] = (ids[frame.topic_index[rows]] << 32) | frame.partitions[rows]
            off[at] = frame.offsets[rows]
        order = np.lexsort((off, src))  # (stable: key order within a source record)
        copy = np.zeros(len(out), dtype=bool)
        copy[order[1:]] = (src[order[1:]] == src[order[:-1]]) \
            & (off[order[1:]] == off[order[:-1]])
        if not (n := int(np.count_nonzero(copy))):
            return out
        self.duplicates += n
        self._warn("duplicates", "messages a first-stage writer forwarded again (after a "
                   "crash or a revocation before its commit) came while the first copies "
                   "were held back: each is released once", generation=self.generation)
        return out[~copy]

    def _warn(self, what: str, msg: str, **extra: Any) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning(msg, extra={"partition": self.name, **extra})
