"""Every registered detector class honours the shared contract of :mod:`detectors.base`.

The classes are discovered through ``registered_detectors()`` after importing every
module of the package, so a new detector kind fails here until it has a factory below.
"""

from __future__ import annotations

import importlib
import json
import math
import pkgutil
from collections.abc import Callable

import numpy as np
import pytest

import detectors
from detectors import catalogue
from detectors.base import Detector, registered_detectors
from detectors.errors import DetectorError
from detectors.profile import CategoricalProfile, NumericProfile

for _mod in pkgutil.iter_modules(detectors.__path__):
    importlib.import_module(f"detectors.{_mod.name}")

_rng = np.random.default_rng(0)
_NUM = NumericProfile.from_values(_rng.normal(size=4_000), bins=16)
_CAT_VALUES = np.array(list("abcde"), dtype=object)
_CAT = CategoricalProfile.from_values(_CAT_VALUES[_rng.choice(5, 4_000, p=[.4, .3, .15, .1, .05])])


def _rate(kind: str) -> Callable[[], Detector]:
    def make() -> Detector:
        return registered_detectors()[kind](base_rate=0.05, window=100, cadence=10,
                                            threshold=0.15, ref_count=1_000, name="feat")
    return make


#: kind -> factory building a small, alarming detector of that kind named "feat"
FACTORIES: dict[str, Callable[[], Detector]] = {
    "ks": lambda: registered_detectors()["ks"](
        _NUM.bin_edges, _NUM.bin_probabilities, window=100, cadence=10, threshold=0.25,
        ref_count=_NUM.count, name="feat"),
    "chi2": lambda: registered_detectors()["chi2"](
        _CAT.categories, _CAT.bin_probabilities, window=100, cadence=10, threshold=20.0,
        ref_count=_CAT.count, name="feat"),
    "adwin": lambda: registered_detectors()["adwin"](delta=0.01, name="feat"),
    "cusum": lambda: registered_detectors()["cusum"](mean=0.0, scale=1.0, threshold=12.0,
                                                     clip=(-4.0, 4.0), hold=100, name="feat"),
    "surprisal": lambda: registered_detectors()["surprisal"](
        _CAT.categories, _CAT.bin_probabilities, threshold=12.0, ref_count=_CAT.count, hold=100,
        name="feat"),
    "missing": _rate("missing"),
    "out_of_range": _rate("out_of_range"),
    "unseen": _rate("unseen"),
    "invalid_rate": _rate("invalid_rate"),
    "incomplete": _rate("incomplete"),
}


def null_and_drift(kind: str, input_kind: str, rng: np.random.Generator) -> np.ndarray:
    """A stream that starts like the baseline and then drifts clearly."""
    if input_kind == "numeric":
        return np.concatenate([rng.normal(size=1_500), rng.normal(2.0, 1.0, 1_500)])
    if input_kind == "categorical":
        return np.concatenate([_CAT_VALUES[rng.choice(5, 1_500, p=[.4, .3, .15, .1, .05])],
                               _CAT_VALUES[rng.choice(5, 1_500, p=[.05, .1, .15, .3, .4])]])
    return np.concatenate([rng.random(1_500) < 0.05, rng.random(1_500) < 0.5])


