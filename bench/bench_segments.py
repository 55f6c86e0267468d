"""Segments (``models[].segments``): detection delay next to the model-wide monitor, and
what segments cost.

In one process, no broker.

1. **Delay.** The events of ``tests/support/segments.py`` (regions a-f carrying 40, 30,
   23, 5, 1, 1 % of the traffic; x1's mean and x2's spread differ by region): 40,000 clean
   events, then x1 + ``shift`` sd in region d only (5 % of the traffic).  At the default
   knob (10^7 events between false alarms), default detectors on x1, x2 and c1, segment
   ``region`` with ``top_k: 4`` (a, b, c, d and ``other``).  Per seed: events of region d
   until region d's monitors alarm on x1, the same in events of the whole stream, and the
   model-wide monitor's delay on x1 on the same events, both in that configuration (where
   it keeps half the budget) and in the same model without segments (the whole budget);
   alarms of the other segments and before the shift are counted (expected none).
2. **Cost.** The 20-column events of ``bench_pipeline.py`` through ``Pipeline.process``
   in batches of 500 (decode included), the pipelines interleaved batch by batch so that
   they see the same machine state (and again in batches of 5,000): no segments; segment ``cat_0`` (country, 10 values of
   10 % each) with ``top_k`` 4 (4 values + other = 5 monitors of 20 columns) and 10 (10
   monitors); and ``top_k`` 10 on one column.  Per-event cost of a segment value = (time
   with segments - time without) / monitored values.  The thresholds come from a short
   calibration: they do not change the work per value.
3. **No segments, against main.** ``--vs-main PATH`` times the no-segment pipeline under
   this checkout and under the checkout at PATH (another copy of the code, e.g. the main
   branch), alternating subprocesses, and reports the medians side by side.

Writes ``bench/results/segments.md``.

Usage::

    .venv/bin/python bench/bench_segments.py                      # ~5 min
    .venv/bin/python bench/bench_segments.py --quick              # ~2 min
    .venv/bin/python bench/bench_segments.py --vs-main /work/main
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "segments.md"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import yaml  # noqa: E402

BATCH = 500


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- 1. delay
def delay_table(seeds: list[int], shifts: list[float], post: int) -> list[str]:
    from stream.config import load_config
    from stream.engine.baselines import resolve_baselines
    from stream.engine.pipeline import Pipeline
    from tests.support.segments import segment_events, segment_model, write_reference

    folder = Path(tempfile.mkdtemp(prefix="bench-seg-"))
    write_reference(folder / "reference.jsonl")
    with_seg = segment_model()
    without = {k: v for k, v in with_seg.items() if k != "segments"}
    cfgs = {}
    for name, model in (("segments", with_seg), ("plain", without)):
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(
            {"models": [model], "detection": {"false_alarm_events": 10_000_000}}))
        cfgs[name] = load_config(folder / f"{name}.yaml")
    t0 = time.perf_counter()
    bases = {name: resolve_baselines(cfg) for name, cfg in cfgs.items()}
    Pipeline(cfgs["segments"], bases["segments"])  # builds and caches the segment baselines
    log(f"baselines built in {time.perf_counter() - t0:.0f} s")
    pre = 40_000
    lines = ["| shift | seed | segment delay (events of region d) | segment delay (all events) "
             "| model-wide, with segments (all events) | model-wide, no segments (all events) "
             "| other segments' alarms | alarms before the shift |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    summary: dict[float, dict[str, list[float]]] = {}
    for shift in shifts:
        for seed in seeds:
            events = segment_events(pre, 200 + seed) + segment_events(
                post, 300 + seed, shift_region="d", shift=shift, start_ts=1.8e9)
            in_d = np.cumsum([orjson.loads(e)["region"] == "d" for e in events])
            found: dict[str, list[Any]] = {}
            for name in ("segments", "plain"):
                p = Pipeline(cfgs[name], bases[name])
                out = []
                for i in range(0, len(events), BATCH):
                    dets, _ = p.process(events[i:i + BATCH], base_index=i)
                    out += dets
                found[name] = out

            def first(dets: list[Any], segment: str) -> int | None:
                hit = [d.index for d in dets
                       if d.segment == segment and d.feature == "x1" and d.index >= pre]
                return min(hit) if hit else None

            seg = first(found["segments"], "region=d")
            glob_seg = first(found["segments"], "")
            glob = first(found["plain"], "")
            others = sum(1 for d in found["segments"] if d.segment not in ("", "region=d"))
            before = sum(1 for n in ("segments", "plain") for d in found[n] if d.index < pre)
            seg_d = None if seg is None else int(in_d[seg] - in_d[pre - 1])

            def cell(v: int | None) -> str:
                return f"> {post:,} (missed)" if v is None else f"{v:,}"

            lines.append(f"| +{shift:g} sd | {seed} | {cell(seg_d)} | "
                         f"{cell(None if seg is None else seg - pre)} | "
                         f"{cell(None if glob_seg is None else glob_seg - pre)} | "
                         f"{cell(None if glob is None else glob - pre)} | {others} | {before} |")
            s = summary.setdefault(shift, {"seg": [], "seg_all": [], "glob_seg": [], "glob": []})
            for key, v in (("seg", seg_d), ("seg_all", None if seg is None else seg - pre),
                           ("glob_seg", None if glob_seg is None else glob_seg - pre),
                           ("glob", None if glob is None else glob - pre)):
                s[key].append(float("inf") if v is None else float(v))
            log(lines[-1])
    lines += ["", "| shift | median segment delay (region d events) | median segment delay "
              "(all events) | median model-wide delay, no segments (all events) | ratio |",
              "| --- | --- | --- | --- | --- |"]
    for shift, s in summary.items():
        med = {k: statistics.median(v) for k, v in s.items()}

        def fmt(v: float) -> str:
            return f"> {post:,} (missed)" if v == float("inf") else f"{v:,.0f}"

        ratio = "—" if float("inf") in (med["glob"], med["seg_all"]) else \
            f"{med['glob'] / med['seg_all']:.0f}x"
        lines.append(f"| +{shift:g} sd | {fmt(med['seg'])} | {fmt(med['seg_all'])} | "
                     f"{fmt(med['glob'])} | {ratio} |")
    return lines


# --------------------------------------------------------------------------- 2. cost
def _bench_model(segments: list[dict[str, Any]] | None) -> dict[str, Any]:
    import bench_pipeline as bp

    features, predictions = bp.columns()
    model: dict[str, Any] = {"name": bp.MODEL, "select": {"field": "model", "equals": bp.MODEL},
                             "baseline": {"reference": "reference.jsonl"},
                             "features": features, "predictions": predictions}
    if segments:
        model["segments"] = segments
    return model


def _quick_setup(folder: Path, segments: list[dict[str, Any]] | None) -> tuple[Any, Any, Any]:
    """(config, baselines, segments) with a short calibration."""
    from detectors.model import ModelBaseline
    from stream.config import parse_config
    from stream.engine.baselines import column_specs, detection_settings, read_reference

    cfg = parse_config({"models": [_bench_model(segments)]}, folder)
    model = cfg.models[0]
    quick = {"calibration_values": 100_000}
    data = read_reference(folder / "reference.jsonl", model)
    base = ModelBaseline.build(model.name, data, column_specs(model), dataclasses.replace(
        detection_settings(cfg.detection, model), **quick))
    segs: dict[str, Any] = {}
    if segments:
        from stream.engine.segments import (
            ModelSegments,
            decode_model,
            segment_settings,
            slice_plan,
        )

        full = read_reference(folder / "reference.jsonl", decode_model(model))
        settings = dataclasses.replace(segment_settings(cfg, model), **quick)
        segs = {model.name: ModelSegments(model, [slice_plan(model, s, full, settings, None)
                                                  for s in model.segments])}
    return cfg, {model.name: base}, segs


def cost_table(n: int, batch: int = BATCH) -> list[str]:
    import bench_pipeline as bp

    from stream.engine.pipeline import Pipeline

    folder = Path(tempfile.mkdtemp(prefix="bench-seg-cost-"))
    (folder / "reference.jsonl").write_bytes(b"\n".join(
        bp.stamp(b, 1.7e9) for b in bp.make_bodies(bp.REFERENCE_EVENTS, seed=1)))
    variants = {
        "no segments": None,
        "cat_0, top_k 4 (5 values x 20 columns)": [{"path": "features.cat_0", "top_k": 4}],
        "cat_0, top_k 10 (10 values x 20 columns)": [{"path": "features.cat_0", "top_k": 10}],
        "cat_0, top_k 10, columns [num_0] (10 values x 1 column)":
            [{"path": "features.cat_0", "top_k": 10, "columns": ["num_0"]}],
    }
    pipes: dict[str, Any] = {}
    monitors: dict[str, int] = {}
    t0 = time.perf_counter()
    for name, segs in variants.items():
        cfg, bases, built = _quick_setup(folder, segs)
        pipes[name] = Pipeline(cfg, bases, segments=built)
        monitors[name] = sum(len(p.labels) for ms in built.values() for p in ms.plans)
    log(f"cost: pipelines built in {time.perf_counter() - t0:.0f} s")
    bodies = [bp.stamp(b, 1.7e9 + i) for i, b in enumerate(bp.make_bodies(n, seed=3))]
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(0, n, batch):
        chunk = bodies[i:i + batch]
        for name, p in pipes.items():
            t = time.perf_counter()
            p.process(chunk, base_index=i)
            times[name].append(time.perf_counter() - t)
    warm = len(times["no segments"]) // 10  # the first batches fill the windows
    med = {k: statistics.median(v[warm:]) / batch * 1e6 for k, v in times.items()}
    base = med["no segments"]
    lines = ["| configuration | monitored values | µs per event (median batch) | events/s | "
             "vs no segments | µs per event per segment value |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name in variants:
        per = "—" if not monitors[name] else f"{(med[name] - base) / monitors[name]:.2f}"
        lines.append(f"| {name} | {monitors[name]} | {med[name]:.2f} | {1e6 / med[name]:,.0f} "
                     f"| {med[name] / base:.2f}x | {per} |")
    return lines


# --------------------------------------------------------------------------- 3. vs main
def time_no_segments(n: int) -> dict[str, float]:
    """µs per event of the no-segment pipeline of whatever code is on sys.path."""
    import bench_pipeline as bp

    from stream.engine.pipeline import Pipeline

    folder = Path(tempfile.mkdtemp(prefix="bench-seg-main-"))
    (folder / "reference.jsonl").write_bytes(b"\n".join(
        bp.stamp(b, 1.7e9) for b in bp.make_bodies(bp.REFERENCE_EVENTS, seed=1)))
    from detectors.model import ModelBaseline
    from stream.config import parse_config
    from stream.engine.baselines import column_specs, detection_settings, read_reference

    cfg = parse_config({"models": [_bench_model(None)]}, folder)
    model = cfg.models[0]
    base = ModelBaseline.build(model.name, read_reference(folder / "reference.jsonl", model),
                               column_specs(model), dataclasses.replace(
                                   detection_settings(cfg.detection),
                                   calibration_values=100_000))
    p = Pipeline(cfg, {model.name: base})
    bodies = [bp.stamp(b, 1.7e9 + i) for i, b in enumerate(bp.make_bodies(n, seed=3))]
    ts = []
    for i in range(0, n, BATCH):
        t = time.perf_counter()
        p.process(bodies[i:i + BATCH], base_index=i)
        ts.append(time.perf_counter() - t)
    ts = ts[len(ts) // 10:]
    return {"median": statistics.median(ts) / BATCH * 1e6, "best": min(ts) / BATCH * 1e6}


def vs_main(other: Path, rounds: int, n: int) -> list[str]:
    res: dict[str, list[dict[str, float]]] = {"this branch": [], str(other): []}
    for r in range(rounds):
        for label, root in (("this branch", REPO), (str(other), other)):
            env = {**os.environ, "PYTHONPATH": f"{root}:{HERE}"}
            out = subprocess.run(
                [sys.executable, "-c",
                 "import sys, json; sys.path[:0] = [sys.argv[1], sys.argv[2]]; "
                 "import bench_segments as b; print(json.dumps(b.time_no_segments(int(sys.argv[3]))))",
                 str(root), str(HERE), str(n)],
                env=env, capture_output=True, text=True, check=True, cwd=root)
            res[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
            log(f"round {r + 1} {label}: {res[label][-1]}")
    lines = ["| code | rounds | µs per event, median of the rounds' median batches | best batch |",
             "| --- | --- | --- | --- |"]
    for label, rs in res.items():
        lines.append(f"| {label} | {rounds} | {statistics.median(r['median'] for r in rs):.2f} "
                     f"| {min(r['best'] for r in rs):.2f} |")
    a = statistics.median(r["median"] for r in res["this branch"])
    b = statistics.median(r["median"] for r in res[str(other)])
    lines.append(f"\nratio this branch / {other}: {a / b:.3f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--vs-main", type=Path, default=None,
                    help="another checkout to time the no-segment pipeline against")
    ap.add_argument("--skip-delay", action="store_true")
    ap.add_argument("--skip-cost", action="store_true")
    args = ap.parse_args(argv)
    import bench_pipeline as bp

    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    out = [f"# Segments benchmark\n\nCommit {commit}. "
           f"Machine: {bp.machine()}. Command: `bench/bench_segments.py"
           f"{' --quick' if args.quick else ''}"
           f"{f' --vs-main {args.vs_main}' if args.vs_main else ''}`.\n"]
    if not args.skip_delay:
        seeds = [1, 2, 3] if args.quick else list(range(1, 11))
        out += ["## Delay: +1 sd and +0.5 sd of x1 in region d (5 % of the traffic), knob 10^7",
                "", *delay_table(seeds, [1.0, 0.5], 150_000), ""]
    n = 30_000 if args.quick else 100_000
    for batch in () if args.skip_cost else (BATCH, 5000):
        out += [f"## Cost per event (20-column events, batches of {batch}, decode included)",
                "", *cost_table(n, batch), ""]
    if args.vs_main:
        out += ["## No segments: this branch against another checkout (alternating "
                "subprocesses)", "", *vs_main(args.vs_main, 3 if args.quick else 7, n), ""]
    text = "\n".join(out)
    print(text)
    RESULTS.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
