"""Synthetic events of model ``m1`` with two facets, for the bias drift tests and
``bench/bench_bias.py``.

An event::

    {"model": "m1", "applicant": {"sex": "f"|"m"|"x", "age_band": "18-30".."60+"},
     "f": {"x": <normal>}, "p": {"score": <in [0, 1]>}}

``sex``: f 45 %, m 50 %, x 5 %; ``age_band``: four bands (35, 30, 25, 10 %).  Each
(sex) value has its own positive rate (score >= 0.5): f 0.30, m 0.40, x 0.35, so the
reference has a non-zero DPPL.  ``shift`` adds to the positive rate of ``shift_value``
(a sex) only; ``global_shift`` to every event's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

MODEL = "m1"
SEX = ("f", "m", "x")
SEX_SHARES = (0.45, 0.50, 0.05)
RATE = {"f": 0.30, "m": 0.40, "x": 0.35}
AGE = ("18-30", "30-45", "45-60", "60+")
AGE_SHARES = (0.35, 0.30, 0.25, 0.10)


def bias_arrays(n: int, seed: int, *, shift_value: str | None = None, shift: float = 0.0,
                global_shift: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sex, age_band, score) of ``n`` events drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(np.array(SEX, dtype=object), n, p=SEX_SHARES)
    age = rng.choice(np.array(AGE, dtype=object), n, p=AGE_SHARES)
    rate = np.vectorize(RATE.__getitem__, otypes=[float])(sex) + global_shift
    if shift_value is not None:
        rate = rate + shift * (sex == shift_value)
    positive = rng.random(n) < rate
    score = np.where(positive, 0.5 + 0.5 * rng.random(n), 0.5 * rng.random(n))
    return sex, age, score


def bias_events(n: int, seed: int, **shift: Any) -> list[bytes]:
    """``n`` events (JSON bytes) drawn with ``seed`` (``shift``: see :func:`bias_arrays`)."""
    sex, age, score = bias_arrays(n, seed, **shift)
    x = np.random.default_rng(seed + 7).normal(size=n)
    return [orjson.dumps({"model": MODEL, "applicant": {"sex": s, "age_band": a},
                          "f": {"x": float(v)}, "p": {"score": float(p)}})
            for s, a, v, p in zip(sex.tolist(), age.tolist(), x.tolist(), score.tolist(),
                                  strict=True)]


def bias_model(**bias: Any) -> dict[str, Any]:
    """The configuration of model m1 with the facets sex and age_band (reference.jsonl
    beside the configuration file); ``bias`` overrides keys of its ``bias`` section."""
    return {"name": MODEL, "select": {"field": "model", "equals": MODEL},
            "baseline": {"reference": "reference.jsonl"},
            "features": [{"name": "x", "path": "f.x", "type": "numeric"}],
            "predictions": [{"name": "score", "path": "p.score", "type": "numeric"}],
            "bias": {"positive": {"column": "score", "threshold": 0.5},
                     "facets": ["applicant.sex", {"path": "applicant.age_band", "name": "age"}],
                     **bias}}


def write_reference(path: Path, n: int = 40_000, seed: int = 1) -> Path:
    path.write_bytes(b"\n".join(bias_events(n, seed)) + b"\n")
    return path
