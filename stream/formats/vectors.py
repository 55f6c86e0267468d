"""Decoding of embedding columns (``type: vector``): the values at a key path into one
``(events, dim)`` float64 matrix per batch.

A value is valid when it is an array of exactly ``dim`` numbers (JSON integers or
floats, finite; booleans are not numbers).  Otherwise its row is NaN and it is
counted under one reason (:data:`VECTOR_REASONS`):

``missing``
    absent key, null, or a null parent;
``wrong_dimension``
    an array of another length;
``not_numeric``
    an array of ``dim`` values one of which is no finite number, or a value that is
    no array at all (a string, an object, a number).

A bad vector never rejects its event nor stops the batch: the event's other columns
are used as usual and the vector's row is skipped by its test.

The clean case (every value a list of ``dim`` ints/floats) is one pass over the
values' types and one ``np.fromiter`` over all numbers; anything else falls back to
row-by-row checks of the rows that failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Final

import numpy as np

__all__ = ["VECTOR_REASONS", "VectorColumn", "vector_column"]

VECTOR_REASONS: Final = ("missing", "wrong_dimension", "not_numeric")
_NUMBER_TYPES: Final = frozenset({int, float})


@dataclass(slots=True)
class VectorColumn:
    """One batch of an embedding column."""

    #: float64 (events, dim); NaN rows where the vector is not valid
    values: np.ndarray
    #: int8 per event: 0 valid, else 1 + the index of its reason in VECTOR_REASONS
    reason: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return self.reason == 0

    def counts(self) -> dict[str, int]:
        """reason -> number of events (every reason, zero counts included)."""
        c = np.bincount(self.reason, minlength=len(VECTOR_REASONS) + 1)
        return {r: int(c[i + 1]) for i, r in enumerate(VECTOR_REASONS)}

    def take(self, keep: np.ndarray) -> VectorColumn:
        return VectorColumn(self.values[keep], self.reason[keep])


def vector_column(values: Sequence[Any], dim: int) -> VectorColumn:
    """The ``(len(values), dim)`` matrix of ``values`` and each event's reason code."""
    n = len(values)
    out = np.full((n, dim), np.nan)
    reason = np.zeros(n, dtype=np.int8)
    if n == 0:
        return VectorColumn(out, reason)
    if set(map(type, values)) == {list} and set(map(len, values)) == {dim} \
            and set(map(type, chain.from_iterable(values))) <= _NUMBER_TYPES:
        try:
            flat = np.fromiter(chain.from_iterable(values), dtype=np.float64, count=n * dim)
        except (OverflowError, ValueError, TypeError):  # ints beyond the double range
            pass
        else:
            out = flat.reshape(n, dim)
            bad = ~np.isfinite(out).all(axis=1)
            if bad.any():
                out[bad] = np.nan
                reason[bad] = 3
            return VectorColumn(out, reason)
    for i, v in enumerate(values):
        reason[i] = _row(v, dim, out, i)
    return VectorColumn(out, reason)


def _row(value: Any, dim: int, out: np.ndarray, i: int) -> int:
    if value is None:
        return 1
    if not isinstance(value, list | tuple | np.ndarray):
        return 3
    if len(value) != dim:
        return 2
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            return 3
        row = value.astype(np.float64, copy=False).reshape(-1)
    else:
        if any(isinstance(x, bool) or not isinstance(x, int | float) for x in value):
            return 3
        try:
            row = np.array(value, dtype=np.float64)
        except (OverflowError, ValueError, TypeError):
            return 3
    if not np.isfinite(row).all():
        return 3
    out[i] = row
    return 0
