"""The metrics endpoint's TLS and basic auth: Prometheus exporter-toolkit web-config files.

The file format is the one every Prometheus exporter reads with ``--web.config.file``
(https://prometheus.io/docs/prometheus/latest/configuration/https/)::

    tls_server_config:
      cert_file: server.crt            # relative paths: relative to this file's folder
      key_file: server.key
      client_ca_file: ca.crt           # optional: verify client certificates with this CA
      client_auth_type: RequireAndVerifyClientCert   # default with client_ca_file
      min_version: TLS12               # TLS10..TLS13, default TLS12
    basic_auth_users:
      prometheus: $2b$12$...           # bcrypt hashes (htpasswd -nBC 12 "" | tr -d ':\\n')
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}

Without ``tls_server_config`` the endpoint stays plain HTTP (with basic auth if users are
given).  :func:`load_web_config` validates a file and raises :class:`ConfigError`, one line
per problem, each naming its key (``tls_server_config.key_file: ...``); a hash is never
quoted.  Checking bcrypt hashes needs the optional ``bcrypt`` package.

:func:`stream.sinks.http.make_server` serves a WSGI app with those settings.  TLS handshakes happen in the
per-connection thread (a client that never finishes its handshake cannot block the accept
loop), and the certificate, key and CA files are re-read when they change on disk, so a
rotated certificate is picked up without a restart.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from stream.config.errors import ConfigError, Secret
from stream.config.keys import format_key_path, read_yaml, type_name

__all__ = [
    "CLIENT_AUTH_TYPES",
    "TLS_VERSIONS",
    "TLSServerConfig",
    "WebConfig",
    "build_ssl_context",
    "load_web_config",
    "parse_web_config",
    "web_config_errors",
]

TLS_VERSIONS: Final[Mapping[str, ssl.TLSVersion]] = MappingProxyType({
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
})
#: exporter-toolkit's client_auth_type values that Python's ssl module can enforce
CLIENT_AUTH_TYPES: Final[Mapping[str, ssl.VerifyMode]] = MappingProxyType({
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
})
#: the response headers exporter-toolkit lets http_server_config.headers set
ALLOWED_HEADERS: Final = (
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
)

_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users")
_TLS_KEYS = (
    "cert_file",
    "key_file",
    "client_ca_file",
    "client_auth_type",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",
    # exporter-toolkit keys that streamdrift does not implement: named in the error
    "cipher_suites",
    "curve_preferences",
    "cert",
    "key",
)
_UNSUPPORTED_TLS = {
    "cipher_suites": "Go cipher suite names have no Python equivalent here; remove it "
                     "(OpenSSL's defaults for the TLS versions allowed apply)",
    "curve_preferences": "remove it (OpenSSL's default curves apply)",
    "cert": "inline certificates are not supported; put the PEM in a file and use cert_file",
    "key": "inline keys are not supported; put the PEM in a file and use key_file",
}
_HTTP_KEYS = ("http2", "headers")
_BCRYPT_RE = re.compile(r"^\$2[abxy]?\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")


# --------------------------------------------------------------------------
# the configuration
# --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TLSServerConfig:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_auth_type: str = "NoClientCert"
    client_allowed_sans: tuple[str, ...] = ()
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    prefer_server_cipher_suites: bool = True

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.cert_file, self.key_file) + (
            (self.client_ca_file,) if self.client_ca_file is not None else ()
        )


@dataclass(frozen=True, slots=True)
class WebConfig:
    """A validated web-config file.  The bcrypt hashes are :class:`Secret` values."""

    path: Path | None = None
    tls: TLSServerConfig | None = None
    basic_auth_users: Mapping[str, Secret] = field(default_factory=lambda: MappingProxyType({}))
    headers: tuple[tuple[str, str], ...] = ()

    def describe(self) -> dict[str, Any]:
        """What is enforced, for a start-up log line (no user names, no hashes)."""
        return {
            "tls": self.tls is not None,
            "client_auth": self.tls.client_auth_type if self.tls else None,
            "basic_auth_users": len(self.basic_auth_users),
        }


def load_web_config(path: str | os.PathLike[str], *, check_tls: bool = True) -> WebConfig:
    """Read and validate a web-config file; :class:`ConfigError` names each bad key.

    With ``check_tls`` the certificate and key are also loaded into an SSL context, so a
    key that does not match its certificate is reported here, not at the first scrape.
    """
    file = Path(path).expanduser().absolute()
    data = read_yaml(file, "web config")
    return parse_web_config({} if data is None else data, file.parent, path=file,
                            check_tls=check_tls)


def web_config_errors(path: str | os.PathLike[str]) -> list[str]:
    """The problems of a web-config file (empty when it is valid), one string each."""
    try:
        load_web_config(path)
    except ConfigError as exc:
        return list(exc.errors)
    return []


def parse_web_config(
    data: Any, base_dir: str | os.PathLike[str], *, path: Path | None = None,
    check_tls: bool = True,
) -> WebConfig:
    """Validate already-parsed web-config data (relative paths against ``base_dir``)."""
    errors: list[str] = []

    def error(where: tuple[Any, ...], message: str) -> None:
        errors.append(f"{format_key_path(where)}: {message}")

    base = Path(base_dir).expanduser().absolute()
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"the web config must be a mapping with keys {', '.join(_TOP_KEYS)}, "
            f"got {type_name(data)}", source=path)
    _unknown(data, (), _TOP_KEYS, error)
    tls = _tls(data.get("tls_server_config"), base, error)
    users = _users(data.get("basic_auth_users"), error)
    headers = _http(data.get("http_server_config"), error)
    if errors:
        raise ConfigError(errors, source=path)
    config = WebConfig(path=path, tls=tls, basic_auth_users=users, headers=headers)
    if check_tls and tls is not None:
        build_ssl_context(tls, source=path)
    return config


def _unknown(sec: Mapping[Any, Any], where: tuple[Any, ...], known: Iterable[str],
             error: Callable[[tuple[Any, ...], str], None]) -> None:
    known = tuple(known)
    for key in sec:
        if key not in known:
            error(where + (key,), f"unknown key; known keys here: {', '.join(known)}")


def _section(value: Any, where: tuple[Any, ...], known: tuple[str, ...],
             error: Callable[[tuple[Any, ...], str], None]) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        error(where, f"must be a mapping with keys {', '.join(known)}, got {type_name(value)}")
        return None
    _unknown(value, where, known, error)
    return value


def _tls(value: Any, base: Path, error: Callable[[tuple[Any, ...], str], None]
         ) -> TLSServerConfig | None:
    where: tuple[Any, ...] = ("tls_server_config",)
    sec = _section(value, where, _TLS_KEYS, error)
    if sec is None:
        return None
    ok = True
    for key, why in _UNSUPPORTED_TLS.items():
        if sec.get(key) is not None:
            error(where + (key,), f"supported by exporter-toolkit but not by streamdrift: {why}")
            ok = False

    def file(key: str, required: bool) -> Path | None:
        nonlocal ok
        raw = sec.get(key)
        if raw is None:
            if required:
                error(where + (key,), "required: the path of a PEM file")
                ok = False
            return None
        if not isinstance(raw, str) or not raw.strip():
            error(where + (key,), f"must be a file path string, got {type_name(raw)}")
            ok = False
            return None
        resolved = base / Path(raw).expanduser()
        if not resolved.exists():
            error(where + (key,), f"file not found: {resolved} (relative paths are relative "
                                  "to the web config file)")
            ok = False
        elif not resolved.is_file():
            error(where + (key,), f"not a regular file: {resolved}")
            ok = False
        return resolved

    cert = file("cert_file", True)
    key_file = file("key_file", True)
    ca = file("client_ca_file", False)

    def choice(key: str, choices: Iterable[str], default: str) -> str:
        nonlocal ok
        raw = sec.get(key)
        if raw is None:
            return default
        choices = tuple(choices)
        if not isinstance(raw, str) or raw not in choices:
            shown = repr(raw) if isinstance(raw, str) else type_name(raw)
            error(where + (key,), f"must be one of {', '.join(choices)}, got {shown}")
            ok = False
            return default
        return raw

    auth_default = "RequireAndVerifyClientCert" if ca is not None else "NoClientCert"
    raw_auth = sec.get("client_auth_type")
    if raw_auth in ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert"):
        error(where + ("client_auth_type",),
              f"{raw_auth} accepts client certificates without verifying them, which "
              "streamdrift does not support; use VerifyClientCertIfGiven or "
              "RequireAndVerifyClientCert (with client_ca_file)")
        ok = False
        auth = auth_default
    else:
        auth = choice("client_auth_type", CLIENT_AUTH_TYPES, auth_default)
    if ok and auth != "NoClientCert" and sec.get("client_ca_file") is None:
        error(where + ("client_ca_file",),
              f"required with client_auth_type {auth}: the CA that signs client certificates")
        ok = False
    if ok and auth == "NoClientCert" and ca is not None:
        error(where + ("client_auth_type",),
              "client_ca_file is set but client_auth_type is NoClientCert; use "
              "VerifyClientCertIfGiven or RequireAndVerifyClientCert, or remove client_ca_file")
        ok = False

    sans: tuple[str, ...] = ()
    raw_sans = sec.get("client_allowed_sans")
    if raw_sans is not None:
        if not isinstance(raw_sans, list) or not raw_sans or not all(
                isinstance(s, str) and s for s in raw_sans):
            error(where + ("client_allowed_sans",),
                  "must be a non-empty list of strings (DNS names, IP addresses, e-mail "
                  "addresses or URIs of allowed client certificates)")
            ok = False
        elif auth == "NoClientCert":
            error(where + ("client_allowed_sans",),
                  "needs client certificates: set client_ca_file (and client_auth_type)")
            ok = False
        else:
            sans = tuple(raw_sans)

    lo = choice("min_version", TLS_VERSIONS, "TLS12")
    hi = choice("max_version", TLS_VERSIONS, "TLS13")
    if TLS_VERSIONS[lo] > TLS_VERSIONS[hi]:
        error(where + ("min_version",), f"{lo} is above max_version {hi}")
        ok = False
    prefer = sec.get("prefer_server_cipher_suites", True)
    if prefer is None:
        prefer = True
    if not isinstance(prefer, bool):
        error(where + ("prefer_server_cipher_suites",),
              f"must be true or false, got {type_name(prefer)}")
        ok = False
    if not ok or cert is None or key_file is None:
        return None
    return TLSServerConfig(cert_file=cert, key_file=key_file, client_ca_file=ca,
                           client_auth_type=auth, client_allowed_sans=sans, min_version=lo,
                           max_version=hi, prefer_server_cipher_suites=bool(prefer))


def _users(value: Any, error: Callable[[tuple[Any, ...], str], None]
           ) -> Mapping[str, Secret]:
    where: tuple[Any, ...] = ("basic_auth_users",)
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        error(where, f"must be a mapping of user name to bcrypt hash, got {type_name(value)}")
        return MappingProxyType({})
    users: dict[str, Secret] = {}
    for name, hashed in value.items():
        at = where + (name,)
        if not isinstance(name, str) or not name or ":" in name:
            error(at, "user names must be non-empty strings without ':'")
            continue
        # Never quote the value: a mistake could have put a clear-text password there.
        if not isinstance(hashed, str) or not _BCRYPT_RE.match(hashed):
            error(at, "must be a bcrypt hash ($2y$, $2b$ or $2a$ followed by a cost 04-31 and "
                      "53 characters), e.g. made with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`; "
                      "a clear-text password is not accepted (the value is not shown)")
            continue
        users[name] = Secret(hashed)
    if users:
        try:
            import bcrypt  # noqa: F401
        except ImportError:
            error(where, "checking bcrypt password hashes needs the Python package `bcrypt`, "
                         "which is not installed: pip install bcrypt")
    return MappingProxyType(users)


def _http(value: Any, error: Callable[[tuple[Any, ...], str], None]
          ) -> tuple[tuple[str, str], ...]:
    where: tuple[Any, ...] = ("http_server_config",)
    sec = _section(value, where, _HTTP_KEYS, error)
    if sec is None:
        return ()
    http2 = sec.get("http2")
    if http2 is not None and not isinstance(http2, bool):
        error(where + ("http2",), f"must be true or false, got {type_name(http2)}")
    # http2: true is accepted and has no effect: the endpoint speaks HTTP/1.1 only
    headers = sec.get("headers")
    if headers is None:
        return ()
    if not isinstance(headers, Mapping):
        error(where + ("headers",), f"must be a mapping of header name to value, got "
                                    f"{type_name(headers)}")
        return ()
    canonical = {h.lower(): h for h in ALLOWED_HEADERS}
    out: list[tuple[str, str]] = []
    for name, val in headers.items():
        at = where + ("headers", name)
        if not isinstance(name, str) or name.lower() not in canonical:
            error(at, f"header not allowed; allowed: {', '.join(ALLOWED_HEADERS)}")
            continue
        if not isinstance(val, str) or not val or "\n" in val or "\r" in val:
            error(at, "must be a non-empty one-line string")
            continue
        name = canonical[name.lower()]
        if name == "X-Content-Type-Options" and val.lower() != "nosniff":
            error(at, "must be nosniff")
            continue
        if name == "X-Frame-Options" and val.lower() not in ("deny", "sameorigin"):
            error(at, "must be deny or sameorigin")
            continue
        out.append((name, val))
    return tuple(out)


# --------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------
class _KeyNeedsPassword(Exception):
    pass


def _no_password() -> str:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise _KeyNeedsPassword


def build_ssl_context(tls: TLSServerConfig, *, source: Path | None = None) -> ssl.SSLContext:
    """A server SSLContext for ``tls``; ConfigError (naming the key) when a file is unusable."""
    where = "tls_server_config"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[tls.min_version]
    ctx.maximum_version = TLS_VERSIONS[tls.max_version]
    if tls.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file), password=_no_password)
    except _KeyNeedsPassword:
        raise ConfigError(f"{where}.key_file: {tls.key_file} is encrypted; the metrics "
                          "endpoint needs an unencrypted private key", source=source) from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{where}.key_file: cannot load the key pair (cert_file {tls.cert_file}, key_file "
            f"{tls.key_file}): {_ssl_reason(exc)}; both must be PEM files and the key must "
            "belong to the certificate", source=source) from None
    if tls.client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(tls.client_ca_file))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"{where}.client_ca_file: cannot load CA certificates from "
                              f"{tls.client_ca_file}: {_ssl_reason(exc)}",
                              source=source) from None
    ctx.verify_mode = CLIENT_AUTH_TYPES[tls.client_auth_type]
    return ctx


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"{exc.library or 'SSL'}: {exc.reason}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
