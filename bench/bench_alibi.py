"""Issue 19, item 3: our multivariate and embedding tests against Alibi Detect's online
MMD and LSDD (``MMDDriftOnline``, ``LSDDDriftOnline``) at matched ARL0.

Scenarios (as ``bench_multivariate_peers.py`` and ``bench_embeddings.py``):

* ``flip``: 20 columns N(0, 1), columns 0 and 1 correlated +0.8, then -0.8;
* ``shift``: the same 20 columns, columns 10-19 shift by 0.3 standard deviations;
* ``cluster``: 8 Gaussian clusters in 64 dimensions, cluster 0's share 12.5 % -> 25 %.

Protocol, per seed: one reference of ``--n-ref`` rows (1,000: Alibi's threshold set-up
grows with the reference, its window and its bootstraps), used by both.  Alibi (TensorFlow
backend, ``--window``, ``--bootstraps``, target ``ert=--ert``) runs in its own venv
(``--alibi-python``; worker ``bench/alibi_worker.py``), one event per ``predict`` call;
its achieved ARL0 is measured on ``--alibi-null`` clean events (reset after each alarm).
Ours is then calibrated to Alibi's achieved ARL0 (pooled over the seeds, per detector and
scenario family) as a mean run length from a fresh test (``run_length``:
:mod:`detectors.vector_calibration`), and its own achieved ARL0 measured on
``--null-events`` clean events.
Delays: ``--runs`` streams per scenario and seed with the change after ``CHANGE`` events;
delay = index of the first alarm - ``CHANGE`` (0: the first changed event); runs with an
alarm before the change are left out and counted, runs without an alarm within ``AFTER``
events are missed.  Cost: CPU µs per event (``time.process_time``) on the null stream, ours
in batches of 1,000 (as the pipeline feeds it), Alibi per ``predict`` call (as its API
takes events).  ARL0 is the mean run length from a fresh detector to its first false alarm
for both (a new detector after each alarm: Alibi's ``reset_state``), not our episode
spacing, which cannot fall below about window + release for a window of 500.

Usage (~40 min on 2 shared cores, most of it Alibi)::

    PYTHONPATH=$PWD .venv/bin/python bench/bench_alibi.py --alibi-python /tmp/alibi-venv/bin/python

``--alibi-json FILE`` reuses the worker outputs of an earlier run (saved next to the
table as ``alibi-raw.json``) and reruns only ours.  ``--alibi-reuse FILE`` extends them
instead: the streams of a run do not depend on ``--runs`` (run ``r`` of a seed is the same
in a 60- and a 240-run benchmark), so Alibi runs only the runs the file lacks, plus the
first ``--alibi-check`` stored runs again, whose first alarms must come out the same (the
set-up is seeded), and ``--alibi-null`` further clean events from a new generator, pooled
with the stored ones.  ``--scenarios shift`` runs one cell
(with ``--out``, its own table).  Each table ends with one row per seed (each method's
ARL0 and median on that seed alone, the runs behind the median), since a goal holds only
if it holds on every seed.  Each Alibi worker and each seed of ours runs in its own
session: on a machine whose scheduler groups processes by session, six workers of one
session would share one job's CPU.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # one thread; not when the tests import the helpers
    for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                 "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = HERE / "results" / "alibi.md"
WORKER = HERE / "alibi_worker.py"
CHANGE, AFTER = 500, 1_000
FAMILIES = {"mv": ("flip", "shift"), "emb": ("cluster",)}
#: the scenarios run (``--scenarios``; all by default)
CHOSEN: set[str] = {s for f in FAMILIES.values() for s in f}


def scenarios(family: str) -> tuple[str, ...]:
    return tuple(s for s in FAMILIES[family] if s in CHOSEN)
#: our configurations: (window, cadence, reference rows; None: ``--n-ref``, Alibi's)
PASSES = 3
COST_EVENTS, SINGLE_EVENTS = 200_000, 5_000
OURS = ((500, 50, 10_000), (500, 10, 10_000), (100, 10, 10_000), (500, 50, None))


# -- data ------------------------------------------------------------------------------------

def mv_sample(rng: np.random.Generator, n: int, scenario: str = "null") -> np.ndarray:
    x = rng.normal(size=(n, 20))
    rho = -0.8 if scenario == "flip" else 0.8
    x[:, 1] = rho * x[:, 0] + np.sqrt(1 - rho * rho) * x[:, 1]
    if scenario == "shift":
        x[:, 10:] += 0.3
    return x


def sampler(family: str, seed: int):  # type: ignore[no-untyped-def]
    """``draw(rng, n, scenario)`` of the family's null / changed rows."""
    if family == "mv":
        return mv_sample
    from tests.support.embeddings import SHIFTED_SHARE, Mixture

    mix = Mixture(500 + seed)

    def draw(rng: np.random.Generator, n: int, scenario: str = "null") -> np.ndarray:
        return mix.draw(rng, n, SHIFTED_SHARE if scenario == "cluster" else None)
    return draw


