"""Two checks behind the figures of ``bench_concept.py`` (issue 15, item 4).

``refs``: ours' achieved ARL0 per labelled reference.  Each of ``--refs`` references of
20,000 errors drawn at ``p`` calibrates the production detector (``concept_detector``, the
knob at the target), which then runs on a clean stream of its own of ``--factor`` × target
events; the table gives each reference's error in standard errors (``z``: its rate minus the
true one, over √(p(1 − p) / n)) and its events per alarm.  The calibration budgets for the
reference's error (an offset per simulated path, ``calibrate_cusum``'s ``offset_sd``), so
what it promises is the ARL0 pooled over references; the fit of log ARL0 on ``z`` shows how
much of a single reference's spread is its error (which no calibration that sees only the
reference can remove), the residual the calibration's and the stream's noise.

``peers``: a peer's median delay in a cell of a ``bench_concept.py`` result, re-estimated on
``--runs`` fresh runs at the parameter it was tuned to there (the bench's median may come
from a dozen runs that had not false-alarmed in the first ``pre`` events), and the same
runs without a change (drop 0): the "delay" of the survivors' first alarm when nothing
changed, the share of their detections that are false alarms waiting to happen.

``survivors``: from ``bench_concept.py`` results of several seeds (``--files``), each
detector's median delay from a cold start and after the warm-up, on the same runs, with its
survivors (runs without a false alarm before the change): a detector whose cold-start
median is well below its warm-up one is measured on the runs it happened not to
false-alarm in.  Then, for ``--cell`` (p target drop protocol peer, repeated), ours / the
peer per seed and pooled over the seeds' runs, with 95 % percentile-bootstrap intervals
(the report's, ``concept_report.ratio_ci``) and the bootstrap share above 1.15.

``paired``: for ``--cell`` (p target drop protocol peer) in each of ``--files``, the
protocol's ratio next to the ratio on the runs both detectors survived, ours' median on the
peer's surviving runs against ours' on all, and (cold start) ours against the peer's own
median after the warm-up.  ``arl``: a peer's ARL0 at the parameter a file tuned it to, on
``--factor`` × target null events, with its cycle lengths (DDM's are a burst of short
cycles and then one that does not end).  ``hazard``: ours calibrated to other targets
(``--targets``, ``--shares``), on the cold-start or (``--warmup``) warm-up protocol: its
false alarms before the change and its median delay, to compare with a peer at the same
false-alarm hazard.

Run from the repository root::

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python bench/concept_checks.py refs
    PYTHONPATH=$PWD nice -n 10 .venv/bin/python bench/concept_checks.py peers \\
        --from bench/results/concept-seed2.json --cell 0.10 10000 0.02 EDDM

    PYTHONPATH=$PWD .venv/bin/python bench/concept_checks.py survivors \\
        --files bench/results/concept-seed1.json bench/results/concept-seed2.json \\
        --cell 0.10 10000 0.02 delays DDM

Writes ``bench/results/concept-checks-<check>.md`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from detectors.concept import CONCEPT_DOWN_SHARE, ConceptCUSUM, concept_detector
from detectors.cusum import CUSUM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_concept import RESULTS, _peers, count_alarms, delay_of, fresh  # noqa: E402
from concept_report import NAMES, early_arl, fmt, median, ratio_ci, survivors  # noqa: E402


def check_refs(args: argparse.Namespace) -> list[str]:
    lines = ["| p | target | references | pooled / target | per reference: lowest, median, "
             "highest / target | within ±30 % | log-sd | slope of log ARL0 on z | residual "
             "log-sd | of it Poisson |", "|---|---|---|---|---|---|---|---|---|---|"]
    detail = []
    for p, target in [(0.10, 2_000), (0.25, 2_000), (0.10, 10_000), (0.25, 10_000)]:
        n = int(args.factor * target)
        zs, arls, counts = [], [], []
        for r in range(args.refs):
            rng = np.random.default_rng(50_000 + r)
            ref = (rng.random(args.ref_size) < p).astype(float)
            det = concept_detector(ref, target, seed=r, down_share=args.down_share)
            live = ConceptCUSUM([CUSUM(mean=d.mean, scale=d.scale, threshold=d.h, k=d.k,
                                       threshold_down=d.h_down)
                                 for d in det.detectors])
            a = sum(len(live.update((rng.random(min(1_000_000, n - i)) < p).astype(float)))
                    for i in range(0, n, 1_000_000))
            zs.append((ref.mean() - p) / math.sqrt(p * (1 - p) / args.ref_size))
            arls.append(n / max(a, 1))
            counts.append(max(a, 1))
        z, la, v = np.array(zs), np.log(arls), np.array(arls) / target
        slope, icept = np.polyfit(z, la, 1)
        resid = la - (slope * z + icept)
        lines.append(f"| {p:.2f} | {target:,} | {args.refs} × {n:,} events | "
                     f"{args.refs * n / sum(counts) / target:.3f} | {v.min():.2f}, "
                     f"{np.median(v):.2f}, {v.max():.2f} | {np.mean(np.abs(v - 1) <= 0.3):.0%} "
                     f"| {la.std():.3f} | {slope:.3f} | {resid.std():.3f} | "
                     f"{np.mean(1 / np.sqrt(counts)):.3f} |")
        order = np.argsort(z)
        detail.append(f"- p={p:.2f}/{target:,} (z: ARL0 / target): " + ", ".join(
            f"{z[i]:+.2f}: {v[i]:.2f}" for i in order))
    return [*lines, "", *detail, ""]


def check_peers(args: argparse.Namespace) -> list[str]:
    res = json.loads(Path(args.from_).read_text())
    peers = {pe.name: pe for pe in _peers()}
    rng = np.random.default_rng(args.seed)
    lines = [f"From `{Path(args.from_).name}`; {args.runs} runs per row, {args.pre:,} clean "
             f"events then the drop, censored at {args.cap:,}.", "",
             "| p | target | drop | peer (parameter) | bench: survivors, median | here: "
             "survivors, median (quartiles) | drop 0: survivors, median first alarm "
             "(quartiles) |", "|---|---|---|---|---|---|---|"]
    for p_s, t_s, drop_s, name in zip(*[iter(args.cell)] * 4, strict=True):
        p, target, drop = float(p_s), float(t_s), float(drop_s)
        cell = next(c for c in res["errors"]["cells"]
                    if abs(c["p"] - p) < 1e-9 and c["target"] == target)
        value = cell["peers"][name]["value"]
        bench = survivors(next(d for k, d in cell["delays"].items()
                               if abs(float(k) - drop) < 1e-9)[name])
        row = []
        for d in (drop, 0.0):
            out = []
            for _ in range(args.runs):
                s = np.concatenate([rng.random(args.pre) < p,
                                    rng.random(args.cap) < p + d]).astype(np.int64).tolist()
                hits = count_alarms(lambda pe=peers[name], v=value: pe.make(v), s, stop=1)
                out.append(delay_of(np.array(hits, dtype=np.int64), args.pre))
            sv = survivors(out)
            # censored runs are infinite: quantiles without interpolation
            q = np.quantile(sv, [0.25, 0.5, 0.75], method="nearest") if sv.size \
                else [math.nan] * 3
            row.append(f"{sv.size} of {args.runs}, {fmt(q[1])} ({fmt(q[0])}–{fmt(q[2])})")
        lines.append(f"| {p:.2f} | {target:,.0f} | {drop:.2f} | {name} ({value:.3g}) | "
                     f"{bench.size}, {np.median(bench):.0f} | {row[0]} | {row[1]} |")
    return [*lines, ""]


def check_survivors(args: argparse.Namespace) -> list[str]:
    runs = [json.loads(Path(f).read_text())["errors"]["cells"] for f in args.files]
    names = ["ours", *NAMES]
    lines = [f"From {', '.join(f'`{Path(f).name}`' for f in args.files)} (seed by seed). "
             "Median delay from a cold start → after the warm-up (survivors of each), per "
             "detector, one figure per drop; below the table: how often the cold-start "
             "median is below the warm-up one by more than 10 %.", "",
             "| seed | p | target | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    faster: dict[str, int] = {n: 0 for n in names}
    total = 0
    for s, cells in enumerate(runs, 1):
        for c in cells:
            bits = []
            for n in names:
                parts = []
                for drop in c["delays"]:
                    cold, warm = c["delays"][drop][n], c["delays_warm"][drop][n]
                    mc, mw = median(cold), median(warm)
                    faster[n] += bool(mc < 0.9 * mw)
                    parts.append(f"{fmt(mc)} ({survivors(cold).size}) → {fmt(mw)} "
                                 f"({survivors(warm).size})")
                bits.append("; ".join(parts))
            total += len(c["delays"])
            lines.append(f"| {s} | {c['p']:.2f} | {c['target']:,.0f} | " + " | ".join(bits)
                         + " |")
    lines += ["", "Drops in each cell: " + ", ".join(runs[0][0]["delays"]) + ".  Cold-start "
              "median more than 10 % below the warm-up one, of "
              f"{total} (cell, drop, seed): " + ", ".join(f"{n} {faster[n]}" for n in names),
              "", "| p | target | drop | protocol | peer | ours / peer per seed (95 % CI) | "
              "pooled over the seeds (95 % CI) | bootstrap share > 1.15 |",
              "|---|---|---|---|---|---|---|---|"]
    for p_s, t_s, drop_s, key, name in zip(*[iter(args.cell)] * 5, strict=True):
        p, target, drop = float(p_s), float(t_s), float(drop_s)
        ours: list[int] = []
        peer: list[int] = []
        per = []
        for cells in runs:
            c = next(c for c in cells if abs(c["p"] - p) < 1e-9 and c["target"] == target)
            d = next(v for k, v in c[key].items() if abs(float(k) - drop) < 1e-9)
            lo, hi = ratio_ci(d["ours"], d[name], args.boot)
            per.append(f"{median(d['ours']) / median(d[name]):.2f} ({lo:.2f}–{hi:.2f})")
            ours += d["ours"]
            peer += d[name]
        lo, hi = ratio_ci(ours, peer, args.boot)
        a, b = survivors(ours), survivors(peer)
        rng = np.random.default_rng(0)
        r = (np.median(a[rng.integers(0, a.size, (args.boot, a.size))], axis=1)
             / np.median(b[rng.integers(0, b.size, (args.boot, b.size))], axis=1))
        lines.append(f"| {p:.2f} | {target:,.0f} | {drop:.2f} | {key} | {name} | "
                     f"{' / '.join(per)} | {median(ours) / median(peer):.2f} ({lo:.2f}–"
                     f"{hi:.2f}) | {np.mean(r > 1.15):.0%} |")
    return [*lines, ""]


def check_arl(args: argparse.Namespace) -> list[str]:
    """A peer's long-run ARL0 at the parameter a results file tuned it to, on ``--factor``
    × target null events (the bench's own check stream is 40 targets: ~40 alarms, ±16 %
    of Poisson noise on the figure that decides whether the peer is within ±30 %)."""
    peers = {pe.name: pe for pe in _peers()}
    lines = ["| file | p | target | peer (parameter) | ARL0 in the file | here: events, "
             "alarms, ARL0 (95 % CI if Poisson) | median cycle | cycles ≤ `--pre` | events "
             "in longer cycles (incl. the open one at the end) |", "|---|---|---|---|---|---|---|---|---|"]
    for f in args.files:
        cells = json.loads(Path(f).read_text())["errors"]["cells"]
        rng = np.random.default_rng(args.seed)
        for p_s, t_s, name in zip(*[iter(args.cell)] * 3, strict=True):
            p, target = float(p_s), float(t_s)
            c = next(c for c in cells if abs(c["p"] - p) < 1e-9 and c["target"] == target)
            value = c["peers"][name]["value"]
            n = int(args.factor * target)
            s = (rng.random(n) < p).astype(np.int64).tolist()
            pos = count_alarms(lambda pe=peers[name], v=value: pe.make(v), s)
            a = len(pos)
            cyc = np.diff(np.array([-1, *pos]))  # the completed cycles
            tail = n - 1 - (pos[-1] if pos else -1)  # the last one, still open at the end
            long_share = (cyc[cyc > args.pre].sum() + (tail if tail > args.pre else 0)) / n
            # a Poisson count's 95 % interval, as events per alarm
            lo, hi = n / (a + 1.96 * math.sqrt(a)), n / max(a - 1.96 * math.sqrt(a), 1)
            lines.append(f"| {Path(f).name} | {p:.2f} | {target:,.0f} | {name} ({value:.3g}) "
                         f"| {fmt(c['peers'][name]['arl0'])} | {n:,}, {a}, {n / max(a, 1):,.0f} "
                         f"({lo:,.0f}–{hi:,.0f}) | {fmt(float(np.median(cyc))) if a else '-'} | "
                         f"{np.mean(cyc <= args.pre) if a else 0:.0%} | {long_share:.0%} "
                         f"(the open one {tail:,}) |")
    return [*lines, ""]


def check_hazard(args: argparse.Namespace) -> list[str]:
    """Ours calibrated to other targets (``--targets``) on the cold-start protocol (with
    ``--warmup``, after that many clean events whose alarms are not counted), to
    compare with a peer at the same false-alarm hazard in the pre-change window: the share
    of runs alarming before the change (read as a constant hazard's ARL0) and the median
    delay of the rest, per drop (``--drops``), over ``--runs`` runs cycling over ``--refs``
    references of ``--ref-size`` errors at ``--p``."""
    lines = [f"p {args.p:.2f}; {args.runs} runs per row ({args.warmup:,} clean events whose "
             f"alarms are not counted, then {args.pre:,} clean events "
             f"then the drop, censored at {args.cap:,}), ours over {args.refs} references "
             f"of {args.ref_size:,} errors per target"
             + (f", shares {args.shares[0]} / {args.shares[1]}" if args.shares else "") + ".", "",
             "| ours' target | drop | runs with a false alarm before the change | pre-change "
             "ARL0 (constant hazard) | median delay of the rest |", "|---|---|---|---|---|"]
    for target in args.targets:
        rng = np.random.default_rng(args.seed)
        dets = [concept_detector((rng.random(args.ref_size) < args.p).astype(float), target,
                                 shares=args.shares, seed=r, down_share=args.down_share)
                for r in range(args.refs)]
        for drop in args.drops:
            out = []
            w = args.warmup
            for r in range(args.runs):
                s = np.concatenate([rng.random(w + args.pre) < args.p,
                                    rng.random(args.cap) < args.p + drop]).astype(float)
                hits = fresh(dets[r % len(dets)]).update(s)
                out.append(delay_of(hits[hits >= w] - w, args.pre))
            fa = sum(1 for x in out if x == -2)
            lines.append(f"| {target:,.0f} | {drop:.2f} | {fa} of {args.runs} | "
                         f"{fmt(early_arl(out, args.pre))} | {fmt(median(out))} |")
    return [*lines, ""]


def _paired_ci(ours: np.ndarray, peer: np.ndarray, boot: int) -> tuple[float, float]:
    """95 % bootstrap interval of median(ours) / median(peer) over the same runs, resampled
    together (censored runs are infinite)."""
    rng = np.random.default_rng(0)
    idx = rng.integers(0, ours.size, (boot, ours.size))
    ma, mb = np.median(ours[idx], axis=1), np.median(peer[idx], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(ma == mb, 1.0, ma / mb)
    r = np.where(np.isnan(r), np.inf, r)
    return float(np.quantile(r, 0.025)), float(np.quantile(r, 0.975))


def check_paired(args: argparse.Namespace) -> list[str]:
    """Per file (seed) and ``--cell`` (p target drop protocol peer): the protocol's ratio
    (each detector's median over its own surviving runs), the ratio on the runs both
    survived (the same streams), ours on the runs the peer survived against ours on all,
    and for the cold start ours against the peer's median after the warm-up."""
    lines = [f"From {', '.join(f'`{Path(f).name}`' for f in args.files)}. Survivors: runs "
             "without a false alarm before the change (censored runs count as never). "
             "Paired: medians over the runs both ours and the peer survived, 95 % CI from "
             "resampling those runs together; the protocol's CI resamples each detector's "
             "survivors on their own.", "",
             "| file | p | target | drop | protocol | peer | runs | survivors ours / peer / "
             "both | protocol: ours, peer, ratio (95 % CI) | paired: ours, peer, ratio "
             "(95 % CI) | ours on the peer's survivors / ours on all | cold: ours / the "
             "peer's warm-up median (95 % CI) |", "|---|---|---|---|---|---|---|---|---|---|"
             "---|---|"]
    for f in args.files:
        cells = json.loads(Path(f).read_text())["errors"]["cells"]
        for p_s, t_s, drop_s, key, name in zip(*[iter(args.cell)] * 5, strict=True):
            p, target, drop = float(p_s), float(t_s), float(drop_s)
            c = next((c for c in cells if abs(c["p"] - p) < 1e-9 and c["target"] == target),
                     None)
            d = None if c is None else next(
                (v for k, v in c[key].items() if abs(float(k) - drop) < 1e-9), None)
            if d is None:
                continue
            o = np.array([math.inf if x == -1 else x for x in d["ours"]], dtype=float)
            q = np.array([math.inf if x == -1 else x for x in d[name]], dtype=float)
            so, sq = np.array(d["ours"]) != -2, np.array(d[name]) != -2
            both = so & sq
            lo, hi = ratio_ci(d["ours"], d[name], args.boot)
            mo, mq = median(d["ours"]), median(d[name])
            po, pq = float(np.median(o[both])), float(np.median(q[both]))
            plo, phi = _paired_ci(o[both], q[both], args.boot)
            on_peer = float(np.median(o[both])) / mo
            cold = "-"
            if key == "delays" and "delays_warm" in c:
                w = next(v for k, v in c["delays_warm"].items()
                         if abs(float(k) - drop) < 1e-9)[name]
                wlo, whi = ratio_ci(d["ours"], w, args.boot)
                cold = (f"{fmt(mo)} / {fmt(median(w))} ({survivors(w).size}) = "
                        f"{mo / median(w):.2f} ({wlo:.2f}–{whi:.2f})")
            lines.append(
                f"| {Path(f).name} | {p:.2f} | {target:,.0f} | {drop:.2f} | {key} | {name} | "
                f"{len(o)} | {so.sum()} / {sq.sum()} / {both.sum()} | {fmt(mo)}, {fmt(mq)}, "
                f"{mo / mq:.2f} ({lo:.2f}–{hi:.2f}) | {fmt(po)}, {fmt(pq)}, {po / pq:.2f} "
                f"({plo:.2f}–{phi:.2f}) | {on_peer:.2f} | {cold} |")
    return [*lines, ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("check", choices=["refs", "peers", "survivors", "paired", "arl", "hazard"])
    ap.add_argument("--refs", type=int, default=40)
    ap.add_argument("--down-share", type=lambda v: None if v == "none" else float(v),
                    default=CONCEPT_DOWN_SHARE,
                    help="the lower sums' share of each CUSUM's budget (none: one threshold)")
    ap.add_argument("--ref-size", type=int, default=20_000)
    ap.add_argument("--factor", type=float, default=400.0, help="null events, in targets")
    ap.add_argument("--from", dest="from_", default=str(RESULTS / "concept-seed2.json"))
    ap.add_argument("--cell", nargs="+", default=[],
                    help="peers: p target drop peer; survivors: p target drop delays|"
                         "delays_warm peer; repeated")
    ap.add_argument("--files", nargs="+", default=[str(RESULTS / f"concept-seed{s}.json")
                                                   for s in (1, 2)])
    ap.add_argument("--boot", type=int, default=4_000)
    ap.add_argument("--runs", type=int, default=2_000)
    ap.add_argument("--pre", type=int, default=1_000)
    ap.add_argument("--cap", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--p", type=float, default=0.10, help="hazard: the baseline error rate")
    ap.add_argument("--targets", type=float, nargs="+", default=[250, 500, 1_000],
                    help="hazard: ours' targets")
    ap.add_argument("--drops", type=float, nargs="+", default=[0.02, 0.05], help="hazard")
    ap.add_argument("--warmup", type=int, default=0, help="hazard: uncounted clean events first")
    ap.add_argument("--shares", type=float, nargs=2, default=None,
                    help="hazard: the two CUSUMs' shares of the budget (default: production's)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cmd = " ".join(sys.argv[1:])
    text = "\n".join([f"# bench_concept checks: {args.check}", "",
                      f"`PYTHONPATH=$PWD .venv/bin/python bench/concept_checks.py {cmd}`", "",
                      *{"refs": check_refs, "peers": check_peers,
                        "survivors": check_survivors,
                        "paired": check_paired, "arl": check_arl,
                        "hazard": check_hazard}[args.check](args)])
    out = args.out or RESULTS / f"concept-checks-{args.check}.md"
    out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
