"""Labelled events of model ``m1`` with the facets sex and age_band, for the label-based
bias tests (recall and accuracy differences) and ``bench/bench_bias.py``.

Event ``i``: ``{"model": "m1", "id": "e<i>", "ts": T0 + i * 0.01, "applicant": {...},
"f": {"x": ...}, "p": {"score": s}}``; its label ``{"id": "e<i>", "ts": ..., "y": 0|1}``
(``y ~ Bernoulli(PREVALENCE)``).  A prediction is positive (``s >= 0.5``) with
probability ``RECALL`` when ``y = 1`` and ``FPR`` when ``y = 0``, the same for every facet
value, so the positive rates, recalls and accuracies of the values do not differ in
the reference.  ``recall_shift`` adds to the recall of ``shift_value`` (a sex) only;
with ``keep_rate`` its false-positive rate moves the other way so that its positive
prediction rate stays as it was (a change only the labels show: DPPL does not move).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tests.support.bias import AGE, AGE_SHARES, MODEL, SEX, SEX_SHARES, bias_model

T0 = 1.7e9
PREVALENCE = 0.3
RECALL = 0.8
FPR = 0.1


@dataclass
class LabelledFacets:
    sex: np.ndarray
    age: np.ndarray
    y: np.ndarray
    score: np.ndarray
    ids: list[str]
    ts: np.ndarray

    def events(self, label: bool = False) -> list[bytes]:
        """The inference events (``label``: with their label inline, as a reference)."""
        x = np.random.default_rng(len(self.ids)).normal(size=len(self.ids))
        return [orjson.dumps({"model": MODEL, "id": i, "ts": t,
                              "applicant": {"sex": s, "age_band": a}, "f": {"x": v},
                              "p": {"score": p}, **({"y": int(y)} if label else {})})
                for i, t, s, a, v, p, y in zip(
                    self.ids, self.ts.tolist(), self.sex.tolist(), self.age.tolist(),
                    x.tolist(), self.score.tolist(), self.y.tolist(), strict=True)]

    def labels(self, delay: float = 0.5) -> list[bytes]:
        """The label events, ``delay`` seconds of event time after their prediction."""
        return [orjson.dumps({"id": i, "ts": t + delay, "y": int(y)})
                for i, t, y in zip(self.ids, self.ts.tolist(), self.y.tolist(), strict=True)]


def labelled_facets(n: int, seed: int, *, start: int = 0, shift_value: str | None = None,
                    recall_shift: float = 0.0, keep_rate: bool = False) -> LabelledFacets:
    """``n`` labelled events numbered from ``start``, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(np.array(SEX, dtype=object), n, p=SEX_SHARES)
    age = rng.choice(np.array(AGE, dtype=object), n, p=AGE_SHARES)
    y = rng.random(n) < PREVALENCE
    recall, fpr = np.full(n, RECALL), np.full(n, FPR)
    if shift_value is not None:
        recall = recall + recall_shift * (sex == shift_value)
        if keep_rate:
            fpr = fpr - recall_shift * PREVALENCE / (1 - PREVALENCE) * (sex == shift_value)
    positive = np.where(y, rng.random(n) < recall, rng.random(n) < fpr)
    score = np.where(positive, 0.5 + 0.5 * rng.random(n), 0.5 * rng.random(n))
    idx = np.arange(start, start + n)
    return LabelledFacets(sex, age, y, score, [f"e{i}" for i in idx.tolist()],
                          T0 + idx * 0.01)


def labelled_bias_model(topic: str = "m1-labels", **bias: Any) -> dict[str, Any]:
    """Model m1 with the facets sex and age_band and binary labels from ``topic``
    (reference.jsonl beside the configuration, labels inline at ``y``)."""
    return {**bias_model(**bias),
            "labels": {"topic": topic, "id_path": "id", "label_path": "y", "task": "binary",
                       "positive_class": 1, "score_column": "score", "horizon_s": 600,
                       "label_wait_s": 600}}


def write_labelled_reference(path: Path, n: int = 40_000, seed: int = 1) -> Path:
    path.write_bytes(b"\n".join(labelled_facets(n, seed).events(label=True)) + b"\n")
    return path
