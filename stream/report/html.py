"""The HTML page of a back-test report: one self-contained file (inline SVG, CSS and a
few lines of script to sort the summary table; nothing is fetched when it is viewed)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np

from detectors.profile import CategoricalProfile, NumericProfile, Profile
from stream.engine.labelbook import QUALITY_FEATURE
from stream.report.attribution_html import attribution_card, quality_episodes
from stream.report.collect import INCOMPLETE, RATIOS, PeakWindow, ReportRecorder
from stream.report.inject import KINDS, ColumnWhatIf, combine
from stream.report.svg import PALETTE, category_bars, histogram, line_chart, timeline

#: score axes stop here (the caption says so): one huge score would flatten the rest
SCORE_CAP = 10.0
#: peak windows drawn per column (the most severe episodes)
PEAKS_SHOWN = 3

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;
background:#f6f8fa}
main{max-width:1180px;margin:0 auto;padding:18px 24px 60px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid
#d0d7de;padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
.meta{color:#57606a}.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;
padding:10px 12px;margin:10px 0}
.grid{display:flex;flex-wrap:wrap;gap:10px}.grid>figure{margin:0}
figcaption{color:#57606a;font-size:12px;max-width:560px}
table{border-collapse:collapse;background:#fff;margin:6px 0;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left}td.n{text-align:right}
th{background:#eef1f4}th.sortable{cursor:pointer}th.sortable:after{content:" \\2195";color:#8c959f}
tr.drift td:first-child{border-left:3px solid #e4572e}
svg text{font:11px system-ui,sans-serif;fill:#3d444d}svg text.t{font-weight:600;fill:#1f2328}
.muted{color:#8c959f}.warn{color:#9a6700}
"""

SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.classList.add("sortable");
    th.addEventListener("click", function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var desc = th.getAttribute("data-dir") !== "desc";
      th.setAttribute("data-dir", desc ? "desc" : "asc");
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute("data-v") || a.cells[col].textContent;
        var y = b.cells[col].getAttribute("data-v") || b.cells[col].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return desc ? -c : c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


@dataclass
class WhatIfModel:
    """The what-if results of one model, with where they were injected."""

    at: int
    events_before: int
    events: int
    columns: list[ColumnWhatIf]


def _n(v: float | int | None, digits: int = 3) -> str:
    if v is None:
        return "&ndash;"
    if isinstance(v, int):
        return f"{v:,}"
    if not math.isfinite(v):
        return "inf"
    return f"{v:.{digits}g}"


def _td(v: Any, sort: float | None = None, num: bool = False) -> str:
    attr = "" if sort is None else f' data-v="{sort:.6g}"'
    cls = ' class="n"' if num else ""
    return f"<td{cls}{attr}>{v}</td>"


def render(report: Mapping[str, Any], recorder: ReportRecorder,
           profiles: Mapping[str, Mapping[str, Profile]], *, source: str,
           false_alarm_events: float,
           whatif: Mapping[str, Sequence[WhatIfModel]] | None = None,
           within: int = 0, kinds: Mapping[str, Sequence[float]] | None = None,
           note: str | None = None) -> str:
    """The whole page (``note``: a warning printed under the title)."""
    lines = int(report["input_lines"])
    x_range = (0.0, float(max(lines, 1)))
    eps_by_col: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for ep in report["episodes"]:
        eps_by_col.setdefault((ep["model"], ep["feature"]), []).append(ep)
    invalid = report["events_invalid"]
    out = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
           "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">",
           f"<title>streamdrift report: {escape(source)}</title><style>{CSS}</style>",
           "</head><body><main>",
           "<h1>streamdrift back-test report</h1>",
           f"<p class=\"meta\">{escape(source)}: {lines:,} lines, "
           f"{int(report['events_processed']):,} events processed, "
           f"{sum(invalid.values()):,} invalid"
           + (" (" + ", ".join(f"{escape(k)} {v:,}" for k, v in sorted(invalid.items())) + ")"
              if invalid else "")
           + f"; {len(report['episodes'])} drift episodes; false-alarm budget: one per "
           f"{false_alarm_events:,.0f} events per model; replayed in "
           f"{report.get('seconds', 0):.1f} s.</p>"]
    if note:
        out.append(f"<p class=\"warn\">{escape(note)}</p>")
    out += _summary(report, recorder, eps_by_col)
    for model, mrep in report["models"].items():
        out += _model(model, mrep, recorder, profiles[model], eps_by_col, x_range)
        if whatif and model in whatif:
            out += _whatif(model, whatif[model], eps_by_col, within, kinds or {},
                           float(mrep["events"]), false_alarm_events)
    out.append(f"<script>{SCRIPT}</script></main></body></html>")
    return "\n".join(out)


