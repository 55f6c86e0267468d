"""The metrics contract of docs/metrics.md, and a light PromQL scanner to check queries
against it (metric names, label names used in selectors, enumerated label values).

This is not a PromQL parser: it strips strings, label matchers, ranges and grouping
clauses, then treats every remaining identifier that is not a function call or keyword as a
metric name. That is exact enough for the expressions of our rules and dashboards, and the
live test additionally runs every query against a real Prometheus.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import REPO

METRICS_MD = REPO / "docs" / "metrics.md"

#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})

_KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan", "atan2",
    # aggregation operators, also when written `sum by (...) (...)`
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group",
})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")')
_SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}")
_IDENT = re.compile(r"[a-zA-Z_:][\w:]*")


@dataclass
class Metric:
    name: str
    type: str
    labels: frozenset[str]
    series: frozenset[str] = field(default_factory=frozenset)  # exposed series names


@dataclass
class Contract:
    metrics: dict[str, Metric]
    #: label -> allowed values, where docs/metrics.md enumerates them
    label_values: dict[str, frozenset[str]]

    def series_names(self) -> dict[str, Metric]:
        """Every exposed series name (histograms expand to _bucket/_sum/_count)."""
        out: dict[str, Metric] = {}
        for m in self.metrics.values():
            for s in m.series:
                out[s] = m
        return out


def load_contract(path: Path = METRICS_MD) -> Contract:
    text = path.read_text(encoding="utf-8")
    metrics: dict[str, Metric] = {}
    label_values: dict[str, frozenset[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        name = cells[0].strip("`")
        if len(cells) >= 4 and name.startswith("streamdrift_"):
            mtype = cells[1].split()[0]
            labels = frozenset(re.findall(r"[a-z_]+", cells[2])) - {"—"}
            series = {name}
            if mtype == "histogram":
                series = {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            metrics[name] = Metric(name, mtype, labels, frozenset(series))
            # "reason ∈ `a`, `b`" in the meaning column
            # (a label enumerated by several metrics, e.g. outcome: the union of the sets)
            for label, values in re.findall(r"(\w+) ∈ ((?:`\w+`,?\s*)+)", cells[3]):
                label_values[label] = label_values.get(label, frozenset()) | frozenset(
                    re.findall(r"`(\w+)`", values))
        elif len(cells) == 2:
            # the label table: | `detector` | `ks`, `adwin`, ... |
            # (a cell pointing at a metric, "see `streamdrift_...`", enumerates nothing)
            values = [v for v in re.findall(r"`(\w+)`", cells[1])
                      if not v.startswith("streamdrift_")]
            if values:
                label_values[name] = frozenset(values)
    if not metrics:
        raise ValueError(f"no metric found in {path}")
    return Contract(metrics, label_values)


def _strip(expr: str) -> str:
    s = _STRING.sub('""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r" \1 ", s)
    s = re.sub(r"\boffset\s+-?\w+", " ", s)
    s = re.sub(r"\$\{\w+(?::\w+)?\}|\$\w+", " ", s)
    s = re.sub(r"(?<![\w:])\d+(?:\.\d*)?(?:[eE][+-]?\d+)?", " ", s)
    return s


def metric_names(expr: str) -> set[str]:
    """Identifiers of `expr` that name series (not functions, keywords or labels)."""
    s = _strip(expr)
    names = set()
    for m in _IDENT.finditer(s):
        token = m.group()
        if token.lower() in _KEYWORDS:
            continue
        if s[m.end():].lstrip().startswith("("):
            continue  # function or aggregation
        names.add(token)
    return names


def selectors(expr: str) -> list[tuple[str | None, list[tuple[str, str, str]]]]:
    """(metric name or None, [(label, op, value)]) of every `name{...}` selector."""
    out = []
    for m in _SELECTOR.finditer(expr):
        matchers = [(label, op, value[1:-1]) for label, op, value in _MATCHER.findall(m[2])]
        out.append((m[1], matchers))
    return out


def check_expr(expr: str, contract: Contract, extra_names: set[str] = frozenset()) -> list[str]:
    """Problems of `expr` against the contract; `extra_names` are recording-rule names."""
    problems = []
    series = contract.series_names()
    for name in sorted(metric_names(expr)):
        if name != "up" and name not in series and name not in extra_names:
            problems.append(f"unknown metric {name!r}")
    for name, matchers in selectors(expr):
        allowed: set[str] | None = None
        if name in series:
            allowed = set(series[name].labels) | TARGET_LABELS
            if name.endswith("_bucket") and series[name].type == "histogram":
                allowed.add("le")
        elif name == "up":
            allowed = set(TARGET_LABELS)
        for label, op, value in matchers:
            if allowed is not None and label not in allowed:
                problems.append(f"{name} has no label {label!r}")
            enum = contract.label_values.get(label)
            if enum is None or "$" in value or op.startswith("!"):
                continue
            wanted = value.split("|") if op == "=~" else [value]
            if op == "=~" and not all(re.fullmatch(r"\w+", v) for v in wanted):
                continue  # a real regex, not an alternation of values
            for v in wanted:
                if v not in enum:
                    problems.append(f"{label}={v!r} is not one of {sorted(enum)}")
    return problems
