"""What a test does when something it needs is missing: skip on a developer machine, FAIL
when the environment variable CI is set (to anything but "", 0, false or no)."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

#: Debian package providing each command (for the message).
DEBIAN_PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "alertmanager": "prometheus-alertmanager",
    "openssl": "openssl",
    "podman": "podman",
    "runc": "runc",
    "mmdebstrap": "mmdebstrap",
}


def in_ci() -> bool:
    """True when the environment variable CI is set to a true-ish value."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(message: str) -> NoReturn:
    """Skip the test with ``message``; fail it instead under CI."""
    if in_ci():
        pytest.fail(f"{message}\n(CI is set: these tests must not be skipped)", pytrace=False)
    pytest.skip(message)


def find_binary(*names: str) -> str | None:
    """The path of the first of ``names`` found on PATH, or None."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def require_tool(*names: str) -> str:
    """The path of the first of ``names`` found on PATH; otherwise :func:`unavailable`."""
    path = find_binary(*names)
    if path:
        return path
    package = DEBIAN_PACKAGES.get(names[0], names[0])
    unavailable(f"{' / '.join(names)} not found on PATH "
                f"(Debian/Ubuntu: apt-get install {package})")
