"""Processes the tests start: ``streamdrift run`` as a subprocess, and stopping any child."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stream.broker.process import pid_alive
from tests.support.metrics import sample, samples, scrape
from tests.support.waiting import wait_for

__all__ = ["CONSUMED", "StreamdriftRun", "pid_alive", "stop_process"]

CONSUMED = "streamdrift_events_consumed_total"


def stop_process(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM, wait ``timeout`` seconds, then SIGKILL; the exit code (-9 when killed)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


class StreamdriftRun:
    """``streamdrift --log-level LEVEL run -c CONFIG [extra]`` as a subprocess, started at once.

    It runs in the configuration's folder; its stderr (the JSON log) goes to
    ``<config stem>[.<name>].stderr`` beside the configuration, its stdout to ``.stdout``
    (or nowhere unless ``keep_stdout``).  ``port`` is its metrics port, when the test reads
    ``/metrics``.  ``env`` is added to this process' environment.
    """

    def __init__(self, config: Path, *extra: str, port: int | None = None,
                 name: str | None = None, log_level: str = "info",
                 env: Mapping[str, str] | None = None, keep_stdout: bool = False) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/metrics" if port is not None else None
        stem = config.stem if name is None else f"{config.stem}.{name}"
        self.stderr = config.with_name(f"{stem}.stderr")
        self.stdout = config.with_name(f"{stem}.stdout") if keep_stdout else None
        self.stopped_in: float | None = None  # seconds stop() took
        with self.stderr.open("wb") as err, \
                (self.stdout.open("wb") if self.stdout else open(os.devnull, "wb")) as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "--log-level", log_level, "run",
                 "-c", str(config), *extra],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=config.parent,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})

    # -- output ------------------------------------------------------------------------------
    def output(self) -> str:
        """stdout (if kept) and stderr so far."""
        text = self.stdout.read_text(errors="replace") if self.stdout else ""
        return text + self.stderr.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.stderr.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def logs(self, msg: str) -> list[dict[str, Any]]:
        """The JSON log records whose message is ``msg`` (a line cut short is skipped)."""
        out = []
        for line in self.stderr.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut by kill -9
                if rec.get("msg") == msg:
                    out.append(rec)
        return out

    # -- the process -----------------------------------------------------------------------
    def check_alive(self) -> None:
        """AssertionError with the log's tail when the process has exited."""
        if self.proc.poll() is not None:
            raise AssertionError(f"streamdrift run exited with {self.proc.returncode}:\n"
                                 f"{self.log_tail()}")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30.0, *, check: bool = False) -> int:
        """SIGTERM, wait ``timeout`` seconds, then SIGKILL; the exit code (-9 when killed).
        With ``check``, an exit code other than 0 is an AssertionError."""
        t0 = time.monotonic()
        rc = stop_process(self.proc, timeout)
        self.stopped_in = time.monotonic() - t0
        if check and rc != 0:
            raise AssertionError(f"streamdrift run exited with {rc}:\n{self.output()[-3000:]}")
        return rc

    # -- metrics -----------------------------------------------------------------------------
    def scrape(self) -> str:
        assert self.port is not None, "no metrics port given"
        return scrape(self.port)

    def value(self, name: str, **labels: str) -> float:
        """The current value of a sample with exactly ``labels``; NaN when there is none."""
        return sample(samples(self.scrape()), name, **labels)

    def consumed(self) -> float:
        """streamdrift_events_consumed_total now; -1 while /metrics does not answer.
        AssertionError when the process has exited."""
        self.check_alive()
        try:
            value = self.value(CONSUMED)
        except OSError:
            return -1.0
        return -1.0 if math.isnan(value) else value

    def wait_serving(self, timeout: float = 60) -> None:
        wait_for(self.scrape, timeout, f"streamdrift metrics at {self.url}",
                 alive=self.check_alive, details=self.log_tail)

    def wait_consumed(self, n: int, timeout: float = 90, interval: float = 0.05) -> str:
        """Wait until ``n`` messages have been consumed; the scrape that showed it."""
        last = [""]

        def done() -> str | None:
            text = last[0] = self.scrape()
            return text if sample(samples(text), CONSUMED) >= n else None

        return wait_for(done, timeout, f"{n} messages consumed", interval=interval,
                        alive=self.check_alive, retry=(OSError,),
                        details=lambda: f"last scrape:\n{last[0][-2000:]}\n{self.log_tail()}")
