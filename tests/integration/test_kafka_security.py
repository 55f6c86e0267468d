"""Kafka TLS and SASL pass-through, against a real broker with a SASL_SSL listener.

One broker for the module: stream.broker's LocalBroker with a ``SASL_SSL``
listener (certificate for 127.0.0.1/localhost signed by a CA made here with ``openssl``)
that enables SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN; the SCRAM credentials are created
when the storage is formatted.  The KRaft controller listener stays PLAINTEXT.

* ``streamdrift run`` (a subprocess) with SCRAM-SHA-512, the password from ``${ENV:...}``
  and ``ssl_cafile``: consumes, dead-letters, and serves its metrics over HTTPS with
  basic auth (``metrics.web_config``);
* a wrong password: a clear error, and the password in no output;
* SCRAM-SHA-256 through :class:`KafkaRunner` in this process;
* PLAIN over SASL_SSL through ``streamdrift run --log-level debug``.

Without java or openssl these tests FAIL under CI (``CI`` set) and are skipped elsewhere.
"""

from __future__ import annotations

import logging
import secrets
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

from tests.support import tls
from tests.support.configs import m1_config, write_config
from tests.support.events import Regime, m1_events, with_poison
from tests.support.kafka import produce
from tests.support.metrics import http_get, samples
from tests.support.ports import free_port
from tests.support.processes import StreamdriftRun, pid_alive

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

USER = "streamdrift"          # SCRAM (256 and 512) and PLAIN user of the runner
ADMIN = "admin"               # inter-broker and test-harness user
PASSWORD_ENV = "SD_TEST_KAFKA_PASSWORD"
METRICS_USER = "prometheus"
N_EVENTS = 600
POISON = [b"{not json", b'"a string"']
SCRAM_ITERATIONS = 4096
#: the events: x1 ~ N(0, 1), c1 uniform over a and b; no prediction
COLUMNS = ("x1", "c1")
REGIME = Regime(c1_values=("a", "b"), c1_p=None)


# -- the secured broker -------------------------------------------------------------------------


@dataclass
class SecureKafka:
    broker: Any
    pki: Any
    folder: Path
    password: str          # of USER
    admin_password: str
    metrics_password: str

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers

    def security_kwargs(self) -> dict[str, Any]:
        """kafka-python's settings of the test harness' admin user."""
        return {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_plain_username": ADMIN, "sasl_plain_password": self.admin_password,
                "ssl_cafile": str(self.pki.ca_cert)}

    def admin_kwargs(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap, **self.security_kwargs()}

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.password, self.admin_password, self.metrics_password)


def _jaas_scram(user: str, password: str) -> str:
    return ('org.apache.kafka.common.security.scram.ScramLoginModule required '
            f'username="{user}" password="{password}";')


@pytest.fixture(scope="module")
def kafka(broker_module: ModuleType, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[SecureKafka]:
    folder = tmp_path_factory.mktemp("kafka-security")
    pki = tls.make_pki(folder / "pki")
    # letters and digits only: the values go into JAAS strings and --add-scram arguments
    password, admin_password, metrics_password = (
        secrets.token_hex(16) for _ in range(3))
    listener = "listener.name.sasl_ssl"
    extra = {
        "listeners": "SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": "SASL_SSL://127.0.0.1:{port}",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.enabled.mechanisms": "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        f"{listener}.scram-sha-256.sasl.jaas.config": _jaas_scram(ADMIN, admin_password),
        f"{listener}.scram-sha-512.sasl.jaas.config": _jaas_scram(ADMIN, admin_password),
        f"{listener}.plain.sasl.jaas.config": (
            'org.apache.kafka.common.security.plain.PlainLoginModule required '
            f'username="{ADMIN}" password="{admin_password}" '
            f'user_{ADMIN}="{admin_password}" user_{USER}="{password}";'),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(pki.server_pem),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(pki.ca_cert),
    }
    format_args: list[str] = []
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        for name, pw in ((ADMIN, admin_password), (USER, password)):
            format_args += ["--add-scram",
                            f"{mechanism}=[name={name},iterations={SCRAM_ITERATIONS},"
                            f"password={pw}]"]
    client_config = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                     "sasl_plain_username": ADMIN, "sasl_plain_password": admin_password,
                     "ssl_cafile": str(pki.ca_cert)}
    broker = broker_module.LocalBroker(workdir=folder / "broker", extra_properties=extra,
                                       client_config=client_config, format_args=format_args)
    try:
        broker.start(timeout=150)
    except broker_module.BrokerError as exc:
        pytest.fail(f"the SASL_SSL broker did not start: {exc}", pytrace=False)
    pid = broker.pid
    try:
        yield SecureKafka(broker, pki, folder, password, admin_password, metrics_password)
    finally:
        broker.stop()
        assert pid is not None and not pid_alive(pid), f"java pid {pid} survived stop()"