def reference(family: str, seed: int, n_ref: int) -> np.ndarray:
    return sampler(family, seed)(np.random.default_rng(seed), n_ref)


def change_stream(family: str, seed: int, scenario: str, run: int) -> np.ndarray:
    draw = sampler(family, seed)
    rng = np.random.default_rng([seed, run, len(scenario)])
    return np.vstack([draw(rng, CHANGE), draw(rng, AFTER, scenario)])


def first_alarm_delays(first: list[int | None]) -> dict[str, object]:
    """Delays (first alarm index - CHANGE) of the runs whose first alarm is at or after the
    change; runs alarmed before it are ``early``, runs never alarmed ``missed``."""
    delays = [f - CHANGE for f in first if f is not None and f >= CHANGE]
    early = sum(1 for f in first if f is not None and f < CHANGE)
    missed = sum(1 for f in first if f is None)
    return {"delays": delays, "early": early, "missed": missed,
            "median": float(np.median(delays)) if delays else None}


# -- Alibi -----------------------------------------------------------------------------------

def alibi_job(python: str, family: str, detector: str, seed: int, args: argparse.Namespace,
              runs: list[int] | None = None, null_key: tuple[int, ...] = (7,),
              ) -> dict[str, object] | None:
    """One worker: Alibi's set-up, ``--alibi-null`` clean events (drawn from the generator
    ``[seed, *null_key]``) and the change streams ``runs`` (all ``--runs`` by default).
    With ``--alibi-partial`` no worker runs: what an earlier worker on the same inputs left
    in its cache (its result, or the streams it finished before it was stopped; None if
    nothing)."""
    with tempfile.TemporaryDirectory() as d:
        np.save(f"{d}/reference.npy", reference(family, seed, args.n_ref))
        draw = sampler(family, seed)
        np.save(f"{d}/null.npy", draw(np.random.default_rng([seed, *null_key]),
                                      args.alibi_null))
        names = []
        for scenario in scenarios(family):
            for r in (range(args.runs) if runs is None else runs):
                np.save(f"{d}/{scenario}{r}.npy", change_stream(family, seed, scenario, r))
                names.append(f"{scenario}{r}")
        Path(f"{d}/streams.json").write_text(json.dumps(names))
        cmd = [python, str(WORKER), d, detector, str(args.ert), str(args.window),
               str(args.bootstraps), str(seed)]
        t0 = time.perf_counter()
        if getattr(args, "alibi_partial", False):
            got = cached_output(d, cmd[3:8])
            if got is None:
                return None
            out = got
        else:
            done = subprocess.run(cmd, capture_output=True, text=True,
                                  start_new_session=True)  # its own job, as if started alone
            if done.returncode:
                raise RuntimeError(f"alibi worker {family} {detector} {seed}: "
                                   f"{done.stderr[-2000:]}")
            out = json.loads(done.stdout.strip().splitlines()[-1])
    out.update(family=family, seed=seed, wall_s=time.perf_counter() - t0)
    print(f"alibi {family} {detector} seed {seed}: setup {out['setup_wall_s']:.0f} s wall, "
          f"{out['null_alarms']} alarms in {out['null_events']}, "
          f"{out['us_per_event']:.0f} µs/event, {len(out['first'])} streams"  # type: ignore[arg-type]
          f"{' (partial)' if out.get('partial') else ''}", file=sys.stderr, flush=True)
    return out


def read_progress(lines: list[str]) -> dict[str, object] | None:
    """A worker output from the progress lines of a stopped worker (its head, then one
    ``{name: first alarm}`` a finished stream), marked ``partial``; None if it stopped
    before its clean stream was done."""
    if not lines or not lines[0].strip():
        return None
    out: dict[str, object] = json.loads(lines[0])
    first: dict[str, int | None] = {}
    for line in lines[1:]:
        if line.endswith("\n"):  # a line cut by the stop is not a finished stream
            first.update(json.loads(line))
    out.update(first=first, partial=True)
    return out


