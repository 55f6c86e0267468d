"""Are several streams alike?  A calibrated test of homogeneity across partitions.

Every partition's monitor compares its stream with the model-wide baseline, which is
right only when the partitions are statistically alike: a topic keyed by a feature
(country, tenant, region) gives each partition a slice of the traffic, and every
partition then looks drifted for good.  This module holds the statistics that tell:

* :class:`BlockedCounts` keeps, per partition, the bin counts of every column over the
  recent events: a ring of ``blocks`` blocks of at least ``block_events`` events each,
  so memory is bounded by the number of bins, never by the window or the stream;
* :func:`homogeneity_test` tests a partitions × bins table of counts for homogeneity:
  the likelihood-ratio statistic G with Williams' correction, referred to the
  chi-square distribution with (P−1)(K−1) degrees of freedom.  Sparse bins are merged
  first (by the column totals only, which the null hypothesis leaves free, so the merge
  does not bias the test): every cell's expected count is at least ``min_expected``.
  G's upper tail decays as the chi-square's (G/2 is the multinomial rate function), so
  tiny p-values stay meaningful where Pearson's X² would be far too optimistic.

The test assumes independent events, which a randomly keyed topic gives.  A partition
far behind the others (reading older data) is not alike either: a true difference, but
of time, not of key.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> same = rng.multinomial(2_000, [0.5, 0.3, 0.2], size=4)   # 4 partitions, 3 bins
>>> r = homogeneity_test(same, alpha=1e-6)
>>> r.partitions, r.dof, r.rejected
(4, 6, False)
>>> keyed = np.array([[900, 0, 0, 100], [0, 950, 0, 0], [0, 0, 970, 0], [0, 0, 0, 1000]])
>>> r = homogeneity_test(keyed, alpha=1e-6)
>>> r.rejected, r.worst, round(r.purity, 2)
(True, 1, 0.97)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

from detectors.errors import DetectorError

__all__ = ["BlockedCounts", "HomogeneityResult", "homogeneity_test", "merge_sparse"]

#: share of a column's values that lie in the partition holding most of their bin, above
#: which the column itself looks like the partition key (each value lives on one partition)
KEY_PURITY = 0.9


class HomogeneityResult(NamedTuple):
    """One test of a partitions × bins table.

    ``statistic`` is G / q (Williams-corrected), ``threshold`` its critical value at
    ``alpha``; ``score`` = statistic / threshold (≥ 1: significant).  ``effect`` is the
    largest total-variation distance between one partition's distribution and the
    pooled one (over the merged bins); ``worst`` is that partition's row.  ``purity``
    is the share of values lying in the partition that holds most of their (unmerged)
    bin: about 1/P for alike partitions, near 1 when the column is the key.
    """

    statistic: float
    threshold: float
    p_value: float
    dof: int
    effect: float
    worst: int
    purity: float
    partitions: int
    rejected: bool

    @property
    def score(self) -> float:
        return self.statistic / self.threshold if self.threshold > 0 else 0.0


def merge_sparse(totals: np.ndarray, min_total: float, ordered: bool) -> np.ndarray:
    """Group of each bin, so that every group's total is at least ``min_total``.

    ``ordered`` bins (quantile bins of a number) merge with their neighbours, left to
    right; unordered ones (categories) keep the large bins apart and pool the small ones
    (into the smallest large bin if the pool stays too small).  Bins with a zero total
    go to any group: they add nothing.

    >>> merge_sparse(np.array([1, 9, 2, 2, 8, 1]), 5, ordered=True).tolist()
    [0, 0, 1, 1, 1, 1]
    >>> merge_sparse(np.array([1, 9, 2, 2, 8, 1]), 5, ordered=False).tolist()
    [2, 0, 2, 2, 1, 2]
    """
    t = np.asarray(totals, dtype=np.float64)
    groups = np.zeros(t.size, dtype=np.int64)
    if ordered:
        g, acc = 0, 0.0
        for i, x in enumerate(t.tolist()):
            groups[i] = g
            acc += x
            if acc >= min_total and i < t.size - 1:
                g, acc = g + 1, 0.0
        if acc < min_total and g > 0:  # a short last group joins the one before
            groups[groups == g] = g - 1
        return groups
    big = np.flatnonzero(t >= min_total)
    groups[:] = big.size
    groups[big] = np.arange(big.size)
    pool = t.sum() - t[big].sum()
    if 0 < pool < min_total and big.size:
        groups[groups == big.size] = int(np.argmin(t[big]))
    elif pool == 0:
        groups[groups == big.size] = 0
    return groups


def homogeneity_test(table: Any, alpha: float, min_expected: float = 5.0,
                     ordered: bool = True, min_effect: float = 0.0,
                     min_count: int = 1, skip_purity: int | None = None) -> HomogeneityResult:
    """Test whether the rows of a partitions × bins table of counts share one distribution.

    Rows with fewer than ``min_count`` values are left out; with fewer than 2 rows, or
    a single bin after merging, nothing can be tested (``partitions`` < 2 or ``dof``
    0, never rejected).  ``rejected``: p-value ≤ ``alpha`` and effect ≥ ``min_effect``.
    ``skip_purity``: a bin left out of the purity (a categorical *other* bucket, which
    pools many categories).
    """
    if not 0 < alpha < 1:
        raise DetectorError(f"alpha must be in (0, 1), got {alpha!r}")
    tab = np.asarray(table, dtype=np.float64)
    if tab.ndim != 2 or np.any(tab < 0) or not np.all(np.isfinite(tab)):
        raise DetectorError("table must be a 2-d array of non-negative counts")
    tab = tab[tab.sum(axis=1) >= max(min_count, 1)]
    p = tab.shape[0]
    none = HomogeneityResult(0.0, math.inf, 1.0, 0, 0.0, -1, 0.0, p, False)
    if p < 2:
        return none
    raw = tab
    rows = tab.sum(axis=1)
    n = float(rows.sum())
    groups = merge_sparse(tab.sum(axis=0), min_expected * n / float(rows.min()), ordered)
    k = int(groups.max()) + 1
    if k < 2:
        return none
    merged = np.zeros((p, k))
    np.add.at(merged.T, groups, tab.T)
    tab = merged
    cols = tab.sum(axis=0)
    expected = np.outer(rows, cols) / n
    nz = tab > 0
    g = 2.0 * float(np.sum(tab[nz] * np.log(tab[nz] / expected[nz])))
    dof = (p - 1) * (k - 1)
    q = 1.0 + (n * float(np.sum(1.0 / rows)) - 1.0) * (n * float(np.sum(1.0 / cols)) - 1.0) \
        / (6.0 * n * dof)
    statistic = max(g, 0.0) / q
    p_value = float(stats.chi2.sf(statistic, dof))
    threshold = float(stats.chi2.isf(alpha, dof))
    tv = 0.5 * np.abs(tab / rows[:, None] - cols / n).sum(axis=1)
    worst = int(np.argmax(tv))
    purity_tab = raw if skip_purity is None else np.delete(raw, skip_purity, axis=1)
    total = float(purity_tab.sum())
    purity = float(purity_tab.max(axis=0).sum()) / total if total else 0.0
    effect = float(tv[worst])
    return HomogeneityResult(statistic, threshold, p_value, dof, effect, worst, purity, p,
                             bool(p_value <= alpha and effect >= min_effect))


class BlockedCounts:
    """Bin counts of the recent events of one stream, in a ring of blocks.

    ``update(codes)`` adds a batch of codes in ``[0, size)`` (one flat index space:
    callers give each column its own range); the current block closes once it holds
    ``block_events`` events, and the oldest block is then dropped.  :attr:`counts`
    sums the ring: between ``(blocks − 1) × block_events`` and ``blocks ×
    block_events`` events plus one batch.  With ``block_events=None`` blocks close only
    on :meth:`next_block`: several streams whose blocks close together cover the same
    stretch of time, whatever their rates.

    >>> bc = BlockedCounts(size=3, block_events=2, blocks=3)
    >>> for batch in ([0, 1], [1, 1], [2, 2]):
    ...     _ = bc.update(np.array(batch), len(batch))
    >>> bc.counts.tolist(), bc.events
    ([0, 2, 2], 4)
    >>> BlockedCounts.from_dict(bc.to_dict()).counts.tolist()
    [0, 2, 2]
    """

    def __init__(self, size: int, block_events: int | None, blocks: int = 10) -> None:
        for name, value, low in (("size", size, 1), ("block_events", block_events, 1),
                                 ("blocks", blocks, 2)):
            if value is None and name == "block_events":
                continue
            if isinstance(value, bool) or not isinstance(value, int | np.integer) \
                    or value < low:
                raise DetectorError(f"{name} must be an integer >= {low}, got {value!r}")
        self.size, self.blocks = int(size), int(blocks)
        self.block_events = None if block_events is None else int(block_events)
        self._counts = np.zeros((self.blocks, self.size), dtype=np.int64)
        self._events = np.zeros(self.blocks, dtype=np.int64)
        self._current = 0

    def update(self, codes: np.ndarray, n_events: int) -> BlockedCounts:
        """Add the codes of a batch of ``n_events`` events (several codes per event)."""
        if codes.size:
            self._counts[self._current] += np.bincount(codes, minlength=self.size)
        self._events[self._current] += n_events
        if self.block_events is not None and self._events[self._current] >= self.block_events:
            self.next_block()
        return self

    def next_block(self) -> BlockedCounts:
        """Close the current block: the oldest one is dropped."""
        self._current = (self._current + 1) % self.blocks
        self._counts[self._current] = 0
        self._events[self._current] = 0
        return self

    @property
    def counts(self) -> np.ndarray:
        """Counts per code over the ring."""
        return self._counts.sum(axis=0)  # type: ignore[no-any-return]

    @property
    def events(self) -> int:
        """Events in the ring."""
        return int(self._events.sum())

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "block_events": self.block_events, "blocks": self.blocks,
                "current": self._current, "counts": self._counts.tolist(),
                "events": self._events.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BlockedCounts:
        out = cls(data["size"], data["block_events"], data["blocks"])
        counts = np.asarray(data["counts"], dtype=np.int64)
        events = np.asarray(data["events"], dtype=np.int64)
        current = data["current"]
        if counts.shape != out._counts.shape or events.shape != out._events.shape \
                or not isinstance(current, int) or not 0 <= current < out.blocks \
                or np.any(counts < 0) or np.any(events < 0):
            raise DetectorError("blocked counts: state does not match its size and blocks")
        out._counts, out._events, out._current = counts, events, current
        return out

    def __repr__(self) -> str:
        return (f"BlockedCounts(size={self.size}, block_events={self.block_events}, "
                f"blocks={self.blocks}, events={self.events})")
