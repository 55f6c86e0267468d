"""Configuration: one YAML file loaded into one frozen, validated tree of dataclasses.

:func:`load_config` reads a file, :func:`parse_config` validates already-parsed
data.  Every problem raises :class:`ConfigError`; its message names the key
path of each problem (``models[1].features[0].type``) and what to do about it,
one problem per line, all problems of the file at once.

Rules
-----
* Unknown keys are errors (with a did-you-mean suggestion).  A key set to
  ``null`` counts as not set (its default applies).
* Relative paths resolve against the folder of the configuration file.
* No environment variable is read, except that any string value of the exact
  form ``${ENV:NAME}`` is replaced by the variable ``NAME`` (an error if unset).
* The secret keys (``sasl_password``, ``ssl_password``) take a string,
  ``${ENV:NAME}`` or ``{file: PATH}``; their value is wrapped in
  :class:`Secret` and never shows in a ``repr()`` or an error message.

>>> cfg = parse_config({"models": [{"name": "m", "baseline": {"file": "/b.json"},
...     "features": [{"name": "x", "path": "features.x", "type": "numeric"}]}]}, Path("/"))
>>> col = cfg.models[0].features[0]
>>> col.path, col.detectors
(('features', 'x'), ('ks', 'adwin', 'cusum', 'missing', 'out_of_range'))
>>> cfg.source.kafka is None, cfg.detection.window, cfg.metrics.port
(True, 1000, 9108)
"""

from __future__ import annotations

import difflib
import hmac
import importlib.util
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import yaml

from detectors.errors import StreamdriftError

__all__ = [
    "ALL_DETECTORS",
    "CATEGORICAL_DETECTORS",
    "COLUMN_TYPES",
    "DETECTORS_BY_TYPE",
    "NUMERIC_DETECTORS",
    "TIMESTAMP_UNITS",
    "BaselineConfig",
    "ColumnConfig",
    "Config",
    "ConfigError",
    "DeadLetterConfig",
    "DetectionConfig",
    "KafkaConfig",
    "MetricsConfig",
    "ModelConfig",
    "Secret",
    "SelectConfig",
    "SourceConfig",
    "StateConfig",
    "TimestampConfig",
    "check_paths",
    "format_key_path",
    "load_config",
    "parse_config",
    "parse_dotted_path",
    "require_kafka",
]

NUMERIC_DETECTORS: Final = ("ks", "adwin", "cusum", "missing", "out_of_range")
CATEGORICAL_DETECTORS: Final = ("chi2", "surprisal", "missing", "unseen")
COLUMN_TYPES: Final = ("numeric", "categorical")
DETECTORS_BY_TYPE: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {"numeric": NUMERIC_DETECTORS, "categorical": CATEGORICAL_DETECTORS}
)
ALL_DETECTORS: Final = tuple(dict.fromkeys(NUMERIC_DETECTORS + CATEGORICAL_DETECTORS))
TIMESTAMP_UNITS: Final = ("s", "ms", "us", "iso8601")
AUTO_OFFSET_RESETS: Final = ("earliest", "latest")
#: Kafka clients ``streamdrift run`` can consume with (source.kafka.client)
KAFKA_CLIENTS: Final = ("kafka-python", "confluent-kafka")
SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
REFERENCE_SUFFIXES: Final = (".jsonl", ".ndjson", ".csv", ".parquet")
SECRET_KEYS: Final = frozenset({"sasl_password", "ssl_password"})

_MODEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_ENV_RE = re.compile(r"^\$\{ENV:([A-Za-z_][A-Za-z0-9_]*)\}$")
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_SERVER_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s:,\[\]/]+)(?::(\d{1,5}))?$")
_NUMBER_RE = re.compile(r"^[+-]?(\d[\d_]*)?(\.\d*)?([eE][+-]?\d+)?$")


# --------------------------------------------------------------------------
# errors and secrets
# --------------------------------------------------------------------------
class ConfigError(StreamdriftError):
    """The configuration is invalid.

    ``errors`` holds one line per problem, each starting with the key path
    (``models[0].features[2].type: must be one of numeric, categorical``);
    ``source`` names the file when there is one.
    """

    def __init__(
        self, errors: str | Sequence[str], *, source: str | os.PathLike[str] | None = None
    ):
        self.errors: tuple[str, ...] = (errors,) if isinstance(errors, str) else tuple(errors)
        self.source = None if source is None else str(source)
        super().__init__(self._format())

    def _format(self) -> str:
        where = f"invalid configuration {self.source}" if self.source else "invalid configuration"
        if len(self.errors) == 1:
            return f"{where}: {self.errors[0]}"
        lines = "\n".join(f"  {e}" for e in self.errors)
        return f"{where} ({len(self.errors)} errors):\n{lines}"


class Secret:
    """A secret string that never shows in ``repr()``, ``str()`` or logs.

    >>> s = Secret("hunter2")
    >>> s, str(s), f"{s}"
    (Secret('***'), "Secret('***')", "Secret('***')")
    >>> s.reveal()
    'hunter2'
    """

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if not isinstance(value, str):
            raise TypeError("Secret takes a str")
        self._value = value

    def reveal(self) -> str:
        """The secret itself; pass it straight to the client that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))


# --------------------------------------------------------------------------
# the configuration tree
# --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class KafkaConfig:
    bootstrap_servers: tuple[str, ...]
    topics: tuple[str, ...]
    group_id: str = "streamdrift"
    auto_offset_reset: str = "latest"
    max_poll_records: int = 2000
    poll_timeout_ms: int = 500
    client_id: str = "streamdrift"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: Secret | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: the consumer's client library: kafka-python (default) or confluent-kafka (librdkafka)
    client: str = "kafka-python"
    #: librdkafka properties for the confluent-kafka consumer, as given
    librdkafka: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def connection_kwargs(self) -> dict[str, Any]:
        """Connection and security settings shared by every kafka-python client
        (consumer, producer, admin); secrets revealed."""
        kw: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap_servers),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism is not None:
            kw["sasl_mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            kw["sasl_plain_username"] = self.sasl_username
        if self.sasl_password is not None:
            kw["sasl_plain_password"] = self.sasl_password.reveal()
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, name)
            if value is not None:
                kw[name] = str(value)
        if self.ssl_password is not None:
            kw["ssl_password"] = self.ssl_password.reveal()
        return kw

    def consumer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``kafka.KafkaConsumer`` (secrets revealed).

        ``poll_timeout_ms`` is not among them: it is an argument of ``poll()``.
        ``options`` come last, as given.
        """
        kw = self.connection_kwargs()
        kw.update(group_id=self.group_id, auto_offset_reset=self.auto_offset_reset,
                  max_poll_records=self.max_poll_records)
        kw.update(self.options)
        return kw


