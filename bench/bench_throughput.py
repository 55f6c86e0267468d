"""Throughput of streamdrift's default alarming detector set, single thread.

Measures ``ColumnMonitor.update`` with the default detectors of each column type
(numeric: ks + adwin + cusum + missing + out_of_range; categorical: chi2 + surprisal +
missing + unseen), calibrated by ``ModelBaseline.build`` at default settings, on batches
of 1,000 and 10,000 values after a warm-up (numba JIT), and in the same run
River's per-value loops (``river.drift.ADWIN``, ``river.drift.KSWIN``) for the
ratio.  Also reports the state size per feature (JSON of
``ColumnMonitor.to_dict()`` and numpy ``nbytes``) and a cProfile of the hot path.

Writes ``bench/results/throughput.md``.

Usage::

    .venv/bin/python bench/bench_throughput.py            # full run (~2 min)
    .venv/bin/python bench/bench_throughput.py --quick    # smoke run (~30 s)
"""

from __future__ import annotations

import os

# single thread everywhere, before numpy / numba are imported
os.environ["NUMBA_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from detectors.adwin import ADWIN  # noqa: E402
from detectors.base import Detector  # noqa: E402
from detectors.catalogue import is_sequential  # noqa: E402
from detectors.column import ColumnMonitor  # noqa: E402
from detectors.model import ColumnSpec, DetectionSettings, ModelBaseline  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
N_CATEGORIES = 20


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, Python {platform.python_version()}, numpy {np.__version__}"


def git_state() -> str:
    """HEAD commit, and the uncommitted files under detectors/ if any."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "detectors"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    files = [ln[3:] for ln in dirty if ln.strip()]
    return head + (f" + uncommitted changes to {', '.join(files)}" if files else "")


def pin_one_core() -> str:
    """Pin the process to one CPU where the OS allows it."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})
        return f"pinned to CPU {cpus[-1]}"
    except (AttributeError, OSError):
        return "not pinned"


# -- columns ------------------------------------------------------------------
def categories(n: int = N_CATEGORIES) -> tuple[np.ndarray, np.ndarray]:
    names = np.array([f"category_{i:02d}" for i in range(n)], dtype=object)
    p = 1.0 / np.arange(1, n + 1)
    return names, p / p.sum()


def build_monitors(seed: int) -> tuple[ColumnMonitor, ColumnMonitor, dict]:
    """Fresh numeric and categorical monitors with the default detectors, calibrated."""
    rng = np.random.default_rng(seed)
    names, p = categories()
    ref = {"x": rng.normal(size=10_000), "c": rng.choice(names, 10_000, p=p)}
    specs = [ColumnSpec("x", "numeric"), ColumnSpec("c", "categorical")]
    settings = DetectionSettings()
    t0 = time.perf_counter()
    base = ModelBaseline.build("bench", ref, specs, settings)
    info = {"build_s": time.perf_counter() - t0, "thresholds": base.thresholds,
            "false_alarm_events": settings.false_alarm_events}
    mon = base.monitor(specs, settings)
    return mon.columns["x"], mon.columns["c"], info


def fresh(monitor: ColumnMonitor) -> ColumnMonitor:
    """An identical monitor in its initial state (restored from a saved fresh one)."""
    return ColumnMonitor.from_dict(monitor.to_dict(), monitor.profile)


def numeric_stream(n: int, seed: int, missing: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    if missing:
        x[rng.random(n) < missing] = np.nan
    return x


def categorical_stream(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    names, p = categories()
    return names[np.minimum(np.searchsorted(np.cumsum(p), rng.random(n), side="right"),
                            p.size - 1)]


# -- timing -------------------------------------------------------------------
def time_batches(mon: ColumnMonitor, data: np.ndarray, batch: int,
                 repeats: int) -> dict[str, float]:
    """Feed ``data`` in batches to a copy of ``mon`` (warm), ``repeats`` times; best & median."""
    batches = [data[i:i + batch] for i in range(0, data.size, batch)]
    walls, cpus = [], []
    alarms = 0
    for _ in range(repeats):
        m = fresh(mon)
        # warm-up: fill the windows, JIT already done by the caller
        for b in batches[: max(1, 20_000 // batch)]:
            m.update(b)
        t0, c0 = time.perf_counter(), time.process_time()
        for b in batches:
            alarms += len(m.update(b))
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    best = min(walls)
    return {"values": float(data.size), "batch": float(batch), "best_s": best,
            "median_s": float(np.median(walls)), "cpu_s": float(np.median(cpus)),
            "rate_best": data.size / best, "rate_median": data.size / float(np.median(walls)),
            "us_per_batch": best / len(batches) * 1e6, "alarms": float(alarms)}


def time_detector(det_factory: Any, data: np.ndarray, batch: int, repeats: int) -> float:
    """values/s of one bare detector fed in batches (best of ``repeats``)."""
    best = math.inf
    batches = [data[i:i + batch] for i in range(0, data.size, batch)]
    for _ in range(repeats):
        det = det_factory()
        det.update(data[:2000])
        t0 = time.perf_counter()
        for b in batches:
            det.update(b)
        best = min(best, time.perf_counter() - t0)
    return data.size / best


def time_river(kind: str, n: int, seed: int, repeats: int) -> dict[str, float]:
    """values/s of a River detector fed one value at a time in a Python loop."""
    from river import drift

    vals = numeric_stream(n, seed).tolist()
    best = math.inf
    for _ in range(repeats):
        det = drift.ADWIN() if kind == "adwin" else drift.KSWIN(seed=seed)
        for v in vals[:200]:
            det.update(v)
        t0 = time.perf_counter()
        for v in vals:
            det.update(v)
            _ = det.drift_detected
        best = min(best, time.perf_counter() - t0)
    return {"values": float(n), "best_s": best, "rate": n / best}


def breakdown(mon: ColumnMonitor, data: np.ndarray, batch: int,
              repeats: int) -> list[tuple[str, float]]:
    """µs per batch of ``ColumnMonitor.update`` with growing sets of alarming detectors.

    Uses only the public constructor: a monitor always classifies the values and
    keeps its ratio/distance trackers (a histogram window, the out-of-range,
    missing and invalid rate windows), so the first row is that fixed cost and
    each further row adds detectors.  Robust to changes of the internals.
    """
    batches = [data[i:i + batch] for i in range(0, data.size, batch)]
    kinds = list(mon.detectors)
    own = [k for k in kinds if is_sequential(k)]  # the detectors with work of their own
    steps = [[], [k for k in kinds if k not in own], *([k] for k in own), kinds]
    labels = ["trackers only (no alarming detector)",
              f"alarming {' + '.join(steps[1])} (no {', no '.join(own)})",
              *(f"alarming {k} only" for k in own),
              f"full default set ({' + '.join(kinds)})"]
    out = []
    for label, subset in zip(labels, steps, strict=True):
        best = math.inf
        for _ in range(repeats):
            dets = {k: Detector.from_dict(mon.detectors[k].to_dict()) for k in subset}
            m = ColumnMonitor(mon.name, mon.profile, dets, mon.window, mon.cadence, mon.role)
            for b in batches[:20]:  # fill the windows
                m.update(b)
            t0 = time.perf_counter()
            for b in batches:
                m.update(b)
            best = min(best, time.perf_counter() - t0)
        out.append((label, best / len(batches) * 1e6))
    return out


# -- state size ---------------------------------------------------------------
def _arrays(obj: Any, seen: set[int]) -> int:
    """Sum of ``nbytes`` of the numpy arrays reachable from a detector's attributes."""
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    total = 0
    if isinstance(obj, dict):
        for v in obj.values():
            total += _arrays(v, seen)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            total += _arrays(v, seen)
    elif isinstance(obj, Detector) or type(obj).__name__ == "_KernelState":
        attrs = getattr(obj, "__dict__", None)
        if attrs is None:  # __slots__
            attrs = {k: getattr(obj, k) for k in type(obj).__slots__}
        for v in attrs.values():
            total += _arrays(v, seen)
    return total


def state_size(mon: ColumnMonitor) -> dict[str, Any]:
    """Bytes of state of one warmed-up column monitor (the baseline profile excluded)."""
    js = json.dumps(mon.to_dict(), separators=(",", ":"))
    seen: set[int] = set()
    parts = {}
    for kind, det in mon.detectors.items():
        parts[kind] = _arrays(det, seen)
    trackers = {"invalid": mon._invalid, "missing": mon._missing, "flag": mon._flag,
                "hist": mon._hist}
    parts["trackers"] = sum(_arrays(t, seen) for t in trackers.values())
    per_det_json = {k: len(json.dumps(d.to_dict(), separators=(",", ":")))
                    for k, d in mon.detectors.items()}
    return {"json": len(js), "nbytes": sum(parts.values()), "nbytes_parts": parts,
            "json_parts": per_det_json}


# -- profile ------------------------------------------------------------------
def profile_update(mon: ColumnMonitor, data: np.ndarray, batch: int, top: int = 14) -> str:
    m = fresh(mon)
    batches = [data[i:i + batch] for i in range(0, data.size, batch)]
    for b in batches[:20]:
        m.update(b)
    prof = cProfile.Profile()
    prof.enable()
    for b in batches:
        m.update(b)
    prof.disable()
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("tottime").print_stats(top)
    lines = [ln.rstrip() for ln in buf.getvalue().splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith("ncalls"))
    root = str(Path(__file__).resolve().parents[1]) + "/"
    site = str(Path(np.__file__).resolve().parents[1]) + "/"
    return "\n".join(ln.replace(root, "").replace(site, "") for ln in lines[start:] if ln)


# -- main ------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (~30 s)")
    ap.add_argument("--values", type=int, help="values per timed pass (default 4,000,000)")
    ap.add_argument("--repeats", type=int, help="timed passes, best is reported (default 5)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    n = args.values or (500_000 if args.quick else 4_000_000)
    repeats = args.repeats or (2 if args.quick else 5)
    n_river_adwin = 50_000 if args.quick else 300_000
    n_river_kswin = 1_000 if args.quick else 5_000
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    pinned = "not pinned" if args.no_pin else pin_one_core()
    log(f"bench_throughput: {n:,} values per pass, best of {repeats}, {pinned}")

    num_mon, cat_mon, info = build_monitors(args.seed)
    log(f"  baseline built and calibrated in {info['build_s']:.1f} s")
    x = numeric_stream(n, args.seed + 1)
    xm = numeric_stream(n, args.seed + 2, missing=0.01)
    c = categorical_stream(n, args.seed + 3)
    # JIT warm-up of the ADWIN kernel and first-call costs
    fresh(num_mon).update(x[:50_000])
    fresh(cat_mon).update(c[:50_000])

    rows = []
    for label, mon, data in ((f"numeric ({' + '.join(num_mon.detectors)})", num_mon, x),
                             ("numeric, 1 % missing values", num_mon, xm),
                             (f"categorical ({' + '.join(cat_mon.detectors)})", cat_mon, c)):
        for batch in (1_000, 10_000):
            log(f"  timing {label}, batch {batch:,} ...")
            r = time_batches(mon, data, batch, repeats)
            r["label"] = label
            rows.append(r)
            log(f"    {r['rate_best'] / 1e6:.2f} M values/s (median "
                f"{r['rate_median'] / 1e6:.2f}), CPU/wall {r['cpu_s'] / r['median_s']:.2f}")

    log("  bare detectors and River loops ...")
    adwin_rate = {b: time_detector(lambda: ADWIN(), x, b, repeats) for b in (1_000, 10_000)}
    ks_det = num_mon.detectors["ks"]
    ks_rate = {b: time_detector(lambda: Detector.from_dict(ks_det.to_dict()), x, b, repeats)
               for b in (1_000, 10_000)}
    river_adwin = time_river("adwin", n_river_adwin, args.seed, min(repeats, 3))
    log(f"    River ADWIN {river_adwin['rate'] / 1e6:.2f} M values/s")
    river_kswin = time_river("kswin", n_river_kswin, args.seed, 1)
    log(f"    River KSWIN {river_kswin['rate']:,.0f} values/s")

    log("  stage breakdown ...")
    stages = {b: breakdown(num_mon, x[: min(n, 1_000_000)], b, repeats) for b in (1_000, 10_000)}

    log("  state size and profile ...")
    warm_num, warm_cat = fresh(num_mon), fresh(cat_mon)
    warm_num.update(x[:200_000])
    warm_cat.update(c[:200_000])
    size_num, size_cat = state_size(warm_num), state_size(warm_cat)
    prof_num = profile_update(num_mon, x[: min(n, 2_000_000)], 1_000)
    prof_cat = profile_update(cat_mon, c[: min(n, 1_000_000)], 1_000)
    total = time.perf_counter() - t_start

    write_markdown(args, rows, adwin_rate, ks_rate, river_adwin, river_kswin, size_num,
                   size_cat, prof_num, prof_cat, info, total, pinned, n, repeats, stages)
    log(f"wrote {args.out / 'throughput.md'} in {total:.0f} s")
    return 0


def write_markdown(args: argparse.Namespace, rows: list[dict], adwin_rate: dict,
                   ks_rate: dict, river_adwin: dict, river_kswin: dict, size_num: dict,
                   size_cat: dict, prof_num: str, prof_cat: str, info: dict, total: float,
                   pinned: str, n: int, repeats: int,
                   stages: dict[int, list[tuple[str, float]]]) -> None:
    def m(v: float) -> str:
        return f"{v / 1e6:.2f} M"

    num1k = next(r for r in rows if r["label"].startswith("numeric (") and r["batch"] == 1000)
    num10k = next(r for r in rows if r["label"].startswith("numeric (") and r["batch"] == 10000)
    L = ["# Throughput of the default detector set (single thread)\n"]
    L.append(f"Generated by `bench/bench_throughput.py{' --quick' if args.quick else ''}` in "
             f"{total:.0f} s on {machine()}; `NUMBA_NUM_THREADS=1`, `OMP_NUM_THREADS=1`, "
             f"process {pinned}.  Each figure is the best of {repeats} passes over {n:,} "
             f"values (median in brackets), after a warm-up that compiled the ADWIN and "
             f"CUSUM kernels and filled the windows.  Thresholds come from `ModelBaseline.build` at default "
             f"settings (window 1,000, cadence 50, 32 bins, ADWIN clock 32, "
             f"false_alarm_events {info['false_alarm_events']:,.0f}) on 10,000 reference "
             f"values; the streams have no drift.  Categorical values are Python strings "
             f"from {N_CATEGORIES} categories (Zipf).  Detectors code: commit "
             f"{git_state()}.\n")
    L.append("## `ColumnMonitor.update`, default alarming set\n")
    L.append("| column | batch | values/s per core | µs per batch | ns per value | "
             "CPU / wall |")
    L.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        L.append(f"| {r['label']} | {int(r['batch']):,} | {m(r['rate_best'])} "
                 f"({m(r['rate_median'])}) | {r['us_per_batch']:,.0f} | "
                 f"{1e9 / r['rate_best']:.0f} | {r['cpu_s'] / r['median_s']:.2f} |")
    goal = num1k["rate_best"] >= 5e6 and num10k["rate_best"] >= 5e6
    L.append(f"\nGoal ≥ 5 M numeric feature-values/s per core: "
             f"**{'met' if goal else 'not met'}** ({m(num1k['rate_best'])} at batch 1,000, "
             f"{m(num10k['rate_best'])} at batch 10,000).\n")
    L.append("## Against River's per-value loop (same run)\n")
    L.append("| detector | how it is fed | values/s | ours numeric set ÷ it (batch 1,000 / "
             "10,000) |")
    L.append("| --- | --- | ---: | ---: |")
    L.append(f"| River ADWIN (clock 32) | `update(x)` per value, {int(river_adwin['values']):,} "
             f"values | {m(river_adwin['rate'])} | "
             f"{num1k['rate_best'] / river_adwin['rate']:.1f}× / "
             f"{num10k['rate_best'] / river_adwin['rate']:.1f}× |")
    L.append(f"| River KSWIN (window 100, stat 30) | `update(x)` per value, "
             f"{int(river_kswin['values']):,} values | {river_kswin['rate']:,.0f} | "
             f"{num1k['rate_best'] / river_kswin['rate']:,.0f}× / "
             f"{num10k['rate_best'] / river_kswin['rate']:,.0f}× |")
    L.append(f"| ours ADWIN alone (clock 32) | batches of 1,000 / 10,000 | "
             f"{m(adwin_rate[1000])} / {m(adwin_rate[10000])} | — |")
    L.append(f"| ours KS window alone (raw values) | batches of 1,000 / 10,000 | "
             f"{m(ks_rate[1000])} / {m(ks_rate[10000])} | — |")
    L.append(f"\nOur ADWIN alone vs River's ADWIN (identical output): "
             f"{adwin_rate[1000] / river_adwin['rate']:.0f}× at batch 1,000.\n")
    L.append("## Where the numeric time goes\n")
    L.append("`ColumnMonitor.update` on the same stream with growing sets of alarming "
             "detectors (best of the passes).  A monitor always classifies the values and "
             "feeds its non-alarming trackers (histogram window, out-of-range, missing and "
             "invalid rates), so the first row is the fixed cost; ADWIN and CUSUM are the only "
             "detectors that add work of their own.\n")
    L.append("| monitor | µs per batch of 1,000 | M values/s | µs per batch of 10,000 | "
             "M values/s |")
    L.append("| --- | ---: | ---: | ---: | ---: |")
    for (label, t1), (_, t10) in zip(stages[1000], stages[10000], strict=True):
        L.append(f"| {label} | {t1:,.0f} | {1e3 / t1:.2f} | {t10:,.0f} | {1e4 / t10:.2f} |")
    L.append("")
    L.append("## State per feature (default settings, windows full)\n")
    L.append("The baseline profile (reservoir, bin edges; shared, read-only) is not counted.\n")
    L.append("| column | JSON of `ColumnMonitor.to_dict()` | numpy `nbytes` | nbytes by part | "
             "JSON by detector |")
    L.append("| --- | ---: | ---: | --- | --- |")
    for label, s in (("numeric", size_num), ("categorical", size_cat)):
        parts = ", ".join(f"{k} {v:,}" for k, v in s["nbytes_parts"].items())
        jparts = ", ".join(f"{k} {v:,}" for k, v in s["json_parts"].items())
        L.append(f"| {label} | {s['json']:,} B | {s['nbytes']:,} B | {parts} | {jparts} |")
    L.append("\n## Profile of the hot path (cProfile, batches of 1,000, sorted by own time)\n")
    L.append("Numeric column:\n")
    L.append("```\n" + prof_num + "\n```\n")
    L.append("Categorical column:\n")
    L.append("```\n" + prof_cat + "\n```\n")
    (args.out / "throughput.md").write_text("\n".join(L), encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
