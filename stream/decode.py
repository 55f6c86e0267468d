"""Decode a batch of raw messages into per-model numpy columns, vectorised.

The only per-event Python work is one ``orjson.loads`` per message (done by
``map`` when the whole batch parses to objects).  Routing and column
extraction then run as C-level iterations over the batch: one
``map(itemgetter(key), parents)`` per path segment (shared prefixes are
walked once), and for the columns that share a parent and a type one
``map(itemgetter(k1, ..., kn), parents)``, one ``set(map(type, ...))`` type
check and one ``np.fromiter`` for all of them.  Slower, careful code runs only
for the batch, the path or the column where the fast path met bad input:

* a message that is oversized, not JSON, or not an object: the batch is
  parsed again message by message (orjson first, then the stdlib ``json``,
  which accepts the ``NaN``/``Infinity`` literals that Python writes);
* an absent key: ``map(dict.get, ...)`` for that path; a non-object parent:
  that one path segment is walked with a list comprehension;
* a group holding an absent key, a null or a value of another type: its
  columns are converted one by one; a numeric column holding something other
  than numbers and nulls: masked conversion of that column (still
  vectorised); a categorical column holding something other than strings and
  nulls: a per-value conversion of that column.

Bad input never raises out of :meth:`BatchDecoder.decode`.

With :mod:`msgspec` installed, the events need not become dicts at all: each
message is decoded by a ``msgspec.json.Decoder`` into ``Struct`` types built
once from the configured paths (every path of every model's columns and select
rule, and the timestamp path: a nested ``Struct`` per object on a path, the
leaves typed as any JSON value, every other key skipped unbuilt), and the
columns are read with ``operator.attrgetter`` the same way.  The result is
exactly that of the ``orjson`` path, so msgspec decodes only what it can vouch
for: ``bytes`` no longer than the limit, valid UTF-8 (msgspec does not check
the strings it skips), no run of more digits than the stdlib reads as an int,
no deeper nesting than orjson reads, and within those a message whose values
msgspec reads as orjson does (an integer outside the int64 range, a ``NaN``
literal or a non-object parent such as ``"features": 3`` fails the typed
decode).  The batch is checked at once and decoded with one ``map``; only
when that fails is each message looked at, and one msgspec cannot take is
parsed as the ``orjson`` path parses it: rejected the same way, or an event
turned into a ``Struct`` holding the same values.  A configuration msgspec
cannot express (a path that is a leaf in one place and the parent of another
path elsewhere) never uses msgspec.

Value rules
-----------
numeric columns
    ``float64``; ``NaN`` where *missing* (absent key, non-object parent, JSON
    ``null``).  Booleans, strings, lists, objects, ``±Infinity`` and ``NaN``
    literals are *invalid*: ``NaN`` in the column, ``True`` in ``invalid_mask``.
categorical columns
    ``object`` arrays of ``str`` (cut to :data:`MAX_CATEGORY_CHARS`), ``None``
    where missing or invalid.  Integers become ``"3"``, booleans
    ``"true"``/``"false"``, floats ``repr(x)``; lists, objects and non-finite
    numbers are invalid.  (orjson reads integers beyond 64 bits as floats, so
    such a category reads ``"1.8446744073709552e+19"``.)
event time
    with ``source.timestamp`` configured, ``float64`` seconds since the epoch
    (``NaN`` where missing or unparseable); ISO 8601 strings without a zone
    are UTC.

>>> from stream.config import parse_config
>>> cfg = parse_config({"models": [{"name": "m", "baseline": {"file": "b.json"},
...     "features": [{"name": "x", "path": "f.x", "type": "numeric"},
...                  {"name": "c", "path": "f.c", "type": "categorical"}]}]}, ".")
>>> batch = BatchDecoder(cfg).decode([b'{"f": {"x": 1.5, "c": "a"}}', b'{"f": {"x": true}}', b'[1]'])
>>> batch.invalid, batch.models["m"].positions.tolist()
({'not_an_object': 1}, [0, 1])
>>> batch.models["m"].columns["x"].tolist(), batch.models["m"].columns["c"].tolist()
([1.5, nan], ['a', None])
>>> batch.models["m"].invalid_values, batch.models["m"].missing_values
({'x': 1, 'c': 0}, {'x': 0, 'c': 1})
"""

from __future__ import annotations

import json
import math
import operator
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, islice, repeat
from operator import attrgetter, itemgetter
from typing import Annotated, Any, Final

