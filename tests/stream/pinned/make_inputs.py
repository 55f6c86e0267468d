"""Regenerate the fixed input of ``tests/stream/test_behaviour_pinned.py`` (run by hand).

    /work/main/.venv/bin/python tests/stream/pinned/make_inputs.py

Writes, beside this script, ``reference-credit.jsonl.gz``, ``reference-fraud.jsonl.gz``
and ``events.jsonl.gz`` (gzip with mtime 0, so the bytes are reproducible).  The
configuration ``config.yaml`` is written by hand, not by this script.  The files are
gzipped to keep the repository small (~30,000 events); the test unpacks them into a
temporary folder beside a copy of ``config.yaml`` and replays from there.

After regenerating, rewrite the expected outputs on purpose:
``STREAMDRIFT_UPDATE_PINNED=1 python -m pytest tests/stream/test_behaviour_pinned.py``.

Everything is drawn from ``numpy.random.default_rng`` with fixed seeds; numbers are
rounded to 2 decimals, so the JSON text does not depend on float formatting details.

The events (line numbers are 0-based positions in ``events.jsonl``, malformed lines
included; the drifts are in terms of clean-event positions before the malformed lines
are inserted, so they move by a few lines):

* two models, ``credit`` (about 60 % of the events) and ``fraud``, chosen by ``model``;
* ``credit``: features ``income`` (numeric, lognormal-ish), ``age`` (numeric),
  ``country`` (categorical, 4 values); prediction ``score`` (numeric in [0, 1]);
* ``fraud``: features ``amount`` (numeric), ``merchant`` (categorical, 5 values);
  prediction ``label`` (categorical: ok / review / block);
* drift 1, events 8,000-12,000: ``credit.income`` mean shift (+0.6 sd);
* drift 2, events 16,000-20,000: ``fraud.merchant`` shares change (travel 5 % -> 25 %);
* drift 3, events 23,000-27,000: ``credit.age`` missing (null or absent) 30 % of the time;
* clean elsewhere; ``ts`` is an integer epoch second, one per event;
* malformed lines of every kind the decoder handles (see ``MALFORMED``), spread over the
  stream at fixed positions.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
N_EVENTS = 30_000
N_REFERENCE = 5_000
T0 = 1_700_000_000
COUNTRIES = ["de", "fr", "it", "es"]
COUNTRY_P = [0.4, 0.3, 0.2, 0.1]
MERCHANTS = ["grocery", "fuel", "online", "travel", "other"]
MERCHANT_P = [0.35, 0.2, 0.3, 0.05, 0.1]
MERCHANT_P_DRIFT = [0.25, 0.15, 0.25, 0.25, 0.1]
LABELS = ["ok", "review", "block"]

DRIFT_INCOME = (8_000, 12_000)
DRIFT_MERCHANT = (16_000, 20_000)
DRIFT_AGE_MISSING = (23_000, 27_000)

#: malformed lines, by the kind of damage; each is inserted once, at a fixed position
MALFORMED: list[bytes] = [
    # invalid JSON (reason invalid_json)
    b'{"model": "credit", "ts": 1700000000, "features": {"income": 3.1',
    b"not json at all",
    b"{'model': 'credit'}",
    b"",
    b'{"model": "fraud",}',
    b"\xff\xfe{}",
    # valid JSON, not an object (reason not_an_object)
    b"[1, 2, 3]",
    b'"credit"',
    b"42",
    b"null",
    b"true",
    # objects of no model (reason unknown_model)
    b'{"model": "mortgage", "ts": 1700000000, "features": {"income": 3.0}}',
    b'{"ts": 1700000000, "features": {"income": 3.0, "age": 40}}',
    b'{"model": null, "features": {}}',
    b'{"model": 1, "features": {}}',
    b'{"model": "CREDIT", "features": {}}',
    # wrong-typed values (an event of the model, the column counts an invalid value)
    b'{"model": "credit", "ts": 1700000000, "features": {"income": "3.2", "age": 41.0, '
    b'"country": "de"}, "prediction": {"score": 0.5}}',
    b'{"model": "credit", "ts": 1700000000, "features": {"income": 3.2, "age": true, '
    b'"country": "de"}, "prediction": {"score": 0.5}}',
    b'{"model": "credit", "ts": 1700000000, "features": {"income": 3.2, "age": 41.0, '
    b'"country": ["de"]}, "prediction": {"score": 0.5}}',
    b'{"model": "credit", "ts": 1700000000, "features": {"income": 3.2, "age": 41.0, '
    b'"country": "de"}, "prediction": {"score": {"value": 0.5}}}',
    b'{"model": "fraud", "ts": 1700000000, "features": {"amount": [12.5], "merchant": 7}, '
    b'"prediction": {"label": false}}',
    b'{"model": "fraud", "ts": "yesterday", "features": 3, "prediction": "ok"}',
    # null values (missing)
    b'{"model": "credit", "ts": null, "features": {"income": null, "age": null, '
    b'"country": null}, "prediction": {"score": null}}',
    b'{"model": "fraud", "ts": 1700000000, "features": {"amount": null, "merchant": null}, '
    b'"prediction": {"label": null}}',
    b'{"model": "fraud"}',
    # infinite / huge numbers written as JSON
    b'{"model": "credit", "ts": 1700000000, "features": {"income": 1e309, "age": 41.0, '
    b'"country": "de"}, "prediction": {"score": 0.5}}',
    b'{"model": "credit", "ts": 1700000000, "features": {"income": 3.2, "age": -1e400, '
    b'"country": "de"}, "prediction": {"score": Infinity}}',
    b'{"model": "credit", "ts": 1700000000, "features": {"income": NaN, "age": 41.0, '
    b'"country": "fr"}, "prediction": {"score": -Infinity}}',
    b'{"model": "credit", "ts": 1700000000, "features": {"income": 1e308, "age": 41.0, '
    b'"country": "it"}, "prediction": {"score": 0.5}}',
    b'{"model": "fraud", "ts": 1700000000, "features": {"amount": '
    b'123456789012345678901234567890, "merchant": 1e400}, "prediction": {"label": "ok"}}',
    b'{"model": "fraud", "ts": 1e400, "features": {"amount": -1.7976931348623157e308, '
    b'"merchant": "online"}, "prediction": {"label": 18446744073709551616}}',
    # oversized (config: source.max_message_bytes 4096; reason oversized)
    b'{"model": "credit", "pad": "' + b"x" * 5000 + b'"}',
]


def _credit(rng: np.random.Generator, i: int) -> dict[str, object]:
    income = rng.normal(3.0, 1.0)
    if DRIFT_INCOME[0] <= i < DRIFT_INCOME[1]:
        income += 0.6
    features: dict[str, object] = {
        "income": round(float(income), 2),
        "age": round(float(rng.normal(40.0, 12.0)), 1),
        "country": str(rng.choice(COUNTRIES, p=COUNTRY_P)),
    }
    if DRIFT_AGE_MISSING[0] <= i < DRIFT_AGE_MISSING[1] and rng.random() < 0.3:
        if rng.random() < 0.5:
            features["age"] = None
        else:
            del features["age"]
    score = 1.0 / (1.0 + np.exp(-(float(income) - 3.0)))
    return {"model": "credit", "ts": T0 + i, "features": features,
            "prediction": {"score": round(float(score), 2)}}


def _fraud(rng: np.random.Generator, i: int) -> dict[str, object]:
    drift = DRIFT_MERCHANT[0] <= i < DRIFT_MERCHANT[1]
    return {"model": "fraud", "ts": T0 + i, "features": {
        "amount": round(float(rng.gamma(2.0, 30.0)), 2),
        "merchant": str(rng.choice(MERCHANTS, p=MERCHANT_P_DRIFT if drift else MERCHANT_P))},
        "prediction": {"label": str(rng.choice(LABELS, p=[0.9, 0.07, 0.03]))}}


def _write(path: Path, lines: list[bytes]) -> None:
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                               filename="") as fh:
        fh.write(b"\n".join(lines) + b"\n")


def main() -> None:
    rng = np.random.default_rng(20240611)
    for name, make in (("credit", _credit), ("fraud", _fraud)):
        ref = [orjson.dumps(make(rng, -N_REFERENCE + i)) for i in range(N_REFERENCE)]
        _write(HERE / f"reference-{name}.jsonl.gz", ref)
    events = [orjson.dumps(_credit(rng, i) if rng.random() < 0.6 else _fraud(rng, i))
              for i in range(N_EVENTS)]
    # insert from the back so that the positions below are positions in the clean stream
    positions = np.linspace(500, N_EVENTS - 500, len(MALFORMED)).astype(int)
    for pos, bad in sorted(zip(positions.tolist(), MALFORMED, strict=True), reverse=True):
        events.insert(pos, bad)
    _write(HERE / "events.jsonl.gz", events)
    print(f"{len(events)} event lines ({len(MALFORMED)} malformed), "
          f"{N_REFERENCE} reference events per model -> {HERE}")


if __name__ == "__main__":
    main()
