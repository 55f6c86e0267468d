"""Columnar decode of whole poll batches: typed msgspec Structs straight into numpy columns.

:class:`ColumnarDecoder` gives exactly what :class:`stream.formats.json.BatchDecoder`
gives (the same :class:`DecodedBatch`: columns, masks, counts, reasons, routing), faster,
and without letting a few bad messages slow the whole batch.

How
---
The configured paths become nested msgspec ``Struct`` types as in
:func:`stream.formats.columns.struct_schema`, but with *typed* leaves: a numeric column's
value must be a JSON number (an integer within int64, or a float within the double range)
or ``null``, a categorical column's a string of at most :data:`MAX_CATEGORY_CHARS`
characters or ``null``, and every object on a path an object or ``null``.  (The select
fields, the timestamp and the label ids keep today's untyped leaves.)  msgspec decodes
the batch with one ``map``; what it builds then needs no type check: a group of numeric
columns under one parent is one ``attrgetter`` per event and one ``np.fromiter`` (NaN
where ``null``), a group of categorical columns one ``np.fromiter`` of objects.

A message the typed decode refuses is *not* bad input by itself: it may hold a boolean in
a numeric column (an invalid value), a ``NaN`` literal, a number beyond the double range,
a long category (cut), a non-object parent (``wrong_structure``), invalid UTF-8, not
JSON at all...  Only those messages go to today's decoder (:class:`BatchDecoder`, which
decides for them exactly as it always has), and the two results are merged by position.
The rest of the batch stays on the columnar path, so 0.5 % of bad messages costs about
0.5 % more, not a batch on the careful path.

The same checks as the msgspec path of :class:`BatchDecoder` decide what msgspec may
decode at all: ``bytes`` within ``source.max_message_bytes``, valid UTF-8 (msgspec does
not check the strings it skips), no run of more digits than the stdlib reads as an int,
no deeper nesting than orjson reads.  They run over the whole batch at once; only when one
fails is each message looked at.

A configuration the typed Structs cannot express (a path that is a leaf in one place and
a parent in another, a path of two column types, a column kind other than numeric and
categorical, embedding columns), a batch that is not a list of ``bytes``, or msgspec missing: every message
goes to :class:`BatchDecoder`.

>>> from stream.config import parse_config
>>> cfg = parse_config({"models": [{"name": "m", "baseline": {"file": "b.json"},
...     "features": [{"name": "x", "path": "f.x", "type": "numeric"},
...                  {"name": "c", "path": "f.c", "type": "categorical"}]}]}, ".")
>>> dec = ColumnarDecoder(cfg)
>>> batch = dec.decode([b'{"f": {"x": 1.5, "c": "a"}}', b'{"f": {"x": true}}', b'[1]'])
>>> batch.invalid, batch.models["m"].positions.tolist()
({'not_an_object': 1}, [0, 1])
>>> batch.models["m"].columns["x"].tolist(), batch.models["m"].columns["c"].tolist()
([1.5, nan], ['a', None])
>>> dec.fallback_messages  # the boolean and the list went to BatchDecoder
2
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from operator import attrgetter
from typing import Annotated, Any, Final

import numpy as np

try:
    import msgspec
except ImportError:  # pragma: no cover - msgspec is a dependency; without it: BatchDecoder
    msgspec = None  # type: ignore[assignment]

from stream.config import ColumnConfig, Config, ModelConfig
from stream.formats.batch import (
    EMPTY_INT,
    MAX_CATEGORY_CHARS,
    DecodedBatch,
    ModelBatch,
    invalid_counts,
    merge_invalid,
)
from stream.formats.columns import (
    Group,
    ModelRouter,
    StructExtractor,
    column_plan,
    timestamps_column,
)
from stream.formats.json import BatchDecoder, _clean_bytes

__all__ = ["ColumnarDecoder", "typed_schema"]

_KINDS: Final = frozenset({"numeric", "categorical"})
#: messages checked at once for UTF-8 (joined in chunks, so that the copy stays in cache)
_CHUNK: Final = 256
#: messages of a failing chunk checked one by one (more: halved, see _halve)
_ALONE: Final = 8

if msgspec is not None:
    _NUMERIC: Any = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)] | float | None
    _CATEGORICAL: Any = Annotated[str, msgspec.Meta(max_length=MAX_CATEGORY_CHARS)] | None
    #: any JSON value as orjson reads it (as in stream.formats.columns)
    _ANY: Any = (
        Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
        | float | str | bool | None | list | dict
    )


def typed_schema(config: Config) -> tuple[type, dict[tuple[str, ...], str]] | None:
    """(Struct type of an event, attribute of each key path), with typed column leaves.

    None when the configuration cannot be expressed (see the module's docstring).
    """
    if msgspec is None:
        return None
    leaves: dict[tuple[str, ...], Any] = {}
    for model in config.models:
        if model.vectors:
            return None  # embedding columns (arrays): BatchDecoder's vector extraction
        for column in model.columns:
            if column.type not in _KINDS:
                return None
            kind = _NUMERIC if column.type == "numeric" else _CATEGORICAL
            if leaves.setdefault(column.path, kind) is not kind:
                return None  # one path, two column types
    untyped = [m.select.field for m in config.models if m.select is not None]
    untyped += [m.labels.id_path for m in config.models if m.labels is not None]
    if config.source.timestamp is not None:
        untyped.append(config.source.timestamp.path)
    for path in untyped:
        leaves[path] = _ANY
    parents = {path[:k] for path in leaves for k in range(1, len(path))}
    if () in leaves or set(leaves) & parents:
        return None
    children: dict[tuple[str, ...], dict[str, None]] = {}  # keys in configured order
    for path in leaves:
        for k in range(len(path)):
            children.setdefault(path[:k], {})[path[k]] = None
    names: dict[tuple[str, ...], str] = {}

    def build(prefix: tuple[str, ...]) -> Any:
        fields: list[tuple[str, Any, Any]] = []
        rename: dict[str, str] = {}
        for i, key in enumerate(children.get(prefix, ())):
            path = (*prefix, key)
            attr = names[path] = f"f{i}"
            rename[attr] = key
            kind = build(path) | None if path in parents else leaves[path]
            fields.append((attr, kind, None))
        # gc=False: decoded Structs hold no reference cycles, the collector can skip them
        return msgspec.defstruct(f"_Typed{len(prefix)}", fields, rename=rename, gc=False)

    return build(()), names


class ColumnarDecoder:
    """Decodes poll batches for the models of a configuration, columnar where it can.

    ``fallback_messages`` counts the messages handed to :class:`BatchDecoder`,
    ``columnar_batches`` the batches where the typed path decoded at least one message.
    """

    def __init__(self, config: Config):
        self._fallback = BatchDecoder(config)
        self._models: tuple[ModelConfig, ...] = tuple(config.models)
        self._max_bytes = int(config.source.max_message_bytes)
        self._timestamp = config.source.timestamp
        self._catch_all = any(m.select is None for m in self._models)
        self.fallback_messages = 0
        self.columnar_batches = 0
        self._decode_one: Callable[[bytes], Any] | None = None
        self._names: dict[tuple[str, ...], str] = {}
        self._plans: dict[str, tuple[Group | ColumnConfig, ...]] = {}
        self._blank: Any = None  # the event that holds a refused message's place
        schema = typed_schema(config)
        if schema is not None:
            event_type, self._names = schema
            self._decode_one = msgspec.json.Decoder(event_type).decode
            self._plans = {m.name: column_plan(m, self._names) for m in self._models}
            self._blank = self._decode_one(_blank_event(config, self._names))

    @property
    def columnar(self) -> bool:
        """Whether batches take the typed columnar path (else every one goes to BatchDecoder)."""
        return self._decode_one is not None

    def flush(self) -> dict[str, int]:
        return {}

    def decode(self, messages: Sequence[Any]) -> DecodedBatch:
        """Decode, route and extract one batch; never raises on bad input."""
        if not isinstance(messages, list | tuple):
            messages = list(messages)
        n = len(messages)
        if self._decode_one is None or not n:
            return self._fallback.decode(messages)
        try:
            structs, positions, refused = self._typed(messages)
        except Exception:  # noqa: BLE001 - anything at all: today's decoder decides
            self.fallback_messages += n
            return self._fallback.decode(messages)
        if not structs:
            self.fallback_messages += n
            return self._fallback.decode(messages)
        self.columnar_batches += 1
        if not refused:
            return self._route(n, StructExtractor(structs, self._names), positions)
        self.fallback_messages += len(refused)
        careful = self._fallback.decode([messages[i] for i in refused])
        where = np.array(refused, dtype=np.int64)
        typed = self._route(n, StructExtractor(structs, self._names), positions, careful, where)
        return _merge(typed, careful, where)

    # ----------------------------------------------------------------------
    def _typed(self, messages: Sequence[Any]) -> tuple[list[Any], np.ndarray, list[int]]:
        """(Structs, their positions, positions of the messages for BatchDecoder)."""
        decode = self._decode_one
        assert decode is not None
        n = len(messages)
        ok = self._checked(messages)
        structs: list[Any] = []
        refused: list[int] = []
        if ok is None:  # every message may go to msgspec: one run
            runs = [(0, n)]
        else:  # the runs of messages that may go to msgspec
            runs = []
            start = None
            for i, good in enumerate(ok):
                if good and start is None:
                    start = i
                elif not good:
                    refused.append(i)
                    if start is not None:
                        runs.append((start, i))
                        start = None
            if start is not None:
                runs.append((start, n))
        for start, stop in runs:
            # one iterator over the run: after a message msgspec refuses, on with the next
            rest = islice(messages, start, stop)
            decoded, failed = len(structs), len(refused)
            while True:
                try:
                    structs.extend(map(decode, rest))
                except Exception:  # noqa: BLE001 - msgspec refuses this message: BatchDecoder's
                    refused.append(start + len(structs) - decoded + len(refused) - failed)
                    continue
                break
        if not refused:
            return structs, np.arange(n, dtype=np.int64), refused
        refused.sort()
        keep = np.ones(n, dtype=bool)
        keep[refused] = False
        return structs, np.flatnonzero(keep), refused

    def _checked(self, messages: Sequence[Any]) -> list[bool] | None:
        """None when msgspec may decode every message, else whether it may decode each.

        Checked in chunks of :data:`_CHUNK` messages; a chunk that fails is halved until
        the messages that fail alone are found (a few joins, not one check per message)."""
        max_bytes = self._max_bytes
        n = len(messages)
        ok: list[bool] | None = None
        longest = max(map(len, messages)) if set(map(type, messages)) == {bytes} else -1
        if 0 <= longest <= max_bytes:
            pass
        else:
            ok = [type(m) is bytes and len(m) <= max_bytes for m in messages]
            longest = max((len(m) for m, good in zip(messages, ok, strict=True) if good),
                          default=0)
        for start in range(0, n, _CHUNK):
            stop = min(start + _CHUNK, n)
            if ok is None or all(ok[start:stop]):
                chunk = messages[start:stop]
                # separated, so that no UTF-8 sequence or digit run spans two messages
                if _clean_bytes(b"\n".join(chunk), chunk, longest):
                    continue
                if ok is None:
                    ok = [True] * n
            _halve(messages, ok, start, stop)
        return ok

    def _route(self, n: int, everything: StructExtractor, positions: np.ndarray,
               careful: DecodedBatch | None = None, where: np.ndarray | None = None,
               ) -> DecodedBatch:
        """Route and extract the typed events (no wrong structure: the types rule it out).

        With ``careful`` (BatchDecoder's batch of the refused messages, which are at
        ``where`` in the batch), a model's events from it are spliced in by position: a
        blank event holds each one's place in the extraction, then its values are set."""
        router = ModelRouter(everything, self._catch_all)
        routed = router.routed
        models: dict[str, ModelBatch] = {}
        for model in self._models:
            selected, extractor = router.subset(model.select)
            assert isinstance(extractor, StructExtractor)
            model_positions = positions if selected is None else positions[selected]
            other = None if careful is None else careful.models[model.name]
            slots = None
            if other is not None and other.n_events:
                assert where is not None
                other_positions = where[other.positions]
                slots = np.searchsorted(model_positions, other_positions) + np.arange(
                    other.n_events)
                events = list(extractor.values(()))
                for slot in slots.tolist():  # ascending: each at its place in the end
                    events.insert(slot, self._blank)
                extractor = StructExtractor(events, self._names)
                spliced = np.empty(len(events), dtype=np.int64)
                spliced[slots] = other_positions
                spliced[_others(len(events), slots)] = model_positions
                model_positions = spliced
            batch = _extract(extractor, model, model_positions, self._plans[model.name],
                             self._names)
            if self._timestamp is not None:
                batch.timestamps, batch.invalid_timestamp_mask = timestamps_column(
                    extractor.values(self._timestamp.path), extractor.n, self._timestamp.unit
                )
            if model.labels is not None:
                batch.ids = extractor.values(model.labels.id_path)
            if slots is not None:
                assert other is not None
                _splice(batch, other, slots)
            models[model.name] = batch
        bad_positions = EMPTY_INT
        bad_reasons: list[str] = []
        invalid: dict[str, int] = {}
        if routed is not None and not routed.all():
            bad_positions = positions[~routed]
            bad_reasons = ["unknown_model"] * int(bad_positions.shape[0])
            invalid = {"unknown_model": len(bad_reasons)}
        return DecodedBatch(n_messages=n, invalid=invalid, invalid_positions=bad_positions,
                            invalid_reasons=bad_reasons, models=models)


def _halve(messages: Sequence[Any], ok: list[bool], start: int, stop: int) -> None:
    """Set ``ok[i]`` False for each message of ``start:stop`` (which fail together) that
    fails :func:`_clean_bytes` alone: each half is checked joined, a failing one halved
    again, down to :data:`_ALONE` messages checked one by one.  Joined by newlines, the
    messages pass exactly when each passes alone (no UTF-8 sequence, digit run or
    bracket count spans two), so this finds the same ones as checking every message."""
    if stop - start <= _ALONE:
        for i in range(start, stop):
            if ok[i]:
                m = messages[i]
                ok[i] = _clean_bytes(m, (m,), len(m))
        return
    mid = (start + stop) // 2
    for lo, hi in ((start, mid), (mid, stop)):
        part = [messages[i] for i in range(lo, hi) if ok[i]]
        if part and not _clean_bytes(b"\n".join(part), part, max(map(len, part))):
            _halve(messages, ok, lo, hi)


# --------------------------------------------------------------------------
# extraction of typed values: numbers or None, strings or None
# --------------------------------------------------------------------------
def _extract(extractor: StructExtractor, model: ModelConfig, positions: np.ndarray,
             plan: tuple[Group | ColumnConfig, ...], names: dict[tuple[str, ...], str]
             ) -> ModelBatch:
    n = extractor.n
    results: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for step in plan:
        if isinstance(step, Group):
            # one pass per column straight into its array (no row tuples, no transpose)
            parents = extractor.values(step.parent)
            for column in step.columns:
                get = attrgetter(names[column.path])
                try:
                    results[column.name] = _column(map(get, parents), n, step.type)
                except (AttributeError, TypeError):  # a null or absent parent, a null
                    # value: from the list of values (None where missing)
                    results[column.name] = _column(extractor.values(column.path), n,
                                                   step.type)
        else:
            results[step.name] = _column(extractor.values(step.path), n, step.type)
    batch = ModelBatch(positions, {}, {}, {}, {}, {})
    for column in model.columns:  # configured order
        column_values, invalid, missing = results[column.name]
        batch.columns[column.name] = column_values
        batch.invalid_mask[column.name] = invalid
        batch.missing_mask[column.name] = missing
        batch.invalid_values[column.name] = int(np.count_nonzero(invalid))
        batch.missing_values[column.name] = int(np.count_nonzero(missing))
    return batch


def _column(values: Iterable[Any], n: int, kind: str) -> tuple[np.ndarray, np.ndarray,
                                                                np.ndarray]:
    """(values, invalid, missing) of one column from its n typed values."""
    if kind == "numeric":
        try:
            column = np.fromiter(values, dtype=np.float64, count=n)
        except TypeError:  # None among the values: NaN (from a list; else the caller's)
            if not isinstance(values, list):
                raise
            column = np.array(values, dtype=np.float64)
        # msgspec reads only numbers within the double range: NaN is a null
        missing = np.isnan(column)
        invalid = np.isinf(column)
        if invalid.any():  # pragma: no cover - msgspec refuses numbers beyond the range
            column[invalid] = np.nan
        return column, invalid, missing
    column = np.fromiter(values, dtype=object, count=n)
    missing = np.equal(column, None)  # type: ignore[call-overload]
    return column, np.zeros(n, dtype=bool), missing


# --------------------------------------------------------------------------
# merging the typed result with BatchDecoder's for the refused messages
# --------------------------------------------------------------------------
def _merge(typed: DecodedBatch, careful: DecodedBatch, where: np.ndarray) -> DecodedBatch:
    """One batch: ``typed`` (positions in the batch, the models' events of ``careful``
    spliced in already) and ``careful``'s invalid messages (positions among the refused
    messages, which are at ``where`` in the batch)."""
    positions, reasons = merge_invalid(typed.invalid_positions, typed.invalid_reasons,
                                       where[careful.invalid_positions],
                                       careful.invalid_reasons)
    return DecodedBatch(
        n_messages=typed.n_messages,
        invalid=invalid_counts(reasons),
        invalid_positions=positions,
        invalid_reasons=reasons,
        models=typed.models,
    )


def _others(m: int, slots: np.ndarray) -> np.ndarray:
    keep = np.ones(m, dtype=bool)
    keep[slots] = False
    return keep


def _splice(batch: ModelBatch, other: ModelBatch, slots: np.ndarray) -> None:
    """Set the values of ``other``'s events at ``slots`` of ``batch`` (blank events there)."""
    for name, column in batch.columns.items():
        column[slots] = other.columns[name]
        invalid, missing = batch.invalid_mask[name], batch.missing_mask[name]
        invalid[slots] = other.invalid_mask[name]
        missing[slots] = other.missing_mask[name]
        batch.invalid_values[name] = int(np.count_nonzero(invalid))
        batch.missing_values[name] = int(np.count_nonzero(missing))
    if batch.timestamps is not None and other.timestamps is not None:
        batch.timestamps[slots] = other.timestamps
    if batch.invalid_timestamp_mask is not None and other.invalid_timestamp_mask is not None:
        batch.invalid_timestamp_mask[slots] = other.invalid_timestamp_mask
    if batch.ids is not None and other.ids is not None:
        ids = batch.ids = list(batch.ids)
        for slot, value in zip(slots.tolist(), other.ids, strict=True):
            ids[slot] = value


def _blank_event(config: Config, names: dict[tuple[str, ...], str]) -> bytes:
    """JSON of an event that holds a place: every object on a path present, a number in
    each numeric column, a string in each categorical one (so that the fast paths of the
    extraction stay taken), zero as its time, null elsewhere."""
    leaves: dict[tuple[str, ...], Any] = {}
    for model in config.models:
        for column in model.columns:
            leaves[column.path] = 0.0 if column.type == "numeric" else ""
    if config.source.timestamp is not None:
        leaves[config.source.timestamp.path] = 0.0
    parents = {path[:k] for path in names for k in range(1, len(path))}
    event: dict[str, Any] = {}
    for path in names:
        node = event
        for key in path[:-1]:
            node = node.setdefault(key, {})
        if path in parents:
            node.setdefault(path[-1], {})
        else:
            node[path[-1]] = leaves.get(path)
    return msgspec.json.encode(event)
