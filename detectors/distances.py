"""Distances between a window's histogram and the baseline (exported, not alarming).

All take bin counts of the window and bin probabilities of the baseline over the
same bins.  Empty bins are smoothed with ``eps`` so no distance is infinite.
"""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-4


def _norm(counts: np.ndarray, eps: float = EPS) -> np.ndarray:
    q = np.asarray(counts, dtype=np.float64)
    tot = q.sum()
    q = q / tot if tot > 0 else np.full(q.size, 1.0 / q.size)
    q = q + eps
    return q / q.sum()


def psi(counts: np.ndarray, probs: np.ndarray) -> float:
    """Population stability index ``Σ (q - p) ln(q / p)``.

    Examples
    --------
    >>> psi(np.array([50, 50]), np.array([0.5, 0.5]))
    0.0
    >>> round(psi(np.array([90, 10]), np.array([0.5, 0.5])), 3)
    0.878
    """
    q, p = _norm(counts), _norm(probs)
    return float(max(0.0, np.sum((q - p) * np.log(q / p))))


def jensen_shannon(counts: np.ndarray, probs: np.ndarray) -> float:
    """Jensen–Shannon distance (square root of the divergence, base 2; in [0, 1]).

    Examples
    --------
    >>> jensen_shannon(np.array([1, 0]), np.array([0.0, 1.0])) > 0.99
    True
    """
    q, p = _norm(counts), _norm(probs)
    m = 0.5 * (p + q)
    js = 0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m))
    return float(math.sqrt(max(0.0, min(1.0, js))))


def wasserstein_binned(counts: np.ndarray, probs: np.ndarray, edges: np.ndarray,
                       scale: float) -> float:
    """Wasserstein-1 distance on the baseline's quantile bins, divided by ``scale``.

    The CDF difference at each interior edge is weighted by the width of the
    interval that follows it, so mass moving across bins counts by how far it
    moves; movement beyond the outermost edges is not seen (a binned
    approximation).  ``scale`` is normally the baseline's standard deviation.

    Examples
    --------
    >>> edges = np.array([0.0, 1.0, 2.0])
    >>> wasserstein_binned(np.array([0, 0, 10, 0]), np.array([0, 0, 1.0, 0]), edges, 1.0)
    0.0
    >>> wasserstein_binned(np.array([0, 10, 0, 0]), np.array([0, 0, 1.0, 0]), edges, 1.0)
    1.0
    """
    edges = np.asarray(edges, dtype=np.float64)
    if edges.size < 2 or not scale > 0:
        return 0.0
    q = np.asarray(counts, dtype=np.float64)
    tot = q.sum()
    if tot <= 0:
        return 0.0
    cq = np.cumsum(q / tot)[: edges.size]
    cp = np.cumsum(np.asarray(probs, dtype=np.float64))[: edges.size]
    widths = np.diff(edges)
    return float(np.sum(np.abs(cq - cp)[:-1] * widths) / scale)