def _max_row(recorder: ReportRecorder, model: str, name: str) -> float:
    block = recorder.series[model]
    if name not in block.names:
        return 0.0
    row = block.row(name)
    return float(row.max()) if row.size else 0.0


def _summary(report: Mapping[str, Any], recorder: ReportRecorder,
             eps_by_col: Mapping[tuple[str, str], list[dict[str, Any]]]) -> list[str]:
    out = ["<h2 id=\"summary\">Summary</h2>",
           "<p class=\"meta\">Every column, the most severe first (severity: the highest "
           "peak score of its episodes; score = statistic / threshold, 1 is the alarm "
           "level). Click a header to sort.</p>",
           "<table class=\"sortable\" id=\"summary-table\"><thead><tr><th>model</th>"
           "<th>column</th><th>role</th><th>type</th><th>episodes</th><th>severity</th>"
           "<th>first episode at</th><th>detectors</th><th>max missing ratio</th>"
           "<th>PSI now</th></tr></thead><tbody>"]
    rows = []
    for model, mrep in report["models"].items():
        for col, c in mrep["features"].items():
            eps = eps_by_col.get((model, col), [])
            sev = max((float(e["peak_score"]) for e in eps), default=0.0)
            first = min((e["open_index"] for e in eps if e["open_index"] is not None),
                        default=None)
            dets = sorted({d for e in eps for d in e["detectors"]})
            rows.append((sev, model, col, c, len(eps), first, dets))
    rows.sort(key=lambda r: (-r[0], r[1], r[2]))
    for sev, model, col, c, n, first, dets in rows:
        miss = _max_row(recorder, model, f"{col}/missing_ratio")
        psi = float(c.get("distances", {}).get("psi", 0.0))
        cls = ' class="drift"' if n else ""
        out.append(f"<tr{cls}>"
                   f"<td><a href=\"#m-{escape(model)}\">{escape(model)}</a></td>"
                   f"<td><a href=\"#c-{escape(model)}-{escape(col)}\">{escape(col)}</a></td>"
                   f"<td>{escape(c['role'])}</td><td>{escape(c['type'])}</td>"
                   + _td(n, n, True) + _td(_n(sev), sev, True)
                   + _td(_n(first), -1 if first is None else first, True)
                   + _td(escape(", ".join(dets)) or "<span class=muted>none</span>")
                   + _td(_n(miss), miss, True) + _td(_n(psi), psi, True) + "</tr>")
    out.append("</tbody></table>")
    return out


