"""The metrics endpoint's HTTP(S) server: TLS with certificate reload, basic auth, headers.

:func:`make_server` serves a WSGI app with the settings of a web-config file
(:mod:`stream.config.web`).  TLS handshakes happen in the per-connection thread (a client
that never finishes its handshake cannot block the accept loop), and the certificate, key
and CA files are re-read when they change on disk, so a rotated certificate is picked up
without a restart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from stream.config import ConfigError, Secret
from stream.config.web import TLSServerConfig, WebConfig, build_ssl_context

__all__ = ["BasicAuth", "SecureWSGIServer", "make_server"]

log = logging.getLogger("streamdrift.metrics")

HANDSHAKE_TIMEOUT_S: Final = 10.0
REQUEST_TIMEOUT_S: Final = 30.0
RELOAD_CHECK_S: Final = 1.0
AUTH_CACHE_SIZE: Final = 1024


def _peer_sans(cert: Mapping[str, Any] | None) -> set[str]:
    if not cert:
        return set()
    return {str(v) for kind, v in cert.get("subjectAltName", ())
            if kind in ("DNS", "IP Address", "email", "URI")}


class _TLSState:
    """The live SSLContext; rebuilt when one of its files changes on disk."""

    def __init__(self, tls: TLSServerConfig, source: Path | None) -> None:
        self.tls = tls
        self.source = source
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self._failed: tuple[Any, ...] | None = None
        self._ctx = build_ssl_context(tls, source=source)
        self._checked = time.monotonic()

    def _stamps(self) -> tuple[Any, ...]:
        out: list[tuple[int, int, int] | None] = []
        for f in self.tls.files:
            try:
                st = f.stat()
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def context(self) -> ssl.SSLContext:
        now = time.monotonic()
        if now - self._checked < RELOAD_CHECK_S:
            return self._ctx
        with self._lock:
            if now - self._checked >= RELOAD_CHECK_S:
                self._checked = now
                stamp = self._stamps()
                if stamp != self._stamp:
                    try:
                        self._ctx = build_ssl_context(self.tls, source=self.source)
                        self._stamp = stamp
                        log.info("metrics TLS certificate reloaded",
                                 extra={"cert_file": str(self.tls.cert_file)})
                    except ConfigError as exc:  # half-written files: keep serving, retry
                        if stamp != self._failed:  # once per change, not every second
                            log.warning("metrics TLS files changed but cannot be loaded; "
                                        "keeping the previous certificate: %s", exc)
                        self._failed = stamp
            return self._ctx


# --------------------------------------------------------------------------
# basic auth
# --------------------------------------------------------------------------
class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes, like exporter-toolkit.

    An unknown user costs one bcrypt check too (no user enumeration by timing); results
    are cached under a SHA-256 of user, hash and password (never the password itself), so
    a scraper that sends the same credentials every few seconds pays bcrypt's cost once.
    """

    def __init__(self, users: Mapping[str, Secret]) -> None:
        import bcrypt

        self._bcrypt = bcrypt
        self._users = {name: h.reveal().encode() for name, h in users.items()}
        cost = max((int(h[4:6]) for h in self._users.values()), default=10)
        self._fake = bcrypt.hashpw(b"streamdrift-unknown-user", bcrypt.gensalt(cost))
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def parse(header: str | None) -> tuple[str, bytes] | None:
        if not header:
            return None
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic" or not token.strip():
            return None
        try:
            raw = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        user, sep, password = raw.partition(b":")
        if not sep:
            return None
        try:
            return user.decode("utf-8"), password
        except UnicodeDecodeError:
            return None

    def check(self, header: str | None) -> bool:
        parsed = self.parse(header)
        if parsed is None:
            return False
        user, password = parsed
        stored = self._users.get(user)
        hashed = stored if stored is not None else self._fake
        key = hashlib.sha256(user.encode() + b"\0" + hashed + b"\0" + password).digest()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
            # bcrypt uses the first 72 bytes, as htpasswd and Go's bcrypt do
            ok = self._bcrypt.checkpw(password[:72], hashed) and stored is not None
            self._cache[key] = ok
            if len(self._cache) > AUTH_CACHE_SIZE:
                self._cache.popitem(last=False)
            return ok


# --------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------
class _Handler(WSGIRequestHandler):
    """Silent (no access log) and with a deadline for each request."""

    timeout = REQUEST_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class SecureWSGIServer(ThreadingMixIn, WSGIServer):
    """Thread-per-connection WSGI server; TLS (if any) is negotiated in that thread."""

    daemon_threads = True
    allow_reuse_address = True
    tls_state: _TLSState | None = None

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        state = self.tls_state
        if state is not None:
            try:
                request.settimeout(HANDSHAKE_TIMEOUT_S)
                request = state.context().wrap_socket(request, server_side=True)
                allowed = state.tls.client_allowed_sans
                if allowed and not _peer_sans(request.getpeercert()) & set(allowed):
                    log.debug("metrics: client certificate SAN not allowed",
                              extra={"client": client_address[0]})
                    self.shutdown_request(request)
                    return
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                log.debug("metrics: TLS handshake failed",
                          extra={"client": client_address[0], "error": str(exc)})
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # the default prints a traceback to stderr; a dropped connection is not news
        log.debug("metrics: error serving a request", exc_info=True,
                  extra={"client": client_address[0] if client_address else None})


def _auth_app(app: Callable[..., Any], auth: BasicAuth | None,
              headers: tuple[tuple[str, str], ...]) -> Callable[..., Any]:
    extra = list(headers)

    def secured(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if auth is not None and not auth.check(environ.get("HTTP_AUTHORIZATION")):
            start_response("401 Unauthorized", [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("WWW-Authenticate", 'Basic realm="streamdrift"'),
                *extra,
            ])
            return [b"Unauthorized\n"]

        def respond(status: str, response_headers: list[tuple[str, str]],
                    exc_info: Any = None) -> Any:
            return start_response(status, [*response_headers, *extra], exc_info)

        return app(environ, respond)

    return secured


def make_server(app: Callable[..., Any], host: str, port: int, web_config: WebConfig
                ) -> SecureWSGIServer:
    """Bind ``host:port`` and return the (not yet serving) server for ``web_config``."""
    tls_state = _TLSState(web_config.tls, web_config.path) if web_config.tls else None
    auth = BasicAuth(web_config.basic_auth_users) if web_config.basic_auth_users else None

    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]

    class Server(SecureWSGIServer):
        address_family = family

    server = Server((str(sockaddr[0]), port), _Handler)
    server.tls_state = tls_state
    server.set_app(_auth_app(app, auth, web_config.headers))
    if tls_state is not None:
        server.base_environ["HTTPS"] = "on"  # wsgi.url_scheme https
    return server
