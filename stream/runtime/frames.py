"""The records of the repartition topic: frames of many source messages each.

The first stage of ``source.repartition`` (repartition.py) writes one Kafka record per
(merged batch, internal partition, at most :data:`FRAME_BYTES` / ``max_events``) instead
of one per event: a producer call, a delivery report and a record header per event cost
more than the event's share of a frame.  A frame holds each message's original bytes and
key, its Kafka timestamp and its source topic, partition and offset (dead letters name
where a message came from), in a layout numpy reads without a loop::

    magic  b"\\xffSDF"  (no JSON document, nor any UTF-8 text, starts with 0xFF)
    u8     version (1, 2 or 3)
    u32    n, the messages
    u16    t, the source topics; then t times: u16 length + UTF-8 name
    u16[n] topic index     i32[n] partition     i64[n] offset     i64[n] timestamp (ms)
    i32[n] key length      i32[n] value length  (-1: null)
    i64[n] merge position  (version 2 and 3)
    the keys, then the values, concatenated

all little-endian.  Version 2 adds each message's **merge position**: the first stage
numbers the messages it forwards densely (0, 1, 2 ... over every internal partition, in
its merged order), so the pooled CUSUM (pool.py) knows when it holds everything up to a
point whatever internal partition each message went to.  :func:`pack` writes version 2
when given positions, version 1 otherwise; :func:`unpack` reads every version (a rolling upgrade:
frames a first stage of the previous release wrote have ``positions`` None).  :func:`unpack` checks every length against the record's size and
raises :class:`FrameError` on anything else (the monitors count and dead-letter such a
record, reason ``bad_frame``).  A record without the magic is one message as it is: the
per-event records the first stage wrote before frames are read as before.

Version 3 (several first-stage writers, issue 14: written with ``source.repartition.writers:
several``, writers.py; read by writermerge.py) is version 2 with a **writer block** between the header and the topic
names, :class:`WriterHeader`::

    16s    writer id (stable per first-stage process)
    i32    the first-stage group's generation
    u16    the writers of that generation     u16  this writer's index among them
    i64    the writer's watermark (ms)

The merge positions are then the writer's own (dense over everything *it* forwards) and
required; within a frame they strictly increase, and no message's timestamp exceeds the
watermark (the writer promises that everything it forwards later *to that internal
partition* has a timestamp ≥ the watermark, which is at least the largest it has forwarded
there: what one ``WriterMerge`` per internal partition needs; writers.py).  A **heartbeat** is a version-3
frame of no messages (:func:`heartbeat`): an idle writer's watermark.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MAGIC = b"\xffSDF"
VERSION = 2
#: the version of a frame that names its writer (:class:`WriterHeader`)
WRITER_VERSION = 3
#: the versions :func:`unpack` reads
VERSIONS = (1, 2, 3)
#: a frame is closed before it grows past this many bytes of keys and values (a message
#: larger than that has a frame of its own)
FRAME_BYTES = 256 * 1024
#: the reason a record of the repartition topic that is not a readable frame is counted by
BAD_FRAME = "bad_frame"

_HEAD = struct.Struct("<4sBIH")
_NAME = struct.Struct("<H")
_WRITER = struct.Struct("<16siHHq")
#: bytes of a writer id
WRITER_ID_BYTES = 16
#: bytes of the per-message arrays, per message
_PER_MESSAGE = 2 + 4 + 8 + 8 + 4 + 4


class FrameError(ValueError):
    """A record of the repartition topic that starts like a frame but does not read as one."""


@dataclass(frozen=True)
class WriterHeader:
    """Who wrote a version-3 frame, in which generation of the first stage's group, and
    how far it has forwarded: every message it forwards later to the frame's internal
    partition has a Kafka timestamp ≥ ``watermark`` (ms)."""

    writer_id: bytes
    generation: int
    writers: int
    index: int
    watermark: int

    def check(self) -> None:
        """:class:`FrameError` unless the fields are in range."""
        if len(self.writer_id) != WRITER_ID_BYTES:
            raise FrameError(f"a writer id of {len(self.writer_id)} bytes, not "
                             f"{WRITER_ID_BYTES}")
        if not 0 <= self.generation < 2**31:
            raise FrameError(f"generation {self.generation} out of range")
        if not 0 <= self.index < self.writers < 2**16:
            raise FrameError(f"writer index {self.index} of {self.writers} writers")
        if not -2**63 <= self.watermark < 2**63:
            raise FrameError(f"watermark {self.watermark} out of range")


@dataclass(frozen=True)
class Frame:
    """The messages of one frame, in the order the first stage merged them."""

    topics: tuple[str, ...]
    topic_index: np.ndarray
    partitions: np.ndarray
    offsets: np.ndarray
    timestamps: np.ndarray
    keys: list[bytes | None]
    values: list[bytes | None]
    #: int64 merge positions (version 2 and 3), None in a version-1 frame
    positions: np.ndarray | None = None
    #: who wrote the frame and its watermark (version 3), None before
    writer: WriterHeader | None = None

    def __len__(self) -> int:
        return len(self.values)


def blob_lengths(blobs: Sequence[bytes | None]) -> np.ndarray:
    """The length of each blob, -1 for None (int32)."""
    n = len(blobs)
    nulls = blobs.count(None) if isinstance(blobs, list) else n - sum(b is not None for b in blobs)
    if nulls == 0:  # (counted in C; then the lengths in C too)
        return np.fromiter(map(len, blobs), "<i4", n)  # type: ignore[arg-type]
    if nulls == n:
        return np.full(n, -1, dtype="<i4")
    return np.fromiter((-1 if b is None else len(b) for b in blobs), "<i4", len(blobs))


def pack(records: Sequence[Any], positions: Sequence[int] | np.ndarray | None = None,
         writer: WriterHeader | None = None) -> bytes:
    """One frame of Kafka records (``topic``, ``partition``, ``offset``, ``timestamp``,
    ``key``, ``value`` attributes), in the given order; version 2 with the messages' merge
    ``positions`` (one per record), version 1 without; version 3 with a ``writer`` (then
    the positions are required: the writer's own)."""
    n = len(records)
    if positions is not None and len(positions) != n:
        raise ValueError(f"{len(positions)} positions for {n} records")
    names = sorted({r.topic for r in records})
    index = {t: i for i, t in enumerate(names)}
    return pack_columns(
        names, np.fromiter((index[r.topic] for r in records), "<u2", n),
        np.fromiter((r.partition for r in records), "<i4", n),
        np.fromiter((r.offset for r in records), "<i8", n),
        np.fromiter((r.timestamp for r in records), "<i8", n),
        [r.key for r in records], [r.value for r in records],
        None if positions is None else np.asarray(positions, dtype="<i8"), writer=writer)


def heartbeat(writer: WriterHeader) -> bytes:
    """A version-3 frame of no messages: ``writer``'s watermark, for an idle writer to send
    to every internal partition."""
    return pack([], [], writer)


def pack_columns(names: Sequence[str], topic_index: np.ndarray, partitions: np.ndarray,
                 offsets: np.ndarray, timestamps: np.ndarray, keys: Sequence[bytes | None],
                 values: Sequence[bytes | None], positions: np.ndarray | None = None,
                 key_lengths: np.ndarray | None = None,
                 value_lengths: np.ndarray | None = None,
                 writer: WriterHeader | None = None) -> bytes:
    """:func:`pack` of columns: the frame's messages' topic indices into ``names`` (each
    name used), partitions, offsets, timestamps, keys, values and merge positions (the
    lengths of the keys and values, -1 for None, if known); version 3 with a ``writer``."""
    if writer is None:
        head = [_HEAD.pack(MAGIC, 1 if positions is None else VERSION, len(values),
                           len(names))]
    else:
        if positions is None:
            raise ValueError("a version-3 frame needs the writer's merge positions")
        writer.check()
        _check_writer_columns(writer, np.asarray(timestamps), np.asarray(positions))
        head = [_HEAD.pack(MAGIC, WRITER_VERSION, len(values), len(names)),
                _WRITER.pack(writer.writer_id, writer.generation, writer.writers,
                             writer.index, writer.watermark)]
    for t in names:
        raw = t.encode()
        head += [_NAME.pack(len(raw)), raw]
    arrays: list[np.ndarray] = [
        topic_index.astype("<u2", copy=False), partitions.astype("<i4", copy=False),
        offsets.astype("<i8", copy=False), timestamps.astype("<i8", copy=False),
        blob_lengths(keys) if key_lengths is None else key_lengths.astype("<i4", copy=False),
        (blob_lengths(values) if value_lengths is None
         else value_lengths.astype("<i4", copy=False))]
    if positions is not None:
        arrays.append(positions.astype("<i8", copy=False))
    # one copy of the keys and values (not joined first, then joined again)
    return b"".join([*head, *(a.tobytes() for a in arrays), *filter(None, keys),
                     *filter(None, values)])


def cuts(sizes: np.ndarray, max_events: int, max_bytes: int = FRAME_BYTES) -> list[int]:
    """Where :func:`frames` ends each run of messages of ``sizes`` bytes (keys and values):
    the end index of each run, a loop over runs, not messages.

    >>> cuts(np.array([10, 10, 10, 50, 5]), 100, max_bytes=25), cuts(np.array([1] * 5), 2)
    ([2, 3, 4, 5], [2, 4, 5])
    """
    n = len(sizes)
    cum = np.cumsum(sizes, dtype=np.int64)
    out: list[int] = []
    i = 0
    while i < n:
        base = int(cum[i - 1]) if i else 0
        j = int(np.searchsorted(cum, base + max_bytes, side="right"))
        j = min(max(j, i + 1), i + max_events, n)  # a larger message alone
        out.append(j)
        i = j
    return out


_TOPIC = operator.attrgetter("topic")
_FIELDS = tuple(operator.attrgetter(f) for f in ("partition", "offset", "timestamp"))
_KEY = operator.attrgetter("key")
_VALUE = operator.attrgetter("value")


def record_columns(records: Sequence[Any]) -> tuple[
        list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[Any], list[Any]]:
    """Kafka records' fields as columns, each read once (in C): the sorted topic names,
    each record's index into them, partitions, offsets, timestamps (int64), keys, values."""
    n = len(records)
    topic_of = list(map(_TOPIC, records))
    names = sorted(set(topic_of))
    index = {t: i for i, t in enumerate(names)}
    tix = (np.fromiter(map(index.__getitem__, topic_of), np.int64, n) if len(names) > 1
           else np.zeros(n, dtype=np.int64))
    parts, offsets, stamps = (np.fromiter(map(f, records), np.int64, n) for f in _FIELDS)
    return names, tix, parts, offsets, stamps, list(map(_KEY, records)), \
        list(map(_VALUE, records))


def pick(items: list[Any], at: np.ndarray) -> list[Any]:
    """``items`` at the indices ``at`` (at least one), in C."""
    got = operator.itemgetter(*at.tolist())(items)
    return list(got) if len(at) > 1 else [got]


def is_frame(value: bytes | None) -> bool:
    return value is not None and value[:4] == MAGIC


def _slices(data: bytes, start: int, lengths: np.ndarray) -> tuple[list[bytes | None], int]:
    sizes = np.maximum(lengths, 0).astype(np.int64)
    ends = start + np.cumsum(sizes)
    starts = (ends - sizes).tolist()
    out: list[bytes | None] = [data[a:b] for a, b in zip(starts, ends.tolist(), strict=True)]
    if (lengths < 0).any():
        for i in np.flatnonzero(lengths < 0).tolist():
            out[i] = None
    return out, int(ends[-1]) if len(ends) else start


def _check_writer_columns(writer: WriterHeader, stamps: np.ndarray,
                          positions: np.ndarray) -> None:
    """:class:`FrameError` unless a version-3 frame's positions strictly increase and no
    timestamp exceeds its watermark."""
    if len(positions) > 1 and not bool((np.diff(positions) > 0).all()):
        raise FrameError("a writer's merge positions that do not increase")
    if len(stamps) and int(stamps.max()) > writer.watermark:
        raise FrameError(f"a timestamp {int(stamps.max())} past the writer's watermark "
                         f"{writer.watermark}")


def unpack(data: bytes) -> Frame:
    """The messages of a frame; :class:`FrameError` if ``data`` is not one."""
    if len(data) < _HEAD.size:
        raise FrameError("shorter than a frame header")
    magic, version, n, t = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise FrameError("no frame magic")
    if version not in VERSIONS:
        raise FrameError(f"frame version {version}, this release reads {VERSIONS}")
    pos = _HEAD.size
    writer = None
    if version == WRITER_VERSION:
        if len(data) < pos + _WRITER.size:
            raise FrameError("truncated writer block")
        writer = WriterHeader(*_WRITER.unpack_from(data, pos))
        writer.check()
        pos += _WRITER.size
    names = []
    for _ in range(t):
        if pos + _NAME.size > len(data):
            raise FrameError("truncated topic names")
        (size,) = _NAME.unpack_from(data, pos)
        pos += _NAME.size
        if pos + size > len(data):
            raise FrameError("truncated topic names")
        try:
            names.append(data[pos:pos + size].decode())
        except UnicodeDecodeError:
            raise FrameError("a topic name is not UTF-8") from None
        pos += size
    dtypes = ["<u2", "<i4", "<i8", "<i8", "<i4", "<i4"] + (["<i8"] if version >= 2 else [])
    if n * (_PER_MESSAGE + 8 * (version >= 2)) > len(data) - pos:
        raise FrameError(f"{n} messages do not fit in {len(data)} bytes")
    arrays = []
    for dtype in dtypes:
        a = np.frombuffer(data, dtype=dtype, count=n, offset=pos)
        arrays.append(a)
        pos += a.nbytes
    index, partitions, offsets, stamps, key_len, value_len = arrays[:6]
    positions = arrays[6] if version >= 2 else None
    if n and (int(index.max()) >= t or int(key_len.min()) < -1
              or int(value_len.min()) < -1):
        raise FrameError("a topic index or a length out of range")
    body = int(np.maximum(key_len, 0).sum()) + int(np.maximum(value_len, 0).sum())
    if pos + body != len(data):
        raise FrameError(f"the lengths add up to {body} bytes, the frame has "
                         f"{len(data) - pos}")
    if writer is not None:
        _check_writer_columns(writer, stamps, arrays[6])
    keys, pos = _slices(data, pos, key_len)
    values, _ = _slices(data, pos, value_len)
    return Frame(tuple(names), index, partitions, offsets, stamps, keys, values, positions,
                 writer)


def frames(records: Sequence[Any], max_events: int,
           max_bytes: int = FRAME_BYTES) -> list[list[Any]]:
    """``records`` cut into runs of at most ``max_events`` records and (but for a single
    larger record) ``max_bytes`` bytes of keys and values, in order."""
    out: list[list[Any]] = []
    run: list[Any] = []
    size = 0
    for r in records:
        n = len(r.value or b"") + len(r.key or b"")
        if run and (len(run) >= max_events or size + n > max_bytes):
            out.append(run)
            run, size = [], 0
        run.append(r)
        size += n
    if run:
        out.append(run)
    return out