def _model(model: str, mrep: Mapping[str, Any], recorder: ReportRecorder,
           profiles: Mapping[str, Profile],
           eps_by_col: Mapping[tuple[str, str], list[dict[str, Any]]],
           x_range: tuple[float, float]) -> list[str]:
    cols = list(mrep["features"])
    q = mrep.get("data_quality", {})
    out = [f"<h2 id=\"m-{escape(model)}\">Model {escape(model)}</h2>",
           f"<p class=\"meta\">{int(mrep['events']):,} events; "
           f"{int(q.get('incomplete_events', 0)):,} incomplete (most columns missing); "
           f"{int(mrep.get('invalid_timestamps', 0)):,} invalid timestamps; baseline "
           f"{escape(str(mrep.get('baseline_id', '')))}.</p>"]
    rows = []
    for col in cols:
        spans = [(float(e["open_index"] or 0), float(x_range[1] if e["close_index"] is None
                                                     else e["close_index"]),
                  float(e["peak_score"])) for e in eps_by_col.get((model, col), [])]
        rows.append((col, spans))
    model_level = eps_by_col.get((model, ""), [])
    if model_level:  # the model-level test of incomplete events
        rows.append(("(incomplete events)", [
            (float(e["open_index"] or 0), float(x_range[1] if e["close_index"] is None
                                                else e["close_index"]),
             float(e["peak_score"])) for e in model_level]))
    quality = eps_by_col.get((model, QUALITY_FEATURE), [])
    if quality:  # model-quality episodes: concept drift through the labels (docs/labels.md)
        rows.append((f"{QUALITY_FEATURE} model quality", [
            (float(e["open_index"] or 0), float(x_range[1] if e["close_index"] is None
                                                else e["close_index"]),
             float(e["peak_score"])) for e in quality]))
    out.append("<div class=\"card\">" + timeline(rows, x_range, title="Drift episodes over "
                                                  "the input (line index)") + "</div>")
    out += quality_episodes(model, quality)
    out += _quality(model, cols, mrep, recorder, profiles, x_range)
    out += attribution_card(model, mrep, eps_by_col)  # attributions, root cause (#16)
    block = recorder.series[model]
    xs, ys = block.points()
    order = sorted(cols, key=lambda c: -max((float(e["peak_score"]) for e in
                                             eps_by_col.get((model, c), [])), default=-1.0))
    for col in order:
        c = mrep["features"][col]
        eps = eps_by_col.get((model, col), [])
        lines: list[tuple[str, list[float], str]] = []
        for i, kind in enumerate(c["detectors"]):
            name = f"{col}/{kind}"
            if name in block.names:
                lines.append((kind, ys[block.names.index(name)].tolist(),
                              PALETTE[i % len(PALETTE)]))
        shaded = [(float(e["open_index"] or 0), float(x_range[1] if e["close_index"] is None
                                                      else e["close_index"])) for e in eps]
        top = float(max((max(v) for _, v, _ in lines if v), default=0.0))
        chart = line_chart(xs.tolist(), lines, threshold=1.0, spans=shaded, x_range=x_range,
                           cap=SCORE_CAP, width=1100, height=190,
                           title=f"{col}: score of each detector (statistic / threshold)")
        note = (f" Scores above {SCORE_CAP:g} are drawn at {SCORE_CAP:g} (highest "
                f"{_n(top)}).") if top > SCORE_CAP else ""
        out.append(f"<div class=\"card\" id=\"c-{escape(model)}-{escape(col)}\">"
                   f"<h3>{escape(col)} <span class=\"muted\">({escape(c['role'])}, "
                   f"{escape(c['type'])}; {len(eps)} episode(s))</span></h3>{chart}"
                   f"<figcaption>Worst score of each interval ({block.stride} batch(es) per "
                   f"point); episodes shaded.{note}</figcaption>")
        out += _peaks(model, col, recorder, profiles[col])
        out.append("</div>")
    return out


