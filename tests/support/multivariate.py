"""Events of a model whose two features flip their correlation (+0.8 to -0.8) while every
marginal stays N(0, 1): the scenario of issue 19, for the multivariate tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

MODEL = "mv"
FEATURES = ("a", "b", "u", "v")


def rows(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    """``n`` rows of FEATURES: a and b standard normal with correlation ``rho``, u and v
    independent standard normals."""
    x = rng.normal(size=(n, len(FEATURES)))
    x[:, 1] = rho * x[:, 0] + np.sqrt(1 - rho * rho) * x[:, 1]
    return x


def events(seed: int, segments: list[tuple[int, float]], t0: float = 1.7e9) -> list[bytes]:
    """JSON events of model mv: ``segments`` of (count, correlation of a and b)."""
    rng = np.random.default_rng(seed)
    out: list[bytes] = []
    for n, rho in segments:
        for r in rows(rng, n, rho).round(6).tolist():
            out.append(orjson.dumps({"model": MODEL, "ts": t0 + len(out) * 0.001,
                                     "f": dict(zip(FEATURES, r, strict=True))}))
    return out


def config(reference: str, *, groups: list[dict[str, Any]] | None = None,
           detection: dict[str, Any] | None = None, **source: Any) -> dict[str, Any]:
    """A configuration of model mv with one multivariate group over all its features."""
    return {
        "source": source or {"kafka": {"bootstrap_servers": "127.0.0.1:9", "topics": ["t"],
                                       "group_id": "g"}},
        "models": [{"name": MODEL, "select": {"field": "model", "equals": MODEL},
                    "baseline": {"reference": reference},
                    "features": [{"name": f, "path": f"f.{f}", "type": "numeric"}
                                 for f in FEATURES],
                    "multivariate": groups if groups is not None else [{"name": "joint"}]}],
        "detection": detection or {"false_alarm_events": 1_000_000, "window": 500,
                                   "cadence": 50},
        "metrics": {"port": 0},
    }


def write_reference(path: Path, n: int = 10_000, seed: int = 99) -> Path:
    path.write_bytes(b"\n".join(events(seed, [(n, 0.8)])))
    return path
