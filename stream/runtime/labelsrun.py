"""Label topics in the Kafka runner: subscription, routing, restore and the co-partitioning check.

The runner subscribes to the label topics of the models with ``labels:`` beside the
inference topic.  Partition ``p`` of a label topic pairs with partition ``p`` of the
inference topic (``p`` modulo its partition count when the counts differ): its labels are
joined by the pipeline's joins of that inference partition, which also record the next
label offset they cover.  So a label partition has no checkpoint of its own: it resumes
from the offset saved in the checkpoint of its inference partition (see docs/labels.md).
A single consumer holds every partition and joins whatever the partitioning; scaled out,
a label must be on the partition (number) of its prediction: the topics must have the
same partition count and the producers the same key (the id) and partitioner.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from stream.config import Config, KafkaConfig
from stream.engine.pipeline import Pipeline
from stream.sinks.checkpoints import Checkpoint

log = logging.getLogger("streamdrift.run")


class LabelTopics:
    """Which records are labels, and where they go."""

    def __init__(self, config: Config, kafka: KafkaConfig) -> None:
        self.inference = kafka.topics[0]
        #: label topic -> the models reading it
        self.models: dict[str, list[str]] = {}
        for m in config.models:
            if m.labels is not None and m.labels.topic is not None:
                self.models.setdefault(m.labels.topic, []).append(m.name)
        #: partition count of the inference topic (from the metadata, at start-up)
        self.partitions: int | None = None

    def __bool__(self) -> bool:
        return bool(self.models)

    def subscription(self, kafka: KafkaConfig) -> KafkaConfig:
        """``kafka`` with the label topics added to its topics."""
        extra = tuple(t for t in self.models if t not in kafka.topics)
        return dataclasses.replace(kafka, topics=kafka.topics + extra)

    def is_label(self, tp: Any) -> bool:
        return tp.topic in self.models

    def home(self, tp: Any) -> tuple[str, int]:
        """The inference partition whose joins take the labels of label partition ``tp``."""
        n = self.partitions
        return (self.inference, tp.partition % n if n else tp.partition)

    def process(self, pipeline: Pipeline, tp: Any, values: list[bytes],
                offsets: list[int]) -> None:
        pipeline.process_labels(values, self.home(tp), tp.topic, tp.partition, offsets)

    def state_keys(self, tps: Iterable[Any]) -> set[tuple[str, int]]:
        """The inference partitions whose checkpoints the label partitions among ``tps``
        resume from."""
        return {self.home(tp) for tp in tps if self.is_label(tp)}

    def resume_offset(self, tp: Any, latest: Mapping[tuple[str, str, int], Checkpoint],
                      ) -> int | None:
        """The label offset to resume ``tp`` from: the smallest its readers' joins cover
        (each join skips what it already holds); None without a saved one."""
        topic, part = self.home(tp)
        found = []
        for model in self.models[tp.topic]:
            cp = latest.get((model, topic, part))
            saved = cp.state.get("labels") if cp is not None else None
            nxt = saved.get("label_next", {}).get(str(tp.partition)) \
                if isinstance(saved, Mapping) else None
            if nxt is None:
                return None  # a reader without a saved position: from the committed offset
            found.append(int(nxt))
        return min(found) if found else None

    def check_partitions(self, consumer: Any) -> None:
        """Start-up: compare the partition counts of the inference and label topics and
        explain a mismatch (a single consumer still joins; a scaled-out group cannot)."""
        counts = {t: len(consumer.partitions_for_topic(t) or ())
                  for t in (self.inference, *self.models)}
        self.partitions = counts[self.inference] or None
        for topic in self.models:
            if not counts[topic]:
                log.warning("label topic %r does not exist (yet): no label can be joined until "
                            "it does", topic, extra={"topic": topic})
            elif counts[topic] != counts[self.inference]:
                log.warning(
                    "label topic %r has %d partitions, inference topic %r has %d: they are not "
                    "co-partitioned. One consumer holding every partition still joins every "
                    "label; with more members a label can reach a member that does not hold its "
                    "prediction (counted as no_prediction). Fix: give both topics the same "
                    "partition count and key labels as the predictions (by the id)",
                    topic, counts[topic], self.inference, counts[self.inference],
                    extra={"topic": topic, "partitions": counts[topic],
                           "inference_partitions": counts[self.inference]})

    def check_assignment(self, assignment: Iterable[Any]) -> None:
        """After a rebalance: warn when this member holds a label partition without the
        inference partition it pairs with."""
        held = {(tp.topic, tp.partition) for tp in assignment}
        orphans = sorted(f"{tp.topic}/{tp.partition}" for tp in assignment
                         if self.is_label(tp) and self.home(tp) not in held)
        if orphans:
            log.warning("label partitions held without the inference partition they pair "
                        "with: their labels join only predictions this member holds (the "
                        "topics are not co-partitioned, or the group's assignor does not pair "
                        "them)", extra={"partitions": orphans})
