"""Column extraction: the configured fields of parsed events into numpy columns.

Shared by the decoder of poll batches (:mod:`stream.formats.json`) and the baseline
builder, which reads reference events.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain, repeat
from operator import attrgetter, itemgetter
from typing import Annotated, Any, Final

import numpy as np

try:
    import msgspec
except ImportError:  # pragma: no cover - msgspec is a dependency; without it: orjson only
    msgspec = None  # type: ignore[assignment]

from stream.config import ColumnConfig, ModelConfig, SelectConfig
from stream.formats.batch import INVALID, MAX_CATEGORY_CHARS, ModelBatch
from stream.formats.vectors import vector_column

__all__ = ["extract_columns", "select_events"]

_NONE_TYPE: Final = type(None)
_NUMBER_TYPES: Final = frozenset({int, float})
_NUMBER_OR_NONE: Final = frozenset({int, float, _NONE_TYPE})
_STR_OR_NONE: Final = frozenset({str, _NONE_TYPE})
_TIME_SCALE: Final = {"s": 1.0, "ms": 1e3, "us": 1e6}
_is = operator.is_
_is_not = operator.is_not

# --------------------------------------------------------------------------
def extract_columns(events: Iterable[Any], model: ModelConfig) -> ModelBatch:
    """Columns of ``model`` from already-parsed events (e.g. a reference JSONL file).

    The events are taken as given (``model.select`` is not applied: see
    :func:`select_events`); ``positions`` are ``0..len(events)-1`` and
    ``timestamps`` is None.  Events that are not objects count as all-missing.
    """
    events = events if isinstance(events, list) else list(events)
    return extract(Extractor(events), model, np.arange(len(events), dtype=np.int64))


def select_events(events: Sequence[Any], model: ModelConfig) -> np.ndarray:
    """int64 indices of the events that ``model.select`` takes (all without a select)."""
    events = events if isinstance(events, list) else list(events)
    if model.select is None:
        return np.arange(len(events), dtype=np.int64)
    return np.flatnonzero(select_mask(Extractor(events), model.select)).astype(np.int64)


# --------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------
class Extractor:
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

    def subset(self, indices: list[int]) -> Extractor:
        """An extractor of the events at ``indices``."""
        return Extractor(list(map(self._cache[()].__getitem__, indices)))

    def _is_object_type(self, kind: type) -> bool:
        return kind is dict

    def not_objects(self, path: tuple[str, ...]) -> np.ndarray | None:
        """Bool mask of the events whose value at ``path`` is present, not null and not an
        object (a path must descend through it); None when there is none.

        One ``set(map(type, ...))`` over the values, which the columns below ``path``
        walk anyway; the mask is built only when some value has another type.
        """
        values = self.values(path)
        bad = {t for t in set(map(type, values))
               if t is not _NONE_TYPE and not self._is_object_type(t)}
        if not bad:
            return None
        return np.fromiter(map(bad.__contains__, map(type, values)), dtype=bool, count=self.n)


class StructExtractor(Extractor):
    """The same over msgspec Structs: a key path's values by attribute, None where absent.

    A Struct has every configured key as an attribute (None where the key is
    absent or null); a parent is a Struct, None, or (in a Struct made from a dict by
    :func:`struct_schema`) the non-object value the event holds there, which has none
    of the attributes, so that the keys below it read as None.
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

    def subset(self, indices: list[int]) -> Extractor:
        return StructExtractor(list(map(self._cache[()].__getitem__, indices)), self._names)

    def _is_object_type(self, kind: type) -> bool:
        return msgspec is not None and issubclass(kind, msgspec.Struct)


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


def no_struct(event: dict[str, Any]) -> Any:
    raise TypeError("no Struct types")


