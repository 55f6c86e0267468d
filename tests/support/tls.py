"""Test certificates made with the ``openssl`` command line tool (no Python dependency).

:func:`make_pki` writes a throw-away CA, a server certificate for ``127.0.0.1`` and
``localhost`` signed by it, a client certificate signed by it, and an unrelated second CA
(to check that verification really fails).  Keys are unencrypted PKCS#8 EC P-256 PEM
files: what Python's ``ssl`` module and Kafka's PEM key stores (``ssl.keystore.type=PEM``)
both read.

Where ``openssl`` is missing the test FAILS under CI (``CI`` set) and is skipped elsewhere.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.policy import require_tool

OPENSSL_TIMEOUT_S = 60.0
CLIENT_SAN = "prometheus.example"


def _openssl(*args: str, cwd: Path) -> None:
    cmd = [require_tool("openssl"), *args]
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                             timeout=OPENSSL_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"openssl {' '.join(args[:2])} timed out") from exc
    if out.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed (exit {out.returncode}):\n"
                           f"{out.stdout}{out.stderr}")


@dataclass(frozen=True)
class Pki:
    """Paths of the files :func:`make_pki` wrote."""

    folder: Path
    ca_cert: Path          # the CA that signed server and client
    server_cert: Path      # CN=localhost, SAN IP:127.0.0.1, DNS:localhost
    server_key: Path
    server_pem: Path       # key then certificate in one file (Kafka PEM key store)
    client_cert: Path      # CN=scraper, SAN DNS:prometheus.example, clientAuth
    client_key: Path
    other_ca_cert: Path    # an unrelated CA: verifying the server with it must fail
    other_client_cert: Path  # a client certificate signed by the unrelated CA
    other_client_key: Path


def _new_key(folder: Path, name: str) -> Path:
    key = folder / f"{name}.key"
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", key.name, cwd=folder)
    return key


def _new_ca(folder: Path, name: str, cn: str) -> tuple[Path, Path]:
    key = _new_key(folder, name)
    cert = folder / f"{name}.crt"
    _openssl("req", "-x509", "-new", "-key", key.name, "-sha256", "-days", "2",
             "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", cert.name, cwd=folder)
    return cert, key


def _issue(folder: Path, name: str, cn: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    key = _new_key(folder, name)
    csr = folder / f"{name}.csr"
    cert = folder / f"{name}.crt"
    ext = folder / f"{name}.ext"
    ext.write_text(extensions)
    _openssl("req", "-new", "-key", key.name, "-subj", f"/CN={cn}", "-out", csr.name, cwd=folder)
    _openssl("x509", "-req", "-in", csr.name, "-CA", ca[0].name, "-CAkey", ca[1].name,
             "-CAcreateserial", "-sha256", "-days", "2", "-extfile", ext.name,
             "-out", cert.name, cwd=folder)
    return cert, key


def make_pki(folder: Path) -> Pki:
    """Write a CA, a server and a client certificate (and an unrelated CA) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = _new_ca(folder, "ca", "streamdrift test CA")
    server_cert, server_key = _issue(
        folder, "server", "localhost", ca,
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    client_cert, client_key = _issue(
        folder, "client", "scraper", ca,
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage=clientAuth\nsubjectAltName=DNS:{CLIENT_SAN}\n")
    other = _new_ca(folder, "other-ca", "unrelated CA")
    other_client_cert, other_client_key = _issue(
        folder, "other-client", "intruder", other,
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=clientAuth\n")
    server_pem = folder / "server.pem"
    server_pem.write_text(server_key.read_text() + server_cert.read_text())
    for key in (ca[1], server_key, client_key, other[1], other_client_key, server_pem):
        key.chmod(0o600)
    return Pki(folder=folder, ca_cert=ca[0], server_cert=server_cert, server_key=server_key,
               server_pem=server_pem, client_cert=client_cert, client_key=client_key,
               other_ca_cert=other[0], other_client_cert=other_client_cert,
               other_client_key=other_client_key)
