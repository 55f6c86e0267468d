"""Events of a linear model with exact SHAP values, for the attribution tests.

Model ``attr``: prediction ``p = sum_i w_i x_i`` over features x0..x3 (standard normal);
its SHAP values are ``w_i x_i`` (the features' means are 0), carried at
``explanation.shap``.  Scenarios: ``weights`` swapped (the model now leans on another
feature: an attribution drift with unchanged features), or one feature ``shift``ed (its
drift drives the prediction's).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

MODEL = "attr"
FEATURES = ("x0", "x1", "x2", "x3")
WEIGHTS = (2.0, 1.0, 0.5, 0.25)


def events(seed: int, parts: Sequence[tuple[int, Sequence[float], Sequence[float]]],
           t0: float = 1.7e9, shap: bool = True) -> list[bytes]:
    """JSON events: ``parts`` of (count, weights, mean shift of each feature)."""
    rng = np.random.default_rng(seed)
    out: list[bytes] = []
    for n, w, shift in parts:
        x = rng.normal(size=(n, len(FEATURES))) + np.asarray(shift)
        attr = x * np.asarray(w)
        p = attr.sum(axis=1)
        for xr, ar, pr in zip(x.round(6).tolist(), attr.round(6).tolist(),
                              p.round(6).tolist(), strict=True):
            ev: dict[str, Any] = {"model": MODEL, "ts": t0 + len(out) * 0.001,
                                  "f": dict(zip(FEATURES, xr, strict=True)), "p": pr}
            if shap:
                ev["explanation"] = {"shap": dict(zip(FEATURES, ar, strict=True))}
            out.append(orjson.dumps(ev))
    return out


CLEAN = (WEIGHTS, (0.0,) * 4)
#: the model now leans on x3 most and on x0 least (features unchanged)
SWAPPED = ((0.25, 1.0, 0.5, 2.0), (0.0,) * 4)
#: x1 shifts by +2 sd: the prediction drifts because of it
X1_SHIFT = (WEIGHTS, (0.0, 2.0, 0.0, 0.0))


def config(reference: str, *, attributions: dict[str, Any] | bool | None = None,
           importances: dict[str, float] | None = None,
           detection: dict[str, Any] | None = None, **source: Any) -> dict[str, Any]:
    """A configuration of model attr (attributions at explanation.shap by default)."""
    model: dict[str, Any] = {
        "name": MODEL, "select": {"field": "model", "equals": MODEL},
        "baseline": {"reference": reference},
        "features": [{"name": f, "path": f"f.{f}", "type": "numeric"} for f in FEATURES],
        "predictions": [{"name": "p", "path": "p", "type": "numeric"}],
    }
    if attributions is not False:
        model["attributions"] = attributions if isinstance(attributions, dict) else {"path": "explanation.shap", "window": 500}
    if importances:
        model["importances"] = importances
    return {
        "source": source or {"kafka": {"bootstrap_servers": "127.0.0.1:9", "topics": ["t"],
                                       "group_id": "g"}},
        "models": [model],
        "detection": detection or {"false_alarm_events": 1_000_000, "window": 500,
                                   "cadence": 50},
        "metrics": {"port": 0},
    }


def write_reference(path: Path, n: int = 10_000, seed: int = 99) -> Path:
    path.write_bytes(b"\n".join(events(seed, [(n, *CLEAN)])))
    return path
