"""Part 2 of ``bench_concept.py`` (``--part synth``): River's SEA, Agrawal and Hyperplane
generators with a Hoeffding tree, every detector at matched ARL0 on the error stream.

Each run draws the generators at a seed of its own (``seed * 1000 + run``) and switches
abruptly from the first concept to the second (``stream_a.take(...)`` then
``stream_b.take(...)``; ``ConceptDriftStream``'s sigmoid overflows for a sharp switch this
far into a stream).  Two model modes, on separate draws:

- ``frozen`` (production-like): the tree learns the first ``--warm`` events and then only
  predicts; its errors on the next ``--synth-ref`` events are the labelled reference, then
  ``--synth-pre`` monitored events before the change and ``--synth-after`` after it.  The
  pre-change error stream is i.i.d. Bernoulli at the tree's error rate, so matched ARL0 is
  meaningful.
- ``online`` (test-then-train, as issue 15 names it): the tree predicts then learns every
  event; the reference is its errors on the ``--synth-ref`` events after a warm-up of
  ``--online-warm``, then the same monitored window.  A young tree's leaves split in waves
  at nearly the same event counts in every run, each raising its error for a few thousand
  events (``concept_online_curve.py``); a window on a wave is not the reference's stream
  (with the warm-up of 20,000 used before 2026-12-06: Hyperplane +0.73 points), and every
  detector's pre-change false-alarm rate is then above its null one.  The default warm-up,
  40,000, is past the waves (Hyperplane −0.24 points, SEA −0.03).

Matched ARL0: per (mode, stream, target) each peer's parameter is tuned by bisection (part 1's
:func:`tune`) on a Bernoulli null stream at the stream's own reference error rate (the
runs' references pooled), and its achieved ARL0 is measured on an independent one; ours is
calibrated per run from that run's reference (as the label join does) and its ARL0 is
measured on a Bernoulli null stream at that run's reference rate, pooled over the runs.
Delays: ours starts at the first monitored event (as in production); the peers see the
reference first (their only way to learn the baseline; alarms there not counted, they reset
natively).  A run whose first counted alarm is before the change is discarded for that
detector (false alarm); no alarm within ``--synth-after`` events counts as never.

More runs of one cell (``--synth-first-run F``, ``--synth-streams Hyperplane``,
``--peer-params-from`` an earlier part-2 .json): runs F … F + ``--synth-runs`` − 1 draw the
same generators (and ours the same calibration seed) as those runs of a full run, only the
named streams are run, and each peer keeps the parameter tuned in that .json (no bisection:
the peers of the earlier runs, so that the runs pool; their ARL0 is measured again).  The
null streams of a later start are other draws than a full run's (their rng key adds F).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from concept_report import NAMES, _ci, delay_of, early_arl, fmt, median, ratio, ratio_ci

MODES = ("frozen", "online")


def synth_streams(seed: int) -> dict[str, Any]:
    from river.datasets import synth
    return {
        "SEA (variant 0 -> 3)": (synth.SEA(variant=0, seed=seed),
                                 synth.SEA(variant=3, seed=seed + 1)),
        "Agrawal (function 0 -> 2)": (synth.Agrawal(classification_function=0, seed=seed),
                                      synth.Agrawal(classification_function=2,
                                                    seed=seed + 1)),
        "Hyperplane (new plane)": (synth.Hyperplane(seed=seed, n_features=10),
                                   synth.Hyperplane(seed=seed + 1000, n_features=10)),
    }


def stream_seed(seed: int, run: int, mode: str) -> int:
    """The generators' seed of one run: ``seed * 1000 + run``, +500 for the online tree (the
    two modes on separate draws)."""
    return seed * 1000 + run + (500 if mode == "online" else 0)


def error_stream(a: Any, b: Any, mode: str, args: argparse.Namespace) -> np.ndarray:
    """The tree's errors on the reference, the pre-change and the post-change events."""
    from river import tree
    warm = args.warm if mode == "frozen" else args.online_warm
    n = args.synth_ref + args.synth_pre + args.synth_after
    events = itertools.chain(a.take(warm + args.synth_ref + args.synth_pre),
                             b.take(args.synth_after))
    model = tree.HoeffdingTreeClassifier()
    for x, y in itertools.islice(events, warm):
        if mode == "online":
            model.predict_one(x)  # the same work as test-then-train, its error unrecorded
        model.learn_one(x, y)
    err = np.empty(n, dtype=np.int64)
    for i, (x, y) in enumerate(events):
        err[i] = model.predict_one(x) != y
        if mode == "online":
            model.learn_one(x, y)
    return err