import numpy as np
import orjson

try:
    import msgspec
except ImportError:  # pragma: no cover - msgspec is a dependency; without it: orjson only
    msgspec = None  # type: ignore[assignment]

from stream.config import ColumnConfig, Config, ModelConfig, SelectConfig, TimestampConfig

__all__ = [
    "INVALID_REASONS",
    "MAX_CATEGORY_CHARS",
    "BatchDecoder",
    "DecodedBatch",
    "ModelBatch",
    "extract_columns",
    "select_events",
]

#: Event-level reasons for rejecting a message (the ``reason`` metric label).
INVALID_REASONS: Final = ("invalid_json", "not_an_object", "oversized", "unknown_model")
#: Category strings are cut to this many characters.
MAX_CATEGORY_CHARS: Final = 200

_NONE_TYPE: Final = type(None)
_NUMBER_TYPES: Final = frozenset({int, float})
_NUMBER_OR_NONE: Final = frozenset({int, float, _NONE_TYPE})
_STR_OR_NONE: Final = frozenset({str, _NONE_TYPE})
_TIME_SCALE: Final = {"s": 1.0, "ms": 1e3, "us": 1e6}
_EMPTY_INT: Final = np.empty(0, dtype=np.int64)
_EMPTY_INT.flags.writeable = False
_is = operator.is_
_loads = orjson.loads
#: orjson reads JSON nested this deep, no deeper (msgspec: below the recursion limit)
_ORJSON_MAX_DEPTH: Final = 1024
#: ASCII digits -> "0", every other byte -> " " (a long digit run becomes a run of "0")
_DIGIT_RUNS: Final = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))


class _Invalid:
    def __repr__(self) -> str:
        return "<invalid>"


_INVALID: Final = _Invalid()


# --------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------
@dataclass(slots=True)
class ModelBatch:
    """The events of one batch that belong to one model, as columns.

    Every array is parallel to ``positions``.  The dicts have one entry per
    configured column (features then predictions), zero counts included.
    """

    #: int64 positions of the model's events in the input batch, ascending
    positions: np.ndarray
    #: column name -> float64 (numeric) or object array of str/None (categorical)
    columns: dict[str, np.ndarray]
    #: column name -> number of invalid values (wrong type, non-finite)
    invalid_values: dict[str, int]
    #: column name -> number of missing values (absent key, null, non-object parent)
    missing_values: dict[str, int]
    #: column name -> bool mask of invalid values
    invalid_mask: dict[str, np.ndarray]
    #: column name -> bool mask of missing values
    missing_mask: dict[str, np.ndarray] = field(default_factory=dict)
    #: float64 event time in seconds since the epoch (NaN where unknown), or None
    #: when ``source.timestamp`` is not configured
    timestamps: np.ndarray | None = None

    @property
    def n_events(self) -> int:
        return int(self.positions.shape[0])


@dataclass(slots=True)
class DecodedBatch:
    n_messages: int
    #: reason -> count of rejected messages (non-zero counts only)
    invalid: dict[str, int]
    #: int64 positions of rejected messages, ascending
    invalid_positions: np.ndarray
    #: reason of each rejected message, parallel to ``invalid_positions``
    invalid_reasons: list[str]
    #: model name -> its events (every configured model has an entry)
    models: dict[str, ModelBatch]

    @property
    def n_valid(self) -> int:
        """Messages routed to at least one model."""
        return self.n_messages - len(self.invalid_reasons)


