"""Decode poll batches with a JSON scanner of our own: configured fields straight into numpy.

:class:`ScanDecoder` gives exactly what :class:`stream.formats.columnar.ColumnarDecoder`
(and so :class:`stream.formats.json.BatchDecoder`) gives: the same
:class:`DecodedBatch`.  It builds no Python object per event or per value:

* the batch's messages are joined into one buffer (``b"".join``, one ``np.frombuffer``);
* one numba pass (:func:`stream.formats._scan_rows.scan`) walks every message, matches
  keys against the configured key tree, writes numbers into a float64 array per numeric
  leaf and strings as codes of the batch's distinct strings;
* each distinct string is decoded once, and a categorical column is one ``np.take`` of
  those ``str`` objects by code;
* routing (``select``) compares codes and integers, not values.

A message the scanner is not sure of (see :mod:`stream.formats._scan_kernel`: not one
valid JSON object, a value of another type than its column's, a number it cannot convert
exactly, escapes in a configured string, a key given twice...) is *flagged*, and the
flagged messages alone are decoded as :class:`BatchDecoder` decodes them (the columnar
decoder's own fallback, which gives the same result), by the lean
:class:`stream.formats._scan_careful.FlaggedRows` (each row parsed once, each key path
converted once for all of them); their events are written into the kernel's arrays as if
it had read them (numbers, and categories as codes of new entries of the string table,
-1 where None), their masks set where they hold invalid values.  So a
few malformed lines cost a few row decodes, not a batch: 12-14 µs per flagged row of the
replay benchmark's stream (timed apart from the batch; half of it parsing), against 29-38
µs when ``BatchDecoder`` decoded them.

It is the decoder of ``source.format: json`` (``STREAMDRIFT_JSON_DECODER=columnar`` takes
the columnar decoder alone).  The kernel is compiled by numba on its first call and
cached next to its source (``cache=True``): about 8 CPU-seconds once on a fresh machine,
0.2 s to load afterwards.

Configurations the scanner does not serve (those the columnar decoder does not take,
labels, ``iso8601`` timestamps, a select field that is also a column or the timestamp):
every batch goes to the columnar decoder.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from detectors.column import CodedColumn
from stream.config import Config, ModelConfig
from stream.formats._scan_careful import Flagged, FlaggedRows
from stream.formats._scan_kernel import (
    NODE_CAT,
    NODE_NUM,
    NODE_OBJ,
    NODE_SEL,
    SEL_FALSE,
    SEL_INT,
    SEL_STR,
    SEL_TRUE,
    key_hash,
    key_slot_hash,
    pow10_tables,
)
from stream.formats.batch import (
    EMPTY_INT,
    DecodedBatch,
    ModelBatch,
    invalid_counts,
    merge_invalid,
)
from stream.formats.columnar import ColumnarDecoder, typed_schema

__all__ = ["ScanDecoder", "scan_plan"]

_TIME_SCALE: Final = {"s": 1.0, "ms": 1e3, "us": 1e6}
#: with more than 1 / _WHOLE_BATCH_SHARE of a batch of at least _WHOLE_BATCH_MIN messages
#: flagged, the columnar decoder decodes the whole batch instead
_WHOLE_BATCH_SHARE: Final = 4
_WHOLE_BATCH_MIN: Final = 64
_POW_HI, _POW_LO, _EXACT = pow10_tables()


class ScanPlan:
    """The configured key tree as the kernel reads it, and where each leaf goes."""

    def __init__(self, leaves: dict[tuple[str, ...], int]):
        nodes: dict[tuple[str, ...], int] = {(): 0}
        kinds = [NODE_OBJ]
        for path in leaves:
            for k in range(1, len(path) + 1):
                prefix = path[:k]
                if prefix not in nodes:
                    nodes[prefix] = len(kinds)
                    kinds.append(leaves.get(prefix, NODE_OBJ) if k == len(path) else NODE_OBJ)
        counts = {NODE_NUM: 0, NODE_CAT: 0, NODE_SEL: 0, NODE_OBJ: 0}
        slots = []
        #: leaf path -> its row in num_out / cat_code / sel_kind
        self.slot: dict[tuple[str, ...], int] = {}
        for path, node in nodes.items():
            kind = kinds[node]
            slots.append(counts[kind])
            if kind != NODE_OBJ:
                self.slot[path] = counts[kind]
            counts[kind] += 1
        self.n_num, self.n_cat, self.n_sel = counts[NODE_NUM], counts[NODE_CAT], counts[NODE_SEL]
        keys = [b""] * len(kinds)
        for path, node in nodes.items():
            if path:
                keys[node] = path[-1].encode()
        key_off = np.zeros(len(keys) + 1, dtype=np.int64)
        key_off[1:] = np.cumsum([len(k) for k in keys])
        size = 16
        while size < 4 * len(kinds):
            size *= 2
        ktab_node = np.full(size, -1, dtype=np.int32)
        ktab_hash = np.zeros(size, dtype=np.uint64)
        ktab_child = np.zeros(size, dtype=np.int32)
        for path, node in nodes.items():
            if not path:
                continue
            parent = nodes[path[:-1]]
            h = key_hash(keys[node])
            i = key_slot_hash(h, parent) & (size - 1)
            while ktab_node[i] >= 0:
                i = (i + 1) & (size - 1)
            ktab_node[i], ktab_hash[i], ktab_child[i] = parent, h, node
        self.tree = (np.array(kinds, dtype=np.int8), np.array(slots, dtype=np.int32),
                     np.frombuffer(b"".join(keys) or b"\0", dtype=np.uint8).copy(), key_off,
                     ktab_node, ktab_hash, ktab_child)


def scan_plan(config: Config) -> ScanPlan | None:
    """The kernel's plan for ``config``, or None when the scanner does not serve it."""
    if typed_schema(config) is None:
        return None
    leaves: dict[tuple[str, ...], int] = {}
    for model in config.models:
        if model.labels is not None or model.vectors:
            return None
        for column in model.columns:
            kind = NODE_NUM if column.type == "numeric" else NODE_CAT
            if leaves.setdefault(column.path, kind) != kind:
                return None
    timestamp = config.source.timestamp
    if timestamp is not None:
        if timestamp.unit not in _TIME_SCALE:
            return None
        if leaves.setdefault(timestamp.path, NODE_NUM) != NODE_NUM:
            return None
    selects = {m.select.field for m in config.models if m.select is not None}
    for model in config.models:
        if model.select is not None:
            equals = model.select.equals
            if type(equals) is int and not -(10**18) < equals < 10**18:
                return None  # the kernel reads integers of at most 18 digits
    for path in selects:
        if path in leaves:
            return None
        leaves[path] = NODE_SEL
    return ScanPlan(leaves)


