"""Shared setup of the deployment tests (Prometheus, Alertmanager, Grafana artefacts)."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.support.scripts import GRAFANA_GENERATOR, load_script


@pytest.fixture(scope="session")
def grafana_generate() -> ModuleType:
    """grafana/generate.py as a module (it is a script, not part of a package)."""
    return load_script(GRAFANA_GENERATOR)
