"""The scanner's flagged rows, decoded as :class:`BatchDecoder` decodes them, but lean.

:class:`stream.formats.scan.ScanDecoder` flags the messages its kernel is not sure of (a
few per batch on a real topic: truncated lines, ``NaN`` literals, a string in a numeric
field, ``"features": 3``...) and splices in what :class:`BatchDecoder` makes of them.
``BatchDecoder.decode`` is built for batches: for a handful of rows its fixed costs
(the msgspec attempt, then every column of every model extracted and counted, a
``ModelBatch.take`` per model with a wrong structure) came to ~30-40 µs per flagged row,
enough to make decoding a stream with 0.5 % of malformed lines ~9 % slower than the same
stream clean.

:class:`FlaggedRows` decides for those rows with the same functions, once per row or once
per *key path* rather than once per model and column:

* each message: the same verdict as BatchDecoder's orjson path (``_size_verdict``, then
  ``_parse_verdict``: orjson, then the stdlib; the msgspec path gives the same, as
  tests/stream/test_decode_msgspec.py proves);
* the events that parse: routed with the same ``select_mask``; a model's events holding
  a non-object where its paths descend are not its events (``not_objects``, as
  ``_wrong_structure``), rejected ``wrong_structure`` when no model takes them, and the
  events no model selects ``unknown_model``;
* the values of every configured leaf of a type converted in one call for all the events
  (``_numeric``, ``_categorical``, ``timestamps_column``: per value, so it does not matter
  which values share a call), then indexed per model.

The result (:class:`Flagged`) holds, by key path, what the columns of
``BatchDecoder``'s :class:`DecodedBatch` for those messages hold, with the same rejected
positions and reasons and the same events per model;
tests/stream/test_scan_equivalence.py checks the scanner's batches, flagged rows mixed in,
against the columnar decoder (itself checked against ``BatchDecoder``).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np

from stream.config import Config, ModelConfig
from stream.formats.columns import (
    Extractor,
    _categorical,
    _numeric,
    select_key,
    select_mask,
    timestamps_column,
)
from stream.formats.json import _parent_paths, _parse_verdict, _size_verdict

__all__ = ["Flagged", "FlaggedRows"]


class Flagged:
    """What a few messages hold, by key path (``FlaggedRows.decode``).

    Positions are among the messages given.  ``num`` and ``cat`` have a row per leaf of
    :attr:`FlaggedRows.num_paths` / :attr:`FlaggedRows.cat_paths` and a column per
    event: the value each column of that path reads (``NaN`` / ``None`` where missing or
    invalid), with its ``*_invalid`` and ``*_missing`` flags."""

    __slots__ = ("cat", "cat_invalid", "cat_missing", "invalid_positions", "invalid_reasons",
                 "num", "num_invalid", "num_missing", "positions", "stamps", "takes")

    positions: np.ndarray  #: the events' positions (int64, ascending)
    invalid_positions: np.ndarray  #: the rejected messages' positions (int64, ascending)
    invalid_reasons: list[str]  #: why each was rejected
    takes: dict[str, np.ndarray]  #: model name -> indices of its events (ascending)
    num: np.ndarray
    num_invalid: np.ndarray
    num_missing: np.ndarray
    cat: np.ndarray
    cat_invalid: np.ndarray
    cat_missing: np.ndarray
    #: (float64 seconds, invalid mask) per event with ``source.timestamp``, else None
    stamps: tuple[np.ndarray, np.ndarray] | None


class _Few(Extractor):
    """An :class:`Extractor` for a few events: a key's values by one list comprehension
    (``_children``'s result: ``parent[key]``, None where absent or the parent is no
    object; its ``map`` attempts cost more than they save on a handful of events)."""

    __slots__ = ()

    def values(self, path: tuple[str, ...]) -> list[Any]:
        got = self._cache.get(path)
        if got is None:
            key = path[-1]
            got = [p.get(key) if type(p) is dict else None for p in self.values(path[:-1])]
            self._cache[path] = got
        return got


class FlaggedRows:
    """Decodes a few messages (the flagged rows of a batch) for the models of a config."""

    def __init__(self, config: Config):
        self._models: tuple[ModelConfig, ...] = tuple(config.models)
        self._max_bytes = int(config.source.max_message_bytes)
        self._timestamp = config.source.timestamp
        self._catch_all = any(m.select is None for m in self._models)
        self._parents = {m.name: _parent_paths(m) for m in self._models}
        leaves: dict[tuple[str, ...], str] = {}
        for model in self._models:
            for column in model.columns:
                leaves.setdefault(column.path, column.type)
        #: the columns' key paths by type, each once (the scanner serves no configuration
        #: that reads one path as two types)
        self.num_paths = tuple(p for p, kind in leaves.items() if kind == "numeric")
        self.cat_paths = tuple(p for p, kind in leaves.items() if kind != "numeric")

    def decode(self, messages: Sequence[Any]) -> Flagged:
        """Verdicts, routing and values as ``BatchDecoder(config).decode(messages)`` has
        them; never raises on bad input."""
        events: list[Any] = []
        at: list[int] = []
        bad_at: list[int] = []
        reasons: list[str] = []
        max_bytes = self._max_bytes
        for i, message in enumerate(messages):
            reason = _size_verdict(message, max_bytes)
            if reason is None:
                event, reason = _parse_verdict(message)
                if reason is None:
                    events.append(event)
                    at.append(i)
                    continue
            bad_at.append(i)
            reasons.append(reason)
        out = Flagged()
        out.positions = positions = np.array(at, dtype=np.int64)
        bad_positions = np.array(bad_at, dtype=np.int64)
        k = len(events)
        everything = _Few(events)
        routed = None if self._catch_all else np.zeros(k, dtype=bool)
        selected: dict[Any, np.ndarray] = {}
        all_events = np.ones(k, dtype=bool)
        rejected = np.zeros(k, dtype=bool)
        out.takes = takes = {}
        for model in self._models:
            mask = all_events
            if model.select is not None:
                key = select_key(model.select)
                got = selected.get(key)
                if got is None:
                    got = selected[key] = select_mask(everything, model.select)
                    if routed is not None:
                        routed |= got
                mask = got
            for path in self._parents[model.name]:
                wrong = everything.not_objects(path)
                if wrong is not None:  # not this model's events (BatchDecoder's wrong_structure)
                    rejected |= wrong & mask
                    mask = mask & ~wrong
            takes[model.name] = np.flatnonzero(mask)

        late: list[tuple[np.ndarray, str]] = []
        if routed is not None and not routed.all():
            late.append((np.flatnonzero(~routed), "unknown_model"))
        if rejected.any():
            taken = np.zeros(k, dtype=bool)
            for idx in takes.values():
                taken[idx] = True
            late.append((np.flatnonzero(rejected & ~taken), "wrong_structure"))
        if late:
            for more, reason in late:
                bad_positions = np.concatenate([bad_positions, positions[more]])
                reasons = reasons + [reason] * int(more.shape[0])
            order = np.argsort(bad_positions, kind="stable")
            bad_positions = bad_positions[order]
            reasons = [reasons[i] for i in order.tolist()]
        out.invalid_positions, out.invalid_reasons = bad_positions, reasons

        # every leaf's values at once: the conversions are per value, so one call over the
        # values of all leaves gives what a call per column gives
        shape = (len(self.num_paths), k)
        values = list(chain.from_iterable(map(everything.values, self.num_paths)))
        num = _numeric(values, len(values))
        out.num, out.num_invalid, out.num_missing = (a.reshape(shape) for a in num)
        shape = (len(self.cat_paths), k)
        values = list(chain.from_iterable(map(everything.values, self.cat_paths)))
        cat = _categorical(values, len(values))
        out.cat, out.cat_invalid, out.cat_missing = (a.reshape(shape) for a in cat)
        out.stamps = None
        if self._timestamp is not None:
            out.stamps = timestamps_column(everything.values(self._timestamp.path), k,
                                           self._timestamp.unit)
        return out
