"""The ``labels:`` key of a model: where its ground truth comes from and how it is joined.

Labels arrive late, on their own Kafka topic (``topic``), keyed by the id of the
inference event they belong to.  ``streamdrift run`` joins each label with its prediction
(see :mod:`stream.engine.labels`) and exports model-quality metrics; ``replay --labels
FILE`` merges a file of label events by event time.

.. code-block:: yaml

    labels:
      topic: credit-labels            # the label events (Kafka); co-partitioned when scaled out
      # select: {field: kind, equals: label}   # or: label events in the inference topic
      id_path: request_id             # the id in an inference event
      label_id_path: request_id       # the id in a label event (default: id_path)
      label_path: label               # the true value in a label event
      timestamp_path: timestamp       # the event time of a label event (default: source.timestamp.path)
      task: binary                    # binary | multiclass | regression
      positive_class: 1               # binary: the label value that means positive
      score_column: score             # binary: the prediction column with P(positive)
      threshold: 0.5                  # binary: score >= threshold predicts positive
      horizon_s: 86400                # the longest label delay (event time)
      label_wait_s: 60                # how long a label that came first waits for its prediction
      max_pending: 100000             # predictions waiting per partition (memory and checkpoint bound)
      window: 1000                    # joined pairs in the recent-window metrics
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from stream.config.estimate import parse_estimate
from stream.config.keys import ABSENT, BAD, Bad, Ctx, KeyPath, get_key, type_name
from stream.config.tree import ColumnConfig, LabelsConfig, SelectConfig

LABEL_TASKS: Final = ("binary", "multiclass", "regression")
#: the share of a model's false-alarm rate its concept-drift detector takes (the CUSUMs of
#: the joined errors, detectors.concept): the model's other monitors (input columns,
#: segments, vectors, facets, attributions) split the rest as before
CONCEPT_SHARE: Final = 0.1


def concept_budget(model: Any) -> tuple[float, float]:
    """(factor of ``false_alarm_events`` for the model's other monitors, factor for its
    concept detector) of a ModelConfig (or None): with labels and a reference (where the
    detector's labelled null comes from), the concept detector takes :data:`CONCEPT_SHARE`
    of the model's rate, so the model keeps its one knob.  The detector counts joined
    pairs, at most one per model event, so its alarms per model event are at most its
    share.  A reference without labels builds no detector; its share is then left unused.

    >>> concept_budget(None)
    (1.0, 1.0)
    """
    baseline = getattr(model, "baseline", None)
    if getattr(model, "labels", None) is None or getattr(baseline, "reference", None) is None:
        return 1.0, 1.0
    return 1.0 / (1.0 - CONCEPT_SHARE), 1.0 / CONCEPT_SHARE

_KEYS: Final = ("topic", "select", "id_path", "label_id_path", "label_path", "timestamp_path", "task",
                "positive_class", "score_column", "threshold", "prediction_column",
                "horizon_s", "label_wait_s", "max_pending", "window",
                "estimate")  # estimate: stream/config/estimate.py
_EXAMPLE: Final = ("{topic: credit-labels, id_path: request_id, label_path: label, task: binary, "
                   "positive_class: 1, score_column: score, horizon_s: 86400}")


def parse_labels(ctx: Ctx, value: Any, path: KeyPath,
                 predictions: Sequence[ColumnConfig]) -> LabelsConfig | Bad:
    """Validate a model's ``labels:`` section; ``predictions``: the model's prediction columns
    (the score or predicted column must be one of them)."""
    sec = ctx.section(value, path, _KEYS, _EXAMPLE)
    if sec is None:
        return BAD
    if not sec:
        return ctx.error(path, f"must name at least topic, id_path, label_path and task, e.g. "
                               f"{_EXAMPLE}")
    kw: dict[str, Any] = {}
    ok = True

    def need(key: str, hint: str) -> Any:
        nonlocal ok
        raw = get_key(sec, key)
        if raw is ABSENT:
            ok = False
            ctx.error(path + (key,), f"required: {hint}")
        return raw

    topic, select = get_key(sec, "topic"), get_key(sec, "select")
    if (topic is ABSENT) == (select is ABSENT):
        ok = False
        ctx.error(path, "give exactly one of topic (label events on a Kafka topic of their own, "
                        "e.g. topic: credit-labels) or select (label events in the inference "
                        "topic, e.g. select: {field: kind, equals: label})")
    elif topic is not ABSENT:
        kw["topic"] = ctx.string(topic, path + ("topic",))
    else:
        kw["select"] = _select(ctx, select, path + ("select",))
    for key, hint in (("id_path", "the dotted key path of the id in an inference event, "
                                  "e.g. request_id"),
                      ("label_path", "the dotted key path of the true value in a label event, "
                                     "e.g. label")):
        raw = need(key, hint)
        if raw is not ABSENT:
            kw[key] = ctx.key_path(raw, path + (key,))
    for key in ("label_id_path", "timestamp_path"):
        if get_key(sec, key) is not ABSENT:
            kw[key] = ctx.key_path(sec[key], path + (key,))
    task = need("task", "binary, multiclass or regression")
    if task is not ABSENT:
        task = kw["task"] = ctx.string(task, path + ("task",), choices=LABEL_TASKS)

    numeric = {c.name for c in predictions if c.type == "numeric"}
    categorical = {c.name for c in predictions if c.type == "categorical"}

    def column(key: str, allowed: set[str], kind: str) -> None:
        nonlocal ok
        raw = get_key(sec, key)
        if raw is ABSENT:
            ok = False
            ctx.error(path + (key,), f"required for task {task}: the name of a {kind} prediction "
                                     f"column of this model ({_names(allowed)})")
            return
        name = ctx.string(raw, path + (key,))
        if isinstance(name, str) and name not in allowed:
            ok = False
            ctx.error(path + (key,), f"{name!r} is not a {kind} prediction column of this model; "
                                     f"add it under predictions or use one of {_names(allowed)}")
            return
        kw[key] = name

    binary_only = ("positive_class", "score_column", "threshold")
    if task == "binary":
        column("score_column", numeric, "numeric")
        pos = get_key(sec, "positive_class")
        if pos is ABSENT:
            ok = False
            ctx.error(path + ("positive_class",),
                      "required for task binary: the label value that means positive, e.g. 1 "
                      "or fraud")
        elif isinstance(pos, bool) or not isinstance(pos, str | int):
            ok = False
            ctx.error(path + ("positive_class",),
                      f"must be a string or an integer, got {type_name(pos)}")
        else:
            kw["positive_class"] = pos
        if get_key(sec, "threshold") is not ABSENT:
            t = ctx.real(sec["threshold"], path + ("threshold",), minimum=0.0, strict=True)
            if isinstance(t, float) and t >= 1.0:
                t = ctx.error(path + ("threshold",), f"must be < 1 (a probability), got {t:g}")
            kw["threshold"] = t
        if get_key(sec, "prediction_column") is not ABSENT:
            ctx.error(path + ("prediction_column",), "binary tasks use score_column (with "
                      "threshold), not prediction_column; remove it")
    elif task in ("multiclass", "regression"):
        if task == "multiclass":
            column("prediction_column", categorical, "categorical")
        else:
            column("prediction_column", numeric, "numeric")
        for key in binary_only:
            if get_key(sec, key) is not ABSENT:
                ctx.error(path + (key,), f"only for task binary; remove it (task is {task})")

    for key, lo, hi in (("horizon_s", 0.0, 366 * 86400.0), ("label_wait_s", 0.0, 366 * 86400.0)):
        if get_key(sec, key) is not ABSENT:
            v = ctx.real(sec[key], path + (key,), minimum=lo, strict=False)
            if isinstance(v, float) and v > hi:
                v = ctx.error(path + (key,), f"must be at most {hi:g} s (a year), got {v:g}")
            kw[key] = v
    if get_key(sec, "max_pending") is not ABSENT:
        kw["max_pending"] = ctx.integer(sec["max_pending"], path + ("max_pending",), 10,
                                        200_000)
    if get_key(sec, "window") is not ABSENT:
        kw["window"] = ctx.integer(sec["window"], path + ("window",), 20, 1_000_000)
    # -- estimated performance without labels (CBPE): stream/config/estimate.py
    if get_key(sec, "estimate") is not ABSENT:
        kw["estimate"] = parse_estimate(ctx, sec["estimate"], path + ("estimate",), task)
    # --
    if not ok or any(isinstance(v, Bad) for v in kw.values()):
        return BAD
    return LabelsConfig(**kw)


def _select(ctx: Ctx, value: Any, path: KeyPath) -> SelectConfig | Bad:
    """``labels.select``: which events of the inference stream are label events."""
    sec = ctx.section(value, path, ("field", "equals"), "{field: kind, equals: label}")
    if sec is None:
        return BAD
    field: Any = get_key(sec, "field")
    field = ctx.error(path + ("field",), "required: the dotted key path to compare, e.g. kind") \
        if field is ABSENT else ctx.key_path(field, path + ("field",))
    equals = get_key(sec, "equals")
    if equals is ABSENT:
        equals = ctx.error(path + ("equals",), "required: the value (string, integer or "
                                               "boolean) that marks a label event")
    elif not isinstance(equals, str | int):
        equals = ctx.error(path + ("equals",),
                           f"must be a string, integer or boolean, got {type_name(equals)}")
    if isinstance(field, Bad) or isinstance(equals, Bad):
        return BAD
    return SelectConfig(field, equals)


def _names(names: set[str]) -> str:
    return ", ".join(sorted(names)) if names else "none is configured"


def check_labels(ctx: Ctx, models: Sequence[Any], source: Any) -> None:
    """The checks of ``labels:`` that need the other sections: an event time to measure the
    horizon with, a label topic apart from the inference topics, and models that share a
    label topic told apart by their ``select``."""
    kafka = source.kafka
    topics = set(kafka.topics) if kafka is not None and isinstance(kafka.topics, tuple) \
        else set()
    by_topic: dict[str | None, list[int]] = {}
    for i, model in enumerate(models):
        labels = getattr(model, "labels", None)
        if not isinstance(labels, LabelsConfig):
            continue
        path: KeyPath = ("models", i, "labels")
        if source.timestamp is None:
            ctx.error(path, "needs event times to measure horizon_s and label_wait_s: add "
                            "source.timestamp (e.g. {path: timestamp, unit: s}); label events "
                            "carry their time at the same path unless labels.timestamp_path "
                            "says otherwise")
        if source.repartition is not None:
            ctx.error(path, "cannot be used with source.repartition yet (the repartitioned "
                      "stream is not co-partitioned with the labels); remove one of them")
        by_topic.setdefault(labels.topic, []).append(i)
        if labels.topic is None:
            continue  # in the inference stream: no topic to check
        if labels.topic in topics:
            ctx.error(path + ("topic",), f"{labels.topic!r} is also an inference topic "
                      "(source.kafka.topics); labels must come on a topic of their own, or "
                      "in the inference topic with labels.select")
        if kafka is not None and isinstance(kafka.topics, tuple) and len(kafka.topics) > 1:
            ctx.error(path, f"needs a single inference topic in source.kafka.topics (the join "
                      f"pairs partition p of the label topic with partition p of it), got "
                      f"{len(kafka.topics)}; run one streamdrift per inference topic")
    for topic, idx in by_topic.items():
        if len(idx) > 1 and any(models[i].select is None for i in idx):
            where = "the inference stream" if topic is None else repr(topic)
            ctx.error(("models", idx[1], "labels"),
                      f"models[{idx[0]}] reads its labels from {where} too; models that share "
                      "a label source need a select each (label events are routed by it)")
