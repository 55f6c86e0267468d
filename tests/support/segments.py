"""Synthetic events of model ``m1`` with a segment field, for the segment tests and
``bench/bench_segments.py``.

An event::

    {"model": "m1", "region": "a".."f", "ts": t,
     "f": {"x1": <normal, mean by region>, "x2": <normal, sd by region>, "c1": "u"|"v"|"w"}}

Regions ``a``-``d`` carry 40, 30, 23 and 5 % of the traffic, ``e`` and ``f`` 1 % each
(pooled as ``other`` with ``top_k: 4``).  The regions differ (x1's mean, x2's spread),
so a model-wide baseline would not fit any one of them.  ``shift`` adds to x1 in
``shift_region`` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

MODEL = "m1"
REGIONS = ("a", "b", "c", "d", "e", "f")
SHARES = (0.40, 0.30, 0.23, 0.05, 0.01, 0.01)
X1_MEAN = {"a": 0.0, "b": 0.5, "c": -0.5, "d": 1.0, "e": 2.0, "f": -1.0}
X2_SD = {"a": 1.0, "b": 1.5, "c": 1.0, "d": 0.7, "e": 1.0, "f": 2.0}


def segment_events(n: int, seed: int, *, shift_region: str | None = None,
                   shift: float = 0.0, start_ts: float = 1.7e9) -> list[bytes]:
    """``n`` events (JSON bytes) drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    reg = rng.choice(np.array(REGIONS, dtype=object), n, p=SHARES)
    mean = np.vectorize(X1_MEAN.__getitem__, otypes=[float])(reg)
    sd = np.vectorize(X2_SD.__getitem__, otypes=[float])(reg)
    x1 = rng.normal(size=n) + mean
    if shift_region is not None:
        x1 = x1 + shift * (reg == shift_region)
    x2 = rng.normal(size=n) * sd
    c1 = rng.choice(np.array(["u", "v", "w"], dtype=object), n, p=[0.5, 0.3, 0.2])
    return [orjson.dumps({"model": MODEL, "region": r, "ts": start_ts + i * 0.001,
                          "f": {"x1": float(a), "x2": float(b), "c1": c}})
            for i, (r, a, b, c) in enumerate(zip(reg.tolist(), x1.tolist(), x2.tolist(),
                                                 c1.tolist(), strict=True))]


def segment_model(*, top_k: int = 4, columns: list[str] | None = None,
                  min_reference_events: int = 1000) -> dict[str, Any]:
    """The configuration of model m1 with the segment ``region`` (reference.jsonl beside
    the configuration file)."""
    seg: dict[str, Any] = {"path": "region", "top_k": top_k,
                           "min_reference_events": min_reference_events}
    if columns:
        seg["columns"] = columns
    return {"name": MODEL, "select": {"field": "model", "equals": MODEL},
            "baseline": {"reference": "reference.jsonl"},
            "features": [{"name": "x1", "path": "f.x1", "type": "numeric"},
                         {"name": "x2", "path": "f.x2", "type": "numeric"},
                         {"name": "c1", "path": "f.c1", "type": "categorical"}],
            "segments": [seg]}


def write_reference(path: Path, n: int = 60_000, seed: int = 1) -> Path:
    path.write_bytes(b"\n".join(segment_events(n, seed)) + b"\n")
    return path