def struct_schema(
    paths: Iterable[tuple[str, ...]],
) -> tuple[type, Callable[[dict[str, Any]], Any], dict[tuple[str, ...], str]] | None:
    """(Struct type of an event, dict event -> Struct, attribute of each key path).

    Keys become attributes ``f0``, ``f1``, ... renamed to the key, so any key
    works (dots, spaces, unicode).  A Struct made from a dict holds at every
    path what the dict extractor finds there: the value, or None where a key
    is absent or a parent is no object; at a parent path that holds no object,
    that value itself (what :meth:`Extractor.not_objects` looks for).  None when some path is a leaf in one
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
                if child_from_dict is not None and type(value) is dict:
                    value = child_from_dict(value)
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


def select_key(select: SelectConfig | None) -> Any:
    if select is None:
        return None
    return (select.field, type(select.equals), select.equals)


def select_mask(extractor: Extractor, select: SelectConfig) -> np.ndarray:
    values = extractor.values(select.field)
    n = extractor.n
    equals = select.equals
    mask = np.fromiter(map(operator.eq, values, repeat(equals)), dtype=bool, count=n)
    if not isinstance(equals, str):
        # type-exact: 1 matches neither true nor 1.0, true does not match 1
        mask &= np.fromiter(map(_is, map(type, values), repeat(type(equals))), dtype=bool, count=n)
    return mask


class ModelRouter:
    """Which events each model takes (its ``select``), over one batch's ``everything``.

    Models with the same ``select`` share one subset; ``routed`` marks the events some
    model took (None when a model without ``select`` takes everything)."""

    def __init__(self, everything: Extractor, catch_all: bool) -> None:
        self.everything = everything
        self.subsets: dict[Any, tuple[np.ndarray | None, Extractor]] = {
            None: (None, everything)}
        self.routed = None if catch_all else np.zeros(everything.n, dtype=bool)

    def subset(self, select: SelectConfig | None) -> tuple[np.ndarray | None, Extractor]:
        """(indices of the model's events, or None for all; their extractor)."""
        key = select_key(select)
        subset = self.subsets.get(key)
        if subset is None:
            assert select is not None
            mask = select_mask(self.everything, select)
            if self.routed is not None:
                self.routed |= mask
            idx = np.flatnonzero(mask)
            subset = (None, self.everything) if idx.shape[0] == self.everything.n else \
                (idx, self.everything.subset(idx.tolist()))
            self.subsets[key] = subset
        return subset


@dataclass(frozen=True, slots=True)
class Group:
    """Columns of one type under one parent path, fetched together per event."""

    parent: tuple[str, ...]
    type: str
    columns: tuple[ColumnConfig, ...]
    getter: Callable[[Any], Any]


def column_plan(
    model: ModelConfig, names: dict[tuple[str, ...], str] | None = None
) -> tuple[Group | ColumnConfig, ...]:
    """Group the columns that share a parent and a type (one itemgetter per event for all).

    With ``names`` (the attribute of each key path), for msgspec Structs: one attrgetter.
    """
    groups: dict[tuple[tuple[str, ...], str], list[ColumnConfig]] = {}
    for column in model.columns:
        groups.setdefault((column.path[:-1], column.type), []).append(column)
    plan: list[Group | ColumnConfig] = []
    for (parent, kind), columns in groups.items():
        if len(columns) == 1:
            plan.append(columns[0])
        else:
            getter: Callable[[Any], Any]
            if names is None:
                getter = itemgetter(*(c.path[-1] for c in columns))
            else:
                getter = attrgetter(*(names[c.path] for c in columns))
            plan.append(Group(parent, kind, tuple(columns), getter))
    return tuple(plan)


def extract(
    extractor: Extractor,
    model: ModelConfig,
    positions: np.ndarray,
    plan: tuple[Group | ColumnConfig, ...] | None = None,
) -> ModelBatch:
    n = extractor.n
    results: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for step in column_plan(model) if plan is None else plan:
        if isinstance(step, Group):
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
    if model.vectors:  # embedding columns (#19): one (events, dim) matrix each
        batch.vectors = {v.name: vector_column(extractor.values(v.path), v.dim)
                         for v in model.vectors}
    return batch


def _extract_group(
    extractor: Extractor,
    group: Group,
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
    invalid = np.fromiter(map(_is, converted, repeat(INVALID)), dtype=bool, count=n)
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
            return INVALID
    if kind is float:
        return repr(value) if math.isfinite(value) else INVALID
    # subclasses and numpy scalars (from readers other than JSON)
    if isinstance(value, str):
        return str.__str__(value)[:MAX_CATEGORY_CHARS]
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return _category(int(value))
    if isinstance(value, float | np.floating):
        return _category(float(value))
    return INVALID


# --------------------------------------------------------------------------
# event time
# --------------------------------------------------------------------------
def timestamps_column(values: Sequence[Any], n: int, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """(float64 seconds since the epoch, bool mask of the invalid timestamps).

    NaN where the timestamp is missing (absent, null, non-object parent) or
    invalid: present but not a time in ``unit`` (a string that is no ISO 8601
    time or number, a boolean, a list, an object, a non-finite number).
    """
    if unit == "iso8601":
        out = np.fromiter(map(_iso_seconds, values), dtype=np.float64, count=n)
        invalid = np.isnan(out)
        if invalid.any():
            invalid &= np.fromiter(map(_is_not, values, repeat(None)), dtype=bool, count=n)
        return out, invalid
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
                    invalid[i] = False
    scale = _TIME_SCALE[unit]
    return (out if scale == 1.0 else out / scale), invalid


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