# --------------------------------------------------------------------------
# the decoder
# --------------------------------------------------------------------------
class BatchDecoder:
    """Decodes poll batches for the models of a configuration."""

    def __init__(self, config: Config, *, use_msgspec: bool = True):
        self._models: tuple[ModelConfig, ...] = tuple(config.models)
        self._max_bytes: int = int(config.source.max_message_bytes)
        self._timestamp: TimestampConfig | None = config.source.timestamp
        self._catch_all = any(m.select is None for m in self._models)
        self._plans = {m.name: _plan(m) for m in self._models}
        #: batches decoded by the msgspec path, at once or message by message (the
        #: others, empty batches included, took the orjson path)
        self.msgspec_batches = 0
        self._struct_decode: Callable[[bytes], Any] | None = None
        self._struct_from_dict: Callable[[dict[str, Any]], Any] = _no_struct
        self._struct_names: dict[tuple[str, ...], str] = {}
        self._struct_plans: dict[str, tuple[_Group | ColumnConfig, ...]] = {}
        if use_msgspec and msgspec is not None:
            paths = [c.path for m in self._models for c in m.columns]
            paths += [m.select.field for m in self._models if m.select is not None]
            if self._timestamp is not None:
                paths.append(self._timestamp.path)
            schema = _struct_schema(paths)
            if schema is not None:
                event_type, self._struct_from_dict, self._struct_names = schema
                self._struct_decode = msgspec.json.Decoder(event_type).decode
                self._struct_plans = {m.name: _plan(m, self._struct_names) for m in self._models}

    @property
    def uses_msgspec(self) -> bool:
        """Whether clean batches take the msgspec path (msgspec installed, paths expressible)."""
        return self._struct_decode is not None

    def decode(self, messages: Sequence[bytes]) -> DecodedBatch:
        """Decode, route and extract one batch; never raises on bad input."""
        if not isinstance(messages, list | tuple):
            messages = list(messages)
        n = len(messages)
        decoded = self._decode_structs(messages) if self._struct_decode is not None else None
        everything: _Extractor
        if decoded is not None:
            structs, positions, bad_positions, bad_reasons = decoded
            n_events = len(structs)
            everything = _StructExtractor(structs, self._struct_names)
            plans = self._struct_plans
        else:
            events, positions, bad_positions, bad_reasons = self._parse(messages)
            n_events = len(events)
            everything = _Extractor(events)
            plans = self._plans

        subsets: dict[Any, tuple[np.ndarray | None, _Extractor]] = {None: (None, everything)}
        routed = None if self._catch_all else np.zeros(n_events, dtype=bool)
        models: dict[str, ModelBatch] = {}
        for model in self._models:
            key = _select_key(model.select)
            subset = subsets.get(key)
            if subset is None:
                assert model.select is not None
                mask = _select_mask(everything, model.select)
                if routed is not None:
                    routed |= mask
                idx = np.flatnonzero(mask)
                if idx.shape[0] == n_events:
                    subset = (None, everything)
                else:
                    subset = (idx, everything.subset(idx.tolist()))
                subsets[key] = subset
            selected, extractor = subset
            model_positions = positions if selected is None else positions[selected]
            batch = _extract(extractor, model, model_positions, plans[model.name])
            if self._timestamp is not None:
                batch.timestamps = _timestamps(
                    extractor.values(self._timestamp.path), extractor.n, self._timestamp.unit
                )
            models[model.name] = batch

        if routed is not None and not routed.all():
            unknown = positions[~routed]
            bad_positions = np.concatenate([bad_positions, unknown])
            bad_reasons = bad_reasons + ["unknown_model"] * int(unknown.shape[0])
            order = np.argsort(bad_positions, kind="stable")
            bad_positions = bad_positions[order]
            bad_reasons = [bad_reasons[i] for i in order.tolist()]

        counts: dict[str, int] = {}
        for reason in bad_reasons:
            counts[reason] = counts.get(reason, 0) + 1
        invalid: dict[str, int] = {r: counts[r] for r in INVALID_REASONS if r in counts}
        return DecodedBatch(
            n_messages=n,
            invalid=invalid,
            invalid_positions=bad_positions,
            invalid_reasons=bad_reasons,
            models=models,
        )

    def _decode_structs(
        self, messages: Sequence[Any]
    ) -> tuple[list[Any], np.ndarray, np.ndarray, list[str]] | None:
        """(Structs, their positions, rejected positions, their reasons), or None.

        A message goes to msgspec only when it is ``bytes`` no longer than the
        limit, valid UTF-8 (msgspec does not check the strings it skips),
        holds no digit run longer than the stdlib's int limit (msgspec skips
        such an integer, the stdlib fallback of the orjson path rejects it)
        and nests no deeper than orjson reads.  The batch is checked and
        decoded at once; only when that fails is each message looked at
        (:meth:`_decode_structs_carefully`).  None (the orjson path) for an
        empty batch, and should anything here raise.
        """
        decode = self._struct_decode
        assert decode is not None
        n = len(messages)
        if not n:
            return None
        structs: list[Any] = []
        clean = False  # every message passed _clean_bytes
        try:
            if set(map(type, messages)) == {bytes}:
                longest = max(map(len, messages))
                if longest <= self._max_bytes:
                    # separated, so that no UTF-8 sequence or digit run spans two messages
                    joined = b"\n".join(messages)
                    clean = _clean_bytes(joined, messages, longest)
                    if clean:
                        # on an error, ``structs`` keeps the messages decoded before it (were
                        # it emptied, they would only be decoded again)
                        structs.extend(map(decode, messages))
                        self.msgspec_batches += 1
                        return structs, np.arange(n, dtype=np.int64), _EMPTY_INT, []
        except Exception:  # noqa: BLE001 - a message msgspec cannot take: look at each
            pass
        try:
            decoded = self._decode_structs_carefully(messages, structs if clean else [], clean)
        except Exception:  # noqa: BLE001 - anything at all: the orjson path decides
            return None
        self.msgspec_batches += 1
        return decoded

    def _decode_structs_carefully(
        self, messages: Sequence[Any], structs: list[Any], clean: bool
    ) -> tuple[list[Any], np.ndarray, np.ndarray, list[str]]:
        """Message by message, after ``structs``, the Structs of the first messages.

        A message msgspec cannot take is parsed as the orjson path parses it
        (:func:`_parse_one`): rejected as there (``invalid_json``,
        ``not_an_object``; ``oversized`` before parsing), or an event that only
        orjson or the stdlib reads (``NaN``, a non-object parent such as
        ``"features": 3``, an integer beyond int64, a BOM, ...) turned into a
        Struct that holds the same values.  ``clean``: every message passed
        :func:`_clean_bytes` with the batch (so all are ``bytes`` within the
        limit); then msgspec takes runs of messages at once.
        """
        decode = self._struct_decode
        assert decode is not None
        from_dict = self._struct_from_dict
        n = len(messages)
        i = len(structs)
        positions = list(range(i))
        bad_positions: list[int] = []
        bad_reasons: list[str] = []
        max_bytes = self._max_bytes
        while i < n:
            if clean:
                # the rest at once, up to the next message msgspec fails (then: that one)
                before = len(structs)
                try:
                    structs.extend(map(decode, islice(messages, i, None)))
                except Exception:  # noqa: BLE001 - msgspec's verdict: see below
                    pass
                got = len(structs) - before
                positions.extend(range(i, i + got))
                i += got
                if i == n:
                    break
            message = messages[i]
            j = i
            i += 1
            if not clean:
                reason = _size_verdict(message, max_bytes)
                if reason is not None:
                    bad_positions.append(j)
                    bad_reasons.append(reason)
                    continue
                try:
                    if type(message) is bytes and _clean_bytes(message, (message,),
                                                                len(message)):
                        structs.append(decode(message))
                        positions.append(j)
                        continue
                except Exception:  # noqa: BLE001 - msgspec's verdict: see what orjson makes of it
                    pass
            event, reason = _parse_verdict(message)
            if reason is not None:
                bad_positions.append(j)
                bad_reasons.append(reason)
            else:
                structs.append(from_dict(event))
                positions.append(j)
        return (
            structs,
            np.array(positions, dtype=np.int64),
            np.array(bad_positions, dtype=np.int64),
            bad_reasons,
        )

    def _parse(
        self, messages: Sequence[Any]
    ) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray, list[str]]:
        """(events, their positions, rejected positions, their reasons)."""
        n = len(messages)
        # Fast path: every message is small enough and parses to an object.
        try:
            if n and max(map(len, messages)) <= self._max_bytes:
                events = list(map(_loads, messages))
                if set(map(type, events)) == {dict}:
                    return events, np.arange(n, dtype=np.int64), _EMPTY_INT, []
            elif not n:
                return [], _EMPTY_INT, _EMPTY_INT, []
        except Exception:  # noqa: BLE001 - anything at all: take the careful path
            pass
        return self._parse_carefully(messages)

    def _parse_carefully(
        self, messages: Sequence[Any]
    ) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray, list[str]]:
        events: list[dict[str, Any]] = []
        positions: list[int] = []
        bad_positions: list[int] = []
        bad_reasons: list[str] = []
        max_bytes = self._max_bytes
        for i, message in enumerate(messages):
            reason = _size_verdict(message, max_bytes)
            if reason is not None:
                bad_positions.append(i)
                bad_reasons.append(reason)
                continue
            event, reason = _parse_verdict(message)
            if reason is not None:
                bad_positions.append(i)
                bad_reasons.append(reason)
            else:
                events.append(event)
                positions.append(i)
        return (
            events,
            np.array(positions, dtype=np.int64),
            np.array(bad_positions, dtype=np.int64),
            bad_reasons,
        )


