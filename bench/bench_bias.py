"""Bias drift (``models[].bias``): what facets cost, and the default path without them.

In one process, no broker.

1. **Cost in the pipeline.** The events of ``tests/support/bias.py`` (model m1: one
   numeric feature, the score; facets ``sex``, 3 values, and ``age``, 4 values, both event
   fields outside the model's columns) through ``Pipeline.process`` in batches of 500
   (decode included), two pipelines interleaved batch by batch so that they see the same
   machine state: the model with its two facets, and the same model without ``bias``.
   Cost per event of the facets = (time with - time without) / events.
2. **The detector against a naive baseline.** :class:`detectors.bias.BiasMonitor` on
   arrays of value codes and positive flags against a per-event Python loop doing the same
   sliding-window counts and tests (in this process, same data): a ratio.
3. **No facets, against main.** ``--vs-main PATH`` times the pipeline without facets under
   this checkout and under the checkout at PATH, alternating subprocesses, medians.

Writes ``bench/results/bias.md``.

Usage::

    .venv/bin/python bench/bench_bias.py                      # ~2 min
    .venv/bin/python bench/bench_bias.py --vs-main /work/main
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "bias.md"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

BATCH = 500


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _pipelines(folder: Path, with_bias: bool) -> Any:
    from stream.config import load_config
    from stream.engine.baselines import resolve_baselines
    from stream.engine.pipeline import Pipeline
    from tests.support.bias import bias_model, write_reference

    if not (folder / "reference.jsonl").exists():
        write_reference(folder / "reference.jsonl")
    model = bias_model()
    if not with_bias:
        model = {k: v for k, v in model.items() if k != "bias"}
    name = "with.yaml" if with_bias else "plain.yaml"
    (folder / name).write_text(yaml.safe_dump({"models": [model]}))
    cfg = load_config(folder / name)
    return Pipeline(cfg, resolve_baselines(cfg))


def pipeline_cost(n: int, rounds: int) -> dict[str, float]:
    from tests.support.bias import bias_events

    folder = Path(tempfile.mkdtemp(prefix="bench-bias-"))
    pipes = {"plain": _pipelines(folder, False), "bias": _pipelines(folder, True)}
    events = bias_events(n, 5)
    batches = [events[i:i + BATCH] for i in range(0, n, BATCH)]
    times: dict[str, list[float]] = {k: [] for k in pipes}
    for _ in range(rounds):
        spent = dict.fromkeys(pipes, 0.0)
        for b in batches:
            for k, p in pipes.items():
                t0 = time.perf_counter()
                p.process(b)
                spent[k] += time.perf_counter() - t0
        for k in pipes:
            times[k].append(spent[k] / n * 1e6)
    return {k: statistics.median(v) for k, v in times.items()}


def naive_update(state: dict[str, Any], codes: list[int], positive: list[bool]) -> int:
    """The same detector, one event at a time in Python (the naive baseline)."""
    from detectors.bias import MIN_WINDOW_EVENTS

    alarms = 0
    k, cad, c = state["k"], state["cadence"], state["chunks"]
    for code, pos in zip(codes, positive, strict=True):
        state["pn"][code] += 1
        state["pp"][code] += int(pos)
        state["fill"] += 1
        if state["fill"] < cad:
            continue
        state["fill"] = 0
        state["ring"].append((list(state["pn"]), list(state["pp"])))
        state["pn"] = [0] * len(state["pn"])
        state["pp"] = [0] * len(state["pp"])
        if len(state["ring"]) > c:
            state["ring"].pop(0)
        if len(state["ring"]) < c:
            continue
        wn = [sum(r[0][j] for r in state["ring"]) for j in range(len(state["pn"]))]
        wp = [sum(r[1][j] for r in state["ring"]) for j in range(len(state["pn"]))]
        n_all, p_all = sum(wn), sum(wp)
        for j in range(k):
            nd, na = wn[j], n_all - wn[j]
            if nd < MIN_WINDOW_EVENTS or na < MIN_WINDOW_EVENTS:
                continue
            kd, ka = wp[j], p_all - wp[j]
            sd, sa = (kd + 0.5) / (nd + 1), (ka + 0.5) / (na + 1)
            se = (sd * (1 - sd) / nd + sa * (1 - sa) / na) ** 0.5
            z = abs(ka / na - kd / nd - state["ref"][j]) / se
            active = z > state["h"]
            alarms += int(active and not state["active"][j])
            state["active"][j] = active
    return alarms


def detector_ratio(n: int) -> dict[str, float]:
    from detectors.bias import build_baseline

    rng = np.random.default_rng(3)
    shares = np.array([0.45, 0.30, 0.20, 0.05])
    rates = np.array([0.30, 0.40, 0.35, 0.25])
    codes = rng.choice(4, 40_000, p=shares)
    base = build_baseline("f", ["a", "b", "c", "other"], codes, rng.random(40_000) < rates[codes],
                          20_000, 500, False).calibrate(1e6)
    codes = rng.choice(4, n, p=shares)
    pos = rng.random(n) < rates[codes]
    mon = base.monitor()
    t0 = time.perf_counter()
    for i in range(0, n, BATCH):
        mon.update(codes[i:i + BATCH], pos[i:i + BATCH])
    vec = (time.perf_counter() - t0) / n * 1e6
    state = {"k": 4, "cadence": 500, "chunks": 40, "pn": [0] * 4, "pp": [0] * 4, "fill": 0,
             "ring": [], "ref": base.ref_dppl.tolist(), "h": base.threshold,
             "active": [False] * 4}
    cl, pl = codes.tolist(), pos.tolist()
    t0 = time.perf_counter()
    for i in range(0, n, BATCH):
        naive_update(state, cl[i:i + BATCH], pl[i:i + BATCH])
    slow = (time.perf_counter() - t0) / n * 1e6
    return {"vectorised": vec, "naive": slow}


#: the child of --vs-main: only the stream API of the checkout it runs in (sys.path[0])
_CHILD = """
import sys, json, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from stream.config import load_config
from stream.engine.baselines import resolve_baselines
from stream.engine.pipeline import Pipeline
folder = Path(sys.argv[2])
cfg = load_config(folder / "plain.yaml")
p = Pipeline(cfg, resolve_baselines(cfg))
events = (folder / "events.jsonl").read_bytes().splitlines()
t0 = time.perf_counter()
for i in range(0, len(events), {batch}):
    p.process(events[i:i + {batch}])
