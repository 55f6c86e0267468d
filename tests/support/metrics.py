"""Reading a ``/metrics`` endpoint: HTTP(S) requests and the samples of an exposition."""

from __future__ import annotations

import base64
import math
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request

#: (metric name, sorted (label, value) pairs) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def http_get(url: str, context: ssl.SSLContext | None = None, *, user: str | None = None,
             password: str | None = None, authorization: str | None = None,
             timeout: float = 10) -> tuple[int, dict[str, str], str]:
    """GET ``url``: (status, headers, body), also for an HTTP error status.  ``user`` and
    ``password`` go as basic auth; ``authorization`` is sent as the header as it is."""
    req = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    if authorization is not None:
        req.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def scrape(port: int, timeout: float = 5) -> str:
    """The text of http://127.0.0.1:``port``/metrics; OSError when it does not answer."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        return r.read().decode()


def samples(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(found: Samples, name: str, **labels: str) -> float:
    """The value of the sample ``name`` with exactly ``labels``; NaN when there is none."""
    return found.get((name, tuple(sorted(labels.items()))), math.nan)


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess:
    """``promtool check metrics`` on an exposition (fails the test if promtool is missing:
    make test installs the prometheus package)."""
    import pytest

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (make test installs the prometheus package)")
    return subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                          capture_output=True, timeout=30)