def _clean_bytes(data: bytes, messages: Sequence[bytes], longest: int) -> bool:
    """Whether msgspec may decode ``messages`` (``data``: them joined by newlines).

    They must be valid UTF-8, without a run of more digits than the stdlib
    reads as an int, and nested no deeper than orjson reads.  (msgspec reads
    less deep than orjson unless the recursion limit was raised: then it
    must not meet more than that many brackets in a message.)
    """
    if not data.isascii():
        try:
            data.decode()
        except UnicodeDecodeError:
            return False
    if (
        longest > 2 * _ORJSON_MAX_DEPTH
        and sys.getrecursionlimit() > _ORJSON_MAX_DEPTH
        and any(map(_may_nest_too_deep, messages))
    ):
        return False
    digits = sys.get_int_max_str_digits()
    return not (digits and longest > digits and b"0" * (digits + 1) in data.translate(_DIGIT_RUNS))


def _may_nest_too_deep(message: bytes) -> bool:
    # each level takes an opening and a closing bracket
    return (
        len(message) > 2 * _ORJSON_MAX_DEPTH
        and message.count(b"[") + message.count(b"{") > _ORJSON_MAX_DEPTH
    )


def _size_verdict(message: Any, max_bytes: int) -> str | None:
    """Why ``message`` is rejected before parsing (None: it may be parsed)."""
    try:
        size = len(message)
    except TypeError:  # e.g. a Kafka tombstone (None)
        return "invalid_json"
    return "oversized" if size > max_bytes else None


