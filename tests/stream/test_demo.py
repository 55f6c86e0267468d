"""`streamdrift demo`'s configuration and its concept drift: model fraud's labels, with a
change of P(y|x) and unchanged inputs, open a model-quality episode in a replay of the
demo's own events (the pipeline `run` uses), and the live view shows it."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from rich.console import Console

from stream import demo
from stream.config import load_config, parse_config
from stream.demoview import EpisodeTally, drift_table
from stream.engine.baselines import resolve_baselines
from stream.engine.labelbook import QUALITY_FEATURE
from stream.engine.pipeline import Pipeline
from stream.runtime.replay import replay

T0 = 1.7e9


def _config_text() -> str:
    return demo.CONFIG.format(bootstrap="127.0.0.1:9092", topic=demo.TOPIC, port=9108)


def test_the_demo_config_validates_with_labels_for_fraud(tmp_path: Path) -> None:
    cfg = parse_config(yaml.safe_load(_config_text()), tmp_path)
    labels = {m.name: m.labels for m in cfg.models}
    assert labels["credit"] is None
    fraud = labels["fraud"]
    assert fraud is not None and fraud.topic == demo.LABELS_TOPIC != demo.TOPIC
    assert (fraud.task, fraud.score_column) == ("binary", "score")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    """The demo's config and labelled reference (as `run_demo` writes them), baselines
    built."""
    work = tmp_path_factory.mktemp("demo")
    rng = np.random.default_rng(7)
    (work / "reference.jsonl").write_bytes(b"\n".join(demo.make_events(
        rng, 20_000, T0 - 86_400, False, inline_labels=True)) + b"\n")
    (work / "config.yaml").write_text(_config_text())
    config = load_config(work / "config.yaml")
    return work, config, resolve_baselines(config)


def _replay(demo_dir: tuple[Path, Any, Any], tmp_path: Path, concept: bool,
            ) -> tuple[dict[str, Any], Pipeline]:
    """6,000 clean events, then 6,000 more whose fraud labels follow the changed concept
    (or not): the inputs never drift."""
    _, config, baselines = demo_dir
    rng = np.random.default_rng(11)
    labels: list[tuple[float, bytes]] = []
    events = demo.make_events(rng, 6000, T0, False, labels)
    events += demo.make_events(rng, 6000, T0 + 1.0, False, labels, concept=concept)
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(events) + b"\n")
    (tmp_path / "labels.jsonl").write_bytes(b"\n".join(m for _, m in sorted(labels)) + b"\n")
    pipeline = Pipeline(config, baselines)
    report = replay(config, pipeline, tmp_path / "events.jsonl", 1000,
                    labels_path=tmp_path / "labels.jsonl")
    return report, pipeline


def test_the_demo_catches_its_concept_drift_through_the_labels(demo_dir, tmp_path) -> None:
    report, pipeline = _replay(demo_dir, tmp_path, concept=True)
    fraud = report["models"]["fraud"]["labels"]
    assert fraud["outcomes"]["joined"] > 4000  # every fraud event has its label
    # one model-quality episode, on fraud, and nothing else: the inputs did not move
    assert [(d["model"], d["feature"], d["detector"]) for d in report["detections"]] == \
        [("fraud", QUALITY_FEATURE, "concept")]
    [ep] = report["episodes"]
    assert (ep["model"], ep["feature"], ep["detectors"], ep["close_index"]) == \
        ("fraud", QUALITY_FEATURE, ["concept"], None)
    assert fraud["quality_recent"]["accuracy"] < fraud["quality_baseline"]["accuracy"] - 0.05
    # the live view: fraud's model-quality row is DEGRADED, with accuracy vs the reference
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(
        drift_table(pipeline, EpisodeTally(), now=0.0))
    [row] = [line for line in out.getvalue().splitlines() if "quality" in line]
    assert "fraud" in row and "DEGRADED" in row and "(ref " in row and "concept" in row, row
    print(f"\n[demo concept drift] fraud accuracy recent {fraud['quality_recent']['accuracy']:.3f}"
          f" vs reference {fraud['quality_baseline']['accuracy']:.3f}; "
          f"{fraud['outcomes']['joined']} labels joined; one model-quality episode")


def test_without_the_concept_change_the_demo_stays_quiet(demo_dir, tmp_path) -> None:
    report, _ = _replay(demo_dir, tmp_path, concept=False)
    assert report["detections"] == [] and report["episodes"] == []
    assert report["models"]["fraud"]["labels"]["concept_drift"] == {"alarms": 0,
                                                                    "active": False}
