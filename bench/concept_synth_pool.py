"""Pool part 2 (``bench_concept.py --part synth``) over seeds: one table per (mode, target)
with every detector's delays over the runs of all the given result files.

Each seed tunes the peers on its own null stream and calibrates ours per run, so pooling
the delays is pooling runs that were each at matched ARL0; a peer counts as in band only if
its achieved null ARL0 is within ±30 % of the target in EVERY seed (ours' likewise shown per
seed).  Ratio: median(ours) / median(best in-band peer) over the pooled runs without a false
alarm before the change, 95 % percentile-bootstrap CI (``concept_report.ratio_ci``).

    PYTHONPATH=$PWD .venv/bin/python bench/concept_synth_pool.py \\
        bench/results/concept-sr-synth-seed1.json bench/results/concept-sr-synth-seed2.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from concept_report import NAMES, _ci, early_arl, fmt, median, ratio, ratio_ci  # noqa: E402


def _in_band(a: float, target: float) -> bool:
    return math.isfinite(a) and abs(a / target - 1) <= 0.3


def paired_ci(ours: list[int], peer: list[int], boot: int, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap CI of median(ours) / median(peer) resampling the RUNS jointly (both saw
    the same error stream in a run), each median over the resampled runs it survived."""
    a = np.array([math.inf if x == -1 else (math.nan if x == -2 else x) for x in ours], float)
    b = np.array([math.inf if x == -1 else (math.nan if x == -2 else x) for x in peer], float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, (boot, a.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        ma, mb = np.nanmedian(a[idx], axis=1), np.nanmedian(b[idx], axis=1)
        r = np.where(ma == mb, 1.0, ma / mb)
    r = np.where(np.isnan(r), np.inf, r)
    return float(np.quantile(r, 0.025)), float(np.quantile(r, 0.975))


def pooled_lines(results: list[dict[str, Any]], boot: int, pre: int) -> list[str]:
    lines: list[str] = []
    modes = results[0]["synth"]["modes"]
    for mode, rows in modes.items():
        for target in next(iter(rows.values()))["targets"]:
            t = float(target)
            lines += [f"### {mode} model, ARL0 {int(t):,}, {len(results)} seeds pooled", "",
                      "| stream | runs | | ours | " + " | ".join(NAMES)
                      + " | best in-band peer | ours / it | 95 % CI | ≤ 1.15 |",
                      "|---|---|---|---|" + "---|" * len(NAMES) + "---|---|---|---|"]
            for name in rows:
                cells = [r["synth"]["modes"][mode][name]["targets"][target] for r in results]
                delays = {n: [d for c in cells for d in c["delays"][n]] for n in ["ours", *NAMES]}
                arls = {"ours": [c["ours"]["arl0"] for c in cells],
                        **{n: [c["peers"][n]["arl0"] for c in cells] for n in NAMES}}
                med = {n: median(v) for n, v in delays.items()}
                band = [n for n in NAMES if all(_in_band(a, t) for a in arls[n])
                        and not math.isnan(med[n])]
                best = min(band, key=lambda n: med[n]) if band else None
                if best is None:
                    tail = "none | - | - | - |"
                else:
                    r = ratio(med["ours"], med[best])
                    lo, hi = ratio_ci(delays["ours"], delays[best], boot)
                    tail = (f"{best} | {r:.2f} | {_ci(lo, hi)} | "
                            f"{'yes' if r <= 1.15 else 'NO'} |")
                fa = {n: sum(1 for x in v if x == -2) for n, v in delays.items()}
                cens = {n: sum(1 for x in v if x == -1) for n, v in delays.items()}
                lines.append(f"| {name} | {len(delays['ours'])} | delay | " + " | ".join(
                    f"{fmt(med[n])} ({fa[n]}/{cens[n]})" for n in ["ours", *NAMES])
                    + f" | {tail}")
                lines.append("| | | null ARL0 per seed | " + " | ".join(
                    " / ".join(fmt(a) + ("" if _in_band(a, t) else " ✗") for a in arls[n])
                    for n in ["ours", *NAMES]) + " | | | | |")
                lines.append("| | | pre-change ARL0 | " + " | ".join(
                    fmt(early_arl(delays[n], pre)) for n in ["ours", *NAMES]) + " | | | | |")
                p = [np.mean(c_["p_ref"]) for c_ in
                     (r["synth"]["modes"][mode][name] for r in results)]
                lines.append(f"| | | error ref | {' / '.join(f'{x:.3f}' for x in p)} |"
                             + " |" * (len(NAMES) + 4))
            lines += ["", "In brackets: runs discarded for a false alarm before the change / "
                      "runs censored. ✗: null ARL0 outside ±30 % of the target.", "",
                      "Ours / each peer over the pooled runs, in band or not (95 % CI: each detector's "
                      "runs resampled on their own; paired: the runs resampled jointly):", "",
                      "| stream | " + " | ".join(NAMES) + " |", "|---|" + "---|" * len(NAMES)]
            for name in rows:
                cells = [r["synth"]["modes"][mode][name]["targets"][target] for r in results]
                dl = {n: [d for c in cells for d in c["delays"][n]] for n in ["ours", *NAMES]}
                row = []
                for n in NAMES:
                    lo, hi = ratio_ci(dl["ours"], dl[n], boot)
                    plo, phi = paired_ci(dl["ours"], dl[n], boot)
                    row.append(f"{ratio(median(dl['ours']), median(dl[n])):.2f} ({_ci(lo, hi)}; "
                               f"paired {_ci(plo, phi)})")
                lines.append(f"| {name} | " + " | ".join(row) + " |")
            lines.append("")
    return lines


def drift_lines(results: list[dict[str, Any]], ref: int, pre: int, boot: int,
                seed: int = 0) -> list[str]:
    """Is the pre-change error stream the reference's?  Per (mode, stream) over the pooled
    runs: the mean error rate in the reference and in the ``pre`` events before the change,
    their mean paired difference (95 % bootstrap CI over runs), the runs where it rose, and
    the mean z of the difference against the binomial noise an i.i.d. stream at the run's
    reference rate gives (~0 ± 1/sqrt(runs) if the calibration's null holds)."""
    lines = ["| mode | stream | runs | error ref | error pre-change | pre − ref (95 % CI) | "
             "runs where it rose | mean z (i.i.d.: 0) |", "|---|---|---|---|---|---|---|---|"]
    rng = np.random.default_rng(seed)
    for mode in results[0]["synth"]["modes"]:
        for name in results[0]["synth"]["modes"][mode]:
            rows = [r["synth"]["modes"][mode][name] for r in results]
            a = np.array([x for row in rows for x in row["p_ref"]], float)
            b = np.array([x for row in rows for x in row["p_pre"]], float)
            d = b - a
            idx = rng.integers(0, d.size, (boot, d.size))
            lo, hi = np.quantile(d[idx].mean(axis=1), [0.025, 0.975])
            sd = np.sqrt(a * (1 - a) * (1 / ref + 1 / pre))
            z = np.divide(d, sd, out=np.zeros_like(d), where=sd > 0)
            lines.append(f"| {mode} | {name} | {d.size} | {a.mean():.4f} | {b.mean():.4f} | "
                         f"{d.mean():+.4f} ({lo:+.4f} – {hi:+.4f}) | "
                         f"{int(np.count_nonzero(d > 0))} | {z.mean():+.2f} |")
    return lines + [""]


def recheck_lines(results: list[dict[str, Any]], names: list[str], events: int) -> list[str]:
    """Each peer's null ARL0 at its tuned value on a longer Bernoulli stream (rng
    ``[seed, 77]``) than the bench's 20 × target check (~20–30 alarms, ±20 %)."""
    from bench_concept import _peers, arl, count_alarms, null_stream
    peers = {p.name: p for p in _peers()}
    lines = [f"Null ARL0 at the tuned parameter on {events:,} Bernoulli events (the bench's own "
             "check in brackets):", ""]
    for seed_i, res in enumerate(results):
        for mode, rows in res["synth"]["modes"].items():
            for name, row in rows.items():
                p_ref = float(np.mean(row["p_ref"]))
                if p_ref == 0:
                    continue  # no errors: no peer alarms at any parameter
                for target, c in row["targets"].items():
                    s = null_stream(np.random.default_rng([seed_i + 1, 77]), p_ref, events)
                    got = []
                    for n in names:
                        v = c["peers"][n]["value"]
                        a = arl(events, len(count_alarms(lambda n=n, v=v: peers[n].make(v), s)))
                        got.append(f"{n} {fmt(a)} ({fmt(c['peers'][n]['arl0'])})")
                    lines.append(f"- file {seed_i + 1}, {mode}, {name}, target {target}, "
                                 f"p {p_ref:.4f}: " + ", ".join(got))
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, nargs="+")
    ap.add_argument("--boot", type=int, default=2_000)
    ap.add_argument("--pre", type=int, default=2_000, help="the runs' --synth-pre")
    ap.add_argument("--ref", type=int, default=None,
                    help="the runs' --synth-ref: add the pre-change error drift table")
    ap.add_argument("--recheck", nargs="*", default=[], choices=NAMES,
                    help="these peers' null ARL0 again on --recheck-events events")
    ap.add_argument("--recheck-events", type=int, default=4_000_000)
    args = ap.parse_args()
    res = [json.loads(p.read_text()) for p in args.results]
    lines = pooled_lines(res, args.boot, args.pre)
    if args.ref:
        lines += drift_lines(res, args.ref, args.pre, args.boot)
    if args.recheck:
        lines += recheck_lines(res, args.recheck, args.recheck_events)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
