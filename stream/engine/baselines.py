"""Building, caching, loading and saving model baselines.

Reference data comes as JSONL events in the topic's format (the model's
``select`` rule and column paths apply), or as CSV / Parquet files of feature
columns named like the configured columns.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from detectors.errors import DetectorError
from detectors.model import ColumnSpec, DetectionSettings, ModelBaseline, calibration_key
from detectors.quality import count_incomplete
from stream.config import Config, ConfigError, DetectionConfig, ModelConfig
from stream.config.attribution import budget_factor
from stream.config.bias import bias_budget
from stream.config.estimate import estimate_budget
from stream.config.files import (
    MAX_BASELINE_BYTES,
    MAX_REFERENCE_BYTES,
    read_bounded,
    regular_file,
)
from stream.config.labels import concept_budget
from stream.config.segments import segment_budget
from stream.config.vectors import vector_budget
from stream.engine.multivariate import group_specs
from stream.engine.references import read_stream_reference, reads_reference_as_stream
from stream.formats.columns import extract_columns, select_events

log = logging.getLogger("streamdrift.baseline")

Progress = Callable[[str, int, int], None]
CHUNK_LINES = 50_000
#: a longer line of a JSONL reference is skipped (a Kafka message is at most 1 GiB, but
#: a reference line is parsed whole: this bounds the memory one line can take)
MAX_REFERENCE_LINE_BYTES = 16 * 1024 * 1024


def detection_settings(cfg: DetectionConfig, model: ModelConfig | None = None,
                       ) -> DetectionSettings:
    """The detectors' settings from the ``detection`` section; with ``model``, those of its
    model-wide monitor (a model with segments gives them part of its false-alarm budget,
    see stream.engine.segments)."""
    factor = segment_budget(len(model.segments))[0] if model is not None else 1.0
    if model is not None and model.vectors:  # vector columns take unit shares (#19)
        factor *= vector_budget(len(model.vectors))
    # bias drift (#16.2): facets take a share of the model's rate (stream.config.bias)
    factor *= bias_budget(model)[0]
    factor *= budget_factor(model)  # the attribution test's share (stream.engine.attribution)
    factor *= concept_budget(model)[0]  # the concept detector's share (stream.config.labels)
    factor *= estimate_budget(model)[0]  # the drop alarm's (stream.config.estimate)
    return DetectionSettings(
        false_alarm_events=float(cfg.false_alarm_events) * factor,
        window=cfg.window,
        cadence=cfg.cadence,
        adwin_clock=cfg.adwin.clock,
        bins=cfg.bins,
        top_k=cfg.top_k,
        reservoir_size=cfg.reservoir_size,
        release=cfg.release,
        release_events=cfg.close_after_events or 0,
    )


def column_specs(model: ModelConfig) -> list[ColumnSpec]:
    """One :class:`ColumnSpec` per configured feature and prediction."""
    return [ColumnSpec(c.name, c.type, c.role, tuple(c.detectors), dict(c.min_effect))
            for c in (*model.features, *model.predictions)]


def _columns(model: ModelConfig) -> list[Any]:
    return [*model.features, *model.predictions]


def read_reference(path: Path, model: ModelConfig) -> dict[str, np.ndarray]:
    """Columns of ``model`` from a reference file (.jsonl/.json/.ndjson, .csv, .parquet)."""
    try:
        regular_file(path, "reference", MAX_REFERENCE_BYTES)
    except ConfigError as exc:
        raise ConfigError(f"models[{model.name}].baseline.reference: {exc.errors[0]}") from None
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _read_jsonl(path, model)
    if suffix == ".csv":
        return _read_csv(path, model)
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path, model)
    raise ConfigError(f"models[{model.name}].baseline.reference: {path.name} has an unknown "
                      f"format; use .jsonl (events), .csv or .parquet (columns)")


def _read_jsonl(path: Path, model: ModelConfig) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {c.name: [] for c in _columns(model)}
    bad = 0

    def flush(events: list[Any]) -> None:
        if not events:
            return
        chosen = [events[i] for i in select_events(events, model).tolist()]
        batch = extract_columns(chosen, model)
        for name in parts:
            parts[name].append(batch.columns[name])

    events: list[Any] = []
    long_lines = 0
    with path.open("rb") as fh:
        while line := fh.readline(MAX_REFERENCE_LINE_BYTES + 1):
            if len(line) > MAX_REFERENCE_LINE_BYTES:  # skip the rest of it, unread
                while line and not line.endswith(b"\n"):
                    line = fh.readline(MAX_REFERENCE_LINE_BYTES)
                long_lines += 1
                continue
            if not line.strip():
                continue
            try:
                ev = orjson.loads(line)
            except orjson.JSONDecodeError:
                bad += 1
                continue
            if isinstance(ev, dict):
                events.append(ev)
            else:
                bad += 1
            if len(events) >= CHUNK_LINES:
                flush(events)
                events = []
    flush(events)
    if bad:
        log.warning("reference %s: skipped %d lines that are not JSON objects", path, bad)
    if long_lines:
        log.warning("reference %s: skipped %d lines longer than %d bytes", path, long_lines,
                    MAX_REFERENCE_LINE_BYTES)
    out = {}
    for c in _columns(model):
        arrs = parts[c.name]
        if c.type == "numeric":
            out[c.name] = np.concatenate(arrs) if arrs else np.empty(0)
        else:
            out[c.name] = np.concatenate(arrs) if arrs else np.empty(0, dtype=object)
    return out


def _coerce(values: list[str], kind: str) -> np.ndarray:
    if kind == "numeric":
        out = np.full(len(values), np.nan)
        for i, v in enumerate(values):
            try:
                out[i] = float(v) if v not in ("", None) else np.nan
            except ValueError:
                out[i] = np.nan
        return out
    return np.array([None if v in ("", None) else v for v in values], dtype=object)


def _read_csv(path: Path, model: ModelConfig) -> dict[str, np.ndarray]:
    try:
        return _read_csv_rows(path, model)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"models[{model.name}].baseline.reference: {path} is not a readable "
                          f"UTF-8 CSV file: {exc}") from None


def _read_csv_rows(path: Path, model: ModelConfig) -> dict[str, np.ndarray]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c.name for c in _columns(model) if c.name not in header]
        if missing:
            raise ConfigError(f"models[{model.name}].baseline.reference: {path.name} has no "
                              f"column(s) {missing}; CSV columns must be named like the "
                              f"configured features (found {header})")
        rows = {c.name: [] for c in _columns(model)}  # type: dict[str, list[str]]
        for row in reader:
            for name, vals in rows.items():
                vals.append(row.get(name, ""))
    return {c.name: _coerce(rows[c.name], c.type) for c in _columns(model)}


def _read_parquet(path: Path, model: ModelConfig) -> dict[str, np.ndarray]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"models[{model.name}].baseline.reference: reading {path.name} needs "
                          f"pyarrow: pip install 'streamdrift[parquet]'") from None
    import pyarrow as pa

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(f"models[{model.name}].baseline.reference: {path} is not a readable "
                          f"Parquet file: {exc}") from None
    missing = [c.name for c in _columns(model) if c.name not in table.column_names]
    if missing:
        raise ConfigError(f"models[{model.name}].baseline.reference: {path.name} has no "
                          f"column(s) {missing}")
    out = {}
    for c in _columns(model):
        col = table.column(c.name).to_pylist()
        if c.type == "numeric":
            out[c.name] = np.array([np.nan if v is None else float(v) for v in col])
        else:
            out[c.name] = np.array([None if v is None else str(v) for v in col], dtype=object)
    return out


def build_baseline(config: Config, model: ModelConfig, reference: Path | None = None,
                   progress: Progress | None = None) -> ModelBaseline:
    """Profile the reference data and calibrate every detector of ``model``."""
    ref = reference or model.baseline.reference
    if ref is None:
        raise ConfigError(f"models[{model.name}].baseline: no reference data to build from; "
                          f"set baseline.reference or pass --reference")
    if reads_reference_as_stream(config, Path(ref)):  # e.g. open-inference requests
        try:
            regular_file(Path(ref), "reference", MAX_REFERENCE_BYTES)
        except ConfigError as exc:
            raise ConfigError(f"models[{model.name}].baseline.reference: {exc.errors[0]}") \
                from None
        data = read_stream_reference(config, model, Path(ref), MAX_REFERENCE_LINE_BYTES)
    else:
        data = read_reference(Path(ref), model)
    sizes = {k: int(np.size(v)) for k, v in data.items()}
    if not any(sizes.values()):
        raise ConfigError(f"models[{model.name}].baseline.reference: {ref} holds no event of "
                          f"this model (check the model's select rule and column paths)")
    try:
        base = ModelBaseline.build(model.name, data, column_specs(model),
                                   detection_settings(config.detection, model), progress,
                                   group_specs(model))
    except DetectorError as exc:
        raise ConfigError(f"models[{model.name}].baseline.reference: {exc}") from None
    # the reference's rate of events lacking most columns (the model-level test's base rate)
    _, incomplete = count_incomplete(data, [c.name for c in _columns(model)])
    base.meta.update({"reference": str(ref), "reference_events": max(sizes.values()),
                      "incomplete_events": incomplete})
    return base


def save_baseline(base: ModelBaseline, path: Path) -> None:
    """Write ``base`` to ``path`` (atomically; with the ``sha256`` that loading checks)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(orjson.dumps(base.to_dict(), option=orjson.OPT_INDENT_2))
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot write baseline file {path}: "
                          f"{exc.strerror or type(exc).__name__}") from None