@dataclass(frozen=True, slots=True)
class DeadLetterConfig:
    topic: str = "streamdrift-dead-letter"


@dataclass(frozen=True, slots=True)
class TimestampConfig:
    #: key path of the event time in each event
    path: tuple[str, ...] = ("timestamp",)
    #: one of ``s``, ``ms``, ``us`` (numbers since the epoch) or ``iso8601`` (strings)
    unit: str = "s"


@dataclass(frozen=True, slots=True)
class SourceConfig:
    kafka: KafkaConfig | None = None
    dead_letter: DeadLetterConfig | None = None
    timestamp: TimestampConfig | None = None
    max_message_bytes: int = 1_048_576


@dataclass(frozen=True, slots=True)
class SelectConfig:
    """An event belongs to the model when the value at ``field`` equals ``equals``.

    The comparison is type-exact: ``equals: 1`` matches JSON ``1`` but neither
    ``"1"``, ``1.0`` nor ``true``.
    """

    field: tuple[str, ...]
    equals: str | int | bool


@dataclass(frozen=True, slots=True)
class BaselineConfig:
    """Exactly one of ``reference`` (raw events to profile) or ``file`` (a baseline JSON)."""

    reference: Path | None = None
    file: Path | None = None

    @property
    def path(self) -> Path:
        path = self.reference if self.reference is not None else self.file
        assert path is not None
        return path

    @property
    def reference_format(self) -> str | None:
        """``jsonl``, ``csv`` or ``parquet`` for a reference, else None."""
        if self.reference is None:
            return None
        suffix = self.reference.suffix.lower()
        return "jsonl" if suffix in (".jsonl", ".ndjson") else suffix.lstrip(".")


@dataclass(frozen=True, slots=True)
class ColumnConfig:
    """A feature or prediction of a model, with the model's defaults applied."""

    name: str
    path: tuple[str, ...]
    type: str  # "numeric" | "categorical"
    role: str  # "feature" | "prediction"
    detectors: tuple[str, ...]
    min_effect: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    baseline: BaselineConfig
    features: tuple[ColumnConfig, ...] = ()
    predictions: tuple[ColumnConfig, ...] = ()
    version: str | None = None
    select: SelectConfig | None = None

    @property
    def columns(self) -> tuple[ColumnConfig, ...]:
        """Features then predictions."""
        return self.features + self.predictions


@dataclass(frozen=True, slots=True)
class AdwinConfig:
    clock: int = 32


