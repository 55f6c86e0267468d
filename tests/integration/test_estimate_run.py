"""Estimated performance without labels under ``streamdrift run`` on a real broker: a
predictions topic and a labels topic (2 partitions each, keyed by the id), the inputs moved
towards the decision boundary (P(y|x) unchanged, ~7 points of accuracy lost), few labels:
the scrape carries the estimate, its band and the drop, next to the realised values.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import orjson
import pytest

from stream.config import load_config
from stream.engine.baselines import resolve_baselines
from tests.support.configs import write_config
from tests.support.estimate import estimate_stream
from tests.support.kafka import produce
from tests.support.labels import lm_model
from tests.support.ports import free_port
from tests.support.processes import StreamdriftRun
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

_produce = functools.partial(produce, linger_ms=5, acks="all")
_wait = functools.partial(wait_for, interval=0.1, retry=())
N = 4000


def _keyed(bootstrap: str, topic: str, messages: list[bytes]) -> None:
    _produce(bootstrap, topic, messages, keys=[orjson.loads(m)["id"].encode() for m in messages])


def test_run_exports_the_estimate_of_a_covariate_shift(kafka_bootstrap, make_topic,
                                                       tmp_path: Path) -> None:
    topic, labels = make_topic(partitions=2), make_topic(partitions=2)
    ref, _, _, _ = estimate_stream(101, 20_000)  # labelled inline, calibrated scores
    (tmp_path / "reference.jsonl").write_bytes(b"\n".join(ref) + b"\n")
    port = free_port()
    config = {
        "source": {"kafka": {"bootstrap_servers": kafka_bootstrap, "topics": [topic],
                             "group_id": f"g-{topic}", "auto_offset_reset": "earliest",
                             "max_poll_records": 500, "poll_timeout_ms": 200},
                   "timestamp": {"path": "ts", "unit": "s"}},
        "models": [lm_model(topic=labels, estimate={"window": 1000})],
        "detection": {"false_alarm_events": 1_000_000, "window": 500, "cadence": 50},
        "metrics": {"port": port, "host": "127.0.0.1"},
    }
    cfg = write_config(tmp_path / "config.yaml", config)
    resolve_baselines(load_config(cfg))
    events, lab, score, y = estimate_stream(5, N, shift=0.5, scale=0.7, labelled=0.1)
    run = StreamdriftRun(cfg, port=port, name="estimate")
    try:
        _keyed(kafka_bootstrap, topic, events)
        _keyed(kafka_bootstrap, labels, lab)
        run.wait_consumed(N)
        _wait(lambda: run.value("streamdrift_labels_total", model="lm", outcome="joined")
              >= len(lab) - 20, 60, "the labels joined", details=run.log_tail)

        def get(name: str, **labels: str) -> float:
            return run.value(name, model="lm", **labels)

        est = get("streamdrift_estimated_quality", metric="accuracy", scope="recent")
        base = get("streamdrift_estimated_quality", metric="accuracy", scope="baseline")
        lo = get("streamdrift_estimated_quality_lower", metric="accuracy")
        hi = get("streamdrift_estimated_quality_upper", metric="accuracy")
        band = get("streamdrift_estimated_quality_band", metric="accuracy")
        drop = get("streamdrift_estimated_quality_drop_active", metric="accuracy")
        size = get("streamdrift_estimated_quality_window_predictions")
        calibrated = get("streamdrift_estimated_quality_calibrated")
        realised_joined = get("streamdrift_model_quality", metric="accuracy", scope="recent")
        auc = get("streamdrift_estimated_quality", metric="roc_auc", scope="recent")
        run.check_alive()
    finally:
        run.stop(check=True)
    realised = float(np.mean((score >= 0.5) == (y == 1)))  # every prediction, labelled or not
    print(f"\n[estimate run] {N} predictions, {len(lab)} labels; realised accuracy "
          f"{realised:.4f}, estimate {est:.4f} [{lo:.4f}, {hi:.4f}], baseline {base:.4f} "
          f"band {band:.4f} drop {drop:g}; joined pairs' accuracy {realised_joined:.4f}; "
          f"AUC estimate {auc:.4f}")
    assert size == 2000  # the last 1,000 of each partition
    assert calibrated == 0
    assert abs(est - realised) < 0.03 and lo < est < hi
    assert base - realised > 0.04 and base - est > band and drop == 1