#: what one reservoir value of a numeric profile may take in a baseline file (written
#: with indentation it takes about 27 bytes)
RESERVOIR_VALUE_BYTES = 32


def baseline_size_limit(config: Config, model: ModelConfig) -> int:
    """The size limit of ``model``'s baseline file: :data:`MAX_BASELINE_BYTES` plus room
    for the reservoirs the configuration asks for (``detection.reservoir_size`` can be set
    up to 1,000,000 values a numeric column, and rows of a multivariate group)."""
    numeric = sum(1 for c in _columns(model) if c.type == "numeric")
    # a multivariate group keeps a sample of up to reservoir_size rows of its columns
    numeric += sum(len(g.columns) for g in model.multivariate)
    return MAX_BASELINE_BYTES + numeric * config.detection.reservoir_size * RESERVOIR_VALUE_BYTES


def load_baseline(path: Path, *, warn: bool = True,
                  limit: int = MAX_BASELINE_BYTES) -> ModelBaseline:
    """Read and validate the baseline file ``path`` (see :meth:`ModelBaseline.from_dict`).

    The file must be a regular file of at most ``limit`` bytes; ConfigError naming the
    file otherwise, or for any problem of its content.  A file without a ``sha256`` (older
    than that check) loads with a warning.
    """
    raw = read_bounded(path, "baseline", limit)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"baseline file {path}: not valid JSON ({exc}); rebuild it with "
                          f"`streamdrift baseline`") from None
    try:
        base = ModelBaseline.from_dict(data)
    except DetectorError as exc:
        raise ConfigError(f"baseline file {path}: {exc}") from None
    if warn and not base.verified:
        log.warning("baseline file %s has no sha256 (written by an older streamdrift): edits "
                    "to it cannot be detected; rebuild it with `streamdrift baseline`", path,
                    extra={"baseline_file": str(path)})
    return base