print(json.dumps((time.perf_counter() - t0) / len(events) * 1e6))
"""


def vs_main(path: Path, n: int, rounds: int) -> dict[str, float]:
    import os

    from tests.support.bias import bias_events

    folder = Path(tempfile.mkdtemp(prefix="bench-bias-main-"))
    _pipelines(folder, False)  # writes reference.jsonl and plain.yaml
    (folder / "events.jsonl").write_bytes(b"\n".join(bias_events(n, 5)) + b"\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out: dict[str, list[float]] = {"this": [], "main": []}
    code = _CHILD.format(batch=BATCH)
    for _ in range(rounds):
        for name, root in (("this", REPO), ("main", path)):
            res = subprocess.run([sys.executable, "-c", code, str(root), str(folder)],
                                 capture_output=True, text=True, cwd=root, env=env,
                                 check=True)
            out[name].append(float(json.loads(res.stdout.strip().splitlines()[-1])))
    return {k: statistics.median(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--vs-main", type=Path, default=None)
    args = ap.parse_args()
    lines = ["# Bias drift: cost", "",
             f"`bench/bench_bias.py` (events {args.events}, batches of {BATCH}, "
             f"medians of {args.rounds} rounds; numpy {np.__version__}).", ""]
    log("pipeline with and without facets ...")
    pc = pipeline_cost(args.events, args.rounds)
    lines += ["## Pipeline (decode included), µs per event", "",
              "| pipeline | µs / event |", "| --- | --- |",
              f"| model m1 without facets | {pc['plain']:.2f} |",
              f"| model m1 with 2 facets (3 + 4 values) | {pc['bias']:.2f} |",
              f"| cost of the 2 facets | {pc['bias'] - pc['plain']:.2f} "
              f"({(pc['bias'] / pc['plain'] - 1) * 100:.0f} %) |", ""]
    log("detector against the naive loop ...")
    dr = detector_ratio(400_000)
    lines += ["## Detector alone (4 values, window 20,000, cadence 500), µs per event", "",
              "| implementation | µs / event |", "| --- | --- |",
              f"| BiasMonitor (bincount per batch, loop per chunk) | {dr['vectorised']:.3f} |",
              f"| naive per-event Python loop (same statistic) | {dr['naive']:.3f} |",
              f"| ratio naive / vectorised | {dr['naive'] / dr['vectorised']:.1f} x |", ""]
    if args.vs_main:
        log(f"no facets: this checkout against {args.vs_main} ...")
        vm = vs_main(args.vs_main, args.events, args.rounds)
        lines += ["## No facets: this checkout against main, µs per event", "",
                  "| code | µs / event |", "| --- | --- |",
                  f"| this checkout | {vm['this']:.2f} |",
                  f"| {args.vs_main} | {vm['main']:.2f} |",
                  f"| ratio | {vm['this'] / vm['main']:.3f} |", ""]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
