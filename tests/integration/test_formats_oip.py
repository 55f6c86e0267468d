"""``source.format: open-inference`` against the real broker: KServe's logger on one topic
(CloudEvents binary-mode headers, bodies without ids) and Seldon Core 2's two topics
(``<model>.inputs`` / ``<model>.outputs``, the request id as the message key)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import stream.broker
from stream.config import Config
from stream.engine.baselines import resolve_baselines
from tests.support.kafka import produce
from tests.support.oip import OIP_MODEL, make_rows, oip_messages
from tests.support.runs import InProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

N_ROWS, DRIFT_AT = 6_000, 3_000
DETECTION = {"false_alarm_events": 1_000_000, "window": 500, "cadence": 50}
#: messages that are no inference: counted, never stopping the stream
BAD = [b"{not json", b'{"hello": "world"}']


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("oip-run")
    ref = make_rows(11, 4_000)
    (d / "ref-oip.jsonl").write_bytes(b"\n".join(m.body for m in oip_messages(ref, 12)))
    return d


@pytest.fixture(scope="module")
def baselines() -> Callable[[Config], dict[str, Any]]:
    cache: dict[str, Any] = {}

    def get(config: Config) -> dict[str, Any]:
        if not cache:
            cache.update(resolve_baselines(config))
        return cache

    return get


def _config(workdir: Path, bootstrap: str, topics: list[str], client: str,
            state: bool = False, group: str | None = None) -> Path:
    data = {
        "source": {"format": "open-inference",
                   "kafka": {"bootstrap_servers": bootstrap, "topics": topics,
                             "group_id": group or f"g-{topics[0]}",
                             "auto_offset_reset": "earliest",
                             "poll_timeout_ms": 200, "client": client}},
        "models": [{**OIP_MODEL, "baseline": {"reference": "ref-oip.jsonl"}}],
        "detection": DETECTION, "metrics": {"port": 0}, "state": {"enabled": state},
    }
    path = workdir / f"{topics[0]}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _consume(config: Path, baselines: Callable[[Config], dict[str, Any]],
             rows: int, settle_s: float = 0.0) -> InProcess:
    run = InProcess(config, baselines, "oip").start()
    deadline = time.monotonic() + 120
    try:
        while run.pipeline.events < rows and time.monotonic() < deadline:
            assert run.alive()
            time.sleep(0.2)
        time.sleep(settle_s)  # anything beyond ``rows`` would show up meanwhile
    finally:
        run.stop()
    return run


def _check(run: InProcess, invalid: dict[str, int]) -> None:
    snap = run.pipeline.snapshot()
    assert run.pipeline.events == N_ROWS, run.describe()
    assert snap.invalid == invalid
    assert snap.models["credit"].processed == N_ROWS
    x1 = snap.models["credit"].columns["x1"]
    assert x1.values == N_ROWS
    assert snap.models["credit"].columns["amount"].missing > 0
    drifted = {(a.feature, a.detector) for a in run.pipeline.recent_alarms}
    assert any(f == "x1" for f, _ in drifted), drifted
    assert all(a.index >= 0 for a in run.pipeline.recent_alarms)


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_kserve_logger_one_topic_with_cloudevents_headers(kafka_bootstrap, make_topic, workdir,
                                                          baselines, client) -> None:
    topic = make_topic()
    messages = oip_messages(make_rows(13, N_ROWS, drift_at=DRIFT_AT), 14, body_ids=False,
                            model_name=False)
    bodies = [m.body for m in messages] + BAD
    headers = [m.ce_headers for m in messages] + [[("ce-type", b"x")], []]
    produce(kafka_bootstrap, topic, bodies, headers=headers, linger_ms=10)
    run = _consume(_config(workdir, kafka_bootstrap, [topic], client), baselines, N_ROWS)
    # the bodies carry neither id nor model_name: ce-id joined them and model_name came
    # from ce-inferenceservicename
    _check(run, {"invalid_json": 1, "not_inference": 1})


def test_seldon_two_topics_keyed_by_request_id(kafka_bootstrap, workdir, baselines,
                                               request) -> None:
    stem = f"sd-{request.node.name[:20]}-{time.monotonic_ns() % 10**9}.model.credit"
    inputs = stream.broker.create_topic(kafka_bootstrap, f"{stem}.inputs", 1)
    outputs = stream.broker.create_topic(kafka_bootstrap, f"{stem}.outputs", 1)
    messages = oip_messages(make_rows(15, N_ROWS, drift_at=DRIFT_AT), 16, body_ids=False,
                            model_name=False)
    try:
        # responses first: the buffer holds them until their requests arrive
        responses = [m for m in messages if m.kind == "response"]
        produce(kafka_bootstrap, outputs, [m.body for m in responses],
                keys=[m.id.encode() for m in responses], linger_ms=10)
        requests = [m for m in messages if m.kind == "request"]
        produce(kafka_bootstrap, inputs, [m.body for m in requests],
                keys=[m.id.encode() for m in requests], linger_ms=10)
        run = _consume(_config(workdir, kafka_bootstrap, [inputs, outputs], "kafka-python"),
                       baselines, N_ROWS)
        # model_name from the topic (seldon.<namespace>.model.<model>.outputs)
        _check(run, {})
    finally:
        stream.broker.delete_topics(kafka_bootstrap, [inputs, outputs], timeout=10.0)


def test_halves_waiting_in_the_join_buffer_are_read_again_after_a_restart(
        kafka_bootstrap, workdir, baselines, request) -> None:
    # responses first; the first run reads every response but only half of the requests,
    # so the other half of the responses waits in its join buffer when it stops. The
    # restart (state restored from the checkpoint) reads them again from the oldest one
    # and joins them with the requests produced meanwhile: every row is counted once
    stem = f"rs-{time.monotonic_ns() % 10**9}.model.credit"
    inputs = stream.broker.create_topic(kafka_bootstrap, f"{stem}.inputs", 1)
    outputs = stream.broker.create_topic(kafka_bootstrap, f"{stem}.outputs", 1)
    messages = oip_messages(make_rows(17, N_ROWS), 18, body_ids=False, model_name=False)
    responses = [m for m in messages if m.kind == "response"]
    requests = [m for m in messages if m.kind == "request"]
    half = len(requests) // 2
    first_rows = sum(m.stop - m.start for m in requests[:half])
    try:
        produce(kafka_bootstrap, outputs, [m.body for m in responses],
                keys=[m.id.encode() for m in responses], linger_ms=10)
        produce(kafka_bootstrap, inputs, [m.body for m in requests[:half]],
                keys=[m.id.encode() for m in requests[:half]], linger_ms=10)
        cfg = _config(workdir, kafka_bootstrap, [inputs, outputs], "kafka-python",
                      state=True, group=f"g-{stem}")
        first = _consume(cfg, baselines, first_rows, settle_s=3.0)
        assert first.pipeline.events == first_rows, first.describe()
        produce(kafka_bootstrap, inputs, [m.body for m in requests[half:]],
                keys=[m.id.encode() for m in requests[half:]], linger_ms=10)
        second = _consume(cfg, baselines, N_ROWS - first_rows, settle_s=3.0)
        restores = second.runner.health.snapshot().restores
        assert restores.get("checkpoint", 0) >= 1, restores
        # the second run's rows are exactly the rest: none lost, none counted twice
        assert second.pipeline.events == N_ROWS - first_rows, second.describe()
        snap = second.pipeline.snapshot()
        assert not any(k.startswith("unjoined") for k in snap.invalid), snap.invalid
    finally:
        stream.broker.delete_topics(kafka_bootstrap, [inputs, outputs], timeout=10.0)
