"""The monitors' bookkeeping of the several-writer merge (issue 14): one
:class:`~stream.runtime.writermerge.WriterMerge` per assigned internal partition, fed
the partition's version-3 frames by :class:`~stream.runtime.monitors.FramedRunner`.

What the runner keeps per partition here, and why:

* the **merge**, created at the partition's first version-3 frame (a partition that only
  ever carries frames of version 1 or 2, or plain records, has none and is read exactly
  as before);
* **delivered**: how many messages of the partition the pipeline was given since the
  partition's state began (released by the merge, or of a version-1/2 frame or a plain
  record, which are processed at once);
* **read**: the offset of the newest record read on the partition, whatever it was.

The checkpoint of a partition with a merge holds, in every model's state under
:data:`MERGE_KEY`, the merge's :class:`~stream.runtime.writermerge.MergeState`, *delivered*
and *read*, next to the detector state they belong to; the checkpoint's offset is what
the runner may commit: the merge's commit offset (the oldest frame with a message not
released yet) while it holds messages back, else the record after the newest read.  A
restore seeks there and restores the merge, which skips, in the frames it reads again up
to its newest, exactly the messages it released before (writermerge.py); records of
version 1 or 2 (a rolling upgrade that mixes them on one partition) at or below *read*
were processed before the checkpoint and are skipped too.  When the checkpoints of one
partition's models were cut by a crash between two writes (one model's newer than
another's), the merge is restored from the oldest, and each newer model skips the first
``its delivered - the oldest's`` messages delivered: the merge releases the same sequence
again from the same state (with the same clock).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from stream.runtime.frames import Frame
from stream.runtime.writermerge import MergeState, Released, WriterMerge

#: the key of a model's checkpointed state that holds its partition's merge
MERGE_KEY = "writer_merge"
#: the merge's counters that the metrics export (summed over the partitions, kept across
#: partitions dropped)
COUNTERS = ("late", "skips", "over_cap", "stale_frames", "duplicates")


class PartitionMerges:
    """The merges of the partitions a :class:`FramedRunner` holds (module docstring);
    partitions are the consumer's topic-partitions."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 max_wait_s: float | None = None, max_buffered: int | None = None) -> None:
        self.clock = clock
        self._kw: dict[str, Any] = {}
        if max_wait_s is not None:
            self._kw["max_wait_s"] = max_wait_s
        if max_buffered is not None:
            self._kw["max_buffered"] = max_buffered
        self.merges: dict[Any, WriterMerge] = {}
        self.delivered: dict[Any, int] = {}
        #: when each partition's *delivered* sequence began (ms; the pooled CUSUM tells a
        #: sequence begun again from a republished one by it, poolkeys.py)
        self.epochs: dict[Any, int] = {}
        self.read: dict[Any, int] = {}
        #: partition -> records of version 1/2 (or plain) at or below this offset were
        #: processed before the restore: not again
        self.replay_to: dict[Any, int] = {}
        #: partitions whose ``skip_until`` entry counts messages still to skip per model
        self.counted: set[Any] = set()
        #: what an idle loop's :meth:`WriterMerge.poll` released, processed next
        self.ticked: dict[Any, Released] = {}
        #: partition -> *delivered* in its last acknowledged checkpoint, and in the one
        #: being written
        self.saved: dict[Any, int] = {}
        self.exporting: dict[Any, int] = {}
        self._retired: Counter[str] = Counter()
        #: partition -> writer id -> the largest position of its messages read here (the
        #: first stage of this process holds back while too many are in flight: writers.py)
        self.seen: dict[Any, dict[bytes, int]] = {}
        #: the first stage's writers.Alignment in a two-stage process (its series)
        self.alignment: Any = None

    def _new(self, tp: Any) -> WriterMerge:
        return WriterMerge(clock=self.clock, name=f"{tp.topic}/{tp.partition}", **self._kw)

    # -- reading --------------------------------------------------------------------------
    def add(self, tp: Any, offset: int, frame: Frame) -> Released:
        """A version-3 frame of ``tp``; what the merge releases (ValueError: refused)."""
        merge = self.merges.get(tp)
        if merge is None:
            merge = self.merges[tp] = self._new(tp)
            self.delivered.setdefault(tp, 0)
            self.epochs.setdefault(tp, int(time.time() * 1000))
        if frame.writer is not None and frame.positions is not None and len(frame.positions):
            seen = self.seen.setdefault(tp, {})
            wid = frame.writer.writer_id
            seen[wid] = max(seen.get(wid, -1), int(frame.positions.max()))
        return merge.add(offset, frame)

    def replayed(self, tp: Any, offset: int) -> bool:
        """Whether a record of version 1/2 at ``offset`` was processed before a restore."""
        upto = self.replay_to.get(tp)
        return upto is not None and offset <= upto

    def has(self, tp: Any) -> bool:
        return tp in self.merges

    def done(self, tp: Any, last: int | None, previous: int | None) -> int | None:
        """The offset ``tp`` may be committed and checkpointed at after a batch whose last
        record is ``last`` (None: a release on an idle loop; ``previous``: the offset
        before)."""
        merge = self.merges[tp]
        if merge.buffered:
            return merge.commit_offset()
        if last is not None:
            return last + 1
        ahead = merge.commit_offset()
        if ahead is None:
            return previous
        return ahead if previous is None else max(previous, ahead)

    def tick(self, tps: set[Any]) -> dict[Any, Released]:
        """The merges of ``tps`` with messages held back, polled (a silent writer's wait may
        have run out): the partitions that released some."""
        out = {}
        for tp in tps:
            merge = self.merges.get(tp)
            if merge is not None and merge.buffered:
                rel = merge.poll()
                if len(rel):
                    out[tp] = rel
        self.ticked.update(out)
        return out

    # -- checkpoints ----------------------------------------------------------------------
    def export(self, tp: Any) -> dict[str, Any] | None:
        """What a checkpoint of ``tp`` holds of its merge (None: no merge)."""
        merge = self.merges.get(tp)
        if merge is None:
            return None
        self.exporting[tp] = self.delivered.get(tp, 0)
        return {"merge": merge.state().to_dict(), "delivered": self.delivered.get(tp, 0),
                "read": self.read.get(tp), "epoch": self.epochs.get(tp, 0)}

    def moved(self, tp: Any) -> bool:
        """Whether ``tp``'s merge released messages since its last checkpoint."""
        return tp in self.merges and self.delivered.get(tp, 0) != self.saved.get(tp)

    def skip(self, tp: Any, ahead: dict[str, int], n: int) -> dict[str, int]:
        """Of a batch of ``n`` messages of ``tp``, the leading ones each model of ``ahead``
        (model -> messages still to skip, updated) skips."""
        out = {name: min(left, n) for name, left in ahead.items()}
        for name, k in out.items():
            ahead[name] -= k
            if ahead[name] <= 0:
                del ahead[name]
        if not ahead:
            self.counted.discard(tp)
        return out

    def restore(self, tp: Any, saved: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
        """Restore ``tp``'s merge from the models' checkpointed :data:`MERGE_KEY` entries
        (model -> entry); returns, per model whose state is ahead of the oldest, the
        messages it skips."""
        self.drop(tp)
        if not saved:
            return {}
        base = min(saved.values(), key=lambda s: int(s.get("delivered", 0)))
        merge = self._new(tp)
        merge.restore(MergeState.from_dict(dict(base["merge"])))
        self.merges[tp] = merge
        self.delivered[tp] = int(base.get("delivered", 0))
        self.epochs[tp] = int(base.get("epoch", 0))
        if base.get("read") is not None:
            self.replay_to[tp] = int(base["read"])
            self.read[tp] = int(base["read"])
        skips = {name: int(s.get("delivered", 0)) - self.delivered[tp]
                 for name, s in saved.items()}
        return {name: n for name, n in skips.items() if n > 0}

    def rewind(self, tp: Any) -> None:
        """``tp`` is read again from its commit offset with the same state (a lost or
        parked partition that comes back unchanged): its merge restored from its own
        state skips what it released."""
        merge = self.merges.get(tp)
        if merge is None:
            return
        self._retire(merge)
        fresh = self._new(tp)
        fresh.restore(merge.state())
        self.merges[tp] = fresh
        if tp in self.read:
            self.replay_to[tp] = self.read[tp]

    def drop(self, tp: Any) -> None:
        """Forget ``tp``'s merge (its state goes with the partition's)."""
        merge = self.merges.pop(tp, None)
        if merge is not None:
            self._retire(merge)
        for d in (self.delivered, self.epochs, self.read, self.replay_to, self.ticked, self.saved,
                  self.exporting, self.seen):
            d.pop(tp, None)  # type: ignore[attr-defined]
        self.counted.discard(tp)

    def _retire(self, merge: WriterMerge) -> None:
        for name in COUNTERS:
            self._retired[name] += getattr(merge, name)

    # -- metrics --------------------------------------------------------------------------
    def figures(self) -> dict[str, int]:
        """The counters of :data:`COUNTERS` over every merge this process had, and the
        messages held back now (``buffered``) and the partitions with a merge."""
        merges = list(self.merges.values())
        out = {name: self._retired[name] + sum(getattr(m, name) for m in merges)
               for name in COUNTERS}
        out["buffered"] = sum(m.buffered for m in merges)
        out["partitions"] = len(merges)
        return out
