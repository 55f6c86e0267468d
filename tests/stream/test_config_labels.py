"""The ``labels:`` key of a model: parsed, defaulted and validated by key path."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from stream.config import parse_config
from tests.support.configs import config_errors

LABELS = {"topic": "credit-labels", "id_path": "request_id", "label_path": "label",
          "task": "binary", "positive_class": 1, "score_column": "score", "horizon_s": 60}


def _config(labels: Any = None, **source: Any) -> dict[str, Any]:
    model: dict[str, Any] = {
        "name": "credit", "baseline": {"file": "b.json"},
        "features": [{"name": "income", "path": "f.income", "type": "numeric"}],
        "predictions": [{"name": "score", "path": "p.score", "type": "numeric"},
                        {"name": "klass", "path": "p.klass", "type": "categorical"}],
        "labels": copy.deepcopy(LABELS) if labels is None else labels}
    return {"source": {"timestamp": {"path": "ts"}, **source}, "models": [model]}


def test_a_binary_labels_section_with_defaults() -> None:
    lab = parse_config(_config(), "/").models[0].labels
    assert lab is not None
    assert (lab.topic, lab.id_path, lab.label_id, lab.label_path) == (
        "credit-labels", ("request_id",), ("request_id",), ("label",))
    assert (lab.task, lab.positive_class, lab.prediction, lab.threshold) == (
        "binary", 1, "score", 0.5)
    assert (lab.horizon_s, lab.label_wait_s, lab.max_pending, lab.window) == (
        60.0, 60.0, 100_000, 1000)
    assert parse_config(_config(), "/").models[0].labels == lab  # frozen, comparable


def test_multiclass_and_regression_name_their_prediction_column() -> None:
    mc = parse_config(_config({"topic": "l", "id_path": "id", "label_path": "y",
                               "task": "multiclass", "prediction_column": "klass",
                               "label_id_path": "meta.id"}), "/").models[0].labels
    assert mc is not None and mc.prediction == "klass" and mc.label_id == ("meta", "id")
    rg = parse_config(_config({"topic": "l", "id_path": "id", "label_path": "y",
                               "task": "regression", "prediction_column": "score"}), "/")
    assert rg.models[0].labels is not None and rg.models[0].labels.prediction == "score"


def test_a_model_without_labels_has_none() -> None:
    data = _config()
    del data["models"][0]["labels"]
    assert parse_config(data, "/").models[0].labels is None


@pytest.mark.parametrize(("change", "key", "words"), [
    ({"topic": None}, "models[0].labels", "exactly one of topic"),
    ({"task": "ranking"}, "models[0].labels.task", "binary, multiclass, regression"),
    ({"score_column": "klass"}, "models[0].labels.score_column", "not a numeric prediction"),
    ({"score_column": None}, "models[0].labels.score_column", "required for task binary"),
    ({"positive_class": None}, "models[0].labels.positive_class", "required for task binary"),
    ({"positive_class": [1]}, "models[0].labels.positive_class", "string or an integer"),
    ({"threshold": 1.5}, "models[0].labels.threshold", "must be < 1"),
    ({"horizon_s": -1}, "models[0].labels.horizon_s", ">= 0"),
    ({"max_pending": 5}, "models[0].labels.max_pending", "10..200000"),
    ({"window": "big"}, "models[0].labels.window", "integer"),
    ({"id_path": "a..b"}, "models[0].labels.id_path", "empty segment"),
    ({"prediction_column": "klass"}, "models[0].labels.prediction_column", "score_column"),
    ({"colour": 1}, "models[0].labels.colour", "unknown key"),
])
def test_errors_name_the_key_and_the_fix(change: dict[str, Any], key: str, words: str) -> None:
    labels = {k: v for k, v in {**LABELS, **change}.items() if v is not None}
    errors = config_errors(_config(labels))
    assert any(e.startswith(key + ":") and words in e for e in errors), errors


def test_task_specific_keys_are_checked() -> None:
    errors = config_errors(_config({"topic": "l", "id_path": "id", "label_path": "y",
                                    "task": "regression", "prediction_column": "klass",
                                    "positive_class": 1}))
    assert any("prediction_column: 'klass' is not a numeric" in e for e in errors), errors
    assert any("positive_class: only for task binary" in e for e in errors), errors


def test_labels_need_event_times_and_a_topic_of_their_own() -> None:
    data = _config()
    del data["source"]["timestamp"]
    errors = config_errors(data)
    assert any(e.startswith("models[0].labels:") and "source.timestamp" in e for e in errors)
    data = _config(kafka={"bootstrap_servers": "127.0.0.1:9092", "topics": ["credit-labels"]})
    errors = config_errors(data)
    assert any(e.startswith("models[0].labels.topic:") and "topic of their own" in e
               for e in errors), errors


def test_models_sharing_a_label_topic_need_select() -> None:
    data = _config()
    other = copy.deepcopy(data["models"][0])
    other["name"] = "fraud"
    data["models"].append(other)
    errors = config_errors(data)
    assert any(e.startswith("models[1].labels:") and "select" in e for e in errors), errors
    data["models"][0]["select"] = {"field": "model", "equals": "credit"}
    data["models"][1]["select"] = {"field": "model", "equals": "fraud"}
    assert parse_config(data, "/").models[1].labels is not None


def test_labels_in_the_inference_stream_take_a_select_instead_of_a_topic() -> None:
    labels = {k: v for k, v in LABELS.items() if k != "topic"}
    lab = parse_config(_config({**labels, "select": {"field": "kind", "equals": "label"}}),
                       "/").models[0].labels
    assert lab is not None and lab.topic is None and lab.select is not None
    assert (lab.select.field, lab.select.equals) == (("kind",), "label")
    for bad in (labels, {**LABELS, "select": {"field": "kind", "equals": "label"}}):
        errors = config_errors(_config(bad))
        assert any(e.startswith("models[0].labels:") and "exactly one of topic" in e
                   for e in errors), errors
    errors = config_errors(_config({**labels, "select": {"field": "kind"}}))
    assert any(e.startswith("models[0].labels.select.equals:") for e in errors), errors