def null_length(args: argparse.Namespace, target: float) -> int:
    """The peers' null streams (tuning and check): ``--null-factor`` × target events, at
    least ``--synth-null-min`` (one length for every target of a run, e.g. 200,000 at both
    2,000 and 10,000, where a factor alone gives 5× fewer alarms at the smaller target)."""
    return max(int(args.null_factor * target), int(getattr(args, "synth_null_min", 0)))


def _first_alarms(alarms: np.ndarray, start: int, pre: int) -> tuple[int, int]:
    """(delay, false alarms before the change) of alarm positions counted from ``start``;
    delay -2: a false alarm before the change, -1: none."""
    a = alarms[alarms >= start] - start
    return delay_of(a, pre), int(np.count_nonzero(a < pre))


def stream_names(args: argparse.Namespace) -> list[str]:
    """The streams to run: all, or those whose name starts with one of ``--synth-streams``
    (case-insensitive); an unknown one fails naming the choices."""
    names = list(synth_streams(0))
    wanted = getattr(args, "synth_streams", None)
    if not wanted:
        return names
    out = [n for n in names if any(n.lower().startswith(w.lower()) for w in wanted)]
    bad = [w for w in wanted if not any(n.lower().startswith(w.lower()) for n in names)]
    if bad:
        raise SystemExit(f"--synth-streams: {', '.join(bad)} names no stream; choose among "
                         + ", ".join(n.split(' ')[0] for n in names))
    return out


def synth_params(args: argparse.Namespace) -> dict[tuple[str, str, str], dict[str, float]]:
    """``--peer-params-from`` a part-2 .json: each peer's tuned value per (mode, stream,
    target) of that run."""
    path = getattr(args, "peer_params_from", None)
    if path is None:
        return {}
    res = json.loads(Path(path).read_text())
    return {(mode, name, t): {k: v["value"] for k, v in c["peers"].items()}
            for mode, rows in res["synth"]["modes"].items() for name, row in rows.items()
            for t, c in row["targets"].items()}


