"""Synthetic inference events of model ``m1``, as the integration tests send them to Kafka.

An event is one JSON object::

    {"model": "m1", "ts": 1.7e9 + i,
     "f": {"x1": <normal>, "x2": <lognormal>, "c1": "a"|"b"|"c", "c2": "u"|"v"},
     "p": {"score": <beta(2, 5)>}}

A test picks the columns it configures (``columns``) and how they are distributed
(:class:`Regime`: the mean of x1, the categories of c1 and their probabilities).
:func:`m1_event` draws one event at a time, in a fixed order of the random generator's calls
(x1, x2, c1, c2, score: only those of ``columns``), so a seed always gives the same stream.

:func:`clipped_m1_events` is the vectorised variant of the end-to-end tests: every numeric
column is clipped to :data:`BOUNDS`, which the reference data of
:func:`write_clipped_reference` reaches, so that a drift moves values inside the baseline's
[min, max] and only the distribution changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

MODEL = "m1"
#: every column of model m1 (features under "f", the prediction "score" under "p")
COLUMNS = ("x1", "x2", "c1", "c2", "score")


@dataclass(frozen=True)
class Regime:
    """How the columns of model m1 are distributed."""

    x1_mean: float = 0.0
    c1_values: tuple[str, ...] = ("a", "b", "c")
    #: probabilities of ``c1_values``; None: uniform
    c1_p: tuple[float, ...] | None = (0.5, 0.3, 0.2)


#: the distribution of the reference data
CLEAN = Regime()
#: x1 shifted by one standard deviation, c1's frequencies reversed
SHIFTED = Regime(x1_mean=1.0, c1_p=(0.2, 0.3, 0.5))


def m1_event(rng: np.random.Generator, i: int, regime: Regime = CLEAN,
             columns: Sequence[str] = COLUMNS) -> bytes:
    """Event number ``i`` (its ``ts`` is 1.7e9 + i) with the ``columns`` of model m1."""
    features: dict[str, float | str] = {}
    if "x1" in columns:
        features["x1"] = float(rng.normal(regime.x1_mean, 1.0))
    if "x2" in columns:
        features["x2"] = float(rng.lognormal(0.0, 0.5))
    if "c1" in columns:
        features["c1"] = str(rng.choice(list(regime.c1_values), p=regime.c1_p))
    if "c2" in columns:
        features["c2"] = str(rng.choice(["u", "v"]))
    event: dict[str, object] = {"model": MODEL, "ts": 1.7e9 + i, "f": features}
    if "score" in columns:
        event["p"] = {"score": float(rng.beta(2, 5))}
    return orjson.dumps(event)


def m1_events(seed: int, segments: Iterable[tuple[int, Regime]],
              columns: Sequence[str] = COLUMNS) -> list[bytes]:
    """Consecutive events from ``default_rng(seed)``: ``segments`` are (count, regime) in
    order; the events are numbered 0, 1, ... across the segments."""
    rng = np.random.default_rng(seed)
    out: list[bytes] = []
    for n, regime in segments:
        out += [m1_event(rng, len(out) + i, regime, columns) for i in range(n)]
    return out


def with_poison(messages: list[bytes], poison: Iterable[bytes], first: int,
                every: int) -> list[bytes]:
    """``messages`` with the ``poison`` messages inserted (in place) at positions ``first``,
    ``first + every``, ... of the growing list; returns the list."""
    for k, bad in enumerate(poison):
        messages.insert(first + every * k, bad)
    return messages


# --------------------------------------------------------------------------- clipped, vectorised

#: numeric column -> (low, high) of the clipped events
BOUNDS = {"x1": (-3.0, 3.0), "x2": (0.25, 4.0), "score": (0.02, 0.75)}
DRIFT_SHIFT = 1.0  # x1 ~ N(0, 1) in the baseline, N(DRIFT_SHIFT, 1) once drifting


def clipped_m1_events(rng: np.random.Generator, n: int, drift: bool, ts: float) -> list[bytes]:
    """``n`` events of model m1, all at time ``ts``; with ``drift``, x1's mean is shifted by
    DRIFT_SHIFT sigma."""
    x1 = np.clip(rng.normal(DRIFT_SHIFT if drift else 0.0, 1.0, n), *BOUNDS["x1"])
    x2 = np.clip(rng.lognormal(0.0, 0.5, n), *BOUNDS["x2"])
    c1 = rng.choice(np.array(["a", "b", "c"]), n, p=[0.5, 0.3, 0.2])
    c2 = rng.choice(np.array(["u", "v"]), n)
    score = np.clip(rng.beta(2.0, 5.0, n), *BOUNDS["score"])
    return [orjson.dumps({"model": MODEL, "ts": ts,
                          "f": {"x1": float(x1[i]), "x2": float(x2[i]), "c1": str(c1[i]),
                                "c2": str(c2[i])},
                          "p": {"score": float(score[i])}})
            for i in range(n)]


def write_clipped_reference(path: Path, n: int = 10_000, seed: int = 99) -> Path:
    """Reference data of :func:`clipped_m1_events` (clean) in ``path``, one event a line."""
    rng = np.random.default_rng(seed)
    events = clipped_m1_events(rng, n, drift=False, ts=1.7e9)
    # Both ends of every clipped column are tied in the reference: the baseline then
    # expects no value outside its [min, max] and no live value can fall outside it.
    cols = {name: np.array([orjson.loads(e)["p" if name == "score" else "f"][name]
                            for e in events]) for name in BOUNDS}
    for name, (lo, hi) in BOUNDS.items():
        assert (cols[name] == lo).sum() >= 2 and (cols[name] == hi).sum() >= 2, name
    path.write_bytes(b"\n".join(events) + b"\n")
    return path
