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
  which accepts the ``NaN``/``Infinity`` literals that Python writes and the
  numbers orjson refuses, beyond the double range; only when the stdlib
  meets an integer of more digits than ``int()`` reads,
  ``sys.get_int_max_str_digits()``, is the message parsed a third time, such
  integers read as ``±inf``);
* an absent key: ``map(dict.get, ...)`` for that path; a non-object parent:
  that one path segment is walked with a list comprehension, and the events
  holding it are taken out of the model's batch (see *wrong structure* below);
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
    ``float64``; ``NaN`` where *missing* (absent key, null parent, JSON
    ``null``).  Booleans, strings, lists, objects, ``±Infinity`` and ``NaN``
    literals and numbers beyond the double range (``1e400``, an integer of 400
    or 5,000 digits) are *invalid*: ``NaN`` in the column, ``True`` in
    ``invalid_mask``.  A number too large is one invalid value, never an invalid
    event: the event's other values count.
categorical columns
    ``object`` arrays of ``str`` (cut to :data:`MAX_CATEGORY_CHARS`), ``None``
    where missing or invalid.  Integers become ``"3"``, booleans
    ``"true"``/``"false"``, floats ``repr(x)``; lists, objects and non-finite
    numbers are invalid, so are integers of more digits than ``int()`` reads
    (``sys.get_int_max_str_digits()``, 4,300 by default).  (orjson reads
    integers beyond 64 bits as floats, so such a category reads
    ``"1.8446744073709552e+19"``.)
wrong structure
    an event routed to a model that holds a value other than an object or
    ``null`` where one of the model's column paths descends (``"features":
    "oops"``, ``"features": [1, 2]`` or ``"prediction": [1]`` with paths
    ``features.x`` and ``prediction.score``) is not one of the model's events
    (its columns would all read as missing: one missing value per column, and a
    missing-rate alarm on each).  It is rejected with reason
    ``wrong_structure`` (counted, dead-lettered) when no model it is routed to
    takes it; the model's other events, and the other models, are unaffected.
    The check is one ``set(map(type, ...))`` over the values at each parent
    path, which the columns walk anyway.
event time
    with ``source.timestamp`` configured, ``float64`` seconds since the epoch
    (``NaN`` where missing or unparseable); ISO 8601 strings without a zone
    are UTC.  ``invalid_timestamp_mask`` marks the unparseable ones (present,
    not null, but not a time in the configured unit).

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
import sys
from collections.abc import Callable, Sequence
from itertools import islice
from typing import Any, Final

import numpy as np
import orjson

try:
    import msgspec
except ImportError:  # pragma: no cover - msgspec is a dependency; without it: orjson only
    msgspec = None  # type: ignore[assignment]

from stream.config import ColumnConfig, Config, ModelConfig, TimestampConfig
from stream.formats.batch import EMPTY_INT, INVALID, DecodedBatch, ModelBatch, invalid_counts
from stream.formats.columns import (
    Extractor,
    Group,
    ModelRouter,
    StructExtractor,
    column_plan,
    extract,
    no_struct,
    struct_schema,
    timestamps_column,
)

__all__ = ["BatchDecoder"]

_loads = orjson.loads
#: orjson reads JSON nested this deep, no deeper (msgspec: below the recursion limit)
_ORJSON_MAX_DEPTH: Final = 1024
#: ASCII digits -> "0", every other byte -> " " (a long digit run becomes a run of "0")
_DIGIT_RUNS: Final = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))

