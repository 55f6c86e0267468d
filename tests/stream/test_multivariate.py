"""Multivariate groups from the configuration to the metrics (replay, no broker).

Configuration errors name the key and the fix; a replayed correlation flip opens one
episode named after the group and none on its columns; the metrics pass promtool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from stream.config import parse_config
from stream.config.load import load_config
from stream.engine.baselines import resolve_baselines
from stream.engine.pipeline import Pipeline
from stream.runtime.replay import replay
from stream.sinks.metrics import make_registry
from stream.sinks.multivariate_metrics import SERIES_PER_GROUP
from tests.support import multivariate as mv
from tests.support.configs import config_errors, minimal_config

NUM = [{"name": n, "path": f"f.{n}", "type": "numeric"} for n in ("x", "y", "z")]
CAT = {"name": "c", "path": "f.c", "type": "categorical"}
PRED = {"name": "p", "path": "p.p", "type": "numeric"}


def _with_groups(groups: Any, features: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    data = minimal_config(*(features or [*NUM, CAT]))
    data["models"][0]["predictions"] = [PRED]
    data["models"][0]["multivariate"] = groups
    return data


def test_default_group_takes_every_numeric_feature() -> None:
    cfg = parse_config(_with_groups([{"name": "joint"}, {"name": "xy", "columns": ["x", "y"],
                                                         "method": "rff"}]), "/cfg")
    groups = cfg.models[0].multivariate
    assert [(g.name, g.columns, g.method) for g in groups] == [
        ("joint", ("x", "y", "z"), "auto"), ("xy", ("x", "y"), "rff")]
    assert parse_config(_with_groups(None), "/cfg").models[0].multivariate == ()


@pytest.mark.parametrize(("groups", "features", "expected"), [
    ({"name": "j"}, None, "models[0].multivariate: must be a list of groups"),
    ([{"columns": ["x", "y"]}], None, "models[0].multivariate[0].name: required"),
    ([{"name": "x"}], None, "models[0].multivariate[0].name: 'x' is also a column"),
    ([{"name": "j"}, {"name": "j"}], None,
     "models[0].multivariate[1].name: duplicate group name 'j'"),
    ([{"name": "j", "columns": ["x", "w"]}], None,
     "models[0].multivariate[0].columns[1]: no column 'w' in this model"),
    ([{"name": "j", "columns": ["x", "c"]}], None,
     "models[0].multivariate[0].columns[1]: 'c' is a categorical column"),
    ([{"name": "j", "columns": ["x"]}], None,
     "models[0].multivariate[0].columns: must be a list of at least 2 column names"),
    ([{"name": "j", "columns": ["x", "x"]}], None,
     "models[0].multivariate[0].columns: names a column twice"),
    ([{"name": "j", "method": "pca"}], None, "models[0].multivariate[0].method: "),
    ([{"name": "j", "colums": ["x", "y"]}], None,
     "models[0].multivariate[0].colums: unknown key"),
    ([{"name": "j"}], [NUM[0], CAT], "models[0].multivariate[0].columns: the model has 1 "
                                     "numeric feature(s); a group needs at least 2"),
])
def test_bad_groups_name_the_key_and_the_fix(groups: Any, features: Any, expected: str) -> None:
    errors = config_errors(_with_groups(groups, features))
    assert any(e.startswith(expected) for e in errors), errors


@pytest.fixture(scope="module")
def flip_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Pipeline]:
    d = tmp_path_factory.mktemp("mv")
    mv.write_reference(d / "ref.jsonl")
    (d / "c.yaml").write_text(yaml.safe_dump(mv.config("ref.jsonl")))
    (d / "in.jsonl").write_bytes(b"\n".join(mv.events(5, [(15_000, 0.8), (5_000, -0.8)])))
    cfg = load_config(d / "c.yaml")
    pipeline = Pipeline(cfg, resolve_baselines(cfg))
    return replay(cfg, pipeline, Path(d / "in.jsonl"), batch_lines=777), pipeline


def test_a_replayed_flip_opens_one_group_episode_and_none_on_its_columns(flip_run) -> None:
    report, _ = flip_run
    eps = report["episodes"]
    assert [(e["feature"], e["detectors"]) for e in eps] == [("joint", ["joint"])], eps
    assert 15_000 <= eps[0]["open_index"] < 15_300
    group = report["models"][mv.MODEL]["multivariate"]["joint"]
    assert group["alarms"] == 1 and group["active"] and group["rows"] == 20_000
    assert group["columns"] == 4 and group["dim"] == 14


def test_group_metrics_pass_promtool(flip_run) -> None:
    from tests.support.metrics import promtool_check_metrics

    _, pipeline = flip_run
    text = generate_latest(make_registry(pipeline)).decode()
    lines = [ln for ln in text.splitlines()
             if ln.startswith("streamdrift_multivariate_") and "_created" not in ln]
    assert len(lines) == SERIES_PER_GROUP, lines
    assert 'streamdrift_multivariate_active{group="joint",model="mv"} 1.0' in lines
    assert 'streamdrift_multivariate_alarms_total{group="joint",model="mv"} 1.0' in lines
    done = promtool_check_metrics(text)
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()


def test_group_state_survives_a_checkpoint_round_trip(tmp_path: Path) -> None:
    """A partition's state exported mid-episode (as the runner checkpoints it), restored
    into a new pipeline, gives the same later detections as the uninterrupted run, and the
    group's open episode is restored with it."""
    import json

    from detectors.model import ModelMonitor

    mv.write_reference(tmp_path / "ref.jsonl")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(mv.config(
        "ref.jsonl", detection={"false_alarm_events": 10_000_000, "window": 500,
                                "cadence": 50})))
    cfg = load_config(tmp_path / "c.yaml")
    baselines = resolve_baselines(cfg)
    msgs = mv.events(9, [(6_000, 0.8), (3_000, -0.8), (6_000, 0.8)])
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
    assert [f for f, _ in expected] == ["joint", "close joint"], expected

    first = Pipeline(cfg, baselines)
    got = run(first, msgs[:7_000], 0)  # the flip's episode is open here
    assert [f for f, _ in got] == ["joint"]
    state = json.loads(json.dumps(first.export_partition(key)))
    second = Pipeline(cfg, baselines)
    restored = {name: ModelMonitor.from_dict(s, baselines[name], second.new_monitor(name))
                for name, s in state.items()}
    second.restore_partition(key, restored, {n: s.get("episodes") for n, s in state.items()})
    assert [(ep.feature, ep.detectors) for ep in second.open_episodes()] == [
        ("joint", ["joint"])]
    got += run(second, msgs[7_000:], 7_000)
    assert got == expected
    snap = second.snapshot().models[mv.MODEL].groups["joint"]
    assert snap.alarms == 0 and not snap.active  # counted by the first process


def test_a_baseline_file_without_the_group_is_refused_with_the_fix(tmp_path: Path) -> None:
    from stream.config import ConfigError
    from stream.engine.baselines import build_baseline, save_baseline

    mv.write_reference(tmp_path / "ref.jsonl", n=2_000)
    detection = {"false_alarm_events": 100_000, "window": 500, "cadence": 50}
    plain = mv.config("ref.jsonl", groups=[], detection=detection)
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(plain))
    cfg = load_config(tmp_path / "plain.yaml")
    save_baseline(build_baseline(cfg, cfg.models[0]), tmp_path / "mv.baseline.json")
    grouped = mv.config("ref.jsonl", detection=detection)
    grouped["models"][0]["baseline"] = {"file": "mv.baseline.json"}
    (tmp_path / "grouped.yaml").write_text(yaml.safe_dump(grouped))
    with pytest.raises(ConfigError) as info:
        resolve_baselines(load_config(tmp_path / "grouped.yaml"))
    (message,) = info.value.errors
    assert message.startswith("models[0].baseline.file: ")
    assert "no profile of multivariate group 'joint'" in message
    assert "rebuild it with `streamdrift baseline`" in message