# -- data, config, helpers ----------------------------------------------------------------------


def _config(kafka: SecureKafka, topic: str, mechanism: str, *, name: str,
            port: int = 0, web_config: bool = False, client: str = "kafka-python") -> Path:
    config = m1_config(
        bootstrap=kafka.bootstrap, topic=topic, group=f"g-{name}-{uuid.uuid4().hex[:6]}",
        port=port, columns=COLUMNS, baseline={"file": "m1.baseline.json"},
        kafka={"poll_timeout_ms": 200, "security_protocol": "SASL_SSL",
               "sasl_mechanism": mechanism, "sasl_username": USER,
               "sasl_password": f"${{ENV:{PASSWORD_ENV}}}", "ssl_cafile": "pki/ca.crt",
               "client": client},
        dead_letter=f"{topic}-dl",
        detection={"window": 200, "cadence": 50, "false_alarm_events": 100000},
        metrics={"web_config": "web.yml"} if web_config else None)
    return write_config(kafka.folder / f"{name}.yaml", config)


@pytest.fixture(scope="module")
def baseline(kafka: SecureKafka) -> Path:
    """m1.baseline.json in the module folder, built once from clean events."""
    from stream.config import load_config
    from stream.engine.baselines import build_baseline, save_baseline

    ref = kafka.folder / "reference.jsonl"
    ref.write_bytes(b"\n".join(m1_events(5, [(3000, REGIME)], COLUMNS)))
    cfg = _config(kafka, "unused", "SCRAM-SHA-512", name="baseline")
    config = load_config(cfg, environ={PASSWORD_ENV: "x"})
    out = kafka.folder / "m1.baseline.json"
    save_baseline(build_baseline(config, config.models[0], ref), out)
    return out


def _topic(kafka: SecureKafka, tag: str) -> str:
    return kafka.broker.create_topic(f"sd-sec-{tag}-{uuid.uuid4().hex[:8]}")


def _produce(kafka: SecureKafka, topic: str, n: int, poison: list[bytes]) -> int:
    messages = with_poison(m1_events(11, [(n, REGIME)], COLUMNS), poison, 100, 200)
    produce(kafka.bootstrap, topic, messages, **kafka.security_kwargs(), acks="all",
            linger_ms=5)
    return len(messages)


def _count(kafka: SecureKafka, topic: str, expected: int, timeout: float = 30) -> int:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, **kafka.admin_kwargs(), group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False)
    seen = 0
    try:
        deadline = time.monotonic() + timeout
        while seen < expected and time.monotonic() < deadline:
            seen += sum(len(v) for v in consumer.poll(timeout_ms=500).values())
    finally:
        consumer.close()
    return seen


def _web_config(kafka: SecureKafka) -> None:
    import bcrypt

    hashed = bcrypt.hashpw(kafka.metrics_password.encode(), bcrypt.gensalt(4)).decode()
    (kafka.folder / "web.yml").write_text(
        "tls_server_config:\n  cert_file: pki/server.crt\n  key_file: pki/server.key\n"
        f"basic_auth_users:\n  {METRICS_USER}: '{hashed}'\n")


def _scrape(kafka: SecureKafka, port: int, password: str | None) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(kafka.pki.ca_cert))
    status, _, body = http_get(f"https://127.0.0.1:{port}/metrics", ctx,
                               user=None if password is None else METRICS_USER,
                               password=password, timeout=5)
    return status, body


def _run(config: Path, password: str, *extra: str) -> StreamdriftRun:
    """``streamdrift --log-level debug run``, the runner's password in its environment."""
    return StreamdriftRun(config, *extra, log_level="debug", env={PASSWORD_ENV: password},
                          keep_stdout=True)


def _no_secrets(text: str, kafka: SecureKafka, *more: str) -> None:
    for secret in (*kafka.secrets, *more):
        assert secret not in text, "a password shows in the output"


# -- (a) SCRAM-SHA-512, password from the environment, metrics over HTTPS + basic auth ---------


#: both consumers of `streamdrift run` (confluent-kafka is in the test extra)
CLIENTS = pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])


