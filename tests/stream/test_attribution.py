"""Attribution drift and root cause from the configuration to the report and the metrics
(replay, no broker): configuration errors name the key and the fix; a clean replay opens
no attribution episode; a swap of the model's attributions does; a prediction that drifts
because of one feature names that feature first."""

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
from tests.support import attribution as at
from tests.support.configs import config_errors, minimal_config

NUM = [{"name": n, "path": f"f.{n}", "type": "numeric"} for n in ("x", "y", "z")]


def _with(attributions: Any = None, importances: Any = None, reference: bool = True,
          features: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    data = minimal_config(*(features or NUM))
    m = data["models"][0]
    if reference:
        m["baseline"] = {"reference": "ref.jsonl"}
    if attributions is not None:
        m["attributions"] = attributions
    if importances is not None:
        m["importances"] = importances
    return data


def test_attribution_paths_from_a_mapping_or_per_feature() -> None:
    m = parse_config(_with({"path": "expl.shap"}), "/cfg").models[0]
    assert m.attributions is not None and m.attributions.window == 1000
    assert m.attributions.paths == (("x", ("expl", "shap", "x")), ("y", ("expl", "shap", "y")),
                                    ("z", ("expl", "shap", "z")))
    m = parse_config(_with({"paths": {"z": "s.zz", "x": "s.xx"}, "window": 200}),
                     "/cfg").models[0]
    assert m.attributions is not None and m.attributions.window == 200
    assert m.attributions.paths == (("x", ("s", "xx")), ("z", ("s", "zz")))
    m = parse_config(_with(importances={"x": 2, "y": 0.5}), "/cfg").models[0]
    assert m.attributions is None and dict(m.importances) == {"x": 2.0, "y": 0.5}


@pytest.mark.parametrize(("data", "expected"), [
    (_with({"path": "s"}, reference=False), "models[0].attributions: needs baseline.reference"),
    (_with({}), "models[0].attributions: names no attributions: give path or paths"),
    (_with({"path": "s", "window": 10}), "models[0].attributions.window: must be an integer"),
    (_with({"paths": {"w": "s.w", "x": "s.x"}}), "models[0].attributions.paths.w: no feature"),
    (_with({"paths": {"x": "s.x"}}), "models[0].attributions: ranks 1 feature(s)"),
    (_with({"path": "s", "features": ["x", "q"]}), "models[0].attributions.features[1]: no "
                                                   "feature 'q'"),
    (_with({"pth": "s"}), "models[0].attributions.pth: unknown key"),
    (_with({"path": "s"}, features=[*NUM, {"name": "attribution", "path": "a",
                                          "type": "numeric"}]),
     "models[0].attributions: the model has a column named 'attribution'"),
    (_with(importances={"x": -1}), "models[0].importances.x: must be a finite number >= 0"),
    (_with(importances={"q": 1}), "models[0].importances.q: no feature 'q'"),
    (_with(importances=[1, 2]), "models[0].importances: must map feature names"),
    (_with(importances={"x": 0}), "models[0].importances: every importance is 0"),
])
def test_bad_attribution_config_names_the_key_and_the_fix(data: Any, expected: str) -> None:
    errors = config_errors(data)
    assert any(e.startswith(expected) for e in errors), errors


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the module's replays: the reference and the baseline cache
    (.streamdrift-cache) are built once per configuration."""
    d = tmp_path_factory.mktemp("attr")
    at.write_reference(d / "ref.jsonl")
    return d


def _run(d: Path, parts: list[Any], seed: int, **kw: Any) -> tuple[dict[str, Any], Pipeline]:
    name = f"{seed}-{len(kw)}-{kw.get('attributions', True)}-{bool(kw.get('importances'))}"
    (d / f"c{name}.yaml").write_text(yaml.safe_dump(at.config("ref.jsonl", **kw)))
    (d / f"in{name}.jsonl").write_bytes(b"\n".join(at.events(seed, parts)))
    cfg = load_config(d / f"c{name}.yaml")
    pipeline = Pipeline(cfg, resolve_baselines(cfg))
    return replay(cfg, pipeline, d / f"in{name}.jsonl", batch_lines=777), pipeline


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_clean_replay_opens_no_attribution_episode(shared: Path, seed: int) -> None:
    report, _ = _run(shared, [(30_000, *at.CLEAN)], seed)
    a = report["models"][at.MODEL]["attribution"]
    assert a["windows"] == 60 and a["rows"] == 30_000
    assert a["alarms"] == 0 and not a["active"] and 0.9 < a["level"] <= 1.0
    assert [e for e in report["episodes"] if e["feature"] == "attribution"] == []


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_a_replayed_attribution_swap_opens_an_attribution_episode(shared: Path,
                                                                  seed: int) -> None:
    report, pipeline = _run(shared, [(10_000, *at.CLEAN), (5_000, *at.SWAPPED)], seed)
    eps = [e for e in report["episodes"] if e["feature"] == "attribution"]
    assert len(eps) == 1 and eps[0]["detectors"] == ["ndcg"], report["episodes"]
    assert 10_000 <= eps[0]["open_index"] < 11_000  # the first drifted window
    a = report["models"][at.MODEL]["attribution"]
    assert a["active"] and a["alarms"] == 1 and a["ndcg"] < a["level"]
    text = generate_latest(make_registry(pipeline)).decode()
    assert 'streamdrift_attribution_active{model="attr"} 1.0' in text
    ndcg = [ln for ln in text.splitlines() if ln.startswith("streamdrift_attribution_ndcg{")]
    assert len(ndcg) == 1 and float(ndcg[0].split()[-1]) == pytest.approx(a["ndcg"], abs=1e-6)


@pytest.mark.parametrize(("seed", "kw", "source"), [
    (7, {}, "attributions"),
    (8, {"attributions": False, "importances": {"x0": 2.0, "x1": 1.0, "x2": 0.5, "x3": 0.25}},
     "importances"),
    (9, {"attributions": False}, "none"),
])
def test_root_cause_names_the_drifted_feature_first(shared: Path, seed: int,
                                                    kw: dict[str, Any], source: str) -> None:
    from stream.engine.attribution import importance_source

    report, pipeline = _run(shared, [(10_000, *at.CLEAN), (5_000, *at.X1_SHIFT)], seed,
                            **kw)
    assert importance_source(pipeline.root_causes.models[at.MODEL]) == source
    preds = [e for e in report["episodes"] if e["feature"] == "p"]
    assert preds, report["episodes"]
    rc = preds[0]["root_cause"]
    assert [c["rank"] for c in rc] == [1, 2, 3]
    assert rc[0]["feature"] == "x1" and rc[0]["score"] > 1.0, rc
    assert rc[0]["contribution"] > rc[1]["contribution"] >= rc[2]["contribution"]
    assert all(e.get("root_cause") is None for e in report["episodes"] if e["feature"] != "p")
    # the HTML report's card names it first, with how its contribution was made
    from stream.report.attribution_html import attribution_card

    eps: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in report["episodes"]:
        eps.setdefault((e["model"], e["feature"]), []).append(e)
    card = "".join(attribution_card(at.MODEL, report["models"][at.MODEL], eps))
    assert "Attributions and root cause" in card and "<td>p</td>" in card
    assert "1. x1 (" in card and "2. x1" not in card
    assert ("Attribution ranking" in card) == (source == "attributions")
    text = generate_latest(make_registry(pipeline)).decode()
    lines = [ln for ln in text.splitlines() if ln.startswith("streamdrift_root_cause{")]
    assert len(lines) == 3, lines
    assert 'streamdrift_root_cause{feature="x1",model="attr",rank="1"}' in text


def test_metrics_pass_promtool_and_are_absent_without_attributions(shared: Path) -> None:
    from tests.support.metrics import promtool_check_metrics

    _, pipeline = _run(shared, [(2_000, *at.CLEAN)], 10)
    text = generate_latest(make_registry(pipeline)).decode()
    done = promtool_check_metrics(text)
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()
    assert "streamdrift_attribution_level{" in text
    assert "streamdrift_root_cause{" not in text  # no prediction episode open
    _, plain = _run(shared, [(2_000, *at.CLEAN)], 10, attributions=False)
    assert "streamdrift_attribution" not in generate_latest(make_registry(plain)).decode()


def test_check_config_names_the_attributions_and_counts_their_series(
        shared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stream.cli import main
    from stream.sinks.attribution_metrics import ROOT_CAUSE_SERIES, SERIES_PER_MODEL

    def count(**kw: Any) -> tuple[str, int]:
        name = f"check-{len(kw)}"
        (shared / f"{name}.yaml").write_text(yaml.safe_dump(at.config("ref.jsonl", **kw)))
        capsys.readouterr()
        assert main(["check-config", "-c", str(shared / f"{name}.yaml")]) == 0
        out = capsys.readouterr().out
        return out, int(out.split("about ")[1].split()[0])

    out, with_attr = count()
    assert "attributions of 4 features, window 500" in out
    out, plain = count(attributions=False)
    assert "root cause importance: none" in out
    # the prediction's root cause (3) is counted in both
    assert with_attr - plain == SERIES_PER_MODEL
    assert ROOT_CAUSE_SERIES == 3


def _chunks(pipeline: Pipeline, part: list[bytes], start: int,
            key: Any) -> list[tuple[str, int]]:
    out = []
    for i in range(0, len(part), 300):  # batches of 300: a cut falls inside a window of 500
        found, _ = pipeline.process(part[i:i + 300], base_index=start + i, partition=key)
        out += [(d.feature, d.index) for d in found]
        out += [(f"close {d.feature}", d.index) for d in pipeline.last_closes]
    return out


def _restored(cfg: Any, baselines: Any, state: dict[str, Any], key: Any) -> Pipeline:
    from detectors.model import ModelMonitor

    p = Pipeline(cfg, baselines)
    mons = {n: ModelMonitor.from_dict(s, baselines[n], p.new_monitor(n)) for n, s in state.items()}
    p.restore_partition(key, mons, {n: s.get("episodes") for n, s in state.items()}, states=state)
    return p


def test_attribution_state_survives_a_checkpoint_round_trip(shared: Path) -> None:
    """A partition's state exported mid-window and mid-episode (as the runner checkpoints
    it) and restored into a new pipeline gives the same later detections as the
    uninterrupted run, with the open attribution episode restored; without the attribution
    entry (the state before this change) the detections differ."""
    import json

    (shared / "rt.yaml").write_text(yaml.safe_dump(at.config("ref.jsonl")))
    cfg = load_config(shared / "rt.yaml")
    baselines = resolve_baselines(cfg)
    msgs = at.events(11, [(6_000, *at.CLEAN), (3_000, *at.SWAPPED), (3_000, *at.CLEAN)])
    key = ("events", 0)
    expected = _chunks(Pipeline(cfg, baselines), msgs, 0, key)
    attr = [(f, i) for f, i in expected if "attribution" in f]
    assert [f for f, _ in attr] == ["attribution", "close attribution"], expected
    opened = attr[0][1]
    cut = (opened // 300 + 1) * 300
    if cut % 500 == 0:
        cut += 300
    assert cut % 500 and cut < attr[1][1]  # mid-window, while the episode is open
    first = Pipeline(cfg, baselines)
    got = _chunks(first, msgs[:cut], 0, key)
    state = json.loads(json.dumps(first.export_partition(key)))
    saved = state[at.MODEL]["attribution"]
    assert saved["state"]["active"] and saved["state"]["rows"] == cut % 500
    second = _restored(cfg, baselines, state, key)
    assert ("attribution", ["ndcg"]) in [(ep.feature, ep.detectors)
                                         for ep in second.open_episodes()]
    assert got + _chunks(second, msgs[cut:], cut, key) == expected
    fig = second.attribution[at.MODEL].figures()
    assert fig.windows == (len(msgs) - cut + cut % 500) // 500  # this process's windows

    # the pre-change state (no attribution entry), or one of another calibration: the
    # window starts afresh, the episode is lost, and the later detections differ
    for entry in (None, {**saved, "key": "another"}):
        old = json.loads(json.dumps(state))
        if entry is None:
            del old[at.MODEL]["attribution"]
        else:
            old[at.MODEL]["attribution"] = entry
        fresh = _restored(cfg, baselines, old, key)
        assert "attribution" not in [ep.feature for ep in fresh.open_episodes()]
        assert got + _chunks(fresh, msgs[cut:], cut, key) != expected


def test_a_malformed_attribution_checkpoint_starts_afresh(shared: Path) -> None:
    (shared / "rt.yaml").write_text(yaml.safe_dump(at.config("ref.jsonl")))
    cfg = load_config(shared / "rt.yaml")
    baselines = resolve_baselines(cfg)
    key = ("events", 0)
    first = Pipeline(cfg, baselines)
    first.process(at.events(12, [(700, *at.CLEAN)]), partition=key)
    state = first.export_partition(key)
    state[at.MODEL]["attribution"]["state"]["sums"] = [1.0, 2.0]  # 2 features of 4
    p = _restored(cfg, baselines, state, key)
    assert p.attribution[at.MODEL].monitors.get(key) is None
    p.process(at.events(13, [(600, *at.CLEAN)]), partition=key)
    assert p.attribution[at.MODEL].figures().windows == 1