#: the batch buffer is kept for the next batch up to this size (bytes)
_KEEP_JOINED = 64 << 20


class ScanDecoder:
    """Decodes poll batches with the scanner, the columnar decoder for the rest.

    ``flagged_messages`` counts the messages the scanner left to the columnar decoder,
    ``scanned_batches`` the batches it decoded (flagged messages aside)."""

    def __init__(self, config: Config):
        self._columnar = ColumnarDecoder(config)
        self._models: tuple[ModelConfig, ...] = tuple(config.models)
        self._max_bytes = int(config.source.max_message_bytes)
        self._timestamp = config.source.timestamp
        self._catch_all = any(m.select is None for m in self._models)
        self._plan = scan_plan(config)
        #: the flagged rows' decoder: as BatchDecoder decides (to which the columnar
        #: decoder would hand most of them anyway), by key path
        self._careful = FlaggedRows(config)
        if self._plan is not None:
            slot = self._plan.slot
            self._num_slots = np.array([slot[p] for p in self._careful.num_paths],
                                       dtype=np.intp)
            self._cat_slots = np.array([slot[p] for p in self._careful.cat_paths],
                                       dtype=np.intp)
            #: leaf path -> its row in the careful decoder's num / cat blocks
            self._careful_row = {p: i for paths in (self._careful.num_paths,
                                                    self._careful.cat_paths)
                                 for i, p in enumerate(paths)}
        self.flagged_messages = 0
        self.scanned_batches = 0
        self._joined = io.BytesIO()  # see _scan

    @property
    def scanning(self) -> bool:
        """Whether batches go through the scanner (else all to the columnar decoder)."""
        return self._plan is not None

    def flush(self) -> dict[str, int]:
        return {}

    def decode(self, messages: Sequence[Any]) -> DecodedBatch:
        """Decode, route and extract one batch; never raises on bad input."""
        if not isinstance(messages, list | tuple):
            messages = list(messages)
        n = len(messages)
        plan = self._plan
        if plan is None or not n:
            return self._columnar.decode(messages)
        try:
            return self._scan(messages, plan)
        except Exception:  # noqa: BLE001 - anything at all: the columnar decoder decides
            return self._columnar.decode(messages)

    # ----------------------------------------------------------------------
    def _scan(self, messages: Sequence[Any], plan: ScanPlan) -> DecodedBatch:
        from stream.formats._scan_rows import scan  # compiled (or loaded from cache) once

        n = len(messages)
        parts = messages
        flag = None
        if set(map(type, messages)) != {bytes}:  # bytearrays, memoryviews, tombstones...:
            parts = [m if type(m) is bytes else b"" for m in messages]  # the columnar
            flag = np.fromiter((type(m) is not bytes for m in messages), dtype=bool,
                               count=n)  # decoder's (the flagged rows read the messages)
        sizes = np.fromiter(map(len, parts), dtype=np.int64, count=n)
        flag = sizes > self._max_bytes if flag is None else flag | (sizes > self._max_bytes)
        ends = np.cumsum(sizes)
        starts = ends - sizes
        num_out = np.full((plan.n_num, n), np.nan)
        cat_code = np.full((plan.n_cat, n), -1, dtype=np.int32)
        sel_kind = np.zeros((plan.n_sel, n), dtype=np.int8)
        sel_val = np.zeros((plan.n_sel, n), dtype=np.int64)
        # the batch's bytes, end to end, in a buffer kept from batch to batch: a new one
        # per batch (b"".join) was mapped afresh each time, ~750 page faults per batch of
        # 5,000 events (0.3-0.4 us per event, more than joining them costs)
        joined = self._joined
        joined.seek(0)
        joined.writelines(parts)
        if not joined.tell():
            joined.write(b" ")  # (only empty messages: nothing is read)
        size = joined.tell()
        view = joined.getbuffer()
        try:
            buf = np.frombuffer(view, dtype=np.uint8, count=size)
            dstart, dend, arena = scan(buf, starts, ends, flag, plan.tree, num_out, cat_code,
                                       sel_kind, sel_val, _POW_HI, _POW_LO, _EXACT)
            del buf
            # each distinct string once; code -1 (missing) takes the last entry, None;
            # the strings unescaped by the kernel are in its arena, after the batch's bytes
            table = np.empty(len(dstart) + 1, dtype=object)
            table[:-1] = [str(view[s:e], "utf-8") if e <= size else
                          arena[s - size:e - size].tobytes().decode()
                          for s, e in zip(dstart.tolist(), dend.tolist(), strict=True)]
        finally:
            view.release()
            if size > _KEEP_JOINED:  # a huge batch's buffer is not kept
                self._joined = io.BytesIO()
        flagged = np.flatnonzero(flag)
        careful = None
        entries = table
        if flagged.shape[0]:
            self.flagged_messages += int(flagged.shape[0])
            if n >= _WHOLE_BATCH_MIN and flagged.shape[0] * _WHOLE_BATCH_SHARE > n:
                # a stream the kernel does not read (e.g. integers in a categorical column
                # on every row): one columnar decode of the batch costs less than a
                # careful decode of each flagged row
                return self._columnar.decode(messages)
            careful = self._careful.decode([messages[i] for i in flagged.tolist()])
            entries = self._splice(careful, flagged, num_out, cat_code, table)
        self.scanned_batches += 1
        ok = ~flag
        selected: dict[Any, np.ndarray] = {}
        routed = None if self._catch_all else np.zeros(n, dtype=bool)
        models: dict[str, ModelBatch] = {}
        for model in self._models:
            mask = ok
            if model.select is not None:
                key = (model.select.field, type(model.select.equals), model.select.equals)
                mask = selected.get(key)  # type: ignore[assignment]
                if mask is None:
                    mask = selected[key] = ok & _select(model.select.field, model.select.equals,
                                                        plan, sel_kind, sel_val, table)
                    if routed is not None:
                        routed |= mask
            models[model.name] = self._model(model, plan, mask, num_out, cat_code, entries,
                                             careful, flagged)
        return _batch(n, routed, ok, careful, flagged, models)

    def _splice(self, careful: Flagged, flagged: np.ndarray, num_out: np.ndarray,
                cat_code: np.ndarray, table: np.ndarray) -> np.ndarray:
        """Write the flagged rows' events into the kernel's arrays, as if it had read them:
        their numbers (NaN where missing or invalid), their categories as codes of new
        entries of the table (-1 where None); the table with those entries."""
        at = flagged[careful.positions]
        if not at.shape[0]:
            return table
        num_out[self._num_slots[:, None], at] = careful.num
        cat = careful.cat
        base = table.shape[0] - 1
        codes = np.arange(base, base + cat.size, dtype=np.int32).reshape(cat.shape)
        codes[careful.cat_missing | careful.cat_invalid] = -1
        cat_code[self._cat_slots[:, None], at] = codes
        return np.concatenate([table[:-1], cat.ravel(), table[-1:]])

    def _model(self, model: ModelConfig, plan: ScanPlan, mask: np.ndarray,
               num_out: np.ndarray, cat_code: np.ndarray, entries: np.ndarray,
               careful: Flagged | None, flagged: np.ndarray) -> ModelBatch:
        take = None if careful is None else careful.takes[model.name]
        bad_num: set[int] = set()
        bad_cat: set[int] = set()
        if take is not None and take.shape[0]:
            assert careful is not None
            at = flagged[careful.positions[take]]
            mask = mask.copy()
            mask[at] = True
            rows = np.flatnonzero(mask)
            slots = np.searchsorted(rows, at)
            # the leaves holding an invalid value in this model's flagged events: only
            # there do the masks differ from what the spliced values tell
            bad_num = set(np.flatnonzero(careful.num_invalid[:, take].any(axis=1)).tolist())
            bad_cat = set(np.flatnonzero(careful.cat_invalid[:, take].any(axis=1)).tolist())
        else:
            take = None
            rows = np.flatnonzero(mask)
        m = int(rows.shape[0])
        batch = ModelBatch(rows, {}, {}, {}, {}, {})
        for column in model.columns:
            slot = plan.slot[column.path]
            if column.type == "numeric":
                values = num_out[slot][rows]
                missing = np.isnan(values)
            else:
                codes = cat_code[slot][rows]
                missing = codes < 0
                values = entries[codes]
                batch.coded[column.name] = CodedColumn(values, codes, entries)
            invalid = np.zeros(m, dtype=bool)
            if take is not None:
                assert careful is not None
                row = self._careful_row[column.path]
                if column.type == "numeric" and row in bad_num:
                    invalid[slots] = careful.num_invalid[row, take]
                    missing[slots] = careful.num_missing[row, take]
                elif column.type != "numeric" and row in bad_cat:
                    invalid[slots] = careful.cat_invalid[row, take]
                    missing[slots] = careful.cat_missing[row, take]
            batch.columns[column.name] = values
            batch.invalid_mask[column.name] = invalid
            batch.missing_mask[column.name] = missing
            batch.invalid_values[column.name] = int(np.count_nonzero(invalid))
            batch.missing_values[column.name] = int(np.count_nonzero(missing))
        timestamp = self._timestamp
        if timestamp is not None:
            seconds = num_out[plan.slot[timestamp.path]][rows]
            scale = _TIME_SCALE[timestamp.unit]
            if scale != 1.0:
                seconds = seconds / scale
            bad = np.zeros(m, dtype=bool)
            if take is not None:
                assert careful is not None and careful.stamps is not None
                seconds[slots] = careful.stamps[0][take]
                bad[slots] = careful.stamps[1][take]
            batch.timestamps, batch.invalid_timestamp_mask = seconds, bad
        return batch