def part_synth(args: argparse.Namespace, peers: list[Any], tools: dict[str, Callable[..., Any]],
               log: Callable[[str], None]) -> dict[str, Any]:
    """``tools``: bench_concept's ``tune``, ``count_alarms``, ``null_stream``, ``arl``,
    ``fresh`` and ``make_ours(ref, target, seed)``."""
    tune, count_alarms, arl = tools["tune"], tools["count_alarms"], tools["arl"]
    out: dict[str, Any] = {"modes": {}, "settings": {}}
    nref, pre = args.synth_ref, args.synth_pre
    first = int(getattr(args, "synth_first_run", 0))
    names = stream_names(args)
    all_names = list(synth_streams(0))
    fixed = synth_params(args)
    for mi, mode in enumerate(args.synth_modes):
        t0 = time.perf_counter()
        errs: dict[str, list[np.ndarray]] = {}
        for r in range(first, first + args.synth_runs):
            for name, (a, b) in synth_streams(stream_seed(args.seed, r, mode)).items():
                if name in names:
                    errs.setdefault(name, []).append(error_stream(a, b, mode, args))
        cost = {"trees": time.perf_counter() - t0, "tuning": 0.0, "ours_calibration": 0.0,
                "ours_runs": 0.0, "peers_runs": 0.0}
        log(f"synth {mode}: {args.synth_runs} runs of trees in {cost['trees']:.0f} s")
        rows: dict[str, Any] = {}
        for name, es in errs.items():
            si = all_names.index(name)  # a full run's index: the same rng keys
            p_refs = [float(e[:nref].mean()) for e in es]
            p_ref = float(np.mean(p_refs))
            row: dict[str, Any] = {
                "p_ref": p_refs, "p_pre": [float(e[nref:nref + pre].mean()) for e in es],
                "p_after": [float(e[nref + pre:nref + pre + 2000].mean()) for e in es],
                "targets": {}}
            for target in args.synth_targets:
                rng = np.random.default_rng([args.seed, mi, si, int(target)]
                                            + ([first] if first else []))
                n_null = null_length(args, target)
                tune_stream = tools["null_stream"](rng, p_ref, n_null)
                check_stream = tools["null_stream"](rng, p_ref, n_null)
                cell: dict[str, Any] = {"peers": {}, "delays": {}, "false_alarms": {}}
                factories = {}
                t1 = time.perf_counter()
                given = fixed.get((mode, name, str(target)))
                if fixed and given is None:
                    raise SystemExit(f"--peer-params-from: no {mode} {name} target {target} "
                                     "in it; give the .json of a run with that cell")
                for peer in peers:
                    value, tuned = ((given[peer.name], math.nan) if given is not None
                                    else tune(peer, tune_stream, target, args.steps))
                    factories[peer.name] = (lambda pe=peer, v=value: pe.make(v))
                    cell["peers"][peer.name] = {
                        "param": peer.param, "value": value, "tuned_arl": tuned,
                        "arl0": arl(n_null, len(count_alarms(factories[peer.name],
                                                             check_stream)))}
                cost["tuning"] += time.perf_counter() - t1
                per_run = int(args.synth_arl_factor * target)
                alarms, arls = 0, []
                for r, e in enumerate(es):
                    t1 = time.perf_counter()
                    det = tools["make_ours"](e[:nref].astype(float), target,
                                             args.seed * 1000 + first + r)
                    t2 = time.perf_counter()
                    cost["ours_calibration"] += t2 - t1
                    null = (rng.random(per_run) < p_refs[r]).astype(float)
                    k = len(tools["fresh"](det).update(null))
                    alarms += k
                    arls.append(arl(per_run, k))
                    d, fa = _first_alarms(tools["fresh"](det).update(e[nref:].astype(float)),
                                          0, pre)
                    cell["delays"].setdefault("ours", []).append(d)
                    cell["false_alarms"].setdefault("ours", []).append(fa)
                    t1 = time.perf_counter()
                    cost["ours_runs"] += t1 - t2
                    lst = e.tolist()
                    for pname, f in factories.items():
                        d, fa = _first_alarms(np.array(count_alarms(f, lst), dtype=np.int64),
                                              nref, pre)
                        cell["delays"].setdefault(pname, []).append(d)
                        cell["false_alarms"].setdefault(pname, []).append(fa)
                    cost["peers_runs"] += time.perf_counter() - t1
                cell["ours"] = {"arl0": arl(per_run * len(es), alarms), "per_run": arls,
                                "events_per_run": per_run, "alarms": alarms}
                row["targets"][str(target)] = cell
                log(f"synth {mode} {name} target {target}: p_ref {p_ref:.4f}, ARL0 ours "
                    f"{cell['ours']['arl0']:.0f} "
                    + " ".join(f"{k}={v['arl0']:.0f}" for k, v in cell["peers"].items())
                    + "; medians " + " ".join(f"{k}={median(v):.0f}"
                                              for k, v in cell["delays"].items()))
            rows[name] = row
        out["modes"][mode] = rows
        out.setdefault("cost_s", {})[mode] = cost  # where the wall time went, per phase
        log(f"synth {mode}: cost " + ", ".join(f"{k} {v:.0f} s" for k, v in cost.items()))
        out.setdefault("settings", {})[mode] = {
            "warm": args.warm if mode == "frozen" else args.online_warm, "ref": nref,
            "pre": pre, "after": args.synth_after, "n_values": args.n_values,
            "null_factor": args.null_factor,
            "null_min": int(getattr(args, "synth_null_min", 0)), "first_run": first}
    return out


def _in_band(a: float, target: float) -> bool:
    return math.isfinite(a) and abs(a / target - 1) <= 0.3


