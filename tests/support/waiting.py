"""Polling until a condition holds, with a bounded time and a useful message."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(predicate: Callable[[], Any], timeout: float, message: str, *,
             interval: float = 0.2, alive: Callable[[], object] | None = None,
             details: Callable[[], object] | None = None,
             retry: tuple[type[BaseException], ...] = (Exception,)) -> Any:
    """Poll ``predicate()`` until it returns a truthy value, and return that value.

    ``alive()`` is called first on every round and its exceptions propagate at once (a
    dead process fails fast).  Exceptions of ``predicate`` of the types in ``retry`` count
    as "not yet" (e.g. a server not answering yet); pass ``retry=()`` to let them fail the
    wait at once.  After ``timeout`` seconds: AssertionError naming ``message``, the last
    retried error and ``details()``.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if alive is not None:
            alive()
        try:
            value = predicate()
            if value:
                return value
        except retry as exc:
            last_error = exc
        if time.monotonic() > deadline:
            error = f" (last error: {last_error!r})" if last_error is not None else ""
            more = f"\n{details()}" if details is not None else ""
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {message}{error}{more}")
        time.sleep(interval)
