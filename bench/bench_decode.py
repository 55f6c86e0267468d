"""Benchmark of stream.formats.json.BatchDecoder: microseconds per event.

Events carry 20 features (14 numeric, 6 categorical) and 2 predictions, about
700 bytes of JSON each, in poll batches of 2000.  Each case is timed, in the
same run and interleaved, for the decoder as configured (the msgspec path where
msgspec is installed; the messages it cannot vouch for parsed as on the orjson
path), for the orjson path alone (``BatchDecoder(config, use_msgspec=False)``)
and for a naive decoder (``json.loads`` plus a Python loop over events x columns
with the same value rules); the ratios orjson / msgspec and naive / msgspec are
printed, and the share of batches the msgspec path took.  Times are CPU time
(``time.process_time``), best of the passes, so that other load on the machine
disturbs them less.

    .venv/bin/python bench/bench_decode.py [--batches 25] [--batch-size 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson

from stream.config import Config, parse_config
from stream.formats.json import BatchDecoder

N_NUMERIC = 14
N_CATEGORICAL = 6
COUNTRIES = ["DE", "FR", "US", "GB", "ES", "IT", "NL", "PL", "SE", "BR"]
CHANNELS = ["web", "mobile-app", "branch", "partner-api", "call-center"]


def make_config() -> Config:
    features = [
        {"name": f"num_{i}", "path": f"features.num_{i}", "type": "numeric"}
        for i in range(N_NUMERIC)
    ]
    features += [
        {"name": f"cat_{i}", "path": f"features.cat_{i}", "type": "categorical"}
        for i in range(N_CATEGORICAL)
    ]
    return parse_config(
        {
            "source": {"timestamp": {"path": "timestamp", "unit": "s"}},
            "models": [
                {
                    "name": "credit",
                    "select": {"field": "model", "equals": "credit"},
                    "baseline": {"file": "baseline.json"},
                    "features": features,
                    "predictions": [
                        {"name": "score", "path": "prediction.score", "type": "numeric"},
                        {"name": "label", "path": "prediction.label", "type": "categorical"},
                    ],
                }
            ],
        },
        ".",
    )


def make_event(rng: random.Random, i: int) -> dict[str, Any]:
    features: dict[str, Any] = {
        f"num_{j}": round(rng.gauss(100.0, 30.0), 6) for j in range(N_NUMERIC)
    }
    features["num_0"] = rng.randrange(18, 90)  # an integer feature
    features["num_1"] = rng.random()  # full-precision doubles
    features["num_2"] = rng.random() * 1e5
    for j in range(N_CATEGORICAL):
        features[f"cat_{j}"] = rng.choice(COUNTRIES if j % 2 else CHANNELS)
    return {
        "model": "credit",
        "model_version": "2024-06-01",
        "request_id": f"req-{i:016d}",
        "trace_id": f"{rng.getrandbits(128):032x}",
        "tenant": "acme-retail-eu",
        "client": {
            "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
            "locale": "de-DE",
        },
        "served_by": f"credit-scorer-{rng.randrange(8)}.prod.svc.cluster.local",
        "timestamp": 1_717_200_000.0 + i * 0.01,
        "features": features,
        "prediction": {
            "score": rng.random(),
            "label": rng.choice(["approve", "review", "decline"]),
        },
    }


def make_batches(n_batches: int, size: int, case: str, seed: int = 7) -> list[list[bytes]]:
    """Batches of events drawn from ``seed``, damaged as ``case`` says.  The damage is drawn
    from a generator of its own, so that every case holds the same events (the clean
    ones but for the damaged fields or messages)."""
    rng = random.Random(seed)
    damage = random.Random(seed + 1_000_003)
    batches = []
    for b in range(n_batches):
        batch = []
        for k in range(size):
            event = make_event(rng, b * size + k)
            message = None
            if damage.random() < 0.01 and case != "clean":
                name = damage.choice(list(event["features"]))
                if case == "missing":
                    del event["features"][name]
                elif case == "wrong_type":
                    event["features"][name] = [1, 2] if name.startswith("cat") else "12.5"
                elif case == "nan":  # Python's json writes a NaN literal, not JSON
                    event["features"][name] = math.nan
                    message = json.dumps(event, separators=(",", ":")).encode()
                elif case == "huge":  # a valid JSON number no double (or int) holds
                    event["features"][name] = 0.5
                    huge = damage.choice([b"9" * 5000, b"1e400", b"-1e400"])
                    message = orjson.dumps(event).replace(
                        f'"{name}":0.5'.encode(), f'"{name}":'.encode() + huge)
            batch.append(orjson.dumps(event) if message is None else message)
        if case == "invalid_json":  # 1% of messages are not JSON
            for k in damage.sample(range(size), size // 100):
                batch[k] = batch[k][:-7]
        batches.append(batch)
    return batches


def naive_decode(config: Config, messages: Sequence[bytes]) -> dict[str, Any]:
    """json.loads + a Python loop over events x columns, same value rules."""
    model = config.models[0]
    columns = model.columns
    field, equals = model.select.field, model.select.equals  # type: ignore[union-attr]
    values: dict[str, list[Any]] = {c.name: [] for c in columns}
    invalid = dict.fromkeys(values, 0)
    positions = []
    for i, message in enumerate(messages):
        try:
            event = json.loads(message)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        node: Any = event
        for key in field:
            node = node.get(key) if isinstance(node, dict) else None
        if node != equals:
            continue
        positions.append(i)
        for column in columns:
            node = event
            for key in column.path:
                node = node.get(key) if isinstance(node, dict) else None
            if column.type == "numeric":
                if node is None:
                    values[column.name].append(math.nan)
                elif type(node) in (int, float) and math.isfinite(node):
                    values[column.name].append(float(node))
                else:
                    values[column.name].append(math.nan)
                    invalid[column.name] += 1
            else:
                if node is None or isinstance(node, str):
                    values[column.name].append(node if node is None else node[:200])
                elif isinstance(node, bool):
                    values[column.name].append("true" if node else "false")
                elif isinstance(node, int | float):
                    values[column.name].append(repr(node))
                else:
                    values[column.name].append(None)
                    invalid[column.name] += 1
    return {
        name: np.array(v, dtype=np.float64 if c.type == "numeric" else object)
        for (name, v), c in zip(values.items(), columns, strict=True)
    }


def cpu_us_per_event(fn: Callable[[list[bytes]], Any], batches: list[list[bytes]]) -> float:
    """CPU time of one pass over the batches (less sensitive to other load than wall time)."""
    n_events = sum(len(b) for b in batches)
    start = time.process_time()
    for batch in batches:
        fn(batch)
    return (time.process_time() - start) / n_events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    config = make_config()
    decoder = BatchDecoder(config)
    orjson_decoder = BatchDecoder(config, use_msgspec=False)
    sample = make_batches(1, args.batch_size, "clean")[0]
    print(
        f"events: {N_NUMERIC + N_CATEGORICAL} features + 2 predictions, "
        f"{sum(map(len, sample)) / len(sample):.0f} bytes on average, batches of {args.batch_size}"
    )
    if not decoder.uses_msgspec:
        print("msgspec is not installed: both columns are the orjson path")
    print("CPU µs per event, best of --repeat passes")
    print(
        f"{'case':<20}{'msgspec µs/event':>18}{'orjson µs/event':>17}{'orjson/msgspec':>16}"
        f"{'naive µs/event':>16}{'naive/msgspec':>15}{'msgspec batches':>17}"
    )
    for case, label in (
        ("clean", "clean"),
        ("missing", "1% missing field"),
        ("wrong_type", "1% wrong types"),
        ("nan", "1% NaN literals"),
        ("huge", "1% huge numbers"),
        ("invalid_json", "1% invalid JSON"),
    ):
        batches = make_batches(args.batches, args.batch_size, case)
        fast = old = naive = math.inf
        before = decoder.msgspec_batches
        for _ in range(args.repeat):  # interleaved, best of each
            fast = min(fast, cpu_us_per_event(decoder.decode, batches))
            old = min(old, cpu_us_per_event(orjson_decoder.decode, batches))
            naive = min(naive, cpu_us_per_event(lambda b: naive_decode(config, b), batches))
        share = (decoder.msgspec_batches - before) / (args.repeat * len(batches))
        print(
            f"{label:<20}{fast:>18.2f}{old:>17.2f}{old / fast:>15.2f}x"
            f"{naive:>16.2f}{naive / fast:>14.1f}x{share:>17.0%}"
        )
    # the floors: parsing alone, one orjson.loads (dicts) or msgspec decode (Structs) per message
    batches = make_batches(args.batches, args.batch_size, "clean")
    floor = min(
        cpu_us_per_event(lambda b: list(map(orjson.loads, b)), batches) for _ in range(args.repeat)
    )
    print(f"{'orjson.loads only':<20}{'':>18}{floor:>17.2f}")
    struct_decode = decoder._struct_decode  # the decoder's own Struct types
    if struct_decode is not None:
        floor = min(
            cpu_us_per_event(lambda b: list(map(struct_decode, b)), batches)
            for _ in range(args.repeat)
        )
        print(f"{'msgspec decode only':<20}{floor:>18.2f}")


if __name__ == "__main__":
    main()