def cached_output(d: str, worker_args: list[str]) -> dict[str, object] | None:
    """The worker cache's result for these inputs, or its progress if the worker stopped."""
    from bench import alibi_worker

    path = alibi_worker.cache_path(d, worker_args)
    if path is None:
        raise SystemExit("--alibi-partial needs the worker cache (ALIBI_WORKER_CACHE)")
    if os.path.exists(path):
        return dict(json.loads(Path(path).read_text()))
    if os.path.exists(path + ".progress"):
        with open(path + ".progress") as f:
            return read_progress(f.readlines())
    return None


def common_prefix(rows: list[dict[str, object]], scenario_names: tuple[str, ...]) -> int:
    """The number of leading runs (0, 1, ...) that every row has for every scenario."""
    k = 0
    while all(f"{s}{k}" in r["first"] for r in rows for s in scenario_names):  # type: ignore[operator]
        k += 1
    return k


def extension_runs(stored: dict[str, object], scenario_names: tuple[str, ...], runs: int,
                   check: int) -> tuple[list[int], list[str]]:
    """The runs a worker must do to extend ``stored`` (an earlier worker output) to ``runs``
    runs per scenario: those not stored, and the first ``check`` stored ones again (their
    first alarms must come out the same, which shows that the set-up and the streams are
    the stored run's).  Returns the run indices and the names of the checked streams."""
    first = stored["first"]
    assert isinstance(first, dict)
    todo, checked = [], []
    for r in range(runs):
        names = [f"{s}{r}" for s in scenario_names]
        if not all(n in first for n in names):
            todo.append(r)
        elif r < check:
            todo.append(r)
            checked += names
    return todo, checked


def merge_alibi(stored: dict[str, object], new: dict[str, object], checked: list[str],
                ) -> dict[str, object]:
    """``stored`` extended by ``new`` (a worker output on further streams and a further,
    independent clean stream): the first alarms of both (the checked streams must agree),
    the clean events, alarms and run lengths added, the CPU per event weighted by clean
    events.  Raises if a checked stream's first alarm differs (then the stored outputs are
    not the same detector's and must not be pooled)."""
    old_first, new_first = stored["first"], new["first"]
    assert isinstance(old_first, dict) and isinstance(new_first, dict)
    differ = {n: (old_first[n], new_first[n]) for n in checked if old_first[n] != new_first[n]}
    if differ:
        raise RuntimeError(f"Alibi {new['detector']} seed {new['seed']}: stored first "
                           f"alarms not reproduced (stored, now): {differ}; rerun without "
                           "--alibi-reuse")
    ev_old, ev_new = int(stored["null_events"]), int(new["null_events"])  # type: ignore[call-overload]
    if ev_new == 0:  # nothing new on the clean stream: its cost is the stored one's
        new = dict(new, us_per_event=stored["us_per_event"])
    out = dict(new)
    out.update(first={**old_first, **new_first},
               null_events=ev_old + ev_new,
               null_alarms=int(stored["null_alarms"]) + int(new["null_alarms"]),  # type: ignore[call-overload]
               run_lengths=[*stored["run_lengths"], *new["run_lengths"]],  # type: ignore[misc]
               us_per_event=(float(stored["us_per_event"]) * ev_old  # type: ignore[arg-type]
                             + float(new["us_per_event"]) * ev_new) / (ev_old + ev_new),  # type: ignore[arg-type]
               stored_setup_wall_s=stored["setup_wall_s"], stored_null_events=ev_old,
               reused_streams=len(old_first), checked_streams=checked)
    return out


def extend_alibi(python: str, stored: list[dict[str, object]], family: str, detector: str,
                 seed: int, args: argparse.Namespace) -> dict[str, object] | None:
    """The stored output of this job extended to ``--runs`` runs and ``--alibi-null`` more
    clean events (a new stream, generator ``[seed, 7, 1]``); a fresh job if none stored."""
    old = [r for r in stored if r["family"] == family and r["detector"] == detector
           and int(r["seed"]) == seed]  # type: ignore[call-overload]
    if not old:
        return alibi_job(python, family, detector, seed, args)
    for key in ("n_ref", "ert", "window", "bootstraps"):
        if float(old[0][key]) != float(getattr(args, key)):  # type: ignore[arg-type]
            raise SystemExit(f"--alibi-reuse: the stored {detector} seed {seed} has {key} "
                             f"{old[0][key]}, not --{key.replace('_', '-')} "
                             f"{getattr(args, key)}")
    runs, checked = extension_runs(old[0], scenarios(family), args.runs, args.alibi_check)
    new = alibi_job(python, family, detector, seed, args, runs, null_key=(7, 1))
    if new is None:  # --alibi-partial, nothing left: the stored output alone
        return dict(old[0], partial=True)
    first = new["first"]
    assert isinstance(first, dict)
    return merge_alibi(old[0], new, [n for n in checked if n in first])


