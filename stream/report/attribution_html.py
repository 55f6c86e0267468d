"""The attribution test and the root causes of prediction drift in the HTML report
(#16 items 3-4): one card per model that has either."""

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
