"""The ``attributions:`` and ``importances:`` keys of a model (see docs/attribution.md).

```yaml
models:
  - name: credit
    ...
    attributions: {path: explanation.shap}        # a mapping feature name -> value
    # or per feature: {paths: {income: shap.income, age: shap.age}}
    # optional: features: [income, age] (default: every feature), window: 1000
    importances: {income: 0.6, age: 0.3, country: 0.1}   # used when there are none
```

``attributions`` turns on the attribution-drift test (detectors.attribution); it needs
``baseline.reference`` (the baseline ranking is the reference's).  ``importances`` weigh
the features in the root cause of a prediction's drift when the model has no
attributions (with attributions, the reference's mean |attribution| is the importance).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stream.config.keys import ABSENT, Ctx, KeyPath, get_key, parse_dotted_path, suggest, type_name

if TYPE_CHECKING:  # tree imports this module
    from stream.config.tree import ColumnConfig

ATTRIBUTION_KEYS = ("path", "paths", "features", "window")
#: the column name of the attribution test's episodes (a model column may not take it)
ATTRIBUTION_COLUMN = "attribution"
DEFAULT_WINDOW = 1000
#: the share of the model-wide monitor's false-alarm rate the attribution test takes
ATTRIBUTION_SHARE = 0.1
MIN_WINDOW = 50
_EXAMPLE = "{path: explanation.shap} or {paths: {income: shap.income}}"


@dataclass(frozen=True, slots=True)
class AttributionConfig:
    """Where a model's events carry per-feature attributions."""

    #: (feature, key path of its attribution), in the model's feature order
    paths: tuple[tuple[str, tuple[str, ...]], ...]
    #: events with attributions per tumbling window
    window: int = DEFAULT_WINDOW

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(f for f, _ in self.paths)


def budget_factor(model: Any) -> float:
    """The factor of ``false_alarm_events`` of a model's column monitors (a ModelConfig or
    None): ``1 / (1 - ATTRIBUTION_SHARE)`` with attributions, 1 without."""
    if model is None or getattr(model, "attributions", None) is None:
        return 1.0
    return 1.0 / (1.0 - ATTRIBUTION_SHARE)


def parse_attributions(ctx: Ctx, value: Any, path: KeyPath, columns: Sequence[ColumnConfig],
                       has_reference: bool) -> AttributionConfig | None:
    """The model's attribution paths (None: not configured or in error)."""
    if value is ABSENT or value is None:
        return None
    sec = ctx.section(value, path, ATTRIBUTION_KEYS, _EXAMPLE)
    if sec is None:
        return None
    ok = True
    feats = [c.name for c in columns if c.role == "feature" and isinstance(c.name, str)]
    if ATTRIBUTION_COLUMN in {c.name for c in columns}:
        ctx.error(path, f"the model has a column named {ATTRIBUTION_COLUMN!r}, the name of the "
                        f"attribution test's episodes and metrics; rename that column")
        ok = False
    if not has_reference:
        ctx.error(path, "needs baseline.reference (the baseline ranking of attributions is "
                        "the reference's); set baseline: {reference: <events file>}")
        ok = False
    chosen: Any = get_key(sec, "features")
    if chosen is ABSENT:
        chosen = list(feats)
    elif not isinstance(chosen, list) or not all(isinstance(f, str) for f in chosen):
        ctx.error(path + ("features",), f"must be a list of feature names, got "
                                        f"{type_name(chosen)}")
        ok, chosen = False, []
    else:
        for j, f in enumerate(chosen):
            if f not in feats:
                ctx.error(path + ("features", j), f"no feature {f!r} in this model"
                                                  f"{suggest(f, feats)}")
                ok = False
    base: Any = get_key(sec, "path")
    per: Any = get_key(sec, "paths")
    out: dict[str, tuple[str, ...]] = {}
    if base is not ABSENT:
        try:
            prefix = parse_dotted_path(base)
        except ValueError as exc:
            ctx.error(path + ("path",), f"must be a dotted key path such as explanation.shap: "
                                        f"{exc}")
            ok, prefix = False, ()
        if prefix:
            out = {f: (*prefix, f) for f in chosen}
    if per is not ABSENT:
        if not isinstance(per, Mapping):
            ctx.error(path + ("paths",), f"must map feature names to key paths, e.g. "
                                         f"{{income: shap.income}}; got {type_name(per)}")
            ok = False
        else:
            for f, p in per.items():
                if f not in feats:
                    ctx.error(path + ("paths", str(f)), f"no feature {f!r} in this model"
                                                        f"{suggest(f, feats)}")
                    ok = False
                    continue
                try:
                    out[f] = parse_dotted_path(p)
                except ValueError as exc:
                    ctx.error(path + ("paths", f), f"must be a dotted key path: {exc}")
                    ok = False
    if base is ABSENT and per is ABSENT:
        ctx.error(path, f"names no attributions: give path or paths, e.g. {_EXAMPLE}")
        ok = False
    window: Any = get_key(sec, "window")
    if window is ABSENT:
        window = DEFAULT_WINDOW
    elif not isinstance(window, int) or isinstance(window, bool) or window < MIN_WINDOW:
        ctx.error(path + ("window",), f"must be an integer >= {MIN_WINDOW} (events with "
                                      f"attributions per window), got {window!r}")
        ok = False
    if ok and len(out) < 2:
        ctx.error(path, f"ranks {len(out)} feature(s); a ranking needs at least 2")
        ok = False
    if not ok:
        return None
    return AttributionConfig(tuple((f, out[f]) for f in feats if f in out), int(window))


def parse_importances(ctx: Ctx, value: Any, path: KeyPath,
                      columns: Sequence[ColumnConfig]) -> Mapping[str, float]:
    """feature -> importance (>= 0; features left out weigh 0); {} when not configured."""
    if value is ABSENT or value is None:
        return {}
    if not isinstance(value, Mapping):
        ctx.error(path, f"must map feature names to importances >= 0, e.g. "
                        f"{{income: 0.6, age: 0.4}}; got {type_name(value)}")
        return {}
    feats = [c.name for c in columns if c.role == "feature" and isinstance(c.name, str)]
    out: dict[str, float] = {}
    for f, w in value.items():
        if f not in feats:
            ctx.error(path + (str(f),), f"no feature {f!r} in this model{suggest(f, feats)}")
        elif not isinstance(w, int | float) or isinstance(w, bool) or not w >= 0 \
                or w == float("inf"):
            ctx.error(path + (str(f),), f"must be a finite number >= 0, got {w!r}")
        else:
            out[str(f)] = float(w)
    if value and not any(out.values()) and len(out) == len(value):
        ctx.error(path, "every importance is 0; give at least one positive importance")
    return out
