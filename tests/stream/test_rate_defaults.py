"""A model configured with the defaults: the rate tests' minimum effect, end to end.

The configuration gives the missing-value test a default
``min_effect`` (``detectors.catalogue.RATE_MIN_EFFECT``); this checks that it reaches the
live detectors of a model built as ``streamdrift`` builds it, and what it is for: a
persistent 0.3 % of events missing a field, in a stream whose reference had none, does
not alarm, and a rise to 5 % does, within a window.
"""

from __future__ import annotations

import numpy as np
import pytest

from detectors.catalogue import RATE_MIN_EFFECT
from detectors.model import ModelBaseline, ModelMonitor
from stream.config import parse_config
from stream.engine.baselines import column_specs, detection_settings
from tests.support.configs import minimal_config


@pytest.fixture(scope="module")
def model() -> tuple[ModelBaseline, object, object]:
    cfg = parse_config(minimal_config(), "/cfg")  # every detection setting at its default
    (mcfg,) = cfg.models
    specs, settings = column_specs(mcfg), detection_settings(cfg.detection)
    ref = np.random.default_rng(0).lognormal(size=10_000)  # no missing value
    return ModelBaseline.build("credit", {"income": ref}, specs, settings), specs, settings


def _monitor(model: tuple[ModelBaseline, object, object]) -> ModelMonitor:
    base, specs, settings = model
    return base.monitor(specs, settings)  # type: ignore[arg-type]


def _missing_alarms(mon: ModelMonitor, x: np.ndarray) -> list[int]:
    alarms = []
    for start in range(0, x.size, 5_000):  # batches, as the pipeline feeds them
        alarms += [a.position + start for a in mon.update({"income": x[start:start + 5_000]})
                   if a.detector == "missing"]
    return alarms


def test_the_default_reaches_the_live_detector(model: tuple[ModelBaseline, object, object],
                                               ) -> None:
    det = _monitor(model).columns["income"].detectors["missing"]
    assert det.min_effect == RATE_MIN_EFFECT
    assert model[0].calibrations["income"]["missing"].method == "analytic"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_persistent_small_missing_rate_does_not_alarm(
        model: tuple[ModelBaseline, object, object], seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.lognormal(size=200_000)
    x[rng.random(x.size) < 0.003] = np.nan
    assert _missing_alarms(_monitor(model), x) == []


@pytest.mark.parametrize("seed", [4, 5])
def test_a_rise_to_five_percent_alarms_within_a_window(
        model: tuple[ModelBaseline, object, object], seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.lognormal(size=60_000)
    x[:50_000][rng.random(50_000) < 0.003] = np.nan
    tail = x[50_000:]
    tail[rng.random(tail.size) < 0.05] = np.nan
    alarms = _missing_alarms(_monitor(model), x)
    assert alarms and 50_000 <= alarms[0] < 51_000