def _select(field: tuple[str, ...], equals: Any, plan: ScanPlan, sel_kind: np.ndarray,
            sel_val: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Rows whose value at ``field`` equals ``equals`` (type-exact but for strings)."""
    slot = plan.slot[field]
    kinds = sel_kind[slot]
    if type(equals) is bool:
        return kinds == (SEL_TRUE if equals else SEL_FALSE)
    if type(equals) is int:
        return (kinds == SEL_INT) & (sel_val[slot] == equals)
    codes = [k for k, s in enumerate(table[:-1].tolist()) if s == equals]
    if not codes:
        return np.zeros(kinds.shape[0], dtype=bool)
    return (kinds == SEL_STR) & np.isin(sel_val[slot], codes)


def _batch(n: int, routed: np.ndarray | None, ok: np.ndarray, careful: Flagged | None,
           flagged: np.ndarray, models: dict[str, ModelBatch]) -> DecodedBatch:
    """The batch's rejected messages: unknown models among the scanned ones, and the
    flagged ones' verdicts."""
    positions = EMPTY_INT
    reasons: list[str] = []
    if routed is not None:
        unknown = np.flatnonzero(ok & ~routed)
        if unknown.shape[0]:
            positions, reasons = unknown, ["unknown_model"] * int(unknown.shape[0])
    if careful is not None and careful.invalid_reasons:
        positions, reasons = merge_invalid(positions, reasons,
                                           flagged[careful.invalid_positions],
                                           careful.invalid_reasons)
    return DecodedBatch(n_messages=n, invalid=invalid_counts(reasons),
                        invalid_positions=positions, invalid_reasons=reasons, models=models)
