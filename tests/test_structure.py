"""The structure of the code: layered packages, no import cycle, modules of a readable size.

The import graph is read from the source (``ast``, imports inside functions included),
so it holds for lazy imports too; imports under ``if TYPE_CHECKING:`` never run and are
left out.  Layers, from the bottom: ``detectors`` (pure
statistics), then in ``stream``: config (and the package root, logging, the local
broker launcher) < formats < engine < sources, sinks < runtime, adapters < cli, demo (and its
view).  A module may import its own layer or a lower one, never a higher one, and
``detectors`` never imports ``stream``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("detectors", "stream")
MAX_MODULE_LINES = 600

#: module-name prefix -> layer (the longest matching prefix wins)
LAYERS = {
    "detectors": 0,
    "stream": 1,
    "stream.logs": 1,
    "stream.config": 1,
    "stream.broker": 1,
    "stream.formats": 2,
    "stream.engine": 3,
    "stream.sources": 4,
    "stream.sinks": 4,
    "stream.runtime": 5,
    "stream.adapters": 5,
    "stream.report": 5,
    "stream.cli": 6,
    "stream.demo": 6,
    "stream.demoview": 6,
    "stream.warm": 6,
}
#: third-party modules that talk to brokers or serve HTTP: the configuration reads no client
CLIENT_OR_SERVER = ("kafka", "confluent_kafka", "prometheus_client", "wsgiref", "socketserver",
                    "http.server")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that ``name`` imports (a package import counts as its __init__)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    # imports only for type checkers (``if TYPE_CHECKING:``) do not run: no runtime edge
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            # the longest project module the import names
            parts = target.split(".")
            for i in range(len(parts), 0, -1):
                candidate = ".".join(parts[:i])
                if candidate in known:
                    if candidate != name:
                        found.add(candidate)
                    break
    return found


def _third_party(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module)
    return out


def _layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def test_the_graph_is_read(graph: dict[str, set[str]]) -> None:
    # a parser that found nothing would make the other tests pass vacuously
    assert len(graph) > 30
    assert "stream.engine.pipeline" in graph["stream.runtime.runner"]
    assert "detectors.model" in graph["stream.engine.pipeline"]
    # lazy imports inside functions count too
    assert "stream.runtime.runner" in graph["stream.cli"]


def test_imports_never_go_up_a_layer(graph: dict[str, set[str]]) -> None:
    upward = sorted(f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
                    for a, targets in graph.items() for b in targets if _layer(b) > _layer(a))
    assert not upward, "\n".join(upward)


def test_detectors_never_import_stream(graph: dict[str, set[str]]) -> None:
    bad = sorted(f"{a} -> {b}" for a, targets in graph.items() if a.startswith("detectors")
                 for b in targets if b.split(".")[0] == "stream")
    assert not bad, bad


def test_the_import_graph_is_acyclic(graph: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_configuration_imports_no_client_or_server_code() -> None:
    modules = _modules()
    bad = {name: sorted(m for m in _third_party(path)
                        if m.split(".")[0] in CLIENT_OR_SERVER or m in CLIENT_OR_SERVER)
           for name, path in modules.items() if name.startswith("stream.config")}
    assert not any(bad.values()), bad


def test_every_stream_module_has_a_layer() -> None:
    for name in _modules():
        if name.startswith("stream"):
            assert _layer(name) >= 1, name


def test_modules_stay_readable() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()
             if name.startswith("stream")}
    big = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"
