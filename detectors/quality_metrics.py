"""Model-quality metrics of joined (label, prediction) pairs, since start and over a recent window.

Every metric is computed from *sufficient statistics* that add up over batches (counts,
sums, fixed-bin score histograms), so memory is bounded by the settings, never by the
stream: a binary task keeps two score histograms of :data:`SCORE_BINS` bins, a multiclass
task a confusion matrix of at most :data:`MAX_CLASSES` classes, and the recent window a
ring of the last ``window`` pairs.

* binary (label 1 = the positive class, score = P(positive)): accuracy, precision, recall,
  F1 at ``threshold``; ROC AUC from the score histograms (pairs whose scores fall in the
  same bin count one half: the error is at most half the share of such pairs, below
  0.5 / :data:`SCORE_BINS` for continuous scores); log loss (scores clipped to
  [1e-15, 1 - 1e-15] as scikit-learn does); Brier score; expected calibration error over
  :data:`ECE_BINS` equal-width bins;
* multiclass: accuracy and macro F1 (over the classes seen as label or prediction);
* regression: MAE, RMSE and mean error (prediction - label).

>>> import numpy as np
>>> q = QualityMetrics("binary", window=100)
>>> q.update(np.array([1.0, 0.0, 1.0, 0.0]), np.array([0.9, 0.2, 0.4, 0.6]))
>>> m = q.metrics()
>>> m["accuracy"], m["roc_auc"], round(m["brier"], 4)
(0.5, 0.75, 0.1925)
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

__all__ = ["ECE_BINS", "MAX_CLASSES", "METRICS", "SCORE_BINS", "TASKS", "QualityMetrics",
           "merged_metrics"]

TASKS: Final = ("binary", "multiclass", "regression")
#: the metrics of each task, in export order
METRICS: Final = {
    "binary": ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier", "ece"),
    "multiclass": ("accuracy", "macro_f1"),
    "regression": ("mae", "rmse", "mean_error"),
}
SCORE_BINS: Final = 1000
ECE_BINS: Final = 10
#: classes a multiclass task tells apart; labels beyond share the last index
MAX_CLASSES: Final = 256
_EPS: Final = 1e-15


def _binary_stats(y: np.ndarray, s: np.ndarray, threshold: float) -> np.ndarray:
    """One flat float64 vector: [n, tp, fp, tn, fn, log-loss sum, brier sum,
    positives' histogram (SCORE_BINS), negatives' histogram, score sum per bin]."""
    s = np.clip(s, 0.0, 1.0)
    pos = y > 0.5
    pred = s >= threshold
    b = np.minimum((s * SCORE_BINS).astype(np.int64), SCORE_BINS - 1)
    c = np.clip(s, _EPS, 1 - _EPS)
    ll = -np.where(pos, np.log(c), np.log1p(-c)).sum()
    head = np.array([y.shape[0], np.count_nonzero(pos & pred), np.count_nonzero(~pos & pred),
                     np.count_nonzero(~pos & ~pred), np.count_nonzero(pos & ~pred), ll,
                     float(np.square(s - pos).sum())])
    return np.concatenate([head, np.bincount(b[pos], minlength=SCORE_BINS),
                           np.bincount(b[~pos], minlength=SCORE_BINS),
                           np.bincount(b, weights=s, minlength=SCORE_BINS)])


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("nan")


def _binary_metrics(st: np.ndarray) -> dict[str, float]:
    n, tp, fp, tn, fn, ll, brier = st[:7]
    hp = st[7:7 + SCORE_BINS]
    hn = st[7 + SCORE_BINS:7 + 2 * SCORE_BINS]
    ssum = st[7 + 2 * SCORE_BINS:]
    p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    npos, nneg = hp.sum(), hn.sum()
    below = np.cumsum(hn) - hn
    auc = _ratio(float((hp * (below + 0.5 * hn)).sum()), float(npos * nneg))
    # expected calibration error over ECE_BINS equal-width bins
    k = SCORE_BINS // ECE_BINS
    cnt = (hp + hn).reshape(ECE_BINS, k).sum(1)
    pos_b = hp.reshape(ECE_BINS, k).sum(1)
    sc_b = ssum.reshape(ECE_BINS, k).sum(1)
    ok = cnt > 0
    ece = float((np.abs(sc_b[ok] - pos_b[ok])).sum() / n) if n else float("nan")
    return {"accuracy": _ratio(tp + tn, n), "precision": p, "recall": r, "f1": f1,
            "roc_auc": auc, "log_loss": _ratio(ll, n), "brier": _ratio(brier, n), "ece": ece}


def _regression_stats(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    e = p - y
    return np.array([y.shape[0], e.sum(), np.abs(e).sum(), np.square(e).sum()])


def _regression_metrics(st: np.ndarray) -> dict[str, float]:
    n, se, sa, sq = st
    return {"mae": _ratio(sa, n), "rmse": float(np.sqrt(_ratio(sq, n))),
            "mean_error": _ratio(se, n)}


def _multiclass_stats(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The confusion matrix (label index x predicted index), flattened."""
    yi, pi = y.astype(np.int64), p.astype(np.int64)
    return np.bincount(yi * MAX_CLASSES + pi,
                       minlength=MAX_CLASSES * MAX_CLASSES).astype(np.float64)


