"""Embedding columns from the configuration to the metrics (replay, no broker).

A replayed change in the share of one embedding cluster opens one episode named after
the vector column (detector ``embedding``) and none on the other column; malformed
vectors are counted by reason without stopping the stream; the metrics pass promtool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from prometheus_client import generate_latest

from stream.config import ConfigError
from stream.config.load import load_config
from stream.engine.baselines import resolve_baselines
from stream.engine.pipeline import Pipeline
from stream.runtime.replay import replay
from stream.sinks.metrics import make_registry
from stream.sinks.vector_metrics import SERIES_PER_VECTOR
from tests.support import embeddings as em

BAD = [
    {"model": em.MODEL, "f": {"x": 0.1}},                                  # missing
    {"model": em.MODEL, "f": {"x": 0.1, "emb": None}},                     # missing
    {"model": em.MODEL, "f": {"x": 0.1, "emb": [0.0] * 63}},               # wrong_dimension
    {"model": em.MODEL, "f": {"x": 0.1, "emb": [0.0] * 62 + ["a", 1.0]}},  # not_numeric
    {"model": em.MODEL, "f": {"x": 0.1, "emb": "[0, 0]"}},                 # not_numeric
]


@pytest.fixture(scope="module")
def share_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Pipeline]:
    d = tmp_path_factory.mktemp("vec")
    em.write_reference(d / "ref.jsonl")
    (d / "c.yaml").write_text(yaml.safe_dump(em.config("ref.jsonl")))
    msgs = em.events(5, [(8_000, None), (4_000, em.SHIFTED_SHARE)])
    bad = [orjson.dumps(b) for b in BAD]
    msgs = msgs[:1_000] + bad + msgs[1_000:]  # malformed vectors among clean events
    (d / "in.jsonl").write_bytes(b"\n".join(msgs))
    cfg = load_config(d / "c.yaml")
    pipeline = Pipeline(cfg, resolve_baselines(cfg))
    return replay(cfg, pipeline, Path(d / "in.jsonl"), batch_lines=777), pipeline


def test_a_replayed_cluster_share_change_opens_one_vector_episode(share_run) -> None:
    report, _ = share_run
    eps = report["episodes"]
    assert [(e["feature"], e["detectors"]) for e in eps] == [("emb", ["embedding"])], eps
    shift_at = 8_000 + len(BAD)
    assert shift_at <= eps[0]["open_index"] < shift_at + 3_000, eps
    vec = report["models"][em.MODEL]["vectors"]["emb"]
    assert vec["alarms"] == 1 and vec["drift"] and vec["rows"] == 12_000
    assert vec["malformed"] == {"missing": 2, "wrong_dimension": 1, "not_numeric": 2}
    assert vec["dim"] == 64 and vec["components"] == 8 and vec["explained"] > 0.3
    # the malformed events are still the model's events (their x is tested)
    assert report["models"][em.MODEL]["events"] == 12_000 + len(BAD)


def test_vector_metrics_pass_promtool(share_run) -> None:
    from tests.support.metrics import promtool_check_metrics

    _, pipeline = share_run
    text = generate_latest(make_registry(pipeline)).decode()
    lines = [ln for ln in text.splitlines()
             if ln.startswith("streamdrift_vector_") and "_created" not in ln]
    assert len(lines) == SERIES_PER_VECTOR, lines
    assert 'streamdrift_vector_drift_active{column="emb",model="emb"} 1.0' in lines
    assert 'streamdrift_vector_episodes_total{column="emb",model="emb"} 1.0' in lines
    assert ('streamdrift_vector_malformed_total{column="emb",model="emb",'
            'reason="wrong_dimension"} 1.0') in lines
    done = promtool_check_metrics(text)
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()


def test_a_configuration_without_vectors_exports_no_vector_series(tmp_path: Path) -> None:
    from tests.support import multivariate as mv

    mv.write_reference(tmp_path / "ref.jsonl", n=2_000)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(mv.config(
        "ref.jsonl", groups=[], detection={"false_alarm_events": 100_000, "window": 500,
                                           "cadence": 50})))
    cfg = load_config(tmp_path / "c.yaml")
    pipeline = Pipeline(cfg, resolve_baselines(cfg))
    assert pipeline.vectors == {}
    assert "streamdrift_vector_" not in generate_latest(make_registry(pipeline)).decode()


@pytest.mark.parametrize(("change", "expected"), [
    (lambda m: m["baseline"].update(reference="ref.csv"), "need a JSONL reference"),
    (lambda m: m.update(baseline={"file": "b.json"}), "set baseline.reference"),
])
def test_unusable_references_fail_at_start_naming_the_key(tmp_path: Path, change: Any,
                                                          expected: str) -> None:
    em.write_reference(tmp_path / "ref.jsonl", n=500)
    (tmp_path / "ref.csv").write_text("x\n1\n")
    data = em.config("ref.jsonl")
    change(data["models"][0])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    cfg = load_config(tmp_path / "c.yaml")
    from stream.engine.baselines import detection_settings
    from stream.engine.vectors import resolve_vectors

    with pytest.raises(ConfigError) as info:
        resolve_vectors(cfg, detection_settings(cfg.detection))
    assert info.value.errors[0].startswith("models[emb].") and expected in info.value.errors[0]


def test_cli_check_config_counts_vector_series_and_replay_refuses_a_csv_reference(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stream.cli import main

    em.write_reference(tmp_path / "ref.jsonl", n=500)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(em.config("ref.jsonl")))
    capsys.readouterr()
    assert main(["check-config", "-c", str(tmp_path / "c.yaml")]) == 0
    out = capsys.readouterr().out
    assert "vector     emb" in out and "dim 64, 8 components" in out

    (tmp_path / "ref.csv").write_text("x\n1\n" * 300)
    data = em.config("ref.csv")
    (tmp_path / "csv.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(em.events(1, [(10, None)])))
    rc = main(["replay", "-c", str(tmp_path / "csv.yaml"), "--input",
               str(tmp_path / "in.jsonl"), "--report", str(tmp_path / "r.json"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc != 0 and "models[emb].baseline.reference" in err and "JSONL" in err, err


def test_vector_state_survives_a_checkpoint_round_trip(tmp_path: Path) -> None:
    """A partition's state exported mid-episode (as the runner checkpoints it), restored
    into a new pipeline, gives the same later detections as the uninterrupted run, and the
    vector column's open episode is restored with it."""
    import json

    from detectors.model import ModelMonitor

    em.write_reference(tmp_path / "ref.jsonl")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(em.config("ref.jsonl")))
    cfg = load_config(tmp_path / "c.yaml")
    baselines = resolve_baselines(cfg)
    msgs = em.events(9, [(4_000, None), (3_000, em.SHIFTED_SHARE), (6_000, None)])
    key = ("events", 0)

    def run(pipeline: Pipeline, part: list[bytes], start: int) -> list[tuple[str, int]]:
        out = []
        for i in range(0, len(part), 500):
            found, _ = pipeline.process(part[i:i + 500], base_index=start + i, partition=key)
            out += [(d.feature, d.index) for d in found]
            out += [(f"close {d.feature}", d.index) for d in pipeline.last_closes]
        return out

    whole = Pipeline(cfg, baselines)
    expected = run(whole, msgs, 0)
    assert [f for f, _ in expected][:2] == ["emb", "close emb"], expected
    opened = expected[0][1]
    cut = (opened // 500 + 1) * 500  # just after the episode opened
    first = Pipeline(cfg, baselines)
    got = run(first, msgs[:cut], 0)
    assert got == [("emb", opened)]
    state = json.loads(json.dumps(first.export_partition(key)))
    assert set(state[em.MODEL]["vectors"]) == {"emb"}
    second = Pipeline(cfg, baselines)
    restored = {name: ModelMonitor.from_dict(s, baselines[name], second.new_monitor(name))
                for name, s in state.items()}
    second.restore_partition(key, restored, {n: s.get("episodes") for n, s in state.items()},
                             states=state)
    assert [(ep.feature, ep.detectors) for ep in second.open_episodes()] == [
        ("emb", ["embedding"])]
    got += run(second, msgs[cut:], cut)
    assert got == expected
