"""A clean two-model stream with a small share of malformed lines (issue #13's acceptance).

:func:`write_stream` writes, into a folder, a configuration (``config.yaml``), one
reference JSONL per model and ``events.jsonl``: ``n_events`` lines of two models,
``credit`` (60 %) and ``fraud``, each with 7 features and 2 predictions (18 columns, all
clean: no drift, no missing value), among which a share ``malformed`` of lines (0.3 % by
default) is replaced, at random positions, by one of the malformed :data:`SHAPES`:

===================  ============================================  =========================
shape                example                                       expected outcome
===================  ============================================  =========================
``invalid_json``     ``{"model": "credit", "features": {"inc``     rejected, ``invalid_json``
``not_an_object``    ``[1, 2, 3]``                                 rejected, ``not_an_object``
``features_string``  ``{"model": "credit", "features": "oops"}``   rejected, ``wrong_structure``
``features_list``    ``"features": [1, 2]``                        rejected, ``wrong_structure``
``prediction_list``  ``"prediction": [1]``                         rejected, ``wrong_structure``
``single_feature``   ``"features": {"income": 3.1}`` (no more)     an incomplete event
``no_features``      no ``features`` key                           an incomplete event
``unknown_model``    ``{"model": "mortgage", ...}``                rejected, ``unknown_model``
``huge_number``      ``"income": 1e400`` in a clean event          one invalid value
===================  ============================================  =========================

The shapes take turns (line ``i`` of the malformed lines has shape ``i % 9``) and the
model of a malformed event is drawn like a clean one's, so the manifest that
:func:`write_stream` returns gives the exact count of every outcome.  ``burst`` adds a
broken producer: from that line on, for ``burst_events`` lines, a quarter of the credit
events carry a single feature.

Used as a tool (the files for a manual ``streamdrift replay``)::

    python -m tests.support.malformed OUT_DIR [--events 200000] [--malformed 0.003]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml

T0 = 1_700_000_000
#: model -> feature names (numeric unless named in CATEGORICAL); predictions below
FEATURES = {
    "credit": ["income", "age", "tenure", "balance", "utilisation", "country", "channel"],
    "fraud": ["amount", "hour", "distance", "velocity", "account_age", "merchant", "device"],
}
PREDICTIONS = {"credit": ["score", "decision"], "fraud": ["risk", "label"]}
CATEGORICAL = {
    "country": ["de", "fr", "it", "es"],
    "channel": ["web", "app", "branch"],
    "merchant": ["grocery", "fuel", "online", "travel", "other"],
    "device": ["ios", "android", "desktop"],
    "decision": ["accept", "review", "reject"],
    "label": ["ok", "review", "block"],
}
SHAPES = ("invalid_json", "not_an_object", "features_string", "features_list",
          "prediction_list", "single_feature", "no_features", "unknown_model", "huge_number")
#: what each shape becomes: an invalid reason, "incomplete" or "invalid_value"
OUTCOME = {"invalid_json": "invalid_json", "not_an_object": "not_an_object",
           "features_string": "wrong_structure", "features_list": "wrong_structure",
           "prediction_list": "wrong_structure", "single_feature": "incomplete",
           "no_features": "incomplete", "unknown_model": "unknown_model",
           "huge_number": "invalid_value"}
#: the detection settings: the defaults' budget, a shorter window to keep the test quick
DETECTION = {"false_alarm_events": 10_000_000, "window": 500, "cadence": 50}


@dataclass
class Manifest:
    """What :func:`write_stream` wrote."""

    lines: int = 0
    #: model -> clean events written (burst events included)
    events: dict[str, int] = field(default_factory=dict)
    #: rejected lines by reason
    invalid: dict[str, int] = field(default_factory=dict)
    #: model -> events that lack most columns
    incomplete: dict[str, int] = field(default_factory=dict)
    #: model -> events with one invalid value (a huge number)
    invalid_values: dict[str, int] = field(default_factory=dict)
    #: line numbers of the burst (start, end) or None
    burst: tuple[int, int] | None = None


def _column(name: str, section: str) -> dict[str, str]:
    kind = "categorical" if name in CATEGORICAL else "numeric"
    return {"name": name, "path": f"{section}.{name}", "type": kind}


def config(detection: dict[str, Any] | None = None) -> dict[str, Any]:
    """The configuration of the two models (references beside it)."""
    return {
        "source": {"timestamp": {"path": "ts", "unit": "s"}, "max_message_bytes": 4096},
        "models": [{"name": m, "select": {"field": "model", "equals": m},
                    "baseline": {"reference": f"reference-{m}.jsonl"},
                    "features": [_column(f, "features") for f in FEATURES[m]],
                    "predictions": [_column(p, "prediction") for p in PREDICTIONS[m]]}
                   for m in FEATURES],
        "detection": dict(detection or DETECTION),
    }


def _numeric(rng: np.random.Generator, name: str, n: int) -> np.ndarray:
    draws = {"income": lambda: rng.lognormal(1.0, 0.4, n), "age": lambda: rng.normal(40, 12, n),
             "tenure": lambda: rng.exponential(5.0, n), "balance": lambda: rng.normal(1e3, 300, n),
             "utilisation": lambda: rng.beta(2, 5, n), "amount": lambda: rng.gamma(2.0, 30.0, n),
             "hour": lambda: rng.integers(0, 24, n).astype(float),
             "distance": lambda: rng.lognormal(2.0, 1.0, n),
             "velocity": lambda: rng.poisson(3.0, n).astype(float),
             "account_age": lambda: rng.exponential(400.0, n),
             "score": lambda: rng.beta(2, 5, n), "risk": lambda: rng.beta(1, 9, n)}
    return np.round(draws[name](), 3)


def _events(rng: np.random.Generator, model: str, n: int, t0: int) -> list[dict[str, Any]]:
    """``n`` clean events of ``model``, columns drawn at once."""
    cols: dict[str, list[Any]] = {}
    for name in (*FEATURES[model], *PREDICTIONS[model]):
        if name in CATEGORICAL:
            values = np.array(CATEGORICAL[name], dtype=object)
            cols[name] = values[rng.integers(0, values.size, n)].tolist()
        else:
            cols[name] = _numeric(rng, name, n).tolist()
    feats, preds = FEATURES[model], PREDICTIONS[model]
    return [{"model": model, "ts": t0 + i,
             "features": {f: cols[f][i] for f in feats},
             "prediction": {p: cols[p][i] for p in preds}} for i in range(n)]


def _malformed(shape: str, event: dict[str, Any]) -> bytes:
    model = event["model"]
    first = FEATURES[model][0]
    if shape == "invalid_json":
        return orjson.dumps(event)[:37]
    if shape == "not_an_object":
        return b"[1, 2, 3]"
    if shape == "features_string":
        return orjson.dumps({"model": model, "ts": event["ts"], "features": "oops"})
    if shape == "features_list":
        return orjson.dumps({**event, "features": [1, 2]})
    if shape == "prediction_list":
        return orjson.dumps({**event, "prediction": [1]})
    if shape == "single_feature":
        return orjson.dumps({"model": model, "ts": event["ts"],
                             "features": {first: event["features"][first]}})
    if shape == "no_features":
        return orjson.dumps({k: v for k, v in event.items() if k != "features"})
    if shape == "unknown_model":
        return orjson.dumps({**event, "model": "mortgage"})
    if shape == "huge_number":
        text = orjson.dumps({**event, "features": {**event["features"], first: 0.5}})
        return text.replace(f'"{first}":0.5'.encode(), f'"{first}":1e400'.encode(), 1)
    raise ValueError(shape)


def write_stream(folder: Path, n_events: int = 200_000, malformed: float = 0.003,
                 n_reference: int = 20_000, seed: int = 13, burst: int | None = None,
                 burst_events: int = 5_000,
                 detection: dict[str, Any] | None = None) -> Manifest:
    """Write ``config.yaml``, ``reference-<model>.jsonl`` and ``events.jsonl`` into
    ``folder``; return the manifest of what ``events.jsonl`` holds."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    (folder / "config.yaml").write_text(yaml.safe_dump(config(detection), sort_keys=False))
    for model in FEATURES:
        ref = _events(rng, model, n_reference, T0 - n_reference)
        (folder / f"reference-{model}.jsonl").write_bytes(
            b"\n".join(map(orjson.dumps, ref)) + b"\n")
    is_credit = rng.random(n_events) < 0.6
    pools = {"credit": iter(_events(rng, "credit", int(is_credit.sum()), T0)),
             "fraud": iter(_events(rng, "fraud", int((~is_credit).sum()), T0))}
    events = [next(pools["credit" if c else "fraud"]) for c in is_credit.tolist()]
    bad = np.sort(rng.choice(n_events, int(round(n_events * malformed)), replace=False))
    manifest = Manifest(lines=n_events,
                        events={m: 0 for m in FEATURES}, incomplete={m: 0 for m in FEATURES},
                        invalid_values={m: 0 for m in FEATURES})
    lines: list[bytes] = list(map(orjson.dumps, events))
    broken = np.zeros(n_events, dtype=bool)
    if burst is not None:
        manifest.burst = (burst, min(burst + burst_events, n_events))
        broken[burst:burst + burst_events] = rng.random(len(broken[burst:burst + burst_events])) < 0.25
        broken &= is_credit
    bad_set = set(bad.tolist())
    for i in np.flatnonzero(broken).tolist():
        if i not in bad_set:
            lines[i] = _malformed("single_feature", events[i])
    for j, i in enumerate(bad.tolist()):
        lines[i] = _malformed(SHAPES[j % len(SHAPES)], events[i])
    for i, event in enumerate(events):
        model = event["model"]
        shape = SHAPES[int(np.searchsorted(bad, i)) % len(SHAPES)] if i in bad_set else None
        outcome = OUTCOME[shape] if shape is not None else (
            "incomplete" if broken[i] else None)
        if outcome in ("incomplete", "invalid_value", None):
            manifest.events[model] += 1
        if outcome == "incomplete":
            manifest.incomplete[model] += 1
        elif outcome == "invalid_value":
            manifest.invalid_values[model] += 1
        elif outcome is not None:
            manifest.invalid[outcome] = manifest.invalid.get(outcome, 0) + 1
    (folder / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--malformed", type=float, default=0.003)
    parser.add_argument("--burst", type=int, default=None,
                        help="line at which a quarter of the credit events lose 8 of 9 columns")
    args = parser.parse_args()
    manifest = write_stream(args.folder, args.events, args.malformed, burst=args.burst)
    print(manifest)


if __name__ == "__main__":
    main()
