"""stream.runtime.labelsrun: which records are labels, where they go, where they resume."""

from __future__ import annotations

import logging
from collections import namedtuple
from typing import Any

import pytest

from stream.config import parse_config, require_kafka
from stream.runtime.labelsrun import LabelTopics
from stream.sinks.checkpoints import Checkpoint
from tests.support.labels import lm_model

TP = namedtuple("TP", "topic partition")


def _topics() -> LabelTopics:
    cfg = parse_config({"source": {"kafka": {"bootstrap_servers": "127.0.0.1:9092",
                                             "topics": ["preds"]},
                                   "timestamp": {"path": "ts"}},
                        "models": [lm_model()]}, "/")
    return LabelTopics(cfg, require_kafka(cfg))


class _Consumer:
    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        n = self.counts.get(topic)
        return None if n is None else set(range(n))


def test_subscription_routing_and_the_partition_check(caplog: Any) -> None:
    lt = _topics()
    k = lt.subscription(require_kafka(parse_config(
        {"source": {"kafka": {"bootstrap_servers": "h:1", "topics": ["preds"]}},
         "models": [{"name": "x", "baseline": {"file": "b"},
                     "features": [{"name": "a", "path": "a", "type": "numeric"}]}]}, "/")))
    assert k.topics == ("preds", "lm-labels")
    assert lt.is_label(TP("lm-labels", 0)) and not lt.is_label(TP("preds", 0))
    with caplog.at_level(logging.WARNING, "streamdrift.run"):
        lt.check_partitions(_Consumer({"preds": 4, "lm-labels": 4}))
    assert not caplog.records and lt.home(TP("lm-labels", 3)) == ("preds", 3)
    with caplog.at_level(logging.WARNING, "streamdrift.run"):
        lt.check_partitions(_Consumer({"preds": 2, "lm-labels": 6}))
    assert "not co-partitioned" in caplog.text and "same partition count" in caplog.text
    assert lt.home(TP("lm-labels", 5)) == ("preds", 1)
    caplog.clear()
    with caplog.at_level(logging.WARNING, "streamdrift.run"):
        lt.check_assignment([TP("lm-labels", 5), TP("preds", 0)])
    assert "without the inference partition" in caplog.text


@pytest.mark.parametrize(("saved", "expected"), [
    ({"label_next": {"1": 40}}, 40), ({"label_next": {"0": 7}}, None), (None, None)])
def test_a_label_partition_resumes_from_its_inference_checkpoint(saved: Any,
                                                                 expected: Any) -> None:
    lt = _topics()
    lt.partitions = 2
    state = {} if saved is None else {"labels": saved}
    latest = {("lm", "preds", 1): Checkpoint("g", "lm", "preds", 1, 100, "b", "k", state, 1.0)}
    assert lt.resume_offset(TP("lm-labels", 1), latest) == expected
    assert lt.state_keys([TP("lm-labels", 1), TP("preds", 0)]) == {("preds", 1)}