@CLIENTS
def test_run_scram_sha512_with_secured_metrics(kafka: SecureKafka, baseline: Path,
                                               client: str) -> None:
    topic = _topic(kafka, "s512")
    total = _produce(kafka, topic, N_EVENTS, POISON)
    _web_config(kafka)
    port = free_port()
    config = _config(kafka, topic, "SCRAM-SHA-512", name=f"s512-{client}", port=port,
                     web_config=True, client=client)
    run = _run(config, kafka.password)
    text = ""
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert run.proc.poll() is None, f"run exited early:\n{run.output()[-3000:]}"
            try:
                status, text = _scrape(kafka, port, kafka.metrics_password)
            except OSError:
                status = 0
            if status == 200:
                s = samples(text)
                if s.get(("streamdrift_dead_letter_total", (("result", "ok"),)), 0) >= 2:
                    break
            time.sleep(0.5)
        else:
            raise AssertionError(f"not processed in time; last scrape:\n{text[-2000:]}\n"
                                 f"{run.output()[-3000:]}")
        # the endpoint refuses scrapes without the right credentials
        assert _scrape(kafka, port, None)[0] == 401
        assert _scrape(kafka, port, "not-the-password")[0] == 401
    finally:
        rc = run.stop(60)
    out = run.output()
    assert rc == 0, out[-3000:]
    s = samples(text)
    assert s[("streamdrift_events_consumed_total", ())] == total
    assert s[("streamdrift_events_processed_total", (("model", "m1"),))] == N_EVENTS
    assert s[("streamdrift_source_up", ())] == 1
    assert _count(kafka, f"{topic}-dl", len(POISON)) == len(POISON)  # written over SASL_SSL
    assert "metrics endpoint secured" in out
    _no_secrets(out, kafka)


# -- (b) a wrong password ---------------------------------------------------------------------


@CLIENTS
def test_wrong_password_is_a_clear_error(kafka: SecureKafka, baseline: Path, client: str) -> None:
    topic = _topic(kafka, "bad")
    config = _config(kafka, topic, "SCRAM-SHA-512", name=f"badpw-{client}", port=free_port(),
                     client=client)
    wrong = secrets.token_hex(16)
    log = kafka.broker.log_path
    log_before = log.stat().st_size
    t0 = time.monotonic()
    run = _run(config, wrong)
    try:
        rc = run.proc.wait(120)
    finally:
        run.stop(60)
    took = time.monotonic() - t0
    out = run.output()
    assert rc == 2, f"exit code {rc}:\n{out[-3000:]}"
    assert took < 100
    assert "Traceback" not in out, out[-3000:]
    error = [line for line in out.splitlines() if line.startswith("error: ")]
    assert error, out[-3000:]
    message = error[-1]
    assert f"cannot connect to Kafka at {kafka.bootstrap}" in message, message
    assert "SASL_SSL" in message and "SCRAM-SHA-512" in message and f"'{USER}'" in message
    assert "sasl_password" in message  # says what to check
    _no_secrets(out, kafka, wrong)
    # the broker says why: the credentials, not TLS
    with log.open("rb") as f:
        f.seek(log_before)
        assert b"invalid credentials with SASL mechanism SCRAM-SHA-512" in f.read()


# -- (c) SCRAM-SHA-256 through KafkaRunner in this process -------------------------------------


def test_runner_scram_sha256(kafka: SecureKafka, baseline: Path,
                             caplog: pytest.LogCaptureFixture) -> None:
    from stream.config import load_config
    from stream.engine.baselines import resolve_baselines
    from stream.engine.pipeline import Pipeline
    from stream.runtime.runner import KafkaRunner

    # as the CLI logs: ours at debug, kafka-python's at warning and above
    caplog.set_level(logging.DEBUG, logger="streamdrift")
    caplog.set_level(logging.WARNING, logger="kafka")
    topic = _topic(kafka, "s256")
    total = _produce(kafka, topic, N_EVENTS, [])
    config = load_config(_config(kafka, topic, "SCRAM-SHA-256", name="s256"),
                         environ={PASSWORD_ENV: kafka.password})
    k = config.source.kafka
    assert k is not None and k.sasl_password is not None
    assert kafka.password not in repr(config)
    pipeline = Pipeline(config, resolve_baselines(config))
    consumed = KafkaRunner(config, pipeline).run(max_events=total, idle_timeout=60)
    assert consumed == total
    assert pipeline.snapshot().models["m1"].processed == N_EVENTS
    records = "\n".join(str(r.__dict__) for r in caplog.records)
    _no_secrets(caplog.text + records, kafka)


# -- (d) PLAIN over SASL_SSL, debug logging ----------------------------------------------------


def test_run_plain_over_sasl_ssl(kafka: SecureKafka, baseline: Path) -> None:
    topic = _topic(kafka, "plain")
    total = _produce(kafka, topic, N_EVENTS, [])
    config = _config(kafka, topic, "PLAIN", name="plain", port=free_port())
    run = _run(config, kafka.password, "--max-events", str(total))
    try:
        rc = run.proc.wait(120)
    finally:
        run.stop(60)
    out = run.output()
    assert rc == 0, out[-3000:]
    stopped = [orjson.loads(line) for line in out.splitlines()
               if line.startswith("{") and '"stopped"' in line]
    assert stopped and stopped[-1]["consumed"] == total, out[-3000:]
    # kafka-python logs the PLAIN exchange, password included, at DEBUG: the CLI keeps the
    # kafka loggers at WARNING whatever --log-level says
    _no_secrets(out, kafka)
