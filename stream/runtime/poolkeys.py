"""Pool records of version 2: the pooled CUSUM with several first-stage writers (issue 14).

With ``writers: several`` (writermerge.py) the monitors have no one dense merge position;
per internal partition they have the sequence of messages given to the pipeline
(mergerun.py *delivered*, checkpointed with the partition's state) and each message's
key in the writers' total order.  Per poll and internal partition a monitor
(:class:`~stream.runtime.monitors.FramedRunner`) publishes one record (:func:`pack`) of
the messages ``start .. start + n - 1`` of that sequence: their keys, the partition's
**promise** after them (:func:`promise_of`), and per pooled column the values with the
index of their message; a partition whose promise moved with no message (a heartbeat
frame) publishes a record of no message.  The pool member folds them with
:class:`detectors.cusum_keyed.KeyedPoolMerge`.  Layout (little-endian)::

    magic  b"\\xffSDP"   u8 version (2)
    u32    internal partition; i64 epoch; i64 start; u32 n; i64[4n] keys (row by row:
           timestamp, generation, writer index, writer position)
    u8     1 if a promise follows; i64[4] promise (the same layout)
    u16    c, the columns; then as version 1 (pooltap.py), each value's position being
           its message's index in the partition's sequence
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.runtime.pooltap import (
    MAGIC,
    Column,
    PoolRecordError,
    PoolValues,
    Taken,
    pack_columns,
    unpack_columns,
)
from stream.runtime.writermerge import WriterMerge

VERSION = 2
_HEAD = struct.Struct("<4sBIqqI")
_PROMISE = struct.Struct("<Bqqqq")
#: a key's largest field (the promise of a watermark bound: below every later key)
TOP = 2**63 - 1
Key = tuple[int, int, int, int]


@dataclass
class KeyedRecord:
    partition: int
    epoch: int
    start: int
    keys: np.ndarray
    promise: Key | None
    columns: dict[Column, PoolValues]


def version_of(data: bytes | None) -> int | None:
    """The version of a pool record (None: not one)."""
    if not data or len(data) < 5 or data[:4] != MAGIC:
        return None
    return int(data[4])


def pack(rec: KeyedRecord) -> bytes:
    keys = np.ascontiguousarray(rec.keys, dtype="<i8").reshape(-1, 4)
    out = [_HEAD.pack(MAGIC, VERSION, rec.partition, rec.epoch, rec.start, len(keys)),
           keys.tobytes(),
           _PROMISE.pack(1, *rec.promise) if rec.promise is not None
           else _PROMISE.pack(0, 0, 0, 0, 0), *pack_columns(rec.columns)]
    return b"".join(out)


def unpack(data: bytes) -> KeyedRecord:
    """A pool record of version 2; PoolRecordError if not one."""
    if len(data) < _HEAD.size:
        raise PoolRecordError("shorter than a pool record header")
    magic, version, partition, epoch, start, n = _HEAD.unpack_from(data, 0)
    if magic != MAGIC or version != VERSION:
        raise PoolRecordError(f"not a pool record of version {VERSION}")
    pos = _HEAD.size
    if pos + 32 * n + _PROMISE.size > len(data):
        raise PoolRecordError("truncated keys")
    keys = np.frombuffer(data, "<i8", 4 * n, pos).astype(np.int64, copy=False).reshape(n, 4)
    pos += 32 * n
    has, *promise = _PROMISE.unpack_from(data, pos)
    pos += _PROMISE.size
    cols = unpack_columns(data, pos, np.arange(start, start + n, dtype=np.int64), dense=True)
    return KeyedRecord(int(partition), int(epoch), int(start), keys,
                       tuple(promise) if has else None, cols)  # type: ignore[arg-type]


def promise_of(merge: WriterMerge) -> Key | None:
    """What ``merge`` promises of the messages it releases later, unless late: a key above
    this.  Its frontier, or, when every writer of the current generation not left out
    has a watermark, just below the smallest (a message of the generation comes with a
    timestamp at or above it, one of an older generation still buffered has one at or
    above it too: every buffered message below it, of any generation, was released at
    the last release); None: neither yet."""
    out = merge.frontier
    g = merge.generation
    if g is not None and merge.writers:
        heard = [i for i in range(merge.writers) if i not in merge.left_out]
        marks = [merge.watermarks[i] for i in heard if i in merge.watermarks]
        if marks and len(marks) == len(heard):
            bound: Key = (min(marks) - 1, TOP, TOP, TOP)
            out = bound if out is None or bound > out else out
    return out


def record_of(taken: Taken | None, partition: int, epoch: int, start: int,
              keys: np.ndarray, promise: Key | None) -> bytes:
    """The version-2 record of one partition's batch: message ``i`` of the batch is
    message ``start + i`` of the partition's sequence, with key ``keys[i]``."""
    cols: dict[Column, PoolValues] = {}
    for key, chunks in (taken.parts.items() if taken is not None else []):
        p = np.concatenate([c[0] for c in chunks])
        cols[key] = PoolValues(p + start, np.concatenate([c[1] for c in chunks]),
                               np.concatenate([c[2] for c in chunks]))
    return pack(KeyedRecord(partition, epoch, start, keys, promise, cols))


def keyed_values(rec: KeyedRecord, columns: Any) -> dict[Column, tuple[np.ndarray, np.ndarray]]:
    """column -> (message index, standardised value) of the columns pooled."""
    return {k: (v.positions, v.values) for k, v in rec.columns.items() if k in columns}
