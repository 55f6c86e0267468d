"""Estimated performance without labels through the pipeline (``labels.estimate``): the
configuration, ``replay --labels`` exporting the estimate next to the realised values, the
metrics contract of docs/metrics.md, and the score windows in the checkpointed state.

Replay-based (no broker): the estimate is fed by the pipeline's batches exactly as under
``run``; tests/integration/test_estimate_run.py runs it on a real broker.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from detectors.model import ModelBaseline
from stream.config import parse_config
from stream.engine.baselines import column_specs, detection_settings
from stream.engine.pipeline import Pipeline
from stream.runtime.replay import replay
from tests.support.configs import config_errors
from tests.support.estimate import estimate_stream
from tests.support.labels import lm_model
from tests.support.promql import load_contract

ESTIMATED = ("accuracy", "precision", "recall", "f1", "roc_auc")


def _setup(folder: Path, *, distort: bool = False, **estimate: Any) -> tuple[Any, Any]:
    ref, _, _, _ = estimate_stream(101, 20_000, distort=distort)  # the label rides inline
    (folder / "reference.jsonl").write_bytes(b"\n".join(ref) + b"\n")
    data = {"source": {"timestamp": {"path": "ts", "unit": "s"}},
            "detection": {"false_alarm_events": 100_000, "window": 500, "cadence": 50},
            "models": [lm_model(window=1000, estimate=estimate)]}
    cfg = parse_config(data, folder)
    rng = np.random.default_rng(1)
    settings = dataclasses.replace(detection_settings(cfg.detection), calibration_values=50_000)
    x = rng.normal(size=4000)
    base = ModelBaseline.build("lm", {"x": x, "score": 1 / (1 + np.exp(-(2 * x - 1)))},
                               column_specs(cfg.models[0]), settings)
    return cfg, base


def _replay(cfg: Any, pipeline: Pipeline, tmp: Path, events: list[bytes],
            labels: list[bytes]) -> dict[str, Any]:
    e, lab = tmp / "events.jsonl", tmp / "labels.jsonl"
    e.write_bytes(b"\n".join(events) + b"\n")
    lab.write_bytes(b"\n".join(labels) + b"\n")
    return replay(cfg, pipeline, e, 500, labels_path=lab)


# ----------------------------------------------------------------------- configuration
def test_estimate_is_off_by_default_and_takes_defaults() -> None:
    plain = parse_config({"source": {"timestamp": {"path": "ts"}}, "models": [lm_model()]}, "/")
    lab = plain.models[0].labels
    assert lab is not None and lab.estimate is None
    on = parse_config({"source": {"timestamp": {"path": "ts"}},
                       "models": [lm_model(estimate={})]}, "/").models[0].labels
    assert on is not None and on.estimate is not None
    assert (on.estimate.window, on.estimate.calibration) == (1000, "auto")


@pytest.mark.parametrize(("estimate", "task", "key", "words"), [
    ({"window": 5}, "binary", "models[0].labels.estimate.window", "100..100000"),
    ({"calibration": "maybe"}, "binary", "models[0].labels.estimate.calibration",
     "auto, always, never"),
    ({"colour": 1}, "binary", "models[0].labels.estimate.colour", "unknown key"),
    ([1], "binary", "models[0].labels.estimate", "must be a mapping"),
    ({}, "regression", "models[0].labels.estimate", "for task binary"),
])
def test_bad_estimate_settings_fail_at_start_naming_the_key(
        estimate: Any, task: str, key: str, words: str) -> None:
    model = lm_model(estimate=estimate)
    if task != "binary":
        lab = model["labels"]
        for k in ("positive_class", "score_column"):
            del lab[k]
        lab.update(task=task, prediction_column="score")
    errors = config_errors({"source": {"timestamp": {"path": "ts"}}, "models": [model]})
    assert any(e.startswith(key + ":") and words in e for e in errors), errors


# ------------------------------------------------------------------------------ replay
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_replay_estimates_a_covariate_shift_drop_before_the_labels(seed: int,
                                                                   tmp_path: Path) -> None:
    """Inputs move towards the decision boundary (P(y|x) unchanged): accuracy falls by
    about 7 points. The estimate over the last 1,000 predictions (30 % of them labelled)
    is within its band of the realised accuracy of those predictions, and the drop is
    flagged; before the shift it is not."""
    cfg, base = _setup(tmp_path)
    p = Pipeline(cfg, {"lm": base})
    before, lab0, s0, y0 = estimate_stream(seed, 3000)
    report = _replay(cfg, p, tmp_path, before, lab0)
    est = report["models"]["lm"]["labels"]["estimated"]
    assert est["predictions"] == 1000 and est["recalibrated"] is False
    assert not any(est["drop"].values()), est
    after, lab1, s1, y1 = estimate_stream(seed + 50, 3000, shift=0.5, scale=0.7, start=3000)
    q = Pipeline(cfg, {"lm": base})
    report = _replay(cfg, q, tmp_path, after, lab1)
    est = report["models"]["lm"]["labels"]["estimated"]
    real = float(np.mean((s1[-1000:] >= 0.5) == (y1[-1000:] == 1)))
    baseline = est["baseline"]["accuracy"]
    assert baseline - real > 0.04
    assert est["lower"]["accuracy"] <= real <= est["upper"]["accuracy"]
    assert abs(est["recent"]["accuracy"] - real) < 0.04
    assert est["drop"]["accuracy"] is True
    # the realised quality of the labelled pairs is reported beside it
    assert report["models"]["lm"]["labels"]["quality_recent"]["accuracy"] is not None


def test_miscalibrated_scores_are_recalibrated_on_the_reference(tmp_path: Path) -> None:
    """Over-confident scores: the reference fails the calibration test, the estimate uses
    the isotonic map and lands near the realised accuracy; with calibration: never it
    overstates it."""
    events, labels, s, y = estimate_stream(7, 3000, distort=True, shift=0.3)
    real = float(np.mean((s[-1000:] >= 0.5) == (y[-1000:] == 1)))
    got = {}
    for mode in ("auto", "never"):
        folder = tmp_path / mode
        folder.mkdir()
        cfg, base = _setup(folder, distort=True, calibration=mode)
        report = _replay(cfg, Pipeline(cfg, {"lm": base}), folder, events, labels)
        got[mode] = report["models"]["lm"]["labels"]["estimated"]
    assert got["auto"]["recalibrated"] is True and got["never"]["recalibrated"] is False
    assert abs(got["auto"]["recent"]["accuracy"] - real) < 0.04
    assert got["never"]["recent"]["accuracy"] - real > 0.05


# ----------------------------------------------------------------------------- metrics
def test_the_estimate_is_exported_as_documented_and_promtool_clean(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from stream.sinks.metrics import make_registry
    from tests.support.metrics import promtool_check_metrics

    cfg, base = _setup(tmp_path)
    p = Pipeline(cfg, {"lm": base})
    registry = make_registry(p)
    assert registry.get_sample_value("streamdrift_estimated_quality_window_predictions",
                                     {"model": "lm"}) == 0
    assert registry.get_sample_value("streamdrift_estimated_quality", {
        "model": "lm", "metric": "accuracy", "scope": "recent"}) is None  # undefined yet
    events, labels, _, _ = estimate_stream(4, 2500)
    _replay(cfg, p, tmp_path, events, labels)
    text = generate_latest(registry).decode()
    contract = load_contract().metrics
    names = set()
    for family in registry.collect():
        if not family.name.startswith("streamdrift_estimated_quality"):
            continue
        for sample in family.samples:
            names.add(sample.name)
            doc = contract[sample.name]
            assert set(sample.labels) == doc.labels, (sample.name, sample.labels)
            assert sample.labels.get("metric", "accuracy") in ESTIMATED
            assert 0.0 <= sample.value <= 1000.0
    assert names == {m for m in contract if m.startswith("streamdrift_estimated_quality")}
    # 5 metrics x (recent, baseline, lower, upper, band, drop) + window + calibrated
    assert sum(len(f.samples) for f in registry.collect()
               if f.name.startswith("streamdrift_estimated_quality")) == 32
    for m in ESTIMATED:
        recent = registry.get_sample_value("streamdrift_estimated_quality",
                                           {"model": "lm", "metric": m, "scope": "recent"})
        lo = registry.get_sample_value("streamdrift_estimated_quality_lower",
                                       {"model": "lm", "metric": m})
        hi = registry.get_sample_value("streamdrift_estimated_quality_upper",
                                       {"model": "lm", "metric": m})
        assert recent is not None and lo is not None and hi is not None
        assert lo < recent < hi
    result = promtool_check_metrics(text)
    assert result.returncode == 0, result.stdout + result.stderr


def test_without_estimate_no_series_is_exported(tmp_path: Path) -> None:
    from stream.sinks.metrics import make_registry

    cfg, base = _setup(tmp_path)
    plain = dataclasses.replace(
        cfg, models=(dataclasses.replace(cfg.models[0], labels=dataclasses.replace(
            cfg.models[0].labels, estimate=None)),))
    p = Pipeline(plain, {"lm": base})
    registry = make_registry(p)
    events, labels, _, _ = estimate_stream(4, 1500)
    _replay(plain, p, tmp_path, events, labels)
    assert not [f for f in registry.collect()
                if f.name.startswith("streamdrift_estimated_quality")]
    assert not p.labels.estimates  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------- state
def test_the_score_window_rides_in_the_checkpoint(tmp_path: Path) -> None:
    cfg, base = _setup(tmp_path)
    p = Pipeline(cfg, {"lm": base})
    events, labels, _, _ = estimate_stream(5, 2000)
    _replay(cfg, p, tmp_path, events, labels)
    book = p.labels
    assert book is not None
    key = next(iter(book.joins))
    state = book.export(key)
    assert state["lm"]["estimate"]["n"] == 2000
    want = book.estimates.figures("lm")
    book.restore(key, orjson.loads(orjson.dumps(state)))
    got = book.estimates.figures("lm")
    assert want is not None and got is not None
    assert got.recent == want.recent and got.predictions == want.predictions
    book.drop(key)
    after = book.estimates.figures("lm")
    assert after is not None and after.predictions == 0


def test_check_config_counts_the_estimate_series(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import re

    import yaml

    from stream.cli import main

    ref, _, _, _ = estimate_stream(3, 500)
    (tmp_path / "reference.jsonl").write_bytes(b"\n".join(ref) + b"\n")
    counts = {}
    for on in (False, True):
        model = lm_model(estimate={"window": 500}) if on else lm_model()
        path = tmp_path / f"c{on}.yaml"
        path.write_text(yaml.safe_dump({"source": {"timestamp": {"path": "ts"}},
                                        "models": [model]}))
        capsys.readouterr()
        assert main(["check-config", "-c", str(path)]) == 0
        out = capsys.readouterr().out
        found = re.search(r"about (\d+) per-model series", out)
        assert found is not None, out
        counts[on] = int(found[1])
        assert ("estimate   CBPE over 500 predictions" in out) is on
    assert counts[True] - counts[False] == 32
