"""Open Inference Protocol (KServe / Seldon Core 2 "v2") requests and responses into rows.

One message is a request (``{"id", "inputs": [{"name", "shape", "datatype", "data"}]}``)
or a response (``{"model_name", "id", "outputs": [...]}``) carrying a batch of rows as
named tensors.  A tensor of shape ``[n]`` or ``[n, 1]`` is one column of ``n`` rows; a
tensor of shape ``[n, k]`` is ``k`` columns (``data`` flat in row-major order, as the
protocol says, or nested per row, as several servers accept).  Column paths name them:
``inputs.<tensor>``, ``inputs.<tensor>.<column>``, ``outputs.<tensor>[.<column>]``.

Request and response are joined by id: the CloudEvents ``ce-id`` header (binary mode, as
KServe's logger writes it; ``ce_id``, the Kafka binding's spelling, too), else the Kafka
message key (Seldon Core 2), else the body's ``id``.  Which kind a message is: the
``ce-type`` header (``...request`` / ``...response``), else its topic
(``open_inference.request_topics`` / ``response_topics``, or a name ending in ``.inputs`` /
``.outputs``), else the body (``outputs`` -> response, ``inputs`` -> request).  A half
waits in a bounded buffer (``max_pending`` halves, ``timeout_s``) for the other; a half
that leaves it unjoined is counted (``unjoined_request`` / ``unjoined_response``).  When
no configured column reads one side, that side is not waited for (a model whose logger
writes requests only).  The rows of a pair are events at the position of the message that
completed the pair.

An embedding column (``type: vector``) names a request tensor of shape ``[n, dim]`` by
``inputs.<tensor>``: each row's ``dim`` values are one vector (a list per row, sliced out
of the flattened data), decoded by :func:`stream.formats.vectors.vector_column` with the
JSON arrays' malformed reasons (a tensor of another width: ``wrong_dimension`` per row).

Value rules are those of the JSON format (:mod:`stream.formats.columns`): JSON ``null``
in a tensor is a missing value, a boolean or string in a numeric column an invalid value;
a configured tensor absent from a message is a missing column.  ``select.field`` and
``source.timestamp.path`` name one field of the pair: a top-level field of the response
or else of the request (``model_name``, ``model_version``, ``id``, ...), a CloudEvents
header (``ce-time``, ``ce-source``, ``ce-inferenceservicename``, ...) or ``topic``;
``model_name`` falls back to the ``ce-inferenceservicename`` header and then to the
topic (``seldon.<namespace>.model.<model>.inputs`` -> ``<model>``).

Decoding is vectorised per batch: messages of the same kind whose tensors come in the
same order are handled together (one ``map`` per tensor and field, columns sliced out of
one flattened list); only a group holding a malformed tensor is looked at message by
message.

>>> from stream.config import parse_config
>>> cfg = parse_config({"source": {"format": "open-inference"}, "models": [{"name": "m",
...     "baseline": {"file": "b.json"},
...     "features": [{"name": "a", "path": "inputs.x.0", "type": "numeric"},
...                  {"name": "b", "path": "inputs.x.1", "type": "numeric"}],
...     "predictions": [{"name": "p", "path": "outputs.p", "type": "numeric"}]}]}, "/")
>>> dec = OipDecoder(cfg)
>>> req = b'{"id": "r1", "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]}]}'
>>> resp = b'{"id": "r1", "model_name": "m", "outputs": [{"name": "p", "shape": [2], "datatype": "FP64", "data": [0.5, 0.7]}]}'
>>> batch = dec.decode([req, resp])
>>> batch.n_events, batch.models["m"].positions.tolist()
(2, [1, 1])
>>> batch.models["m"].columns["b"].tolist(), batch.models["m"].columns["p"].tolist()
([2.0, 4.0], [0.5, 0.7])
"""

from __future__ import annotations

import gc
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, Final

import numpy as np

