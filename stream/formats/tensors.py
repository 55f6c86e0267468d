"""Tensors of Open Inference Protocol messages into columns, a group of messages at once."""

from __future__ import annotations

from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

__all__ = ["ROWS", "first_rows", "group", "ranges"]

_SHAPE = itemgetter("shape")
_DATA = itemgetter("data")
_FIRST = itemgetter(0)
_SECOND = itemgetter(1)
#: the column index of an embedding column (``type: vector``): each row's values as one
#: list (a tensor of shape ``[n, dim]`` is ``n`` vectors of ``dim`` numbers)
ROWS = -1
#: tensor name -> [(column path, column index, ROWS, or None)]
Wanted = dict[str, list[tuple[tuple[str, ...], int | None]]]


class _BadTensor(Exception):
    """A configured tensor whose shape and data do not agree."""


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The indices ``starts[i] .. starts[i] + lengths[i] - 1`` of every range, in order.

    >>> ranges(np.array([5, 0]), np.array([2, 3])).tolist()
    [5, 6, 0, 1, 2]
    """
    total = int(lengths.sum())
    return np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(total)


def group(wanted: Wanted,
           signature: tuple[str, ...], tensors: list[list[Any]], idx: list[int],
           ) -> list[tuple[list[int], np.ndarray | None, dict[tuple[str, ...], list[Any]] | None]]:
    """(messages, rows of each, path -> values of all their rows) for the messages ``idx``
    whose tensors are named ``signature``, at once; a group holding a malformed tensor is
    halved until each malformed message stands alone (``(message, None, None)``), so a few
    bad messages cost a few groups each, never the batch message by message."""
    try:
        rows, columns = _group_columns(wanted, signature, tensors)
    except _BadTensor:
        if len(idx) == 1:
            return [(idx, None, None)]
        mid = len(idx) // 2
        return [*group(wanted, signature, tensors[:mid], idx[:mid]),
                *group(wanted, signature, tensors[mid:], idx[mid:])]
    return [(idx, rows, columns)]


def first_rows(tensors: list[Any]) -> int | None:
    """Rows of a message none of whose tensors is configured: its first tensor's ``shape[0]``."""
    try:
        rows = tensors[0]["shape"][0]
    except (IndexError, KeyError, TypeError):
        return None
    return rows if type(rows) is int and rows >= 0 else None


def _as_list(value: Any) -> Any:
    return value if type(value) is list else (value,)


def _group_columns(wanted: Wanted,
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
            shapes = list(map(_SHAPE, found))
            dims = set(map(len, shapes))
            if len(dims) != 1 or not dims <= {1, 2}:
                raise _BadTensor
            first = list(map(_FIRST, shapes))
            width = 1
            if dims == {2}:
                widths = set(map(_SECOND, shapes))
                if len(widths) != 1:  # one width per group, for the column slices
                    raise _BadTensor
                (width,) = widths
            if set(map(type, first)) != {int} or type(width) is not int or width < 0:
                raise _BadTensor
            r = np.array(first, dtype=np.int64)
            if (r < 0).any():
                raise _BadTensor
            datas = list(map(_DATA, found))
            flat = list(chain.from_iterable(datas))
            types = set(map(type, flat))
            if list in types:  # nested per row (in some messages or all)
                flat = list(chain.from_iterable(flat if types == {list}
                                                else map(_as_list, flat)))
        except (KeyError, TypeError, ValueError, OverflowError, IndexError) as exc:
            raise _BadTensor from exc
        if len(flat) != int(r.sum()) * width:
            raise _BadTensor
        if rows is None:
            rows = r
        elif not np.array_equal(rows, r):
            raise _BadTensor
        for path, col in entries:
            if col == ROWS:  # a vector per row; its length is checked by the vector column
                columns[path] = _per_row(flat, width, int(r.sum()))
            elif col is None:
                if width != 1:
                    raise _BadTensor
                columns[path] = flat
            elif col >= width:
                raise _BadTensor
            else:
                columns[path] = flat[col::width]
    return rows, columns


def _per_row(flat: list[Any], width: int, n: int) -> list[list[Any]]:
    """The ``n`` rows of ``width`` values of a row-major ``flat`` list, as lists (one
    slice per row, no loop over the values).

    >>> _per_row([1, 2, 3, 4, 5, 6], 3, 2)
    [[1, 2, 3], [4, 5, 6]]
    """
    if width == 0:
        return [[] for _ in range(n)]
    return list(map(flat.__getitem__, map(slice, range(0, n * width, width),
                                          range(width, n * width + 1, width))))