def synth_lines(args: argparse.Namespace, res: dict[str, Any]) -> list[str]:
    lines = ["## River generators, Hoeffding tree, matched ARL0", "",
             "Generator seeds `seed * 1000 + run` (online +500); frozen: the tree trained on "
             "the warm-up events, then predicting only; online: test-then-train throughout, "
             "the reference after the warm-up; then the monitored events before an abrupt "
             "change and after it (censoring; the counts per mode below). Peers tuned by "
             "bisection on a Bernoulli null stream at the pooled reference error rate "
             "(its length below), achieved ARL0 on an independent one; ours calibrated per run "
             "from its reference, its ARL0 on a null stream of "
             f"{args.synth_arl_factor:g} × target events at each run's reference rate, pooled. "
             "Delay: median over the runs without a false alarm before the change (in "
             "brackets: runs discarded for one / runs censored); *pre-change ARL0*: the "
             "false alarms in the pre-change window of the real error streams read as a "
             "constant hazard. Ratio: ours / the best peer whose null ARL0 is within ±30 %, "
             f"95 % percentile-bootstrap CI ({args.boot} resamples).", ""]
    for mode, rows in res["modes"].items():
        st = res.get("settings", {}).get(mode) or {  # older results: this run's options
            "warm": args.warm if mode == "frozen" else args.online_warm, "ref": args.synth_ref,
            "pre": args.synth_pre, "after": args.synth_after, "n_values": args.n_values,
            "null_factor": args.null_factor}
        runs = len(next(iter(rows.values()))["p_ref"])
        if st:
            lines += [f"**{mode}**: {runs} runs per stream; the tree "
                      f"{'trained on' if mode == 'frozen' else 'test-then-train over'}"
                      f" {st['warm']:,} events before the reference; reference {st['ref']:,}, "
                      f"{st['pre']:,} events before the change, {st['after']:,} after it; "
                      f"n_values {st['n_values']:,}; peers' null streams {st['null_factor']:g} "
                      "× target" + (f", at least {st['null_min']:,} events"
                                    if st.get("null_min") else "") + ".", ""]
        for target in map(int, next(iter(rows.values()))["targets"]):
            lines += [f"### {mode} model, ARL0 {target:,}", "",
                      "| stream | error ref / pre -> after | | ours | " + " | ".join(NAMES)
                      + " | best in-band peer (else best) | ours / it | 95 % CI | ≤ 1.15 |",
                      "|---|---|---|---|" + "---|" * len(NAMES) + "---|---|---|---|"]
            for name, row in rows.items():
                c = row["targets"][str(target)]
                arls = {"ours": c["ours"]["arl0"],
                        **{n: c["peers"][n]["arl0"] for n in NAMES}}
                med = {n: median(c["delays"][n]) for n in ["ours", *NAMES]}
                band = [n for n in NAMES if _in_band(arls[n], target) and not math.isnan(med[n])]
                best = min(band, key=lambda n: med[n]) if band else None
                if best is None:  # no peer in band (e.g. no errors to tune on): the best one
                    alive = [n for n in NAMES if not math.isnan(med[n])]
                    best = min(alive, key=lambda n: med[n]) if alive else None
                    label = f"{best} (out of band)" if best else None
                else:
                    label = best
                r = ratio(med["ours"], med[best]) if best else math.nan
                lo, hi = (ratio_ci(c["delays"]["ours"], c["delays"][best], args.boot)
                          if best else (math.nan, math.nan))
                err = (f"{np.mean(row['p_ref']):.3f} / {np.mean(row['p_pre']):.3f} -> "
                       f"{np.mean(row['p_after']):.3f}")
                tail = ("none | - | - | - |" if best is None else
                        f"{label} | n/a | - | NO (ours: every run false-alarmed) |"
                        if math.isnan(r) else
                        f"{label} | {r:.2f} | {_ci(lo, hi)} | {'yes' if r <= 1.15 else 'NO'} |")
                fa = {n: sum(1 for x in c["delays"][n] if x == -2) for n in med}
                cens = {n: sum(1 for x in c["delays"][n] if x == -1) for n in med}
                lines.append(f"| {name} | {err} | delay | " + " | ".join(
                    f"{fmt(med[n])} ({fa[n]}/{cens[n]})" for n in ["ours", *NAMES])
                    + f" | {tail}")
                lines.append("| | | null ARL0 | " + " | ".join(
                    fmt(arls[n]) + ("" if _in_band(arls[n], target) else " ✗")
                    for n in ["ours", *NAMES]) + " | | | | |")
                lines.append("| | | pre-change ARL0 | " + " | ".join(
                    fmt(early_arl(c["delays"][n], args.synth_pre))
                    for n in ["ours", *NAMES]) + " | | | | |")
            lines += ["", "✗: null ARL0 outside ±30 % of the target.  Peers' tuned "
                      "parameters: " + "; ".join(
                          f"{name.split(' ')[0]}: " + ", ".join(
                              f"{n} {row['targets'][str(target)]['peers'][n]['value']:.3g}"
                              for n in NAMES) for name, row in rows.items()), ""]
    return lines