def _parse_verdict(message: Any) -> tuple[Any, str | None]:
    """(the event, None) for a JSON object, else (None, why it is rejected)."""
    event = _parse_one(message)
    if event is _INVALID:
        return None, "invalid_json"
    if type(event) is not dict:
        return None, "not_an_object"
    return event, None


def _parse_one(message: Any) -> Any:
    try:
        return _loads(message)
    except Exception:  # noqa: BLE001
        pass
    # The stdlib accepts NaN / Infinity / -Infinity (what Python's json writes)
    # and numbers beyond the double range; their values count as invalid later.
    try:
        if isinstance(message, memoryview):
            message = message.tobytes()
        return json.loads(message)
    except Exception:  # noqa: BLE001 - ValueError, RecursionError, TypeError, ...
        return _INVALID


# --------------------------------------------------------------------------
# public helpers for the baseline builder
# --------------------------------------------------------------------------
def extract_columns(events: Iterable[Any], model: ModelConfig) -> ModelBatch:
    """Columns of ``model`` from already-parsed events (e.g. a reference JSONL file).

    The events are taken as given (``model.select`` is not applied: see
    :func:`select_events`); ``positions`` are ``0..len(events)-1`` and
    ``timestamps`` is None.  Events that are not objects count as all-missing.
    """
    events = events if isinstance(events, list) else list(events)
    return _extract(_Extractor(events), model, np.arange(len(events), dtype=np.int64))


def select_events(events: Sequence[Any], model: ModelConfig) -> np.ndarray:
    """int64 indices of the events that ``model.select`` takes (all without a select)."""
    events = events if isinstance(events, list) else list(events)
    if model.select is None:
        return np.arange(len(events), dtype=np.int64)
    return np.flatnonzero(_select_mask(_Extractor(events), model.select)).astype(np.int64)


# --------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------
class _Extractor:
    """Values at key paths of a list of events, each path prefix walked once."""

    __slots__ = ("_cache", "n")

    def __init__(self, events: list[Any]):
        self.n = len(events)
        self._cache: dict[tuple[str, ...], list[Any]] = {(): events}

    def values(self, path: tuple[str, ...]) -> list[Any]:
        got = self._cache.get(path)
        if got is None:
            got = _children(self.values(path[:-1]), path[-1])
            self._cache[path] = got
        return got

    def subset(self, indices: list[int]) -> _Extractor:
        """An extractor of the events at ``indices``."""
        return _Extractor(list(map(self._cache[()].__getitem__, indices)))


class _StructExtractor(_Extractor):
    """The same over msgspec Structs: a key path's values by attribute, None where absent.

    A Struct has every configured key as an attribute (None where the key is
    absent or null); a parent is a Struct or None, never another value.
    """

    __slots__ = ("_names",)

    def __init__(self, events: list[Any], names: dict[tuple[str, ...], str]):
        super().__init__(events)
        self._names = names

    def values(self, path: tuple[str, ...]) -> list[Any]:
        got = self._cache.get(path)
        if got is None:
            parents = self.values(path[:-1])
            name = self._names[path]
            try:
                got = list(map(attrgetter(name), parents))
            except AttributeError:  # a None parent (null or absent): missing below it
                got = list(map(getattr, parents, repeat(name), repeat(None)))
            self._cache[path] = got
        return got

    def subset(self, indices: list[int]) -> _Extractor:
        return _StructExtractor(list(map(self._cache[()].__getitem__, indices)), self._names)