def with_gaps(x: np.ndarray, input_kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``x`` with missing/invalid entries inserted; returns (stream, positions of x in it)."""
    n = x.size + x.size // 5
    keep = np.sort(rng.choice(n, x.size, replace=False))
    if input_kind == "numeric":
        out = rng.choice(np.array([np.nan, np.inf, -np.inf]), n)
    else:
        out = np.full(n, None, dtype=object)
    out[keep] = x
    return out, keep


KINDS = sorted(registered_detectors())


def test_every_registered_kind_has_a_factory():
    assert set(KINDS) == set(FACTORIES), "add a factory for each new detector kind"
    assert {"ks", "chi2", "adwin", "missing", "out_of_range", "unseen"} <= set(KINDS)


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture
def det(kind) -> Detector:
    d = FACTORIES[kind]()
    assert isinstance(d, Detector) and d.kind == kind
    return d


def test_class_contract(kind):
    cls = registered_detectors()[kind]
    assert issubclass(cls, Detector)
    assert kind == kind.lower() and kind.replace("_", "").isalnum()
    assert cls.input_kind in ("numeric", "categorical", "flags")
    doc = cls.__dict__.get("__doc__")
    assert doc and doc.strip(), f"{cls.__name__} needs a docstring of its own"


def test_empty_batches(det):
    batches = [[], np.empty(0), np.empty(0, dtype=object), np.empty(0, dtype=bool),
               np.empty(0, dtype=np.int64)]
    for batch in batches:
        out = det.update(batch)
        assert isinstance(out, np.ndarray) and out.dtype == np.int64 and out.size == 0
    assert det.statistic == 0.0 and not det.drift_detected and det.n_alarms == 0


def test_stream_contract(det, kind):
    rng = np.random.default_rng(1)
    x = null_and_drift(kind, det.input_kind, rng)
    positions: list[int] = []
    start = 0
    for size in rng.integers(0, 180, size=40):
        batch = x[start:start + size]
        out = det.update(batch)
        assert out.dtype == np.int64
        assert np.all((out >= 0) & (out < batch.size)) and np.all(np.diff(out) > 0)
        positions.extend((out + start).tolist())
        start += batch.size
        s = det.summary()
        json.dumps(s, allow_nan=False)
        assert math.isfinite(det.statistic) and det.statistic >= 0
        assert math.isfinite(det.score)
        assert det.p_value is None or 0.0 <= det.p_value <= 1.0
        assert isinstance(det.drift_detected, bool)
        assert isinstance(det.threshold, float) and not math.isnan(det.threshold)
    assert positions and positions[-1] >= 1_500, "the drift should raise an alarm"
    assert det.n_alarms == len(positions)
    r = repr(det)
    assert type(det).__name__ in r and "statistic=" in r


def test_missing_and_invalid_values_do_not_corrupt_state(det, kind):
    rng = np.random.default_rng(2)
    x = null_and_drift(kind, det.input_kind, rng)
    clean = FACTORIES[kind]()
    expected = clean.update(x)
    if det.input_kind == "flags":
        # flags have no missing value: non-flag input is refused, leaving the state untouched
        before = det.to_dict()
        with pytest.raises(TypeError, match="feat"):
            det.update(np.array([np.nan, 1.0]))
        assert det.to_dict() == before
        return
    gappy, keep = with_gaps(x, det.input_kind, rng)
    got = det.update(gappy)
    assert got.tolist() == keep[expected].tolist()
    assert det.statistic == clean.statistic
    state, ref = det.to_dict(), clean.to_dict()
    assert state == ref
    # a batch of nothing but missing/invalid values changes nothing either (ADWIN's
    # drift_detected is documented as "detected by the most recent update call")
    filler = gappy[np.setdiff1d(np.arange(gappy.size), keep)][:50]
    assert det.update(filler).size == 0
    assert running_state(det) == running_state(clean)
    tail = null_and_drift(kind, det.input_kind, rng)[:500]
    assert det.update(tail).tolist() == clean.update(tail).tolist()


def running_state(det: Detector) -> dict:
    state = dict(det.to_dict()["state"])
    state.pop("drift_detected", None)
    return state


def test_to_dict_is_json_and_round_trips(det, kind):
    rng = np.random.default_rng(3)
    x = null_and_drift(kind, det.input_kind, rng)
    for cut in (0, 777, 1_600):
        d = FACTORIES[kind]()
        d.update(x[:cut])
        text = json.dumps(d.to_dict(), allow_nan=False)
        back = Detector.from_dict(json.loads(text))
        assert type(back) is type(d) and back.to_dict() == d.to_dict()
        assert repr(back) == repr(d)
        assert back.update(x[cut:]).tolist() == d.update(x[cut:]).tolist()
        assert back.to_dict() == d.to_dict()


def test_wrong_dtype_is_a_type_error_naming_the_column(det):
    wrong = {
        "numeric": [np.array(["1.0", "2.0"]), np.array([{"a": 1}, None], dtype=object)],
        "categorical": [np.array([1.5, 2.5])],
        "flags": [np.array([0.5, 1.0]), np.array(["yes", "no"])],
    }[det.input_kind]
    for batch in wrong:
        before = det.to_dict()
        with pytest.raises(TypeError, match="feat"):
            det.update(batch)
        assert det.to_dict() == before


def test_from_dict_rejects_garbage():
    from detectors.errors import DetectorError

    with pytest.raises(DetectorError, match="unknown detector kind"):
        Detector.from_dict({"kind": "nope", "state": {}})
    with pytest.raises(DetectorError):
        Detector.from_dict({"state": {}})
    with pytest.raises(DetectorError):
        Detector.from_dict(None)  # type: ignore[arg-type]


def test_kinds_cannot_be_registered_twice():
    with pytest.raises(TypeError, match="registered twice"):
        type("Impostor", (registered_detectors()["missing"],), {"kind": "ks"})


# -- the catalogue of alarming kinds -----------------------------------------------------------
ALARMING = sorted(k for k, cls in registered_detectors().items() if cls.column_types)
PROFILES = {"numeric": _NUM, "categorical": _CAT}


def test_the_catalogue_is_the_registered_alarming_kinds():
    assert sorted(catalogue.KINDS) == sorted(catalogue.ENTRIES) == ALARMING
    assert len(set(catalogue.KINDS)) == len(catalogue.KINDS)
    for kind in catalogue.KINDS:
        assert catalogue.entry(kind).cls is registered_detectors()[kind]
    # a tracker declares no column types, so it is registered but not catalogued
    assert "invalid_rate" in registered_detectors() and "invalid_rate" not in catalogue.KINDS


def test_default_sets_and_orders():
    assert catalogue.default_detectors("numeric") == ("ks", "adwin", "cusum", "missing",
                                                      "out_of_range")
    assert catalogue.default_detectors("categorical") == ("chi2", "surprisal", "missing",
                                                          "unseen")
    for column_type in catalogue.COLUMN_TYPES:
        default = catalogue.default_detectors(column_type)
        valid = catalogue.detectors_for(column_type)
        assert valid[:len(default)] == default
        assert set(valid) == {k for k in catalogue.KINDS
                              if column_type in catalogue.column_types(k)}
    assert catalogue.KINDS == ("ks", "adwin", "cusum", "missing", "out_of_range", "chi2",
                               "surprisal", "unseen")
    assert catalogue.column_types("missing") == ("numeric", "categorical")
    with pytest.raises(DetectorError, match="numeric or categorical"):
        catalogue.default_detectors("text")
    with pytest.raises(DetectorError, match="unknown detector kind 'invalid_rate'"):
        catalogue.budget_weight("invalid_rate")


def test_budget_weights_series_and_sequential_kinds():
    weights = {k: catalogue.budget_weight(k) for k in catalogue.KINDS}
    assert weights == {"ks": 1.0, "adwin": 1.0, "cusum": 8.0, "missing": 1.0,
                       "out_of_range": 1.0, "chi2": 4.0, "surprisal": 4.0, "unseen": 1.0}
    sequential = {k for k in catalogue.KINDS if catalogue.is_sequential(k)}
    assert sequential == {"adwin", "cusum", "surprisal"}
    for kind in catalogue.KINDS:
        assert catalogue.series_per_detector(kind) == (6 if kind in sequential else 7), kind


@pytest.mark.parametrize("kind", catalogue.KINDS)
def test_the_catalogue_builds_the_registered_class(kind):
    cls = registered_detectors()[kind]
    types = catalogue.column_types(kind)
    if cls.input_kind != "flags":  # a test of the values applies to their type only
        assert types == (cls.input_kind,)
    for column_type, profile in PROFILES.items():
        if column_type not in types:
            with pytest.raises(DetectorError, match="does not apply"):
                catalogue.make_detector(kind, profile, 100, 10, name="feat")
            continue
        det = catalogue.make_detector(kind, profile, 100, 10, threshold=0.5, name="feat")
        assert type(det) is cls and det.kind == kind
        assert (det.p_value is not None) == cls.has_p_value
        assert cls.has_p_value != cls.sequential  # a sequential test has no p-value
