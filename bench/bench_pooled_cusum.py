"""A CUSUM pooled over monitors from segment summaries, without Kafka (issue 14, item 4).

With ``source.repartition`` and ``M`` internal partitions, each monitor sees 1/M of the
events and its CUSUM needs M times as many total events to see the same evidence.  The
idea measured here: each monitor summarises its CUSUM's steps per segment of its own
events (:mod:`detectors.cusum_merge`, exact), and one member folds the summaries of all
monitors into one CUSUM over every event.

The simulation: a global stream of ``--clean`` N(0, 1) values then N(shift, 1) values (the
standardised x1 of bench_scaleout.py; a 0.5 σ shift), each event sent to a uniformly drawn
monitor (the first stage's hash of the source position).  Each monitor publishes every
``B`` of its own events (a batch), one summary per chunk of ``b`` of its events (``b = B``:
one summary per batch).  The fold takes the chunks in the order of their last event
(for ``b = B``: their arrival order, without latency), so the events of one chunk are
consecutive in the pooled stream; an alarm is stamped with the last event of its chunk
(the summary cannot place the crossing inside the chunk).  Reported, in total events
after the drift's first event, medians over seeds:

* ``single``: one CUSUM over every event (the 1-partition run);
* ``per monitor``: M CUSUMs, each on its own events, the first of them to alarm (today's
  runtime with M internal partitions);
* ``pooled, stamp``: the fold's first alarm, at its chunk's last event (what
  bench_scaleout.py's delay counts: the alarm's event);
* ``pooled, visible``: the events produced before the fold can raise it: it must wait until
  every monitor has published past the chunk (each monitor's next batch end after it).

And the false-alarm rate under no drift (``--null-events`` per seed, lower thresholds so
that alarms are counted by the thousand): alarms per million total events, one CUSUM over
every event against the fold.  Writes ``bench/results/pooled_cusum.md`` (``--out``).

Usage::

    PYTHONPATH=$PWD python bench/bench_pooled_cusum.py --seeds 200 --base-seed 0
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from detectors.cusum import CUSUM, CUSUM_K  # noqa: E402
from detectors.cusum_merge import fold, summarise  # noqa: E402

#: the x1 CUSUM's threshold in bench_scaleout.py's configuration (m1, false_alarm_events
#: 10,000,000): Pipeline(...).fresh["m1"].columns["x1"].detectors["cusum"].h
H_X1 = 32.91123310888909


def chunk_plan(owner: np.ndarray, monitor: int, b: int, batch: int,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The chunks of ``monitor``'s events (global indices ``idx``): ``b`` of its events per
    chunk, chunks never across a batch of ``batch`` events.  Returns ``idx``, the chunks'
    bounds into ``idx``, each chunk's last global index, and each chunk's batch's last global
    index (when the monitor publishes it)."""
    idx = np.flatnonzero(owner == monitor)
    n = idx.size
    starts = []
    for s in range(0, n, batch):
        e = min(s + batch, n)
        starts.extend(range(s, e, b))
    bounds = np.array([*starts, n], dtype=np.int64)
    last = idx[bounds[1:] - 1]
    batch_end = idx[np.minimum((bounds[:-1] // batch + 1) * batch, n) - 1]
    return idx, bounds, last, batch_end


def first_alarm(values: np.ndarray, h: float, start: int, k: float = CUSUM_K) -> int | None:
    """Index of the first alarm at or after ``start`` of a fresh CUSUM (no hold) over
    ``values``; None without one."""
    det = CUSUM(mean=0.0, scale=1.0, threshold=h, k=k)
    hits = det.update(values)
    hits = hits[hits >= start]
    return int(hits[0]) if hits.size else None


def pooled_run(z: np.ndarray, owner: np.ndarray, monitors: int, b: int, batch: int, h: float,
               k: float = CUSUM_K) -> dict[str, Any]:
    """The fold of every monitor's chunk summaries in the order of their last events:
    the stamps of its alarms, when each becomes visible, and the order of the chunks."""
    summ, last, pub, sizes = [], [], [], []
    ends = []
    for m in range(monitors):
        idx, bounds, lst, bend = chunk_plan(owner, m, b, batch)
        summ.append(summarise(z[idx], bounds, k, h))
        last.append(lst)
        pub.append(bend)
        sizes.append(np.diff(bounds))
        ends.append(np.unique(bend))
    s = np.concatenate(summ)
    stamp = np.concatenate(last)
    order = np.argsort(stamp, kind="stable")
    state = np.array([0.0, 0.0, 1.0, 1.0])
    _, alarms = fold(s, state, h, order=order)
    at = stamp[order][alarms]
    folded = np.cumsum(np.concatenate(sizes)[order])[alarms]
    return {"stamps": at, "ends": ends, "folded": folded}


def visible(t: int, ends: list[np.ndarray], n: int) -> int:
    """The global index by which every monitor has published a batch ending at or after
    event ``t`` (n: the end of the stream)."""
    out = 0
    for e in ends:
        j = np.searchsorted(e, t)
        out = max(out, int(e[j]) if j < e.size else n)
    return out


def delay_cell(seeds: list[int], monitors: int, batch: int, b: int, clean: int, drift: int,
               shift: float, h: float) -> dict[str, list[int | None]]:
    out: dict[str, list[int | None]] = {"single": [], "single, visible": [],
                                         "per monitor": [], "stamp": [], "visible": [],
                                         "before": []}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        z = np.concatenate([rng.normal(0.0, 1.0, clean), rng.normal(shift, 1.0, drift)])
        owner = rng.integers(0, monitors, z.size)
        a = first_alarm(z, h, clean)
        out["single"].append(None if a is None else a - clean)
        # one monitor reading every event in batches of B sees its alarm at the batch's end
        out["single, visible"].append(
            None if a is None else min((a // batch + 1) * batch, z.size) - 1 - clean)
        per = []
        for m in range(monitors):
            idx = np.flatnonzero(owner == m)
            j = first_alarm(z[idx], h, int(np.searchsorted(idx, clean)))
            if j is not None:
                per.append(int(idx[j]))
        out["per monitor"].append(min(per) - clean if per else None)
        run = pooled_run(z, owner, monitors, b, batch, h)
        after = run["stamps"][run["stamps"] >= clean]
        out["before"].append(int((run["stamps"] < clean).sum()))
        if after.size:
            t = int(after[0])
            out["stamp"].append(t - clean)
            out["visible"].append(visible(t, run["ends"], z.size) - clean)
        else:
            out["stamp"].append(None)
            out["visible"].append(None)
    return out


def med(xs: list[int | None]) -> float:
    """Median, a missed detection counting as infinitely late."""
    return float(statistics.median([math_inf if x is None else x for x in xs]))


math_inf = float("inf")


def null_cell(seeds: list[int], monitors: int, batch: int, b: int, runs: int, n: int,
              h: float) -> dict[str, float]:
    """Under no drift, ``runs`` fresh starts per seed of at most ``n`` events: the mean run
    length to the first alarm (ARL0, in total events; a run without one counts ``n``) of one
    CUSUM over every event and of the fold (the events folded up to the end of the chunk
    that alarms: its crossing rounded up to the chunk's end), and the alarms per million
    events of both over the whole runs."""
    rl_one, rl_pool, al_one, al_pool, cens = [], [], 0, 0, 0
    for seed in seeds:
        rng = np.random.default_rng(10_000 + seed)
        for _ in range(runs):
            z = rng.normal(0.0, 1.0, n)
            owner = rng.integers(0, monitors, n)
            hits = CUSUM(0.0, 1.0, threshold=h).update(z)
            al_one += hits.size
            rl_one.append(int(hits[0]) + 1 if hits.size else n)
            folded = pooled_run(z, owner, monitors, b, batch, h)["folded"]
            stamps = folded
            al_pool += stamps.size
            rl_pool.append(int(folded[0]) if folded.size else n)
            cens += int(not hits.size) + int(not stamps.size)
    total = len(seeds) * runs * n / 1e6
    return {"arl_one": float(np.mean(rl_one)), "arl_pool": float(np.mean(rl_pool)),
            "se_one": float(np.std(rl_one) / np.sqrt(len(rl_one))),
            "se_pool": float(np.std(rl_pool) / np.sqrt(len(rl_pool))),
            "rate_one": al_one / total, "rate_pool": al_pool / total, "censored": cens}


def machine() -> str:
    """The CPU model (platform.processor() is empty on some Linux machines)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=200)
    p.add_argument("--base-seed", type=int, default=0)
    p.add_argument("--clean", type=int, default=3000)
    p.add_argument("--drift", type=int, default=3000)
    p.add_argument("--shift", type=float, default=0.5)
    p.add_argument("--monitors", default="2,4")
    p.add_argument("--batches", default="100,500")
    p.add_argument("--chunks", default="0,50,20,10,5,1", help="b per chunk; 0: b = B")
    p.add_argument("--null-events", type=int, default=60_000, help="events per null run")
    p.add_argument("--null-runs", type=int, default=150, help="null runs per seed")
    p.add_argument("--null-seeds", type=int, default=3)
    p.add_argument("--null-h", default="8,12", help="thresholds of the null runs (ARL0 of "
                   "about 370 and 2,900 events: alarms counted by the hundred)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "pooled_cusum.md"))
    args = p.parse_args(argv)
    seeds = list(range(args.base_seed, args.base_seed + args.seeds))
    monitors = [int(x) for x in args.monitors.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    chunks = [int(x) for x in args.chunks.split(",")]
    t0 = time.time()
    lines = [f"## Delay of a {args.shift} σ shift, total events after its start, h = "
             f"{H_X1:.2f}, k = {CUSUM_K}; seeds {seeds[0]}–{seeds[-1]}\n",
             f"Machine: {machine()}, {os.cpu_count()} cores, load "
             f"{os.getloadavg()[0]:.1f}. Command: `bench/bench_pooled_cusum.py "
             f"{' '.join(argv if argv is not None else sys.argv[1:])}`.\n",
             "| monitors | batch B | chunk b | single | per monitor | pooled, stamp | "
             "per monitor / single | stamp / single | single, visible | pooled, visible | "
             "visible / single visible | pooled alarms before the drift |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in monitors:
        for batch in batches:
            for b in chunks:
                bb = batch if b == 0 else b
                if bb > batch:
                    continue
                c = delay_cell(seeds, m, batch, bb, args.clean, args.drift, args.shift, H_X1)
                s, sv = med(c["single"]), med(c["single, visible"])
                lines.append(
                    f"| {m} | {batch} | {bb} | {s:.0f} | {med(c['per monitor']):.0f} | "
                    f"{med(c['stamp']):.0f} | {med(c['per monitor']) / s:.2f}× | "
                    f"{med(c['stamp']) / s:.2f}× | {sv:.0f} | {med(c['visible']):.0f} | "
                    f"{med(c['visible']) / sv:.2f}× | {sum(x or 0 for x in c['before'])} |")
                print(lines[-1], flush=True)
    lines += ["", f"## Under no drift: ARL0 in total events (mean run length to the first "
              f"alarm from a fresh start, ± its standard error) and alarms per million "
              f"events; {args.null_seeds} seeds × {args.null_runs} runs of at most "
              f"{args.null_events:,} events\n",
              "| h | monitors | batch B | chunk b | ARL0, one CUSUM | ARL0, fold (events folded) | fold / one | "
              "alarms per 10⁶, one | alarms per 10⁶, fold | runs without an alarm |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    nseeds = list(range(args.base_seed, args.base_seed + args.null_seeds))
    for h in [float(x) for x in args.null_h.split(",")]:
        for m in monitors:
            for batch, bb in [(batches[0], batches[0]), (batches[-1], batches[-1]),
                              (batches[0], 10)]:
                r = null_cell(nseeds, m, batch, bb, args.null_runs, args.null_events, h)
                lines.append(f"| {h:g} | {m} | {batch} | {bb} | {r['arl_one']:.0f} ± "
                             f"{r['se_one']:.0f} | {r['arl_pool']:.0f} ± {r['se_pool']:.0f} | "
                             f"{r['arl_pool'] / r['arl_one']:.3f} | {r['rate_one']:.0f} | "
                             f"{r['rate_pool']:.0f} | {r['censored']} |")
                print(lines[-1], flush=True)
    lines.append(f"\n({time.time() - t0:.0f} s)\n")
    out = Path(args.out)
    prev = out.read_text() if out.exists() else ""
    out.write_text(prev + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