from stream.config import Config, ModelConfig
from stream.config.formats import OpenInferenceConfig
from stream.formats.batch import EMPTY_INT, DecodedBatch, ModelBatch
from stream.formats.columns import Extractor, ModelRouter, extract, timestamps_column
from stream.formats.records import parse_messages, payloads
from stream.formats.tensors import ROWS, first_rows, group, ranges

__all__ = ["OIP_REASONS", "OipDecoder"]

#: reasons of rejected messages this format adds to :data:`stream.formats.batch.INVALID_REASONS`
#: ``not_inference``: a JSON object that is neither a request nor a response;
#: ``invalid_tensor``: a configured tensor whose shape and data do not agree (or a pair
#: whose request and response hold different numbers of rows); ``missing_id``: no id to
#: join by; ``unjoined_request`` / ``unjoined_response``: a half that left the buffer
#: without its other half (full, timed out, replaced by a half with the same id, or the
#: end of a replay)
OIP_REASONS: Final = ("not_inference", "invalid_tensor", "missing_id", "unjoined_request",
                      "unjoined_response")
_REQUEST, _RESPONSE = 0, 1
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_KIND_NAMES: Final = ("request", "response")
_SIDES: Final = ("inputs", "outputs")
_NAME = itemgetter("name")


class _Table:
    """The rows of one kind of message of one batch (or the rows of the halves a batch left
    waiting): a list of values per configured path of that side."""

    __slots__ = ("columns",)

    def __init__(self, columns: dict[tuple[str, ...], list[Any]]) -> None:
        self.columns = columns


_NO_ROWS: Final = _Table({})


class _Half:
    """One request or response: its rows are ``table[start:start + rows]``."""

    __slots__ = ("env", "id", "kind", "rows", "src", "start", "t", "table")

    def __init__(self, kind: int, ident: Any, table: _Table, start: int, rows: int | None,
                 env: tuple[Any, ...], t: float,
                 src: tuple[str, int, int] | None = None) -> None:
        self.kind = kind
        #: the Kafka record it came from: (topic, partition, offset); None for bytes
        self.src = src
        self.id = ident
        self.table = table
        self.start = start
        #: None: unknown (none of its tensors is configured): the other half's count
        self.rows = rows
        self.env = env
        self.t = t


class _Rows(Extractor):
    """The values of the joined rows at each path (absent paths: missing)."""

    __slots__ = ()

    def __init__(self, n: int, columns: dict[tuple[str, ...], list[Any]]):
        super().__init__([])
        self.n = n
        self._cache = dict(columns)

    def values(self, path: tuple[str, ...]) -> list[Any]:
        got = self._cache.get(path)
        if got is None:
            got = self._cache[path] = [None] * self.n
        return got

    def subset(self, indices: list[int]) -> Extractor:
        return _Rows(len(indices), {p: list(map(v.__getitem__, indices))
                                    for p, v in self._cache.items() if p})

    def not_objects(self, path: tuple[str, ...]) -> np.ndarray | None:
        return None


