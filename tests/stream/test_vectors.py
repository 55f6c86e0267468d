"""Embedding columns (``type: vector``): configuration and decoding.

Bad configuration names the key and the fix; a bad vector is counted by reason and
leaves the rest of its batch (and its event's other columns) alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from stream.config import parse_config
from stream.formats.vectors import VECTOR_REASONS, vector_column
from tests.support.configs import INCOME, config_errors, minimal_config

EMB = {"name": "emb", "path": "f.emb", "type": "vector", "dim": 4}


# -- configuration ------------------------------------------------------------------------
def test_vector_feature_is_parsed_with_its_defaults() -> None:
    cfg = parse_config(minimal_config(dict(INCOME), dict(EMB),
                                      {**EMB, "name": "e2", "dim": 64, "components": 3}),
                       "/cfg")
    m = cfg.models[0]
    assert [c.name for c in m.columns] == ["income"]  # kept out of the per-column tests
    assert [(v.name, v.path, v.dim, v.components) for v in m.vectors] == [
        ("emb", ("f", "emb"), 4, 4), ("e2", ("f", "emb"), 64, 3)]


def test_a_model_without_vectors_has_none() -> None:
    assert parse_config(minimal_config(), "/cfg").models[0].vectors == ()


@pytest.mark.parametrize(("entry", "key", "words"), [
    ({k: v for k, v in EMB.items() if k != "dim"}, "features[1].dim", "required"),
    ({**EMB, "dim": 1}, "features[1].dim", "in 2.."),
    ({**EMB, "dim": "many"}, "features[1].dim", "integer"),
    ({**EMB, "components": 5}, "features[1].components", "in 1..4"),
    ({**EMB, "components": 0}, "features[1].components", "in 1.."),
    ({**EMB, "detectors": ["ks"]}, "features[1].detectors", "no per-column detectors"),
    ({**EMB, "name": "income"}, "features[1].name", "duplicate column name"),
    ({**EMB, "dims": 4}, "features[1].dims", "did you mean"),
    ({k: v for k, v in EMB.items() if k != "path"}, "features[1].path", "required"),
])
def test_bad_vector_config_names_the_key_and_the_fix(entry: dict, key: str, words: str) -> None:
    errors = config_errors(minimal_config(dict(INCOME), entry))
    hits = [e for e in errors if key in e]
    assert hits, errors
    assert any(words.lower() in e.lower() for e in hits), hits


def test_vector_prediction_is_refused() -> None:
    data = minimal_config()
    data["models"][0]["predictions"] = [dict(EMB)]
    errors = config_errors(data)
    assert any("predictions[0].type" in e and "features" in e for e in errors), errors


def test_a_group_cannot_take_a_vector_column() -> None:
    data = minimal_config(dict(INCOME), {**INCOME, "name": "x2", "path": "f.x2"}, dict(EMB))
    data["models"][0]["multivariate"] = [{"name": "g", "columns": ["income", "emb"]}]
    errors = config_errors(data)
    assert any("multivariate[0].columns[1]" in e for e in errors), errors


# -- decoding -----------------------------------------------------------------------------
def test_clean_vectors_decode_to_a_matrix() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8))
    values = [list(map(float, r)) for r in x]
    values[3] = [int(v * 10) for v in x[3]]  # JSON integers are numbers
    col = vector_column(values, 8)
    assert col.values.shape == (50, 8) and col.valid.all()
    np.testing.assert_array_equal(col.values[0], x[0])
    np.testing.assert_array_equal(col.values[3], np.trunc(x[3] * 10))
    assert col.counts() == {r: 0 for r in VECTOR_REASONS}


def test_bad_vectors_are_counted_by_reason_and_the_rest_kept() -> None:
    good = [0.5, 1.0, -2.0, 3]
    values = [good, None, [1.0, 2.0], [1.0, 2.0, 3.0, 4.0, 5.0], [1.0, "x", 3.0, 4.0],
              [1.0, True, 3.0, 4.0], [1.0, None, 3.0, 4.0], "1,2,3,4", {"a": 1}, 7,
              [1.0, float("nan"), 3.0, 4.0], [1.0, 10**400, 3.0, 4.0], [[1.0], 2.0, 3.0, 4.0],
              good]
    col = vector_column(values, 4)
    assert col.counts() == {"missing": 1, "wrong_dimension": 2, "not_numeric": 9}
    assert col.valid.tolist() == [True] + [False] * 12 + [True]
    np.testing.assert_array_equal(col.values[[0, 13]], [good, good])
    assert np.isnan(col.values[1:13]).all()


def test_a_non_finite_number_in_an_otherwise_clean_batch() -> None:
    values = [[1.0, 2.0], [float("inf"), 0.0], [3.0, 4.0]]
    col = vector_column(values, 2)
    assert col.counts()["not_numeric"] == 1 and col.valid.tolist() == [True, False, True]
    assert col.values[2].tolist() == [3.0, 4.0]


def test_empty_batch_and_take() -> None:
    col = vector_column([], 3)
    assert col.values.shape == (0, 3) and col.counts() == {r: 0 for r in VECTOR_REASONS}
    col = vector_column([[1, 2, 3], None, [4, 5, 6]], 3)
    part = col.take(np.array([1, 2]))
    assert part.counts()["missing"] == 1 and part.values[1].tolist() == [4.0, 5.0, 6.0]


@pytest.mark.parametrize("use_msgspec", [True, False])
def test_batch_decoder_gives_each_model_its_vector_matrix(use_msgspec: bool) -> None:
    """Both decode paths (msgspec Structs and orjson dicts), with a broken message in the
    batch: the vectors of the valid events are decoded, bad ones counted by reason."""
    import orjson

    from stream.formats.json import BatchDecoder

    data = minimal_config(dict(INCOME), dict(EMB))
    data["models"][0]["select"] = {"field": "model", "equals": "credit"}
    dec = BatchDecoder(parse_config(data, "/cfg"), use_msgspec=use_msgspec)
    msgs = [orjson.dumps({"model": "credit", "features": {"income": 1.0},
                          "f": {"emb": [1, 2.5, 3, 4]}}),
            b"{not json",
            orjson.dumps({"model": "credit", "features": {"income": 2.0}, "f": {"emb": [1]}}),
            orjson.dumps({"model": "credit", "features": {"income": 3.0}, "f": None}),
            orjson.dumps({"model": "credit", "features": {"income": 4.0},
                          "f": {"emb": [0.5, -1, 2, 1e3]}})]
    batch = dec.decode(msgs)
    mb = batch.models["credit"]
    assert batch.invalid == {"invalid_json": 1}
    assert mb.positions.tolist() == [0, 2, 3, 4]
    col = mb.vectors["emb"]
    assert col.counts() == {"missing": 1, "wrong_dimension": 1, "not_numeric": 0}
    np.testing.assert_array_equal(col.values[[0, 3]], [[1, 2.5, 3, 4], [0.5, -1, 2, 1e3]])
    assert mb.columns["income"].tolist() == [1.0, 2.0, 3.0, 4.0]
    tail = mb.take(np.array([2, 3]))
    assert tail.vectors["emb"].valid.tolist() == [False, True]
