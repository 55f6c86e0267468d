"""The configuration tree: frozen dataclasses, defaults applied, validated by the parsers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from detectors import catalogue
from stream.config.attribution import AttributionConfig
from stream.config.errors import Secret
from stream.config.formats import AvroConfig, OpenInferenceConfig
from stream.config.segments import SegmentConfig

#: the detector kinds each column type takes, and their defaults, from the detectors' catalogue
COLUMN_TYPES: Final = catalogue.COLUMN_TYPES
DETECTORS_BY_TYPE: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {t: catalogue.detectors_for(t) for t in COLUMN_TYPES}
)
DEFAULT_DETECTORS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {t: catalogue.default_detectors(t) for t in COLUMN_TYPES}
)
NUMERIC_DETECTORS: Final = DEFAULT_DETECTORS["numeric"]
CATEGORICAL_DETECTORS: Final = DEFAULT_DETECTORS["categorical"]
ALL_DETECTORS: Final = catalogue.KINDS
TIMESTAMP_UNITS: Final = ("s", "ms", "us", "iso8601")
AUTO_OFFSET_RESETS: Final = ("earliest", "latest")
#: Kafka clients ``streamdrift run`` can consume with (source.kafka.client)
KAFKA_CLIENTS: Final = ("kafka-python", "confluent-kafka")
SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
REFERENCE_SUFFIXES: Final = (".jsonl", ".ndjson", ".csv", ".parquet")


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    bootstrap_servers: tuple[str, ...]
    topics: tuple[str, ...]
    group_id: str = "streamdrift"
    auto_offset_reset: str = "latest"
    #: a poll batch: the pipeline costs ~1.9 ms per batch besides its per-event work, so a
    #: bigger batch is cheaper per event, until the batch (~0.8 KB per JSON event) no longer
    #: stays in the CPU's caches between poll, decode and the detectors: with confluent-kafka
    #: 2000 -> 3000 cut ~0.35 CPU us per event, 4000-8000 cost more than 3000
    #: (bench/results/pipeline-quick.md)
    max_poll_records: int = 3000
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
class DriftEventsConfig:
    """Drift episodes written to a Kafka topic: one record when a column's episode opens on
    a partition, one when it closes (see docs/reliability.md#drift-events)."""

    topic: str = "streamdrift-drift-events"


#: compression codecs of the repartition topic's records (``none``: uncompressed)
REPARTITION_CODECS: Final = ("none", "gzip", "snappy", "lz4", "zstd")


@dataclass(frozen=True, slots=True)
class RepartitionConfig:
    """The first stage of ``streamdrift run`` on a keyed topic (see README, "Keyed topics"):
    it reads the source topics, validates each event, and writes the valid ones (original
    bytes) spread evenly over the partitions of an internal topic, in the order of their
    Kafka timestamps; the monitors then read that topic."""

    #: the internal topic (default ``<group_id>-repartition``, created if missing)
    topic: str
    #: its partition count: 1 (the default) gives each model one monitor that sees all of
    #: its traffic; more spread the monitors over processes, each seeing 1/partitions of it
    partitions: int = 1
    #: compression of the records written to it
    compression: str = "lz4"
    #: its ``retention.ms``: how long the monitors may fall behind the first stage
    retention_ms: int = 86_400_000
    #: the consumer group of the monitors on the internal topic (default
    #: ``<group_id>-monitor``; the first stage consumes the source in ``group_id``)
    group_id: str = ""
    #: one CUSUM per numeric feature pooled over the monitors (stream/runtime/pool.py): the
    #: monitors publish their standardised values to ``pool_topic`` and one pool member
    #: merges them in event order; the monitors' own CUSUMs of those columns do not alarm
    pooled: bool = False
    #: the one-partition topic of the pooled values (default ``<group_id>-pool``); its
    #: consumer group, that elects the pool member, is named the same
    pool_topic: str = ""
    #: bytes of pool records a monitor process keeps while publishing them fails: over it
    #: the monitors take no new batch (partitions paused, polled records given back) until
    #: the records are acknowledged (docs/reliability.md, keyed topics)
    pool_outbox_max_bytes: int = 64 * 1024 * 1024
    #: ``one``: one member of the first stage's group forwards every source partition
    #: (onewriter.py, frames version 2); ``several``: the members split the source
    #: partitions (by load, balance.py) and each forwards its own, in version-3 frames
    #: whose watermark lets the monitors merge the writers by event time (writers.py)
    writers: str = "one"
    #: ``several``: a caught-up, idle writer sends a heartbeat frame to every internal
    #: partition this often (ms), so the monitors need not wait for it
    heartbeat_ms: int = 1_000
    #: the producers' delivery delay and clock skew the first stage tolerates (ms): records
    #: newer than now minus this wait so that another partition's late producer batch of
    #: the same milliseconds merges in order (catchup.Lateness; 0: no wait); ``several``:
    #: an idle writer's heartbeat promises no later record older than now minus this
    lateness_ms: int = 2_000


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
    drift_events: DriftEventsConfig | None = None
    repartition: RepartitionConfig | None = None
    #: message format: json (default), open-inference or avro (stream.config.formats)
    format: str = "json"
    open_inference: OpenInferenceConfig | None = None
    avro: AvroConfig | None = None


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


# -- labels.estimate (estimated performance without labels, CBPE; stream/config/estimate.py)
@dataclass(frozen=True, slots=True)
class EstimateConfig:
    """``labels.estimate``: confidence-based estimates of a binary model's quality."""

    #: predictions per partition in the recent-window estimate
    window: int = 1000
    #: auto (recalibrate when the labelled reference fails the test) | always | never
    calibration: str = "auto"


@dataclass(frozen=True, slots=True)
class LabelsConfig:
    """A model's ground truth (``labels:``; see stream.config.labels and docs/labels.md)."""

    #: key path of the id in an inference event
    id_path: tuple[str, ...]
    #: key path of the true value in a label event
    label_path: tuple[str, ...]
    #: binary | multiclass | regression
    task: str
    #: the Kafka topic of the label events (None: they come in the inference stream)
    topic: str | None = None
    #: which events of the inference stream are label events (when ``topic`` is None)
    select: SelectConfig | None = None
    #: key path of the id in a label event (None: ``id_path``)
    label_id_path: tuple[str, ...] | None = None
    #: key path of a label event's time (None: ``source.timestamp.path``)
    timestamp_path: tuple[str, ...] | None = None
    #: binary: the label value that means positive
    positive_class: str | int | None = None
    #: binary: the numeric prediction column holding P(positive)
    score_column: str | None = None
    #: binary: score >= threshold predicts positive
    threshold: float = 0.5
    #: multiclass (categorical) or regression (numeric): the predicted value's column
    prediction_column: str | None = None
    #: seconds of event time a prediction waits for its label (the longest label delay)
    horizon_s: float = 86_400.0
    #: seconds of event time a label that came before its prediction waits for it
    label_wait_s: float = 60.0
    #: predictions waiting for labels per partition (the oldest are expired beyond it)
    max_pending: int = 100_000
    #: joined pairs in the recent-window quality metrics
    window: int = 1000
    #: estimated performance without labels (binary only; None: off)
    estimate: EstimateConfig | None = None

    @property
    def label_id(self) -> tuple[str, ...]:
        return self.id_path if self.label_id_path is None else self.label_id_path

    @property
    def prediction(self) -> str:
        """The prediction column the join reads (the score for binary tasks)."""
        name = self.score_column if self.task == "binary" else self.prediction_column
        assert name is not None
        return name


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """A group of numeric columns watched jointly (``models[].multivariate``)."""

    name: str
    columns: tuple[str, ...]
    method: str = "auto"  # "auto" | "moments" | "rff"


# -- embedding columns (#19 item 2; stream.config.vectors) ---------------------------
@dataclass(frozen=True, slots=True)
class VectorConfig:
    """An embedding feature (``type: vector``): an array of ``dim`` numbers per event."""

    name: str
    path: tuple[str, ...]
    dim: int
    #: principal directions of the reference the test watches (detectors.embedding)
    components: int = 8


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    baseline: BaselineConfig
    features: tuple[ColumnConfig, ...] = ()
    predictions: tuple[ColumnConfig, ...] = ()
    version: str | None = None
    select: SelectConfig | None = None
    #: ground truth joined to the predictions (None: no labels)
    labels: LabelsConfig | None = None
    #: multivariate groups (stream.config.multivariate)
    multivariate: tuple[GroupConfig, ...] = ()
    #: per-slice monitoring (stream.config.segments.SegmentConfig)
    segments: tuple[SegmentConfig, ...] = ()
    #: embedding features (``type: vector``), kept out of ``columns``
    vectors: tuple[VectorConfig, ...] = ()
    # -- bias drift (#16.2) -------------------------------------------------------------
    #: facets and the positive prediction (stream.config.bias.BiasConfig; None: none)
    bias: Any = None
    # -- attribution drift and root cause (#16 items 3-4; stream.config.attribution) --
    #: where events carry per-feature attributions (None: no attribution test)
    attributions: AttributionConfig | None = None
    #: feature -> configured importance (root cause without attributions)
    importances: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def columns(self) -> tuple[ColumnConfig, ...]:
        """Features then predictions."""
        return self.features + self.predictions


@dataclass(frozen=True, slots=True)
class AdwinConfig:
    clock: int = 32


@dataclass(frozen=True, slots=True)
class PartitionCheckConfig:
    """The comparison of partitions with each other (``detection.partition_check``; see
    stream.engine.skew): do the partitions this process holds see alike streams?"""

    enabled: bool = True
    #: seconds between checks (the first as soon as two partitions have ``min_events``)
    interval_s: float = 60.0
    #: recent events per partition (on average) and model that a check compares; the
    #: windows of all partitions cover the same stretch of the model's stream
    window: int = 10_000
    #: values of a column a partition needs in its window to take part
    min_events: int = 1_000
    #: probability that one check of a model warns on alike partitions (all its columns)
    false_alarm: float = 1e-6
    #: smallest total-variation distance between a partition and the pooled stream worth
    #: a warning
    min_effect: float = 0.05
    #: seconds between repeats of the warning while the partitions stay unlike
    repeat_s: float = 3600.0


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
    #: an episode's evidence persists while a statistic is above release x threshold
    release: float = 0.5
    #: events without evidence after which an episode closes (None: one window)
    close_after_events: int | None = None
    partition_check: PartitionCheckConfig = field(default_factory=PartitionCheckConfig)

    def detectors_for(self, column_type: str) -> tuple[str, ...]:
        """The default detector set of a column type."""
        if column_type == "numeric":
            return self.numeric_detectors
        return self.categorical_detectors


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    port: int = 9108
    host: str = "0.0.0.0"
    #: exporter-toolkit web-config file (TLS, basic auth) of the endpoint; see stream.config.web
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

