"""The concept-drift detector's share of the model's one false-alarm knob
(stream.config.labels.concept_budget): the model's other monitors split what it leaves, so
the model's rate holds; the label book calibrates the detector to its share; a state saved
by the detector of before (CUSUMs of 2 and 8 points at half the budget each) restores, and
the Shiryaev-Roberts mixture of now round-trips through the join."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from detectors.concept import CONCEPT_DEFAULT, concept_detector, model_concept_detector
from detectors.concept_sr import ConceptSR
from stream.config import parse_config
from stream.config.bias import bias_budget, facet_detectors
from stream.config.labels import CONCEPT_SHARE, concept_budget
from stream.engine.baselines import detection_settings
from stream.engine.bias import target_events
from stream.engine.labelbook import LabelBook
from stream.engine.labels import LabelJoin, reference_quality
from stream.engine.segments import segment_settings
from tests.support.labels import lm_model, reference_lines

F = 100_000
SRC = {"source": {"timestamp": {"path": "ts", "unit": "s"}}}


def _config(folder: Path, **extra: Any) -> Any:
    if not (folder / "reference.jsonl").exists():
        (folder / "reference.jsonl").write_bytes(b"\n".join(reference_lines(11, 4000)) + b"\n")
    return parse_config({**SRC, "detection": {"false_alarm_events": F},
                         "models": [lm_model() | extra]}, folder)


def test_the_concept_share_and_the_rest_add_up_to_the_model_rate(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    m = cfg.models[0]
    other, concept = concept_budget(m)
    assert 1 / other + 1 / concept == pytest.approx(1.0)
    assert 1 / concept == pytest.approx(CONCEPT_SHARE)
    base = detection_settings(cfg.detection).false_alarm_events
    assert base == F
    assert detection_settings(cfg.detection, m).false_alarm_events == pytest.approx(F * other)
    # with segments: the model-wide monitor and the segments split the rest as before
    seg = _config(tmp_path, segments=["region"]).models[0]
    assert detection_settings(cfg.detection, seg).false_alarm_events == pytest.approx(
        F * 2 * other)
    assert segment_settings(cfg, seg).false_alarm_events == pytest.approx(F * 2 * other)


def test_with_facets_too_every_monitor_s_rate_sums_to_the_knob(tmp_path: Path) -> None:
    """Input monitors at 0.9 x 0.9, two facets at 0.9 x 0.1 / 2 each (split over their
    detectors: DPPL, and with binary labels recall and accuracy), the concept detector at
    0.1 of the model's rate (alarms per model event, the detector counting at most one
    joined pair per event): 1 / F in all."""
    cfg = _config(tmp_path, bias={"positive": {"column": "score", "threshold": 0.5},
                                  "facets": ["f.a", "f.b"]})
    m = cfg.models[0]
    rates = [1 / detection_settings(cfg.detection, m).false_alarm_events,
             *[1 / target_events(cfg, m)] * (2 * facet_detectors(m)),
             1 / (F * concept_budget(m)[1])]
    assert sum(rates) == pytest.approx(1 / F)
    assert rates[0] == pytest.approx(0.9 * 0.9 / F)
    assert bias_budget(m)[0] == pytest.approx(1 / 0.9)


def test_without_labels_or_a_reference_nothing_is_carved(tmp_path: Path) -> None:
    no_labels = {k: v for k, v in lm_model().items() if k != "labels"}
    cfg = parse_config({**SRC, "detection": {"false_alarm_events": F}, "models": [no_labels]},
                       tmp_path)
    assert concept_budget(cfg.models[0]) == (1.0, 1.0)
    assert detection_settings(cfg.detection, cfg.models[0]).false_alarm_events == F
    file_only = lm_model() | {"baseline": {"file": "b.json"}}
    cfg = parse_config({**SRC, "detection": {"false_alarm_events": F}, "models": [file_only]},
                       tmp_path)
    assert concept_budget(cfg.models[0]) == (1.0, 1.0)


def test_the_label_book_calibrates_the_detector_to_its_share(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    det = LabelBook(cfg).concept["lm"]
    ref = reference_quality(cfg.models[0])
    assert ref is not None
    own = model_concept_detector(ref[1], F / CONCEPT_SHARE)
    whole = model_concept_detector(ref[1], F)
    assert CONCEPT_DEFAULT == "sr" and isinstance(det, ConceptSR)
    assert det.same_calibration(own)
    # a tenth of the rate: a higher threshold than at the whole budget
    assert det.threshold > whole.threshold


def test_a_state_of_the_detector_of_before_restores_afresh() -> None:
    """Checkpoints written by the 2- and 8-point CUSUMs at half the budget each restore: the
    join starts the detector of now with its sums at 0 (another calibration)."""
    from stream.config import LabelsConfig

    cfg = LabelsConfig(("id",), ("label",), "binary", topic="t", positive_class=1,
                       score_column="score", horizon_s=100.0, label_wait_s=10.0,
                       max_pending=1000, window=50)
    rng = np.random.default_rng(3)
    ref = (rng.random(20_000) < 0.10).astype(float)
    before = concept_detector(ref, 2_000, (0.02, 0.08), shares=(0.5, 0.5), n_values=500_000)
    before.configure_episodes(0.5, 1_000)
    before.update((rng.random(3_000) < 0.25).astype(float))
    assert before.drift_detected
    j = LabelJoin(cfg)
    j.concept = before
    saved = j.to_dict()
    now = model_concept_detector(ref, 2_000 / CONCEPT_SHARE, n_values=500_000)
    now.configure_episodes(0.5, 1_000)
    back = LabelJoin.from_dict(cfg, saved, now)
    assert back.concept is not None and now.same_calibration(back.concept)
    assert (back.concept.statistic, back.concept.drift_detected) == (0.0, False)
    assert back.concept.hold == 1_000
    # the mixture of now, mid-episode through a JSON checkpoint: the same later steps
    back.concept.update((rng.random(3_000) < 0.25).astype(float))
    assert back.concept.drift_detected
    again = orjson.loads(orjson.dumps(back.to_dict()))
    restored = LabelJoin.from_dict(cfg, again, now)
    assert isinstance(restored.concept, ConceptSR) and restored.concept is not now
    assert restored.concept.to_dict() == back.concept.to_dict()
    more = (rng.random(2_000) < 0.10).astype(float)
    assert restored.concept.update(more).tolist() == back.concept.update(more).tolist()
    assert restored.concept.to_dict() == back.concept.to_dict()