def _quality(model: str, cols: Sequence[str], mrep: Mapping[str, Any],
             recorder: ReportRecorder, profiles: Mapping[str, Profile],
             x_range: tuple[float, float]) -> list[str]:
    block = recorder.series[model]
    xs, ys = block.points()
    out = ["<h3>Data quality</h3>", "<table><thead><tr><th>column</th><th>reference "
           "missing</th><th>max missing</th><th>max invalid</th><th>max out of range / "
           "unseen</th><th>missing now</th></tr></thead><tbody>"]
    lines: list[tuple[str, list[float], str]] = []
    for col in cols:
        kind = mrep["features"][col]["type"]
        flag = RATIOS[kind][2]
        vals = {r: _max_row(recorder, model, f"{col}/{r}") for r in RATIOS[kind]}
        ref = profiles[col].missing_rate
        now = float(mrep["features"][col].get("missing_ratio", 0.0))
        out.append(f"<tr><td>{escape(col)}</td>" + _td(_n(ref), ref, True)
                   + _td(_n(vals["missing_ratio"]), vals["missing_ratio"], True)
                   + _td(_n(vals["invalid_ratio"]), vals["invalid_ratio"], True)
                   + _td(_n(vals[flag]), vals[flag], True) + _td(_n(now), now, True) + "</tr>")
        for r in RATIOS[kind]:
            if vals[r] > 0:
                name = f"{col}/{r}"
                lines.append((f"{col} {r.removesuffix('_ratio').replace('_', ' ')}",
                              ys[block.names.index(name)].tolist(),
                              PALETTE[len(lines) % len(PALETTE)]))
    inc = f"/{INCOMPLETE}"
    if inc in block.names and _max_row(recorder, model, inc) > 0:
        lines.append(("incomplete events", ys[block.names.index(inc)].tolist(), "#000"))
    out.append("</tbody></table>")
    if lines:
        out.append("<div class=\"card\">" + line_chart(
            xs.tolist(), lines, x_range=x_range, width=1100, height=170,
            title="Data-quality ratios in the recent window") + "</div>")
    else:
        out.append("<p class=\"muted\">No missing, invalid, out-of-range or unseen values in "
                   "any recent window.</p>")
    return out


def _peaks(model: str, col: str, recorder: ReportRecorder, profile: Profile) -> list[str]:
    peaks = sorted(((k, p) for k, p in recorder.peaks.items() if k[0] == model and k[1] == col),
                   key=lambda kp: -kp[1].score)[:PEAKS_SHOWN]
    if not peaks:
        return []
    out = ["<div class=\"grid\">"]
    for (_, _, opened), p in sorted(peaks, key=lambda kp: kp[1].index):
        out.append("<figure>" + _window_chart(col, opened, p, profile) + "</figure>")
    out.append("</div>")
    return out


def _window_chart(col: str, opened: int | None, p: PeakWindow, profile: Profile) -> str:
    total = float(p.counts.sum())
    title = (f"episode from {opened:,}: window at {p.index:,}" if opened is not None
             else f"window at {p.index:,}")
    ratios = ", ".join(f"{k.removesuffix('_ratio').replace('_', ' ')} {v:.3g}"
                       for k, v in p.ratios.items())
    cap = (f"<figcaption>Peak score {p.score:.3g} ({escape(p.detector)}); recent window "
           f"{int(total):,} values; {escape(ratios)}.</figcaption>")
    if total <= 0:
        return f"<p class=\"muted\">{escape(title)}: the window holds no value.</p>{cap}"
    recent = (p.counts / total).tolist()
    ref = np.asarray(p.probs).tolist()
    if isinstance(profile, CategoricalProfile):
        labels = [*profile.categories, "(other)"][: len(ref)]
        return category_bars(labels, ref, recent, title=title) + cap
    assert isinstance(profile, NumericProfile)
    inner = profile.bin_edges.tolist()
    lo, hi = float(profile.min), float(profile.max)
    span = (hi - lo) or 1.0
    floor = span / (4 * len(ref))
    edges = [min(lo, inner[0] - floor) if inner else lo - floor]
    for e in inner:
        edges.append(max(float(e), edges[-1] + floor))
    edges.append(max(hi, edges[-1] + floor))
    return histogram(edges, ref, recent, title=title) + cap


