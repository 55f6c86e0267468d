"""Fixtures of the whole test suite."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: a test module that holds an integration test (its text names the mark)
_LIVE_MARK = "pytest.mark.integration"


@functools.cache
def _live_module(path: str) -> bool:
    try:
        return _LIVE_MARK in Path(path).read_text(encoding="utf-8")
    except OSError:
        return False


@pytest.hookimpl(optionalhook=True)  # a hook of xdist's: unknown under -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under pytest-xdist (``make test`` runs ``-n 2``) every module that holds an
    integration test goes to one worker, as one unit, in collection order: they share one
    broker, one Prometheus and one Alertmanager (started once, by that worker), and
    test_time_to_page.py's background run spans them (tests/integration/conftest.py). The
    other worker takes the unit and statistical tests meanwhile: the integration tests
    mostly wait on the broker and their subprocesses, the statistical ones compute.

    A scheduler of our own, not ``--dist loadgroup`` with ``xdist_group`` marks: with
    pytest 9.2 xdist's loadgroup no longer groups (it rewrites a node id field pytest
    stopped reading; pytest-xdist issue 1386). The controller sees node ids only, so a
    module counts as live when its text names the integration mark."""
    from xdist.scheduler import LoadScopeScheduling

    class LiveTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "live" if _live_module(nodeid.split("::", 1)[0]) else nodeid

    return LiveTogether(config, log)


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