if msgspec is not None:
    #: a leaf: any JSON value as orjson reads it; an integer outside the int64 range
    #: fails the decode (orjson reads one beyond 64 bits as a float)
    _LEAF: Any = (
        Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
        | float
        | str
        | bool
        | None
        | list
        | dict
    )


def _no_struct(event: dict[str, Any]) -> Any:
    raise TypeError("no Struct types")


def _struct_schema(
    paths: Iterable[tuple[str, ...]],
) -> tuple[type, Callable[[dict[str, Any]], Any], dict[tuple[str, ...], str]] | None:
    """(Struct type of an event, dict event -> Struct, attribute of each key path).

    Keys become attributes ``f0``, ``f1``, ... renamed to the key, so any key
    works (dots, spaces, unicode).  A Struct made from a dict holds at every
    path what the dict extractor finds there: the value, or None where a key
    is absent or a parent is no object.  None when some path is a leaf in one
    place and a parent in another (``a`` and ``a.b``), or is empty.
    """
    paths = list(paths)
    leaves = set(paths)
    parents = {path[:k] for path in paths for k in range(1, len(path))}
    if () in leaves or leaves & parents:
        return None
    children: dict[tuple[str, ...], dict[str, None]] = {}  # keys in configured order
    for path in paths:
        for k in range(len(path)):
            children.setdefault(path[:k], {})[path[k]] = None
    names: dict[tuple[str, ...], str] = {}

    def build(prefix: tuple[str, ...]) -> tuple[type, Callable[[dict[str, Any]], Any]]:
        fields: list[tuple[str, Any, Any]] = []
        rename: dict[str, str] = {}
        keys: list[tuple[str, Callable[[dict[str, Any]], Any] | None]] = []
        for i, key in enumerate(children.get(prefix, ())):
            path = (*prefix, key)
            attr = names[path] = f"f{i}"
            rename[attr] = key
            if path in parents:
                child, child_from_dict = build(path)
                fields.append((attr, child | None, None))
                keys.append((key, child_from_dict))
            else:
                fields.append((attr, _LEAF, None))
                keys.append((key, None))
        # gc=False: decoded Structs hold no reference cycles, the collector can skip them
        struct = msgspec.defstruct(f"_Event{len(prefix)}", fields, rename=rename, gc=False)

        def from_dict(obj: dict[str, Any]) -> Any:
            values = []
            for key, child_from_dict in keys:
                value = obj.get(key)
                if child_from_dict is not None:
                    value = child_from_dict(value) if type(value) is dict else None
                values.append(value)
            return struct(*values)

        return struct, from_dict

    event, from_dict = build(())
    return event, from_dict, names


def _children(parents: list[Any], key: str) -> list[Any]:
    """``parent[key]`` of every parent; None where absent or the parent is no object."""
    try:
        return list(map(itemgetter(key), parents))
    except (KeyError, TypeError):
        pass
    try:
        return list(map(dict.get, parents, repeat(key)))
    except TypeError:  # a parent is not an object: missing below it
        return [p.get(key) if type(p) is dict else None for p in parents]


def _select_key(select: SelectConfig | None) -> Any:
    if select is None:
        return None
    return (select.field, type(select.equals), select.equals)


def _select_mask(extractor: _Extractor, select: SelectConfig) -> np.ndarray:
    values = extractor.values(select.field)
    n = extractor.n
    equals = select.equals
    mask = np.fromiter(map(operator.eq, values, repeat(equals)), dtype=bool, count=n)
    if not isinstance(equals, str):
        # type-exact: 1 matches neither true nor 1.0, true does not match 1
        mask &= np.fromiter(map(_is, map(type, values), repeat(type(equals))), dtype=bool, count=n)
    return mask


@dataclass(frozen=True, slots=True)
class _Group:
    """Columns of one type under one parent path, fetched together per event."""

    parent: tuple[str, ...]
    type: str
    columns: tuple[ColumnConfig, ...]
    getter: Callable[[Any], Any]


