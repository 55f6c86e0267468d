"""The ``split`` statistic of :class:`~detectors.multivariate.JointTest`: one Hotelling
statistic per block of features, on a common scale.

A group's features fall in two blocks of very different size and tails: the
standardised values (``d`` of them, near-Gaussian once averaged) and the second-order
features (``d(d+1)/2`` products, or the random Fourier features).  One Hotelling
statistic over both (the ``hotelling`` statistic of older baselines) pays for a mean
shift with the degrees of freedom of every product (230 at 20 columns instead of 20),
and its short windows (10 % of the window) are dominated by the heavy tail of the
products' sum over a few events, which sets the threshold for every scale: with a
window of 100 events and a cadence of 10, a 0.3 σ shift of 10 of 20 columns took a
median 99 events to be seen, against 49 with a window of 500.

Here each block ``b`` (whitened on its own: ``dof_b`` directions) gives
``T_b = n |mean of the whitened features|²`` on each scale, and ``T_b`` is put on a
common scale before the largest is taken:

* its exact null mean ``dof_b`` and variance ``2 dof_b (n - 1)/n + V_b / n`` (``V_b``
  the variance of ``|whitened features|²`` over the reference rows: the kurtosis of
  the block, which a window of a few events inherits) are matched by a scaled
  chi-square (Satterthwaite), ``T_b / a ~ chi2(nu)`` with ``a = var / (2 dof_b)``,
  ``nu = 2 dof_b² / var``;
* which the Wilson-Hilferty transform maps to a standard normal score
  ``z = ((T/(a nu))^(1/3) - 1 + 2/(9 nu)) / sqrt(2/(9 nu))``.

The statistic is the largest ``z`` over blocks and scales; its nominal p-value is the
normal tail of that ``z`` (the calibration extrapolates on that scale, and reads the
threshold off simulated paths as for the other statistic).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

#: the statistics a :class:`~detectors.multivariate.JointProfile` can name; profiles of
#: older baselines (no name) use ``hotelling``, their thresholds being on its scale
STATISTICS = ("hotelling", "split")
#: what new profiles use
DEFAULT_STATISTIC = "split"


def whiten(cov: np.ndarray, floor: float) -> np.ndarray:
    """Columns scaling the eigenvectors of ``cov`` whose eigenvalue exceeds ``floor``
    times the largest by ``1/sqrt(eigenvalue)``."""
    w, v = np.linalg.eigh(np.atleast_2d(cov))
    keep = w > max(float(w.max()), 1e-300) * floor
    return np.asarray(v[:, keep] / np.sqrt(w[keep]))


def blocks_of(features: np.ndarray, n_values: int, floor: float,
              ) -> list[tuple[slice, np.ndarray, int, float]]:
    """(feature slice, whitening, dof, variance of the squared whitened norm) of the
    value block (the first ``n_values`` features) and the block of the others, from the
    reference's feature rows; a block without a direction is left out."""
    out = []
    for sl in (slice(0, n_values), slice(n_values, features.shape[1])):
        f = features[:, sl]
        if f.shape[1] == 0:
            continue
        p = whiten(np.cov(f, rowvar=False), floor)
        if p.shape[1] == 0:
            continue
        y = (f - f.mean(axis=0)) @ p
        v = float(np.var(np.einsum("ij,ij->i", y, y)))
        out.append((sl, p, int(p.shape[1]), v))
    return out


def share_block(onehot: np.ndarray, start: int) -> tuple[slice, np.ndarray, int, float]:
    """The block of the shares of ``k`` categories (``onehot``: the reference's one-hot
    rows, in features ``start`` to ``start + k``): its slice, the binomial spread
    ``sqrt(p (1 - p))`` of each share and ``-k`` as its mark.  Its score is the largest
    ``|z|`` of one share at a time, Bonferroni-corrected over the ``k`` and put on the
    normal scale: a change of one share pays for one direction, not for ``k - 1`` as in
    a Hotelling statistic over the shares."""
    k = onehot.shape[1]
    p = onehot.mean(axis=0)
    sd = np.sqrt(np.maximum(p * (1.0 - p), 1.0 / (4.0 * max(onehot.shape[0], 1))))
    return slice(start, start + k), sd, -k, 0.0


def split_scores(mean: np.ndarray, n: Any, blocks: Any) -> np.ndarray:
    """The largest normal score over the blocks of the window means ``mean`` (tests x
    features, centred on the reference) of ``n`` rows each (a number, or one per
    test)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.full(mean.shape[0], -np.inf)
    for sl, proj, dof, v in blocks:
        if dof < 0:  # a share block (share_block)
            zmax = np.sqrt(n) * np.abs(mean[:, sl] / proj).max(axis=1)
            p = np.clip(-2.0 * dof * ndtr(-zmax), 1e-300, 0.5)
            out = np.maximum(out, -ndtri(p))
            continue
        y = mean[:, sl] @ proj
        t = n * np.einsum("ij,ij->i", y, y)
        var = np.maximum(v / n + 2.0 * dof * (n - 1) / n, 1e-12)
        a, nu = var / (2.0 * dof), 2.0 * dof * dof / var
        c = 2.0 / (9.0 * nu)
        z = (np.cbrt(t / (a * nu)) - (1.0 - c)) / np.sqrt(c)
        out = np.maximum(out, z)
    return out
