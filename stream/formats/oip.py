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
from stream.formats.columns import Extractor, extract, select_key, select_mask, timestamps_column
from stream.formats.records import parse_messages, payloads

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
_KIND_NAMES: Final = ("request", "response")
_SIDES: Final = ("inputs", "outputs")
_NAME = itemgetter("name")
_SHAPE = itemgetter("shape")
_DATA = itemgetter("data")


class _BadTensor(Exception):
    """A configured tensor whose shape and data do not agree."""


class _Half:
    """One request or response, its tensor columns extracted."""

    __slots__ = ("env", "id", "kind", "rows", "t", "values")

    def __init__(self, kind: int, ident: Any, rows: int | None, values: dict[tuple[str, ...],
                 list[Any]], env: tuple[Any, ...], t: float) -> None:
        self.kind = kind
        self.id = ident
        self.rows = rows
        self.values = values
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
        #: which kinds carry configured columns (the other kind is not waited for)
        self._needed = tuple(bool(t) for t in self._tensors)
        if not any(self._needed):  # pragma: no cover - config validation requires columns
            self._needed = (True, False)
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
        """Decode one batch (bytes, or Kafka records with value, key, headers and topic)."""
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
        # tensor columns, per kind and tensor order
        for kind in (_REQUEST, _RESPONSE):
            idx = members[kind]
            if not idx:
                continue
            tensors = [events[j].get(_SIDES[kind]) for j in idx]
            for j, rows, cols in self._columns(kind, tensors):
                k = idx[j]
                i = int(positions[k])
                if rows is None and cols is None:
                    bad.append((i, "invalid_tensor"))
                    continue
                ident = self._ident(events[k], headers[i], keys[i])
                if ident is None and all(self._needed):
                    bad.append((i, "missing_id"))
                    continue
                env = self._envelope(events[k], headers[i], topics[i])
                halves[i] = _Half(kind, ident, rows, cols or {}, env, now)
        # the join, in input order
        pairs: list[tuple[int, _Half | None, _Half | None]] = []
        for i in sorted(halves):
            half = halves[i]
            if not all(self._needed):  # one side only: a row per half, no waiting
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
        self._expire(now, counts)
        rows_batch = self._rows(pairs, bad)
        return self._batch(n, rows_batch, bad, counts)

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
    def _ident(event: dict[str, Any], headers: dict[str, str] | None, key: Any) -> Any:
        if headers and headers.get("ce-id"):
            return headers["ce-id"]
        if key:
            return key
        ident = event.get("id")
        return ident if type(ident) is str and ident else None

    def _envelope(self, event: dict[str, Any], headers: dict[str, str] | None,
                  topic: str | None) -> tuple[Any, ...]:
        out = []
        for name in self._fields:
            if name.startswith(("ce-", "ce_")):
                value: Any = (headers or {}).get("ce-" + name[3:])
            elif name == "topic":
                value = topic
            else:
                value = event.get(name)
                if type(value) in (dict, list):
                    value = None
                if value is None and name == "model_name":
                    value = (headers or {}).get("ce-inferenceservicename") \
                        or _topic_model(topic)
            out.append(value)
        return tuple(out)

    # -- tensors ----------------------------------------------------------------------
    def _columns(self, kind: int, tensors: list[Any]) -> list[tuple[int, int | None, Any]]:
        """(index into ``tensors``, rows, path -> values) of every message of ``kind``;
        (index, None, None) for a message whose configured tensors are malformed."""
        wanted = self._tensors[kind]
        groups: dict[Any, list[int]] = {}
        out: list[tuple[int, int | None, Any]] = []
        for j, ts in enumerate(tensors):
            try:
                signature = tuple(map(_NAME, ts)) if type(ts) is list else None
            except (KeyError, TypeError):
                signature = None
            if signature is None:
                out.append((j, None, None))
                continue
            groups.setdefault(signature, []).append(j)
        for signature, idx in groups.items():
            out.extend(self._group(wanted, signature, [tensors[j] for j in idx], idx))
        return out

    def _group(self, wanted: dict[str, list[tuple[tuple[str, ...], int | None]]],
               signature: tuple[str, ...], tensors: list[list[Any]], idx: list[int],
               ) -> list[tuple[int, int | None, Any]]:
        """The messages ``idx`` whose tensors are named ``signature``, at once; one by one
        when a tensor of one of them is malformed."""
        try:
            rows, columns = _group_columns(wanted, signature, tensors)
        except _BadTensor:
            if len(idx) == 1:
                return [(idx[0], None, None)]
            out = []
            for j, ts in zip(idx, tensors, strict=True):
                out.extend(self._group(wanted, signature, [ts], [j]))
            return out
        if rows is None:  # no configured tensor: the rows come from the other half
            return [(j, _first_rows(ts), {}) for j, ts in zip(idx, tensors, strict=True)]
        ends = np.cumsum(rows).tolist()
        starts = [0, *ends[:-1]]
        paths = list(columns)
        lists = list(columns.values())
        return [(j, e - s, dict(zip(paths, [v[s:e] for v in lists], strict=True)))
                for j, s, e in zip(idx, starts, ends, strict=True)]

    # -- rows ---------------------------------------------------------------------
    def _rows(self, pairs: list[tuple[int, _Half | None, _Half | None]],
              bad: list[tuple[int, str]]) -> tuple[np.ndarray, _Rows]:
        """(positions, extractor) of the rows of the pairs completed in this batch."""
        counts: list[int] = []
        kept: list[tuple[int, _Half | None, _Half | None]] = []
        for pos, req, resp in pairs:
            r = [h.rows for h in (req, resp) if h is not None and h.rows is not None]
            if r and min(r) != max(r):
                bad.append((pos, "invalid_tensor"))
                continue
            kept.append((pos, req, resp))
            counts.append(r[0] if r else 0)
        n = int(sum(counts))
        columns: dict[tuple[str, ...], list[Any]] = {}
        for side, halves in ((_REQUEST, [p[1] for p in kept]), (_RESPONSE, [p[2] for p in kept])):
            for entries in self._tensors[side].values():
                for path, _ in entries:
                    columns[path] = list(chain.from_iterable(
                        h.values.get(path) or repeat(None, c) if h is not None
                        else repeat(None, c) for h, c in zip(halves, counts, strict=True)))
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
        subsets: dict[Any, tuple[np.ndarray | None, Extractor]] = {None: (None, everything)}
        routed = None if self._catch_all else np.zeros(n_rows, dtype=bool)
        models: dict[str, ModelBatch] = {}
        for model in self._models:
            key = select_key(model.select)
            subset = subsets.get(key)
            if subset is None:
                assert model.select is not None
                mask = select_mask(everything, model.select)
                if routed is not None:
                    routed |= mask
                sel = np.flatnonzero(mask)
                subset = (sel, everything.subset(sel.tolist()))
                subsets[key] = subset
            selected, extractor = subset
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
            invalid_reasons=[r for _, r in bad], models=models, n_rows=n_rows)


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