@dataclass(frozen=True, slots=True)
class DetectionConfig:
    false_alarm_events: float = 10_000_000.0
    window: int = 1000
    cadence: int = 50
    numeric_detectors: tuple[str, ...] = NUMERIC_DETECTORS
    categorical_detectors: tuple[str, ...] = CATEGORICAL_DETECTORS
    adwin: AdwinConfig = field(default_factory=AdwinConfig)
    min_effect: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    bins: int = 32
    top_k: int = 50
    reservoir_size: int = 10_000

    def detectors_for(self, column_type: str) -> tuple[str, ...]:
        """The default detector set of a column type."""
        if column_type == "numeric":
            return self.numeric_detectors
        return self.categorical_detectors


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    port: int = 9108
    host: str = "0.0.0.0"
    #: exporter-toolkit web-config file (TLS, basic auth) of the endpoint; see stream.webconfig
    web_config: Path | None = None


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Detector state checkpoints of ``streamdrift run`` (see docs/reliability.md).

    With ``enabled``, the state of every (model, partition) is written, with the
    offset it covers, to the compacted Kafka topic ``topic`` every
    ``checkpoint_interval_s`` seconds and at shutdown, and restored on restart
    and on partition assignment.  ``replay`` ignores this section.
    """

    enabled: bool = True
    topic: str = "streamdrift-state"
    checkpoint_interval_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Config:
    models: tuple[ModelConfig, ...]
    source: SourceConfig = field(default_factory=SourceConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    #: the file the configuration came from (absolute), None for parse_config
    path: Path | None = None
    state: StateConfig = field(default_factory=StateConfig)

    def model(self, name: str) -> ModelConfig:
        """The model called ``name`` (KeyError if there is none)."""
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)


# --------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------
def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Config:
    """Read, parse and validate the YAML configuration file at ``path``."""
    file = Path(path).expanduser().absolute()
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{file}: configuration file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a directory, expected a YAML configuration file") from None
    except OSError as exc:
        raise ConfigError(
            f"{file}: cannot read configuration file: {exc.strerror or exc}"
        ) from None
    try:
        data = yaml.load(raw, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {_yaml_problem(exc)}") from None
    except yaml.YAMLError as exc:
        # ReaderError and friends: bad encoding or control characters
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    if data is None:
        raise ConfigError(f"{file}: the configuration file is empty; it needs at least `models:`")
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{file}: the top level must be a mapping (source:, models:, detection:, metrics:), "
            f"got {_type_name(data)}"
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
        raise ConfigError(f"the configuration must be a mapping, got {_type_name(data)}")
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


def format_key_path(path: Iterable[str | int]) -> str:
    """``("models", 1, "features", 0, "type")`` -> ``models[1].features[0].type``.

    >>> format_key_path(["models", 0, "select", "field"])
    'models[0].select.field'
    >>> format_key_path(["source", "kafka", "options", "a.b"])
    "source.kafka.options['a.b']"
    """
    out = ""
    for seg in path:
        if isinstance(seg, int) and not isinstance(seg, bool):
            out += f"[{seg}]"
        elif isinstance(seg, str) and _IDENT_RE.match(seg):
            out += f".{seg}" if out else seg
        else:
            out += f"[{seg!r}]"
    return out or "<top level>"


def parse_dotted_path(text: str) -> tuple[str, ...]:
    r"""Split a dotted key path; ``\.`` is a dot inside a key and ``\\`` a backslash.

    >>> parse_dotted_path("features.income")
    ('features', 'income')
    >>> parse_dotted_path(r"features.rate\.pct")
    ('features', 'rate.pct')

    Raises ValueError (with the reason) on empty segments or bad escapes.
    """
    if not isinstance(text, str):
        raise ValueError("must be a string")
    segments: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1] if i + 1 < len(text) else ""
            if nxt not in (".", "\\"):
                raise ValueError(
                    f"bad escape at character {i + 1}: use '\\.' for a dot inside a key "
                    "and '\\\\' for a backslash"
                )
            cur.append(nxt)
            i += 2
            continue
        if ch == ".":
            segments.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    segments.append("".join(cur))
    if any(seg == "" for seg in segments):
        raise ValueError(
            "has an empty segment; write keys separated by single dots, e.g. features.income"
        )
    return tuple(segments)


# --------------------------------------------------------------------------
# YAML loading
# --------------------------------------------------------------------------
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys in a mapping (YAML says they are an error)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, yaml.Mark] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # unhashable key: construct_mapping reports it
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first set on line {first.line + 1}); keep only one",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    # Built from the problem text and position only: the default str() quotes
    # the offending line, which could hold a secret.
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    text = exc.problem or exc.context or "syntax error"
    if exc.context and exc.problem:
        text = f"{exc.problem} ({exc.context})"
    return where + text


# --------------------------------------------------------------------------
# the validator
# --------------------------------------------------------------------------
_Path = tuple[Any, ...]  # mapping keys and list indices


class _Bad:
    """Placeholder for a value that failed validation (its error is recorded)."""

    def __repr__(self) -> str:
        return "<invalid>"


BAD: Final = _Bad()
_ABSENT: Final = object()


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _one_of(choices: Iterable[str]) -> str:
    return "must be one of " + ", ".join(choices)


def _suggest(word: Any, choices: Iterable[str]) -> str:
    if not isinstance(word, str):
        return ""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


class _Ctx:
    def __init__(self, base_dir: Path, environ: Mapping[str, str]):
        self.base_dir = base_dir
        self.environ = environ
        self._errors: list[tuple[_Path, str, bool]] = []

    def error(self, path: _Path, message: str, *, env: bool = False) -> _Bad:
        self._errors.append((path, message, env))
        return BAD

    @property
    def errors(self) -> list[str]:
        """The messages; none about values that an ``${ENV:...}`` error already names."""
        failed = [p for p, _, env in self._errors if env]
        return [
            f"{format_key_path(path)}: {message}"
            for path, message, env in self._errors
            if env or not any(path[: len(f)] == f for f in failed)
        ]

    # -- structure ---------------------------------------------------------
    def section(
        self, value: Any, path: _Path, known: Sequence[str], what: str = ""
    ) -> dict[str, Any] | None:
        """A mapping with only known keys; None (error recorded) if not a mapping."""
        if value is None or value is _ABSENT:
            return {}
        if not isinstance(value, Mapping):
            example = f", e.g. {what}" if what else ""
            self.error(
                path,
                f"must be a mapping with keys {', '.join(known)}{example}; got {_type_name(value)}",
            )
            return None
        for key in value:
            if key not in known:
                self.error(
                    path + (key,),
                    f"unknown key{_suggest(key, known)}; known keys here: {', '.join(known)}",
                )
        return {k: v for k, v in value.items() if isinstance(k, str) and k in known}

    # -- scalars -----------------------------------------------------------
    def string(
        self,
        value: Any,
        path: _Path,
        *,
        choices: Sequence[str] | None = None,
        allow_empty: bool = False,
    ) -> str | _Bad:
        if not isinstance(value, str):
            hint = f"; {_one_of(choices)}" if choices else ""
            return self.error(path, f"must be a string, got {_type_name(value)}{hint}")
        if choices is not None and value not in choices:
            return self.error(path, f"{_one_of(choices)}, got {value!r}{_suggest(value, choices)}")
        if not allow_empty and not value.strip():
            return self.error(path, "must not be empty")
        return value

    def integer(
        self, value: Any, path: _Path, lo: int | None = None, hi: int | None = None
    ) -> int | _Bad:
        number = self._number(value)
        if number is None or not math.isfinite(number) or number != int(number):
            return self.error(path, f"must be an integer{_range(lo, hi)}, got {_show(value)}")
        result = int(number) if not isinstance(value, int) else value
        if (lo is not None and result < lo) or (hi is not None and result > hi):
            return self.error(path, f"must be an integer{_range(lo, hi)}, got {result}")
        return result

    def real(self, value: Any, path: _Path, *, minimum: float, strict: bool) -> float | _Bad:
        number = self._number(value)
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        if number is None or not math.isfinite(number):
            return self.error(path, f"must be a finite number {bound}, got {_show(value)}")
        if number < minimum or (strict and number == minimum):
            return self.error(path, f"must be a number {bound}, got {number:g}")
        return float(number)

    @staticmethod
    def _number(value: Any) -> float | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return value
        # quoted numbers, ${ENV:...} values and PyYAML's "1e7" (a string in YAML 1.1)
        if isinstance(value, str) and value.strip() and _NUMBER_RE.match(value.strip()):
            text = value.strip().replace("_", "")
            try:
                return int(text) if text.lstrip("+-").isdigit() else float(text)
            except ValueError:
                return None
        return None

    def key_path(self, value: Any, path: _Path) -> tuple[str, ...] | _Bad:
        if not isinstance(value, str):
            return self.error(
                path,
                f"must be a dotted key path string such as features.income, got {_type_name(value)}",
            )
        try:
            return parse_dotted_path(value)
        except ValueError as exc:
            return self.error(path, f"{exc} (got {value!r})")

    def file_path(self, value: Any, path: _Path, *, must_exist: bool) -> Path | _Bad:
        if not isinstance(value, str) or not value.strip():
            return self.error(path, f"must be a file path string, got {_type_name(value)}")
        resolved = self.base_dir / Path(value).expanduser()
        if must_exist:
            if not resolved.exists():
                return self.error(
                    path,
                    f"file not found: {resolved} (relative paths are relative to the configuration file)",
                )
            if not resolved.is_file():
                return self.error(path, f"not a regular file: {resolved}")
        return resolved

    def secret(self, value: Any, path: _Path) -> Secret | _Bad:
        # Never quote the value in these messages.
        if isinstance(value, str):
            if not value:
                return self.error(
                    path, "must not be empty (is the environment variable set but empty?)"
                )
            return Secret(value)
        if isinstance(value, Mapping):
            spec = self.section(value, path, ("file",), "{file: /run/secrets/kafka-password}")
            if spec is None:
                return BAD
            if "file" not in spec or spec["file"] is None:
                return self.error(
                    path + ("file",), "required: the path of a file holding the secret"
                )
            file = self.file_path(spec["file"], path + ("file",), must_exist=False)
            if isinstance(file, _Bad):
                return BAD
            try:
                text = file.read_bytes().decode("utf-8")
            except FileNotFoundError:
                return self.error(path + ("file",), f"secret file not found: {file}")
            except UnicodeDecodeError:
                return self.error(path + ("file",), f"secret file is not UTF-8 text: {file}")
            except OSError as exc:
                return self.error(
                    path + ("file",),
                    f"cannot read secret file {file}: {exc.strerror or type(exc).__name__}",
                )
            text = text.rstrip("\r\n")
            if not text:
                return self.error(path + ("file",), f"secret file is empty: {file}")
            return Secret(text)
        return self.error(
            path, f"must be a string, ${{ENV:NAME}} or {{file: PATH}}, got {_type_name(value)}"
        )

    # -- environment ---------------------------------------------------------
    def substitute_env(self, value: Any, path: _Path) -> Any:
        if isinstance(value, str):
            if "${ENV:" not in value:
                return value
            match = _ENV_RE.match(value)
            is_secret = bool(path) and path[-1] in SECRET_KEYS
            if match is None:
                shown = "" if is_secret else f" (got {value!r})"
                self.error(
                    path,
                    "${ENV:NAME} must be the whole value, with NAME made of letters, digits "
                    f"and underscores{shown}",
                    env=True,
                )
                return BAD
            name = match.group(1)
            if name not in self.environ:
                self.error(
                    path,
                    f"environment variable {name} is not set (referenced as ${{ENV:{name}}})",
                    env=True,
                )
                return BAD
            return self.environ[name]
        if isinstance(value, Mapping):
            return {k: self.substitute_env(v, path + (k,)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.substitute_env(v, path + (i,)) for i, v in enumerate(value)]
        return value


def _range(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f" in {lo}..{hi}"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:40] + "...")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return _type_name(value)


def _get(section: Mapping[str, Any], key: str) -> Any:
    """The value at ``key``, or _ABSENT when the key is missing or null."""
    value = section.get(key, _ABSENT)
    return _ABSENT if value is None else value


def _default(cls: type, name: str) -> Any:
    """The default of a dataclass field (slots dataclasses keep it only in fields())."""
    for f in fields(cls):
        if f.name == name:
            return f.default
    raise AttributeError(name)


def _bad(*values: Any) -> bool:
    return any(isinstance(v, _Bad) for v in values)


# --------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------
_TOP_KEYS = ("source", "models", "detection", "metrics")
_SOURCE_KEYS = ("kafka", "dead_letter", "timestamp", "max_message_bytes")
_KAFKA_KEYS = (
    "bootstrap_servers",
    "topics",
    "group_id",
    "auto_offset_reset",
    "max_poll_records",
    "poll_timeout_ms",
    "client_id",
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_password",
    "options",
    "client",
    "librdkafka",
)
# kafka-python argument -> the key that sets it here
_MANAGED_OPTIONS = {
    "bootstrap_servers": "bootstrap_servers",
    "group_id": "group_id",
    "client_id": "client_id",
    "auto_offset_reset": "auto_offset_reset",
    "max_poll_records": "max_poll_records",
    "security_protocol": "security_protocol",
    "sasl_mechanism": "sasl_mechanism",
    "sasl_plain_username": "sasl_username",
    "sasl_plain_password": "sasl_password",
    "ssl_cafile": "ssl_cafile",
    "ssl_certfile": "ssl_certfile",
    "ssl_keyfile": "ssl_keyfile",
    "ssl_password": "ssl_password",
}
_MODEL_KEYS = ("name", "version", "select", "baseline", "features", "predictions")
_COLUMN_KEYS = ("name", "path", "type", "detectors", "min_effect")
_DETECTION_KEYS = (
    "false_alarm_events",
    "window",
    "cadence",
    "numeric_detectors",
    "categorical_detectors",
    "adwin",
    "min_effect",
    "bins",
    "top_k",
    "reservoir_size",
)
_METRICS_KEYS = ("port", "host", "web_config")
#: the optional ``state:`` section; kept out of _TOP_KEYS so that the known-keys list of
#: the top level (pinned by tests/stream/test_config.py) does not change
_STATE_SECTION = "state"
_STATE_KEYS = ("enabled", "topic", "checkpoint_interval_s")


def _parse(
    data: Mapping[str, Any], base_dir: Path, environ: Mapping[str, str] | None, file: Path | None
) -> Config:
    ctx = _Ctx(base_dir, os.environ if environ is None else environ)
    data = ctx.substitute_env(data, ())
    state_value = data.get(_STATE_SECTION, _ABSENT) if isinstance(data, Mapping) else _ABSENT
    if isinstance(data, Mapping) and _STATE_SECTION in data:
        data = {k: v for k, v in data.items() if k != _STATE_SECTION}
    top = ctx.section(data, (), _TOP_KEYS) or {}
    source = _source(ctx, _get(top, "source"))
    detection = _detection(ctx, _get(top, "detection"))
    models = _models(ctx, top.get("models", _ABSENT), detection)
    metrics = _metrics(ctx, _get(top, "metrics"))
    state = _state(ctx, None if state_value is _ABSENT else state_value, source)
    if ctx.errors:
        # report in the order of the file's sections (detection is read before models)
        rank = {key: i for i, key in enumerate((*_TOP_KEYS, _STATE_SECTION))}
        errors = sorted(
            ctx.errors, key=lambda e: rank.get(re.split(r"[.\[:]", e, maxsplit=1)[0], -1)
        )
        raise ConfigError(errors, source=file)
    return Config(
        models=models, source=source, detection=detection, metrics=metrics, path=file, state=state
    )


def _source(ctx: _Ctx, value: Any) -> SourceConfig:
    path: _Path = ("source",)
    sec = ctx.section(value, path, _SOURCE_KEYS)
    if sec is None:
        return SourceConfig()
    kafka = None
    if _get(sec, "kafka") is not _ABSENT:
        kafka = _kafka(ctx, sec["kafka"])
    dead_letter = None
    if _get(sec, "dead_letter") is not _ABSENT:
        dl = ctx.section(
            sec["dead_letter"],
            path + ("dead_letter",),
            ("topic",),
            "{topic: streamdrift-dead-letter}",
        )
        if dl is not None:
            topic = _get(dl, "topic")
            if topic is _ABSENT:
                dead_letter = DeadLetterConfig()
            else:
                checked = _topic(ctx, topic, path + ("dead_letter", "topic"))
                dead_letter = DeadLetterConfig(checked)  # type: ignore[arg-type]
    timestamp = None
    if _get(sec, "timestamp") is not _ABSENT:
        ts = ctx.section(
            sec["timestamp"], path + ("timestamp",), ("path", "unit"), "{path: timestamp, unit: s}"
        )
        if ts is not None:
            ts_path = _default(TimestampConfig, "path")
            if _get(ts, "path") is not _ABSENT:
                ts_path = ctx.key_path(ts["path"], path + ("timestamp", "path"))  # type: ignore[assignment]
            unit = _default(TimestampConfig, "unit")
            if _get(ts, "unit") is not _ABSENT:
                unit = ctx.string(ts["unit"], path + ("timestamp", "unit"), choices=TIMESTAMP_UNITS)  # type: ignore[assignment]
            timestamp = TimestampConfig(ts_path, unit)
    max_bytes = _default(SourceConfig, "max_message_bytes")
    if _get(sec, "max_message_bytes") is not _ABSENT:
        max_bytes = ctx.integer(sec["max_message_bytes"], path + ("max_message_bytes",), 1, 1 << 30)  # type: ignore[assignment]
    return SourceConfig(
        kafka=kafka, dead_letter=dead_letter, timestamp=timestamp, max_message_bytes=max_bytes
    )


def _topic(ctx: _Ctx, value: Any, path: _Path) -> str | _Bad:
    topic = ctx.string(value, path)
    if isinstance(topic, str) and not _TOPIC_RE.match(topic):
        return ctx.error(
            path,
            f"{topic!r} is not a valid Kafka topic name (1-249 characters: letters, digits, '.', '_', '-')",
        )
    return topic


def _bootstrap(ctx: _Ctx, value: Any, path: _Path) -> tuple[str, ...] | _Bad:
    example = 'e.g. "kafka-1:9092,kafka-2:9092" or a list of host:port'
    if isinstance(value, str):
        items: list[Any] = [s.strip() for s in value.split(",")]
        paths: list[_Path] = [path] * len(items)
    elif isinstance(value, list):
        items = list(value)
        paths = [path + (i,) for i in range(len(items))]
    else:
        return ctx.error(
            path,
            f"must be a host:port string or a list of them, {example}; got {_type_name(value)}",
        )
    if not items:
        return ctx.error(path, f"must name at least one broker, {example}")
    servers: list[str] = []
    ok = True
    for item, where in zip(items, paths, strict=True):
        if not isinstance(item, str) or not item.strip():
            ctx.error(where, f"each broker must be a non-empty host:port string, {example}")
            ok = False
            continue
        match = _SERVER_RE.match(item.strip())
        port = match.group(2) if match else None
        if match is None or (port is not None and not 1 <= int(port) <= 65535):
            ctx.error(where, f"{item!r} is not a valid host:port (port 1..65535), {example}")
            ok = False
            continue
        servers.append(item.strip())
    return tuple(servers) if ok else BAD


def _kafka(ctx: _Ctx, value: Any) -> KafkaConfig | None:
    path: _Path = ("source", "kafka")
    sec = ctx.section(
        value, path, _KAFKA_KEYS, "{bootstrap_servers: 127.0.0.1:9092, topics: [inference-events]}"
    )
    if sec is None:
        return None
    kw: dict[str, Any] = {}

    if _get(sec, "bootstrap_servers") is _ABSENT:
        ctx.error(
            path + ("bootstrap_servers",), 'required: the Kafka brokers, e.g. "127.0.0.1:9092"'
        )
        kw["bootstrap_servers"] = BAD
    else:
        kw["bootstrap_servers"] = _bootstrap(
            ctx, sec["bootstrap_servers"], path + ("bootstrap_servers",)
        )

    topics = _get(sec, "topics")
    if topics is _ABSENT:
        kw["topics"] = ctx.error(
            path + ("topics",), "required: a list of topic names, e.g. [inference-events]"
        )
    elif not isinstance(topics, list) or not topics:
        kw["topics"] = ctx.error(
            path + ("topics",),
            "must be a non-empty list of topic names, e.g. [inference-events]; got "
            + ("an empty list" if isinstance(topics, list) else _type_name(topics)),
        )
    else:
        checked = [_topic(ctx, t, path + ("topics", i)) for i, t in enumerate(topics)]
        seen: set[str] = set()
        for i, t in enumerate(checked):
            if isinstance(t, str):
                if t in seen:
                    ctx.error(path + ("topics", i), f"duplicate topic {t!r}")
                seen.add(t)
        kw["topics"] = BAD if _bad(*checked) else tuple(checked)

    for key in ("group_id", "client_id"):
        if _get(sec, key) is not _ABSENT:
            kw[key] = ctx.string(sec[key], path + (key,))
    if _get(sec, "auto_offset_reset") is not _ABSENT:
        kw["auto_offset_reset"] = ctx.string(
            sec["auto_offset_reset"], path + ("auto_offset_reset",), choices=AUTO_OFFSET_RESETS
        )
    if _get(sec, "max_poll_records") is not _ABSENT:
        kw["max_poll_records"] = ctx.integer(
            sec["max_poll_records"], path + ("max_poll_records",), 1, 100_000
        )
    if _get(sec, "poll_timeout_ms") is not _ABSENT:
        kw["poll_timeout_ms"] = ctx.integer(
            sec["poll_timeout_ms"], path + ("poll_timeout_ms",), 0, 3_600_000
        )

    protocol = _default(KafkaConfig, "security_protocol")
    if _get(sec, "security_protocol") is not _ABSENT:
        protocol = ctx.string(
            sec["security_protocol"], path + ("security_protocol",), choices=SECURITY_PROTOCOLS
        )  # type: ignore[assignment]
    kw["security_protocol"] = protocol
    sasl = isinstance(protocol, str) and protocol.startswith("SASL_")
    ssl = isinstance(protocol, str) and protocol.endswith("SSL")
    known_protocol = isinstance(protocol, str)

    if _get(sec, "sasl_mechanism") is not _ABSENT:
        kw["sasl_mechanism"] = ctx.string(
            sec["sasl_mechanism"], path + ("sasl_mechanism",), choices=SASL_MECHANISMS
        )
    if _get(sec, "sasl_username") is not _ABSENT:
        kw["sasl_username"] = ctx.string(sec["sasl_username"], path + ("sasl_username",))
    for key in ("sasl_password", "ssl_password"):
        if _get(sec, key) is not _ABSENT:
            kw[key] = ctx.secret(sec[key], path + (key,))
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if _get(sec, key) is not _ABSENT:
            kw[key] = ctx.file_path(sec[key], path + (key,), must_exist=True)

    if known_protocol:
        for key in ("sasl_mechanism", "sasl_username", "sasl_password"):
            if sasl and key not in kw:
                ctx.error(path + (key,), f"required with security_protocol {protocol}")
            elif not sasl and key in kw:
                ctx.error(
                    path + (key,),
                    f"only used with SASL_PLAINTEXT or SASL_SSL; security_protocol is {protocol}",
                )
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"):
            if not ssl and key in kw:
                ctx.error(
                    path + (key,),
                    f"only used with SSL or SASL_SSL; security_protocol is {protocol}",
                )
    if "ssl_keyfile" in kw and "ssl_certfile" not in kw:
        ctx.error(
            path + ("ssl_certfile",),
            "required with ssl_keyfile (the client certificate of that key)",
        )

    options = _get(sec, "options")
    if options is _ABSENT:
        kw["options"] = MappingProxyType({})
    elif not isinstance(options, Mapping):
        kw["options"] = ctx.error(
            path + ("options",),
            f"must be a mapping of KafkaConsumer arguments, got {_type_name(options)}",
        )
    else:
        for key in options:
            where = path + ("options", key)
            if not isinstance(key, str):
                ctx.error(where, "option names must be strings")
            elif key in _MANAGED_OPTIONS:
                ctx.error(
                    where,
                    f"set source.kafka.{_MANAGED_OPTIONS[key]} instead of passing it in options",
                )
        kw["options"] = MappingProxyType(dict(options))

    if _get(sec, "client") is not _ABSENT:
        kw["client"] = ctx.string(sec["client"], path + ("client",), choices=KAFKA_CLIENTS)
        if kw["client"] == "confluent-kafka" and importlib.util.find_spec("confluent_kafka") \
                is None:
            ctx.error(path + ("client",), "confluent-kafka is not installed: install it with "
                      "`pip install 'streamdrift[confluent]'`, or use client: kafka-python")
    props = _get(sec, "librdkafka")
    if props is not _ABSENT:
        from stream.confluent import MANAGED_PROPERTIES

        if not isinstance(props, Mapping):
            ctx.error(path + ("librdkafka",), "must be a mapping of librdkafka properties "
                      f"(e.g. fetch.wait.max.ms: 100), got {_type_name(props)}")
        else:
            if not isinstance(kw.get("client"), _Bad) and kw.get("client") != "confluent-kafka":
                ctx.error(path + ("librdkafka",), "applies only with client: confluent-kafka; "
                          "kafka-python settings go under source.kafka.options")
            for key, prop in props.items():
                where = path + ("librdkafka", key)
                if not isinstance(key, str):
                    ctx.error(where, "property names must be strings")
                elif key in MANAGED_PROPERTIES:
                    ctx.error(where, f"set source.kafka.{MANAGED_PROPERTIES[key]} instead")
                elif not isinstance(prop, (str, int, float, bool)):
                    ctx.error(where, f"must be a string, number or boolean, got "
                              f"{_type_name(prop)}")
            kw["librdkafka"] = MappingProxyType(dict(props))
    if _get(sec, "options") not in (_ABSENT, {}) and kw.get("client") == "confluent-kafka":
        ctx.error(path + ("options",), "are kafka-python arguments and do not apply with "
                  "client: confluent-kafka; use source.kafka.librdkafka (librdkafka properties)")

    for key in list(kw):
        if key in ("bootstrap_servers", "topics"):
            continue
        if isinstance(kw[key], _Bad):
            del kw[key]  # keep building; the error is recorded
    return KafkaConfig(**kw)


def _detector_list(ctx: _Ctx, value: Any, path: _Path, column_type: str) -> tuple[str, ...] | _Bad:
    allowed = DETECTORS_BY_TYPE[column_type]
    if not isinstance(value, list):
        return ctx.error(
            path,
            f"must be a list of detector names ({', '.join(allowed)}), got {_type_name(value)}",
        )
    result: list[str] = []
    ok = True
    for i, name in enumerate(value):
        where = path + (i,)
        if not isinstance(name, str):
            ctx.error(
                where, f"must be a detector name ({', '.join(allowed)}), got {_type_name(name)}"
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
                    where, f"unknown detector {name!r}{_suggest(name, allowed)}; {_one_of(allowed)}"
                )
            ok = False
        elif name in result:
            ctx.error(where, f"detector {name} is listed twice")
            ok = False
        else:
            result.append(name)
    return tuple(result) if ok else BAD


def _min_effect(
    ctx: _Ctx, value: Any, path: _Path, allowed: Sequence[str], scope: str
) -> dict[str, float] | _Bad:
    if not isinstance(value, Mapping):
        return ctx.error(
            path,
            f"must be a mapping of detector name to minimum effect size, e.g. {{ks: 0.05}}; got {_type_name(value)}",
        )
    out: dict[str, float] = {}
    ok = True
    for name, effect in value.items():
        where = path + (name,)
        if not isinstance(name, str) or name not in ALL_DETECTORS:
            ctx.error(
                where, f"unknown detector{_suggest(name, ALL_DETECTORS)}; {_one_of(ALL_DETECTORS)}"
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
        if isinstance(number, _Bad):
            ok = False
        else:
            out[name] = number
    return out if ok else BAD


def _detection(ctx: _Ctx, value: Any) -> DetectionConfig:
    path: _Path = ("detection",)
    sec = ctx.section(value, path, _DETECTION_KEYS)
    if sec is None:
        return DetectionConfig()
    kw: dict[str, Any] = {}
    if _get(sec, "false_alarm_events") is not _ABSENT:
        kw["false_alarm_events"] = ctx.real(
            sec["false_alarm_events"], path + ("false_alarm_events",), minimum=0.0, strict=True
        )
    if _get(sec, "window") is not _ABSENT:
        kw["window"] = ctx.integer(sec["window"], path + ("window",), 50, 1_000_000)
    window = kw.get("window", _default(DetectionConfig, "window"))
    if _get(sec, "cadence") is not _ABSENT:
        hi = window if isinstance(window, int) else 1_000_000
        kw["cadence"] = ctx.integer(sec["cadence"], path + ("cadence",), 1, hi)
    cadence = kw.get("cadence", _default(DetectionConfig, "cadence"))
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
        if _get(sec, key) is not _ABSENT:
            kw[key] = _detector_list(ctx, sec[key], path + (key,), column_type)
    if _get(sec, "adwin") is not _ABSENT:
        ad = ctx.section(sec["adwin"], path + ("adwin",), ("clock",), "{clock: 32}")
        if ad is not None:
            clock = _default(AdwinConfig, "clock")
            if _get(ad, "clock") is not _ABSENT:
                clock = ctx.integer(ad["clock"], path + ("adwin", "clock"), 1)  # type: ignore[assignment]
            kw["adwin"] = AdwinConfig(clock)
    if _get(sec, "min_effect") is not _ABSENT:
        me = _min_effect(
            ctx, sec["min_effect"], path + ("min_effect",), ALL_DETECTORS, "any column"
        )
        kw["min_effect"] = me if isinstance(me, _Bad) else MappingProxyType(me)
    for key, lo, hi in (("bins", 4, 256), ("top_k", 2, 10_000), ("reservoir_size", 100, 1_000_000)):
        if _get(sec, key) is not _ABSENT:
            kw[key] = ctx.integer(sec[key], path + (key,), lo, hi)
    # Bad values fall back to defaults so that model validation goes on without cascades.
    return DetectionConfig(**{k: v for k, v in kw.items() if not isinstance(v, _Bad)})


def _divisor_near(window: int, cadence: int) -> int:
    divisors = [d for d in range(1, window + 1) if window % d == 0]
    return min(divisors, key=lambda d: (abs(d - cadence), d))


def _metrics(ctx: _Ctx, value: Any) -> MetricsConfig:
    path: _Path = ("metrics",)
    sec = ctx.section(value, path, _METRICS_KEYS, "{port: 9108, host: 0.0.0.0}")
    if sec is None:
        return MetricsConfig()
    kw: dict[str, Any] = {}
    if _get(sec, "port") is not _ABSENT:
        kw["port"] = ctx.integer(sec["port"], path + ("port",), 0, 65535)
    if _get(sec, "host") is not _ABSENT:
        kw["host"] = ctx.string(sec["host"], path + ("host",))
    if _get(sec, "web_config") is not _ABSENT:
        where = path + ("web_config",)
        web = ctx.file_path(sec["web_config"], where, must_exist=True)
        if not isinstance(web, _Bad):
            from stream.webconfig import web_config_errors  # imports this module

            problems = web_config_errors(web)
            for problem in problems:
                ctx.error(where, f"{problem} (in the web config file {web})")
            if problems:
                web = BAD
        kw["web_config"] = web
    return MetricsConfig(**kw)


def _state(ctx: _Ctx, value: Any, source: SourceConfig) -> StateConfig:
    path: _Path = (_STATE_SECTION,)
    sec = ctx.section(
        value,
        path,
        _STATE_KEYS,
        "{enabled: true, topic: streamdrift-state, checkpoint_interval_s: 30}",
    )
    if sec is None:
        return StateConfig()
    kw: dict[str, Any] = {}
    if _get(sec, "enabled") is not _ABSENT:
        enabled = sec["enabled"]
        if isinstance(enabled, bool):
            kw["enabled"] = enabled
        else:
            ctx.error(path + ("enabled",), f"must be true or false, got {_show(enabled)}")
    topic: Any = _default(StateConfig, "topic")
    if _get(sec, "topic") is not _ABSENT:
        topic = _topic(ctx, sec["topic"], path + ("topic",))
    if isinstance(topic, str) and kw.get("enabled", True):
        # the default name counts too: it must not be one of the other topics either
        kafka = source.kafka
        if kafka is not None and isinstance(kafka.topics, tuple) and topic in kafka.topics:
            topic = ctx.error(
                path + ("topic",),
                f"{topic!r} is also in source.kafka.topics; the state topic must be a "
                "topic of its own",
            )
        elif source.dead_letter is not None and topic == source.dead_letter.topic:
            topic = ctx.error(
                path + ("topic",),
                f"{topic!r} is also source.dead_letter.topic; the state topic must be a "
                "topic of its own",
            )
    if isinstance(topic, str):
        kw["topic"] = topic
    if _get(sec, "checkpoint_interval_s") is not _ABSENT:
        interval = ctx.real(
            sec["checkpoint_interval_s"],
            path + ("checkpoint_interval_s",),
            minimum=0.0,
            strict=True,
        )
        if not isinstance(interval, _Bad):
            kw["checkpoint_interval_s"] = interval
    return StateConfig(**kw)


def _models(ctx: _Ctx, value: Any, detection: DetectionConfig) -> tuple[ModelConfig, ...]:
    path: _Path = ("models",)
    if value is _ABSENT or value is None:
        ctx.error(path, "required: a list of models, each with name, baseline and features")
        return ()
    if not isinstance(value, list) or not value:
        ctx.error(path, f"must be a non-empty list of models, got {_type_name(value)}")
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


def _model(ctx: _Ctx, value: Any, path: _Path, detection: DetectionConfig) -> ModelConfig | None:
    sec = ctx.section(
        value,
        path,
        _MODEL_KEYS,
        "{name: credit, baseline: {reference: ref.jsonl}, features: [...]}",
    )
    if sec is None:
        return None
    name: Any = _get(sec, "name")
    if name is _ABSENT:
        name = ctx.error(path + ("name",), "required: the model name, e.g. credit")
    else:
        name = ctx.string(name, path + ("name",))
        if isinstance(name, str) and not _MODEL_NAME_RE.match(name):
            name = ctx.error(
                path + ("name",),
                f"{name!r} is not a valid model name: use letters, digits and underscores, not starting with a digit",
            )

    version: Any = None
    if _get(sec, "version") is not _ABSENT:
        raw_version = sec["version"]
        if isinstance(raw_version, str) and raw_version.strip():
            version = raw_version
        else:
            version = ctx.error(
                path + ("version",),
                f'must be a string; quote it, e.g. version: "1" (got {_type_name(raw_version)})',
            )

    select: Any = None
    if _get(sec, "select") is not _ABSENT:
        select = _select(ctx, sec["select"], path + ("select",))

    baseline: Any = BAD
    if _get(sec, "baseline") is _ABSENT:
        ctx.error(
            path + ("baseline",), "required: {reference: events.jsonl} or {file: baseline.json}"
        )
    else:
        baseline = _baseline(ctx, sec["baseline"], path + ("baseline",))

    columns: dict[str, _Path] = {}
    groups: dict[str, tuple[ColumnConfig, ...]] = {}
    for role, key in (("feature", "features"), ("prediction", "predictions")):
        raw = _get(sec, key)
        if raw is _ABSENT:
            groups[key] = ()
            continue
        if not isinstance(raw, list):
            ctx.error(
                path + (key,),
                f"must be a list of columns ({{name, path, type}}), got {_type_name(raw)}",
            )
            groups[key] = ()
            continue
        built = []
        for j, item in enumerate(raw):
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
    given = [_get(sec, k) for k in ("features", "predictions")]
    if not any(isinstance(g, list) and g for g in given) and all(
        g is _ABSENT or isinstance(g, list) for g in given
    ):
        ctx.error(
            path + ("features",),
            "required: a non-empty list of columns, e.g. [{name: income, path: features.income, type: numeric}]",
        )
    return ModelConfig(
        name=name,
        baseline=baseline,
        features=groups["features"],
        predictions=groups["predictions"],
        version=version,
        select=select,
    )


def _select(ctx: _Ctx, value: Any, path: _Path) -> SelectConfig | _Bad:
    sec = ctx.section(value, path, ("field", "equals"), "{field: model, equals: credit}")
    if sec is None:
        return BAD
    field_path: Any
    if _get(sec, "field") is _ABSENT:
        field_path = ctx.error(
            path + ("field",), "required: the dotted key path to compare, e.g. model"
        )
    else:
        field_path = ctx.key_path(sec["field"], path + ("field",))
    equals = sec.get("equals", _ABSENT)
    if equals is _ABSENT or equals is None:
        equals = ctx.error(
            path + ("equals",),
            "required: the value (string, integer or boolean) that selects the model",
        )
    elif not isinstance(equals, str | int):  # bool is an int
        equals = ctx.error(
            path + ("equals",), f"must be a string, integer or boolean, got {_type_name(equals)}"
        )
    return SelectConfig(field_path, equals)


def _baseline(ctx: _Ctx, value: Any, path: _Path) -> BaselineConfig | _Bad:
    sec = ctx.section(
        value, path, ("reference", "file"), "{reference: events.jsonl} or {file: baseline.json}"
    )
    if sec is None:
        return BAD
    ref, file = _get(sec, "reference"), _get(sec, "file")
    if ref is not _ABSENT and file is not _ABSENT:
        return ctx.error(
            path,
            "give exactly one of reference (events to profile) or file (a built baseline), not both",
        )
    if ref is _ABSENT and file is _ABSENT:
        return ctx.error(
            path,
            "give exactly one of reference (events: .jsonl, .csv, .parquet) or file (a baseline JSON)",
        )
    if ref is not _ABSENT:
        resolved = ctx.file_path(ref, path + ("reference",), must_exist=False)
        if isinstance(resolved, _Bad):
            return BAD
        if resolved.suffix.lower() not in REFERENCE_SUFFIXES:
            return ctx.error(
                path + ("reference",),
                f"must be a .jsonl/.ndjson (one JSON event per line), .csv or .parquet file, got {resolved.name!r}; "
                "a built baseline JSON goes under baseline.file",
            )
        return BaselineConfig(reference=resolved)
    resolved = ctx.file_path(file, path + ("file",), must_exist=False)
    return resolved if isinstance(resolved, _Bad) else BaselineConfig(file=resolved)


def _column(
    ctx: _Ctx, value: Any, path: _Path, role: str, detection: DetectionConfig
) -> ColumnConfig | None:
    sec = ctx.section(
        value, path, _COLUMN_KEYS, "{name: income, path: features.income, type: numeric}"
    )
    if sec is None:
        return None
    name: Any = _get(sec, "name")
    name = (
        ctx.error(path + ("name",), "required: the column name")
        if name is _ABSENT
        else ctx.string(name, path + ("name",))
    )
    col_path: Any = _get(sec, "path")
    if col_path is _ABSENT:
        col_path = ctx.error(
            path + ("path",),
            "required: the dotted key path of the value in the event, e.g. features.income",
        )
    else:
        col_path = ctx.key_path(col_path, path + ("path",))
    col_type: Any = _get(sec, "type")
    if col_type is _ABSENT:
        col_type = ctx.error(path + ("type",), f"required: {_one_of(COLUMN_TYPES)}")
    else:
        col_type = ctx.string(col_type, path + ("type",), choices=COLUMN_TYPES)

    detectors: Any = BAD
    if isinstance(col_type, str):
        detectors = detection.detectors_for(col_type)
        if _get(sec, "detectors") is not _ABSENT:
            detectors = _detector_list(ctx, sec["detectors"], path + ("detectors",), col_type)
    min_effect: Any = {}
    if not _bad(detectors):
        min_effect = {k: v for k, v in detection.min_effect.items() if k in detectors}
        if _get(sec, "min_effect") is not _ABSENT:
            own = _min_effect(
                ctx, sec["min_effect"], path + ("min_effect",), detectors, "this column"
            )
            if not isinstance(own, _Bad):
                min_effect.update(own)
    elif _get(sec, "min_effect") is not _ABSENT and not isinstance(sec["min_effect"], Mapping):
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
