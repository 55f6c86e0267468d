"""`streamdrift run` on a 4-partition topic: a producer keying by a feature is detected.

The events are clean (drawn as the reference is).  Produced with the message key set to
the event's ``country``, every partition holds a few countries only: the run logs ONE
partition-skew warning naming ``country`` (cause ``column_is_key``) and exports
``streamdrift_partition_skew_active{feature="country", cause="column_is_key"} 1``; the
numeric ``income``, whose level depends on the country, is flagged as correlated with the
key.  The same events with null keys (spread at random) give no warning, while the check
does compare the four partitions.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from tests.support.configs import write_config
from tests.support.kafka import produce
from tests.support.metrics import promtool_check_metrics, sample, samples
from tests.support.ports import free_port
from tests.support.processes import StreamdriftRun
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

COUNTRIES = ["US", "FR", "DE", "GB", "ES", "IT", "NL", "PL", "SE", "BR"]
P_COUNTRY = np.array([0.25, 0.15, 0.12, 0.1, 0.09, 0.08, 0.07, 0.06, 0.05, 0.03])
N_EVENTS = 16_000


def _events(seed: int, n: int) -> list[dict[str, Any]]:
    """Clean events: income's level depends on the country, x on nothing."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(COUNTRIES), n, p=P_COUNTRY)
    income = rng.lognormal(10.0 + 0.1 * idx, 0.4)
    x = rng.normal(size=n)
    return [{"model": "credit", "f": {"country": COUNTRIES[i], "income": float(v),
                                      "x": float(w)}}
            for i, v, w in zip(idx.tolist(), income.tolist(), x.tolist(), strict=True)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("skew")
    (d / "reference.jsonl").write_bytes(b"\n".join(orjson.dumps(e)
                                                   for e in _events(99, 10_000)))
    return d


def _config(workdir: Path, bootstrap: str, topic: str) -> tuple[Path, int]:
    port = free_port()
    config = {
        "source": {"kafka": {"bootstrap_servers": bootstrap, "topics": [topic],
                             "group_id": f"g-{topic}", "auto_offset_reset": "earliest",
                             "max_poll_records": 1000, "poll_timeout_ms": 200}},
        "models": [{"name": "credit", "select": {"field": "model", "equals": "credit"},
                    "baseline": {"reference": "reference.jsonl"},
                    "features": [
                        {"name": "country", "path": "f.country", "type": "categorical"},
                        {"name": "income", "path": "f.income", "type": "numeric"},
                        {"name": "x", "path": "f.x", "type": "numeric"}]}],
        # partition_check.window: 5,000 per partition on average, more than the topic
        # holds: every partition stays in the windows, however the backlog is read
        "detection": {"false_alarm_events": 1_000_000, "window": 500, "cadence": 50,
                      "partition_check": {"interval_s": 2, "window": 5_000,
                                          "min_events": 1_000}},
        "metrics": {"port": port, "host": "127.0.0.1"},
        "state": {"enabled": False},
    }
    return write_config(workdir / f"{topic}.yaml", config), port


def _skew_warnings(run: StreamdriftRun) -> list[dict[str, Any]]:
    out = []
    for line in run.stderr.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if rec.get("logger") == "streamdrift.skew" and rec.get("level") == "warning":
                out.append(rec)
    return out


def _run(workdir: Path, bootstrap: str, topic: str, keyed: bool) -> tuple[dict, list, str]:
    events = _events(seed=1, n=N_EVENTS)
    if keyed:  # the producer's default partitioner hashes the key: one country, one partition
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
        try:
            futures = [producer.send(topic, orjson.dumps(e), key=e["f"]["country"].encode())
                       for e in events]
            producer.flush(timeout=60)
            for f in futures:
                f.get(timeout=60)
        finally:
            producer.close(timeout=10)
    else:  # null keys, spread evenly over the 4 partitions (the producer's sticky
        # partitioner fills one partition per batch: under load one partition could get
        # too few events to be compared, and the check then counts 3 partitions, not 4)
        for part in range(4):
            produce(bootstrap, topic, [orjson.dumps(e) for e in events[part::4]],
                    partition=part, linger_ms=10)
    config, port = _config(workdir, bootstrap, topic)
    run = StreamdriftRun(config, port=port)
    try:
        run.wait_consumed(N_EVENTS, timeout=120, interval=0.5)

        def checked() -> dict | None:
            s = samples(run.scrape())
            done = sample(s, "streamdrift_partition_skew_checks_total", model="credit") >= 2
            return s if done else None
        wait_for(checked, 30, "two partition checks", alive=run.check_alive,
                 details=run.log_tail)
        time.sleep(2.5)  # one more check: no second warning
        text = run.scrape()
    finally:
        run.stop(check=True)
    return samples(text), _skew_warnings(run), text


def test_a_topic_keyed_by_country_warns_once_on_country(kafka_bootstrap, make_topic, workdir):
    s, warnings, text = _run(workdir, kafka_bootstrap, make_topic(partitions=4), keyed=True)
    by_column = {w["feature"]: w for w in warnings}
    assert sorted(w["feature"] for w in warnings) == sorted(by_column), warnings  # once each
    assert "country" in by_column and "x" not in by_column, warnings
    assert by_column["country"]["cause"] == "column_is_key"
    assert "keyed by country" in by_column["country"]["msg"]
    col = {"model": "credit", "feature": "country", "role": "feature"}
    assert sample(s, "streamdrift_partition_skew_active", **col, cause="column_is_key") == 1
    assert sample(s, "streamdrift_partition_skew_score", **col) > 1
    income = {"model": "credit", "feature": "income", "role": "feature"}
    assert sample(s, "streamdrift_partition_skew_active", **income,
                  cause="correlated_with_key") == 1
    assert sample(s, "streamdrift_partition_skew_partitions", model="credit") >= 2
    # the exposition with the skew series is clean for promtool
    chk = promtool_check_metrics(text)
    assert chk.returncode == 0 and not chk.stdout.strip(), chk.stdout + chk.stderr


def test_null_keys_give_no_warning(kafka_bootstrap, make_topic, workdir):
    s, warnings, _ = _run(workdir, kafka_bootstrap, make_topic(partitions=4), keyed=False)
    assert warnings == []
    assert sample(s, "streamdrift_partition_skew_partitions", model="credit") == 4
    active = [v for (name, _), v in s.items() if name == "streamdrift_partition_skew_active"]
    assert len(active) == 6 and not any(active)  # 3 columns x 2 causes, all 0
