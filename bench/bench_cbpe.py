"""Estimated performance without labels (CBPE) under covariate shift, against the realised
values and against NannyML's CBPE on the same data.

The world: one input ``x``, the true P(y=1 | x) = sigmoid(2x - 1) everywhere (no concept
drift).  The reference (20,000 labelled predictions) has x ~ N(0, 1); the analysis period
is ``--chunks`` chunks of ``--chunk`` predictions whose inputs move towards the decision
boundary (x ~ N(0.5 t, 1 - 0.3 t), t from 0 in the first three chunks to 1 in the last),
which costs the model about 7 points of accuracy.  Two models:

* ``calibrated``: the score is the true probability;
* ``over-confident``: the score is sigmoid(4x - 1.5) (a doubled logit, shifted): the
  reference fails the calibration test and the scores are recalibrated first.

For each seed and chunk, the estimate of streamdrift (``detectors.cbpe``, exactly what
``labels.estimate`` runs per window: the reference's calibration, then
:func:`~detectors.cbpe.cbpe_estimates`) and, when it is installed in a separate venv, of
NannyML's ``CBPE`` (``chunk_size`` = the chunk) are compared with the realised value of the
chunk.  The error includes the realised value's own sampling noise (a chunk of 5,000 at 75 %
accuracy: 0.6 points standard deviation); ``noise`` reports the error an exact estimator of
the expected accuracy would make, for scale.

``--drop`` (``--drop-only``: that alone) adds the drop alarm (:mod:`detectors.cbpe_drop`):

* **false alarms**: for a few (window, target) pairs, the calibrated band's achieved
  predictions per false drop episode on fresh clean streams of the world (not the
  reference), 40 targets long, tested after every prediction as the calibration assumes
  (:func:`~detectors.cbpe_drop.drop_statistic`, the production rule:
  tests/detectors/test_cbpe_drop.py), against the target;
* **delay**: at the default knob (``false_alarm_events`` 10 million, the drop alarm's share:
  one false episode per 2.2e8 predictions) and the default window of 1,000, the predictions
  from the start of the shift to the first drop, with the fixed 3 sd band of before and the
  calibrated one: the gradual shift above (chunks of ``--chunk``) and abrupt shifts that
  cost about 5, 7 and 10 points of accuracy.

Usage::

    python3.11 -m venv /tmp/nannyml && /tmp/nannyml/bin/pip install nannyml statsmodels
    PYTHONPATH=$PWD .venv/bin/python bench/bench_cbpe.py [--nannyml /tmp/nannyml/bin/python]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from detectors.cbpe import ESTIMATED, CBPEReference, cbpe_estimates, cbpe_stats
from detectors.cbpe_drop import drop_statistic, episode_rate
from detectors.quality_metrics import QualityMetrics

REF_N = 20_000
THRESHOLD = 0.5

_NANNYML = r"""
import json, sys, time
import pandas as pd
import nannyml as nml
ref = pd.read_csv(sys.argv[1]); ana = pd.read_csv(sys.argv[2]); chunk = int(sys.argv[3])
metrics = ["accuracy", "precision", "recall", "f1", "roc_auc"]
t = time.perf_counter()
est = nml.CBPE(y_pred_proba="score", y_pred="pred", y_true="y",
               problem_type="classification_binary", metrics=metrics, chunk_size=chunk)
