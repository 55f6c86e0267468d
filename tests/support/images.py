"""The container image of deploy/Dockerfile, built and run with podman (no Docker engine).

:func:`streamdrift_image` builds the image from a Debian base image made on this machine
(``deploy/image/build.py --base local``: mmdebstrap, then ``podman import``; no registry is
reachable here), or reuses the image built from the same inputs before: its tag is a digest
of the build context, the Dockerfile and the base. :class:`ContainerRun` runs it with
``podman run --network=host`` (the test broker and the metrics port are on the host's
loopback) until stopped with SIGTERM.

Missing tools (podman, runc, mmdebstrap) make the test FAIL under CI and skip elsewhere
(:func:`tests.support.policy.unavailable`); a failing build always fails.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import subprocess
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support import REPO
from tests.support.metrics import sample, samples, scrape
from tests.support.policy import require_tool
from tests.support.scripts import load_script
from tests.support.waiting import wait_for

BUILD_SCRIPT = REPO / "deploy" / "image" / "build.py"
#: the images the tests build are named so, one name per checkout (several worktrees share
#: podman's storage), tagged by the digest of their inputs
TEST_REPOSITORY = ("localhost/streamdrift-test-"
                   + hashlib.sha256(str(REPO).encode()).hexdigest()[:8])
#: top-level entries of the build context (.dockerignore's allow-list)
CONTEXT = ("pyproject.toml", "README.md", "stream", "detectors")
#: what .dockerignore drops inside the allowed folders
IGNORED_PARTS = {"__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache",
                 ".streamdrift-cache"}
IGNORED_SUFFIXES = (".pyc", ".pyo", ".pyd", ".nbi", ".nbc")


def build_script() -> ModuleType:
    """deploy/image/build.py as a module."""
    return load_script(BUILD_SCRIPT)


def context_digest(base: str) -> str:
    """A digest of everything the image is built from: the Dockerfile, .dockerignore, the
    files of the build context and the base image's name."""
    h = hashlib.sha256()
    files = [REPO / "deploy" / "Dockerfile", REPO / ".dockerignore"]
    for top in CONTEXT:
        path = REPO / top
        files += [path] if path.is_file() else sorted(
            p for p in path.rglob("*")
            if p.is_file() and not IGNORED_PARTS.intersection(p.parts)
            and not p.name.endswith(IGNORED_SUFFIXES) and ".egg-info" not in p.as_posix())
    for f in files:
        h.update(f.relative_to(REPO).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    h.update(base.encode())
    return h.hexdigest()


def podman_cmd() -> list[str]:
    """podman with the flags this machine needs (``--runtime runc``)."""
    return list(build_script().podman())


def podman_env() -> dict[str, str]:
    return dict(build_script().podman_env())


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """``podman ARGS``; AssertionError with its output when it fails and ``check``."""
    proc = subprocess.run([*podman_cmd(), *args], env=podman_env(), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc


def image_size(name: str) -> int:
    """The size of the image ``name`` in bytes, as podman reports it."""
    out = podman("image", "inspect", "--format", "{{.Size}}", name).stdout
    return int(out.strip())


def streamdrift_image() -> tuple[str, float | None]:
    """(image name, seconds the build took, or None when a cached build was reused).

    podman and runc are required; mmdebstrap only when the local base image must be made.
    """
    require_tool("podman")
    require_tool("runc")
    script = build_script()
    base = script.local_base_name()
    if not script.image_exists("podman", base):
        require_tool("mmdebstrap")
    tag = f"{TEST_REPOSITORY}:{context_digest(base)[:16]}"
    if script.image_exists("podman", tag):
        return tag, None
    t0 = time.monotonic()
    try:
        script.build(tag, "local", engine="podman", quiet=True)
    except script.ImageError as exc:
        pytest.fail(f"the image does not build: {exc}", pytrace=False)
    took = time.monotonic() - t0
    _remove_older_builds(keep=tag)
    return tag, took


def _remove_older_builds(keep: str) -> None:
    """Remove this checkout's earlier test images (each holds its own ~420 MB environment);
    best effort: one still in use by a running test stays."""
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                    f"reference={TEST_REPOSITORY}", check=False).stdout.split()
    older = [name for name in listed if name != keep and name.startswith(TEST_REPOSITORY)]
    if older:
        podman("rmi", *older, check=False)


class ContainerRun:
    """``podman run --network=host IMAGE [args]`` started at once, attached: its output (the
    JSON log) goes to ``log``.  ``port`` is the metrics port on the host's loopback; the
    HEALTHCHECK is pointed at it and runs only when asked (:meth:`healthcheck`: no timer,
    which would need systemd)."""

    def __init__(self, image: str, *args: str, log: Path, port: int,
                 volumes: dict[Path, str] | None = None) -> None:
        self.name = f"streamdrift-test-{uuid.uuid4().hex[:12]}"
        self.log, self.port = log, port
        self.stopped_in: float | None = None
        cmd = [*podman_cmd(), "run", "--name", self.name, "--network=host",
               "--health-interval=disable",
               "--env", f"STREAMDRIFT_HEALTHCHECK_URL=http://127.0.0.1:{port}/metrics"]
        for host, container in (volumes or {}).items():
            cmd += ["--volume", f"{host}:{container}"]
        self.started = time.monotonic()
        with log.open("wb") as out:
            self.proc = subprocess.Popen([*cmd, image, *args], env=podman_env(),
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)

    # -- output ------------------------------------------------------------------------------
    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def logs(self, msg: str) -> list[dict[str, Any]]:
        """The JSON log records whose message is ``msg``."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("msg") == msg:
                    out.append(rec)
        return out

    # -- the container -----------------------------------------------------------------------
    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the container exited with {self.proc.returncode}:\n"
                                 f"{self.log_tail()}")

    def process_ids(self) -> dict[str, list[int]]:
        """Uid and Gid lines (real, effective, saved, fs) of the container's main process
        (its PID 1), as the container sees them (also with rootless podman)."""
        status = podman("exec", self.name, "cat", "/proc/1/status").stdout
        return {line.split(":")[0]: [int(v) for v in line.split(":")[1].split()]
                for line in status.splitlines() if line.startswith(("Uid:", "Gid:"))}

    def healthcheck(self) -> subprocess.CompletedProcess:
        """``podman healthcheck run``: the image's HEALTHCHECK command, run in the container
        by the engine (exit status 0: healthy)."""
        return podman("healthcheck", "run", self.name, check=False, timeout=60)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM to the container's main process; waits ``timeout`` seconds for the
        container to exit (then kills it). The exit status; ``stopped_in`` the seconds."""
        t0 = time.monotonic()
        podman("kill", "--signal", "TERM", self.name)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            podman("kill", "--signal", "KILL", self.name, check=False)
            rc = self.proc.wait(30)
        self.stopped_in = time.monotonic() - t0
        return rc

    def remove(self) -> None:
        """Kill (if still running) and remove the container; best effort."""
        if self.proc.poll() is None:
            podman("kill", "--signal", "KILL", self.name, check=False)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
        podman("rm", "--force", "--ignore", self.name, check=False)

    # -- metrics -----------------------------------------------------------------------------
    def scrape(self) -> str:
        return scrape(self.port)

    def value(self, name: str, **labels: str) -> float:
        return sample(samples(self.scrape()), name, **labels)

    def wait_serving(self, timeout: float = 120) -> float:
        """Wait until /metrics answers; the seconds since ``podman run`` was started."""
        wait_for(self.scrape, timeout, f"metrics of the container at port {self.port}",
                 interval=0.1, alive=self.check_alive, details=self.log_tail)
        return time.monotonic() - self.started

    def wait_consumed(self, n: int, timeout: float = 120) -> str:
        """Wait until ``n`` messages have been consumed; the scrape that showed it."""
        def done() -> str | None:
            text = self.scrape()
            value = sample(samples(text), "streamdrift_events_consumed_total")
            return text if not math.isnan(value) and value >= n else None

        return wait_for(done, timeout, f"{n} messages consumed in the container",
                        interval=0.3, alive=self.check_alive, retry=(OSError,),
                        details=self.log_tail)

