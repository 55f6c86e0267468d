"""Ours before and after, per cell: two ``bench_concept.py`` results of the same seed and
options (the second typically ``--peers-from`` the first, so the peers and the streams are
the same draws), side by side against the goal (median delay ≤ 1.15× the best peer whose
ARL0 is within ±30 % of the target).

Three criteria, as in docs/benchmarks.md: from a cold start against the best peer whose
long-run ARL0 is in the band; after the warm-up against the same; after the warm-up
against the best peer whose false alarms in the pre-change window read as an ARL0 in the
band.  Run from the repository root::

    PYTHONPATH=$PWD .venv/bin/python bench/concept_compare.py \\
        OLD-seed1.json NEW-seed1.json OLD-seed2.json NEW-seed2.json

With ``--band FILE`` (``concept_band.py measure``) the two long-run criteria put a peer
in band by ``concept_report.band_rule`` (its pooled null ARL0 within ±30 % at L and 4L).

Prints a Markdown table (one row per cell, seeds side by side) and the counts met, then
ours after / before per cell and protocol with a paired 95 % CI (``--boot`` resamples of
the runs, jointly: both saw the same stream in a run, when the second file is
``--peers-from`` the first).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from concept_report import NAMES, _ci, _in_band, median, ratio  # noqa: E402
from concept_synth_pool import paired_ci  # noqa: E402

CRITERIA = [("delays", False, "cold, long-run ARL0"), ("delays_warm", False,
            "warm-up, long-run ARL0"), ("delays_warm", True, "warm-up, pre-change ARL0")]


def best_in_band(args: argparse.Namespace, cell: dict[str, Any], key: str, window: bool,
                 drop: str) -> tuple[str | None, float]:
    d = cell[key][drop]
    fair = [n for n in NAMES if _in_band(args, cell, key, n, window)]
    if not fair:
        return None, math.nan
    best = min(fair, key=lambda n: median(d[n]))
    return best, median(d[best])


def rows(old: dict[str, Any], new: dict[str, Any], pre: int,
         band: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per cell and drop; ``band``: horizon measurements (``concept_band.py``), the
    long-run criteria then by ``concept_report.band_rule`` instead of one null stream."""
    args = argparse.Namespace(pre=pre, band=band)
    out = []
    for co, cn in zip(old["errors"]["cells"], new["errors"]["cells"], strict=True):
        assert (co["p"], co["target"]) == (cn["p"], cn["target"])
        for drop in cn["delays"]:
            row: dict[str, Any] = {"p": cn["p"], "target": cn["target"], "drop": float(drop),
                                   "arl0": (co["ours"]["arl0"], cn["ours"]["arl0"])}
            for key, window, label in CRITERIA:
                name, peer = best_in_band(args, cn, key, window, drop)
                before, after = median(co[key][drop]["ours"]), median(cn[key][drop]["ours"])
                row[label] = (before, after, name, peer,
                              ratio(before, peer) if name else math.nan,
                              ratio(after, peer) if name else math.nan)
            out.append(row)
    return out


def _r(x: float) -> str:
    if math.isnan(x):
        return "-"
    return f"**{x:.2f}**" if x > 1.15 else f"{x:.2f}"


def table(seeds: list[list[dict[str, Any]]]) -> list[str]:
    lines = ["| p | target | drop | ours ARL0 before → after (seed 1 / 2) | "
             + " | ".join(f"{lab}: ours before → after; best peer; ratio before → after "
                          "(seed 1 / 2)" for _, _, lab in CRITERIA) + " |",
             "|---|---|---|---|" + "---|" * len(CRITERIA)]
    met = {lab: [0, 0, 0] for _, _, lab in CRITERIA}  # before, after, cells with a peer
    for cells in zip(*seeds, strict=True):
        c0 = cells[0]
        arl = " / ".join(f"{r['arl0'][0]:,.0f} → {r['arl0'][1]:,.0f}" for r in cells)
        parts = []
        for _, _, lab in CRITERIA:
            bits, peers, rats = [], [], []
            for r in cells:
                before, after, name, peer, rb, ra = r[lab]
                bits.append(f"{before:.0f} → {after:.0f}")
                peers.append(f"{name} {peer:.0f}" if name else "none")
                rats.append(f"{_r(rb)} → {_r(ra)}" if name else "-")
                if name:
                    met[lab][0] += rb <= 1.15
                    met[lab][1] += ra <= 1.15
                    met[lab][2] += 1
            parts.append(f"{' / '.join(bits)}; {' / '.join(peers)}; {' / '.join(rats)}")
        lines.append(f"| {c0['p']:.2f} | {c0['target']:,.0f} | {c0['drop']:.2f} | {arl} | "
                     + " | ".join(parts) + " |")
    lines.append("")
    lines += [f"- {lab}: ≤ 1.15 in {m[0]} of {m[2]} (cell, seed) pairs before, {m[1]} of "
              f"{m[2]} after" for lab, m in met.items()]
    return lines


def paired_table(pairs: list[tuple[dict[str, Any], dict[str, Any]]], boot: int) -> list[str]:
    """Ours after / before per cell and protocol, seeds side by side: each median over the
    runs it survived, the 95 % CI from resampling the runs jointly (paired)."""
    protocols = [("delays", "cold start"), ("delays_warm", "after the warm-up")]
    lines = ["| p | target | drop | " + " | ".join(
                 f"{lab}: ours after / before (paired 95 % CI), seed "
                 + " / ".join(str(i + 1) for i in range(len(pairs))) for _, lab in protocols)
             + " |", "|---|---|---|" + "---|" * len(protocols)]
    first = pairs[0][1]["errors"]["cells"]
    for i, cell in enumerate(first):
        for drop in cell["delays"]:
            bits = []
            for key, _ in protocols:
                seeds = []
                for old, new in pairs:
                    co, cn = old["errors"]["cells"][i], new["errors"]["cells"][i]
                    assert (co["p"], co["target"]) == (cn["p"], cn["target"])
                    a, b = cn[key][drop]["ours"], co[key][drop]["ours"]
                    seeds.append(f"{ratio(median(a), median(b)):.2f} "
                                 f"({_ci(*paired_ci(a, b, boot))})")
                bits.append(" / ".join(seeds))
            lines.append(f"| {cell['p']:.2f} | {cell['target']:,.0f} | {float(drop):.2f} | "
                         + " | ".join(bits) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path, help="OLD NEW pairs, one per seed")
    ap.add_argument("--pre", type=int, default=1_000)
    ap.add_argument("--band", type=Path, default=None,
                    help="horizon measurements (bench/concept_band.py measure): a peer is in "
                         "band by its pooled null ARL0 at L and 4L, not by one stream of L")
    ap.add_argument("--boot", type=int, default=2_000,
                    help="bootstrap resamples for the paired after / before intervals")
    args = ap.parse_args()
    if len(args.files) % 2:
        ap.error("give OLD NEW pairs")
    pairs = [(json.loads(a.read_text()), json.loads(b.read_text()))
             for a, b in zip(args.files[::2], args.files[1::2], strict=True)]
    band = json.loads(args.band.read_text()) if args.band else None
    seeds = [rows(old, new, args.pre, band) for old, new in pairs]
    print("\n".join(table(seeds) + [""] + paired_table(pairs, args.boot)))


if __name__ == "__main__":
    main()
