"""The first stage's group assignment: every source partition to one member."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kafka.coordinator.assignors.range import RangePartitionAssignor

from stream.runtime.onewriter import STRATEGY, WRITING, OneWriterAssignor


@dataclass
class Meta:
    topics: list[str]
    user_data: bytes = b""


@dataclass
class Member:
    member_id: str
    group_instance_id: str | None
    metadata: Meta


class Cluster:
    def __init__(self, parts: dict[str, int]) -> None:
        self.parts = parts

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        n = self.parts.get(topic)
        return None if n is None else set(range(n))


def _assigned(out: dict[str, Any]) -> dict[str, list[tuple[str, list[int]]]]:
    return {m: [(t, list(ps)) for t, ps in a.assigned_partitions] for m, a in out.items()}


def test_one_member_gets_every_partition_of_every_topic() -> None:
    members = [Member(f"streamdrift-{x}", None, Meta(["a", "b"])) for x in "zcm"]
    out = _assigned(OneWriterAssignor().assign(Cluster({"a": 8, "b": 2}), members))
    assert out == {"streamdrift-c": [("a", list(range(8))), ("b", [0, 1])],
                   "streamdrift-m": [], "streamdrift-z": []}
    # the range assignor would have split them: what made the first stages mix in blocks
    split = _assigned(RangePartitionAssignor.assign(Cluster({"a": 8, "b": 2}), members))
    assert sum(1 for a in split.values() if a) == 3


def test_a_static_member_is_preferred_and_a_lone_member_gets_all() -> None:
    members = [Member("a-1", None, Meta(["t"])), Member("z-2", "pod-1", Meta(["t"]))]
    out = _assigned(OneWriterAssignor().assign(Cluster({"t": 4}), members))
    assert out == {"z-2": [("t", [0, 1, 2, 3])], "a-1": []}
    alone = _assigned(OneWriterAssignor().assign(Cluster({"t": 4}), members[:1]))
    assert alone == {"a-1": [("t", [0, 1, 2, 3])]}


def test_the_writer_keeps_the_partitions_when_another_member_joins() -> None:
    a = OneWriterAssignor()
    first = a.assign(Cluster({"t": 4}), [Member("m-2", None, Meta(["t"]))])
    a.on_assignment(first["m-2"], 1)
    assert a.writing and a.metadata(["t"]).user_data == WRITING
    # a member with a smaller id joins: the writer (who says so) keeps everything
    members = [Member("m-2", None, a.metadata(["t"])), Member("a-1", None, Meta(["t"]))]
    out = _assigned(OneWriterAssignor().assign(Cluster({"t": 4}), members))
    assert out == {"m-2": [("t", [0, 1, 2, 3])], "a-1": []}
    standby = OneWriterAssignor()
    standby.on_assignment(OneWriterAssignor().assign(Cluster({"t": 4}), members)["a-1"], 2)
    assert not standby.writing and standby.metadata(["t"]).user_data == b""


def test_unknown_topics_are_skipped_and_older_members_still_agree() -> None:
    out = _assigned(OneWriterAssignor().assign(Cluster({"t": 2}),
                                             [Member("m", None, Meta(["t", "gone"]))]))
    assert out == {"m": [("t", [0, 1])]}
    # listed first, with range after it: a group with members of an older release (range,
    # roundrobin) still has a protocol in common
    assert STRATEGY[0] is OneWriterAssignor
    assert RangePartitionAssignor in STRATEGY


def test_the_first_stage_consumer_uses_it(monkeypatch: Any, tmp_path: Any) -> None:
    from stream.config import load_config
    from stream.engine.pipeline import Pipeline
    from stream.runtime import repartition
    from tests.support.configs import m1_config, write_config
    from tests.support.events import CLEAN, COLUMNS, m1_events

    (tmp_path / "reference.jsonl").write_bytes(b"\n".join(m1_events(7, [(500, CLEAN)],
                                                                    COLUMNS)))
    cfg_dict = m1_config(bootstrap="127.0.0.1:1", topic="t", group="g", port=0)
    cfg_dict["source"]["repartition"] = {}
    cfg = load_config(write_config(tmp_path / "c.yaml", cfg_dict))
    seen: dict[str, Any] = {}
    monkeypatch.setattr(repartition, "kafka_python_consumer",
                        lambda k, *a: seen.setdefault("options", dict(k.options)))
    from stream.engine.baselines import resolve_baselines

    repartition.Repartitioner(cfg, Pipeline(cfg, resolve_baselines(cfg)))._consumer()
    assert seen["options"]["partition_assignment_strategy"] == STRATEGY
