"""What the monitors publish for the pooled CUSUM (``source.repartition.pooled``).

:class:`PoolTap` is called by the pipeline before each monitor update
(:attr:`~stream.engine.pipeline.Pipeline.pool_tap`): for every numeric column with a CUSUM
it takes the values the column's CUSUM steps with, standardised as its kernel does
(:func:`detectors.cusum_merge.standardise`), with the batch position and event time of
each; and it mutes the monitor's own CUSUM of the column (threshold ``inf``: it runs, its
statistic is exported, it never alarms), so that the pooled CUSUM is the only CUSUM
alarm of those columns and the false-alarm rate stays that of the configured budget (one
CUSUM per column, calibrated for its rate per event, over all the events).  With pooling
off the tap restores the threshold of a monitor restored from a pooled run.

A monitor (:class:`~stream.runtime.monitors.FramedRunner`) turns what the tap took in one
poll into one **pool record** (:func:`pack`): the merge positions of every message it
processed (frames version 2), with a value or not, and per pooled column the values with
their message positions, written to the one-partition pool topic before its offsets are
committed (with ``writers: several``, records of version 2: poolkeys.py).  Layout
(little-endian)::

    magic  b"\\xffSDP"   u8 version (1)
    u32    n; i64[n] the positions covered
    u16    c, the columns; then c times:
           u16 length + UTF-8 "model" 0x1F "column"; u32 m;
           i64[m] position, f64[m] standardised value, f64[m] event time (NaN: none)
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.cusum import CUSUM
from detectors.cusum_merge import standardise
from detectors.model import ModelMonitor
from stream.formats.batch import ModelBatch

MAGIC = b"\xffSDP"
VERSION = 1
_HEAD = struct.Struct("<4sBI")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
SEP = "\x1f"

#: a pooled column: (model, column)
Column = tuple[str, str]


class PoolRecordError(ValueError):
    """A record of the pool topic that does not read as one."""


@dataclass
class PoolValues:
    """One column's values of a pool record."""

    positions: np.ndarray
    values: np.ndarray
    times: np.ndarray


def pack(covered: np.ndarray, columns: dict[Column, PoolValues]) -> bytes:
    cov = np.ascontiguousarray(covered, dtype="<i8")
    return b"".join([_HEAD.pack(MAGIC, VERSION, cov.size), cov.tobytes(),
                     *pack_columns(columns)])


def pack_columns(columns: dict[Column, PoolValues]) -> list[bytes]:
    out = [_U16.pack(len(columns))]
    for (model, col), v in columns.items():
        name = f"{model}{SEP}{col}".encode()
        out += [_U16.pack(len(name)), name, _U32.pack(v.positions.size),
                np.ascontiguousarray(v.positions, dtype="<i8").tobytes(),
                np.ascontiguousarray(v.values, dtype="<f8").tobytes(),
                np.ascontiguousarray(v.times, dtype="<f8").tobytes()]
    return out


def unpack(data: bytes) -> tuple[np.ndarray, dict[Column, PoolValues]]:
    """(positions covered, column -> values) of a pool record; PoolRecordError if not one."""
    if len(data) < _HEAD.size:
        raise PoolRecordError("shorter than a pool record header")
    magic, version, n = _HEAD.unpack_from(data, 0)
    if magic != MAGIC or version != VERSION:
        raise PoolRecordError(f"not a pool record of version {VERSION}")
    pos = _HEAD.size
    if pos + 8 * n > len(data):
        raise PoolRecordError("truncated positions")
    cov = np.frombuffer(data, "<i8", n, pos).astype(np.int64)
    return cov, unpack_columns(data, pos + 8 * n, cov)


def unpack_columns(data: bytes, pos: int, cov: np.ndarray,
                   dense: bool = False) -> dict[Column, PoolValues]:
    """The columns of a pool record from byte ``pos`` on (to its end), each value's
    position among ``cov`` (``dense``: ``cov`` is a range, checked by its ends)."""
    if pos + 2 > len(data):
        raise PoolRecordError("truncated columns")
    (c,) = _U16.unpack_from(data, pos)
    pos += 2
    cols: dict[Column, PoolValues] = {}
    for _ in range(c):
        if pos + 2 > len(data):
            raise PoolRecordError("truncated column")
        (size,) = _U16.unpack_from(data, pos)
        pos += 2
        try:
            model, col = data[pos:pos + size].decode().split(SEP, 1)
        except (UnicodeDecodeError, ValueError):
            raise PoolRecordError("a column name does not read") from None
        pos += size
        if pos + 4 > len(data):
            raise PoolRecordError("truncated column")
        (m,) = _U32.unpack_from(data, pos)
        pos += 4
        if pos + 24 * m > len(data):
            raise PoolRecordError("truncated values")
        # (read-only views of the record: nothing writes into them)
        p = np.frombuffer(data, "<i8", m, pos).astype(np.int64, copy=False)
        z = np.frombuffer(data, "<f8", m, pos + 8 * m).astype(np.float64, copy=False)
        t = np.frombuffer(data, "<f8", m, pos + 16 * m).astype(np.float64, copy=False)
        pos += 24 * m
        inside = (cov.size > 0 and cov[0] <= p.min() and p.max() <= cov[-1]) if dense \
            else np.isin(p, cov).all()
        if m and (not inside or not np.isfinite(z).all()):
            raise PoolRecordError("a value outside the positions covered, or not finite")
        cols[(model, col)] = PoolValues(p, z, t)
    if pos != len(data):
        raise PoolRecordError("trailing bytes")
    return cols