def _plan(
    model: ModelConfig, names: dict[tuple[str, ...], str] | None = None
) -> tuple[_Group | ColumnConfig, ...]:
    """Group the columns that share a parent and a type (one itemgetter per event for all).

    With ``names`` (the attribute of each key path), for msgspec Structs: one attrgetter.
    """
    groups: dict[tuple[tuple[str, ...], str], list[ColumnConfig]] = {}
    for column in model.columns:
        groups.setdefault((column.path[:-1], column.type), []).append(column)
    plan: list[_Group | ColumnConfig] = []
    for (parent, kind), columns in groups.items():
        if len(columns) == 1:
            plan.append(columns[0])
        else:
            getter: Callable[[Any], Any]
            if names is None:
                getter = itemgetter(*(c.path[-1] for c in columns))
            else:
                getter = attrgetter(*(names[c.path] for c in columns))
            plan.append(_Group(parent, kind, tuple(columns), getter))
    return tuple(plan)


def _extract(
    extractor: _Extractor,
    model: ModelConfig,
    positions: np.ndarray,
    plan: tuple[_Group | ColumnConfig, ...] | None = None,
) -> ModelBatch:
    n = extractor.n
    results: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for step in _plan(model) if plan is None else plan:
        if isinstance(step, _Group):
            _extract_group(extractor, step, results)
        else:
            results[step.name] = _convert(extractor.values(step.path), n, step.type)
    batch = ModelBatch(positions, {}, {}, {}, {}, {})
    for column in model.columns:  # configured order
        values, invalid, missing = results[column.name]
        batch.columns[column.name] = values
        batch.invalid_mask[column.name] = invalid
        batch.missing_mask[column.name] = missing
        batch.invalid_values[column.name] = int(np.count_nonzero(invalid))
        batch.missing_values[column.name] = int(np.count_nonzero(missing))
    return batch


def _extract_group(
    extractor: _Extractor,
    group: _Group,
    results: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> None:
    n = extractor.n
    k = len(group.columns)
    try:
        rows = list(map(group.getter, extractor.values(group.parent)))
    except (KeyError, TypeError, AttributeError):  # a key absent or a parent no object (None)
        for column in group.columns:
            results[column.name] = _convert(extractor.values(column.path), n, column.type)
        return
    if n:
        if group.type == "numeric":
            types = set(map(type, chain.from_iterable(rows)))
            if types <= _NUMBER_TYPES:
                try:
                    flat = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=n * k)
                except (OverflowError, ValueError, TypeError):  # ints beyond the double range
                    pass
                else:
                    matrix = flat.reshape(n, k)
                    if np.isfinite(matrix).all():
                        block = np.ascontiguousarray(matrix.T)
                        for j, column in enumerate(group.columns):
                            results[column.name] = (block[j], np.zeros(n, bool), np.zeros(n, bool))
                        return
        else:
            try:
                distinct = set(chain.from_iterable(rows))
            except TypeError:  # lists or objects among the values
                distinct = None
            # only str equals str, so the distinct values tell the types of all values
            if (
                distinct is not None
                and set(map(type, distinct)) == {str}
                and max(map(len, distinct)) <= MAX_CATEGORY_CHARS
            ):
                flat = np.fromiter(chain.from_iterable(rows), dtype=object, count=n * k)
                block = np.ascontiguousarray(flat.reshape(n, k).T)
                for j, column in enumerate(group.columns):
                    results[column.name] = (block[j], np.zeros(n, bool), np.zeros(n, bool))
                return
    # Something other than clean values: column by column (transposed rows).
    for column, values in zip(
        group.columns, zip(*rows, strict=True) if n else repeat(()), strict=False
    ):
        results[column.name] = _convert(values, n, column.type)


