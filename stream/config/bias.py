"""The ``models[].bias`` section: bias drift of a model's predictions across facets.

.. code-block:: yaml

    bias:
      positive: {column: score, threshold: 0.5}   # or {column: decision, equals: approve}
      facets:                                     # sensitive attributes, by event path
        - {path: applicant.sex, top_k: 5}
        - age_band                                # shorthand: the path alone
      window: 20000                               # scored events in the live window
      cadence: 500                                # events between tests
      min_reference_events: 200                   # a value needs this many reference events

``positive`` may be left out when the model has binary ``labels:``: their
``score_column`` and ``threshold`` define a positive prediction.  See docs/bias.md.

>>> from stream.config import parse_config
>>> cfg = parse_config({"models": [{"name": "m", "baseline": {"reference": "r.jsonl"},
...     "predictions": [{"name": "score", "path": "p", "type": "numeric"}],
...     "bias": {"positive": {"column": "score", "threshold": 0.7},
...              "facets": ["applicant.sex"]}}]}, ".")
>>> b = cfg.models[0].bias
>>> b.positive, [(f.name, f.path, f.top_k) for f in b.facets], b.window, b.cadence
(PositiveConfig(column='score', threshold=0.7, equals=None), [('sex', ('applicant', 'sex'), 10)], 20000, 500)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from stream.config.keys import ABSENT, BAD, Bad, Ctx, KeyPath, get_key, suggest, type_name

__all__ = ["BIAS_KEYS", "BIAS_SHARE", "LABEL_MEASURES", "BiasConfig", "FacetConfig",
           "PositiveConfig", "bias_budget", "facet_detectors", "parse_bias"]

BIAS_KEYS = ("positive", "facets", "window", "cadence", "min_reference_events")
FACET_KEYS = ("name", "path", "top_k")
_EXAMPLE = ("{positive: {column: score, threshold: 0.5}, facets: [{path: applicant.sex, "
            "top_k: 5}]}")
_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: the most values one facet may monitor (series stay bounded)
MAX_TOP_K = 50
#: at most this many facets per model
MAX_FACETS = 8
#: the share of a model's false-alarm rate its bias detectors take when it has facets
BIAS_SHARE = 0.1
#: the label-based measures of each facet of a model with binary labels (stream.engine.biaslabels)
LABEL_MEASURES = ("recall", "accuracy")


@dataclass(frozen=True, slots=True)
class PositiveConfig:
    """What a positive prediction is: ``column >= threshold`` (numeric) or
    ``column == equals`` (categorical)."""

    column: str
    threshold: float | None = None
    equals: str | None = None


@dataclass(frozen=True, slots=True)
class FacetConfig:
    """One sensitive attribute."""

    name: str
    path: tuple[str, ...]
    #: values monitored (the most frequent of the reference); the rest pooled as ``other``
    top_k: int = 10


@dataclass(frozen=True, slots=True)
class BiasConfig:
    positive: PositiveConfig
    facets: tuple[FacetConfig, ...]
    window: int = 20_000
    cadence: int = 500
    min_reference_events: int = 200


def facet_detectors(model: Any) -> int:
    """Bias detectors per facet: DPPL, and with binary ``labels:`` also the recall and the
    accuracy differences (:data:`LABEL_MEASURES`) of the joined pairs."""
    labels = getattr(model, "labels", None)
    return 1 + len(LABEL_MEASURES) if getattr(labels, "task", None) == "binary" else 1


def bias_budget(model: Any) -> tuple[float, float]:
    """(factor of ``false_alarm_events`` for the model's other monitors, factor for each
    bias detector): the bias detectors take :data:`BIAS_SHARE` of the model's
    false-alarm rate, split equally over its facets and, per facet, its detectors
    (:func:`facet_detectors`).

    >>> bias_budget(None), tuple(round(x, 4) for x in bias_budget(2))
    ((1.0, 1.0), (1.1111, 20.0))
    """
    n = model if isinstance(model, int) or model is None else (
        len(model.bias.facets) * facet_detectors(model)
        if getattr(model, "bias", None) is not None else 0)
    if not n:
        return 1.0, 1.0
    return 1.0 / (1.0 - BIAS_SHARE), n / BIAS_SHARE


def parse_bias(ctx: Ctx, value: Any, path: KeyPath, columns: dict[str, Any], labels: Any,
               reference: bool) -> BiasConfig | None:
    """The model's ``bias`` section (None when absent or bad); ``columns``: name -> its
    ColumnConfig; ``labels``: the model's LabelsConfig (or None / BAD)."""
    if value is ABSENT or value is None:
        return None
    sec = ctx.section(value, path, BIAS_KEYS, _EXAMPLE)
    if sec is None:
        return None
    if not reference:
        ctx.error(path, "bias drift needs baseline.reference (the facets' baseline rates "
                        "are measured on the reference events); set baseline.reference "
                        "instead of baseline.file")
    positive = _positive(ctx, get_key(sec, "positive"), path + ("positive",), columns, labels)
    facets = _facets(ctx, get_key(sec, "facets"), path + ("facets",), columns)
    kw: dict[str, Any] = {}
    for key, lo, hi in (("window", 1000, 10_000_000), ("cadence", 50, 100_000),
                        ("min_reference_events", 30, 100_000_000)):
        if get_key(sec, key) is not ABSENT:
            kw[key] = ctx.integer(sec[key], path + (key,), lo, hi)
    if any(isinstance(v, Bad) for v in kw.values()) or isinstance(positive, Bad) \
            or isinstance(facets, Bad):
        return None
    cfg = BiasConfig(positive, facets, **kw)
    if cfg.window % cfg.cadence or cfg.window < 2 * cfg.cadence:
        ctx.error(path + ("window",), f"must be a multiple of cadence ({cfg.cadence}) and at "
                                      f"least twice it, got {cfg.window}; e.g. window: "
                                      f"{max(2, cfg.window // cfg.cadence) * cfg.cadence}")
        return None
    return cfg


