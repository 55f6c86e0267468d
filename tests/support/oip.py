"""The same rows as JSON events and as Open Inference Protocol request/response batches.

:func:`make_rows` draws the columns of model ``credit`` (``x1``, ``x2``: a 2-column
tensor ``x``; ``amount`` with 3 % nulls; ``country``, a BYTES tensor; the prediction
``score``), with a mean shift of ``x1`` from row ``drift_at`` on.  :func:`json_events`
writes one JSON event per row, :func:`oip_messages` writes requests and responses of
1..40 rows each (data flat or nested, tensors in shuffled order), each response one batch
behind its request; :data:`JSON_MODEL` and :data:`OIP_MODEL` configure the same columns
for both formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

MODEL = "credit"
COUNTRIES = ("de", "fr", "it", "es", "nl")

JSON_MODEL: dict[str, Any] = {
    "name": MODEL, "select": {"field": "model", "equals": MODEL},
    "features": [{"name": "x1", "path": "f.x1", "type": "numeric"},
                 {"name": "x2", "path": "f.x2", "type": "numeric"},
                 {"name": "amount", "path": "f.amount", "type": "numeric"},
                 {"name": "country", "path": "f.country", "type": "categorical"}],
    "predictions": [{"name": "score", "path": "p.score", "type": "numeric"}],
}
OIP_MODEL: dict[str, Any] = {
    "name": MODEL, "select": {"field": "model_name", "equals": MODEL},
    "features": [{"name": "x1", "path": "inputs.x.0", "type": "numeric"},
                 {"name": "x2", "path": "inputs.x.1", "type": "numeric"},
                 {"name": "amount", "path": "inputs.amount", "type": "numeric"},
                 {"name": "country", "path": "inputs.country", "type": "categorical"}],
    "predictions": [{"name": "score", "path": "outputs.score", "type": "numeric"}],
}


def make_rows(seed: int, n: int, drift_at: int | None = None) -> dict[str, list[Any]]:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(0.0, 1.0, n)
    if drift_at is not None:
        x1[drift_at:] += 1.0
    x2 = rng.normal(5.0, 2.0, n)
    amount: list[Any] = np.round(rng.lognormal(3.0, 1.0, n), 2).tolist()
    for i in np.flatnonzero(rng.random(n) < 0.03).tolist():
        amount[i] = None
    country = [COUNTRIES[i] for i in rng.choice(len(COUNTRIES), n,
                                                p=[0.4, 0.25, 0.15, 0.15, 0.05]).tolist()]
    score = (1.0 / (1.0 + np.exp(-(x1 + 0.1 * x2)))).tolist()
    return {"x1": x1.tolist(), "x2": x2.tolist(), "amount": amount, "country": country,
            "score": score}


def json_events(rows: dict[str, list[Any]]) -> list[bytes]:
    n = len(rows["x1"])
    return [orjson.dumps({"model": MODEL,
                          "f": {"x1": rows["x1"][i], "x2": rows["x2"][i],
                                "amount": rows["amount"][i], "country": rows["country"][i]},
                          "p": {"score": rows["score"][i]}}) for i in range(n)]


@dataclass
class Message:
    """One OIP message: its kind, id, body, and the rows of its pair."""

    kind: str
    id: str
    body: bytes
    start: int
    stop: int

    @property
    def ce_headers(self) -> list[tuple[str, bytes]]:
        """CloudEvents binary-mode headers as KServe's logger writes them."""
        return [("ce-specversion", b"1.0"), ("ce-id", self.id.encode()),
                ("ce-type", f"org.kubeflow.serving.inference.{self.kind}".encode()),
                ("ce-source", b"http://localhost:9081/"),
                ("ce-time", b"2026-12-03T15:00:00Z"),
                ("ce-inferenceservicename", MODEL.encode()),
                ("content-type", b"application/json")]


def oip_messages(rows: dict[str, list[Any]], seed: int, *, max_rows: int = 40,
                 body_ids: bool = True, model_name: bool = True) -> list[Message]:
    """Requests and responses of the rows, in batches of 1..``max_rows``; the response of
    batch k comes after the request of batch k+1."""
    rng = np.random.default_rng(seed)
    n = len(rows["x1"])
    bounds = [0]
    while bounds[-1] < n:
        bounds.append(min(n, bounds[-1] + int(rng.integers(1, max_rows + 1))))
    requests, responses = [], []
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        ident = f"req-{seed}-{k}"
        x = [[rows["x1"][i], rows["x2"][i]] for i in range(a, b)]
        nested = bool(rng.random() < 0.5)
        inputs = [
            {"name": "x", "shape": [b - a, 2], "datatype": "FP64",
             "data": x if nested else [v for pair in x for v in pair]},
            {"name": "amount", "shape": [b - a], "datatype": "FP64",
             "data": rows["amount"][a:b]},
            {"name": "country", "shape": [b - a], "datatype": "BYTES",
             "data": rows["country"][a:b]},
            {"name": "unused", "shape": [b - a, 3], "datatype": "INT32",
             "data": [7] * (3 * (b - a))},
        ]
        order = rng.permutation(len(inputs)).tolist()
        request: dict[str, Any] = {"inputs": [inputs[j] for j in order]}
        response: dict[str, Any] = {
            "model_version": "3",
            "outputs": [{"name": "score", "shape": [b - a, 1], "datatype": "FP32",
                         "data": rows["score"][a:b]}]}
        if model_name:
            response["model_name"] = MODEL
        if body_ids:
            request["id"] = response["id"] = ident
        requests.append(Message("request", ident, orjson.dumps(request), a, b))
        responses.append(Message("response", ident, orjson.dumps(response), a, b))
    out: list[Message] = []
    for k, req in enumerate(requests):
        out.append(req)
        if k:
            out.append(responses[k - 1])
    out.append(responses[-1])
    return out


def row_lines(messages: list[Message], n: int) -> np.ndarray:
    """For each row, the index of the message that completes its pair (the later one)."""
    out = np.full(n, -1, dtype=np.int64)
    for line, m in enumerate(messages):
        out[m.start:m.stop] = line  # the later message of the pair writes last
    return out