def load_model_baseline(config: Config, model: ModelConfig, path: Path | None = None,
                        *, warn: bool = True) -> ModelBaseline:
    """The baseline file of ``model`` (``path``, default its ``baseline.file``), loaded,
    validated and checked against the model's columns and detectors.

    The one check of a baseline file: ``check-config``, ``replay`` and ``run`` all use it.
    Raises ConfigError naming the model's key and the file.
    """
    file = Path(path if path is not None else model.baseline.file)  # type: ignore[arg-type]
    where = f"models[{config.models.index(model)}].baseline.file"
    try:
        base = load_baseline(file, warn=warn, limit=baseline_size_limit(config, model))
        base.check(column_specs(model), detection_settings(config.detection, model),
                   group_specs(model))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.errors[0]}", source=config.path) from None
    except DetectorError as exc:
        raise ConfigError(f"{where}: baseline file {file}: {exc}", source=config.path) from None
    if base.name != model.name:
        raise ConfigError(f"{where}: baseline file {file} is the baseline of model "
                          f"{base.name!r}, not {model.name!r}; point baseline.file at this "
                          f"model's baseline or rebuild it with `streamdrift baseline`",
                          source=config.path)
    return base


def default_baseline_path(config: Config, model: ModelConfig) -> Path:
    if model.baseline.file is not None:
        return Path(model.baseline.file)
    folder = config.path.parent if config.path else Path.cwd()
    return folder / f"{model.name}.baseline.json"


def _cache_path(config: Config, model: ModelConfig, ref: Path) -> Path:
    st = ref.stat()
    key = calibration_key(column_specs(model), detection_settings(config.detection, model),
                          group_specs(model))
    digest = hashlib.sha256(
        f"{ref.resolve()}|{st.st_size}|{st.st_mtime_ns}|{key}".encode()).hexdigest()[:16]
    folder = (config.path.parent if config.path else Path.cwd()) / ".streamdrift-cache"
    return folder / f"{model.name}-{digest}.baseline.json"


def resolve_baselines(config: Config, progress: Progress | None = None,
                      ) -> dict[str, ModelBaseline]:
    """Baselines of every model: loaded from file, or built (and cached) from reference data."""
    out = {}
    for model in config.models:
        settings = detection_settings(config.detection, model)
        specs = column_specs(model)
        if model.baseline.file is not None:
            base = load_model_baseline(config, model)
            groups = group_specs(model)
            if base.needs_calibration(specs, settings, groups):
                log.warning("baseline %s was calibrated for other settings; recalibrating",
                            model.baseline.file)
                base.calibrate(specs, settings, progress, groups)
        else:
            ref = Path(model.baseline.reference)  # type: ignore[arg-type]
            try:
                regular_file(ref, "reference", MAX_REFERENCE_BYTES)
            except ConfigError as exc:
                raise ConfigError(f"models[{config.models.index(model)}].baseline.reference: "
                                  f"{exc.errors[0]}", source=config.path) from None
            cache = _cache_path(config, model, ref)
            cached: ModelBaseline | None = None
            if cache.is_file():
                try:
                    cached = load_model_baseline(config, model, cache, warn=False)
                    log.info("baseline of %s loaded from cache %s", model.name, cache)
                except ConfigError as exc:  # a cache is only a cache: rebuild it
                    log.warning("ignoring the cached baseline: %s", exc.errors[0])
            if cached is not None and cached.verified:  # an older cache file is rebuilt
                base = cached
            else:
                base = build_baseline(config, model, ref, progress)
                try:
                    save_baseline(base, cache)
                except ConfigError as exc:  # a read-only folder only costs start-up time
                    log.warning("cannot cache the baseline: %s", exc.errors[0])
        out[model.name] = base
    return out
