"""deploy/compose.yaml as a Compose implementation reads it:
``podman-compose -f deploy/compose.yaml config``.

Nothing is started here. Kafka, Prometheus, Alertmanager and Grafana come from public
images that no registry reachable from CI serves; the streamdrift image itself is built and
run by tests/integration/test_image.py, and test_deployment_files.py checks the file's
structure and mounts with PyYAML. podman-compose (a test extra) resolves the anchors and
merge keys, interpolates variables and rejects undeclared named volumes; these tests then
check what it resolved. It runs ``podman --version`` first, so podman must be installed:
without it (or without podman-compose) the tests fail under CI and are skipped elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import REPO
from tests.support.policy import require_tool, unavailable

COMPOSE = REPO / "deploy" / "compose.yaml"
#: the services built from deploy/Dockerfile (the `x-streamdrift-image` anchor)
IMAGE_SERVICES = {"baseline", "streamdrift", "producer", "alert-sink"}
#: the services of public images, never started by the tests
PUBLIC_SERVICES = {"kafka", "kafka-init", "prometheus", "alertmanager", "grafana"}


def compose_config(path: Path) -> subprocess.CompletedProcess:
    """``podman-compose -f PATH config`` run by this interpreter (variables unset)."""
    if importlib.util.find_spec("podman_compose") is None:
        unavailable("podman-compose is not installed (a test extra: pip install -e '.[test]')")
    require_tool("podman")
    env = {k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    return subprocess.run([sys.executable, "-m", "podman_compose", "-f", str(path), "config"],
                          capture_output=True, text=True, timeout=60, env=env,
                          cwd=path.parent, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    proc = compose_config(COMPOSE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = yaml.safe_load(proc.stdout)
    assert isinstance(data, dict) and "services" in data, proc.stdout[:2000]
    return data


def test_compose_config_resolves_every_service(resolved: dict[str, Any]) -> None:
    declared = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    assert set(resolved["services"]) == set(declared) == IMAGE_SERVICES | PUBLIC_SERVICES


def test_compose_config_builds_the_image_services_from_the_dockerfile(
        resolved: dict[str, Any]) -> None:
    for name in IMAGE_SERVICES:
        svc = resolved["services"][name]
        build = svc.get("build")
        assert isinstance(build, dict), f"{name}: the merge key gave no build section"
        assert (COMPOSE.parent / build["context"]).resolve() == REPO, build
        assert (REPO / build["dockerfile"]).resolve() == REPO / "deploy" / "Dockerfile"
        assert svc["image"] == "streamdrift:dev" and svc.get("init") is True, name
    for name in PUBLIC_SERVICES:
        svc = resolved["services"][name]
        assert "build" not in svc and ":" in svc["image"], name


def test_compose_config_references_resolve(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    volumes = set(resolved.get("volumes") or {})
    for name, svc in services.items():
        for dep in svc.get("depends_on") or {}:
            assert dep in services, f"{name} depends on unknown service {dep}"
        mode = svc.get("network_mode", "")
        if mode.startswith("service:"):
            assert mode.removeprefix("service:") in services, f"{name}: {mode}"
        for mount in svc.get("volumes") or []:
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in volumes, f"{name}: volume {source} is not declared"


def test_compose_config_interpolates_every_variable(resolved: dict[str, Any]) -> None:
    assert "${" not in yaml.safe_dump(resolved), "an unresolved ${...} is left"
    env = resolved["services"]["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "admin"  # the documented default


def test_compose_config_rejects_an_undeclared_volume(tmp_path: Path) -> None:
    """The check has teeth: podman-compose fails on a volume that is not declared."""
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    del data["volumes"]["prometheus-data"]
    broken = tmp_path / "compose.yaml"
    broken.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    for sub in ("compose", "prometheus"):  # its relative bind mounts
        (tmp_path / sub).symlink_to(COMPOSE.parent / sub)
    proc = compose_config(broken)
    assert proc.returncode != 0 and "prometheus-data" in proc.stderr, proc.stderr[-2000:]
