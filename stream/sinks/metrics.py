"""Prometheus exposition: one custom collector reading a pipeline snapshot.

Nothing in the hot path touches a metric: every figure is computed from the
detectors' state when Prometheus scrapes.  The metric set is documented in
``docs/metrics.md`` and in the README.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, make_wsgi_app, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

import stream
from stream.config import ConfigError
from stream.config.web import WebConfig, load_web_config
from stream.engine.figures import HealthFigures, RunnerHealth
from stream.engine.pipeline import BATCH_BUCKETS, Pipeline
from stream.engine.skew import CAUSES as SKEW_CAUSES
from stream.engine.skew import SkewFigures
from stream.formats.batch import INVALID_REASONS
from stream.sinks.attribution_metrics import attribution_families
from stream.sinks.bias_metrics import bias_families
from stream.sinks.http import make_server
from stream.sinks.multivariate_metrics import group_families
from stream.sinks.segment_metrics import segment_families
from stream.sinks.vector_metrics import vector_families

log = logging.getLogger("streamdrift.metrics")

COL = ["model", "feature", "role"]
DET = ["model", "feature", "role", "detector"]
#: reasons of streamdrift_source_errors_total (every one is exported, 0 until it happens)
SOURCE_ERROR_REASONS = ("unsupported_codec",)
#: reasons of streamdrift_consumer_restarts_total (stream/sources/joinwatch.py)
CONSUMER_RESTART_REASONS = ("group_join_stalled",)
#: results of drift episode records (``duplicate``: already written before a restore)
DRIFT_EVENT_RESULTS = ("ok", "failed", "duplicate")


def _counts(name: str, doc: str, label: str, keys: Iterable[str],
            counts: Mapping[str, int]) -> CounterMetricFamily:
    """A counter family with one sample per key (0 for a key not counted yet)."""
    family = CounterMetricFamily(name, doc, labels=[label])
    for key in keys:
        family.add_metric([key], counts.get(key, 0))
    return family


def _num(x: Any) -> float:
    if x is None:
        return 0.0
    x = float(x)
    return x if math.isfinite(x) else 0.0


class StreamdriftCollector(Collector):
    """Builds every ``streamdrift_*`` metric family from :meth:`Pipeline.snapshot` and,
    under ``run``, the Kafka runner's :meth:`RunnerHealth.snapshot`."""

    def __init__(self, pipeline: Pipeline, health: RunnerHealth | None = None) -> None:
        self.pipeline = pipeline
        self.health = health

    def describe(self) -> list[Metric]:  # no describe-time collection
        return []

    def collect(self) -> Iterator[Metric]:
        snap = self.pipeline.snapshot()
        health = self.health.snapshot() if self.health is not None else HealthFigures()
        det_fams = {
            "statistic": GaugeMetricFamily("streamdrift_drift_statistic",
                                           "Current drift statistic of the detector.", labels=DET),
            "threshold": GaugeMetricFamily("streamdrift_drift_threshold",
                                           "Calibrated alarm threshold of the statistic.",
                                           labels=DET),
            "p_value": GaugeMetricFamily("streamdrift_drift_p_value",
                                         "Nominal p-value of the current window test.",
                                         labels=DET),
            "score": GaugeMetricFamily("streamdrift_drift_score",
                                       "Statistic divided by threshold; >= 1 means alarming.",
                                       labels=DET),
            "drift": GaugeMetricFamily("streamdrift_drift_active",
                                       "1 while the detector is in the alarm state.", labels=DET),
            "window_values": GaugeMetricFamily("streamdrift_drift_window_values",
                                               "Values in the detector's current window.",
                                               labels=DET),
        }
        alarms = CounterMetricFamily("streamdrift_drift_alarms",
                                     "Alarms raised by the detector.", labels=DET)
        distance = GaugeMetricFamily("streamdrift_distance",
                                     "Distance of the recent window to the baseline.",
                                     labels=[*COL, "distance"])
        ratios = {
            "missing_ratio": GaugeMetricFamily(
                "streamdrift_missing_ratio", "Share of missing values in the recent window.",
                labels=COL),
            "invalid_ratio": GaugeMetricFamily(
                "streamdrift_invalid_ratio", "Share of invalid values in the recent window.",
                labels=COL),
            "out_of_range_ratio": GaugeMetricFamily(
                "streamdrift_out_of_range_ratio",
                "Share of values outside the baseline's range in the recent window.", labels=COL),
            "unseen_ratio": GaugeMetricFamily(
                "streamdrift_unseen_ratio",
                "Share of categories unseen in the baseline in the recent window.", labels=COL),
        }
        totals = {
            "values": CounterMetricFamily("streamdrift_values", "Valid values seen.", labels=COL),
            "missing": CounterMetricFamily("streamdrift_missing_values", "Missing values seen.",
                                           labels=COL),
            "invalid": CounterMetricFamily("streamdrift_invalid_values", "Invalid values seen.",
                                           labels=COL),
        }
        info = GaugeMetricFamily("streamdrift_model_info", "Model version and baseline in use.",
                                 labels=["model", "version", "baseline_id"])
        processed = CounterMetricFamily("streamdrift_events_processed",
                                        "Valid events routed to the model and processed.",
                                        labels=["model"])
        bad_ts = CounterMetricFamily("streamdrift_invalid_timestamps",
                                     "Processed events whose event timestamp is not a time.",
                                     labels=["model"])
        last_ts = GaugeMetricFamily("streamdrift_last_event_timestamp_seconds",
                                    "Event time of the newest processed event.", labels=["model"])
        lag = GaugeMetricFamily("streamdrift_event_lag_seconds",
                                "Processing time minus event time of the newest event.",
                                labels=["model"])
        drifting = GaugeMetricFamily("streamdrift_model_drifting_columns",
                                     "Columns with at least one active alarm.",
                                     labels=["model", "role"])
        incomplete = CounterMetricFamily(
            "streamdrift_incomplete_events",
            "Processed events lacking at least half of the model's columns (missing or "
            "invalid); not fed to the columns' detectors.", labels=["model"])
        incomplete_ratio = GaugeMetricFamily(
            "streamdrift_incomplete_ratio",
            "Share of incomplete events in the model's recent window.", labels=["model"])
        quality_active = GaugeMetricFamily(
            "streamdrift_data_quality_active",
            "1 while the model's share of incomplete events is above its threshold.",
            labels=["model"])

        for model, m in snap.models.items():
            info.add_metric([model, m.version, m.baseline_id], 1.0)
            processed.add_metric([model], m.processed)
            bad_ts.add_metric([model], m.invalid_timestamps)
            if m.last_event_ts is not None:
                last_ts.add_metric([model], _num(m.last_event_ts))
                lag.add_metric([model], _num(m.event_lag))
            count = {"feature": 0, "prediction": 0}
            for col, s in m.columns.items():
                base = [model, col, s.role]
                count[s.role] = count.get(s.role, 0) + int(s.drift)
                for kind, d in s.detectors.items():
                    labels = [*base, kind]
                    for key, fam in det_fams.items():
                        value = getattr(d, key)
                        if key == "p_value" and value is None:
                            continue
                        fam.add_metric(labels, _num(value))
                    alarms.add_metric(labels, d.alarms)
                for name, value in s.distances.items():
                    distance.add_metric([*base, name], _num(value))
                for key, fam in ratios.items():
                    if key in s.ratios:
                        fam.add_metric(base, _num(s.ratios[key]))
                totals["values"].add_metric(base, s.values)
                totals["missing"].add_metric(base, s.missing)
                totals["invalid"].add_metric(base, s.invalid)
            for role, n in count.items():
                drifting.add_metric([model, role], n)
            incomplete.add_metric([model], m.quality.incomplete)
            incomplete_ratio.add_metric([model], _num(m.quality.incomplete_ratio))
            quality_active.add_metric([model], float(m.quality.active))

        yield from det_fams.values()
        yield alarms
        yield distance
        yield from ratios.values()
        yield from totals.values()
        yield from (info, processed, bad_ts, last_ts, lag, drifting)
        yield from (incomplete, incomplete_ratio, quality_active)
        yield from _skew_families(snap.skew)
        yield from group_families(snap.models)
        yield from segment_families(snap.segments)
        yield from vector_families(snap.vectors)
        yield from bias_families(snap.bias)  # bias drift (#16.2)
        yield from attribution_families(snap.attribution, snap.root_causes)

        consumed = CounterMetricFamily("streamdrift_events_consumed",
                                       "Messages read from the source, valid or not.")
        consumed.add_metric([], snap.consumed)
        yield consumed
        # the format's own reasons (source.format) once counted, after the JSON ones
        reasons = (*INVALID_REASONS, *sorted(set(snap.invalid) - set(INVALID_REASONS)))
        yield _counts("streamdrift_events_invalid", "Messages rejected, by reason.", "reason",
                      reasons, snap.invalid)
        cum, buckets = 0, []
        for bound, n in zip(BATCH_BUCKETS, snap.batch_counts, strict=False):
            cum += n
            buckets.append((repr(float(bound)), cum))
        buckets.append(("+Inf", sum(snap.batch_counts)))
        yield HistogramMetricFamily("streamdrift_batch_processing_seconds",
                                    "Time to decode and process one poll batch.",
                                    buckets=buckets, sum_value=snap.batch_sum)
        g = GaugeMetricFamily("streamdrift_last_batch_timestamp_seconds",
                              "Wall-clock time at which the last batch (or empty poll) finished.")
        g.add_metric([], snap.last_batch_ts)
        yield g
        cl = GaugeMetricFamily("streamdrift_consumer_lag_messages",
                               "End offset minus consumer position, per partition.",
                               labels=["topic", "partition"])
        for (topic, part), n in sorted(health.consumer_lag.items()):
            cl.add_metric([topic, str(part)], n)
        yield cl
        up = GaugeMetricFamily("streamdrift_source_up",
                               "1 while the source is reachable and every assigned partition "
                               "can be read.")
        up.add_metric([], health.source_up)
        yield up
        yield _counts("streamdrift_source_errors",
                      "Partitions the consumer stopped reading, by reason.", "reason",
                      SOURCE_ERROR_REASONS, health.source_errors)
        yield _counts("streamdrift_consumer_restarts",
                      "Kafka consumers closed and built again, by reason (group_join_stalled: "
                      "still joining the group session_timeout_ms + request_timeout_ms after "
                      "its JoinGroup response).", "reason", CONSUMER_RESTART_REASONS,
                      health.consumer_restarts)
        yield _counts("streamdrift_dead_letter", "Dead-letter writes by result.", "result",
                      ("ok", "failed"), health.dead_letter)
        if health.repartition:  # only with source.repartition
            yield _counts("streamdrift_repartition_records",
                          "Valid events written to the repartition topic (source.repartition), "
                          "by result.", "result", ("ok", "failed"), health.repartition)
        if health.writer_unaligned is not None:  # a first-stage writer of several
            un = GaugeMetricFamily(
                "streamdrift_writer_unaligned",
                "1 while this process's first-stage writer is one of several and cannot hold "
                "back with the others: its process's monitors hold no internal partition "
                "(or it runs --stage repartition), so on a backlog the other writers' "
                "messages can reach the monitors late.")
            un.add_metric([], health.writer_unaligned)
            yield un
        yield _counts("streamdrift_drift_events",
                      "Drift episode records (source.drift_events), by result.", "result",
                      DRIFT_EVENT_RESULTS, health.drift_events)
        yield _counts("streamdrift_state_checkpoints",
                      "Detector-state checkpoints written, by result.", "result",
                      ("ok", "failed"), health.checkpoints)
        yield _counts("streamdrift_state_restores", "Partition states on assignment, by outcome.",
                      "outcome", ("checkpoint", "fresh", "ignored", "failed"), health.restores)
        if health.last_checkpoint_ts is not None:
            lc = GaugeMetricFamily("streamdrift_state_last_checkpoint_timestamp_seconds",
                                   "Wall-clock time of the last acknowledged checkpoint.")
            lc.add_metric([], _num(health.last_checkpoint_ts))
            yield lc
        pc = CounterMetricFamily("streamdrift_partition_messages_consumed",
                                 "Messages consumed by this process, per partition.",
                                 labels=["topic", "partition"])
        for (topic, part), fig in sorted(snap.partitions.items()):
            if topic:
                pc.add_metric([str(topic), str(part)], fig.consumed)
        yield pc
        bi = GaugeMetricFamily("streamdrift_build_info", "Running streamdrift version.",
                               labels=["version"])
        bi.add_metric([stream.__version__], 1.0)
        yield bi


