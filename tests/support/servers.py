"""Start and stop real Prometheus / Alertmanager processes on loopback for tests.

    with start_prometheus(config_path) as prom:
        prom.get_json("/api/v1/query", query="up")
    with start_alertmanager(config_path) as am:
        am.post_json("/api/v2/alerts", [...])

Each server listens on 127.0.0.1 on a free port, keeps its data in a temporary directory
(removed on stop) and logs to a file there. Start-up waits for `/-/ready` with a bounded
timeout and fails fast, with the tail of the log, if the process exits. `stop()` sends
SIGTERM, waits a bounded time, then SIGKILLs; servers still running when the interpreter
exits are stopped by an atexit hook.

`query()` / `query_range()` ask a Prometheus; `finite_values()` reads their results.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tests.support.policy import find_binary
from tests.support.ports import free_port
from tests.support.processes import stop_process

#: the names of the binaries, as Debian and upstream install them
PROMETHEUS = ("prometheus",)
ALERTMANAGER = ("prometheus-alertmanager", "alertmanager")

_LIVE: set[ServerProcess] = set()


class ServerStartError(RuntimeError):
    """The server exited or did not become ready; the message holds the log tail."""


class ServerProcess:
    """A server process on 127.0.0.1:`port` with its own temporary directory."""

    def __init__(self, name: str, argv: Sequence[str], port: int, workdir: Path,
                 owns_workdir: bool, ready_path: str = "/-/ready") -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.workdir = workdir
        self.owns_workdir = owns_workdir
        self.ready_path = ready_path
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self._log = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> ServerProcess:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=self.workdir)
        _LIVE.add(self)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            rc = self.proc.poll()
            if rc is not None:
                raise ServerStartError(
                    f"{self.name} exited with status {rc} before becoming ready\n"
                    f"command: {' '.join(self.argv)}\n--- log tail ---\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    f"{self.name} not ready at {self.url}{self.ready_path} after {timeout:.0f}s"
                    f"\ncommand: {' '.join(self.argv)}\n--- log tail ---\n{self.log_tail()}")
            time.sleep(0.1)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """Terminate (then kill) the process, remove the temporary directory; idempotent."""
        rc = stop_process(self.proc, timeout) if self.proc is not None else None
        _LIVE.discard(self)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return rc

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- HTTP helpers ---------------------------------------------------------------------
    def get(self, path: str, timeout: float = 5.0, **params: Any) -> bytes:
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()

    def get_json(self, path: str, timeout: float = 5.0, **params: Any) -> Any:
        return json.loads(self.get(path, timeout, **params))

    def post_json(self, path: str, payload: Any, timeout: float = 5.0) -> bytes:
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"},
                                     method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{self.name} {self.url} {state}>"


def _workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def start_prometheus(config_path: str | os.PathLike, port: int | None = None, *,
                     binary: str | None = None, data_dir: str | os.PathLike | None = None,
                     extra_args: Iterable[str] = (), timeout: float = 30.0) -> ServerProcess:
    """Start `prometheus` with `config_path` on 127.0.0.1:`port` (free port by default).

    The TSDB lives in a temporary directory unless `data_dir` is given; the lifecycle API
    (`POST /-/reload`, `/-/quit`) is enabled.
    """
    binary = binary or find_binary("prometheus")
    if not binary:
        raise FileNotFoundError("prometheus not found on PATH")
    port = port or free_port()
    workdir = _workdir("streamdrift-prometheus-")
    argv = [
        binary,
        f"--config.file={Path(config_path).resolve()}",
        f"--storage.tsdb.path={Path(data_dir) if data_dir else workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--storage.tsdb.retention.time=1d",
        *extra_args,
    ]
    return ServerProcess("prometheus", argv, port, workdir, owns_workdir=True).start(timeout)


def start_alertmanager(config_path: str | os.PathLike, port: int | None = None, *,
                       binary: str | None = None,
                       storage_path: str | os.PathLike | None = None,
                       extra_args: Iterable[str] = (), timeout: float = 30.0) -> ServerProcess:
    """Start Alertmanager with `config_path` on 127.0.0.1:`port`, clustering disabled."""
    binary = binary or find_binary("prometheus-alertmanager", "alertmanager")
    if not binary:
        raise FileNotFoundError("prometheus-alertmanager / alertmanager not found on PATH")
    port = port or free_port()
    workdir = _workdir("streamdrift-alertmanager-")
    argv = [
        binary,
        f"--config.file={Path(config_path).resolve()}",
        f"--storage.path={Path(storage_path) if storage_path else workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        *extra_args,
    ]
    return ServerProcess("alertmanager", argv, port, workdir, owns_workdir=True).start(timeout)


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        server.stop(timeout=5)


# --------------------------------------------------------------------------- Prometheus API


def query(prom: ServerProcess, expr: str, at: float | None = None) -> list[dict]:
    """Instant query via /api/v1/query; the result as a list of series (a scalar or string
    result becomes one series without labels)."""
    params: dict[str, Any] = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    reply = prom.get_json("/api/v1/query", timeout=15, **params)
    assert reply["status"] == "success", (expr, reply)
    data = reply["data"]
    if data["resultType"] in ("scalar", "string"):
        return [{"metric": {}, "value": data["result"]}]
    return data["result"]


def query_range(prom: ServerProcess, expr: str, start: float, end: float,
                step: float) -> list[dict]:
    """Range query via /api/v1/query_range; the list of series."""
    reply = prom.get_json("/api/v1/query_range", timeout=15, query=expr, start=f"{start:.3f}",
                          end=f"{end:.3f}", step=f"{step}")
    assert reply["status"] == "success", (expr, reply)
    return reply["data"]["result"]


def finite_values(result: Iterable[dict]) -> list[float]:
    """Every finite sample value of a query result (instant or range)."""
    out = []
    for series in result:
        points = series.get("values") or [series.get("value")]
        for point in points:
            if point is not None and math.isfinite(float(point[1])):
                out.append(float(point[1]))
    return out
