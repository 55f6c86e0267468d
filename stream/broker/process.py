"""Helpers around the broker's child processes: progress lines, log tails, free loopback
ports, the parent-death signal and a liveness check.  Standard library only."""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path


def progress(msg: str) -> None:
    """A progress line on stderr, prefixed ``[kafka]``."""
    print(f"[kafka] {msg}", file=sys.stderr, flush=True)


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a log file, indented, or a note that it is missing/empty."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * lines))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return f"  ({path} does not exist)"
    out = data.splitlines()[-lines:]
    return "\n".join("  " + line for line in out) if out else f"  ({path} is empty)"


def first_errors(path: Path, limit: int = 12) -> str:
    """The first ERROR/FATAL lines and 'Caused by:' lines of a Kafka log."""
    out: list[str] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if " ERROR " in line or " FATAL " in line or line.startswith("Caused by:"):
                    out.append("  " + line.rstrip()[:400])
                    if len(out) >= limit:
                        break
    except OSError:
        return ""
    return "\n".join(out)


def free_ports(count: int, prefer: tuple[int, ...] = ()) -> list[int]:
    """Distinct free loopback ports; each preferred port is used if it can be bound."""
    socks: list[socket.socket] = []
    try:
        for i in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            # as Kafka's own server socket: TIME_WAIT leftovers do not count as "in use"
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            want = prefer[i] if i < len(prefer) else 0
            try:
                s.bind(("127.0.0.1", want))
            except OSError:
                s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn doing Linux prctl(PR_SET_PDEATHSIG, SIGTERM): the JVM then gets SIGTERM
    even when its Python parent dies without running atexit (SIGKILL, unhandled SIGTERM).
    None where that is not available.  libc is loaded here, before the fork."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 == PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
