"""What the label join costs, and whether the default path (no labels) keeps its throughput.

In one process, on the 20-column events of about 700 bytes of ``bench_pipeline.py``
(``make_bodies``), no Kafka: ``Pipeline.process`` in batches of 2,000 events

* A: a configuration without ``labels:`` (the default path);
* B: the same model with ``labels:`` (binary, ``request_id``), and after each batch the
  labels whose time the input has reached (80 % of the events are labelled, delays of
  0-60 s of event time at 100 events/s) through ``Pipeline.process_labels``.

A and B alternate for ``--rounds`` rounds (the median is reported); times are CPU
times of this process (``time.process_time``), less sensitive than wall time to a busy machine.  The join's cost per
labelled event is (B - A) / labels.  ``--default-only`` times A alone, to compare this
checkout's default path with another's (run it with each on ``PYTHONPATH``).

Usage::

    PYTHONPATH=$PWD .venv/bin/python bench/bench_labels.py            # ~1 min
    PYTHONPATH=$PWD .venv/bin/python bench/bench_labels.py --default-only --rounds 5
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import orjson  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_pipeline as bp  # noqa: E402

T0 = 1.7e9
BATCH = 2000


def _config(labels: bool) -> Any:
    from stream.config import parse_config

    features, predictions = bp.columns()
    model: dict[str, Any] = {"name": bp.MODEL, "baseline": {"file": "unused.json"},
                             "features": features, "predictions": predictions}
    if labels:
        model["labels"] = {"topic": "labels", "id_path": "request_id", "label_path": "label",
                           "task": "binary", "positive_class": 1, "score_column": "score",
                           "horizon_s": 120, "label_wait_s": 60}
    return parse_config({"source": {"timestamp": {"path": "ts"}}, "models": [model]}, "/")


def _baseline(config: Any, bodies: list[bytes]) -> Any:
    from detectors.model import ModelBaseline
    from stream.engine.baselines import column_specs, detection_settings
    from stream.formats.json import BatchDecoder

    batch = BatchDecoder(config).decode([b + b',"ts":1.0}' for b in bodies])
    mb = batch.models[bp.MODEL]
    settings = dataclasses.replace(detection_settings(config.detection),
                                   calibration_values=20_000)
    return ModelBaseline.build(bp.MODEL, mb.columns, column_specs(config.models[0]), settings)


def _events(n: int, seed: int) -> tuple[list[bytes], list[tuple[float, bytes]]]:
    rng = np.random.default_rng(seed)
    bodies = bp.make_bodies(n, seed)
    ts = T0 + np.arange(n) / 100.0
    events = [b + b',"ts":%r}' % t for b, t in zip(bodies, ts.tolist(), strict=True)]
    labels = []
    for i, (b, t) in enumerate(zip(bodies, ts.tolist(), strict=True)):
        if rng.random() < 0.8:
            rid = orjson.loads(b + b"}")["request_id"]
            lt = t + float(rng.uniform(0, 60))
            labels.append((lt, orjson.dumps({"request_id": rid, "ts": lt,
                                             "label": int(rng.random() < 0.3)})))
        del i
    labels.sort()
    return events, labels


def _run(config: Any, base: Any, events: list[bytes], labels: list[tuple[float, bytes]] | None,
         ) -> tuple[float, float]:
    """(seconds for everything, seconds in process_labels)."""
    from stream.engine.pipeline import Pipeline

    p = Pipeline(config, {bp.MODEL: base})
    in_labels = 0.0
    k = 0
    t0 = time.process_time()
    for i in range(0, len(events), BATCH):
        p.process(events[i:i + BATCH])
        if labels is not None:
            until = T0 + (i + BATCH - 1) / 100.0
            j = k
            while j < len(labels) and labels[j][0] <= until:
                j += 1
            t1 = time.process_time()
            p.process_labels([m for _, m in labels[k:j]])
            in_labels += time.process_time() - t1
            k = j
    if labels is not None:
        t1 = time.process_time()
        p.process_labels([m for _, m in labels[k:]])
        in_labels += time.process_time() - t1
        book = p.labels
        assert book is not None
        joined = book.snapshot().models[bp.MODEL].outcomes["joined"]
        assert joined == len(labels), (joined, len(labels))
    return time.process_time() - t0, in_labels


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--default-only", action="store_true")
    args = ap.parse_args()
    plain = _config(False)
    events, labels = _events(args.events, args.seed)
    base = _baseline(plain, bp.make_bodies(5000, args.seed + 1000))
    a_times: list[float] = []
    b_times: list[float] = []
    l_times: list[float] = []
    if args.default_only:
        for _ in range(args.rounds):
            a_times.append(_run(plain, base, events, None)[0])
        med = statistics.median(a_times)
        print(f"default path: {args.events / med:,.0f} events/s (median of {args.rounds}; "
              f"rounds {[round(args.events / t) for t in a_times]}) seed {args.seed}")
        return 0
    labelled = _config(True)
    for _ in range(args.rounds):
        a_times.append(_run(plain, base, events, None)[0])
        tb, tl = _run(labelled, base, events, labels)
        b_times.append(tb)
        l_times.append(tl)
    a, b, lab = (statistics.median(x) for x in (a_times, b_times, l_times))
    n_lab = len(labels)
    print("| events | labels | A: no labels (events/s) | B: with labels (events/s) | B/A | "
          "join cost per labelled event | of which process_labels |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {args.events:,} | {n_lab:,} | {args.events / a:,.0f} | {args.events / b:,.0f} | "
          f"{a / b:.3f} | {(b - a) / n_lab * 1e6:.2f} µs | {lab / n_lab * 1e6:.2f} µs |")
    print(f"(median of {args.rounds} alternating rounds, seed {args.seed}, batches of {BATCH})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
