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

Modules: :mod:`~stream.config.tree` (the frozen tree), :mod:`~stream.config.keys` (the
key-path validation toolkit, shared with the web config), one parser module per group of
sections (:mod:`~stream.config.kafka`, :mod:`~stream.config.models`,
:mod:`~stream.config.web`) and :mod:`~stream.config.load` (files and the top level).
Nothing here imports a Kafka client or a server.

>>> cfg = parse_config({"models": [{"name": "m", "baseline": {"file": "/b.json"},
...     "features": [{"name": "x", "path": "features.x", "type": "numeric"}]}]}, "/")
>>> col = cfg.models[0].features[0]
>>> col.path, col.detectors
(('features', 'x'), ('ks', 'adwin', 'cusum', 'missing', 'out_of_range'))
>>> cfg.source.kafka is None, cfg.detection.window, cfg.metrics.port
(True, 1000, 9108)
"""

from __future__ import annotations

from stream.config.errors import ConfigError, Secret
from stream.config.keys import format_key_path, parse_dotted_path
from stream.config.load import check_paths, load_config, parse_config, require_kafka
from stream.config.tree import (
    ALL_DETECTORS,
    CATEGORICAL_DETECTORS,
    COLUMN_TYPES,
    DETECTORS_BY_TYPE,
    NUMERIC_DETECTORS,
    TIMESTAMP_UNITS,
    BaselineConfig,
    ColumnConfig,
    Config,
    DeadLetterConfig,
    DetectionConfig,
    DriftEventsConfig,
    EstimateConfig,
    KafkaConfig,
    LabelsConfig,
    MetricsConfig,
    ModelConfig,
    PartitionCheckConfig,
    RepartitionConfig,
    SelectConfig,
    SourceConfig,
    StateConfig,
    TimestampConfig,
)

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
    "PartitionCheckConfig",
    "DriftEventsConfig",
    "KafkaConfig",
    "EstimateConfig",
    "LabelsConfig",
    "MetricsConfig",
    "ModelConfig",
    "RepartitionConfig",
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
