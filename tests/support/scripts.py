"""Scripts of the repository that are not modules of any package (``grafana/generate.py``,
``deploy/kubernetes/generate.py``, ``deploy/compose/*.py``), imported from their files.

Everything else the tests use is imported by its module name.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

from tests.support import REPO

GRAFANA_GENERATOR = REPO / "grafana" / "generate.py"


def load_script(path: Path) -> ModuleType:
    """The script at ``path`` (inside the repository) as a module, executed once: later
    calls return the same module, under a name made of its path
    (``streamdrift_script_grafana_generate`` for grafana/generate.py)."""
    path = Path(path).resolve()
    stem = path.relative_to(REPO).with_suffix("").as_posix()
    name = "streamdrift_script_" + re.sub(r"\W", "_", stem)
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
