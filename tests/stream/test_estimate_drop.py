"""The estimated-performance drop alarm's share of the model's one false-alarm knob
(stream.config.estimate.estimate_budget): the model's other monitors, the concept detector
and the drop alarm add up to the knob; the estimate book calibrates the band to its share;
a score window saved before the calibration restores and is judged by the new band."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from stream.config import parse_config
from stream.config.bias import bias_budget, facet_detectors
from stream.config.estimate import ESTIMATE_SHARE, estimate_budget
from stream.config.labels import CONCEPT_SHARE, concept_budget
from stream.engine.baselines import detection_settings
from stream.engine.bias import target_events
from stream.engine.estimate import EstimateBook, drop_target_events
from stream.engine.segments import segment_settings
from tests.support.estimate import estimate_stream
from tests.support.labels import lm_model

F = 100_000
SRC = {"source": {"timestamp": {"path": "ts", "unit": "s"}}}


def _config(folder: Path, estimate: dict[str, Any] | None = None, **extra: Any) -> Any:
    if not (folder / "reference.jsonl").exists():
        ref, _, _, _ = estimate_stream(101, 20_000)
        (folder / "reference.jsonl").write_bytes(b"\n".join(ref) + b"\n")
    labels = {} if estimate is None else {"estimate": estimate}
    return parse_config({**SRC, "detection": {"false_alarm_events": F},
                         "models": [lm_model(window=1000, **labels) | extra]}, folder)


def test_every_monitor_s_rate_with_the_drop_alarm_sums_to_the_knob(tmp_path: Path) -> None:
    """Input monitors at 0.9 x 0.95 x 0.9 (two facets take 0.1 of what the concept detector
    and the drop alarm leave), the facets' detectors, the concept detector at 0.1 and the
    drop alarm at 0.9 x 0.05 of the model's rate: 1 / F in all."""
    cfg = _config(tmp_path, {}, bias={"positive": {"column": "score", "threshold": 0.5},
                                      "facets": ["f.a", "f.b"]})
    m = cfg.models[0]
    rates = [1 / detection_settings(cfg.detection, m).false_alarm_events,
             *[1 / target_events(cfg, m)] * (2 * facet_detectors(m)),
             1 / (F * concept_budget(m)[1]),
             1 / drop_target_events(cfg, m)]
    assert sum(rates) == pytest.approx(1 / F)
    assert rates[-1] == pytest.approx((1 - CONCEPT_SHARE) * ESTIMATE_SHARE / F)
    assert rates[0] == pytest.approx(0.9 * 0.95 / bias_budget(m)[0] / F)
    # with segments, the model-wide monitor and the segments split the same rest
    seg = _config(tmp_path, {}, segments=["region"]).models[0]
    rest = F * concept_budget(seg)[0] * estimate_budget(seg)[0]
    assert detection_settings(cfg.detection, seg).false_alarm_events == pytest.approx(2 * rest)
    assert segment_settings(cfg, seg).false_alarm_events == pytest.approx(2 * rest)


def test_without_estimate_or_a_reference_nothing_is_carved(tmp_path: Path) -> None:
    m = _config(tmp_path).models[0]
    assert estimate_budget(m) == (1.0, 1.0)
    assert detection_settings(_config(tmp_path).detection, m).false_alarm_events \
        == pytest.approx(F * concept_budget(m)[0])
    file_only = lm_model(estimate={}) | {"baseline": {"file": "b.json"}}
    cfg = parse_config({**SRC, "detection": {"false_alarm_events": F}, "models": [file_only]},
                       tmp_path)
    assert estimate_budget(cfg.models[0]) == (1.0, 1.0)


def test_the_estimate_book_calibrates_the_band_to_its_share(tmp_path: Path) -> None:
    cfg = _config(tmp_path, {})
    ref = EstimateBook(cfg).refs["lm"]
    assert ref.drop is not None
    assert ref.drop.target_events == pytest.approx(F / ((1 - CONCEPT_SHARE) * ESTIMATE_SHARE))
    assert ref.sigmas == ref.drop.sigmas > 3.0
    band = ref.band(1000)
    assert band["accuracy"] == pytest.approx(ref.sigmas * ref.null_sd["accuracy"])


def test_a_score_window_saved_before_restores_under_the_calibrated_band(
        tmp_path: Path) -> None:
    """The checkpoint holds only the raw scores of the window (unchanged by the
    calibration): a state in the format written before restores, and its drop flags come
    from the calibrated band (a shifted window is a drop, a clean one is not)."""
    cfg = _config(tmp_path, {})
    book = EstimateBook(cfg)
    key = ("lm-events", 0)
    rng = np.random.default_rng(7)
    for shift, scale, want in ((0.0, 1.0, False), (0.5, 0.7, True)):
        x = rng.normal(shift, scale, 1500)
        s = 1 / (1 + np.exp(-(2 * x - 1)))
        # what ScoreWindow.to_dict wrote before this change: window, n, the last scores
        saved = orjson.loads(orjson.dumps(
            {"window": 1000, "n": 1500, "scores": s[-1000:].tolist()}))
        book.restore(key, "lm", saved)
        fig = book.figures("lm")
        assert fig is not None and fig.predictions == 1000
        assert fig.drop["accuracy"] is want
        assert fig.band["accuracy"] == pytest.approx(
            book.refs["lm"].sigmas * book.refs["lm"].null_sd["accuracy"])
