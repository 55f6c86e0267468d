"""The ``models:`` and ``detection:`` sections: models, their columns and detectors."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from detectors.catalogue import default_min_effects
from stream.config.attribution import parse_attributions, parse_importances
from stream.config.keys import (
    ABSENT,
    BAD,
    Bad,
    Ctx,
    KeyPath,
    any_bad,
    default_of,
    format_key_path,
    get_key,
    one_of,
    suggest,
    type_name,
)
from stream.config.multivariate import parse_groups
from stream.config.segments import parse_segments
from stream.config.skew import parse_partition_check
from stream.config.tree import (
    ALL_DETECTORS,
    COLUMN_TYPES,
    DETECTORS_BY_TYPE,
    REFERENCE_SUFFIXES,
    AdwinConfig,
    BaselineConfig,
    ColumnConfig,
    DetectionConfig,
    ModelConfig,
    SelectConfig,
    VectorConfig,
)
from stream.config.vectors import is_vector, parse_vector

_MODEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_MODEL_KEYS = ("name", "version", "select", "baseline", "features", "predictions", "labels",
               "multivariate", "segments", "bias", "attributions", "importances")
_COLUMN_KEYS = ("name", "path", "type", "detectors", "min_effect")
_DETECTION_KEYS = (
    "false_alarm_events",
    "episodes",
    "window",
    "cadence",
    "numeric_detectors",
    "categorical_detectors",
    "adwin",
    "min_effect",
    "bins",
    "top_k",
    "reservoir_size",
    "partition_check",
)


def _detector_list(ctx: Ctx, value: Any, path: KeyPath, column_type: str) -> tuple[str, ...] | Bad:
    allowed = DETECTORS_BY_TYPE[column_type]
    if not isinstance(value, list):
        return ctx.error(
            path,
            f"must be a list of detector names ({', '.join(allowed)}), got {type_name(value)}",
        )
    result: list[str] = []
    ok = True
    for i, name in enumerate(value):
        where = path + (i,)
        if not isinstance(name, str):
            ctx.error(
                where, f"must be a detector name ({', '.join(allowed)}), got {type_name(name)}"
            )
            ok = False
        elif name not in allowed:
            if name in ALL_DETECTORS:
                other = "categorical" if column_type == "numeric" else "numeric"
                ctx.error(
                    where,
                    f"{name} is a {other} detector; {column_type} columns take {', '.join(allowed)}",
                )
            else:
                ctx.error(
                    where, f"unknown detector {name!r}{suggest(name, allowed)}; {one_of(allowed)}"
                )
            ok = False
        elif name in result:
            ctx.error(where, f"detector {name} is listed twice")
            ok = False
        else:
            result.append(name)
    return tuple(result) if ok else BAD


def _min_effect(
    ctx: Ctx, value: Any, path: KeyPath, allowed: Sequence[str], scope: str
) -> dict[str, float] | Bad:
    if not isinstance(value, Mapping):
        return ctx.error(
            path,
            f"must be a mapping of detector name to minimum effect size, e.g. {{ks: 0.05}}; got {type_name(value)}",
        )
    out: dict[str, float] = {}
    ok = True
    for name, effect in value.items():
        where = path + (name,)
        if not isinstance(name, str) or name not in ALL_DETECTORS:
            ctx.error(
                where, f"unknown detector{suggest(name, ALL_DETECTORS)}; {one_of(ALL_DETECTORS)}"
            )
            ok = False
            continue
        if name not in allowed:
            ctx.error(
                where,
                f"detector {name} is not enabled for {scope} (enabled: {', '.join(allowed) or 'none'})",
            )
            ok = False
            continue
        number = ctx.real(effect, where, minimum=0.0, strict=False)
        if isinstance(number, Bad):
            ok = False
        else:
            out[name] = number
    return out if ok else BAD


def parse_detection(ctx: Ctx, value: Any) -> DetectionConfig:
    path: KeyPath = ("detection",)
    sec = ctx.section(value, path, _DETECTION_KEYS)
    if sec is None:
        return DetectionConfig()
    kw: dict[str, Any] = {}
    if get_key(sec, "false_alarm_events") is not ABSENT:
        kw["false_alarm_events"] = ctx.real(
            sec["false_alarm_events"], path + ("false_alarm_events",), minimum=0.0, strict=True
        )
    if get_key(sec, "window") is not ABSENT:
        kw["window"] = ctx.integer(sec["window"], path + ("window",), 50, 1_000_000)
    window = kw.get("window", default_of(DetectionConfig, "window"))
    if get_key(sec, "cadence") is not ABSENT:
        hi = window if isinstance(window, int) else 1_000_000
        kw["cadence"] = ctx.integer(sec["cadence"], path + ("cadence",), 1, hi)
    cadence = kw.get("cadence", default_of(DetectionConfig, "cadence"))
    if isinstance(window, int) and isinstance(cadence, int):
        if cadence > window:
            ctx.error(path + ("cadence",), f"must be <= window ({window}), got {cadence}")
        elif window % cadence:
            ctx.error(
                path + ("cadence",),
                f"window ({window}) must be a multiple of cadence ({cadence}); e.g. cadence "
                f"{_divisor_near(window, cadence)}",
            )
    for key, column_type in (
        ("numeric_detectors", "numeric"),
        ("categorical_detectors", "categorical"),
    ):
        if get_key(sec, key) is not ABSENT:
            kw[key] = _detector_list(ctx, sec[key], path + (key,), column_type)
    if get_key(sec, "adwin") is not ABSENT:
        ad = ctx.section(sec["adwin"], path + ("adwin",), ("clock",), "{clock: 32}")
        if ad is not None:
            clock = default_of(AdwinConfig, "clock")
            if get_key(ad, "clock") is not ABSENT:
                clock = ctx.integer(ad["clock"], path + ("adwin", "clock"), 1)  # type: ignore[assignment]
            kw["adwin"] = AdwinConfig(clock)
    if get_key(sec, "episodes") is not ABSENT:
        ep = ctx.section(sec["episodes"], path + ("episodes",), ("release", "close_after_events"),
                         "{release: 0.5, close_after_events: 1000}")
        if ep is not None and get_key(ep, "release") is not ABSENT:
            rel = ctx.real(ep["release"], path + ("episodes", "release"), minimum=0.0,
                           strict=True)
            if not isinstance(rel, Bad) and rel > 1:
                ctx.error(path + ("episodes", "release"),
                          f"must be <= 1 (a fraction of the threshold), got {rel:g}")
            elif not isinstance(rel, Bad):
                kw["release"] = rel
        if ep is not None and get_key(ep, "close_after_events") is not ABSENT:
            kw["close_after_events"] = ctx.integer(
                ep["close_after_events"], path + ("episodes", "close_after_events"), 1,
                100_000_000)
    if get_key(sec, "min_effect") is not ABSENT:
        me = _min_effect(
            ctx, sec["min_effect"], path + ("min_effect",), ALL_DETECTORS, "any column"
        )
        kw["min_effect"] = me if isinstance(me, Bad) else MappingProxyType(me)
    for key, lo, hi in (("bins", 4, 256), ("top_k", 2, 10_000), ("reservoir_size", 100, 1_000_000)):
        if get_key(sec, key) is not ABSENT:
            kw[key] = ctx.integer(sec[key], path + (key,), lo, hi)
    if get_key(sec, "partition_check") is not ABSENT:
        kw["partition_check"] = parse_partition_check(ctx, sec["partition_check"],
                                                      path + ("partition_check",))
    # Bad values fall back to defaults so that model validation goes on without cascades.
    return DetectionConfig(**{k: v for k, v in kw.items() if not isinstance(v, Bad)})


def _divisor_near(window: int, cadence: int) -> int:
    divisors = [d for d in range(1, window + 1) if window % d == 0]
    return min(divisors, key=lambda d: (abs(d - cadence), d))


def parse_models(ctx: Ctx, value: Any, detection: DetectionConfig) -> tuple[ModelConfig, ...]:
    path: KeyPath = ("models",)
    if value is ABSENT or value is None:
        ctx.error(path, "required: a list of models, each with name, baseline and features")
        return ()
    if not isinstance(value, list) or not value:
        ctx.error(path, f"must be a non-empty list of models, got {type_name(value)}")
        return ()
    models: list[ModelConfig] = []
    names: dict[str, int] = {}
    for i, raw in enumerate(value):
        model = _model(ctx, raw, path + (i,), detection)
        if model is None:
            continue
        if isinstance(model.name, str):
            if model.name in names:
                ctx.error(
                    path + (i, "name"),
                    f"duplicate model name {model.name!r} (also models[{names[model.name]}]); names must be unique",
                )
            else:
                names[model.name] = i
        models.append(model)
    return tuple(models)


def _model(ctx: Ctx, value: Any, path: KeyPath, detection: DetectionConfig) -> ModelConfig | None:
    sec = ctx.section(
        value,
        path,
        _MODEL_KEYS,
        "{name: credit, baseline: {reference: ref.jsonl}, features: [...]}",
    )
    if sec is None:
        return None
    name: Any = get_key(sec, "name")
    if name is ABSENT:
        name = ctx.error(path + ("name",), "required: the model name, e.g. credit")
    else:
        name = ctx.string(name, path + ("name",))
        if isinstance(name, str) and not _MODEL_NAME_RE.match(name):
            name = ctx.error(
                path + ("name",),
                f"{name!r} is not a valid model name: use letters, digits and underscores, not starting with a digit",
            )

    version: Any = None
    if get_key(sec, "version") is not ABSENT:
        raw_version = sec["version"]
        if isinstance(raw_version, str) and raw_version.strip():
            version = raw_version
        else:
            version = ctx.error(
                path + ("version",),
                f'must be a string; quote it, e.g. version: "1" (got {type_name(raw_version)})',
            )

    select: Any = None
    if get_key(sec, "select") is not ABSENT:
        select = _select(ctx, sec["select"], path + ("select",))

    baseline: Any = BAD
    if get_key(sec, "baseline") is ABSENT:
        ctx.error(
            path + ("baseline",), "required: {reference: events.jsonl} or {file: baseline.json}"
        )
    else:
        baseline = _baseline(ctx, sec["baseline"], path + ("baseline",))

    columns: dict[str, KeyPath] = {}
    groups: dict[str, tuple[ColumnConfig, ...]] = {}
    vectors: list[VectorConfig] = []  # embedding features (stream.config.vectors)
    for role, key in (("feature", "features"), ("prediction", "predictions")):
        raw = get_key(sec, key)
        if raw is ABSENT:
            groups[key] = ()
            continue
        if not isinstance(raw, list):
            ctx.error(
                path + (key,),
                f"must be a list of columns ({{name, path, type}}), got {type_name(raw)}",
            )
            groups[key] = ()
            continue
        built = []
        for j, item in enumerate(raw):
            # -- embedding features (#19; stream.config.vectors) --------------------
            if is_vector(item):
                vec = (parse_vector(ctx, item, path + (key, j)) if role == "feature" else
                       ctx.error(path + (key, j, "type"), "vector columns are features; "
                                 "move this entry under features"))
                if isinstance(vec, VectorConfig):
                    if vec.name in columns:
                        ctx.error(path + (key, j, "name"),
                                  f"duplicate column name {vec.name!r} (also "
                                  f"{format_key_path(columns[vec.name])}); names must be unique")
                    else:
                        columns[vec.name] = path + (key, j)
                        vectors.append(vec)
                continue
            # -- end of embedding features -------------------------------------------
            col = _column(ctx, item, path + (key, j), role, detection)
            if col is None:
                continue
            if isinstance(col.name, str):
                if col.name in columns:
                    ctx.error(
                        path + (key, j, "name"),
                        f"duplicate column name {col.name!r} (also {format_key_path(columns[col.name])}); "
                        "names must be unique across features and predictions",
                    )
                else:
                    columns[col.name] = path + (key, j)
            built.append(col)
        groups[key] = tuple(built)
    given = [get_key(sec, k) for k in ("features", "predictions")]
    if not any(isinstance(g, list) and g for g in given) and all(
        g is ABSENT or isinstance(g, list) for g in given
    ):
        ctx.error(
            path + ("features",),
            "required: a non-empty list of columns, e.g. [{name: income, path: features.income, type: numeric}]",
        )
    labels: Any = None
    if get_key(sec, "labels") is not ABSENT:
        from stream.config.labels import parse_labels

        labels = parse_labels(ctx, sec["labels"], path + ("labels",), groups["predictions"])
    multivariate = parse_groups(ctx, get_key(sec, "multivariate"), path + ("multivariate",),
                                (*groups["features"], *groups["predictions"]))
    by_name = {c.name: c for g in groups.values() for c in g if isinstance(c.name, str)}
    segments = parse_segments(ctx, get_key(sec, "segments"), path + ("segments",), by_name,
                              isinstance(baseline, BaselineConfig)
                              and baseline.reference is not None)
    # -- bias drift (#16.2) -------------------------------------------------------------
    from stream.config.bias import parse_bias

    bias = parse_bias(ctx, get_key(sec, "bias"), path + ("bias",), by_name, labels,
                      isinstance(baseline, BaselineConfig) and baseline.reference is not None)
    # attribution drift and root cause (#16 items 3-4)
    all_columns = (*groups["features"], *groups["predictions"])
    attributions = parse_attributions(
        ctx, get_key(sec, "attributions"), path + ("attributions",), all_columns,
        isinstance(baseline, BaselineConfig) and baseline.reference is not None)
    importances = parse_importances(ctx, get_key(sec, "importances"),
                                    path + ("importances",), all_columns)
    return ModelConfig(
        name=name,
        baseline=baseline,
        features=groups["features"],
        predictions=groups["predictions"],
        version=version,
        select=select,
        labels=labels,
        multivariate=multivariate,
        segments=segments,
        vectors=tuple(vectors),
        bias=bias,
        attributions=attributions,
        importances=importances,
    )


def _select(ctx: Ctx, value: Any, path: KeyPath) -> SelectConfig | Bad:
    sec = ctx.section(value, path, ("field", "equals"), "{field: model, equals: credit}")
    if sec is None:
        return BAD
    field_path: Any
    if get_key(sec, "field") is ABSENT:
        field_path = ctx.error(
            path + ("field",), "required: the dotted key path to compare, e.g. model"
        )
    else:
        field_path = ctx.key_path(sec["field"], path + ("field",))
    equals = sec.get("equals", ABSENT)
    if equals is ABSENT or equals is None:
        equals = ctx.error(
            path + ("equals",),
            "required: the value (string, integer or boolean) that selects the model",
        )
    elif not isinstance(equals, str | int):  # bool is an int
        equals = ctx.error(
            path + ("equals",), f"must be a string, integer or boolean, got {type_name(equals)}"
        )
    return SelectConfig(field_path, equals)


def _baseline(ctx: Ctx, value: Any, path: KeyPath) -> BaselineConfig | Bad:
    sec = ctx.section(
        value, path, ("reference", "file"), "{reference: events.jsonl} or {file: baseline.json}"
    )
    if sec is None:
        return BAD
    ref, file = get_key(sec, "reference"), get_key(sec, "file")
    if ref is not ABSENT and file is not ABSENT:
        return ctx.error(
            path,
            "give exactly one of reference (events to profile) or file (a built baseline), not both",
        )
    if ref is ABSENT and file is ABSENT:
        return ctx.error(
            path,
            "give exactly one of reference (events: .jsonl, .csv, .parquet) or file (a baseline JSON)",
        )
    if ref is not ABSENT:
        resolved = ctx.file_path(ref, path + ("reference",), must_exist=False)
        if isinstance(resolved, Bad):
            return BAD
        if resolved.suffix.lower() not in REFERENCE_SUFFIXES:
            return ctx.error(
                path + ("reference",),
                f"must be a .jsonl/.ndjson (one JSON event per line), .csv or .parquet file, got {resolved.name!r}; "
                "a built baseline JSON goes under baseline.file",
            )
        return BaselineConfig(reference=resolved)
    resolved = ctx.file_path(file, path + ("file",), must_exist=False)
    return resolved if isinstance(resolved, Bad) else BaselineConfig(file=resolved)


def _column(
    ctx: Ctx, value: Any, path: KeyPath, role: str, detection: DetectionConfig
) -> ColumnConfig | None:
    sec = ctx.section(
        value, path, _COLUMN_KEYS, "{name: income, path: features.income, type: numeric}"
    )
    if sec is None:
        return None
    name: Any = get_key(sec, "name")
    name = (
        ctx.error(path + ("name",), "required: the column name")
        if name is ABSENT
        else ctx.string(name, path + ("name",))
    )
    col_path: Any = get_key(sec, "path")
    if col_path is ABSENT:
        col_path = ctx.error(
            path + ("path",),
            "required: the dotted key path of the value in the event, e.g. features.income",
        )
    else:
        col_path = ctx.key_path(col_path, path + ("path",))
    col_type: Any = get_key(sec, "type")
    if col_type is ABSENT:
        col_type = ctx.error(path + ("type",), f"required: {one_of(COLUMN_TYPES)}")
    else:
        col_type = ctx.string(col_type, path + ("type",), choices=COLUMN_TYPES)

    detectors: Any = BAD
    if isinstance(col_type, str):
        detectors = detection.detectors_for(col_type)
        if get_key(sec, "detectors") is not ABSENT:
            detectors = _detector_list(ctx, sec["detectors"], path + ("detectors",), col_type)
    min_effect: Any = {}
    if not any_bad(detectors):
        # the kinds' own defaults (the rate tests': detectors.catalogue.RATE_MIN_EFFECT), then
        # detection.min_effect, then the column's
        min_effect = default_min_effects(detectors)
        min_effect.update({k: v for k, v in detection.min_effect.items() if k in detectors})
        if get_key(sec, "min_effect") is not ABSENT:
            own = _min_effect(
                ctx, sec["min_effect"], path + ("min_effect",), detectors, "this column"
            )
            if not isinstance(own, Bad):
                min_effect.update(own)
    elif get_key(sec, "min_effect") is not ABSENT and not isinstance(sec["min_effect"], Mapping):
        ctx.error(
            path + ("min_effect",),
            "must be a mapping of detector name to minimum effect size, e.g. {chi2: 0.05}",
        )
    return ColumnConfig(
        name=name,
        path=col_path,
        type=col_type,
        role=role,
        detectors=detectors,
        min_effect=MappingProxyType(min_effect),
    )