def _multiclass_metrics(st: np.ndarray) -> dict[str, float]:
    cm = st.reshape(MAX_CLASSES, MAX_CLASSES)
    n = cm.sum()
    tp = np.diag(cm)
    seen = (cm.sum(0) + cm.sum(1)) > 0
    denom = cm.sum(0) + cm.sum(1)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"accuracy": _ratio(float(tp.sum()), float(n)),
            "macro_f1": float(f1[seen].mean()) if seen.any() else float("nan")}


class QualityMetrics:
    """The quality of one model's predictions from joined pairs; bounded memory.

    Parameters
    ----------
    task : {"binary", "multiclass", "regression"}
    window : int
        Joined pairs in the recent-window metrics (a ring of that many pairs).
    threshold : float
        Binary only: a score >= threshold predicts the positive class.

    ``update(y, p)`` takes float64 arrays: binary ``y`` in {0, 1} and ``p`` the score;
    regression the values; multiclass the class indices from :meth:`class_index`.
    """

    def __init__(self, task: str, window: int = 1000, threshold: float = 0.5) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.task = task
        self.window = int(window)
        self.threshold = float(threshold)
        self.total = self._stats(np.empty(0), np.empty(0))
        self.ring_y = np.zeros(self.window)
        self.ring_p = np.zeros(self.window)
        #: pairs seen (the ring holds the last min(n, window))
        self.n = 0
        #: multiclass: class value -> index (at most MAX_CLASSES; later ones share the last)
        self.classes: dict[str, int] = {}

    def class_index(self, values: np.ndarray | list[Any]) -> np.ndarray:
        """Multiclass: the index of each class value (strings), new classes numbered."""
        out = np.empty(len(values), dtype=np.float64)
        for i, v in enumerate(values):
            key = str(v)
            j = self.classes.get(key)
            if j is None:
                j = min(len(self.classes), MAX_CLASSES - 1)
                if len(self.classes) < MAX_CLASSES:
                    self.classes[key] = j
            out[i] = j
        return out

    def _stats(self, y: np.ndarray, p: np.ndarray) -> np.ndarray:
        if self.task == "binary":
            return _binary_stats(y, p, self.threshold)
        if self.task == "regression":
            return _regression_stats(y, p)
        return _multiclass_stats(y, p)

    def _metrics(self, st: np.ndarray) -> dict[str, float]:
        if self.task == "binary":
            return _binary_metrics(st)
        if self.task == "regression":
            return _regression_metrics(st)
        return _multiclass_metrics(st)

    def update(self, y: np.ndarray, p: np.ndarray) -> None:
        """Add joined pairs (finite values only)."""
        y = np.asarray(y, dtype=np.float64)
        p = np.asarray(p, dtype=np.float64)
        if y.shape != p.shape:
            raise ValueError(f"labels and predictions differ in length: {y.shape} vs {p.shape}")
        if not y.shape[0]:
            return
        self.total += self._stats(y, p)
        k = y.shape[0]
        if k >= self.window:
            self.ring_y[:] = y[-self.window:]
            self.ring_p[:] = p[-self.window:]
        else:
            idx = (self.n + np.arange(k)) % self.window
            self.ring_y[idx] = y
            self.ring_p[idx] = p
        self.n += k

    def recent(self) -> tuple[np.ndarray, np.ndarray]:
        """The last min(n, window) pairs, oldest first."""
        m = min(self.n, self.window)
        idx = (self.n - m + np.arange(m)) % self.window
        return self.ring_y[idx], self.ring_p[idx]

    def metrics(self, recent: bool = False) -> dict[str, float]:
        """The task's metrics since start (or over the recent window); NaN where undefined."""
        if recent:
            return self._metrics(self._stats(*self.recent()))
        return self._metrics(self.total)

    def errors(self, y: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Per pair: 1.0 for a wrong prediction (classification) or the absolute error."""
        if self.task == "binary":
            return ((p >= self.threshold) != (y > 0.5)).astype(np.float64)
        if self.task == "multiclass":
            return (p != y).astype(np.float64)
        return np.abs(p - y)

    # -- state ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        y, p = self.recent()
        nz = np.flatnonzero(self.total)
        return {"task": self.task, "window": self.window, "threshold": self.threshold,
                "n": self.n, "size": int(self.total.shape[0]),
                "total": [nz.tolist(), self.total[nz].tolist()],
                "recent_y": y.tolist(), "recent_p": p.tolist(), "classes": dict(self.classes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QualityMetrics:
        q = cls(d["task"], int(d["window"]), float(d["threshold"]))
        if int(d["size"]) != q.total.shape[0]:
            raise ValueError("saved statistics of another layout")
        idx, vals = d["total"]
        q.total[np.asarray(idx, dtype=np.int64)] = np.asarray(vals, dtype=np.float64)
        y = np.asarray(d["recent_y"], dtype=np.float64)
        p = np.asarray(d["recent_p"], dtype=np.float64)
        m = y.shape[0]
        q.ring_y[:m], q.ring_p[:m] = y, p
        q.n = int(d["n"])
        # the ring is read from position n - m: rotate the saved pairs into place
        start = (q.n - m) % q.window
        order = (start + np.arange(m)) % q.window
        q.ring_y[order], q.ring_p[order] = y, p
        q.classes = {str(k): int(v) for k, v in d.get("classes", {}).items()}
        return q

    def __repr__(self) -> str:
        return f"QualityMetrics(task={self.task!r}, window={self.window}, n={self.n})"


def merged_metrics(parts: list[QualityMetrics], recent: bool = False) -> dict[str, float]:
    """The metrics of several :class:`QualityMetrics` of one task taken together (the
    partitions of a model): since start, their statistics add up; ``recent``, the recent
    windows of all of them.  Multiclass indices are mapped through the class names.

    >>> import numpy as np
    >>> a, b = QualityMetrics("regression"), QualityMetrics("regression")
    >>> a.update(np.zeros(2), np.ones(2)); b.update(np.zeros(2), np.array([3.0, 3.0]))
    >>> merged_metrics([a, b])["mae"]
    2.0
    """
    if not parts:
        raise ValueError("no metrics to merge")
    first = parts[0]
    if first.task != "multiclass":
        if recent:
            ys, ps = zip(*(q.recent() for q in parts), strict=True)
            return first._metrics(first._stats(np.concatenate(ys), np.concatenate(ps)))
        return first._metrics(sum((q.total for q in parts), np.zeros_like(first.total)))
    names: dict[str, int] = {}
    total = np.zeros_like(first.total)
    ys_all, ps_all = [], []
    for q in parts:
        perm = np.full(MAX_CLASSES, MAX_CLASSES - 1, dtype=np.int64)
        for name, i in q.classes.items():
            perm[i] = names.setdefault(name, min(len(names), MAX_CLASSES - 1))
        if recent:
            y, p = q.recent()
            ys_all.append(perm[y.astype(np.int64)].astype(np.float64))
            ps_all.append(perm[p.astype(np.int64)].astype(np.float64))
        else:
            cm = q.total.reshape(MAX_CLASSES, MAX_CLASSES)
            out = np.zeros((MAX_CLASSES, MAX_CLASSES))
            np.add.at(out, (perm[:, None], perm[None, :]), cm)
            total += out.ravel()
    if recent:
        return first._metrics(first._stats(np.concatenate(ys_all), np.concatenate(ps_all)))
    return first._metrics(total)
