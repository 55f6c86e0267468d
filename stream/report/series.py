"""Bounded series for plots: any stream length, at most ``capacity`` points per line.

A :class:`SeriesBlock` holds several lines sampled at the same positions (one row per
line).  While it has room it keeps every sample; when full it halves itself by taking
the maximum of each pair of neighbouring points, and from then on folds that many
samples into each new point.  Scores and ratios are plotted as the worst value of each
interval, so a short spike stays visible however long the stream.

>>> import numpy as np
>>> b = SeriesBlock(["a", "b"], capacity=4)
>>> for i in range(10):
...     b.append(i, np.array([float(i % 3), -float(i)]))
>>> x, y = b.points()
>>> len(x) <= 5, int(x[-1]), y.shape[0]
(True, 9, 2)
>>> float(y[0].max())
2.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class SeriesBlock:
    """Lines named ``names`` sampled together; memory bounded by ``capacity``."""

    def __init__(self, names: Sequence[str], capacity: int = 1024) -> None:
        if capacity < 2 or capacity % 2:
            raise ValueError(f"capacity must be an even number >= 2, got {capacity!r}")
        self.names = list(names)
        self.capacity = capacity
        self._x = np.zeros(capacity, dtype=np.int64)
        self._y = np.zeros((len(self.names), capacity), dtype=np.float64)
        self._n = 0
        #: raw samples folded into each stored point
        self.stride = 1
        self._pend_x = 0
        self._pend_y = np.full(len(self.names), -np.inf)
        self._pend_n = 0
        #: raw samples appended
        self.samples = 0

    def append(self, x: int, y: np.ndarray) -> None:
        """One sample of every line at position ``x`` (non-decreasing)."""
        self.samples += 1
        np.maximum(self._pend_y, y, out=self._pend_y)
        self._pend_x = x
        self._pend_n += 1
        if self._pend_n < self.stride:
            return
        if self._n == self.capacity:
            half = self.capacity // 2
            self._x[:half] = self._x[1::2]
            self._y[:, :half] = np.maximum(self._y[:, 0::2], self._y[:, 1::2])
            self._n = half
            self.stride *= 2
        self._x[self._n] = self._pend_x
        self._y[:, self._n] = self._pend_y
        self._n += 1
        self._pend_y.fill(-np.inf)
        self._pend_n = 0

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions, values with one row per line), the pending partial point included."""
        x, y = self._x[: self._n], self._y[:, : self._n]
        if self._pend_n:
            x = np.append(x, self._pend_x)
            y = np.hstack([y, self._pend_y[:, None]])
        return x.copy(), y.copy()

    def row(self, name: str) -> np.ndarray:
        """The values of line ``name`` (see :meth:`points`)."""
        return self.points()[1][self.names.index(name)]