# -- ours ------------------------------------------------------------------------------------

def ours(family: str, seed: int, target: float, window: int, cadence: int, n_ref: int,
         args: argparse.Namespace) -> dict[str, object]:
    ref = reference(family, seed, n_ref)
    prof: Any
    make: Any
    if family == "mv":
        from detectors.multivariate import GroupSpec, JointProfile, JointTest, calibrate_joint
        from detectors.vector_calibration import calibrate_joint_run_length

        prof = JointProfile.from_rows(GroupSpec("g", tuple(f"c{i}" for i in range(20))), ref)
        t0 = time.process_time()
        # ARL0 as measured here (a fresh test's run length), not the episodes' spacing
        cal = calibrate_joint_run_length(prof, window, cadence, target, seed=seed)
        if cal is None:
            cal = calibrate_joint(prof, window, cadence, target, release_values=window,
                                  seed=seed)
        make = JointTest
    else:
        from detectors.embedding import VectorProfile, VectorSpec, VectorTest, calibrate_vector

        prof = VectorProfile.from_matrix(VectorSpec("e", 64, args.components), ref)
        t0 = time.process_time()
        cal = calibrate_vector(prof, window, cadence, target, release_values=window, seed=seed,
                               run_length=True)
        make = VectorTest
    cal_s = time.process_time() - t0

    share = {"share_threshold": cal.share_threshold} if family == "emb" else {}

    def fresh():  # type: ignore[no-untyped-def]
        t = make(prof, window, cadence, cal.threshold, **share)
        t.configure_episodes(min(1.0, max(0.5, cal.release_floor / cal.threshold)), window)
        return t

    draw = sampler(family, seed)
    rng = np.random.default_rng([seed, 8])
    # ARL0 as Alibi's is measured: a fresh detector after each alarm (mean run length)
    x = draw(rng, args.null_events)
    alarms, pos, test = 0, 0, fresh()
    while pos < len(x):
        hits = test.update(x[pos:pos + 1_000])
        if hits.size:
            alarms, pos, test = alarms + 1, pos + int(hits[0]) + 1, fresh()
        else:
            pos += 1_000
    # cost: one detector over COST_EVENTS clean events in batches of 1,000
    x = draw(rng, COST_EVENTS)
    test = fresh()
    t0 = time.process_time()
    for i in range(0, COST_EVENTS, 1_000):
        test.update(x[i:i + 1_000])
    cpu = time.process_time() - t0
    # and one event per call, as Alibi's predict takes them
    test = fresh()
    t0 = time.process_time()
    for i in range(SINGLE_EVENTS):
        test.update(x[i:i + 1])
    single = (time.process_time() - t0) / SINGLE_EVENTS
    out: dict[str, object] = {"family": family, "seed": seed, "target": target,
                              "window": window, "cadence": cadence, "n_ref": n_ref,
                              "threshold": cal.threshold, "calibration_s": cal_s,
                              "null_events": args.null_events, "null_alarms": alarms,
                              "us_per_event": cpu / COST_EVENTS * 1e6,
                              "us_per_event_single": single * 1e6}
    for scenario in scenarios(family):
        first: list[int | None] = []
        for r in range(getattr(args, "seed_runs", {}).get(seed, args.runs)):
            hits = fresh().update(change_stream(family, seed, scenario, r))
            first.append(int(hits[0]) if hits.size else None)
        out[scenario] = first
    return out


# -- table -----------------------------------------------------------------------------------

def pooled_arl0(rows: list[dict[str, object]]) -> tuple[float, int, int]:
    events = sum(int(r["null_events"]) for r in rows)  # type: ignore[call-overload]
    alarms = sum(int(r["null_alarms"]) for r in rows)  # type: ignore[call-overload]
    return events / max(alarms, 1), alarms, events