est.fit(ref)
df = est.estimate(ana).filter(period="analysis").to_df()
out = {m: df[(m, "value")].tolist() for m in metrics}
out["seconds"] = time.perf_counter() - t
json.dump(out, sys.stdout)
"""


def world(rng: np.random.Generator, n: int, shift: float, scale: float, model: str,
          ) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(shift, scale, n)
    prob = 1 / (1 + np.exp(-(2 * x - 1)))
    y = (rng.random(n) < prob).astype(np.float64)
    score = prob if model == "calibrated" else 1 / (1 + np.exp(-(4 * x - 1.5)))
    return score, y


def realised(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    q = QualityMetrics("binary", window=10, threshold=THRESHOLD)
    q.update(y, s)
    return q.metrics()


def run_seed(seed: int, model: str, chunks: int, chunk: int, nannyml: str | None,
             ) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    s_ref, y_ref = world(rng, REF_N, 0.0, 1.0, model)
    t = time.perf_counter()
    ref = CBPEReference.build(s_ref, y_ref, window=chunk, threshold=THRESHOLD)
    build_s = time.perf_counter() - t
    rows = []
    ss, ys = [], []
    t_est = 0.0
    for k in range(chunks):
        f = min(1.0, max(0.0, (k - 2) / max(1, chunks - 3)))
        s, y = world(rng, chunk, 0.5 * f, 1.0 - 0.3 * f, model)
        ss.append(s)
        ys.append(y)
        t = time.perf_counter()
        est, sd = cbpe_estimates(cbpe_stats(s, ref.calibration.apply(s), THRESHOLD))
        t_est += time.perf_counter() - t
        rows.append({"chunk": k, "realised": realised(y, s), "sd": sd,
                     "streamdrift": est})
    out: dict[str, Any] = {"seed": seed, "model": model, "rows": rows,
                           "recalibrated": ref.calibration.recalibrated,
                           "hl_p": ref.calibration.p_value, "build_s": build_s,
                           "estimate_s": t_est, "baseline": ref.baseline,
                           "band": ref.band(chunk)}
    if nannyml:
        with tempfile.TemporaryDirectory() as tmp:
            rp, ap = Path(tmp) / "ref.csv", Path(tmp) / "ana.csv"
            _csv(rp, s_ref, y_ref)
            _csv(ap, np.concatenate(ss), np.concatenate(ys))
            proc = subprocess.run([nannyml, "-c", _NANNYML, str(rp), str(ap), str(chunk)],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                out["nannyml_error"] = proc.stderr.strip().splitlines()[-1:]
            else:
                nm = json.loads(proc.stdout)
                out["nannyml_s"] = nm.pop("seconds")
                for k, row in enumerate(rows):
                    row["nannyml"] = {m: nm[m][k] for m in ESTIMATED}
    return out


def _csv(path: Path, s: np.ndarray, y: np.ndarray) -> None:
    with path.open("w") as fh:
        fh.write("score,pred,y\n")
        for a, b, c in zip(s.tolist(), (s >= THRESHOLD).astype(int).tolist(),
                           y.astype(int).tolist(), strict=True):
            fh.write(f"{a!r},{b},{c}\n")


def summarise(results: list[dict[str, Any]], who: str, metric: str,
              ) -> tuple[float, float, float] | None:
    """(mean |error|, 95th percentile |error|, max |error|) in points over every chunk."""
    errs = [abs(r[who][metric] - r["realised"][metric]) * 100
            for res in results for r in res["rows"] if who in r]
    if not errs:
        return None
    e = np.asarray(errs)
    return float(e.mean()), float(np.percentile(e, 95)), float(e.max())


def costs(batch: int = 2000, rounds: int = 50) -> list[str]:
    """What the hot path and a scrape cost: the window update per prediction (batches of
    ``batch``) against a naive per-event loop (a deque of scores) in the same process, and
    the estimate at scrape time per window size (CPU time)."""
    from collections import deque

    from detectors.cbpe import ScoreWindow

    rng = np.random.default_rng(0)
    s = rng.random(batch)
    w = ScoreWindow(1000)
    t = time.process_time()
    for _ in range(rounds):
        w.update(s)
    ours = (time.process_time() - t) / (rounds * batch)
    d: deque[float] = deque(maxlen=1000)
    t = time.process_time()
    for _ in range(rounds):
        for v in s.tolist():
            if 0.0 <= v <= 1.0:
                d.append(v)
    naive = (time.process_time() - t) / (rounds * batch)
    out = ["| what | cost |", "| --- | --- |",
           f"| window update per prediction (batches of {batch}) | {ours * 1e9:.1f} ns |",
           f"| naive per-event loop (deque.append) per prediction | {naive * 1e9:.1f} ns "
           f"(ours {naive / ours:.1f}x faster) |"]
    ref = CBPEReference.build(rng.random(20_000), None, window=1000, threshold=THRESHOLD)
    for n in (1000, 10_000, 100_000):
        x = rng.random(n)
        t = time.process_time()
        for _ in range(20):
            cbpe_estimates(cbpe_stats(x, ref.calibration.apply(x), THRESHOLD))
        out.append(f"| estimate of a window of {n:,} (per scrape and partition) | "
                   f"{(time.process_time() - t) / 20 * 1e3:.2f} ms |")
    return out


def _auc(si: np.ndarray, pi: np.ndarray) -> float:
    return cbpe_estimates(cbpe_stats(si, pi, THRESHOLD))[0]["roc_auc"]


#: (window, target predictions per false drop episode) of the false-alarm check
DROP_TARGETS = ((200, 3_000.0), (500, 100_000.0), (1000, 1_000_000.0))
#: the default knob's share for the drop alarm: 1e7 / ((1 - 0.1) x 0.05)
DEFAULT_TARGET = 1e7 / (0.9 * 0.05)
#: abrupt shifts (x ~ N(shift, scale)): about 5, 7 and 10 points of accuracy
ABRUPT = ((0.4, 0.8), (0.5, 0.7), (0.5, 0.57))


def false_alarms(seed: int, window: int, target: float) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    s_ref, y_ref = world(rng, REF_N, 0.0, 1.0, "calibrated")
    t = time.process_time()
    ref = CBPEReference.build(s_ref, y_ref, window=window, threshold=THRESHOLD,
                              target_events=target)
    cpu = time.process_time() - t
    assert ref.drop is not None
    episodes = tests = 0
    rng = np.random.default_rng(10_000 + seed)
    while tests < 40 * target:
        s, _ = world(rng, 200_000 + window - 1, 0.0, 1.0, "calibrated")
        z = drop_statistic(s, ref.calibration.apply(s), THRESHOLD, window, ref.baseline,
                           ref.null_sd, _auc)
        e, n = episode_rate(z, ref.sigmas)
        episodes += e
        tests += n
    return {"seed": seed, "window": window, "target": target, "sigmas": ref.sigmas,
            "method": ref.drop.method, "episodes": episodes, "tests": tests,
            "build_cpu_s": cpu}


def delays(seed: int, model: str, chunks: int, chunk: int, window: int = 1000,
           ) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    s_ref, y_ref = world(rng, REF_N, 0.0, 1.0, model)
    refs = {"3 sd (before)": CBPEReference.build(s_ref, y_ref, window=window,
                                                  threshold=THRESHOLD),
            "calibrated": CBPEReference.build(s_ref, y_ref, window=window, threshold=THRESHOLD,
                                              target_events=DEFAULT_TARGET)}
    streams = []
    parts = []
    for k in range(chunks):
        f = min(1.0, max(0.0, (k - 2) / max(1, chunks - 3)))
        parts.append(world(rng, chunk, 0.5 * f, 1.0 - 0.3 * f, model))
    streams.append(("gradual", 3 * chunk, parts))  # (name, shift start, pieces)
    for shift, scale in ABRUPT:
        streams.append((f"abrupt N({shift}, {scale})", 2 * window,
                        [world(rng, 2 * window, 0.0, 1.0, model),
                         world(rng, 4 * window, shift, scale, model)]))
    out = []
    for name, start, pieces in streams:
        s = np.concatenate([a for a, _ in pieces])
        y = np.concatenate([b for _, b in pieces])
        right = ((s >= THRESHOLD) == (y == 1)).astype(np.float64)
        tail = pieces[-1][0].shape[0]  # the last chunk, or all of an abrupt shift
        for who, ref in refs.items():
            z = drop_statistic(s, ref.calibration.apply(s), THRESHOLD, window, ref.baseline,
                               ref.null_sd, _auc)
            hit = np.flatnonzero(z >= ref.sigmas)  # z[i]: the window ending at i + window - 1
            before = int(np.count_nonzero(hit + window - 1 < start))
            after = hit[hit + window - 1 >= start]
            end = int(after[0]) + window if after.size else None
            out.append({"seed": seed, "model": model, "stream": name, "who": who,
                        "sigmas": ref.sigmas,
                        "band": ref.band(window)["accuracy"] * 100,
                        "delay": None if end is None else end - start,
                        "early_alarms": before,
                        "drop_at_alarm": None if end is None else
                        (ref.baseline["accuracy"] - float(right[end - window:end].mean())) * 100,
                        "drop_final": (ref.baseline["accuracy"]
                                       - float(right[-tail:].mean())) * 100})
    return out


def drop_lines(seeds: list[int], chunks: int, chunk: int) -> list[str]:
    lines = ["### Drop alarm: false alarms on clean streams (calibrated band)", "",
             "Predictions per false drop episode, tested after every prediction, on fresh "
             "clean streams 40 targets long (ROC AUC every window/20).", "",
             "| window | target | seed | band (sd) | how | episodes | achieved | achieved / "
             "target | calibration CPU |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for window, target in DROP_TARGETS:
        for seed in seeds:
            r = false_alarms(seed, window, target)
            arl = r["tests"] / max(r["episodes"], 1)
            lines.append(f"| {window} | {target:,.0f} | {seed} | {r['sigmas']:.2f} | "
                         f"{r['method']} | {r['episodes']} | {arl:,.0f} | {arl / target:.2f} | "
                         f"{r['build_cpu_s']:.1f} s |")
            print(lines[-1], file=sys.stderr, flush=True)
    lines += ["", "### Drop alarm: delay at the default knob (window 1,000, one false "
              f"episode per {DEFAULT_TARGET:.3g} predictions)", "",
              "Predictions from the start of the shift to the first drop flag (realised "
              "accuracy drop of the window that alarmed; and of the last chunk of the "
              "gradual shift, or all 4,000 predictions of an abrupt one).", "",
              "| model | stream | seed | band 3 sd (points) | delay 3 sd | calibrated band "
              "(sd / points) | delay calibrated | drop at alarm (calibrated) | final drop | "
              "alarms before the shift (3 sd / calibrated) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model in ("calibrated", "over-confident"):
        for seed in seeds:
            rows = delays(seed, model, chunks, chunk)
            for name in dict.fromkeys(r["stream"] for r in rows):
                a, b = (r for r in rows if r["stream"] == name)
                at = "n/a" if b["drop_at_alarm"] is None else f"{b['drop_at_alarm']:.1f}"
                lines.append(
                    f"| {model} | {name} | {seed} | {a['band']:.2f} | {a['delay']} | "
                    f"{b['sigmas']:.2f} / {b['band']:.2f} | {b['delay']} | "
                    f"{at} | "
                    f"{b['drop_final']:.1f} | {a['early_alarms']} / {b['early_alarms']} |")
                print(lines[-1], file=sys.stderr, flush=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--chunks", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=5000)
    ap.add_argument("--nannyml", default="/tmp/nannyml/bin/python",
                    help="python of a venv with nannyml ('' to skip)")
    ap.add_argument("--json", type=Path, help="write the raw results here")
    ap.add_argument("--drop", action="store_true", help="add the drop alarm's section")
    ap.add_argument("--drop-only", action="store_true", help="only the drop alarm's section")
    ap.add_argument("--drop-seeds", type=int, default=2)
    args = ap.parse_args()
    if args.drop_only:
        print("\n".join(drop_lines(list(range(args.drop_seeds)), args.chunks, args.chunk)))
        return
    nannyml = args.nannyml if args.nannyml and Path(args.nannyml).exists() else None
    lines = [f"CBPE under covariate shift: {args.seeds} seeds x {args.chunks} chunks of "
             f"{args.chunk} predictions, reference {REF_N} labelled; |estimate - realised| "
             "in points of each metric", ""]
    everything = {}
    for model in ("calibrated", "over-confident"):
        results = [run_seed(seed, model, args.chunks, args.chunk, nannyml)
                   for seed in range(args.seeds)]
        everything[model] = results
        drop = [res["baseline"]["accuracy"] * 100 - res["rows"][-1]["realised"]["accuracy"] * 100
                for res in results]
        first = results[0]
        lines.append(f"### {model} scores (recalibrated: "
                     f"{sum(r['recalibrated'] for r in results)}/{len(results)} seeds; "
                     f"Hosmer-Lemeshow p of seed 0 = {first['hl_p']:.2g}); accuracy drop "
                     f"reference -> last chunk {min(drop):.1f}-{max(drop):.1f} points")
        lines.append("")
        lines.append("| metric | streamdrift mean / p95 / max | NannyML CBPE mean / p95 / max "
                     "| realised noise (mean 1 sd) |")
        lines.append("| --- | --- | --- | --- |")
        for m in ESTIMATED:
            sd = float(np.mean([r["sd"][m] for res in results for r in res["rows"]])) * 100
            cells = []
            for who in ("streamdrift", "nannyml"):
                s = summarise(results, who, m)
                cells.append("n/a" if s is None else f"{s[0]:.2f} / {s[1]:.2f} / {s[2]:.2f}")
            lines.append(f"| {m} | {cells[0]} | {cells[1]} | {sd:.2f} |")
        lines.append("")
        lines.append("Seed 0, accuracy per chunk (%): realised / streamdrift (95 % band) / "
                     "NannyML")
        lines.append("")
        lines.append("| chunk | realised | streamdrift | band | NannyML |")
        lines.append("| --- | --- | --- | --- | --- |")
        for r in first["rows"]:
            e, sd = r["streamdrift"]["accuracy"] * 100, r["sd"]["accuracy"] * 100
            nm = f"{r['nannyml']['accuracy'] * 100:.1f}" if "nannyml" in r else "n/a"
            lines.append(f"| {r['chunk']} | {r['realised']['accuracy'] * 100:.1f} | {e:.1f} | "
                         f"{e - 1.96 * sd:.1f}-{e + 1.96 * sd:.1f} | {nm} |")
        errs = [r.get("nannyml_error") for r in results if r.get("nannyml_error")]
        if errs:
            lines.append(f"\nNannyML failed: {errs[0]}")
        t_sd = sum(r["build_s"] + r["estimate_s"] for r in results)
        t_nm = sum(r.get("nannyml_s", float("nan")) for r in results)
        lines.append(f"\ntime (fit + estimate, all seeds): streamdrift {t_sd:.2f} s, "
                     f"NannyML {t_nm:.2f} s (its own process, pandas, excluding start-up)\n")
    lines += ["### Cost (CPU time, this process)", "", *costs(), ""]
    if args.drop:
        lines += [*drop_lines(list(range(args.drop_seeds)), args.chunks, args.chunk), ""]
    if nannyml is None:
        lines.append("NannyML: not run (no python at --nannyml)")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(everything, default=float, indent=1))


if __name__ == "__main__":
    sys.exit(main())