def _skew_families(skew: Mapping[str, SkewFigures]) -> Iterator[Metric]:
    """The partition check's families (stream.engine.skew): per model once it ran, per
    column once it was tested."""
    score = GaugeMetricFamily(
        "streamdrift_partition_skew_score",
        "Homogeneity statistic of the column across partitions / its threshold; >= 1 means "
        "the partitions differ more than chance allows.", labels=COL)
    effect = GaugeMetricFamily(
        "streamdrift_partition_skew_effect",
        "Largest total-variation distance between a partition and all partitions.",
        labels=COL)
    active = GaugeMetricFamily(
        "streamdrift_partition_skew_active",
        "1 while the column's partitions differ (a skew episode is open), by likely cause.",
        labels=[*COL, "cause"])
    parts = GaugeMetricFamily("streamdrift_partition_skew_partitions",
                              "Partitions compared by the last partition check.",
                              labels=["model"])
    checks = CounterMetricFamily("streamdrift_partition_skew_checks",
                                 "Partition checks that compared at least two partitions.",
                                 labels=["model"])
    for model, fig in skew.items():
        parts.add_metric([model], fig.partitions)
        checks.add_metric([model], fig.checks)
        for col, c in fig.columns.items():
            base = [model, col, c.role]
            score.add_metric(base, _num(c.score))
            effect.add_metric(base, _num(c.effect))
            for cause in SKEW_CAUSES:
                active.add_metric([*base, cause], float(c.active and c.cause == cause))
    yield from (score, effect, active, parts, checks)


