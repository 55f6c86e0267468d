"""Fixtures of the whole test suite."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Every test leaves the root logger as it found it.

    ``streamdrift`` commands run in-process (``stream.cli.main``) install a handler on the
    root logger that writes to the ``sys.stderr`` of that moment: under pytest, a capture
    stream that is closed once the test ends. Left there, every later log record fails with
    "I/O operation on closed file" and prints a traceback (which a later test that checks
    its output for tracebacks then sees)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    kafka_level = logging.getLogger("kafka").level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("kafka").setLevel(kafka_level)
