"""Reading a configuration: the file, the top level, the ``metrics:`` section, path checks."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stream.config.errors import ConfigError
from stream.config.formats import check_format
from stream.config.kafka import STATE_SECTION, parse_source, parse_state
from stream.config.keys import ABSENT, BAD, Bad, Ctx, KeyPath, get_key, read_yaml, type_name
from stream.config.labels import check_labels
from stream.config.models import parse_detection, parse_models
from stream.config.tree import Config, KafkaConfig, MetricsConfig
from stream.config.web import web_config_errors

_TOP_KEYS = ("source", "models", "detection", "metrics")
_METRICS_KEYS = ("port", "host", "web_config")


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Config:
    """Read, parse and validate the YAML configuration file at ``path``."""
    file = Path(path).expanduser().absolute()
    data = read_yaml(file, "configuration")
    if data is None:
        raise ConfigError(f"{file}: the configuration file is empty; it needs at least `models:`")
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{file}: the top level must be a mapping (source:, models:, detection:, metrics:), "
            f"got {type_name(data)}"
        )
    return _parse(data, file.parent, environ, file)


def parse_config(
    data: Mapping[str, Any],
    base_dir: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate already-parsed configuration data; relative paths resolve against ``base_dir``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"the configuration must be a mapping, got {type_name(data)}")
    return _parse(data, Path(base_dir).expanduser().absolute(), environ, None)


def check_paths(config: Config, *, references: bool = True, files: bool = True) -> list[str]:
    """Errors (one string each, naming the key) for baseline paths that do not exist.

    Kept apart from parsing because ``streamdrift baseline`` creates the
    baseline ``file``: pass ``files=False`` there, ``references=False`` where
    only built baselines are read.
    """
    errors: list[str] = []
    for i, model in enumerate(config.models):
        for key, path, wanted in (
            ("reference", model.baseline.reference, references),
            ("file", model.baseline.file, files),
        ):
            if path is None or not wanted:
                continue
            where = f"models[{i}].baseline.{key}"
            if not path.exists():
                hint = (
                    "create it with `streamdrift baseline` or fix the path"
                    if key == "file"
                    else "fix the path (relative paths are relative to the configuration file)"
                )
                errors.append(f"{where}: file not found: {path}; {hint}")
            elif not path.is_file():
                errors.append(f"{where}: not a regular file: {path}")
    return errors


def require_kafka(config: Config) -> KafkaConfig:
    """The Kafka source settings, or ConfigError if the configuration has none."""
    if config.source.kafka is None:
        raise ConfigError(
            "source.kafka: required by `streamdrift run`; add a source.kafka section with at least "
            "bootstrap_servers and topics (configurations without one can only replay files)",
            source=config.path,
        )
    return config.source.kafka


def _parse(
    data: Mapping[str, Any], base_dir: Path, environ: Mapping[str, str] | None, file: Path | None
) -> Config:
    ctx = Ctx(base_dir, os.environ if environ is None else environ)
    data = ctx.substitute_env(data, ())
    state_value = data.get(STATE_SECTION, ABSENT) if isinstance(data, Mapping) else ABSENT
    if isinstance(data, Mapping) and STATE_SECTION in data:
        data = {k: v for k, v in data.items() if k != STATE_SECTION}
    top = ctx.section(data, (), _TOP_KEYS) or {}
    source = parse_source(ctx, get_key(top, "source"))
    detection = parse_detection(ctx, get_key(top, "detection"))
    models = parse_models(ctx, top.get("models", ABSENT), detection)
    metrics = _metrics(ctx, get_key(top, "metrics"))
    check_labels(ctx, models, source)
    state = parse_state(ctx, None if state_value is ABSENT else state_value, source)
    check_format(ctx, source, models)
    if ctx.errors:
        # report in the order of the file's sections (detection is read before models)
        rank = {key: i for i, key in enumerate((*_TOP_KEYS, STATE_SECTION))}
        errors = sorted(
            ctx.errors, key=lambda e: rank.get(re.split(r"[.\[:]", e, maxsplit=1)[0], -1)
        )
        raise ConfigError(errors, source=file)
    return Config(
        models=models, source=source, detection=detection, metrics=metrics, path=file, state=state
    )


def _metrics(ctx: Ctx, value: Any) -> MetricsConfig:
    path: KeyPath = ("metrics",)
    sec = ctx.section(value, path, _METRICS_KEYS, "{port: 9108, host: 0.0.0.0}")
    if sec is None:
        return MetricsConfig()
    kw: dict[str, Any] = {}
    if get_key(sec, "port") is not ABSENT:
        kw["port"] = ctx.integer(sec["port"], path + ("port",), 0, 65535)
    if get_key(sec, "host") is not ABSENT:
        kw["host"] = ctx.string(sec["host"], path + ("host",))
    if get_key(sec, "web_config") is not ABSENT:
        where = path + ("web_config",)
        web = ctx.file_path(sec["web_config"], where, must_exist=True)
        if not isinstance(web, Bad):
            problems = web_config_errors(web)
            for problem in problems:
                ctx.error(where, f"{problem} (in the web config file {web})")
            if problems:
                web = BAD
        kw["web_config"] = web
    return MetricsConfig(**kw)