def pooled(rows: list[dict[str, object]], scenario: str) -> dict[str, object]:
    first: list[int | None] = []
    for r in rows:
        f = r["first"][scenario] if "first" in r else r[scenario]  # type: ignore[index]
        first += list(f.values()) if isinstance(f, dict) else f  # type: ignore[arg-type]
    return first_alarm_delays(first)


def alibi_firsts(row: dict[str, object], scenario: str) -> list[int | None]:
    first = row["first"]
    assert isinstance(first, dict)
    return [v for k, v in first.items() if k.rstrip("0123456789") == scenario]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alibi-python", help="python of a venv with alibi-detect 0.13 (TF)")
    ap.add_argument("--alibi-json", type=Path, help="reuse these worker outputs")
    ap.add_argument("--alibi-reuse", type=Path,
                    help="extend these worker outputs: Alibi runs only the runs they lack "
                         "(and --alibi-check of theirs again, which must agree) and "
                         "--alibi-null further clean events, pooled with theirs")
    ap.add_argument("--alibi-check", type=int, default=3,
                    help="with --alibi-reuse: stored runs per job to redo as a check")
    ap.add_argument("--alibi-partial", action="store_true",
                    help="run no Alibi worker: take what the workers of an earlier, stopped "
                         "run with the same options left in the worker cache (finished "
                         "streams); each seed keeps the runs every detector has")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--families", nargs="+", default=["mv", "emb"])
    ap.add_argument("--detectors", nargs="+", default=["mmd", "lsdd"])
    ap.add_argument("--n-ref", type=int, default=1_000)
    ap.add_argument("--ert", type=float, default=1_000)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--bootstraps", type=int, default=1_200)
    ap.add_argument("--alibi-null", type=int, default=5_000)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--null-events", type=int, default=500_000)
    ap.add_argument("--components", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--ours", nargs="+", metavar="W,C[,REF]",
                    help="our configurations (window,cadence[,reference rows]) instead of "
                         "the default four")
    ap.add_argument("--scenarios", nargs="+", choices=sorted(CHOSEN),
                    help="run only these scenarios (and their families)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run (~7 min on the loaded 2 cores): 300-row reference, ert 200, window 20, 300 "
                         "bootstraps, 2 runs; writes next to --out with a -quick suffix")
    args = ap.parse_args(argv)
    configs = OURS if not args.ours else tuple(
        (int(p[0]), int(p[1]), int(p[2]) if len(p) > 2 else None)
        for p in (c.split(",") for c in args.ours))
    if args.scenarios:
        CHOSEN.intersection_update(args.scenarios)
        args.families = [f for f in args.families if scenarios(f)]
    if args.quick:
        args.n_ref, args.ert, args.window, args.bootstraps = 300, 200, 20, 300
        args.alibi_null, args.runs, args.null_events = 500, 2, 50_000
        args.out = args.out.with_name(args.out.stem + "-quick.md")

    if args.alibi_json:
        alibi = json.loads(args.alibi_json.read_text())
    else:
        # seed by seed (a partial run still has whole seeds), the slow detector first
        jobs = [(f, d, s) for s in args.seeds for f in args.families for d in args.detectors]
        stored = json.loads(args.alibi_reuse.read_text()) if args.alibi_reuse else None
        with ThreadPoolExecutor(args.jobs) as pool:
            alibi = list(pool.map(
                lambda j: alibi_job(args.alibi_python, j[0], j[1], j[2], args)
                if stored is None else extend_alibi(args.alibi_python, stored, j[0], j[1], j[2],
                                                    args), jobs))
        alibi = [r for r in alibi if r is not None]
        args.out.with_name(args.out.stem + "-raw.json").write_text(json.dumps(alibi))
    # a seed whose runs are not all there (--alibi-partial): the leading runs that every
    # detector has, for Alibi and ours alike
    args.seed_runs = {}
    for family in args.families:
        for seed in {int(r["seed"]) for r in alibi if r["family"] == family}:
            rows = [r for r in alibi if r["family"] == family and int(r["seed"]) == seed]
            k = common_prefix(rows, scenarios(family))
            args.seed_runs[seed] = k
            for r in rows:
                r["first"] = {n: v for n, v in r["first"].items()
                              if int(n.lstrip("abcdefghijklmnopqrstuvwxyz")) < k}

    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    seeds = sorted({int(r["seed"]) for r in alibi})
    lines = ["# Multivariate and embedding drift: ours against Alibi Detect's online MMD and "
             "LSDD at matched ARL0", "",
             f"`bench/bench_alibi.py --seeds {' '.join(map(str, seeds))} --n-ref {args.n_ref} "
             f"--ert {args.ert:g} --window {args.window} --bootstraps {args.bootstraps} "
             f"--alibi-null {args.alibi_null} --runs {args.runs} --null-events "
             f"{args.null_events}"
             f"{' --scenarios ' + ' '.join(args.scenarios) if args.scenarios else ''}"
             f"{' --ours ' + ' '.join(args.ours) if args.ours else ''}"
             f"{f' --alibi-reuse {args.alibi_reuse} --alibi-check {args.alibi_check}' if args.alibi_reuse else ''}"
             f"` at commit {commit}.", ""]
    raw_ours: list[dict[str, object]] = []
    for family in args.families:
        al = {d: [r for r in alibi if r["family"] == family and r["detector"] == d]
              for d in args.detectors}
        al = {d: rows for d, rows in al.items() if rows}
        # ours is matched to the highest of the Alibi detectors' achieved ARL0 (the fewest
        # false alarms): our knob is the calibration target, corrected from our own achieved
        # ARL0 until within 15 % (at most PASSES passes; the first pass is reported too)
        goal = max(pooled_arl0(rows)[0] for rows in al.values())
        first_pass: dict[tuple[int, int, int | None], float] = {}
        for window, cadence, n_ref in configs:
            target, prev = goal, None
            for _attempt in range(PASSES):
                # one process per seed, each its own job (session) as the Alibi workers
                with ProcessPoolExecutor(min(len(seeds), args.jobs),
                                         initializer=os.setsid) as procs:
                    res = list(procs.map(ours, [family] * len(seeds), seeds,
                                         [target] * len(seeds), [window] * len(seeds),
                                         [cadence] * len(seeds),
                                         [n_ref or args.n_ref] * len(seeds),
                                         [args] * len(seeds)))
                got = pooled_arl0(res)[0]
                first_pass.setdefault((window, cadence, n_ref), got)
                print(f"ours {family} w{window} c{cadence} ref {n_ref} target {target:.0f} (goal "
                      f"{goal:.0f}): {got:.0f}", file=sys.stderr, flush=True)
                if (abs(got / goal - 1) <= 0.15 or not 0.2 < got / goal < 5
                        or (prev is not None and abs(got / prev - 1) < 0.05)):
                    break  # matched, hopeless, or the target no longer moves it
                target, prev = target * goal / got, got
            for r in res:
                r["goal"] = goal
                r["first_pass_arl0"] = first_pass[(window, cadence, n_ref)]
            raw_ours += res
        for scenario in scenarios(family):
            lines += [f"## {scenario}", "",
                      "| method | target ARL0 | achieved ARL0 (events) | median delay "
                      "(events) | p90 | missed / left out (alarm before the change) | "
                      "ratio to the best Alibi | CPU µs per event (ours: batches of 1,000; "
                      "in parentheses one event per call) | Alibi MMD's cost / this |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
            mmd_cost = (float(np.mean([float(r["us_per_event"]) for r in al["mmd"]]))
                        if "mmd" in al else None)
            peer_median: dict[str, float | None] = {}
            for det, rows in al.items():
                arl, n_al, n_ev = pooled_arl0(rows)
                d = first_alarm_delays(sum((alibi_firsts(r, scenario) for r in rows), []))
                peer_median[det] = d["median"]  # type: ignore[assignment]
                cost = float(np.mean([float(r["us_per_event"]) for r in rows]))
                setup = ", ".join(f"{float(r['setup_wall_s']):.0f}" for r in rows)
                lines.append(_row(f"Alibi {det.upper()} (window {args.window}, "
                                  f"{args.bootstraps} bootstraps; set-up {setup} s wall)",
                                  f"ert {args.ert:g}", arl, n_al, n_ev, d, None, cost,
                                  mmd_cost,
                                  sum(len(alibi_firsts(r, scenario)) for r in rows)))
            best = min((m for m in peer_median.values() if m), default=None)
            for window, cadence, n_ref in configs:
                rows = [r for r in raw_ours if r["family"] == family
                        and r["window"] == window and r["cadence"] == cadence
                        and r["n_ref"] == (n_ref or args.n_ref)]
                arl, n_al, n_ev = pooled_arl0(rows)
                d = first_alarm_delays(sum((list(r[scenario]) for r in rows), []))
                cost = float(np.mean([float(r["us_per_event"]) for r in rows]))
                ratio = (None if d["median"] is None or not best
                         else float(d["median"]) / best)  # type: ignore[arg-type]
                lines.append(_row(
                    f"ours (window {window}, cadence {cadence}, {n_ref or args.n_ref:,}-row "
                    f"reference)", f"{float(rows[0]['target']):,.0f} (first pass at "
                    f"{float(rows[0]['goal']):,.0f} achieved "
                    f"{float(rows[0]['first_pass_arl0']):,.0f})", arl, n_al, n_ev, d, ratio,
                    cost, mmd_cost, sum(len(r[scenario]) for r in rows),  # type: ignore[arg-type]
                    float(np.mean([float(r["us_per_event_single"]) for r in rows]))))
            lines += ["", *per_seed(al, raw_ours, family, scenario, seeds, configs, args.n_ref),
                      ""]
    raw_path = args.out.with_name(args.out.stem + "-ours.json")
    raw_path.write_text(json.dumps(raw_ours))
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)
    return 0