def _positive(ctx: Ctx, value: Any, path: KeyPath, columns: dict[str, Any],
              labels: Any) -> PositiveConfig | Bad:
    if value is ABSENT or value is None:
        if labels is not None and not isinstance(labels, Bad) \
                and getattr(labels, "task", None) == "binary" and labels.score_column:
            return PositiveConfig(labels.score_column, float(labels.threshold))
        return ctx.error(path, "required (the model has no binary labels: to reuse): what a "
                               "positive prediction is, e.g. {column: score, threshold: 0.5} "
                               "or {column: decision, equals: approve}")
    sec = ctx.section(value, path, ("column", "threshold", "equals"),
                      "{column: score, threshold: 0.5}")
    if sec is None:
        return BAD
    preds = {n: c for n, c in columns.items() if getattr(c, "role", "") == "prediction"}
    raw = get_key(sec, "column")
    if raw is ABSENT or not isinstance(raw, str) or raw not in preds:
        return ctx.error(path + ("column",),
                         f"must name one of the model's prediction columns "
                         f"({', '.join(preds) or 'none configured'}), got "
                         f"{raw if raw is not ABSENT else 'nothing'!r}"
                         f"{suggest(raw, list(preds)) if isinstance(raw, str) else ''}")
    col = preds[raw]
    has_t, has_e = get_key(sec, "threshold") is not ABSENT, get_key(sec, "equals") is not ABSENT
    if col.type == "numeric":
        if has_e or not has_t:
            return ctx.error(path, f"{raw} is numeric: give threshold: (score >= threshold "
                                   f"is positive), not equals:")
        t = ctx.real(sec["threshold"], path + ("threshold",), minimum=float("-inf"),
                     strict=False)
        return t if isinstance(t, Bad) else PositiveConfig(raw, threshold=t)
    if has_t or not has_e:
        return ctx.error(path, f"{raw} is categorical: give equals: (the positive class), "
                               f"not threshold:")
    eq = sec["equals"]
    if isinstance(eq, bool) or not isinstance(eq, (str, int)):
        return ctx.error(path + ("equals",), f"must be a string or integer class, got "
                                             f"{type_name(eq)}")
    return PositiveConfig(raw, equals=str(eq))


def _facets(ctx: Ctx, value: Any, path: KeyPath, columns: dict[str, Any],
            ) -> tuple[FacetConfig, ...] | Bad:
    if value is ABSENT or value is None or value == []:
        return ctx.error(path, "required: a non-empty list of sensitive attributes by event "
                               "path, e.g. [{path: applicant.sex, top_k: 5}]")
    if not isinstance(value, list):
        return ctx.error(path, f"must be a list of facets, e.g. [{{path: applicant.sex}}]; "
                               f"got {type_name(value)}")
    if len(value) > MAX_FACETS:
        return ctx.error(path, f"at most {MAX_FACETS} facets per model, got {len(value)}")
    by_path = {c.path: c for c in columns.values() if hasattr(c, "path")}
    out: list[FacetConfig] = []
    seen: dict[str, int] = {}
    bad = False
    for i, raw in enumerate(value):
        f = _facet(ctx, raw, path + (i,), by_path)
        if f is None:
            bad = True
            continue
        if f.name in seen:
            ctx.error(path + (i, "name"), f"duplicate facet name {f.name!r} (also "
                                          f"facets[{seen[f.name]}]); names must be unique")
            bad = True
            continue
        seen[f.name] = i
        out.append(f)
    return BAD if bad else tuple(out)


def _facet(ctx: Ctx, value: Any, path: KeyPath, by_path: dict[tuple[str, ...], Any],
           ) -> FacetConfig | None:
    if isinstance(value, str):
        value = {"path": value}
    sec = ctx.section(value, path, FACET_KEYS, "{path: applicant.sex, top_k: 5}")
    if sec is None:
        return None
    field: Any = BAD
    if get_key(sec, "path") is ABSENT:
        ctx.error(path + ("path",), "required: the dotted path of a categorical event field, "
                                    "e.g. applicant.sex")
    else:
        field = ctx.key_path(sec["path"], path + ("path",))
    if isinstance(field, tuple):
        col = by_path.get(field)
        if col is not None and getattr(col, "type", None) != "categorical":
            ctx.error(path + ("path",), f"{'.'.join(field)} is the {col.type} column "
                                        f"{col.name!r}; a facet must be categorical (bin it "
                                        f"into bands upstream, e.g. age_band)")
            field = BAD
    name: Any
    if get_key(sec, "name") is not ABSENT:
        name = ctx.string(sec["name"], path + ("name",))
    else:
        name = field[-1] if isinstance(field, tuple) else BAD
    if isinstance(name, str) and not _NAME_RE.match(name):
        name = ctx.error(path + ("name",), f"{name!r} is not a valid facet name: use letters, "
                                           f"digits and underscores (set name: explicitly)")
    top_k: Any = 10
    if get_key(sec, "top_k") is not ABSENT:
        top_k = ctx.integer(sec["top_k"], path + ("top_k",), 1, MAX_TOP_K)
    if isinstance(name, Bad) or isinstance(field, Bad) or isinstance(top_k, Bad):
        return None
    return FacetConfig(name, field, top_k)
