"""The attribution test and the root causes of prediction drift in the HTML report
(#16 items 3-4): one card per model that has either; and the model-quality episodes
(concept drift through the labels, #15)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any


def attribution_card(model: str, mrep: Mapping[str, Any],
                     eps_by_col: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]],
                     ) -> list[str]:
    """The card's HTML lines ([] when the model has no attribution test and no prediction
    episode with a root cause)."""
    a = mrep.get("attribution")
    rows = []
    for (m, col), eps in sorted(eps_by_col.items()):
        if m != model:
            continue
        for e in eps:
            causes = e.get("root_cause") or []
            if causes:
                text = ", ".join(f"{c['rank']}. {escape(str(c['feature']))} "
                                 f"({float(c['contribution']):.3g} = score "
                                 f"{float(c['score']):.3g} &times; importance "
                                 f"{float(c['importance']):.3g})" for c in causes)
                rows.append(f"<tr><td>{escape(col)}</td><td class=\"num\">"
                            f"{e['open_index'] if e['open_index'] is not None else '?'}"
                            f"</td><td>{text}</td></tr>")
    if a is None and not rows:
        return []
    out = [f"<div class=\"card\" id=\"a-{escape(model)}\"><h3>Attributions and root cause"
           f"</h3>"]
    if a is not None:
        out.append(f"<p>Attribution ranking (NDCG against the baseline's) of the last window: "
                   f"{float(a['ndcg']):.4f}, alarm level {float(a['level']):.4f}; "
                   f"{int(a['windows']):,} windows, {int(a['alarms'])} episode(s)"
                   f"{', drifting now' if a['active'] else ''}.</p>")
    if rows:
        out.append("<table><tr><th>prediction</th><th>opened at</th><th>root cause "
                   "(contribution = drift score &times; importance)</th></tr>"
                   + "".join(rows) + "</table>")
    out.append("</div>")
    return out


def quality_episodes(model: str, eps: Sequence[Mapping[str, Any]]) -> list[str]:
    """The card listing ``model``'s model-quality episodes (the replay report's episodes of
    column ``(labels)``, detector ``concept``; [] without any)."""
    if not eps:
        return []

    def at(v: Any) -> str:
        return f"{int(v):,}" if v is not None else "still open"

    rows = "".join(f"<tr><td class=\"num\">{at(e['open_index'])}</td><td class=\"num\">"
                   f"{at(e['close_index'])}</td><td>{escape(', '.join(e['detectors']))}</td>"
                   f"<td class=\"num\">{float(e['peak_score']):.3g}</td></tr>" for e in eps)
    return [f"<div class=\"card\" id=\"q-{escape(model)}\"><h3>Model quality (labels)</h3>"
            f"<p>{len(eps)} model-quality episode(s): the error rate of the predictions "
            f"joined with their labels left the labelled reference's (concept drift; located "
            f"at the last input line processed when the labels joined).</p><table><tr>"
            f"<th>opened at line</th><th>closed at line</th><th>detector</th>"
            f"<th>peak score</th></tr>{rows}</table></div>"]