def per_seed(al: dict[str, list[dict[str, object]]], raw_ours: list[dict[str, object]],
             family: str, scenario: str, seeds: list[int],
             configs: tuple[tuple[int, int, int | None], ...], n_ref: int) -> list[str]:
    """One row per seed: each method's ARL0 and median delay on that seed alone, the runs
    behind the median, and ours against that seed's best Alibi median."""
    names = [f"Alibi {d.upper()}" for d in al] + [f"ours w{w} c{c}" for w, c, _ in configs]
    out = ["Per seed (ARL0 / median delay / runs behind the median):", "",
           "| seed | " + " | ".join(names) + " | ours / best Alibi |",
           "| --- |" + " --- |" * (len(names) + 1)]
    for seed in seeds:
        cells, best = [], None
        for rows in al.values():
            rows = [r for r in rows if int(r["seed"]) == seed]  # type: ignore[call-overload]
            d = first_alarm_delays(sum((alibi_firsts(r, scenario) for r in rows), []))
            m = d["median"]
            best = m if best is None or (m is not None and m < best) else best  # type: ignore[operator]
            cells.append(_seed_cell(rows, d))
        ratios = []
        for w, c, ref in configs:
            rows = [r for r in raw_ours if r["family"] == family and int(r["seed"]) == seed  # type: ignore[call-overload]
                    and r["window"] == w and r["cadence"] == c and r["n_ref"] == (ref or n_ref)]
            d = first_alarm_delays(sum((list(r[scenario]) for r in rows), []))  # type: ignore[call-overload]
            cells.append(_seed_cell(rows, d))
            ratios.append("—" if d["median"] is None or not best
                          else f"{float(d['median']) / float(best):.2f}")  # type: ignore[arg-type]
        out.append(f"| {seed} | " + " | ".join(cells) + f" | {', '.join(ratios)} |")
    return out