def make_registry(pipeline: Pipeline, health: RunnerHealth | None = None
                  ) -> CollectorRegistry:
    """A fresh registry holding only the streamdrift collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StreamdriftCollector(pipeline, health))
    if getattr(pipeline, "labels", None) is not None:  # a model has labels:
        from stream.sinks.label_metrics import LabelCollector

        registry.register(LabelCollector(pipeline))
    if health is not None and health.writer_merge is not None:  # source.repartition
        from stream.sinks.merge_metrics import WriterMergeCollector

        registry.register(WriterMergeCollector(health.writer_merge))
    if health is not None and health.pool is not None:  # source.repartition.pooled
        from stream.sinks.pool_metrics import PoolCollector

        registry.register(PoolCollector(health.pool, health.pool_outbox))
    return registry


_FROM_CONFIG: Any = object()


def serve(
    pipeline: Pipeline,
    host: str,
    port: int,
    web_config: str | os.PathLike[str] | WebConfig | None = _FROM_CONFIG,
    health: RunnerHealth | None = None,
) -> tuple[Any, Any, int]:
    """Serve ``/metrics`` in a background thread; returns (server, thread, bound port).

    ``web_config`` is an exporter-toolkit web-config file (TLS, client certificates, basic
    auth; see :mod:`stream.config.web`), by default the pipeline's ``metrics.web_config``.
    Without one the endpoint is plain HTTP from prometheus_client, as before.  An invalid
    file raises :class:`~stream.config.ConfigError` naming the key, before anything binds.
    ``server.shutdown()`` stops serving; ``server.scheme`` is ``http`` or ``https``.
    """
    if web_config is _FROM_CONFIG:
        metrics = getattr(getattr(pipeline, "config", None), "metrics", None)
        web_config = getattr(metrics, "web_config", None)
    registry = make_registry(pipeline, health)
    if web_config is None:
        try:
            server, thread = start_http_server(port, addr=host, registry=registry)
        except (OSError, OverflowError) as exc:
            raise _cannot_listen(host, port, exc) from None
        server.scheme = "http"  # type: ignore[attr-defined]
        return server, thread, int(server.server_port)
    wc = web_config if isinstance(web_config, WebConfig) else load_web_config(web_config)
    try:
        secure = make_server(make_wsgi_app(registry), host, port, wc)
    except (OSError, OverflowError) as exc:
        raise _cannot_listen(host, port, exc) from None
    secure.scheme = "https" if wc.tls is not None else "http"  # type: ignore[attr-defined]
    thread = threading.Thread(target=secure.serve_forever, kwargs={"poll_interval": 0.1},
                              name="streamdrift-metrics", daemon=True)
    thread.start()
    log.info("metrics endpoint secured", extra={**wc.describe(), "web_config": str(wc.path)})
    return secure, thread, int(secure.server_port)


def _cannot_listen(host: str, port: int, exc: BaseException) -> ConfigError:
    """The one-line error of a metrics endpoint that cannot bind (port in use, bad host)."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return ConfigError(f"metrics: cannot listen on {host}:{port}: {reason}; choose a free "
                       f"metrics.port (or --metrics-port) and a local metrics.host")
