"""The HTML back-test report on a long history: time and peak memory (issue #18).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_report.py [--events 1000000] [--quick]

Writes a history of N JSON events (about 600 bytes each: 14 numeric and 4 categorical
features, a numeric and a categorical prediction, and request metadata the monitor does
not read) with two drifts (``num_0`` +0.5 sd over 5 % of the events from 60 %, the
shares of ``cat_1`` changed over 5 % from 80 %) and a reference of 20,000 clean events,
builds the baseline once (``streamdrift baseline``, timed apart: a user builds it once),
then runs, each in a fresh process pinned to one core (``os.sched_setaffinity``):

* ``streamdrift replay`` (the JSON report only): the cost without the HTML report;
* ``streamdrift report --html`` (the page);
* ``streamdrift report --html --inject`` (the page and every what-if scenario, with the
  default magnitudes, at the middle of the history).

For each: wall seconds, CPU seconds of the process, events per second, peak RSS
(``ru_maxrss`` of the child, from ``os.wait4``) and the size of the page.  The goal of
issue #18 is at most 60 s for 1,000,000 events on one core.  ~2.5 min for 1,000,000
events on the shared 2-core machine (generation ~15 s, baseline ~50 s, the three runs
~1 min); the history and the baseline are kept in ``--workdir`` and reused.  ``--quick``
(100,000 events) ~20 s once the baseline exists.  ``--json`` / ``--markdown`` write the
results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
N_NUMERIC, N_CATEGORICAL = 14, 4
CATS = [["de", "fr", "it", "es", "nl", "pl"], ["web", "app", "store"],
        ["ios", "android", "desktop", "tablet"], ["new", "regular", "vip", "churn", "dormant"]]
CAT_P = [[0.3, 0.25, 0.2, 0.1, 0.1, 0.05], [0.5, 0.3, 0.2], [0.3, 0.4, 0.2, 0.1],
         [0.2, 0.4, 0.1, 0.2, 0.1]]
CAT1_DRIFT = [0.3, 0.3, 0.4]
LABELS = ["approve", "review", "decline"]


def log(msg: str) -> None:
    print(f"[bench_report {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def write_events(path: Path, n: int, seed: int, drift: bool) -> None:
    """``n`` events; with ``drift``, the two drifts of the module docstring."""
    rng = np.random.default_rng(seed)
    num = np.empty((N_NUMERIC, n))
    for j in range(N_NUMERIC):
        if j % 3 == 0:
            num[j] = rng.normal(100 + 10 * j, 15 + j, n)
        elif j % 3 == 1:
            num[j] = rng.lognormal(3 + j / 10, 0.5, n)
        else:
            num[j] = rng.integers(0, 50 + 10 * j, n)
    cats = [rng.choice(len(c), n, p=p) for c, p in zip(CATS, CAT_P, strict=True)]
    if drift:
        a, b = int(n * 0.6), int(n * 0.65)
        num[0, a:b] += 0.5 * 15
        a, b = int(n * 0.8), int(n * 0.85)
        cats[1][a:b] = rng.choice(3, b - a, p=CAT1_DRIFT)
    num = np.round(num, 4)
    score = np.round(rng.beta(2, 5, n), 5)
    label = rng.choice(3, n, p=[0.7, 0.2, 0.1])
    numl = num.T.tolist()
    names = [f"num_{j}" for j in range(N_NUMERIC)]
    with path.open("wb") as fh:
        for i in range(n):
            features: dict[str, Any] = dict(zip(names, numl[i], strict=True))
            for j in range(N_CATEGORICAL):
                features[f"cat_{j}"] = CATS[j][cats[j][i]]
            event = {"model": "credit", "ts": 1_700_000_000 + i * 0.01,
                     "request_id": f"req-{seed:04d}-{i:012d}", "tenant": "acme-retail-eu",
                     "served_by": f"credit-scorer-{i % 8}.prod.svc.cluster.local",
                     "features": features,
                     "prediction": {"score": score[i], "label": LABELS[label[i]]}}
            fh.write(orjson.dumps(event, option=orjson.OPT_SERIALIZE_NUMPY))
            fh.write(b"\n")


def write_config(work: Path) -> Path:
    feats = [{"name": f"num_{j}", "path": f"features.num_{j}", "type": "numeric"}
             for j in range(N_NUMERIC)]
    feats += [{"name": f"cat_{j}", "path": f"features.cat_{j}", "type": "categorical"}
              for j in range(N_CATEGORICAL)]
    config = {
        "source": {"timestamp": {"path": "ts", "unit": "s"}},
        "models": [{"name": "credit", "select": {"field": "model", "equals": "credit"},
                    "baseline": {"file": "credit.baseline.json"},
                    "features": feats,
                    "predictions": [
                        {"name": "score", "path": "prediction.score", "type": "numeric"},
                        {"name": "label", "path": "prediction.label",
                         "type": "categorical"}]}],
        "detection": {"false_alarm_events": 10_000_000},
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def timed(cmd: list[str], core: int | None) -> dict[str, Any]:
    """Run ``cmd`` pinned to ``core``: wall and CPU seconds, peak RSS of the child."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def pin() -> None:
        if core is not None:
            os.sched_setaffinity(0, {core})

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, preexec_fn=pin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out}\n{err[-3000:]}")
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "stdout": out.strip()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--quick", action="store_true", help="100,000 events")
    p.add_argument("--workdir", default="/tmp/streamdrift-bench-report")
    p.add_argument("--core", type=int, default=0, help="CPU to pin the runs to (-1: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--markdown", help="write the results table here")
    args = p.parse_args(argv)
    n = 100_000 if args.quick else args.events
    core = None if args.core < 0 else args.core
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    events = work / f"events-{n}-{args.seed}.jsonl"
    if not events.exists():
        log(f"writing {n:,} events")
        t = time.perf_counter()
        write_events(work / "tmp.jsonl", n, args.seed, drift=True)
        (work / "tmp.jsonl").rename(events)
        log(f"  {time.perf_counter() - t:.1f} s, {events.stat().st_size / 1e6:.0f} MB")
    ref = work / "reference.jsonl"
    if not ref.exists():
        write_events(ref, 20_000, args.seed + 1000, drift=False)
    config = write_config(work)
    py = sys.executable
    cli = [py, "-m", "stream.cli", "--log-level", "warning"]
    if (work / "credit.baseline.json").exists():
        base = {"wall_s": None}
    else:
        log("baseline")
        base = timed([*cli, "baseline", "-c", str(config), "--reference", str(ref),
                      "--no-progress"], core)
        log(f"  {base['wall_s']} s")
    rows = []
    runs = [("replay (JSON only)", ["replay", "--report", str(work / "replay.json")]),
            ("report (HTML)", ["report", "--html", str(work / "report.html")]),
            ("report (HTML) + --inject", ["report", "--html", str(work / "inject.html"),
                                          "--json", str(work / "inject.json"), "--inject"])]
    for label, extra in runs:
        log(label)
        r = timed([*cli, extra[0], "-c", str(config), "--input", str(events), *extra[1:],
                   "--no-progress"], core)
        page = next((Path(a) for a in extra if a.endswith(".html")), None)
        r.update(label=label, events=n, events_per_s=round(n / r["wall_s"]),
                 page_kb=round(page.stat().st_size / 1024) if page else None)
        log(f"  {r['wall_s']} s wall, {r['cpu_s']} s CPU, {r['peak_rss_mb']} MB peak")
        rows.append(r)
    result = {"events": n, "seed": args.seed, "core": core, "baseline_s": base["wall_s"],
              "machine": f"{platform.processor() or platform.machine()}, "
                         f"{os.cpu_count()} cores, Python {platform.python_version()}",
              "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M"),
              "rows": rows}
    text = render(result)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


def render(r: dict[str, Any]) -> str:
    lines = ["# streamdrift report benchmark (issue #18)\n",
             f"`bench/bench_report.py` — {r['date']}; {r['machine']}; runs pinned to core "
             f"{r['core']}; load average at the end {', '.join(f'{v:.2f}' for v in r['load_average'])} "
             f"(the machine is shared).  {r['events']:,} events, seed {r['seed']}; baseline "
             + (f"built beforehand in {r['baseline_s']} s" if isinstance(r["baseline_s"], float)
                else "built beforehand by an earlier run") + " (not counted below).\n",
             "| run | events | wall s | CPU s | events/s (wall) | peak RSS MB | page KB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        lines.append(f"| {row['label']} | {row['events']:,} | {row['wall_s']} | {row['cpu_s']} "
                     f"| {row['events_per_s']:,} | {row['peak_rss_mb']} | "
                     f"{row['page_kb'] if row['page_kb'] is not None else '–'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
