"""The metrics endpoint with an exporter-toolkit web-config file: HTTPS, client
certificates, basic auth, bad files, and secrets that never reach a log.

Certificates are made per module with the ``openssl`` command (tests.support.tls);
without it these tests fail under CI and are skipped elsewhere.  Basic auth needs the
``bcrypt`` package (the same rule applies).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import shutil
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from stream.config import ConfigError
from stream.config.web import load_web_config
from stream.engine.figures import PipelineSnapshot
from stream.engine.pipeline import BATCH_BUCKETS
from stream.sinks.http import BasicAuth
from stream.sinks.metrics import serve
from tests.support import tls
from tests.support.metrics import http_get
from tests.support.policy import unavailable
from tests.support.ports import free_port

pytestmark = pytest.mark.timeout(120)

PASSWORD = "correct horse battery staple 7f3a"
OTHER_USER_PASSWORD = "s3cond-user-pw-91c2"


def _bcrypt() -> Any:
    try:
        import bcrypt
    except ImportError:
        unavailable("the Python package bcrypt is not installed (pip install bcrypt)")
    return bcrypt


# -- fixtures ---------------------------------------------------------------------------------


class StubPipeline:
    """What the collector reads: a snapshot with no models and three consumed messages."""

    def __init__(self, web_config: Path | None = None) -> None:
        self.config = SimpleNamespace(metrics=SimpleNamespace(web_config=web_config))

    def snapshot(self) -> PipelineSnapshot:
        return PipelineSnapshot(consumed=3, invalid={}, models={},
                                batch_counts=[0] * len(BATCH_BUCKETS), batch_sum=0.0,
                                last_batch_ts=0.0, partitions={})


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tls.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    bcrypt = _bcrypt()
    return {
        # cost 4 keeps the tests fast; $2y$ is what htpasswd writes
        "prometheus": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
        .replace("$2b$", "$2y$"),
        "grafana": bcrypt.hashpw(OTHER_USER_PASSWORD.encode(), bcrypt.gensalt(4)).decode(),
    }


@pytest.fixture
def folder(tmp_path: Path, pki: Any) -> Path:
    """A folder with copies of the server files, so that web configs can use relative paths."""
    for src in (pki.server_cert, pki.server_key, pki.ca_cert):
        shutil.copy(src, tmp_path / src.name)
    return tmp_path


@pytest.fixture
def started() -> Iterator[list[Any]]:
    servers: list[Any] = []
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def _serve(started: list[Any], web_config: Any, pipeline: Any = None) -> tuple[Any, int]:
    server, _thread, port = serve(pipeline or StubPipeline(), "127.0.0.1", 0, web_config)
    started.append(server)
    return server, port


def _write(folder: Path, text: str, name: str = "web.yml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _client_ctx(ca: Path | None, cert: Path | None = None, key: Path | None = None,
                max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def _refused(url: str, ctx: ssl.SSLContext | None) -> BaseException:
    """The error of a request that must fail at the TLS level."""
    with pytest.raises((ssl.SSLError, OSError, urllib.error.URLError)) as info:
        status, _, body = http_get(url, ctx)
        pytest.fail(f"request succeeded with {status}: {body[:200]}")
    return info.value


def _metric_ok(body: str) -> None:
    assert "streamdrift_events_consumed_total 3.0" in body, body[:500]


# -- plain HTTP stays as it was ---------------------------------------------------------------


def test_without_web_config_serves_plain_http(started: list[Any]) -> None:
    server, port = _serve(started, None)
    assert server.scheme == "http"
    status, _, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    _metric_ok(body)


def test_default_reads_web_config_from_the_pipeline_config(
        started: list[Any], folder: Path, pki: Any) -> None:
    web = _write(folder, "tls_server_config: {cert_file: server.crt, key_file: server.key}\n")
    server, _thread, port = serve(StubPipeline(web), "127.0.0.1", 0)
    started.append(server)
    assert server.scheme == "https"
    status, _, body = http_get(f"https://127.0.0.1:{port}/metrics", _client_ctx(pki.ca_cert))
    assert status == 200
    _metric_ok(body)
    # and a pipeline whose config has none gets plain HTTP
    server2, _t, port2 = serve(StubPipeline(None), "127.0.0.1", 0)
    started.append(server2)
    assert http_get(f"http://127.0.0.1:{port2}/metrics")[0] == 200


# -- HTTPS ------------------------------------------------------------------------------------


def test_https_verified_with_the_ca(started: list[Any], folder: Path, pki: Any) -> None:
    web = _write(folder, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                         "http_server_config:\n  headers:\n"
                         "    Strict-Transport-Security: max-age=31536000\n")
    _server, port = _serve(started, web)
    for host in ("127.0.0.1", "localhost"):
        status, headers, body = http_get(f"https://{host}:{port}/metrics", _client_ctx(pki.ca_cert))
        assert status == 200
        assert headers.get("Strict-Transport-Security") == "max-age=31536000"
        _metric_ok(body)
    # a client trusting another CA refuses the server
    err = _refused(f"https://127.0.0.1:{port}/metrics", _client_ctx(pki.other_ca_cert))
    assert "CERTIFICATE_VERIFY_FAILED" in str(err)
    # plain HTTP to the TLS port gets no metrics
    with pytest.raises((OSError, urllib.error.URLError, ConnectionError)):
        http_get(f"http://127.0.0.1:{port}/metrics")


def test_min_version_is_enforced(started: list[Any], folder: Path, pki: Any) -> None:
    web = _write(folder, "tls_server_config: {cert_file: server.crt, key_file: server.key, "
                         "min_version: TLS13}\n")
    _server, port = _serve(started, web)
    url = f"https://127.0.0.1:{port}/metrics"
    assert http_get(url, _client_ctx(pki.ca_cert))[0] == 200
    _refused(url, _client_ctx(pki.ca_cert, max_version=ssl.TLSVersion.TLSv1_2))


def test_client_certificates_required(started: list[Any], folder: Path, pki: Any) -> None:
    # client_ca_file alone means RequireAndVerifyClientCert, as in exporter-toolkit
    web = _write(folder, "tls_server_config: {cert_file: server.crt, key_file: server.key, "
                         "client_ca_file: ca.crt}\n")
    _server, port = _serve(started, web)
    url = f"https://127.0.0.1:{port}/metrics"
    status, _, body = http_get(url, _client_ctx(pki.ca_cert, pki.client_cert, pki.client_key))
    assert status == 200
    _metric_ok(body)
    _refused(url, _client_ctx(pki.ca_cert))  # no client certificate
    _refused(url, _client_ctx(pki.ca_cert, pki.other_client_cert, pki.other_client_key))


def test_client_certificate_verified_if_given(started: list[Any], folder: Path, pki: Any) -> None:
    web = _write(folder, "tls_server_config: {cert_file: server.crt, key_file: server.key, "
                         "client_ca_file: ca.crt, client_auth_type: VerifyClientCertIfGiven}\n")
    _server, port = _serve(started, web)
    url = f"https://127.0.0.1:{port}/metrics"
    assert http_get(url, _client_ctx(pki.ca_cert))[0] == 200
    assert http_get(url, _client_ctx(pki.ca_cert, pki.client_cert, pki.client_key))[0] == 200
    _refused(url, _client_ctx(pki.ca_cert, pki.other_client_cert, pki.other_client_key))


@pytest.mark.parametrize("allowed, ok", [([tls.CLIENT_SAN], True), (["other.example"], False)])
def test_client_allowed_sans(started: list[Any], folder: Path, pki: Any, allowed: list[str],
                             ok: bool) -> None:
    web = _write(folder, "tls_server_config: {cert_file: server.crt, key_file: server.key, "
                         f"client_ca_file: ca.crt, client_allowed_sans: {allowed}}}\n")
    _server, port = _serve(started, web)
    url = f"https://127.0.0.1:{port}/metrics"
    ctx = _client_ctx(pki.ca_cert, pki.client_cert, pki.client_key)
    if ok:
        assert http_get(url, ctx)[0] == 200
    else:
        _refused(url, ctx)


def test_a_stalled_handshake_does_not_block_other_scrapes(
        started: list[Any], folder: Path, pki: Any) -> None:
    web = _write(folder, "tls_server_config: {cert_file: server.crt, key_file: server.key}\n")
    _server, port = _serve(started, web)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    try:
        t0 = time.monotonic()
        assert http_get(f"https://127.0.0.1:{port}/metrics", _client_ctx(pki.ca_cert))[0] == 200
        assert time.monotonic() - t0 < 3
    finally:
        for s in idle:
            s.close()


def test_rotated_certificate_is_picked_up(started: list[Any], folder: Path, pki: Any,
                                          tmp_path_factory: pytest.TempPathFactory,
                                          caplog: pytest.LogCaptureFixture) -> None:
    web = _write(folder, "tls_server_config: {cert_file: server.crt, key_file: server.key}\n")
    _server, port = _serve(started, web)
    new = tls.make_pki(tmp_path_factory.mktemp("rotated"))
    ctx = _client_ctx(pki.ca_cert)
    ctx.load_verify_locations(cafile=str(new.ca_cert))  # trusts both issuers

    def served() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            der = s.getpeercert(binary_form=True)
        assert der is not None
        return der

    def der(path: Path) -> bytes:
        return ssl.PEM_cert_to_DER_cert(path.read_text())

    assert served() == der(pki.server_cert)
    # a half-done rotation (new key, old certificate) keeps serving the old pair
    shutil.copy(new.server_key, folder / "server.key")
    for _ in range(2):
        time.sleep(1.1)
        assert served() == der(pki.server_cert)
    warned = [r for r in caplog.records if "cannot be loaded" in r.getMessage()]
    assert len(warned) == 1  # once per change, not at every check
    assert "tls_server_config.key_file" in warned[0].getMessage()
    shutil.copy(new.server_cert, folder / "server.crt")
    deadline = time.monotonic() + 10
    while served() != der(new.server_cert) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert served() == der(new.server_cert)


# -- basic auth -------------------------------------------------------------------------------


def _users_yaml(hashes: dict[str, str]) -> str:
    return "basic_auth_users:\n" + "".join(f"  {u}: '{h}'\n" for u, h in hashes.items())


def test_basic_auth_over_http(started: list[Any], folder: Path, hashes: dict[str, str]) -> None:
    web = _write(folder, _users_yaml(hashes))
    server, port = _serve(started, web)
    assert server.scheme == "http"
    url = f"http://127.0.0.1:{port}/metrics"
    status, headers, _ = http_get(url)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    assert http_get(url, user="prometheus", password="wrong")[0] == 401
    assert http_get(url, user="nobody", password=PASSWORD)[0] == 401
    assert http_get(url, user="grafana", password=PASSWORD)[0] == 401  # another user's password
    assert http_get(url, authorization="Bearer abc")[0] == 401
    assert http_get(url, authorization="Basic !!!not-base64")[0] == 401
    assert http_get(url, authorization="Basic " + base64.b64encode(b"no-colon").decode())[0] == 401
    for _ in range(3):  # repeated scrapes (cached after the first)
        status, _, body = http_get(url, user="prometheus", password=PASSWORD)
        assert status == 200
        _metric_ok(body)
    assert http_get(url, user="grafana", password=OTHER_USER_PASSWORD)[0] == 200


def test_https_and_basic_auth_together(started: list[Any], folder: Path, pki: Any,
                                       hashes: dict[str, str]) -> None:
    web = _write(folder, "tls_server_config: {cert_file: server.crt, key_file: server.key}\n"
                 + _users_yaml(hashes))
    _server, port = _serve(started, web)
    url = f"https://127.0.0.1:{port}/metrics"
    ctx = _client_ctx(pki.ca_cert)
    assert http_get(url, ctx)[0] == 401
    assert http_get(url, ctx, user="prometheus", password="nope")[0] == 401
    status, _, body = http_get(url, ctx, user="prometheus", password=PASSWORD)
    assert status == 200
    _metric_ok(body)
    _refused(url, _client_ctx(pki.other_ca_cert))


def test_bcrypt_checked_once_per_credentials(hashes: dict[str, str]) -> None:
    from stream.config import Secret

    auth = BasicAuth({u: Secret(h) for u, h in hashes.items()})
    calls = []
    real = auth._bcrypt.checkpw

    def counting(pw: bytes, h: bytes) -> bool:
        calls.append(1)
        return real(pw, h)

    auth._bcrypt = SimpleNamespace(checkpw=counting)
    good = "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
    bad = "Basic " + base64.b64encode(b"ghost:whatever").decode()
    assert [auth.check(good) for _ in range(5)] == [True] * 5
    assert [auth.check(bad) for _ in range(5)] == [False] * 5
    assert len(calls) == 2  # unknown users pay one bcrypt check too (no timing oracle)


def test_password_longer_than_72_bytes(hashes: dict[str, str]) -> None:
    bcrypt = _bcrypt()
    from stream.config import Secret

    long_pw = "p" * 72
    auth = BasicAuth({"u": Secret(bcrypt.hashpw(long_pw.encode(), bcrypt.gensalt(4)).decode())})
    header = "Basic " + base64.b64encode(f"u:{long_pw}xyz".encode()).decode()
    assert auth.check(header)  # bcrypt reads 72 bytes, as htpasswd and Go do; no crash


# -- bad web configs: ConfigError naming the key, before anything binds -----------------------

BAD_CONFIGS = [
    ("tls_server_config: {key_file: server.key}\n", "tls_server_config.cert_file: required"),
    ("tls_server_config: {cert_file: server.crt}\n", "tls_server_config.key_file: required"),
    ("tls_server_config: {cert_file: nope.crt, key_file: server.key}\n",
     "tls_server_config.cert_file: file not found"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, min_version: TLS9}\n",
     "tls_server_config.min_version: must be one of TLS10, TLS11, TLS12, TLS13"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, min_version: TLS13,"
     " max_version: TLS12}\n", "tls_server_config.min_version: TLS13 is above max_version"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, "
     "client_auth_type: RequireAnyClientCert, client_ca_file: ca.crt}\n",
     "tls_server_config.client_auth_type: RequireAnyClientCert accepts client certificates "
     "without verifying them"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, "
     "client_auth_type: RequireAndVerifyClientCert}\n",
     "tls_server_config.client_ca_file: required with client_auth_type"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, "
     "client_auth_type: NoClientCert, client_ca_file: ca.crt}\n",
     "tls_server_config.client_auth_type: client_ca_file is set but client_auth_type is "
     "NoClientCert"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, "
     "client_auth_type: Sometimes}\n", "tls_server_config.client_auth_type: must be one of"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, "
     "cipher_suites: [TLS_AES_128_GCM_SHA256]}\n",
     "tls_server_config.cipher_suites: supported by exporter-toolkit but not by streamdrift"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.crt}\n",
     "tls_server_config.key_file: cannot load the key pair"),
    ("tls_server_config: {cert_file: server.crt, key_file: other.key}\n",
     "tls_server_config.key_file: cannot load the key pair"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, "
     "client_ca_file: server.key}\n", "tls_server_config.client_ca_file: cannot load CA"),
    ("tls_server_config: {cert_file: server.crt, key_file: server.key, tls_version: 1}\n",
     "tls_server_config.tls_version: unknown key"),
    ("tls_config: {}\n", "tls_config: unknown key; known keys here: tls_server_config"),
    ("tls_server_config: [server.crt]\n", "tls_server_config: must be a mapping"),
    ("basic_auth_users: [prometheus]\n", "basic_auth_users: must be a mapping"),
    ("basic_auth_users: {'a:b': '$2y$04$" + "a" * 53 + "'}\n",
     "basic_auth_users['a:b']: user names must be non-empty strings without ':'"),
    ("http_server_config: {headers: {Server: x}}\n",
     "http_server_config.headers.Server: header not allowed"),
    ("http_server_config: {headers: {X-Frame-Options: allow}}\n",
     "http_server_config.headers.X-Frame-Options: must be deny or sameorigin"),
    ("http_server_config: {http2: maybe}\n", "http_server_config.http2: must be true or false"),
    ("- a list\n", "the web config must be a mapping"),
]


@pytest.mark.parametrize("text, expected", BAD_CONFIGS)
def test_bad_web_config(folder: Path, pki: Any, text: str, expected: str) -> None:
    shutil.copy(pki.other_client_key, folder / "other.key")
    web = _write(folder, text)
    port = free_port()
    with pytest.raises(ConfigError) as info:
        serve(StubPipeline(), "127.0.0.1", port, web)
    message = str(info.value)
    assert expected in message, message
    assert str(web) in message  # the file is named
    with socket.socket() as s:  # nothing was left bound
        s.bind(("127.0.0.1", port))


def test_missing_web_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="web config file not found"):
        serve(StubPipeline(), "127.0.0.1", 0, tmp_path / "absent.yml")


def test_clear_text_password_instead_of_hash_is_not_echoed(folder: Path) -> None:
    web = _write(folder, f"basic_auth_users:\n  prometheus: '{PASSWORD}'\n")
    with pytest.raises(ConfigError) as info:
        load_web_config(web)
    message = str(info.value)
    assert "basic_auth_users.prometheus: must be a bcrypt hash" in message
    assert PASSWORD not in message and "horse" not in message


def test_yaml_error_does_not_quote_the_line(folder: Path, hashes: dict[str, str]) -> None:
    web = _write(folder, f"basic_auth_users:\n  prometheus: {hashes['prometheus']}\n  bad: [\n")
    with pytest.raises(ConfigError) as info:
        load_web_config(web)
    assert "not valid YAML: line" in str(info.value)
    assert hashes["prometheus"] not in str(info.value)


def test_duplicate_user_is_an_error(folder: Path, hashes: dict[str, str]) -> None:
    h = hashes["prometheus"]
    web = _write(folder, f"basic_auth_users:\n  prometheus: '{h}'\n  prometheus: '{h}'\n")
    with pytest.raises(ConfigError, match="duplicate key 'prometheus'"):
        load_web_config(web)


def test_encrypted_key_is_reported_not_prompted(folder: Path, pki: Any) -> None:
    enc = folder / "enc.key"
    tls._openssl("pkey", "-in", str(pki.server_key), "-aes256", "-passout",
                         "pass:topsecret", "-out", str(enc), cwd=folder)
    web = _write(folder, "tls_server_config: {cert_file: server.crt, key_file: enc.key}\n")
    with pytest.raises(ConfigError, match=r"tls_server_config\.key_file: .* is encrypted"):
        load_web_config(web)


def test_missing_bcrypt_names_the_key(folder: Path, hashes: dict[str, str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    web = _write(folder, _users_yaml(hashes))
    monkeypatch.setitem(sys.modules, "bcrypt", None)  # import bcrypt -> ImportError
    with pytest.raises(ConfigError) as info:
        serve(StubPipeline(), "127.0.0.1", 0, web)
    assert "basic_auth_users: checking bcrypt password hashes needs the Python package " \
           "`bcrypt`" in str(info.value)
    assert "pip install bcrypt" in str(info.value)


def test_empty_web_config_is_plain_http(started: list[Any], folder: Path) -> None:
    web = _write(folder, "")
    server, port = _serve(started, web)
    assert server.scheme == "http"
    assert http_get(f"http://127.0.0.1:{port}/metrics")[0] == 200


# -- secrets stay out of logs -----------------------------------------------------------------


def test_secrets_never_logged(started: list[Any], folder: Path, pki: Any,
                              hashes: dict[str, str], caplog: pytest.LogCaptureFixture,
                              capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    web = _write(folder, "tls_server_config: {cert_file: server.crt, key_file: server.key}\n"
                 + _users_yaml(hashes))
    config = load_web_config(web)
    assert all(h not in repr(config) for h in hashes.values())
    _server, port = _serve(started, web)
    url = f"https://127.0.0.1:{port}/metrics"
    ctx = _client_ctx(pki.ca_cert)
    assert http_get(url, ctx, user="prometheus", password=PASSWORD)[0] == 200
    assert http_get(url, ctx, user="prometheus", password=OTHER_USER_PASSWORD)[0] == 401
    assert http_get(url, ctx, user="grafana", password=PASSWORD)[0] == 401
    _refused(url, _client_ctx(pki.other_ca_cert))  # a failed handshake is logged (debug)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # garbage, not TLS
        s.sendall(b"GET /metrics HTTP/1.1\r\nAuthorization: Basic "
                  + base64.b64encode(f"prometheus:{PASSWORD}".encode()) + b"\r\n\r\n")
        with contextlib.suppress(OSError):
            s.recv(100)
    # an invalid file: the error names the key, never the value
    bad = _write(folder, f"basic_auth_users:\n  prometheus: '{PASSWORD}'\n", "bad.yml")
    with pytest.raises(ConfigError) as info:
        serve(StubPipeline(), "127.0.0.1", 0, bad)
    time.sleep(0.3)  # let the connection threads log
    out, err = capfd.readouterr()
    # the message and every `extra` field, as the JSON log formatter would write them
    records = "\n".join(str(r.__dict__) for r in caplog.records)
    logged = caplog.text + records + out + err + str(info.value)
    assert "handshake failed" in caplog.text
    assert "metrics endpoint secured" in caplog.text
    for secret in (PASSWORD, OTHER_USER_PASSWORD, *hashes.values()):
        assert secret not in logged
    assert base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode() not in logged
    assert "Traceback" not in out + err


def test_concurrent_scrapes(started: list[Any], folder: Path, pki: Any,
                            hashes: dict[str, str]) -> None:
    web = _write(folder, "tls_server_config: {cert_file: server.crt, key_file: server.key}\n"
                 + _users_yaml(hashes))
    _server, port = _serve(started, web)
    url = f"https://127.0.0.1:{port}/metrics"
    results: list[int] = []

    def scrape() -> None:
        for _ in range(5):
            results.append(http_get(url, _client_ctx(pki.ca_cert), user="prometheus",
                                password=PASSWORD)[0])

    threads = [threading.Thread(target=scrape) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 20