class OipDecoder:
    """Decodes poll batches of OIP requests and responses; keeps the unjoined halves."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic):
        self._models: tuple[ModelConfig, ...] = tuple(config.models)
        self._max_bytes = int(config.source.max_message_bytes)
        self._timestamp = config.source.timestamp
        self._settings: OpenInferenceConfig = config.source.open_inference \
            or OpenInferenceConfig()
        self._clock = clock
        self._request_topics = frozenset(self._settings.request_topics)
        self._response_topics = frozenset(self._settings.response_topics)
        #: side -> tensor name -> [(path, column index or None)]
        self._tensors: tuple[dict[str, list[tuple[tuple[str, ...], int | None]]], ...] = ({}, {})
        for model in self._models:
            for column in model.columns:
                side = _SIDES.index(column.path[0])
                index = int(column.path[2]) if len(column.path) == 3 else None
                entry = self._tensors[side].setdefault(column.path[1], [])
                if (column.path, index) not in entry:
                    entry.append((column.path, index))
            for vector in model.vectors:  # embedding columns: a tensor [n, dim] (#19)
                entry = self._tensors[_SIDES.index(vector.path[0])].setdefault(
                    vector.path[1], [])
                if (vector.path, ROWS) not in entry:
                    entry.append((vector.path, ROWS))
        #: which kinds carry configured columns (the other kind is not waited for)
        self._needed = tuple(bool(t) for t in self._tensors)
        if not any(self._needed):  # pragma: no cover - config validation requires columns
            self._needed = (True, False)
        self._both = all(self._needed)
        #: the pair fields that select rules and the timestamp read (one segment each)
        fields = [m.select.field[0] for m in self._models if m.select is not None]
        if self._timestamp is not None:
            fields.append(self._timestamp.path[0])
        self._fields: tuple[str, ...] = tuple(dict.fromkeys(fields))
        self._catch_all = any(m.select is None for m in self._models)
        #: id -> the half waiting for its other half, oldest first
        self.pending: OrderedDict[Any, _Half] = OrderedDict()

    # -- the batch ------------------------------------------------------------------
    def decode(self, messages: Sequence[Any]) -> DecodedBatch:
        """Decode one batch (bytes, or Kafka records with value, key, headers and topic).

        The cyclic garbage collector is paused meanwhile: the batch's parsed messages are
        tens of thousands of short-lived, acyclic dicts and lists, and the collections
        they would trigger (each scanning every object the process holds) cost more than
        parsing them (12 against 29 µs per one-row message, measured).
        """
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._decode(messages)
        finally:
            if enabled:
                gc.enable()

    def _decode(self, messages: Sequence[Any]) -> DecodedBatch:
        if not isinstance(messages, list | tuple):
            messages = list(messages)
        n = len(messages)
        now = self._clock()
        values, headers, topics, keys = payloads(messages)
        events, positions, bad_pos, bad_reasons = parse_messages(values, self._max_bytes)
        bad: list[tuple[int, str]] = list(zip(bad_pos.tolist(), bad_reasons, strict=True))
        counts: dict[str, int] = {}
        # kind and id of each parsed message
        halves: dict[int, _Half] = {}
        members: tuple[list[int], list[int]] = ([], [])
        kinds: list[int] = []
        for i, event in zip(positions.tolist(), events, strict=True):
            kind = self._kind(event, headers[i], topics[i])
            if kind is None:
                bad.append((i, "not_inference"))
                kinds.append(-1)
                continue
            kinds.append(kind)
            if self._needed[kind]:
                members[kind].append(len(kinds) - 1)
        # the rows of each kind, in one table per kind
        pos_list = positions.tolist()
        for kind in (_REQUEST, _RESPONSE):
            idx = members[kind]
            if not idx:
                continue
            kind_events = [events[j] for j in idx]
            at = [pos_list[j] for j in idx]
            table, starts, rows = self._side(kind, [e.get(_SIDES[kind]) for e in kind_events])
            idents = self._idents(kind_events, [headers[i] for i in at], [keys[i] for i in at])
            envs = self._envelopes(kind_events, [headers[i] for i in at],
                                   [topics[i] for i in at])
            srcs = _sources([messages[i] for i in at]) if self._both else [None] * len(at)
            for i, start, r, ident, env, src in zip(at, starts, rows, idents, envs, srcs,
                                                    strict=True):
                if start < 0:
                    bad.append((i, "invalid_tensor"))
                elif ident is None and self._both:
                    bad.append((i, "missing_id"))
                else:
                    halves[i] = _Half(kind, ident, table, start, r, env, now, src)
        # the join, in input order
        pairs: list[tuple[int, _Half | None, _Half | None]] = []
        held: list[_Half] = []
        for i in sorted(halves):
            half = halves[i]
            if not self._both:  # one side only: a row per half, no waiting
                pairs.append((i, half, None) if half.kind == _REQUEST else (i, None, half))
                continue
            other = self.pending.pop(half.id, None)
            if other is not None and other.kind != half.kind:
                req, resp = (other, half) if half.kind == _RESPONSE else (half, other)
                pairs.append((i, req, resp))
                continue
            if other is not None:  # the same id again: the older half never joins
                _count(counts, other)
            self.pending[half.id] = half
            held.append(half)
        self._expire(now, counts)
        rows_batch = self._rows(pairs, bad)
        self._keep([h for h in held if self.pending.get(h.id) is h])
        return self._batch(n, rows_batch, bad, counts)

    def held_from(self) -> dict[tuple[str, int], int]:
        """Per Kafka partition, the offset of the oldest half still waiting in the buffer.

        The runner commits (and checkpoints its resume point) no further than this, so
        that after a crash or a rebalance the waiting halves are read again and still
        join (see docs/formats.md)."""
        out: dict[tuple[str, int], int] = {}
        for half in self.pending.values():
            src = half.src
            if src is not None:
                key = (src[0], src[1])
                if key not in out or src[2] < out[key]:
                    out[key] = src[2]
        return out

    def flush(self) -> dict[str, int]:
        """Count every half still waiting as unjoined and empty the buffer (end of input)."""
        counts: dict[str, int] = {}
        for half in self.pending.values():
            _count(counts, half)
        self.pending.clear()
        return counts

    def _expire(self, now: float, counts: dict[str, int]) -> None:
        pending = self.pending
        limit = self._settings.max_pending
        while len(pending) > limit:
            _count(counts, pending.popitem(last=False)[1])
        oldest = now - self._settings.timeout_s
        while pending:
            half = next(iter(pending.values()))
            if half.t >= oldest:
                break
            _count(counts, pending.popitem(last=False)[1])

    # -- one message ------------------------------------------------------------------
    def _kind(self, event: dict[str, Any], headers: dict[str, str] | None,
              topic: str | None) -> int | None:
        if headers:
            ce_type = headers.get("ce-type", "")
            if ce_type.endswith("request"):
                return _REQUEST
            if ce_type.endswith("response"):
                return _RESPONSE
        if topic is not None:
            if topic in self._request_topics or topic.endswith(".inputs"):
                return _REQUEST
            if topic in self._response_topics or topic.endswith(".outputs"):
                return _RESPONSE
        if "outputs" in event:
            return _RESPONSE
        if "inputs" in event:
            return _REQUEST
        return None

    @staticmethod
    def _idents(events: list[dict[str, Any]], headers: list[dict[str, str] | None],
                keys: list[Any]) -> list[Any]:
        """The id of each message: ``ce-id`` header, else the key, else the body's ``id``."""
        ids = list(map(dict.get, events, repeat("id")))
        if any(headers) or any(keys):
            ids = [h["ce-id"] if h and h.get("ce-id") else k if k else i
                   for h, k, i in zip(headers, keys, ids, strict=True)]
        if set(map(type, ids)) != {str}:
            ids = [i if type(i) is str and i else None for i in ids]
        return ids

    def _envelopes(self, events: list[dict[str, Any]], headers: list[dict[str, str] | None],
                   topics: list[str | None]) -> list[tuple[Any, ...]]:
        """The pair fields (:attr:`_fields`) of each message, one list per field."""
        if not self._fields:
            return [()] * len(events)
        per_field = []
        for name in self._fields:
            if name.startswith(("ce-", "ce_")):
                key = "ce-" + name[3:]
                values: list[Any] = [h.get(key) if h else None for h in headers]
            elif name == "topic":
                values = list(topics)
            else:
                values = list(map(dict.get, events, repeat(name)))
                if not set(map(type, values)) <= _SCALARS:
                    values = [None if type(v) in (dict, list) else v for v in values]
                if name == "model_name" and None in values:
                    values = [v if v is not None else
                              (h or {}).get("ce-inferenceservicename") or _topic_model(t)
                              for v, h, t in zip(values, headers, topics, strict=True)]
            per_field.append(values)
        return list(zip(*per_field, strict=True))

    # -- tensors ----------------------------------------------------------------------
    def _side(self, kind: int, tensors: list[Any]) -> tuple[_Table, list[int], list[int | None]]:
        """(table of the rows, start of each message's rows in it or -1 when a configured
        tensor of the message is malformed, its row count) of messages of ``kind``."""
        wanted = self._tensors[kind]
        paths = [p for entries in wanted.values() for p, _ in entries]
        m = len(tensors)
        starts = [-1] * m
        rows: list[int | None] = [None] * m
        groups: dict[Any, list[int]] = {}
        for j, ts in enumerate(tensors):
            try:
                if type(ts) is list:
                    # a name that is a list or an object is unhashable: the message is
                    # malformed (stays -1)
                    groups.setdefault(tuple(map(_NAME, ts)), []).append(j)
            except (KeyError, TypeError):
                pass
        parts: dict[tuple[str, ...], list[Any]] = {p: [] for p in paths}
        offset = 0
        for signature, idx in groups.items():
            for sub, r, columns in group(wanted, signature, [tensors[j] for j in idx], idx):
                if columns is None:  # malformed: stays -1
                    continue
                if r is None:  # no configured tensor: the rows of its first tensor, all missing
                    counts = [first_rows(tensors[j]) for j in sub]
                    r = np.array([c or 0 for c in counts], dtype=np.int64)
                else:
                    counts = r.tolist()
                total = int(r.sum())
                begin = (offset + np.cumsum(r) - r).tolist()
                for j, b, c in zip(sub, begin, counts, strict=True):
                    starts[j] = b
                    rows[j] = c
                for p in paths:
                    got = columns.get(p)
                    parts[p].append(got if got is not None else repeat(None, total))
                offset += total
        table = _Table({p: list(chain.from_iterable(parts[p])) for p in paths})
        return table, starts, rows

    def _keep(self, held: list[_Half]) -> None:
        """Copy the rows of the halves left waiting out of their batch's table (one gather
        per path), so that a waiting half holds its own rows, not its whole batch."""
        for h in held:
            if not h.rows:
                h.table = _NO_ROWS
        for kind in (_REQUEST, _RESPONSE):
            halves = [h for h in held if h.kind == kind and h.rows]
            if not halves:
                continue
            lens = np.array([h.rows for h in halves], dtype=np.int64)
            src = ranges(np.array([h.start for h in halves], dtype=np.int64), lens).tolist()
            tables = {id(h.table): h.table for h in halves}
            if len(tables) != 1:  # pragma: no cover - one table per kind and batch
                continue
            (table,) = tables.values()
            compact = _Table({p: list(map(col.__getitem__, src))
                              for p, col in table.columns.items()})
            for h, b in zip(halves, (np.cumsum(lens) - lens).tolist(), strict=True):
                h.table = compact
                h.start = b

    # -- rows ---------------------------------------------------------------------
    def _rows(self, pairs: list[tuple[int, _Half | None, _Half | None]],
              bad: list[tuple[int, str]]) -> tuple[np.ndarray, _Rows]:
        """(positions, extractor) of the rows of the pairs completed in this batch: per
        side, one gather per table and path."""
        counts: list[int] = []
        kept: list[tuple[int, _Half | None, _Half | None]] = []
        for pair in pairs:
            a = None if pair[1] is None else pair[1].rows
            b = None if pair[2] is None else pair[2].rows
            if a is None:
                a = b or 0
            elif b is not None and a != b:
                bad.append((pair[0], "invalid_tensor"))
                continue
            kept.append(pair)
            counts.append(a)
        n = int(sum(counts))
        dst_starts = (np.cumsum(counts, dtype=np.int64) - np.array(counts, dtype=np.int64)
                      ).tolist() if counts else []
        columns: dict[tuple[str, ...], list[Any]] = {}
        c_arr = np.array(counts, dtype=np.int64)
        within = np.arange(n) - np.repeat(np.array(dst_starts, dtype=np.int64), c_arr)
        for side in (_REQUEST, _RESPONSE):
            paths = [p for entries in self._tensors[side].values() for p, _ in entries]
            if not paths:
                continue
            # the tables the pairs' rows of this side come from, and where each begins in
            # their concatenation (then a None for the halves whose rows are missing)
            offsets: dict[int, int] = {}
            tables: list[_Table] = []
            size = 0
            starts: list[int] = []
            steps: list[int] = []
            for _, req, resp in kept:
                h = req if side == _REQUEST else resp
                if h is None or not h.rows:
                    starts.append(-1)
                    steps.append(0)
                    continue
                base = offsets.get(id(h.table))
                if base is None:
                    base = offsets[id(h.table)] = size
                    tables.append(h.table)
                    size += len(h.table.columns[paths[0]])
                starts.append(base + h.start)
                steps.append(1)
            first = np.array(starts, dtype=np.int64)
            first[first < 0] = size  # the None after the tables
            idx = (np.repeat(first, c_arr) + np.repeat(np.array(steps, dtype=np.int64), c_arr)
                   * within).tolist()
            for p in paths:
                if len(tables) == 1:
                    src = tables[0].columns[p] + [None]
                else:
                    src = list(chain.from_iterable([t.columns[p] for t in tables] + [[None]]))
                columns[p] = list(map(src.__getitem__, idx))
        for f, name in enumerate(self._fields):
            per_pair = [_field(req, resp, f) for _, req, resp in kept]
            columns[(name,)] = list(chain.from_iterable(map(repeat, per_pair, counts)))
        positions = np.repeat(np.array([p[0] for p in kept], dtype=np.int64),
                              np.array(counts, dtype=np.int64)) if kept else EMPTY_INT
        return positions, _Rows(n, columns)

    def _batch(self, n: int, rows: tuple[np.ndarray, _Rows], bad: list[tuple[int, str]],
               counts: dict[str, int]) -> DecodedBatch:
        positions, everything = rows
        n_rows = everything.n
        router = ModelRouter(everything, self._catch_all)
        routed = router.routed
        models: dict[str, ModelBatch] = {}
        for model in self._models:
            selected, extractor = router.subset(model.select)
            mpos = positions if selected is None else positions[selected]
            batch = extract(extractor, model, mpos, tuple(model.columns))
            if self._timestamp is not None:
                batch.timestamps, batch.invalid_timestamp_mask = timestamps_column(
                    extractor.values(self._timestamp.path), extractor.n, self._timestamp.unit)
            models[model.name] = batch
        if routed is not None and not routed.all():
            bad.extend((p, "unknown_model") for p in np.unique(positions[~routed]).tolist())
        bad.sort()
        for _, reason in bad:
            counts[reason] = counts.get(reason, 0) + 1
        return DecodedBatch(
            n_messages=n, invalid=counts,
            invalid_positions=np.array([p for p, _ in bad], dtype=np.int64),
            invalid_reasons=[r for _, r in bad], models=models,
            # rows of no model (rejected above as unknown_model) are not events
            n_rows=n_rows if routed is None else int(routed.sum()))


