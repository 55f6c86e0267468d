"""A stream for the estimated-performance tests (``labels.estimate``): predictions of model
``lm`` (see :mod:`tests.support.labels`) whose inputs may move while P(y|x) does not.

Event ``i``: ``{"model": "lm", "id": "r<i>", "ts": T0 + i / 10, "f": {"x": x}, "p":
{"score": s}, "label": y}`` with x ~ N(shift, scale), the true P(y=1|x) = sigmoid(2x - 1),
the score that probability or, with ``distort``, an over-confident sigmoid(4x - 1.5).  The
label rides inline (for references); label events come 0-60 s later for a share
``labelled`` of the events, sorted by their time.
"""

from __future__ import annotations

import numpy as np
import orjson

from tests.support.labels import T0


def estimate_stream(seed: int, n: int, *, shift: float = 0.0, scale: float = 1.0,
                    distort: bool = False, labelled: float = 0.3, start: int = 0,
                    ) -> tuple[list[bytes], list[bytes], np.ndarray, np.ndarray]:
    """Events, label events, scores and every true label."""
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, scale, n)
    prob = 1 / (1 + np.exp(-(2 * x - 1)))
    y = (rng.random(n) < prob).astype(int)
    score = 1 / (1 + np.exp(-(4 * x - 1.5))) if distort else prob
    idx = np.arange(start, start + n)
    ts = T0 + idx * 0.1
    events = [orjson.dumps({"model": "lm", "id": f"r{i}", "ts": float(t), "f": {"x": float(v)},
                            "p": {"score": float(s)}, "label": int(k)})
              for i, t, v, s, k in zip(idx.tolist(), ts.tolist(), x.tolist(), score.tolist(),
                                       y.tolist(), strict=True)]
    has = rng.random(n) < labelled
    lt = ts + rng.uniform(0, 60, n)
    order = np.argsort(lt, kind="stable")
    labels = [orjson.dumps({"model": "lm", "id": f"r{idx[k]}", "ts": float(lt[k]),
                            "label": int(y[k])}) for k in order.tolist() if has[k]]
    return events, labels, score, y
