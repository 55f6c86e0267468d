"""Embedding columns from Open Inference Protocol tensors (``source.format: open-inference``).

A request tensor of shape ``[n, dim]`` named by ``inputs.<tensor>`` is ``n`` vectors of
``dim`` numbers: decoded into the ``(n, dim)`` matrix with the malformed reasons of JSON
arrays; the reference is a JSONL file of OIP messages decoded as the stream is; a replayed
change of one cluster's share opens an episode named after the vector column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from stream.config import ConfigError, parse_config
from stream.config.load import load_config
from stream.engine.baselines import detection_settings, resolve_baselines
from stream.engine.pipeline import Pipeline
from stream.engine.vectors import resolve_vectors
from stream.formats.oip import OipDecoder
from stream.runtime.replay import replay
from tests.support import embeddings as em

DIM = 4


def _config(dim: int = DIM, path: str = "inputs.emb") -> Any:
    return parse_config({"source": {"format": "open-inference"}, "models": [{
        "name": "m", "baseline": {"file": "b.json"},
        "features": [{"name": "x", "path": "inputs.x", "type": "numeric"},
                     {"name": "emb", "path": path, "type": "vector", "dim": dim}]}]}, "/")


def _request(ident: str, emb: Any, shape: list[int] | None = None, *, rows: int = 2,
             datatype: str = "FP32") -> bytes:
    tensors: list[dict[str, Any]] = [
        {"name": "x", "shape": [rows], "datatype": "FP64", "data": [0.5] * rows}]
    if emb is not None:
        tensors.append({"name": "emb", "shape": shape or [rows, DIM], "datatype": datatype,
                        "data": emb})
    return orjson.dumps({"id": ident, "inputs": tensors})


def test_a_tensor_of_shape_n_dim_is_n_vectors() -> None:
    dec = OipDecoder(_config())
    flat = _request("a", [1, 2, 3, 4, 5, 6, 7, 8])
    nested = _request("b", [[9, 10, 11, 12], [13, 14, 15, 16.5]])
    batch = dec.decode([flat, nested])
    assert batch.invalid == {}
    vec = batch.models["m"].vectors["emb"]
    expected = np.arange(1.0, 17.0).reshape(4, 4)
    expected[3, 3] = 16.5
    np.testing.assert_array_equal(vec.values, expected)
    assert vec.counts() == {"missing": 0, "wrong_dimension": 0, "not_numeric": 0}
    # the numeric column of the same requests is decoded as usual, row for row
    assert batch.models["m"].columns["x"].tolist() == [0.5] * 4


def test_malformed_vectors_are_counted_by_reason_and_their_events_kept() -> None:
    dec = OipDecoder(_config())
    good = _request("g", list(range(8)))
    messages = [
        good,
        _request("w", [0.0] * 6, [2, 3]),                  # [n, 3] against dim 4
        _request("one", [0.0] * 2, [2]),                   # a 1-d tensor: one value per row
        _request("s", [1, 2, 3, 4, 5, None, 7, 8]),        # a null in the second row
        _request("t", ["a", "b", "c", "d"] * 2, datatype="BYTES"),
        _request("gone", None),                            # the tensor is absent
        good.replace(b'"g"', b'"g2"'),
    ]
    batch = dec.decode(messages)
    mb = batch.models["m"]
    vec = mb.vectors["emb"]
    # every message is an event source: no message rejected, 14 rows, all of them kept
    assert batch.invalid == {} and mb.positions.tolist() == [i for i in range(7)
                                                             for _ in range(2)]
    assert vec.counts() == {"missing": 2, "wrong_dimension": 4, "not_numeric": 3}
    assert vec.valid.tolist() == [True, True, False, False, False, False, True, False,
                                  False, False, False, False, True, True]
    assert vec.values[vec.valid].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [1, 2, 3, 4],
                                              [0, 1, 2, 3], [4, 5, 6, 7]]
    assert np.isnan(vec.values[~vec.valid]).all()
    assert mb.columns["x"].tolist() == [0.5] * 14  # the events' other columns are kept


def test_shape_and_data_that_disagree_reject_the_message_only() -> None:
    dec = OipDecoder(_config())
    batch = dec.decode([_request("bad", [0.0] * 7), _request("ok", list(range(8)))])
    assert batch.invalid == {"invalid_tensor": 1}
    assert batch.models["m"].vectors["emb"].counts()["wrong_dimension"] == 0
    assert batch.models["m"].vectors["emb"].values.shape == (2, DIM)


@pytest.mark.parametrize("path", ["inputs.emb.1", "outputs.emb", "emb"])
def test_a_vector_path_that_is_no_request_tensor_is_refused(path: str) -> None:
    with pytest.raises(ConfigError) as info:
        _config(path=path)
    (error,) = [e for e in info.value.errors if "vector column 'emb'" in e]
    assert error.startswith("models[0].features: ") and "inputs.<tensor>" in error


# -- from the reference to an episode (replay, no broker) --------------------------------


def test_a_replayed_oip_cluster_share_change_opens_one_vector_episode(tmp_path: Path) -> None:
    (tmp_path / "ref.jsonl").write_bytes(b"\n".join(em.oip_requests(99, [(10_000, None)])))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(em.oip_config("ref.jsonl")))
    msgs = em.oip_requests(5, [(8_000, None), (4_000, em.SHIFTED_SHARE)])
    # a request of another dimension among the clean ones: counted, the stream goes on
    wrong = orjson.loads(msgs[10])
    wrong["id"] = "wrong"
    wrong["inputs"][1] |= {"shape": [10, 32], "data": wrong["inputs"][1]["data"][:320]}
    msgs = msgs[:100] + [orjson.dumps(wrong)] + msgs[100:]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(msgs))
    cfg = load_config(tmp_path / "c.yaml")
    pipeline = Pipeline(cfg, resolve_baselines(cfg))
    profile = pipeline.vectors[em.MODEL].profiles["emb"]
    assert profile.joint.n_ref == 10_000  # every reference row, from the OIP requests
    report = replay(cfg, pipeline, tmp_path / "in.jsonl", batch_lines=77)
    eps = report["episodes"]
    assert [(e["feature"], e["detectors"]) for e in eps] == [("emb", ["embedding"])], eps
    # the change starts at request 801 (800 clean ones and the wrong one before it)
    assert 801 <= eps[0]["open_index"] < 801 + 300, eps
    vec = report["models"][em.MODEL]["vectors"]["emb"]
    assert vec["rows"] == 12_000 and vec["alarms"] == 1
    assert vec["malformed"] == {"missing": 0, "wrong_dimension": 10, "not_numeric": 0}


def test_oip_vectors_need_a_jsonl_reference_and_avro_stays_refused(tmp_path: Path) -> None:
    (tmp_path / "ref.csv").write_text("x\n1\n")
    (tmp_path / "ref.jsonl").write_bytes(b"\n".join(em.oip_requests(1, [(500, None)])))
    for data, expected in (
            (em.oip_config("ref.csv"), "models[emb].baseline.reference: vector columns need a "
                                     "JSONL reference of Open Inference messages"),
            (em.oip_config("ref.jsonl") | {"source": {
                "format": "avro", "avro": {"registry_url": "http://127.0.0.1:9"},
                "kafka": {"bootstrap_servers": "127.0.0.1:9", "topics": ["t"],
                          "group_id": "g"}}},
             "models[emb].features: vector columns are read from JSON events or Open "
             "Inference tensors; source.format 'avro' is not supported")):
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
        cfg = load_config(tmp_path / "c.yaml")
        settings = detection_settings(cfg.detection)
        with pytest.raises(ConfigError) as info:
            resolve_vectors(cfg, settings)
        assert expected in info.value.errors[0], info.value.errors
