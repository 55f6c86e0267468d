"""Concept drift on the error stream: our calibrated error CUSUM against River's DDM, EDDM,
HDDM_A, HDDM_W and ADWIN (issue 15, item 4).

Part 1 (``errors``): Bernoulli error streams with a baseline error rate ``p`` (10 % and 25 %)
that rises by 2, 5 or 10 points (an accuracy drop).  Each peer's main parameter is tuned by
bisection on a clean stream so that its ARL0 (labelled events per false alarm, counted on a
long null stream with the peer's own reset after each alarm) matches the target (2,000 and
10,000); the achieved ARL0 is then measured on an independent null stream.  Ours is not
tuned: :func:`detectors.concept.concept_detector` is calibrated with its knob
(``target_events`` = the target) from a labelled reference of ``--ref-size`` errors drawn
from the same rate, with the production allowances and shares (``CONCEPT_SHIFTS``, ``CONCEPT_SHARES``,
``CONCEPT_DOWN_SHARE``; ``--down-share none``: the detector before, one threshold per CUSUM), as
``stream/engine/labelbook.py`` built it before issue 15's last miss; ``--detector sr``: the
Shiryaev-Roberts mixture the label join now builds (:mod:`detectors.concept_sr`, its
``SR_SHIFTS`` and ``SR_WEIGHTS``; alarms without episodes, each restarting it).  Its achieved ARL0 is measured over ``--arl-refs``
references per cell (20), each on a clean stream of its own of ``--arl-factor`` targets (40):
the reference's estimated rate is what a calibrated detector's ARL0 depends on, and the
calibration budgets for its error, so what it promises is the ARL0 pooled over references;
the delay runs cycle over the same references (``--refs``, all 20), so ours' medians are
over references too (with 5, a cell's median rode on those five references' luck).
(Before, 5 references shared 40 targets: ~8 expected alarms per reference, ~40 per cell,
so the per-reference figures were mostly Poisson noise and a pooled figure left ±30 % by
chance; ``concept_checks.py refs`` measures 40 references × 400 targets.)

Delay, two protocols on the same runs.  *Cold start* (as ``bench_detection.py``): a run is
``--pre`` null events, then the raised rate; every detector starts at the run's first event;
the delay is the first alarm at or after the change, minus the change (censored at
``--cap`` events: counted as never, so a median with censored runs is a lower bound).  A
run in which a detector alarms before the change is discarded for that detector (*FA*):
peers learn the baseline online from the pre-change events; ours has it from its
reference.  The peers were tuned to the target over a long stream with their resets, but
DDM's and EDDM's false alarms crowd into the first few hundred events after a start, so
from a cold start most of their runs are discarded and their medians come from the few
survivors.  *After a warm-up* (``--warmup``, 2,000): the same run preceded by that many
clean events that every detector (ours included) sees, its alarms there not counted (the
peers reset natively, as on the stream they were tuned on); a false alarm is one in the
``pre`` events after the warm-up.  The table "ARL0 in the first events of a run" shows
each protocol's false-alarm hazard in the pre-change window; the delay tables give each
ratio to the best peer a 95 % percentile-bootstrap interval (``--boot``).  The goal is
judged on both tables.

Part 2 (``synth``, :mod:`concept_synth`): River's SEA, Agrawal and Hyperplane generators with
an abrupt concept change and a Hoeffding tree, ``--synth-runs`` (30) runs per stream, two
model modes (``frozen``: trained on ``--warm`` events, then predicting only; ``online``:
test-then-train, the reference after ``--online-warm`` events); each peer tuned by bisection
to each of ``--synth-targets`` on a Bernoulli null stream at the stream's own reference
error rate, ours calibrated per run from its reference.

Run from the repository root::

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python bench/bench_concept.py --seed 1
    PYTHONPATH=$PWD nice -n 10 .venv/bin/python bench/bench_concept.py --seed 2
    PYTHONPATH=$PWD .venv/bin/python bench/bench_concept.py --quick   # smoke run
    # only some cells, many runs, the peers at a full run's tuned parameters:
    PYTHONPATH=$PWD nice -n 10 .venv/bin/python bench/bench_concept.py --seed 1 --part errors \
        --cell 0.25 2000 0.10 --runs 2000 --peer-params-from bench/results/concept-seed1.json \
        --out bench/results/concept-cells-seed1.md

Each run writes ``bench/results/concept-seed<S>.md`` (and ``.json``); the tables are in
``concept_report.py``, two checks behind them in ``concept_checks.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detectors.concept import (
    CONCEPT_DOWN_SHARE,
    CONCEPT_SHARES,
    CONCEPT_SHIFTS,
    ConceptCUSUM,
    concept_detector,
)
from detectors.concept_sr import SR_SHIFTS, SR_WEIGHTS, ConceptSR, concept_sr
from detectors.cusum import CUSUM

sys.path.insert(0, str(Path(__file__).resolve().parent))
import concept_report  # noqa: E402
import concept_synth  # noqa: E402
from concept_report import delay_of, median  # noqa: E402

CONCEPT_SHIFT = CONCEPT_SHIFTS  # the production allowances (stream/engine/labelbook.py)
RESULTS = Path(__file__).resolve().parent / "results"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- peers ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Peer:
    name: str
    param: str
    make: Callable[[float], Any]
    lo: float  # bisection range of the transformed parameter t (ARL0 grows with t)
    hi: float
    to_param: Callable[[float], float]


def _peers() -> list[Peer]:
    from river.drift import ADWIN
    from river.drift.binary import DDM, EDDM, HDDMA, HDDMW

    def hddm_a(c: float) -> Any:
        return HDDMA(drift_confidence=c, warning_confidence=max(c, 0.005))

    def hddm_w(c: float) -> Any:
        return HDDMW(drift_confidence=c, warning_confidence=max(c, 0.005))

    def ddm(t: float) -> Any:
        return DDM(warning_threshold=min(2.0, t), drift_threshold=t)

    def eddm(b: float) -> Any:
        return EDDM(alpha=max(0.95, b), beta=b)

    return [
        # t = drift threshold (in standard deviations)
        Peer("DDM", "drift_threshold", ddm, 1.0, 12.0, lambda t: t),
        # beta = 10**-t: a beta closer to 1 alarms more often, so ARL0 grows with t
        Peer("EDDM", "beta", eddm, 0.0, 3.0, lambda t: 10.0 ** -t),
        Peer("HDDM_A", "drift_confidence", hddm_a, 0.3, 14.0, lambda t: 10.0 ** -t),
        Peer("HDDM_W", "drift_confidence", hddm_w, 0.3, 14.0, lambda t: 10.0 ** -t),
        Peer("ADWIN", "delta", lambda d: ADWIN(delta=d, clock=1), 0.01, 14.0,
             lambda t: 10.0 ** -t),
    ]


def count_alarms(det_factory: Callable[[], Any], stream: list[int],
                 stop: int = 0) -> list[int]:
    """Positions of the alarms of a River detector over ``stream`` (it resets natively);
    with ``stop``, only the first ``stop`` of them."""
    det = det_factory()
    out = []
    upd = det.update
    for i, x in enumerate(stream):
        upd(x)
        if det.drift_detected:
            out.append(i)
            if len(out) == stop:
                break
    return out


def first_alarm_from(det_factory: Callable[[], Any], stream: list[int], start: int) -> int:
    """Position of the first alarm at or after ``start`` of a River detector over
    ``stream`` (earlier alarms reset it natively and are not counted); -1: none."""
    det = det_factory()
    upd = det.update
    for i, x in enumerate(stream):
        upd(x)
        if det.drift_detected and i >= start:
            return i
    return -1


def null_stream(rng: np.random.Generator, p: float, n: int) -> list[int]:
    return (rng.random(n) < p).astype(np.int64).tolist()


def arl(n: int, alarms: int) -> float:
    return n / alarms if alarms else math.inf


def tune(peer: Peer, stream: list[int], target: float, steps: int) -> tuple[float, float]:
    """Bisect the transformed parameter so that the ARL0 on ``stream`` is the target."""
    lo, hi = peer.lo, peer.hi
    best = (math.inf, lo, math.nan)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        a = arl(len(stream), len(count_alarms(lambda m=mid: peer.make(peer.to_param(m)), stream)))
        err = abs(math.log(a / target)) if math.isfinite(a) else math.inf
        if err < best[0]:
            best = (err, mid, a)
        if a < target:
            lo = mid
        else:
            hi = mid
        if err < math.log(1.15):
            break
    return peer.to_param(best[1]), best[2]


# -- ours -------------------------------------------------------------------------------
def our_detectors(rng: np.random.Generator, p: float, target: float, refs: int,
                  ref_size: int, n_values: int, seed: int,
                  shift: tuple[float, ...] = CONCEPT_SHIFT,
                  shares: tuple[float, ...] | None = None,
                  down_share: float | None = CONCEPT_DOWN_SHARE,
                  sr: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> list[Any]:
    """One calibrated detector per reference: ConceptCUSUMs, or with ``sr`` (its shifts
    and weights) the Shiryaev-Roberts mixture (:mod:`detectors.concept_sr`)."""
    dets: list[Any] = []
    for r in range(refs):
        ref = (rng.random(ref_size) < p).astype(float)
        dets.append(concept_detector(ref, target, shift, shares, n_values=n_values,
                                     seed=seed * 100 + r, down_share=down_share)
                    if sr is None else
                    concept_sr(ref, target, sr[0], sr[1], n_values=n_values, seed=seed * 100 + r))
    return dets


def fresh(det: Any) -> Any:
    """The detector as calibrated, its sums at 0 (no episodes: every crossing alarms)."""
    if isinstance(det, ConceptSR):
        return det.fresh()
    return ConceptCUSUM([CUSUM(mean=d.mean, scale=d.scale, threshold=d.h, k=d.k, name="error",
                               threshold_down=d.h_down) for d in det.detectors])



# -- part 1 -----------------------------------------------------------------------------
def _peers_from(args: argparse.Namespace) -> dict[tuple[float, float], Any]:
    """``--peers-from``: the cells of an earlier run with the same options and seed.  The
    peers use no random numbers and ours draws the same ones whatever its settings, so the
    streams are the same draws: only ours is run again (its delays are then paired with the
    earlier run's, and the peers' figures are theirs on the same runs)."""
    if args.peers_from is None:
        return {}
    res = json.loads(args.peers_from.read_text())
    return {(c["p"], c["target"]): c for c in res["errors"]["cells"]}


def _params_from(args: argparse.Namespace) -> dict[tuple[float, float], dict[str, float]]:
    """``--peer-params-from``: each peer's tuned parameter per cell from an earlier run
    (its bisection is skipped; its ARL0 is measured again on this run's check stream)."""
    if args.peer_params_from is None:
        return {}
    res = json.loads(args.peer_params_from.read_text())
    return {(c["p"], c["target"]): {k: v["value"] for k, v in c["peers"].items()}
            for c in res["errors"]["cells"]}


def _sr(args: argparse.Namespace) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``--detector sr``: the mixture's shifts and weights: ``--sr-weights`` if given, else
    the default weights for the default shifts (given on the command line or not), else equal
    weights.  (The list ``--sr-shifts`` parses to was compared with the tuple ``SR_SHIFTS``
    before, so the default shifts given explicitly got equal weights.)"""
    if args.detector != "sr":
        return None
    shifts = tuple(float(s) for s in args.sr_shifts)
    if args.sr_weights:
        weights = tuple(float(w) for w in args.sr_weights)
    elif shifts == tuple(SR_SHIFTS):
        weights = tuple(SR_WEIGHTS)
    else:
        weights = (1 / len(shifts),) * len(shifts)
    if len(weights) != len(shifts):
        raise SystemExit(f"--sr-weights: {len(weights)} weights for {len(shifts)} "
                         "--sr-shifts; give one weight per shift")
    return shifts, weights


def _drops(args: argparse.Namespace, p: float, target: float) -> list[float]:
    """The drops to run in a cell: all of ``--drops``, or those ``--cell`` names."""
    if not args.cell:
        return list(args.drops)
    return [float(d) for cp, ct, d in args.cell
            if abs(float(cp) - p) < 1e-9 and float(ct) == target]


def part_errors(args: argparse.Namespace, peers: list[Peer]) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    out: dict[str, Any] = {"cells": []}
    old = _peers_from(args)
    fixed = _params_from(args)
    for p in args.rates:
        for target in args.targets:
            if not _drops(args, p, target):
                continue
            n_null = int(args.null_factor * target)
            cell: dict[str, Any] = {"p": p, "target": target, "peers": {}, "delays": {}}
            tune_stream = null_stream(rng, p, n_null)
            check_stream = null_stream(rng, p, n_null)
            factories: dict[str, Callable[[], Any]] = {}
            prev = old.get((p, target))
            if prev is not None:  # the peers as measured before, on the same draws
                cell["peers"] = prev["peers"]
            for peer in peers if prev is None else []:
                t0 = time.perf_counter()
                if (p, target) in fixed:
                    value, tuned_arl = fixed[(p, target)][peer.name], math.nan
                else:
                    value, tuned_arl = tune(peer, tune_stream, target, args.steps)
                factories[peer.name] = (lambda pe=peer, v=value: pe.make(v))
                achieved = arl(n_null, len(count_alarms(factories[peer.name], check_stream)))
                cell["peers"][peer.name] = {"param": peer.param, "value": value,
                                            "tuned_arl": tuned_arl, "arl0": achieved}
                log(f"p={p} target={target} {peer.name} {peer.param}={value:.4g} "
                    f"ARL0 {achieved:.0f} ({time.perf_counter() - t0:.0f} s)")
            dets = our_detectors(rng, p, target, max(args.arl_refs, args.refs),
                                 args.ref_size, args.n_values, args.seed, args.shift,
                                 args.shares, args.down_share, _sr(args))
            # each reference on a null stream of its own, long enough (arl_factor targets)
            # that its events per alarm are not mostly Poisson noise
            per_ref = int(args.arl_factor * target)
            alarms = 0
            arls = []
            for det in dets[:args.arl_refs]:
                a = len(fresh(det).update((rng.random(per_ref) < p).astype(float)))
                alarms += a
                arls.append(arl(per_ref, a))
            cell["ours"] = {"arl0": arl(per_ref * len(arls), alarms), "per_ref": arls,
                            "events_per_ref": per_ref,
                            "ref_rates": [d.mean for d in dets],
                            "thresholds": [[c.h for c in d.detectors] if isinstance(
                                d, ConceptCUSUM) else [d.h] for d in dets]}
            dets = dets[:args.refs]
            log(f"p={p} target={target} ours ARL0 {cell['ours']['arl0']:.0f} "
                f"per reference {[round(a) for a in arls]}")
            for drop in _drops(args, p, target):
                keys = ["ours", *factories]
                delays: dict[str, list[int]] = {name: [] for name in keys}
                warm: dict[str, list[int]] = {name: [] for name in keys}
                w = args.warmup
                for r in range(args.runs):
                    s = np.concatenate([rng.random(args.pre) < p,
                                        rng.random(args.cap) < p + drop]).astype(np.int64)
                    hits = fresh(dets[r % len(dets)]).update(s.astype(float))
                    delays["ours"].append(delay_of(hits, args.pre))
                    lst = s.tolist()
                    for name, f in factories.items():
                        delays[name].append(delay_of(np.array(count_alarms(f, lst, stop=1)),
                                                     args.pre))
                    if not w:
                        continue
                    # the same run after a warm-up of w clean events, its alarms not counted
                    sw = np.concatenate([(rng.random(w) < p).astype(np.int64), s])
                    hits = fresh(dets[r % len(dets)]).update(sw.astype(float))
                    warm["ours"].append(delay_of(hits[hits >= w] - w, args.pre))
                    lst = sw.tolist()
                    for name, f in factories.items():
                        first = first_alarm_from(f, lst, w)
                        warm[name].append(delay_of(np.array([first - w] if first >= 0 else [],
                                                            dtype=np.int64), args.pre))
                if prev is not None:
                    delays.update({k: v for k, v in prev["delays"][str(drop)].items()
                                   if k != "ours"})
                    warm.update({k: v for k, v in prev.get("delays_warm", {}).get(
                        str(drop), {}).items() if k != "ours"})
                cell["delays"][str(drop)] = delays
                if w:
                    cell.setdefault("delays_warm", {})[str(drop)] = warm
                log(f"p={p} target={target} drop={drop} medians "
                    + " ".join(f"{k}={median(v):.0f}" for k, v in delays.items())
                    + ("; after the warm-up " + " ".join(f"{k}={median(v):.0f}"
                                                         for k, v in warm.items()) if w else ""))
            out["cells"].append(cell)
            checkpoint(args, {"errors": out})
    return out


def checkpoint(args: argparse.Namespace, res: dict[str, Any]) -> None:
    """``--checkpoint FILE.json``: the cells finished so far, rewritten after each cell, so
    that a run stopped early keeps them (``--render FILE.json`` writes their tables)."""
    if getattr(args, "checkpoint", None) is not None:
        args.checkpoint.write_text(json.dumps(res, indent=1, default=float))


# -- part 2 -----------------------------------------------------------------------------
def part_synth(args: argparse.Namespace, peers: list[Peer]) -> dict[str, Any]:
    """River's generators with a Hoeffding tree, frozen and online (``concept_synth.py``)."""
    sr = _sr(args)

    def make_ours(ref: np.ndarray, target: float, seed: int) -> Any:
        if sr is None:
            return concept_detector(ref, target, args.shift, args.shares,
                                    n_values=args.n_values, seed=seed,
                                    down_share=args.down_share)
        return concept_sr(ref, target, sr[0], sr[1], n_values=args.n_values, seed=seed)

    tools = {"tune": tune, "count_alarms": count_alarms, "null_stream": null_stream,
             "arl": arl, "fresh": fresh, "make_ours": make_ours}
    return concept_synth.part_synth(args, peers, tools, log)


# -- report -----------------------------------------------------------------------------
def synth_settings(args: argparse.Namespace) -> str:
    """Part 2's warm-ups, reference and pre-change window on the printed command line, always
    (their defaults changed: a line without them read as the new defaults)."""
    modes = list(getattr(args, "synth_modes", concept_synth.MODES))
    return ("" if "frozen" not in modes else f" --warm {args.warm}") + (
        "" if "online" not in modes else f" --online-warm {args.online_warm}") + (
        f" --synth-ref {args.synth_ref} --synth-pre {args.synth_pre}")


def header(args: argparse.Namespace) -> list[str]:
    sr = _sr(args)
    return [f"# Concept drift on the error stream (seed {args.seed})", "",
            f"`PYTHONPATH=$PWD .venv/bin/python bench/bench_concept.py --seed {args.seed}"
            f"{' --quick' if args.quick else ''}"
            f"{'' if args.part == 'all' else ' --part ' + args.part}"
            f"{'' if args.n_values == 4_000_000 or args.quick else f' --n-values {args.n_values}'}"
            f"{'' if args.null_factor == 40 or args.quick else f' --null-factor {args.null_factor:g}'}"
            f"{'' if args.synth_after == 10_000 or args.quick else f' --synth-after {args.synth_after}'}"
            f"{'' if not getattr(args, 'synth_null_min', 0) else f' --synth-null-min {args.synth_null_min}'}"
            f"{'' if args.part == 'errors' or args.quick or args.synth_runs == 30 else f' --synth-runs {args.synth_runs}'}"
            f"{'' if args.part == 'errors' or args.quick or list(args.synth_targets) == [10_000] else ' --synth-targets ' + ' '.join(map(str, args.synth_targets))}"
            f"{'' if args.part == 'errors' or list(args.synth_modes) == list(concept_synth.MODES) else ' --synth-modes ' + ' '.join(args.synth_modes)}"
            f"{'' if args.part == 'errors' or not getattr(args, 'synth_first_run', 0) else f' --synth-first-run {args.synth_first_run}'}"
            # always: their defaults changed once (10,000 / 5,000 / 2,000 before), and a
            # command line that leaves them out reads as today's defaults
            + ("" if args.part == "errors" or args.quick else synth_settings(args)) +
            f"{'' if args.part == 'errors' or not getattr(args, 'synth_streams', None) else ' --synth-streams ' + ' '.join(args.synth_streams)}"
            f"{'' if args.shift == CONCEPT_SHIFT else ' --shift ' + ' '.join(map(str, args.shift))}"
            f"{'' if args.shares == CONCEPT_SHARES else ' --shares ' + ' '.join(map(str, args.shares))}"
            f"{'' if args.down_share == CONCEPT_DOWN_SHARE else f' --down-share {args.down_share}'}"
            + (f" --detector sr --sr-shifts {' '.join(map(str, args.sr_shifts))} --sr-weights "
               f"{' '.join(map(str, _sr(args)[1]))}" if _sr(args) else "") + "` "
            "(defaults otherwise)"
            + (f"; part 1 from `{args.errors_from.name}` (`--part synth --errors-from`: "
               "the same options, the peers' tuned parameters taken from it)"
               if getattr(args, "errors_from", None) else "")
            + (f"; the peers from `{args.peers_from.name}` (`--peers-from`: the same draws, "
               "only ours run again)" if getattr(args, "peers_from", None) else "")
            + (f"; only the cells {', '.join('/'.join(c) for c in args.cell)} (`--cell`: other "
               f"draws than a full run's), {args.runs:,} runs per cell"
               if getattr(args, "cell", None) else "")
            + (f"; the peers at the parameters tuned in `{args.peer_params_from.name}` "
               "(`--peer-params-from`: no bisection, their ARL0 measured again)"
               if getattr(args, "peer_params_from", None) else ""), ""] + ([
            f"Reference: {args.ref_size:,} labelled errors; " + (
                f"ours the Shiryaev-Roberts mixture over shifts "
                f"{', '.join(map(str, sr[0]))} (weights "
                f"{', '.join(map(str, sr[1]))})" if sr else
                f"shifts {', '.join(map(str, args.shift))} (shares of the budget "
                f"{', '.join(map(str, args.shares))}; the lower sums' share of each "
                f"{args.down_share if args.down_share is not None else 'none: one threshold'})")
            + f"; ours' ARL0 over {args.arl_refs} references "
            f"per cell, {args.arl_factor:g} × target null events each; delay runs cycle over "
            f"the first {args.refs} of them; {args.runs} runs per delay cell, {args.pre:,} "
            f"events before the change, censored at {args.cap:,}; in brackets: FA/censored "
            "runs (FA: discarded for an alarm before the change).", ""]
        if args.part != "synth" else ["Ours: " + (
            f"the Shiryaev-Roberts mixture over shifts {', '.join(map(str, _sr(args)[0]))} "
            f"(weights {', '.join(map(str, _sr(args)[1]))})" if _sr(args) else
            f"the CUSUMs over shifts {', '.join(map(str, args.shift))}") + ".", ""])


def report(args: argparse.Namespace, res: dict[str, Any]) -> str:
    return concept_report.report(args, res, header(args))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--part", choices=["errors", "synth", "all"], default="all")
    ap.add_argument("--quick", action="store_true", help="a smoke run (minutes)")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.10, 0.25])
    ap.add_argument("--targets", type=float, nargs="+", default=[2_000, 10_000])
    ap.add_argument("--drops", type=float, nargs="+", default=[0.02, 0.05, 0.10])
    ap.add_argument("--shift", type=float, nargs="+", default=CONCEPT_SHIFT,
                    help="the shifts our CUSUMs are tuned for, one CUSUM each at an equal "
                         "share of the budget (production: 0.02 0.08)")
    ap.add_argument("--shares", type=float, nargs="+", default=None,
                    help="their shares of the budget, summing to 1 (default: production's "
                         f"{' '.join(map(str, CONCEPT_SHARES))} for two shifts, else equal)")
    ap.add_argument("--down-share", type=lambda v: None if v == "none" else float(v),
                    default=CONCEPT_DOWN_SHARE,
                    help="the share of each CUSUM's budget its lower sum spends (production: "
                         f"{CONCEPT_DOWN_SHARE}; none: one threshold for both sums, as before)")
    ap.add_argument("--detector", choices=["cusum", "sr"], default="cusum",
                    help="ours: the CUSUMs (ConceptCUSUM) or the Shiryaev-Roberts mixture "
                         "(ConceptSR, over --sr-shifts with --sr-weights)")
    ap.add_argument("--sr-shifts", type=float, nargs="+", default=SR_SHIFTS)
    ap.add_argument("--sr-weights", type=float, nargs="+", default=None)
    ap.add_argument("--runs", type=int, default=300,
                    help="runs per delay cell (60 left single cells near the 1.15 margin "
                         "unresolved: a median over the 20-40 runs without a false alarm)")
    ap.add_argument("--pre", type=int, default=1_000)
    ap.add_argument("--synth-pre", type=int, default=2_000)
    ap.add_argument("--cap", type=int, default=20_000)
    ap.add_argument("--null-factor", type=float, default=40.0,
                    help="null stream length, in targets")
    ap.add_argument("--steps", type=int, default=9)
    ap.add_argument("--refs", type=int, default=20,
                    help="references per cell the delay runs cycle over (5, as before: ours' "
                         "medians rode on those five references' rate errors, e.g. +0.11 "
                         "points on average at p 0.10 / 2,000 seed 1, -0.23 at 10,000 seed 2)")
    ap.add_argument("--arl-refs", type=int, default=20,
                    help="references per cell ours' ARL0 is measured over, each on a null "
                         "stream of its own (5 references of 8 targets each, as before, left "
                         "~40 expected alarms per cell: a pooled ARL0 within ±30 %% by chance)")
    ap.add_argument("--arl-factor", type=float, default=40.0,
                    help="null events per reference for ours' ARL0, in targets")
    ap.add_argument("--warmup", type=int, default=2_000,
                    help="the second delay protocol: clean events before each run that "
                         "every detector sees and whose alarms are not counted (0: off)")
    ap.add_argument("--boot", type=int, default=2_000,
                    help="bootstrap resamples for the delay ratios' 95 %% intervals")
    ap.add_argument("--ref-size", type=int, default=20_000)
    ap.add_argument("--n-values", type=int, default=4_000_000)
    ap.add_argument("--warm", type=int, default=10_000,
                    help="synth, frozen model: the events the tree is trained on")
    ap.add_argument("--online-warm", type=int, default=40_000,
                    help="synth, online model: test-then-train events before the reference "
                         "(40,000 since 2026-12-06: past the tree's split waves, where its "
                         "error stream is a null; bench/concept_online_curve.py)")
    ap.add_argument("--synth-ref", type=int, default=10_000,
                    help="synth: the reference (the tree's errors on these events)")
    ap.add_argument("--synth-after", type=int, default=10_000,
                    help="synth: events after the change (delays censored there)")
    ap.add_argument("--synth-runs", type=int, default=30)
    ap.add_argument("--synth-first-run", type=int, default=0,
                    help="synth: the first run's index (runs F ... F + --synth-runs - 1 draw "
                         "the generators of those runs of a full run: more runs of a cell)")
    ap.add_argument("--synth-streams", nargs="+", default=None, metavar="NAME",
                    help="synth: only the streams whose name starts with one of these "
                         "(SEA, Agrawal, Hyperplane)")
    ap.add_argument("--synth-modes", nargs="+", choices=concept_synth.MODES,
                    default=list(concept_synth.MODES))
    ap.add_argument("--synth-targets", type=int, nargs="+", default=[10_000])
    ap.add_argument("--synth-null-min", type=int, default=0,
                    help="synth: the peers' null streams at least this long (events), "
                         "whatever the target")
    ap.add_argument("--synth-arl-factor", type=float, default=10.0,
                    help="synth: null events per run for ours' ARL0, in targets")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--errors-from", type=Path, default=None,
                    help="with --part synth: take part 1 (its tables, and the peers' tuned "
                         "parameters) from a results .json of a run with the same options")
    ap.add_argument("--peers-from", type=Path, default=None,
                    help="take the peers' tuning, ARL0s and delays from a results .json of a "
                         "run with the same options and seed (they are the same draws): only "
                         "ours is run (part 1 only: part 2 runs everything)")
    ap.add_argument("--cell", nargs=3, action="append", default=[],
                    metavar=("P", "TARGET", "DROP"),
                    help="run only these cells (repeatable; with --rates and --targets "
                         "covering them): the runs are then other draws than a full run's")
    ap.add_argument("--peer-params-from", type=Path, default=None,
                    help="take the peers' tuned parameters from a results .json (no "
                         "bisection; their ARL0 is measured again on this run's draws); "
                         "part 2: per (mode, stream, target) of its synth section")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="part 1: write the cells finished so far to this .json after each "
                         "cell (a run stopped early keeps them; --render it for the tables)")
    ap.add_argument("--render", type=Path, default=None,
                    help="only re-write the tables from a results .json of a run with the "
                         "same options")
    ap.add_argument("--merge", type=Path, nargs="+", default=[],
                    help="with --render: add these results' synth modes to it (runs split by "
                         "--synth-modes) and write the merged .json over it")
    ap.add_argument("--band", type=Path, default=None,
                    help="horizon measurements (bench/concept_band.py measure): the tables "
                         "put a peer in band by its pooled null ARL0 at L and 4L "
                         "(concept_report.band_rule), not by this run's one null stream")
    args = ap.parse_args()
    args.band = json.loads(args.band.read_text()) if args.band else None
    args.shift = tuple(args.shift)
    # 10000, not 10000.0, in the tables and in the cells' keys of the .json
    args.targets = [int(t) if float(t).is_integer() else t for t in args.targets]
    if args.shares is None:
        args.shares = CONCEPT_SHARES if len(args.shift) == len(CONCEPT_SHARES) \
            else tuple([1.0 / len(args.shift)] * len(args.shift))
    args.shares = tuple(args.shares)
    if args.render is not None:
        res = json.loads(args.render.read_text())
        for extra in args.merge:  # the synth modes of runs split by --synth-modes
            more = json.loads(extra.read_text())
            res["synth"]["modes"].update(more["synth"]["modes"])
            res["synth"].setdefault("settings", {}).update(more["synth"].get("settings", {}))
            res["wall_s"] = res.get("wall_s", 0.0) + more.get("wall_s", 0.0)
        if args.merge:
            args.render.write_text(json.dumps(res, indent=1, default=float))
        text = report(args, res)
        args.render.with_suffix(".md").write_text(text + "\n")
        print(text)
        return
    if args.quick:
        args.rates, args.targets, args.runs, args.null_factor = [0.10], [2_000], 20, 15.0
        args.steps, args.refs, args.n_values, args.synth_runs = 8, 2, 1_000_000, 1
        args.arl_refs, args.arl_factor = 4, 10.0
        args.cap, args.synth_after, args.warm = 10_000, 4_000, 4_000
        args.online_warm, args.synth_ref, args.synth_runs = 4_000, 4_000, 2
        args.synth_targets, args.synth_arl_factor = [2_000], 5.0
    peers = _peers()
    res: dict[str, Any] = {}
    t0 = time.perf_counter()
    if args.part in ("errors", "all"):
        res["errors"] = part_errors(args, peers)
    elif args.errors_from is not None:
        res["errors"] = json.loads(args.errors_from.read_text())["errors"]
    if args.part in ("synth", "all"):
        res["synth"] = part_synth(args, peers)
    res["wall_s"] = time.perf_counter() - t0
    text = report(args, res) + "\n"
    out = args.out or RESULTS / f"concept-seed{args.seed}{'-quick' if args.quick else ''}.md"
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=float))
    print(text)


if __name__ == "__main__":
    main()