def _first_rows(tensors: list[Any]) -> int | None:
    """Rows of a message none of whose tensors is configured: its first tensor's ``shape[0]``."""
    try:
        rows = tensors[0]["shape"][0]
    except (IndexError, KeyError, TypeError):
        return None
    return rows if type(rows) is int and rows >= 0 else None


def _group_columns(wanted: dict[str, list[tuple[tuple[str, ...], int | None]]],
                   signature: tuple[str, ...], tensors: list[list[Any]],
                   ) -> tuple[np.ndarray | None, dict[tuple[str, ...], list[Any]]]:
    """(rows of each message, path -> values of all their rows) for messages whose tensors
    are named ``signature``; raises :class:`_BadTensor` when a configured tensor of one of
    them is malformed."""
    rows: np.ndarray | None = None
    columns: dict[tuple[str, ...], list[Any]] = {}
    for name, entries in wanted.items():
        try:
            j = signature.index(name)
        except ValueError:
            continue
        try:
            found = list(map(itemgetter(j), tensors))
            shapes = np.array(list(map(_SHAPE, found)), dtype=np.int64)
            datas = list(map(_DATA, found))
            flat = list(chain.from_iterable(datas))
            if flat and type(flat[0]) is list:  # nested per row
                flat = list(chain.from_iterable(flat))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise _BadTensor from exc
        if shapes.ndim != 2 or shapes.shape[1] not in (1, 2) or (shapes < 0).any():
            raise _BadTensor
        r = shapes[:, 0]
        widths = shapes[:, 1] if shapes.shape[1] == 2 else np.ones_like(r)
        if len(flat) != int((r * widths).sum()) or (widths != widths[0]).any():
            raise _BadTensor
        if rows is None:
            rows = r
        elif not np.array_equal(rows, r):
            raise _BadTensor
        width = int(widths[0]) if widths.shape[0] else 1
        for path, col in entries:
            if col is None:
                if width != 1:
                    raise _BadTensor
                columns[path] = flat
            elif col >= width:
                raise _BadTensor
            else:
                columns[path] = flat[col::width]
    return rows, columns
