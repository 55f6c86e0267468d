"""The tables of ``bench_concept.py`` (split from it to keep each file short): achieved ARL0,
the ARL0 read from the delay runs' early false alarms, and the median delays of the two
protocols (from a cold start, and after an uncounted warm-up), each ratio with a bootstrap
confidence interval."""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

NAMES = ["DDM", "EDDM", "HDDM_A", "HDDM_W", "ADWIN"]


def fmt(x: float) -> str:
    if math.isnan(x):
        return "n/a"  # every run discarded for a false alarm before the change
    return "never" if not math.isfinite(x) else f"{x:.0f}"


def survivors(delays: list[int]) -> np.ndarray:
    """The delays of the runs without a false alarm (-2), censored runs (-1) as infinite."""
    return np.array([math.inf if x == -1 else x for x in delays if x != -2], dtype=float)


def delay_of(alarms: np.ndarray, change: int) -> int:
    """Delay of the first alarm; -2: a false alarm before the change; -1: none."""
    if not alarms.size:
        return -1
    first = int(alarms[0])
    return -2 if first < change else first - change


def median(delays: list[int]) -> float:
    """Median delay over the runs without a false alarm (-2), a censored run (-1: never
    within the cap) counting as infinite."""
    d = survivors(delays)
    return float(np.median(d)) if d.size else math.nan


def early_arl(delays: list[int], pre: int) -> float:
    """The ARL0 a constant false-alarm hazard would need to alarm in the first ``pre``
    events of as many runs as the detector did (-2: a false alarm before the change)."""
    fa = sum(1 for x in delays if x == -2)
    if fa == 0:
        return math.inf
    if fa == len(delays):
        return 0.0
    return -pre / math.log(1 - fa / len(delays))


def ratio(ours: float, peer: float) -> float:
    if ours == peer:  # also both censored, or both 0
        return 1.0
    return ours / peer if math.isfinite(peer) and peer > 0 else math.nan