def _whatif(model: str, ws: Sequence[WhatIfModel],
            eps_by_col: Mapping[tuple[str, str], list[dict[str, Any]]], within: int,
            kinds: Mapping[str, Sequence[float]], events: float,
            false_alarm_events: float) -> list[str]:
    expected = events / false_alarm_events
    many = len(ws) > 1
    where = ", ".join(f"{w.at:,} (after {w.events_before:,} events of the model)" for w in ws)
    horizon = max(w.events for w in ws)
    out = [f"<h3 id=\"w-{escape(model)}\">What if: injected drifts</h3>",
           f"<p class=\"meta\">Drifts injected into this history from line{'s' if many else ''} "
           f"{where}, each over the next {horizon:,} events at most, with the configured "
           f"thresholds (one false alarm per {false_alarm_events:,.0f} events). Delay: events "
           f"of the model from the injection to the column's first alarm; &ndash; means not "
           f"within them, or not before the column's own alarm without injection (last "
           f"column)."
           + (" Over several positions: the median delay (a position where the drift was "
              "not seen counts as infinitely slow), then the fastest and slowest and in how "
              "many positions it was seen." if many else "") + "</p>",
           "<table class=\"sortable\"><thead><tr><th>column</th>"]
    shown = [k for k in KINDS if k in kinds]
    unit = {"mean": "mean shift (sd)", "variance": "sd factor", "share": "share gained",
            "missing": "missing rise"}
    med = "median " if many else ""
    out += [f"<th>smallest {unit[k]} seen within {within:,}{' (median)' if many else ''}</th>"
            for k in shown]
    out.append("<th>episodes on the untouched history</th><th>alarm without injection"
               "</th></tr></thead><tbody>")
    combined = combine([w.columns for w in ws])
    #: (column, kind, magnitude) -> the detector that alarmed first (one position only)
    dets = {(cw.column, sc.kind, m): d or "" for cw in ws[0].columns for sc in cw.scenarios
            for m, _, d in sc.delays}
    for cw in ws[0].columns:
        by = {c.kind: c for c in combined if c.column == cw.column}
        cells = []
        for k in shown:
            c = by.get(k)
            if c is None:
                cells.append("<td class=\"muted\">n/a</td>")
                continue
            m = c.smallest_within(within)
            extra = f" ({escape(c.target)})" if c.target else ""
            cells.append(_td(("none" if m is None else f"{m:g}") + extra,
                             math.inf if m is None else m, True))
        n_eps = len(eps_by_col.get((model, cw.column), []))
        ctrl, drifting = [], False
        for w in ws:
            same = next((c for c in w.columns if c.column == cw.column), None)
            if same is None:
                continue
            drifting |= same.drifting
            if same.control is not None:
                ctrl.append(f"after {same.control[0]:,} ({same.control[1]})"
                            + (f" from {w.at:,}" if many else ""))
        text = "; ".join(ctrl) or "no"
        if drifting:
            text += "; <span class=\"warn\">drifting at an injection point</span>"
        out.append(f"<tr><td>{escape(cw.column)}</td>{''.join(cells)}"
                   + _td(n_eps, n_eps, True) + f"<td>{text}</td></tr>")
    out.append(f"</tbody></table><p class=\"meta\">Expected false alarms on this history at "
               f"the configured rate: {expected:.2g} for the whole model.</p>")
    for k in shown:
        mags = sorted(kinds[k])
        out.append(f"<table><thead><tr><th>{escape(unit[k])}: {med}delay</th>"
                   + "".join(f"<th>{m:g}</th>" for m in mags) + "</tr></thead><tbody>")
        for c in combined:
            if c.kind != k:
                continue
            rows = {r[0]: r for r in c.rows}
            cells = []
            for m in mags:
                _, median, lo, hi, seen, n = rows.get(m, (m, None, None, None, 0, 0))
                note = ""
                if many and seen:
                    note = (f" <span class=\"muted\">{_n(lo)}&ndash;{_n(hi)}, "
                            f"{seen}/{n}</span>")
                det = ""
                if not many and median is not None:
                    det = f" <span class=\"muted\">{escape(dets.get((c.column, k, m), ''))}</span>"
                cells.append(_td(_n(median) + det + note, None, True))
            out.append(f"<tr><td>{escape(c.column)}"
                       + (f" ({escape(c.target)})" if c.target else "")
                       + f"</td>{''.join(cells)}</tr>")
        out.append("</tbody></table>")
    return out
