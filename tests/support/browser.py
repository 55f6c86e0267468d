"""A real headless Chromium driven over the DevTools protocol, for the HTML report tests.

:func:`load_page` starts Debian's ``chromium`` (``--headless --remote-debugging-port=0``),
opens a page target, records console messages, uncaught exceptions, log entries and
every network request, navigates to a ``file://`` URL, waits for the load event, runs
the given JavaScript expressions and takes a full-page PNG screenshot.  The protocol
runs over a WebSocket (aiohttp's client); nothing is mocked.

Without chromium on PATH the caller's test is skipped, or FAILS under CI (see
:mod:`tests.support.policy`); ``make system-deps`` installs it under CI.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.policy import find_binary, unavailable

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def require_chromium() -> str:
    path = find_binary(*CHROMIUM_NAMES)
    if path is None:
        unavailable("chromium not found on PATH (Debian/Ubuntu: apt-get install chromium; "
                    "`make system-deps` installs it under CI)")
    return path


@dataclass
class PageRun:
    """What the browser saw while loading a page."""

    #: console messages: (type, text), e.g. ("error", "...")
    console: list[tuple[str, str]] = field(default_factory=list)
    #: uncaught exceptions (their descriptions)
    exceptions: list[str] = field(default_factory=list)
    #: browser log entries: (level, source, text)
    log: list[tuple[str, str, str]] = field(default_factory=list)
    #: URL of every network request the page made (its own file:// URL included)
    requests: list[str] = field(default_factory=list)
    #: value of each evaluated expression, in order
    values: list[Any] = field(default_factory=list)
    screenshot: bytes = b""

    @property
    def errors(self) -> list[str]:
        """Console errors, exceptions and error-level log entries."""
        return ([t for k, t in self.console if k in ("error", "assert")] + self.exceptions
                + [f"{s}: {t}" for lvl, s, t in self.log if lvl == "error"])


def load_page(html: Path, expressions: Sequence[str] = (), width: int = 1280,
              height: int = 900, timeout: float = 60.0) -> PageRun:
    """Load ``html`` in headless Chromium; see the module docstring."""
    binary = require_chromium()
    # Chromium's helper processes (zygote, renderer, crash handler) outlive the main one for
    # a moment and keep writing into the profile: the whole process group is stopped, and
    # a profile file that appears during the clean-up fails nothing (it once failed the
    # test with an OSError from rmtree, "Directory not empty").
    with tempfile.TemporaryDirectory(prefix="sd-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-dev-shm-usage", "--disable-extensions", "--disable-sync",
             "--disable-background-networking", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        try:
            ws_url = _devtools_url(proc, timeout)
            return asyncio.run(asyncio.wait_for(
                _drive(ws_url, html.resolve().as_uri(), list(expressions), width, height),
                timeout))
        finally:
            _stop_group(proc)


def _stop_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to the browser's process group, SIGKILL after 10 s; then wait for it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # helpers still alive, if any
    proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def _devtools_url(proc: subprocess.Popen[str], timeout: float) -> str:
    """The browser's WebSocket URL from its stderr (``DevTools listening on ws://...``)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {proc.returncode}: {''.join(seen)}")
            continue
        seen.append(line)
        m = re.search(r"DevTools listening on (ws://\S+)", line)
        if m:
            return m.group(1)
    raise RuntimeError(f"chromium gave no DevTools URL in {timeout} s: {''.join(seen)}")


async def _drive(browser_ws: str, url: str, expressions: list[str], width: int,
                 height: int) -> PageRun:
    import aiohttp

    run = PageRun()
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(browser_ws, max_msg_size=0) as ws:
        ids = iter(range(1, 1_000_000))
        pending: dict[int, asyncio.Future[Any]] = {}
        loaded = asyncio.Event()

        async def reader() -> None:
            async for msg in ws:
                data = json.loads(msg.data)
                if "id" in data and data["id"] in pending:
                    pending.pop(data["id"]).set_result(data)
                    continue
                method, params = data.get("method"), data.get("params", {})
                if method == "Runtime.consoleAPICalled":
                    text = " ".join(str(a.get("value", a.get("description", "")))
                                    for a in params.get("args", []))
                    run.console.append((params.get("type", ""), text))
                elif method == "Runtime.exceptionThrown":
                    d = params.get("exceptionDetails", {})
                    run.exceptions.append(str(d.get("exception", {}).get("description")
                                              or d.get("text")))
                elif method == "Log.entryAdded":
                    e = params.get("entry", {})
                    run.log.append((e.get("level", ""), e.get("source", ""), e.get("text", "")))
                elif method == "Network.requestWillBeSent":
                    run.requests.append(params.get("request", {}).get("url", ""))
                elif method == "Page.loadEventFired":
                    loaded.set()

        task = asyncio.create_task(reader())
        session_id = ""

        async def call(method: str, **params: Any) -> dict[str, Any]:
            i = next(ids)
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            pending[i] = fut
            msg: dict[str, Any] = {"id": i, "method": method, "params": params}
            if session_id and not method.startswith("Target."):
                msg["sessionId"] = session_id
            await ws.send_str(json.dumps(msg))
            reply = await fut
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            return reply.get("result", {})  # type: ignore[no-any-return]

        target = await call("Target.createTarget", url="about:blank")
        attached = await call("Target.attachToTarget", targetId=target["targetId"],
                              flatten=True)
        session_id = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            await call(f"{domain}.enable")
        await call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                   deviceScaleFactor=1, mobile=False)
        await call("Page.navigate", url=url)
        await loaded.wait()
        await asyncio.sleep(0.3)  # let late console messages arrive
        for expr in expressions:
            res = await call("Runtime.evaluate", expression=expr, returnByValue=True,
                             awaitPromise=True)
            if "exceptionDetails" in res:
                raise RuntimeError(f"{expr!r} raised: {res['exceptionDetails']}")
            run.values.append(res.get("result", {}).get("value"))
        shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        run.screenshot = base64.b64decode(shot["data"])
        task.cancel()
    return run