def _convert(values: Sequence[Any], n: int, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if kind == "numeric":
        return _numeric(values, n)
    return _categorical(values, n)


def _numeric(values: Sequence[Any], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float64 values, invalid mask, missing mask)."""
    types = set(map(type, values))
    if types <= _NUMBER_OR_NONE:
        try:
            out = np.array(values, dtype=np.float64)  # None -> NaN
        except (OverflowError, ValueError, TypeError):  # ints beyond the double range
            return _numeric_masked(values, n)
        if _NONE_TYPE in types:
            missing = np.fromiter(map(_is, values, repeat(None)), dtype=bool, count=n)
        else:
            missing = np.zeros(n, dtype=bool)
        finite = np.isfinite(out)
        if _NONE_TYPE in types:
            invalid = ~(finite | missing)
        else:
            invalid = ~finite
        if invalid.any():  # NaN / Infinity literals (stdlib fallback)
            out[invalid] = np.nan
        return out, invalid, missing
    return _numeric_masked(values, n)


def _numeric_masked(values: Sequence[Any], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Types decided once per distinct type: int, float and numpy numbers (events
    # handed to extract_columns may come from other readers); never booleans.
    number_types = frozenset(t for t in set(map(type, values)) if _is_number_type(t))
    is_number = np.fromiter(map(number_types.__contains__, map(type, values)), dtype=bool, count=n)
    missing = np.fromiter(map(_is, values, repeat(None)), dtype=bool, count=n)
    out = np.full(n, np.nan)
    if is_number.any():
        numbers = np.fromiter(values, dtype=object, count=n)[is_number]
        try:
            out[is_number] = numbers.astype(np.float64)
        except (OverflowError, ValueError, TypeError):
            out[is_number] = [_to_float(v) for v in numbers.tolist()]
    invalid = ~(np.isfinite(out) | missing)
    out[invalid] = np.nan
    return out, invalid, missing


def _is_number_type(kind: type) -> bool:
    if issubclass(kind, bool | np.bool_):
        return False
    return issubclass(kind, int | float | np.integer | np.floating)


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (OverflowError, ValueError, TypeError):
        return math.inf  # counted as invalid


def _categorical(values: Sequence[Any], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(object array of str/None, invalid mask, missing mask)."""
    types = set(map(type, values))
    if types <= _STR_OR_NONE:
        has_none = _NONE_TYPE in types
        longest = max(map(len, filter(None, values)) if has_none else map(len, values), default=0)
        if longest <= MAX_CATEGORY_CHARS:
            out = np.fromiter(values, dtype=object, count=n)
            if has_none:
                missing = np.fromiter(map(_is, values, repeat(None)), dtype=bool, count=n)
            else:
                missing = np.zeros(n, dtype=bool)
            return out, np.zeros(n, dtype=bool), missing
    elif types == {int}:
        try:
            strings = list(map(str, values))
        except ValueError:  # more digits than int->str allows
            pass
        else:
            if max(map(len, strings), default=0) <= MAX_CATEGORY_CHARS:
                return (
                    np.fromiter(strings, dtype=object, count=n),
                    np.zeros(n, dtype=bool),
                    np.zeros(n, dtype=bool),
                )
    converted = list(map(_category, values))
    out = np.fromiter(converted, dtype=object, count=n)
    invalid = np.fromiter(map(_is, converted, repeat(_INVALID)), dtype=bool, count=n)
    missing = np.fromiter(map(_is, converted, repeat(None)), dtype=bool, count=n)
    if invalid.any():
        out[invalid] = None
    return out, invalid, missing


def _category(value: Any) -> Any:
    kind = type(value)
    if kind is str:
        return value if len(value) <= MAX_CATEGORY_CHARS else value[:MAX_CATEGORY_CHARS]
    if value is None:
        return None
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        try:
            return str(value)[:MAX_CATEGORY_CHARS]
        except ValueError:
            return _INVALID
    if kind is float:
        return repr(value) if math.isfinite(value) else _INVALID
    # subclasses and numpy scalars (from readers other than JSON)
    if isinstance(value, str):
        return str.__str__(value)[:MAX_CATEGORY_CHARS]
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return _category(int(value))
    if isinstance(value, float | np.floating):
        return _category(float(value))
    return _INVALID


# --------------------------------------------------------------------------
# event time
# --------------------------------------------------------------------------
def _timestamps(values: Sequence[Any], n: int, unit: str) -> np.ndarray:
    if unit == "iso8601":
        return np.fromiter(map(_iso_seconds, values), dtype=np.float64, count=n)
    out, invalid, _ = _numeric(values, n)
    if invalid.any():  # numbers sent as strings, e.g. "1700000000123"
        for i in np.flatnonzero(invalid).tolist():
            value = values[i]
            if type(value) is str and len(value) <= 40:
                try:
                    number = float(value)
                except ValueError:
                    continue
                if math.isfinite(number):
                    out[i] = number
    scale = _TIME_SCALE[unit]
    return out if scale == 1.0 else out / scale


def _iso_seconds(value: Any) -> float:
    if type(value) is not str or len(value) > 64:
        return math.nan
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return math.nan
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.timestamp()
    except (OverflowError, ValueError, OSError):
        return math.nan
