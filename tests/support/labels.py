"""A labelled stream for the label-join tests: predictions of model ``lm`` and their labels.

Event ``i`` is ``{"model": "lm", "id": "r<i>", "ts": T0 + i * dt, "f": {"x": x},
"p": {"score": s}}`` with ``s = sigmoid(2 x)``; its label ``{"model": "lm", "id": "r<i>", "ts":
ts + delay, "label": y}`` has ``y ~ Bernoulli(s)`` (the model is calibrated) or, with ``flip``,
the opposite class with probability ``flip`` (a concept drift: P(y|x) changes, x does not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

T0 = 1.7e9
MODEL = "lm"


@dataclass
class Labelled:
    events: list[bytes]
    labels: list[bytes]
    #: per event: its time, score, label (NaN: never labelled), label time
    ts: np.ndarray
    score: np.ndarray
    y: np.ndarray
    label_ts: np.ndarray


def labelled_stream(seed: int, n: int, *, dt: float = 0.1, max_delay: float = 60.0,
                    labelled: float = 0.8, flip: float = 0.0, start: int = 0) -> Labelled:
    """``n`` events from number ``start``; a share ``labelled`` of them gets a label
    ``U(0, max_delay)`` seconds of event time later; labels sorted by their time."""
    rng = np.random.default_rng(seed)
    idx = np.arange(start, start + n)
    ts = T0 + idx * dt
    x = rng.normal(size=n)
    score = 1 / (1 + np.exp(-2 * x))
    y = (rng.random(n) < score).astype(float)
    if flip:
        y = np.where(rng.random(n) < flip, 1 - y, y)
    has = rng.random(n) < labelled
    delay = rng.uniform(0, max_delay, n)
    label_ts = ts + delay
    events = [orjson.dumps({"model": MODEL, "id": f"r{i}", "ts": float(t), "f": {"x": float(v)},
                            "p": {"score": float(s)}})
              for i, t, v, s in zip(idx.tolist(), ts.tolist(), x.tolist(), score.tolist(),
                                    strict=True)]
    order = np.argsort(label_ts, kind="stable")
    labels = [orjson.dumps({"model": MODEL, "id": f"r{idx[k]}", "ts": float(label_ts[k]),
                            "label": int(y[k])})
              for k in order.tolist() if has[k]]
    return Labelled(events, labels, ts, score, np.where(has, y, np.nan), label_ts)


def labels_config(**labels: Any) -> dict[str, Any]:
    """The ``labels:`` section of model ``lm`` (binary, positive class 1)."""
    return {"topic": "lm-labels", "id_path": "id", "label_path": "label", "task": "binary",
            "positive_class": 1, "score_column": "score", "horizon_s": 120, "label_wait_s": 30,
            **labels}


def lm_model(**labels: Any) -> dict[str, Any]:
    """Model ``lm``'s configuration (reference ``reference.jsonl`` beside the config)."""
    return {"name": MODEL, "select": {"field": "model", "equals": MODEL},
            "baseline": {"reference": "reference.jsonl"},
            "features": [{"name": "x", "path": "f.x", "type": "numeric"}],
            "predictions": [{"name": "score", "path": "p.score", "type": "numeric"}],
            "labels": labels_config(**labels)}


def reference_lines(seed: int, n: int) -> list[bytes]:
    """Reference events of ``lm`` with their labels inline (``"label"``)."""
    s = labelled_stream(seed, n, labelled=1.0)
    out = []
    for raw, y in zip(s.events, s.y.tolist(), strict=True):
        event = orjson.loads(raw)
        event["label"] = int(y)
        out.append(orjson.dumps(event))
    return out
