"""What the partition check (``detection.partition_check``) costs and what it finds.

In one process, no broker: the 20-column events of ``bench_pipeline.py`` (14 numeric and
4 categorical features, a numeric and a categorical prediction) go through
``Pipeline.process`` in batches of 500, spread over 4 partitions, with the check enabled
and disabled (two pipelines, batches interleaved so that both see the same machine
state).  It prints, as a markdown table:

* the per-batch processing time with and without the check (medians), and the median
  ratio of the two times of the same batch (noisy on a shared machine);
* the share of the processing time spent in the check's hooks, measured in the same run:
  counting the bins of each batch, and the checks themselves (one per second of simulated
  time at 10 k events/s, i.e. 60 times more often than at the default ``interval_s``);
* the time of one check (all columns, 4 partitions);
* warnings of the enabled pipeline on null keys (random partitions: expected none) and
  on a topic keyed by ``cat_0`` (country: expected cat_0), with the events processed
  before the warning.

and, first, the best-of-repeats times of one batch without the check, of counting its
bins, and of one check (robust figures on a shared machine).

Usage::

    .venv/bin/python bench/bench_skew.py            # ~1 min
    .venv/bin/python bench/bench_skew.py --quick    # ~20 s
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import bench_pipeline as bp  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402

PARTITIONS = 4
BATCH = 500


def build(workdir: Path) -> tuple[Any, Any, Any]:
    """(config with the check, config without, baselines), reference of 20,000 events."""
    from detectors.model import ModelBaseline
    from stream.config import parse_config
    from stream.engine.baselines import column_specs, detection_settings

    features, predictions = bp.columns()
    data = {"models": [{"name": bp.MODEL, "select": {"field": "model", "equals": bp.MODEL},
                        "baseline": {"reference": "reference.jsonl"},
                        "features": features, "predictions": predictions}],
            "detection": {"partition_check": {"interval_s": 1}}}
    on = parse_config(data, workdir)
    off = parse_config({**data, "detection": {"partition_check": {"enabled": False}}},
                       workdir)
    ref = [orjson.loads(b + b"}") for b in bp.make_bodies(bp.REFERENCE_EVENTS, seed=1)]
    cols: dict[str, Any] = {}
    for c in (*on.models[0].features, *on.models[0].predictions):
        vals = [e[c.path[0]][c.path[1]] for e in ref]
        cols[c.name] = (np.array(vals, dtype=np.float64) if c.type == "numeric"
                        else np.array(vals, dtype=object))
    settings = detection_settings(on.detection)
    # thresholds do not change the work per value; a short calibration keeps this quick
    settings = type(settings)(**{**settings.__dict__, "calibration_values": 100_000})
    base = ModelBaseline.build(bp.MODEL, cols, column_specs(on.models[0]), settings)
    return on, off, {bp.MODEL: base}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def partition_of(bodies: list[bytes], keyed: bool, rng: np.random.Generator) -> np.ndarray:
    if not keyed:
        return rng.integers(0, PARTITIONS, len(bodies))
    out = np.empty(len(bodies), dtype=np.int64)
    for i, b in enumerate(bodies):  # the producer's key: the event's country
        country = orjson.loads(b)["features"]["cat_0"]
        out[i] = bp.COUNTRIES.index(country) % PARTITIONS
    return out


def micro(on: Any, off: Any, bases: Any, repeats: int) -> tuple[float, float, float]:
    """Best-of-``repeats`` times of one batch of 500 events: (Pipeline.process without the
    check, counting its bins, one check of 4 partitions), seconds.  The minimum of repeated
    runs is robust to other jobs on a shared machine."""
    from stream.engine.pipeline import Pipeline
    from stream.engine.skew import PartitionSkew

    bodies = [bp.stamp(b, 1.7e9 + i) for i, b in enumerate(bp.make_bodies(BATCH, seed=4))]
    pipe = Pipeline(off, bases)
    for _ in range(5):
        pipe.process(bodies, partition=("t", 0))
    mon = pipe.partitions[("t", 0)].monitors[bp.MODEL]
    cols = [(c.name, c.role) for c in (*on.models[0].features, *on.models[0].predictions)]
    skew = PartitionSkew(on.detection.partition_check, bases, {bp.MODEL: cols})
    proc, upd, chk = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(10):
            pipe.process(bodies, partition=("t", 0))
        proc.append((time.perf_counter() - t0) / 10)
        t0 = time.perf_counter()
        for k in range(10):
            skew.update(bp.MODEL, ("t", k % PARTITIONS), mon, BATCH)
        upd.append((time.perf_counter() - t0) / 10)
    for _ in range(30):  # 3,750 events per partition: every column is tested
        for k in range(PARTITIONS):
            skew.update(bp.MODEL, ("t", k), mon, BATCH)
    model = skew.models[bp.MODEL]
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.check(0.0)
        chk.append(time.perf_counter() - t0)
    assert model.partitions == PARTITIONS
    return min(proc), min(upd), min(chk)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    n = 40_000 if args.quick else 160_000
    from stream.engine.pipeline import Pipeline

    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        on, off, bases = build(Path(tmp))
    proc, upd, chk = micro(on, off, bases, 10 if args.quick else 30)
    print("| best of repeated runs | time |")
    print("| --- | --- |")
    print(f"| `Pipeline.process`, one batch of {BATCH} events, 20 columns, without the check | "
          f"{proc * 1e3:.2f} ms |")
    print(f"| counting its bins for the check | {upd * 1e6:.0f} µs: **{upd / proc:.2%}** of the "
          f"batch |")
    print(f"| one check, 20 columns x {PARTITIONS} partitions | {chk * 1e3:.2f} ms "
          f"(every `interval_s`, 60 s by default) |")
    print()
    bodies = [bp.stamp(b, 1.7e9 + i) for i, b in enumerate(bp.make_bodies(n, seed=2))]
    rng = np.random.default_rng(3)
    rows = []
    for keyed in (False, True):
        parts = partition_of(bodies, keyed, rng)
        batches = [(p, [bodies[i] for i in np.flatnonzero(parts == p)[s:s + BATCH]])
                   for s in range(0, n // PARTITIONS * 2, BATCH) for p in range(PARTITIONS)]
        batches = [(p, b) for p, b in batches if b]
        clock_on, clock_off = Clock(), Clock()
        with_check = Pipeline(on, bases, clock=clock_on)
        without = Pipeline(off, bases, clock=clock_off)
        t_on: list[float] = []
        t_off: list[float] = []
        t_check: list[float] = []
        warned: dict[str, int] = {}
        events = 0
        assert with_check.skew is not None
        spent = [0.0, 0.0]  # seconds in the skew hooks: update, maybe_check
        skew = with_check.skew
        for i, name in enumerate(("update", "maybe_check")):
            setattr(skew, name, _timed(getattr(skew, name), spent, i))
        for j, (p, batch) in enumerate(batches):
            clock_on.now = clock_off.now = j * 0.05  # 500 events per 50 ms: 10 k events/s
            first = (j // PARTITIONS) % 2  # who goes first alternates per round
            for pipe, times in ((with_check, t_on), (without, t_off))[:: 1 if first else -1]:
                t0 = time.perf_counter()
                pipe.process(batch, partition=("events", p))
                times.append(time.perf_counter() - t0)
            events += len(batch)
            if with_check.skew.models[bp.MODEL].checks and not t_check:
                t0 = time.perf_counter()
                with_check.skew.models[bp.MODEL].check(clock_on.now)
                t_check.append(time.perf_counter() - t0)
            for col, fig in with_check.skew.figures().get(bp.MODEL, _EMPTY).columns.items():
                if fig.active and col not in warned:
                    warned[col] = events
        med_on, med_off = statistics.median(t_on), statistics.median(t_off)
        paired = statistics.median(a / b for a, b in zip(t_on, t_off, strict=True))
        share = (spent[0] / sum(t_on), spent[1] / sum(t_on))
        rows.append((keyed, events, med_off, med_on, paired, share,
                     t_check[0] if t_check else float("nan"), warned))
    print("| topic | events | batch of 500, without check | with check | ratio (median of "
          "paired batches) | share of the processing time: counting bins, checks (1 per 10 k "
          "events) | one check "
          "(20 columns, 4 partitions) | warnings (column: events before) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for keyed, events, off_s, on_s, ratio, share, check_s, warned in rows:
        what = ", ".join(f"{c}: {e:,}" for c, e in sorted(warned.items())) or "none"
        print(f"| {'keyed by cat_0' if keyed else 'null keys'} | {events:,} | "
              f"{off_s * 1e3:.2f} ms | {on_s * 1e3:.2f} ms | {ratio:.3f} | {share[0]:.2%}, {share[1]:.2%} | "
              f"{check_s * 1e3:.1f} ms | {what} |")
    return 0


def _timed(fn: Any, spent: list[float], i: int) -> Any:
    def call(*args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            spent[i] += time.perf_counter() - t0
    return call


class _Empty:
    columns: dict[str, Any] = {}


_EMPTY = _Empty()

if __name__ == "__main__":
    raise SystemExit(main())