# --------------------------------------------------------------------------
class BatchDecoder:
    """Decodes poll batches for the models of a configuration."""

    def __init__(self, config: Config, *, use_msgspec: bool = True):
        self._models: tuple[ModelConfig, ...] = tuple(config.models)
        self._max_bytes: int = int(config.source.max_message_bytes)
        self._timestamp: TimestampConfig | None = config.source.timestamp
        self._catch_all = any(m.select is None for m in self._models)
        self._plans = {m.name: column_plan(m) for m in self._models}
        #: model -> the paths its column paths descend through (each must hold an object)
        self._parents = {m.name: _parent_paths(m) for m in self._models}
        #: batches decoded by the msgspec path, at once or message by message (the
        #: others, empty batches included, took the orjson path)
        self.msgspec_batches = 0
        self._struct_decode: Callable[[bytes], Any] | None = None
        self._struct_from_dict: Callable[[dict[str, Any]], Any] = no_struct
        self._struct_names: dict[tuple[str, ...], str] = {}
        self._struct_plans: dict[str, tuple[Group | ColumnConfig, ...]] = {}
        if use_msgspec and msgspec is not None:
            paths = [c.path for m in self._models for c in m.columns]
            paths += [m.select.field for m in self._models if m.select is not None]
            if self._timestamp is not None:
                paths.append(self._timestamp.path)
            paths += [m.labels.id_path for m in self._models if m.labels is not None]
            paths += [v.path for m in self._models for v in m.vectors]  # embedding columns
            schema = struct_schema(paths)
            if schema is not None:
                event_type, self._struct_from_dict, self._struct_names = schema
                self._struct_decode = msgspec.json.Decoder(event_type).decode
                self._struct_plans = {m.name: column_plan(m, self._struct_names) for m in self._models}

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
        everything: Extractor
        if decoded is not None:
            structs, positions, bad_positions, bad_reasons = decoded
            everything = StructExtractor(structs, self._struct_names)
            plans = self._struct_plans
        else:
            events, positions, bad_positions, bad_reasons = self._parse(messages)
            everything = Extractor(events)
            plans = self._plans
        return self._route(n, everything, plans, positions, bad_positions, bad_reasons)

    def decode_events(self, n: int, events: list[dict[str, Any]], positions: np.ndarray,
                      bad_positions: np.ndarray, bad_reasons: list[str]) -> DecodedBatch:
        """Route and extract events another format has already decoded into dicts
        (``positions``: theirs among the ``n`` messages; the rejected ones and why)."""
        return self._route(n, Extractor(events), self._plans, positions,
                           bad_positions, bad_reasons)

    def _route(self, n: int, everything: Extractor,
               plans: dict[str, tuple[Group | ColumnConfig, ...]], positions: np.ndarray,
               bad_positions: np.ndarray, bad_reasons: list[str]) -> DecodedBatch:
        router = ModelRouter(everything, self._catch_all)
        routed = router.routed
        models: dict[str, ModelBatch] = {}
        rejected: list[np.ndarray] = []
        for model in self._models:
            selected, extractor = router.subset(model.select)
            model_positions = positions if selected is None else positions[selected]
            batch = extract(extractor, model, model_positions, plans[model.name])
            if self._timestamp is not None:
                batch.timestamps, batch.invalid_timestamp_mask = timestamps_column(
                    extractor.values(self._timestamp.path), extractor.n, self._timestamp.unit
                )
            if model.labels is not None:
                batch.ids = extractor.values(model.labels.id_path)
            wrong = _wrong_structure(extractor, self._parents[model.name])
            if wrong is not None:  # events this model's paths cannot walk: not its events
                rejected.append(model_positions[wrong])
                batch = batch.take(np.flatnonzero(~wrong))
            models[model.name] = batch

        late: list[tuple[np.ndarray, str]] = []
        if routed is not None and not routed.all():
            late.append((positions[~routed], "unknown_model"))
        if rejected:
            # an invalid event when no model it is routed to could take it
            taken = np.zeros(n, dtype=bool)
            for mb in models.values():
                taken[mb.positions] = True
            wrong = np.unique(np.concatenate(rejected))
            late.append((wrong[~taken[wrong]], "wrong_structure"))
        if late:
            for more, reason in late:
                bad_positions = np.concatenate([bad_positions, more])
                bad_reasons = bad_reasons + [reason] * int(more.shape[0])
            order = np.argsort(bad_positions, kind="stable")
            bad_positions = bad_positions[order]
            bad_reasons = [bad_reasons[i] for i in order.tolist()]

        return DecodedBatch(
            n_messages=n,
            invalid=invalid_counts(bad_reasons),
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
        or rejects such an integer, the orjson path reads it as ``±inf``: an
        invalid value) and nests no deeper than orjson reads.  The batch is checked and
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
                        return structs, np.arange(n, dtype=np.int64), EMPTY_INT, []
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
                    return events, np.arange(n, dtype=np.int64), EMPTY_INT, []
            elif not n:
                return [], EMPTY_INT, EMPTY_INT, []
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


def _parent_paths(model: ModelConfig) -> tuple[tuple[str, ...], ...]:
    """The key paths that ``model``'s column paths descend through, shortest first.

    A path that is also a column's (``f`` beside ``f.x``) may hold any value.
    """
    parents = {c.path[:k] for c in model.columns for k in range(1, len(c.path))}
    parents -= {c.path for c in model.columns}
    return tuple(sorted(parents, key=lambda p: (len(p), p)))


def _wrong_structure(extractor: Extractor, parents: Sequence[tuple[str, ...]]) -> np.ndarray | None:
    """Bool mask of the events that hold a non-object (not null) where a path of the
    model descends (``"features": "oops"``); None when there is none."""
    wrong = None
    for path in parents:
        mask = extractor.not_objects(path)
        if mask is not None:
            wrong = mask if wrong is None else wrong | mask
    return wrong


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
    if event is INVALID:
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
    except ValueError as exc:
        if type(exc) is not ValueError:  # JSONDecodeError, UnicodeDecodeError: not JSON
            return INVALID
        # an integer of more digits than int() reads (sys.get_int_max_str_digits):
        # valid JSON, so only that value is invalid, not the event
    except Exception:  # noqa: BLE001 - RecursionError, TypeError, ...
        return INVALID
    try:
        return json.loads(message, parse_int=_int_or_infinity)
    except Exception:  # noqa: BLE001
        return INVALID


def _int_or_infinity(digits: str) -> int | float:
    """A JSON integer; ±infinity (an invalid value) when it has more digits than int() reads."""
    try:
        return int(digits)
    except ValueError:
        return -math.inf if digits.startswith("-") else math.inf


# --------------------------------------------------------------------------
# public helpers for the baseline builder