def _seed_cell(rows: list[dict[str, object]], d: dict[str, object]) -> str:
    arl = pooled_arl0(rows)[0] if rows else float("nan")
    med = "—" if d["median"] is None else f"{float(d['median']):.0f}"  # type: ignore[arg-type]
    return f"{arl:,.0f} / {med} / {len(d['delays'])}"  # type: ignore[arg-type]


def _row(name: str, target: str, arl: float, n_al: int, n_ev: int, d: dict[str, object],
         ratio: float | None, cost: float, mmd_cost: float | None, runs: int,
         single: float | None = None) -> str:
    delays = np.array(d["delays"], dtype=float)  # type: ignore[arg-type]
    med = "—" if not delays.size else f"{np.median(delays):.0f}"
    p90 = "—" if not delays.size else f"{np.percentile(delays, 90):.0f}"
    return (f"| {name} | {target} | {arl:,.0f} ({n_al} in {n_ev:,}) | {med} | {p90} | "
            f"{d['missed']} / {d['early']} of {runs} | "
            f"{'—' if ratio is None else f'{ratio:.2f}'} | {cost:,.2f}"
            f"{'' if single is None else f' ({single:,.1f})'} | "
            f"{'—' if mmd_cost is None else f'{mmd_cost / cost:,.0f}×'}"
            f"{'' if single is None or mmd_cost is None else f' ({mmd_cost / single:,.0f}×)'} |")


if __name__ == "__main__":
    raise SystemExit(main())