def _sources(messages: Sequence[Any]) -> list[tuple[str, int, int] | None]:
    """(topic, partition, offset) of each Kafka record; None for bytes."""
    out: list[tuple[str, int, int] | None] = []
    for m in messages:
        topic = getattr(m, "topic", None)
        part = getattr(m, "partition", None)
        off = getattr(m, "offset", None)
        out.append((topic, part, off) if isinstance(topic, str) and isinstance(part, int)
                   and isinstance(off, int) else None)
    return out


def _count(counts: dict[str, int], half: _Half) -> None:
    reason = f"unjoined_{_KIND_NAMES[half.kind]}"
    counts[reason] = counts.get(reason, 0) + 1


def _field(req: _Half | None, resp: _Half | None, f: int) -> Any:
    """Field ``f`` of a pair: the response's, else the request's."""
    value = None if resp is None else resp.env[f]
    if value is None and req is not None:
        value = req.env[f]
    return value


def _topic_model(topic: str | None) -> str | None:
    """``seldon.<namespace>.model.<model>.inputs`` or ``<model>.outputs`` -> ``<model>``."""
    if topic is None:
        return None
    for suffix in (".inputs", ".outputs"):
        if topic.endswith(suffix):
            stem = topic[: -len(suffix)]
            return stem.rsplit(".model.", 1)[-1] if ".model." in stem else stem
    return None
