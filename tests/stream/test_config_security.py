"""``metrics.web_config``: the optional exporter-toolkit web-config file of the endpoint."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import pytest

from stream.config import MetricsConfig, load_config, parse_config
from tests.support.configs import config_errors, minimal_config

CERT_LIKE = "-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n"


def minimal(**metrics: Any) -> dict[str, Any]:
    return minimal_config(**({"metrics": metrics} if metrics else {}))


def test_default_is_none() -> None:
    cfg = parse_config(minimal(), "/cfg")
    assert cfg.metrics.web_config is None
    assert MetricsConfig().web_config is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.metrics.web_config = Path("/x")  # type: ignore[misc]


def test_resolved_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "sec").mkdir()
    (tmp_path / "sec" / "web.yml").write_text("http_server_config: {http2: false}\n")
    path = tmp_path / "streamdrift.yaml"
    path.write_text(textwrap.dedent("""\
        models:
          - name: m
            baseline: {file: b.json}
            features: [{name: a, path: a, type: numeric}]
        metrics: {port: 9108, web_config: sec/web.yml}
        """))
    cfg = load_config(path)
    assert cfg.metrics.web_config == tmp_path / "sec" / "web.yml"
    assert cfg.metrics.web_config.is_absolute()


def test_from_environment(tmp_path: Path) -> None:
    (tmp_path / "web.yml").write_text("")
    cfg = parse_config(minimal(web_config="${ENV:WEB_CONFIG}"), tmp_path,
                       environ={"WEB_CONFIG": str(tmp_path / "web.yml")})
    assert cfg.metrics.web_config == tmp_path / "web.yml"


def test_missing_file(tmp_path: Path) -> None:
    errors = config_errors(minimal(web_config="nope.yml"), tmp_path)
    assert len(errors) == 1
    assert errors[0].startswith(f"metrics.web_config: file not found: {tmp_path / 'nope.yml'}")


@pytest.mark.parametrize("value", [1, True, "", ["web.yml"], {"file": "web.yml"}])
def test_not_a_path(tmp_path: Path, value: Any) -> None:
    errors = config_errors(minimal(web_config=value), tmp_path)
    assert errors == [f"metrics.web_config: must be a file path string, got "
                      f"{'a string' if value == '' else _kind(value)}"]


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", list: "a list", dict: "a mapping"}[type(value)]


def test_unknown_metrics_key_lists_web_config() -> None:
    errors = config_errors(minimal(web_confg="x"), Path("/cfg"))
    assert errors[0].startswith("metrics.web_confg: unknown key (did you mean 'web_config'?)")
    assert "port, host, web_config" in errors[0]


def test_invalid_web_config_is_reported_with_its_key(tmp_path: Path) -> None:
    (tmp_path / "server.crt").write_text(CERT_LIKE)
    (tmp_path / "web.yml").write_text(
        "tls_server_config: {cert_file: server.crt, key_file: missing.key, min_version: TLS14}\n"
        "basic_auth_users: {prometheus: 'hunter2-clear-text'}\n")
    errors = config_errors(minimal(port=9200, web_config="web.yml"), tmp_path)
    text = "\n".join(errors)
    assert all(e.startswith("metrics.web_config: ") for e in errors), errors
    assert "metrics.web_config: tls_server_config.key_file: file not found" in text
    assert "metrics.web_config: tls_server_config.min_version: must be one of" in text
    assert "metrics.web_config: basic_auth_users.prometheus: must be a bcrypt hash" in text
    assert f"(in the web config file {tmp_path / 'web.yml'})" in text
    assert "hunter2" not in text


def test_bad_key_pair_found_at_load(tmp_path: Path) -> None:
    (tmp_path / "server.crt").write_text(CERT_LIKE)
    (tmp_path / "server.key").write_text("not a key\n")
    (tmp_path / "web.yml").write_text(
        "tls_server_config: {cert_file: server.crt, key_file: server.key}\n")
    errors = config_errors(minimal(web_config="web.yml"), tmp_path)
    assert len(errors) == 1
    assert errors[0].startswith(
        "metrics.web_config: tls_server_config.key_file: cannot load the key pair")


def test_errors_of_other_sections_still_reported(tmp_path: Path) -> None:
    (tmp_path / "web.yml").write_text("tls_server_config: 3\n")
    data = minimal(port=-1, web_config="web.yml")
    errors = config_errors(data, tmp_path)
    assert errors[0].startswith("metrics.port: must be an integer in 0..65535")
    assert errors[1].startswith("metrics.web_config: tls_server_config: must be a mapping")