def ratio_ci(ours: list[int], peer: list[int], boot: int, seed: int = 0,
             level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of median(ours) / median(peer): each detector's
    surviving runs resampled on their own (a peer's median may come from a dozen runs)."""
    a, b = survivors(ours), survivors(peer)
    if not a.size or not b.size or boot <= 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    ma = np.median(a[rng.integers(0, a.size, (boot, a.size))], axis=1)
    mb = np.median(b[rng.integers(0, b.size, (boot, b.size))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(ma == mb, 1.0, ma / mb)
    r = np.where(np.isnan(r), np.inf, r)
    q = (1 - level) / 2
    return float(np.quantile(r, q)), float(np.quantile(r, 1 - q))


def _ci(lo: float, hi: float) -> str:
    if math.isnan(lo):
        return "-"
    return f"{lo:.2f}–{hi:.2f}" if math.isfinite(hi) else f"{lo:.2f}–∞"


BAND = 0.3  # ±30 % of the target
BAND_MULTS = ("1", "4")  # the horizons the band rule reads: L and 4L


def band_key(p: float, target: float, name: str, value: float) -> str:
    """A peer at its tuned parameter in a cell: the key of its horizon measurements
    (``concept_band.py``)."""
    return f"{p:g}|{target:g}|{name}|{value:.10g}"


def band_rule(entry: dict[str, Any], target: float) -> bool:
    """The band rule with horizon measurements (``concept_band.py``): in band only if the
    pooled null ARL0 estimate (all events over all alarms of K independent null streams) is
    within ±30 % of the target at horizon L (the single-stream check's length) *and* at 4L.
    A detector with run-length mass at "never" reads higher the longer it is watched, so it
    passes at one horizon only by accident; a missing horizon is not in band."""
    for m in BAND_MULTS:
        h = entry["horizons"].get(m)
        if h is None:
            return False
        est = float(h["pooled"])
        if not (math.isfinite(est) and abs(est / target - 1) <= BAND):
            return False
    return True


def _in_band(args: argparse.Namespace, c: dict[str, Any], key: str, name: str,
             window: bool) -> bool:
    """Whether peer ``name``'s ARL0 is within ±30 % of the target: the long-run one, or with
    ``window`` the one read from its false alarms in the pre-change window of ``key``'s runs
    (pooled over the drops).  The long-run one: with ``args.band`` (horizon measurements,
    ``concept_band.py``) by :func:`band_rule`, every peer of every cell (one missing is an
    error, not a fallback to the other rule); without, the single null stream of the run."""
    if not window:
        band = getattr(args, "band", None)
        if band is not None:
            k = band_key(c["p"], c["target"], name, c["peers"][name]["value"])
            if k not in band:
                raise SystemExit(f"--band: no horizon measurement of {k}; run "
                                 "bench/concept_band.py measure on this results file")
            return band_rule(band[k], c["target"])
        return abs(c["peers"][name]["arl0"] / c["target"] - 1) <= BAND
    a = early_arl([x for d in c[key].values() for x in d[name]], args.pre)
    return abs(a / c["target"] - 1) <= BAND


def delay_table(args: argparse.Namespace, cells: list[dict[str, Any]], key: str,
                window: bool = False) -> list[str]:
    """The median delays of ``key`` ("delays": cold start; "delays_warm": after a warm-up),
    the ratio of ours to the best peer and to the best peer whose ARL0 is within ±30 % (the
    long-run one; with ``window`` the one its false alarms in the pre-change window of these
    runs read as), that ratio's 95 % bootstrap interval, and the count of cells meeting
    ≤ 1.15."""
    band = "pre-change ARL0 ±30 %" if window else "ARL0 ±30 %"
    lines = ["| p | target | drop | ours | " + " | ".join(NAMES)
             + f" | best peer | ours / best | ≤ 1.15 | best peer at {band} | ours / it, "
             "≤ 1.15 | 95 % CI of ours / it |",
             "|---|---|---|---|" + "---|" * len(NAMES) + "---|---|---|---|---|---|"]
    met = [0, 0]
    met_fair = [0, 0]
    for ci, c in enumerate(cells):
        for di, (drop, d) in enumerate(c[key].items()):
            med = {k: median(v) for k, v in d.items()}
            best = min(NAMES, key=lambda n: med[n])
            r = ratio(med["ours"], med[best])
            fair = [n for n in NAMES if _in_band(args, c, key, n, window)]
            best_fair = min(fair, key=lambda n: med[n]) if fair else None
            r_fair = ratio(med["ours"], med[best_fair]) if best_fair else math.nan
            lo, hi = (ratio_ci(d["ours"], d[best_fair], args.boot, seed=100 * ci + di)
                      if best_fair else (math.nan, math.nan))
            fa = {k: sum(1 for x in v if x == -2) for k, v in d.items()}
            cens = {k: sum(1 for x in v if x == -1) for k, v in d.items()}
            met[0] += r <= 1.15
            met[1] += 1
            if best_fair:
                met_fair[0] += r_fair <= 1.15
                met_fair[1] += 1
            lines.append(f"| {c['p']:.2f} | {c['target']:,} | {float(drop):.2f} | "
                         + " | ".join(f"{fmt(med[n])} ({fa[n]}/{cens[n]})"
                                      for n in ["ours", *NAMES])
                         + f" | {best} | {r:.2f} | {'yes' if r <= 1.15 else 'NO'} | "
                         + (f"{best_fair} | {r_fair:.2f} {'yes' if r_fair <= 1.15 else 'NO'} | "
                            f"{_ci(lo, hi)} |" if best_fair else "none | - | - |"))
    lines += ["", f"Ours / best peer ≤ 1.15 in {met[0]} of {met[1]} cells; against the best "
              f"peer at {band}: {met_fair[0]} of {met_fair[1]} (cells with such a peer).", ""]
    return lines


def early_table(args: argparse.Namespace, cells: list[dict[str, Any]], key: str) -> list[str]:
    lines = ["| p | target | ours | " + " | ".join(NAMES) + " |",
             "|---|---|---|" + "---|" * len(NAMES)]
    for c in cells:
        pooled = {n: [x for d in c[key].values() for x in d[n]] for n in ["ours", *NAMES]}
        lines.append(f"| {c['p']:.2f} | {c['target']:,} | "
                     + " | ".join(fmt(early_arl(pooled[n], args.pre))
                                  for n in ["ours", *NAMES]) + " |")
    return [*lines, ""]


def arl_lines(cells: list[dict[str, Any]]) -> list[str]:
    lines = ["## Achieved ARL0 (target; tuned parameter)", "",
             "| p | target | ours | " + " | ".join(NAMES) + " |",
             "|---|---|---|" + "---|" * len(NAMES)]
    for c in cells:
        lines.append(f"| {c['p']:.2f} | {c['target']:,} | {fmt(c['ours']['arl0'])} | "
                     + " | ".join(f"{fmt(c['peers'][n]['arl0'])} "
                                  f"({c['peers'][n]['value']:.3g})" for n in NAMES) + " |")
    lines += ["", "Ours per reference (each on its own null stream; events per alarm, "
              "lowest, median, highest; the share within ±30 % of the target):", ""]
    for c in cells:
        a = np.array(c["ours"]["per_ref"], dtype=float)
        within = float(np.mean(np.abs(a / c["target"] - 1) <= 0.3))
        n_ev = c["ours"].get("events_per_ref")
        lines.append(f"- p={c['p']:.2f}/{c['target']:,}: {len(a)} references"
                     + (f" × {n_ev:,} events" if n_ev else "")
                     + f": {fmt(a.min())}, {fmt(float(np.median(a)))}, {fmt(a.max())}; "
                     f"{within:.0%} within ±30 %")
    return [*lines, ""]


def report(args: argparse.Namespace, res: dict[str, Any], header: list[str]) -> str:
    lines = list(header)
    if "errors" in res:
        cells = res["errors"]["cells"]
        lines += arl_lines(cells)
        lines += ["## ARL0 in the first events of a run", "",
                  f"From the delay runs: the share of runs with a false alarm in their first "
                  f"{args.pre:,} events, read as the ARL0 of a constant hazard "
                  "(-pre / ln(1 - share)), pooled over the three drops.  A detector whose "
                  "false alarms come early after a (re)start reads lower here than over a "
                  "long stream.", ""]
        lines += early_table(args, cells, "delays")
        warm = all("delays_warm" in c for c in cells)
        if warm:
            lines += [f"The same after a warm-up of {args.warmup:,} clean events (alarms in "
                      "it not counted; the pre-change window starts after it):", ""]
            lines += early_table(args, cells, "delays_warm")
        lines += ["## Median detection delay (labelled events after the change)", "",
                  f"Cold start: every detector starts at the run's first event, "
                  f"{args.pre:,} events before the change.  95 % CI: percentile bootstrap "
                  f"({args.boot} resamples) of the two medians' ratio, each detector's "
                  "surviving runs resampled on their own.", ""]
        lines += delay_table(args, cells, "delays")
        if warm:
            lines += ["## Median detection delay after a warm-up (matched false-alarm "
                      "conditions)", "",
                      f"Each run is preceded by {args.warmup:,} clean events that every "
                      "detector sees (ours included) and in which its alarms are not counted "
                      "(the peers reset natively, as over the long stream they were tuned on); "
                      f"a false alarm is one in the {args.pre:,} events after the warm-up. The "
                      "change then meets each detector in its running state instead of right "
                      "after a start.", ""]
            lines += delay_table(args, cells, "delays_warm")
            lines += ["The same runs against the best peer whose false alarms in the "
                      "pre-change window of these runs (the table \"ARL0 in the first events "
                      "of a run\", after the warm-up) read as an ARL0 within ±30 % of the "
                      "target: the same false-alarm conditions as ours in the delay runs.", ""]
            lines += delay_table(args, cells, "delays_warm", window=True)
    if "synth" in res and "modes" in res["synth"]:
        from concept_synth import synth_lines
        lines += synth_lines(args, res["synth"])
    elif "synth" in res:  # an older run's test-then-train table (3 runs, peers off-rate)
        lines += ["## River generators, Hoeffding tree (test-then-train), ARL0 10,000", "",
                  f"{args.synth_runs} runs per stream; change after {args.warm:,} + "
                  f"{args.synth_pre:,} events; median delay over the runs without a false alarm "
                  "before the change (in brackets: false alarms before it, summed over the "
                  "runs).", "",
                  "| stream | error before -> after | ours | " + " | ".join(NAMES) + " |",
                  "|---|---|---|" + "---|" * len(NAMES)]
        for name, row in res["synth"].items():
            cells_s = []
            for n in ["ours", *NAMES]:
                if n in row["delays"]:
                    cells_s.append(f"{fmt(median(row['delays'][n]))} "
                                   f"({sum(row['false_alarms'][n])})")
                else:
                    cells_s.append("-")
            lines.append(f"| {name} | {np.mean(row['p_ref']):.3f} -> "
                         f"{np.mean(row['p_after']):.3f} | " + " | ".join(cells_s) + " |")
        lines.append("")
    if "wall_s" in res:
        lines += [f"Wall time {res['wall_s']:.0f} s.", ""]
    return "\n".join(lines)