def column_cusum(mon: ModelMonitor, column: str) -> CUSUM | None:
    """The CUSUM of a numeric column of a monitor, if it has one (not the surprisal CUSUM
    of a categorical column: categorical and other tests stay per monitor)."""
    cm = mon.columns.get(column)
    if cm is None or not getattr(cm, "numeric", False):
        return None
    det = cm.detectors.get("cusum")
    return det if type(det) is CUSUM else None


def pooled_columns(monitor: ModelMonitor) -> list[str]:
    return [c for c in monitor.columns if column_cusum(monitor, c) is not None]


@dataclass
class Taken:
    """What the tap took from one batch of one partition: per column, the batch position,
    standardised value and event time of each value."""

    parts: dict[Column, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = field(
        default_factory=dict)


class PoolTap:
    """See the module.  ``thresholds``: model -> column -> the threshold of a fresh
    monitor's CUSUM (what a muted one is given back with pooling off)."""

    def __init__(self, pooled: bool, thresholds: dict[str, dict[str, float]]) -> None:
        self.pooled = pooled
        self.thresholds = thresholds
        #: partition key -> what was taken from its batch (cleared by the runner)
        self.taken: dict[Any, Taken] = {}

    def __call__(self, model: str, partition: Any, mb: ModelBatch, mon: ModelMonitor) -> None:
        cols = self.thresholds.get(model, {})
        for col, h in cols.items():
            det = column_cusum(mon, col)
            if det is None:
                continue
            if not self.pooled:
                if math.isinf(det.h) and not math.isinf(h):
                    det.h = h  # restored from a pooled run: alarms again
                continue
            det.h = math.inf
            x = np.asarray(mb.columns[col], dtype=np.float64)
            ok = np.isfinite(x)
            for masks in (mb.invalid_mask, mb.missing_mask):
                m = masks.get(col)
                if m is not None and m.any():
                    ok &= ~m
            keep = _complete(mb, mon)
            if keep is not None:
                ok &= keep
            at = np.flatnonzero(ok)
            z = standardise(x[at], det.mean, det.scale, det.clip)
            if z.size != at.size:  # |x| > 1e100: the kernel skips it too
                big = np.abs(x[at]) > 1e100
                at = at[~big]
            t = mb.timestamps[at] if mb.timestamps is not None else np.full(at.size, np.nan)
            self.taken.setdefault(partition, Taken()).parts.setdefault(
                (model, col), []).append((mb.positions[at], z, np.asarray(t, np.float64)))


def _complete(mb: ModelBatch, mon: ModelMonitor) -> np.ndarray | None:
    """The events the columns see (ModelMonitor: the incomplete ones are taken out first,
    detectors/quality.py), as a mask; None: all."""
    q = mon.quality
    k = getattr(q, "min_columns", None)
    if q is None or k is None or not mb.missing_mask:
        return None
    flags = [m for m in mb.missing_mask.values()] + [m for m in mb.invalid_mask.values()]
    flags = [f for f in flags if f.any()]
    if len(flags) < k:
        return None
    counts = np.zeros(mb.n_events, dtype=np.int32)
    for f in flags:
        counts += f
    return np.asarray(counts < k)


def thresholds_of(pipeline: Any) -> dict[str, dict[str, float]]:
    """model -> pooled column -> its CUSUM's threshold in a fresh monitor."""
    out: dict[str, dict[str, float]] = {}
    for name in pipeline.baselines:
        mon = pipeline.new_monitor(name)
        out[name] = {}
        for c in pooled_columns(mon):
            det = column_cusum(mon, c)
            assert det is not None
            out[name][c] = det.h
    return out


def record_of(taken: Taken | None, merge_positions: np.ndarray) -> bytes | None:
    """The pool record of one partition's batch: ``merge_positions[i]`` the merge position
    of the batch's message ``i`` (-1: none, a version-1 frame); None if no message has
    one."""
    have = merge_positions >= 0
    if not have.any():
        return None
    cols: dict[Column, PoolValues] = {}
    for key, chunks in (taken.parts.items() if taken is not None else []):
        p = np.concatenate([c[0] for c in chunks])
        z = np.concatenate([c[1] for c in chunks])
        t = np.concatenate([c[2] for c in chunks])
        g = merge_positions[p]
        ok = g >= 0
        cols[key] = PoolValues(g[ok], z[ok], t[ok])
    return pack(merge_positions[have], cols)
