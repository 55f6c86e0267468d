"""Shared setup of the deployment tests (Prometheus, Alertmanager, Grafana artefacts).

The helper modules of this folder (`procs`, `promql_contract`) are imported by plain name,
so this folder is put on sys.path whatever pytest's import mode is.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

REPO = HERE.parents[1]
GRAFANA_GENERATOR = REPO / "grafana" / "generate.py"


def load_grafana_generator() -> ModuleType:
    """grafana/generate.py as a module (it is a script, not part of a package)."""
    name = "streamdrift_grafana_generate"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, GRAFANA_GENERATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def grafana_generate() -> ModuleType:
    return load_grafana_generator()
