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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, Final

import numpy as np
import orjson

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

    def __init__(self, config: Config):
        self._models: tuple[ModelConfig, ...] = tuple(config.models)
        self._max_bytes: int = int(config.source.max_message_bytes)
        self._timestamp: TimestampConfig | None = config.source.timestamp
        self._catch_all = any(m.select is None for m in self._models)
        self._plans = {m.name: _plan(m) for m in self._models}

    def decode(self, messages: Sequence[bytes]) -> DecodedBatch:
        """Decode, route and extract one batch; never raises on bad input."""
        if not isinstance(messages, list | tuple):
            messages = list(messages)
        n = len(messages)
        events, positions, bad_positions, bad_reasons = self._parse(messages)
        n_events = len(events)

        everything = _Extractor(events)
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
                    subset = (idx, _Extractor(list(map(events.__getitem__, idx.tolist()))))
                subsets[key] = subset
            selected, extractor = subset
            model_positions = positions if selected is None else positions[selected]
            batch = _extract(extractor, model, model_positions, self._plans[model.name])
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
            try:
                size = len(message)
            except TypeError:  # e.g. a Kafka tombstone (None)
                bad_positions.append(i)
                bad_reasons.append("invalid_json")
                continue
            if size > max_bytes:
                bad_positions.append(i)
                bad_reasons.append("oversized")
                continue
            event = _parse_one(message)
            if event is _INVALID:
                bad_positions.append(i)
                bad_reasons.append("invalid_json")
            elif type(event) is not dict:
                bad_positions.append(i)
                bad_reasons.append("not_an_object")
            else:
                events.append(event)
                positions.append(i)
        return (
            events,
            np.array(positions, dtype=np.int64),
            np.array(bad_positions, dtype=np.int64),
            bad_reasons,
        )


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


def _plan(model: ModelConfig) -> tuple[_Group | ColumnConfig, ...]:
    """Group the columns that share a parent and a type (one itemgetter per event for all)."""
    groups: dict[tuple[tuple[str, ...], str], list[ColumnConfig]] = {}
    for column in model.columns:
        groups.setdefault((column.path[:-1], column.type), []).append(column)
    plan: list[_Group | ColumnConfig] = []
    for (parent, kind), columns in groups.items():
        if len(columns) == 1:
            plan.append(columns[0])
        else:
            getter = itemgetter(*(c.path[-1] for c in columns))
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
    except (KeyError, TypeError):  # a key absent or a parent not an object somewhere
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
