"""The deployment files: Dockerfile, .dockerignore, the Compose stack, the Kubernetes manifests.

No Docker engine runs where these tests run and no registry is reachable, so the Compose
stack is never started here (tests/integration/test_image.py builds and runs the image
with podman; tests/deploy/test_compose_config.py resolves the compose file with
podman-compose). What is checked here, without any container engine:

* every YAML file parses (without duplicate keys);
* the Dockerfile's build inputs exist and survive .dockerignore, its ENTRYPOINT is the
  console script of pyproject.toml, it runs as a non-root user, and the Python snippets it
  runs (the build-time kernel compilation and the HEALTHCHECK) work;
* the Compose stack: services, pinned images, every bind-mounted host path exists, the
  Prometheus config evaluates the repository's own rule files through a mount (and passes
  `promtool check config`), the addresses of Kafka, Prometheus, Alertmanager and Grafana
  agree with each other and with the repository's Alertmanager and Grafana files, the
  streamdrift config parses and matches `streamdrift demo`, and the helper scripts work
  (the baseline step is run for real; the producer, streamdrift and the compose config
  against a real Kafka broker in the integration test at the end);
* Kubernetes: the PrometheusRule is exactly the rule files (`generate.py --check`), kinds,
  labels/selectors/ports agree, the example configuration parses with its ${ENV:...}
  secrets supplied by the Deployment, and `kubectl kustomize` builds (where kubectl is).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import redirect_stdout
from fnmatch import fnmatchcase
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

import stream.broker
from stream.config import ConfigError, load_config, parse_config
from tests.support.kafka import kafka_bootstrap_servers
from tests.support.metrics import samples, scrape
from tests.support.policy import require_tool
from tests.support.ports import free_port
from tests.support.processes import stop_process
from tests.support.scripts import load_script
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_CONFIG = COMPOSE_DIR / "streamdrift.yaml"
COMPOSE_PROMETHEUS = COMPOSE_DIR / "prometheus.yml"
RULES_DIR = DEPLOY / "prometheus" / "rules"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"
K8S = DEPLOY / "kubernetes"
GENERATOR = K8S / "generate.py"
GRAFANA_DASHBOARD_PROVIDER = REPO / "grafana" / "provisioning" / "dashboards" / "streamdrift.yml"
GRAFANA_DATASOURCE = REPO / "grafana" / "provisioning" / "datasources" / "streamdrift.yml"
PYPROJECT = REPO / "pyproject.toml"

ENV_REF = re.compile(r"\$\{ENV:([A-Za-z_][A-Za-z0-9_]*)\}")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (Compose and kubectl reject them)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    keys = [loader.construct_object(k, deep=True) for k, _ in node.value
            if k.tag != "tag:yaml.org,2002:merge"]
    dupes = sorted({str(k) for k in keys if keys.count(k) > 1})
    if dupes:
        raise yaml.constructor.ConstructorError(
            None, None, f"duplicate keys {dupes}", node.start_mark)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506


def load_yaml_docs(path: Path) -> list[Any]:
    docs = yaml.load_all(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506
    return [d for d in docs if d is not None]


def script_env() -> dict[str, str]:
    """Environment for running the deploy scripts in a subprocess with this repository's code."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def alert_rule_job() -> str:
    """The scrape job name the alert rules expect (`up{job="..."}`)."""
    text = "".join(p.read_text(encoding="utf-8") for p in sorted(RULES_DIR.glob("*.yml")))
    jobs = set(re.findall(r'job="([^"]+)"', text))
    assert len(jobs) == 1, f"the rules should name exactly one job, found {jobs}"
    return jobs.pop()


def source_rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        groups.extend(load_yaml(path)["groups"])
    return groups


# --------------------------------------------------------------------------------------------
# every YAML file parses
# --------------------------------------------------------------------------------------------
YAML_FILES = sorted(
    p for p in [*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml"),
                *(REPO / "grafana" / "provisioning").rglob("*.yml")]
    if "node_modules" not in p.parts
)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_yaml_parses(path: Path) -> None:
    docs = load_yaml_docs(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: top level must be a mapping"


def test_the_deployment_files_exist() -> None:
    for rel in ["deploy/Dockerfile", ".dockerignore", "deploy/compose.yaml",
                "deploy/compose/streamdrift.yaml", "deploy/compose/prometheus.yml",
                "deploy/compose/baseline.py", "deploy/compose/producer.py",
                "deploy/compose/alert_sink.py", "deploy/kubernetes/kustomization.yaml",
                "deploy/kubernetes/generate.py", "docs/deploy.md"]:
        assert (REPO / rel).is_file(), rel


# --------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore
# --------------------------------------------------------------------------------------------
def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):  # also inside continuations, as Docker does
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a line continuation"
    return out


def dockerfile_stages() -> list[dict[str, Any]]:
    """Stages with their FROM image (global ARGs substituted) and instructions."""
    args: dict[str, str] = {}
    stages: list[dict[str, Any]] = []
    for word, rest in dockerfile_instructions():
        if word == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip().strip('"')
        elif word == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)],
                           parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"image": image, "name": name, "instructions": []})
        else:
            stages[-1]["instructions"].append((word, rest))
    return stages


def final_stage() -> dict[str, Any]:
    return dockerfile_stages()[-1]


def instruction_values(stage: dict[str, Any], word: str) -> list[str]:
    return [rest for w, rest in stage["instructions"] if w == word]


def stage_env(stage: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in instruction_values(stage, "ENV"):
        for token in shlex.split(rest):
            key, _, value = token.partition("=")
            env[key] = value
    return env


def copy_sources() -> list[str]:
    """Sources (relative to the build context) of every COPY/ADD that is not --from a stage."""
    sources: list[str] = []
    for stage in dockerfile_stages():
        for word, rest in stage["instructions"]:
            if word not in ("COPY", "ADD"):
                continue
            tokens = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
            if any(t.startswith("--from=") for t in tokens):
                continue
            paths = [t for t in tokens if not t.startswith("--")]
            sources.extend(paths[:-1])
    return sources


class DockerIgnore:
    """The matching rules of .dockerignore (moby/patternmatcher): the last pattern matching
    the path or one of its parent folders decides; `!` re-includes."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = line[1:].strip() if negate else line
            pattern = str(PurePosixPath(pattern.strip("/"))) if pattern.strip("/") else "."
            self.rules.append((negate, re.compile(self._regex(pattern))))

    @staticmethod
    def _regex(pattern: str) -> str:
        out, i = "", 0
        while i < len(pattern):
            ch = pattern[i]
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif ch == "*":
                out, i = out + "[^/]*", i + 1
            elif ch == "?":
                out, i = out + "[^/]", i + 1
            elif ch == "[":
                end = pattern.index("]", i)
                out, i = out + pattern[i:end + 1], end + 1
            else:
                out, i = out + re.escape(ch), i + 1
        return out + r"\Z"

    def ignored(self, path: str) -> bool:
        parts = PurePosixPath(path).parts
        candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        result = False
        for negate, rx in self.rules:
            if any(rx.match(c) for c in candidates):
                result = not negate
        return result


@pytest.fixture(scope="module")
def dockerignore() -> DockerIgnore:
    return DockerIgnore(DOCKERIGNORE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))


def test_dockerignore_matcher_semantics() -> None:
    m = DockerIgnore("*\n!src/\n**/__pycache__\n**/*.py[co]\n")
    assert m.ignored(".git/HEAD") and m.ignored("README.md")
    assert not m.ignored("src/a.py") and not m.ignored("src/sub/b.py")
    assert m.ignored("src/__pycache__/a.cpython-311.pyc") and m.ignored("src/x.pyc")


def test_dockerfile_base_image_and_stages() -> None:
    stages = dockerfile_stages()
    assert stages, "no FROM"
    for stage in stages:
        assert stage["image"].startswith("python:3.11-slim"), stage["image"]
    assert len(stages) >= 2, "multi-stage: build the environment apart from the runtime"
    runtime = final_stage()
    copied = [rest for w, rest in runtime["instructions"] if w == "COPY"]
    assert copied and all(c.startswith("--from=") for c in copied), \
        "the runtime stage takes only the built environment, not the sources"


def test_dockerfile_build_inputs_exist_and_are_not_ignored(
        dockerignore: DockerIgnore, pyproject: dict[str, Any]) -> None:
    sources = copy_sources()
    normalised = {s.rstrip("/") for s in sources}
    # what setuptools needs: pyproject, the readme it names, the packages it includes
    assert "pyproject.toml" in normalised
    assert pyproject["project"]["readme"] in normalised
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in ("stream", "detectors"):
        assert any(fnmatchcase(package, pat) for pat in include), package
        assert package in normalised, f"the Dockerfile does not COPY {package}/"
    for src in sources:
        path = REPO / src
        assert path.exists(), f"COPY source {src} does not exist"
        files = [path] if path.is_file() else [
            p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        assert files, f"COPY source {src} is empty"
        for f in files:
            rel = f.relative_to(REPO).as_posix()
            assert not dockerignore.ignored(rel), f"{rel} is COPYed but .dockerignore drops it"


@pytest.mark.parametrize("path", [
    ".git/HEAD", ".venv/bin/python", ".cache/kafka/kafka_2.13-4.1.2/libs/kafka.jar",
    "tests/deploy/test_deployment_files.py", ".pytest_cache/v/cache/lastfailed",
    ".hypothesis/examples/x", ".mypy_cache/3.11/x.json", ".ruff_cache/x",
    "bench/results/run.json", "streamdrift.egg-info/PKG-INFO",
    "stream/__pycache__/cli.cpython-311.pyc", "detectors/__pycache__/adwin._adwin_kernel-47.py311.nbi",
    "detectors/adwin._adwin_kernel-47.py311.1.nbc", ".streamdrift-cache/m.baseline.json",
])
def test_dockerignore_excludes_local_artefacts(dockerignore: DockerIgnore, path: str) -> None:
    assert dockerignore.ignored(path), f"{path} would be sent to the Docker build context"


def test_dockerfile_entrypoint_is_the_console_script(pyproject: dict[str, Any]) -> None:
    runtime = final_stage()
    entrypoints = instruction_values(runtime, "ENTRYPOINT")
    assert len(entrypoints) == 1
    entry = json.loads(entrypoints[0])
    assert entry == ["streamdrift"]
    assert entry[0] in pyproject["project"]["scripts"], "not a console script of pyproject"
    cmd = json.loads(instruction_values(runtime, "CMD")[-1])
    assert cmd == ["run", "-c", "/etc/streamdrift/config.yaml"]
    # the command line is one the CLI accepts
    from stream.cli import build_parser

    args = build_parser().parse_args(cmd)
    assert args.command == "run" and args.config == "/etc/streamdrift/config.yaml"


def dockerfile_user() -> tuple[int, int]:
    user = instruction_values(final_stage(), "USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit(), "USER must be numeric for Kubernetes' runAsNonRoot"
    return int(uid), int(gid)


def test_dockerfile_runs_as_non_root_and_exposes_metrics() -> None:
    uid, gid = dockerfile_user()
    assert uid != 0 and gid != 0
    runtime = final_stage()
    assert "9108" in " ".join(instruction_values(runtime, "EXPOSE")).split()
    # the folders the user writes to are created for it
    run_text = " ".join(instruction_values(runtime, "RUN"))
    env = stage_env(runtime)
    assert env["NUMBA_CACHE_DIR"].startswith("/var/cache/streamdrift")
    for folder in ("/var/lib/streamdrift", "/var/cache/streamdrift"):
        assert folder in run_text
    assert f"-o {uid} -g {gid}" in run_text


def healthcheck_code() -> str:
    runtime = final_stage()
    checks = instruction_values(runtime, "HEALTHCHECK")
    assert len(checks) == 1
    options, _, command = checks[0].partition("CMD ")
    assert "--start-period=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"] and "urllib" in argv[2]
    return argv[2]


def run_healthcheck(url: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, STREAMDRIFT_HEALTHCHECK_URL=url)
    return subprocess.run([sys.executable, "-c", healthcheck_code()], env=env,
                          capture_output=True, timeout=30)


def test_dockerfile_healthcheck_url() -> None:
    url = urlsplit(stage_env(final_stage())["STREAMDRIFT_HEALTHCHECK_URL"])
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", 9108, "/metrics")


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (401, True), (403, True),
                                                 (404, False), (500, False)])
def test_dockerfile_healthcheck_command(status: int, healthy: bool) -> None:
    """The HEALTHCHECK's python snippet, against a stand-in /metrics endpoint."""

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b"# HELP up\nup 1\n"
            self.send_response(status if self.path == "/metrics" else 418)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = run_healthcheck(f"http://127.0.0.1:{server.server_address[1]}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    assert (result.returncode == 0) is healthy, result.stderr.decode()


def test_dockerfile_healthcheck_over_tls(tmp_path: Path) -> None:
    """metrics.web_config with TLS: a self-signed certificate must not fail the check."""
    import ssl

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not on PATH")
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    made = subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                           "1", "-subj", "/CN=streamdrift", "-keyout", str(key), "-out",
                           str(cert)], capture_output=True, timeout=60)
    assert made.returncode == 0, made.stderr.decode()

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"up")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = run_healthcheck(f"https://127.0.0.1:{server.server_address[1]}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr.decode()


def test_dockerfile_healthcheck_fails_when_nothing_listens() -> None:
    result = run_healthcheck(f"http://127.0.0.1:{free_port()}/metrics")
    assert result.returncode != 0


def test_dockerfile_build_time_python_snippets_run(tmp_path: Path) -> None:
    """The kernel warm-up the image build runs (`python -m stream.warm`) compiles the
    numba kernels into the cache it is given."""
    run_text = " ".join(instruction_values(final_stage(), "RUN"))
    modules = re.findall(r"python -m ([\w.]+)", run_text)
    assert modules == ["stream.warm"], "expected the kernel warm-up in a RUN"
    env = dict(script_env(), NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    result = subprocess.run([sys.executable, "-m", modules[0]], env=env, capture_output=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert b"json scanner" in result.stdout, result.stdout
    index = {p.name.split(".")[0] for p in (tmp_path / "numba").rglob("*.nbi")}
    assert {"_scan_rows", "adwin"} <= index, index  # the scanner and ADWIN were cached


# --------------------------------------------------------------------------------------------
# Compose
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    assert name in compose["services"], f"no service {name}"
    return compose["services"][name]


def mounts(svc: dict[str, Any]) -> list[dict[str, Any]]:
    """Volumes of a service as {type, source, target, read_only} (short and long syntax)."""
    out = []
    for vol in svc.get("volumes", []):
        if isinstance(vol, str):
            parts = vol.split(":")
            source, target = parts[0], parts[1]
            mode = parts[2] if len(parts) > 2 else "rw"
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            out.append({"type": kind, "source": source, "target": target,
                        "read_only": "ro" in mode.split(",")})
        else:
            out.append({"type": vol["type"], "source": vol.get("source"),
                        "target": vol["target"], "read_only": bool(vol.get("read_only"))})
    return out


def host_path(source: str) -> Path:
    return (DEPLOY / source).resolve()


def container_to_host(svc: dict[str, Any], container_path: str) -> Path | None:
    """The host path behind a container path, through the service's bind mounts."""
    best = None
    for m in mounts(svc):
        if m["type"] != "bind":
            continue
        target = m["target"].rstrip("/")
        if container_path == target or container_path.startswith(target + "/"):
            if best is None or len(target) > len(best[0]):
                best = (target, m["source"])
    if best is None:
        return None
    rest = container_path[len(best[0]):].lstrip("/")
    return host_path(best[1]) / rest if rest else host_path(best[1])


def command_flag(svc: dict[str, Any], flag: str) -> str | None:
    for arg in svc.get("command") or []:
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def published(svc: dict[str, Any]) -> dict[int, str]:
    """container port -> host address, from the short `ports:` syntax."""
    out = {}
    for spec in svc.get("ports", []):
        parts = str(spec).split(":")
        assert len(parts) == 3, f"publish on an explicit address: {spec}"
        out[int(parts[2].split("/")[0])] = parts[0]
    return out


EXPECTED_SERVICES = {"kafka", "kafka-init", "baseline", "streamdrift", "producer",
                     "prometheus", "alertmanager", "alert-sink", "grafana"}


def test_compose_services(compose: dict[str, Any]) -> None:
    assert EXPECTED_SERVICES <= set(compose["services"])
    for name in ("kafka", "streamdrift", "producer", "prometheus", "alertmanager", "grafana"):
        assert name in compose["services"]


def test_compose_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        image = svc.get("image")
        assert image, f"{name}: no image"
        if "build" in svc:
            continue  # built from this repository
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d", tag), \
            f"{name}: image {image} is not pinned to a version"
    assert service(compose, "kafka")["image"].startswith("apache/kafka:4.1.")
    assert service(compose, "prometheus")["image"].startswith("prom/prometheus:v")
    assert service(compose, "alertmanager")["image"].startswith("prom/alertmanager:v")
    assert service(compose, "grafana")["image"].startswith("grafana/grafana:")


def test_compose_builds_streamdrift_from_the_dockerfile(compose: dict[str, Any]) -> None:
    built = {name: svc for name, svc in compose["services"].items() if "build" in svc}
    assert "streamdrift" in built
    images = {svc["image"] for svc in built.values()}
    assert len(images) == 1, f"one image for every service built here, got {images}"
    for name, svc in built.items():
        build = svc["build"]
        context = host_path(build["context"])
        assert context == REPO, f"{name}: the build context must be the repository root"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_bind_mounts_exist_and_are_read_only(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    seen_binds = 0
    for name, svc in compose["services"].items():
        for m in mounts(svc):
            if m["type"] == "bind":
                seen_binds += 1
                path = host_path(m["source"])
                assert path.exists(), f"{name}: bind mount source {m['source']} -> {path} missing"
                assert path.is_relative_to(REPO), f"{name}: {m['source']} is outside the repo"
                assert m["read_only"], f"{name}: mount {m['source']} read-only"
            else:
                assert m["source"] in declared, f"{name}: volume {m['source']} not declared"
    assert seen_binds >= 8


def test_compose_scripts_run_by_services_are_mounted(compose: dict[str, Any]) -> None:
    for name in ("baseline", "producer", "alert-sink"):
        svc = service(compose, name)
        entry = svc["entrypoint"]
        assert entry[0] == "python"
        script = container_to_host(svc, entry[1])
        assert script is not None and script.is_file(), f"{name}: {entry[1]} is not mounted"
        assert script.parent == COMPOSE_DIR
        assert svc.get("healthcheck", {}).get("disable") is True, \
            f"{name}: the image's /metrics healthcheck does not apply"


def test_compose_ports_on_loopback(compose: dict[str, Any]) -> None:
    expected = {"grafana": 3000, "prometheus": 9090, "alertmanager": 9093, "streamdrift": 9108}
    for name, port in expected.items():
        ports = published(service(compose, name))
        assert ports.get(port) == "127.0.0.1", f"{name} should publish {port} on 127.0.0.1"
    for name, svc in compose["services"].items():
        for addr in published(svc).values():
            assert addr == "127.0.0.1", f"{name} publishes on {addr}"


def test_compose_kafka_is_a_kraft_node(compose: dict[str, Any]) -> None:
    env = service(compose, "kafka")["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    # a KRaft cluster id is a UUID in URL-safe base64 without padding
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) == set(protocols)
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert voter == f"{env['KAFKA_NODE_ID']}@kafka{listeners[controller]}"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in listeners
    for key, value in env.items():
        if key.endswith("REPLICATION_FACTOR") or key.endswith("MIN_ISR"):
            assert int(value) == 1, key
    healthcheck = service(compose, "kafka")["healthcheck"]
    assert "kafka-broker-api-versions.sh" in " ".join(healthcheck["test"])


def advertised(compose: dict[str, Any]) -> set[str]:
    env = service(compose, "kafka")["environment"]
    return {item.split("://")[1] for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}


@pytest.fixture(scope="module")
def compose_config() -> Any:
    data = load_yaml(COMPOSE_CONFIG)
    return parse_config(data, COMPOSE_DIR, environ={})


def test_compose_streamdrift_config_parses(compose_config: Any) -> None:
    kafka = compose_config.source.kafka
    assert kafka is not None and kafka.topics
    assert compose_config.metrics.host == "0.0.0.0"
    for model in compose_config.models:
        assert model.baseline.file is not None
        assert model.baseline.file.is_relative_to("/var/lib/streamdrift")
    # and the same way `streamdrift run` reads it
    loaded = load_config(COMPOSE_CONFIG, environ={})
    assert loaded.models == compose_config.models


def test_compose_config_models_are_those_of_the_demo(compose_config: Any) -> None:
    """The producer sends `streamdrift demo` events: the models must be the demo's."""
    from stream import demo

    demo_config = parse_config(
        yaml.safe_load(demo.CONFIG.format(bootstrap="kafka:9092", topic=demo.TOPIC, port=9108)),
        COMPOSE_DIR)

    def shape(cfg: Any) -> list[Any]:
        return [(m.name, m.version, m.select, m.columns) for m in cfg.models]

    assert shape(compose_config) == shape(demo_config)
    assert compose_config.source.timestamp == demo_config.source.timestamp
    assert compose_config.detection == demo_config.detection
    for model, demo_model in zip(compose_config.models, demo_config.models, strict=True):
        for column in model.columns:
            if (model.name, column.name) in demo.DRIFTED:
                assert column in demo_model.columns


def test_compose_wiring_of_streamdrift(compose: dict[str, Any], compose_config: Any) -> None:
    svc = service(compose, "streamdrift")
    # the image's default command reads /etc/streamdrift/config.yaml
    cmd = svc.get("command") or json.loads(instruction_values(final_stage(), "CMD")[-1])
    config_path = cmd[cmd.index("-c") + 1]
    assert container_to_host(svc, config_path) == COMPOSE_CONFIG
    assert container_to_host(service(compose, "baseline"), config_path) == COMPOSE_CONFIG
    # the baselines are written by the `baseline` service into a volume streamdrift reads
    data_mounts = {m["target"]: m["source"] for m in mounts(svc) if m["type"] == "volume"}
    baseline_mounts = {m["target"]: m["source"]
                       for m in mounts(service(compose, "baseline")) if m["type"] == "volume"}
    for model in compose_config.models:
        path = str(model.baseline.file)
        assert any(path.startswith(t + "/") and baseline_mounts.get(t) == v
                   for t, v in data_mounts.items()), f"{path} is not on a shared volume"
    # start order
    deps = svc["depends_on"]
    assert deps["baseline"]["condition"] == "service_completed_successfully"
    assert deps["kafka-init"]["condition"] == "service_completed_successfully"
    assert service(compose, "kafka-init")["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert service(compose, "producer")["depends_on"]["kafka-init"]["condition"] \
        == "service_completed_successfully"
    # Kafka address and metrics port
    assert set(compose_config.source.kafka.bootstrap_servers) <= advertised(compose)
    assert published(svc) == {compose_config.metrics.port: "127.0.0.1"}


def test_compose_topics_are_created(compose: dict[str, Any], compose_config: Any) -> None:
    from stream.demo import TOPIC

    script = " ".join(service(compose, "kafka-init")["command"])
    created = set(re.findall(r"--create --if-not-exists --topic (\S+)", script))
    wanted = set(compose_config.source.kafka.topics) | {compose_config.source.dead_letter.topic}
    assert wanted <= created
    assert TOPIC in compose_config.source.kafka.topics, "the producer writes stream.demo.TOPIC"
    env = service(compose, "kafka")["environment"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert re.search(r"--bootstrap-server (\S+)", script).group(1) in advertised(compose)


def test_compose_producer_settings(compose: dict[str, Any], compose_config: Any) -> None:
    producer = load_script(COMPOSE_DIR / "producer.py")
    env = {k: str(v) for k, v in service(compose, "producer")["environment"].items()}
    assert set(env) <= {"BOOTSTRAP_SERVERS", "RATE", "DRIFT_AFTER"}
    bootstrap, rate, drift_after = producer.settings(env)
    assert bootstrap in compose_config.source.kafka.bootstrap_servers
    assert rate > 0 and drift_after > 0
    assert producer.settings({}) == ("kafka:9092", 200.0, 300.0)
    with pytest.raises(ValueError):
        producer.settings({"RATE": "0"})


def test_compose_prometheus_uses_the_repository_rule_files(compose: dict[str, Any]) -> None:
    svc = service(compose, "prometheus")
    config_path = command_flag(svc, "--config.file")
    assert container_to_host(svc, config_path) == COMPOSE_PROMETHEUS
    prom = load_yaml(COMPOSE_PROMETHEUS)
    found: set[Path] = set()
    for pattern in prom["rule_files"]:
        assert pattern.startswith("/"), "container paths: relative ones depend on the config"
        folder, _, glob = pattern.rpartition("/")
        host = container_to_host(svc, folder)
        assert host is not None, f"{pattern} is not under a bind mount"
        # the mount is the repository's rule folder itself: no copies
        assert host == RULES_DIR.resolve(), f"{pattern} comes from {host}, not {RULES_DIR}"
        found |= set(host.glob(glob))
    assert found == {p.resolve() for p in RULES_DIR.glob("*.yml")}
    # nothing in deploy/compose looks like a copy of a rule file
    for path in COMPOSE_DIR.iterdir():
        if path.suffix in (".yml", ".yaml"):
            assert "groups" not in load_yaml(path), f"{path} looks like a copy of rules"


def test_compose_prometheus_targets(compose: dict[str, Any], compose_config: Any) -> None:
    prom = load_yaml(COMPOSE_PROMETHEUS)
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    job = jobs[alert_rule_job()]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"streamdrift:{compose_config.metrics.port}"]
    datasource = load_yaml(GRAFANA_DATASOURCE)["datasources"][0]
    assert job.get("scrape_interval", prom["global"]["scrape_interval"]) \
        == datasource["jsonData"]["timeInterval"]
    am_targets = [t for am in prom["alerting"]["alertmanagers"]
                  for sc in am["static_configs"] for t in sc["targets"]]
    assert am_targets == ["alertmanager:9093"]
    for target in [*am_targets, *targets]:
        host, _, port = target.partition(":")
        assert host in compose["services"]
        assert int(port) in published(service(compose, host))


def test_compose_prometheus_config_passes_promtool(compose: dict[str, Any],
                                                   tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    svc = service(compose, "prometheus")
    prom = load_yaml(COMPOSE_PROMETHEUS)
    prom["rule_files"] = [str(container_to_host(svc, p)) for p in prom["rule_files"]]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(prom, sort_keys=False))
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_compose_alertmanager_uses_the_repository_config(compose: dict[str, Any]) -> None:
    svc = service(compose, "alertmanager")
    config_path = command_flag(svc, "--config.file")
    assert container_to_host(svc, config_path) == ALERTMANAGER_YML.resolve()


def test_compose_alert_sink_receives_the_placeholder_webhooks(compose: dict[str, Any]) -> None:
    am = load_yaml(ALERTMANAGER_YML)
    urls = [w["url"] for r in am["receivers"] for w in r.get("webhook_configs", [])]
    assert urls
    sink = service(compose, "alert-sink")
    assert sink["network_mode"] == "service:alertmanager"
    args = sink["command"]
    host, port = args[args.index("--host") + 1], int(args[args.index("--port") + 1])
    for url in urls:
        parts = urlsplit(url)
        assert (parts.hostname, parts.port) == (host, port), url


def test_alert_sink_prints_each_alert() -> None:
    sink = load_script(COMPOSE_DIR / "alert_sink.py")
    server = ThreadingHTTPServer(("127.0.0.1", 0), sink.Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    payload = {"version": "4", "status": "firing", "receiver": "pager", "alerts": [
        {"status": "firing", "labels": {"alertname": "StreamdriftPredictionDrift",
                                        "severity": "critical", "model": "fraud",
                                        "feature": "score"},
         "annotations": {"summary": "Prediction score of model fraud is drifting"}},
        {"status": "resolved", "labels": {"alertname": "StreamdriftTargetDown",
                                          "severity": "critical"}, "annotations": {}},
    ]}
    out = io.StringIO()
    try:
        with redirect_stdout(out):
            req = urllib.request.Request(
                f"http://127.0.0.1:{server.server_address[1]}/pager",
                data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 200
            bad = urllib.request.Request(f"http://127.0.0.1:{server.server_address[1]}/x",
                                         data=b"{nope")
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(bad, timeout=10)
            assert err.value.code == 400
    finally:
        server.shutdown()
        server.server_close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[pager] FIRING") and "StreamdriftPredictionDrift" in lines[0]
    assert "model=fraud feature=score" in lines[0]
    assert lines[1].startswith("[pager] RESOLVED") and "StreamdriftTargetDown" in lines[1]


def test_compose_grafana_provisioning(compose: dict[str, Any]) -> None:
    svc = service(compose, "grafana")
    provisioning = REPO / "grafana" / "provisioning"
    for kind in ("datasources", "dashboards"):
        target = f"/etc/grafana/provisioning/{kind}"
        assert container_to_host(svc, target) == provisioning / kind
    provider = load_yaml(GRAFANA_DASHBOARD_PROVIDER)["providers"][0]
    dashboards = container_to_host(svc, provider["options"]["path"])
    assert dashboards == REPO / "grafana" / "dashboards"
    assert sorted(dashboards.glob("*.json")), "no dashboards to provision"
    home = svc["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert container_to_host(svc, home).is_file()
    # the datasource's URL is the prometheus service
    url = urlsplit(load_yaml(GRAFANA_DATASOURCE)["datasources"][0]["url"])
    assert url.hostname in compose["services"]
    assert url.port in published(service(compose, url.hostname))
    # every dashboard uses the provisioned datasource uid
    uid = load_yaml(GRAFANA_DATASOURCE)["datasources"][0]["uid"]
    for path in dashboards.glob("*.json"):
        assert uid in path.read_text(encoding="utf-8"), path.name


def test_compose_baseline_step_builds_usable_baselines(tmp_path: Path) -> None:
    """deploy/compose/baseline.py, run as the `baseline` service runs it (paths moved)."""
    from stream.engine.baselines import column_specs, detection_settings, load_baseline
    from stream.engine.pipeline import Pipeline

    data = tmp_path / "data"
    config_path = tmp_path / "config.yaml"
    config_path.write_text(COMPOSE_CONFIG.read_text().replace("/var/lib/streamdrift", str(data)))
    result = subprocess.run(
        [sys.executable, str(COMPOSE_DIR / "baseline.py"), "--config", str(config_path),
         "--reference", str(data / "reference.jsonl"), "--events", "6000"],
        capture_output=True, text=True, timeout=300, env=script_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    config = load_config(config_path)
    settings = detection_settings(config.detection)
    baselines = {}
    for model in config.models:
        assert model.baseline.file.is_file(), result.stdout + result.stderr
        base = load_baseline(model.baseline.file)
        assert not base.needs_calibration(column_specs(model), settings), \
            "streamdrift would recalibrate at every start"
        assert set(base.profiles) == {c.name for c in model.columns}
        baselines[model.name] = base
    Pipeline(config, baselines)  # what `streamdrift run` builds from them


def test_docs_match_the_compose_file(compose: dict[str, Any]) -> None:
    docs = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert "docker compose -f deploy/compose.yaml up --build" in docs
    for name in ("grafana", "prometheus", "alertmanager", "streamdrift"):
        for port in published(service(compose, name)):
            assert f"http://localhost:{port}" in docs, f"docs/deploy.md: {name} URL"
    for name, svc in compose["services"].items():
        if "build" not in svc:
            assert svc["image"] in docs or name == "kafka-init", f"docs: {svc['image']}"
    assert "kubectl apply -k deploy/kubernetes" in docs


# --------------------------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------------------------
EXPECTED_KINDS = {
    "namespace.yaml": "Namespace",
    "configmap.yaml": "ConfigMap",
    "pvc.yaml": "PersistentVolumeClaim",
    "deployment.yaml": "Deployment",
    "service.yaml": "Service",
    "podmonitor.yaml": "PodMonitor",
    "prometheusrule.yaml": "PrometheusRule",
}


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    """kind -> the single object of that kind among the kustomization's resources."""
    out = {}
    for name in load_yaml(K8S / "kustomization.yaml")["resources"]:
        docs = load_yaml_docs(K8S / name)
        assert len(docs) == 1, f"{name}: one object per file"
        out[docs[0]["kind"]] = docs[0]
    return out


def pod_spec(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return k8s["Deployment"]["spec"]["template"]["spec"]


def container(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = pod_spec(k8s)["containers"]
    assert len(containers) == 1
    return containers[0]


def pod_labels(k8s: dict[str, dict[str, Any]]) -> dict[str, str]:
    return k8s["Deployment"]["spec"]["template"]["metadata"]["labels"]


def test_generate_check_passes() -> None:
    result = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True,
                            text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generate_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "prometheusrule.yaml"
    stale.write_text((K8S / "prometheusrule.yaml").read_text().replace("for: 15m", "for: 1m", 1))
    result = subprocess.run([sys.executable, str(GENERATOR), "--check", "--output", str(stale)],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 1
    assert "out of date" in result.stderr
    missing = subprocess.run(
        [sys.executable, str(GENERATOR), "--check", "--output", str(tmp_path / "none.yaml")],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert missing.returncode == 1


def test_generate_rejects_colliding_group_names(tmp_path: Path) -> None:
    generate = load_script(GENERATOR)
    rules = tmp_path / "rules"
    rules.mkdir()
    for name in ("a.yml", "b.yml"):
        (rules / name).write_text("groups:\n  - name: same\n    rules: []\n")
    with pytest.raises(generate.GenerateError, match="also used"):
        generate.load_groups(rules)


def test_prometheusrule_groups_equal_the_rule_files(k8s: dict[str, dict[str, Any]]) -> None:
    rule = k8s["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == source_rule_groups()
    assert set(rule["spec"]) == {"groups"}
    text = (K8S / "prometheusrule.yaml").read_text()
    assert text.startswith("# GENERATED by deploy/kubernetes/generate.py")


def test_kustomization_lists_every_manifest(k8s: dict[str, dict[str, Any]]) -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    resources = kustomization["resources"]
    assert {name: load_yaml_docs(K8S / name)[0]["kind"] for name in resources} == EXPECTED_KINDS
    extras = {p.name for p in K8S.glob("*.yaml")} - set(resources) - {"kustomization.yaml"}
    assert extras == {"baseline-loader.yaml"}, "a manifest is missing from kustomization.yaml"
    assert kustomization["namespace"] == k8s["Namespace"]["metadata"]["name"]
    image_names = {i["name"] for i in kustomization["images"]}
    assert container(k8s)["image"].split(":")[0] in image_names


def test_kubernetes_api_versions(k8s: dict[str, dict[str, Any]]) -> None:
    expected = {"Namespace": "v1", "ConfigMap": "v1", "PersistentVolumeClaim": "v1",
                "Deployment": "apps/v1", "Service": "v1",
                "PodMonitor": "monitoring.coreos.com/v1",
                "PrometheusRule": "monitoring.coreos.com/v1"}
    for kind, api in expected.items():
        assert k8s[kind]["apiVersion"] == api, kind
        assert k8s[kind]["metadata"]["name"]


def test_kubernetes_labels_and_selectors_agree(k8s: dict[str, dict[str, Any]]) -> None:
    labels = pod_labels(k8s)
    selector = k8s["Deployment"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert k8s["Service"]["spec"]["selector"] == selector
    podmonitor = k8s["PodMonitor"]["spec"]
    assert podmonitor["selector"]["matchLabels"].items() <= labels.items()
    # the job label of the scraped series is what the alert rules select
    assert labels[podmonitor["jobLabel"]] == alert_rule_job()
    for kind, obj in k8s.items():
        if kind != "Namespace":
            assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "streamdrift", kind


def test_kubernetes_ports_agree(k8s: dict[str, dict[str, Any]]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container(k8s)["ports"]}
    for endpoint in k8s["PodMonitor"]["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in ports, "PodMonitor names a port the container lacks"
        assert endpoint.get("path", "/metrics") == "/metrics"
    for port in k8s["Service"]["spec"]["ports"]:
        assert port["targetPort"] in ports or port["targetPort"] in ports.values()
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container(k8s)[probe]["httpGet"]
        assert get["path"] == "/metrics" and get["port"] in ports, probe
    assert ports["metrics"] == 9108


def k8s_config(k8s: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    text = k8s["ConfigMap"]["data"]["config.yaml"]
    return text, yaml.safe_load(text)


def test_kubernetes_example_config_parses(k8s: dict[str, dict[str, Any]]) -> None:
    text, data = k8s_config(k8s)
    names = set(ENV_REF.findall(text))
    assert names, "the example should take its Kafka credentials from the environment"
    environ = {name: f"value-of-{name}" for name in names}
    config = parse_config(data, "/etc/streamdrift", environ=environ)
    kafka = config.source.kafka
    assert kafka is not None and kafka.sasl_password is not None
    assert kafka.sasl_password.reveal() == "value-of-KAFKA_SASL_PASSWORD"
    # without the variables it does not parse: no secret is written in the ConfigMap
    with pytest.raises(ConfigError, match="KAFKA_SASL_PASSWORD"):
        parse_config(data, "/etc/streamdrift", environ={})
    assert config.metrics.port == {p["name"]: p["containerPort"]
                                   for p in container(k8s)["ports"]}["metrics"]
    assert config.metrics.host == "0.0.0.0"


def test_kubernetes_secrets_come_from_a_secret(k8s: dict[str, dict[str, Any]]) -> None:
    text, _ = k8s_config(k8s)
    env = {e["name"]: e for e in container(k8s).get("env", [])}
    for name in set(ENV_REF.findall(text)):
        assert name in env, f"${{ENV:{name}}} is used but the container does not set {name}"
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] and ref["key"]
    assert not any("value" in e for e in env.values() if "PASSWORD" in e["name"])


def test_kubernetes_config_and_baselines_are_mounted(k8s: dict[str, dict[str, Any]]) -> None:
    c = container(k8s)
    args = c["args"]
    config_path = PurePosixPath(args[args.index("-c") + 1])
    volumes = {v["name"]: v for v in pod_spec(k8s)["volumes"]}
    mounts_by_path = {m["mountPath"]: m for m in c["volumeMounts"]}
    config_mount = mounts_by_path[str(config_path.parent)]
    assert volumes[config_mount["name"]]["configMap"]["name"] \
        == k8s["ConfigMap"]["metadata"]["name"]
    assert config_path.name in k8s["ConfigMap"]["data"]
    _, data = k8s_config(k8s)
    config = parse_config(data, "/etc/streamdrift",
                          environ=dict.fromkeys(ENV_REF.findall(k8s_config(k8s)[0]), "x"))
    for model in config.models:
        path = str(model.baseline.file or model.baseline.reference)
        mount = [m for p, m in mounts_by_path.items() if path.startswith(p + "/")]
        assert mount, f"{path} is on no volume"
        claim = volumes[mount[0]["name"]]["persistentVolumeClaim"]["claimName"]
        assert claim == k8s["PersistentVolumeClaim"]["metadata"]["name"]
    loader = load_yaml_docs(K8S / "baseline-loader.yaml")[0]
    assert loader["kind"] == "Pod"
    claims = [v["persistentVolumeClaim"]["claimName"] for v in loader["spec"]["volumes"]]
    assert claims == [k8s["PersistentVolumeClaim"]["metadata"]["name"]]


def test_kubernetes_security_context(k8s: dict[str, dict[str, Any]]) -> None:
    pod = pod_spec(k8s)["securityContext"]
    c = container(k8s)
    uid, gid = dockerfile_user()
    assert pod["runAsNonRoot"] is True
    assert (pod["runAsUser"], pod["runAsGroup"]) == (uid, gid)
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod_spec(k8s)["automountServiceAccountToken"] is False
    # on a read-only root file system, numba's cache and /tmp must be writable volumes
    numba_cache = stage_env(final_stage())["NUMBA_CACHE_DIR"]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    numba_cache = env.get("NUMBA_CACHE_DIR") or numba_cache
    volumes = {v["name"]: v for v in pod_spec(k8s)["volumes"]}
    writable = [m["mountPath"] for m in c["volumeMounts"]
                if not m.get("readOnly") and "emptyDir" in volumes[m["name"]]]
    assert any(numba_cache == p or numba_cache.startswith(p + "/") for p in writable)
    assert "/tmp" in writable


def test_kubernetes_deployment_shape(k8s: dict[str, dict[str, Any]]) -> None:
    spec = k8s["Deployment"]["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    resources = container(k8s)["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]
    assert container(k8s)["args"] == json.loads(instruction_values(final_stage(), "CMD")[-1])


def test_kustomize_builds(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:  # not installed by this project; the other tests cover the files
        pytest.skip("kubectl not on PATH")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert sorted(d["kind"] for d in docs) == sorted(EXPECTED_KINDS.values())
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "streamdrift"
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(":0.1.0") and "/" in image


# --------------------------------------------------------------------------------------------
# integration: the Compose stack's Python parts against a real Kafka broker
# --------------------------------------------------------------------------------------------
@pytest.fixture
def kafka_bootstrap(tmp_path: Path) -> Iterator[str]:
    with kafka_bootstrap_servers(tmp_path / "kafka", partitions=3) as bootstrap:
        yield bootstrap


def _matching(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample ``name`` whose labels include ``labels``."""
    return [(dict(found), value) for (sample_name, found), value in samples(text).items()
            if sample_name == name and labels.items() <= dict(found).items()]


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample ``name`` whose labels include ``labels``, or None."""
    return next((value for _, value in _matching(text, name, **labels)), None)


@pytest.mark.integration
@pytest.mark.timeout(420)
def test_compose_pipeline_against_a_real_broker(kafka_bootstrap: str, tmp_path: Path,
                                                compose: dict[str, Any]) -> None:
    """The stack minus Docker: kafka-init's topics, the baseline step, the producer and
    `streamdrift run` with the Compose configuration; drift is seen on /metrics."""
    from stream.demo import DRIFTED

    compose_config = parse_config(load_yaml(COMPOSE_CONFIG), COMPOSE_DIR)
    for topic in (*compose_config.source.kafka.topics, compose_config.source.dead_letter.topic):
        stream.broker.create_topic(kafka_bootstrap, topic, 3)
    port = free_port()
    data = tmp_path / "data"
    text = (COMPOSE_CONFIG.read_text().replace("/var/lib/streamdrift", str(data))
            .replace('"kafka:9092"', f'"{kafka_bootstrap}"')
            .replace("{port: 9108, host: 0.0.0.0}", f"{{port: {port}, host: 127.0.0.1}}")
            .replace("group_id: streamdrift", f"group_id: sd-compose-{port}"))
    config_path = tmp_path / "config.yaml"
    config_path.write_text(text)
    env = script_env()
    baseline = subprocess.run(
        [sys.executable, str(COMPOSE_DIR / "baseline.py"), "--config", str(config_path),
         "--reference", str(data / "reference.jsonl")],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert baseline.returncode == 0, baseline.stdout + baseline.stderr

    producer_env = {k: str(v) for k, v in service(compose, "producer")["environment"].items()}
    producer_env.update(BOOTSTRAP_SERVERS=kafka_bootstrap, RATE="1500", DRIFT_AFTER="40")
    logs = {name: open(tmp_path / f"{name}.log", "w+b") for name in ("producer", "streamdrift")}
    producer = subprocess.Popen([sys.executable, str(COMPOSE_DIR / "producer.py")],
                                env={**env, **producer_env}, cwd=tmp_path,
                                stdout=logs["producer"], stderr=subprocess.STDOUT)
    run = subprocess.Popen([sys.executable, "-m", "stream.cli", "run", "-c", str(config_path)],
                           env=env, cwd=tmp_path, stdout=logs["streamdrift"],
                           stderr=subprocess.STDOUT)

    def log(name: str) -> str:
        logs[name].flush()
        return log_text(tmp_path, name)

    try:
        def consumed() -> bool:
            assert run.poll() is None, "streamdrift exited:\n" + log("streamdrift")
            assert producer.poll() is None, "the producer exited:\n" + log("producer")
            value = _sample(scrape(port), "streamdrift_events_processed_total", model="credit")
            return bool(value and value > 5000)

        wait_for(consumed, timeout=120, interval=1.0, message="events processed")
        before = scrape(port)
        assert _sample(before, "streamdrift_source_up") == 1
        assert "drift injected now" not in log("producer"), "too slow to see clean data"
        # the baselines come from the producer's generator: no alarm on clean data
        alarms = [(found["model"], found["feature"], found["detector"])
                  for found, value in _matching(before, "streamdrift_drift_active") if value == 1]
        assert not alarms, f"alarms before any drift was injected: {alarms}"

        drifted = {f for m, f in DRIFTED if m == "credit"}

        seen_at: list[float] = []

        def drift_seen() -> bool:
            assert run.poll() is None, "streamdrift exited:\n" + log("streamdrift")
            scraped_at, text = time.time(), scrape(port)
            if any(_sample(text, "streamdrift_drift_active", model="credit", feature=f,
                           detector=d) == 1 for f in drifted for d in ("ks", "chi2", "adwin")):
                seen_at.append(scraped_at)
            return bool(seen_at)

        wait_for(drift_seen, timeout=150, interval=2.0, message="drift on credit")
        # the producer's "drift injected now" comes on its next 1-second tick, after a fast
        # detection: compare with the moment it starts drifting, which it logs at start
        found = re.search(r"drift in \d+ s \(at ([0-9.]+)\)", log("producer"))
        assert found, log("producer")
        assert seen_at[0] >= float(found.group(1)), (
            f"drift reported {float(found.group(1)) - seen_at[0]:.1f} s before it was injected")
    finally:
        codes = {"producer": stop_process(producer), "streamdrift": stop_process(run)}
        for f in logs.values():
            f.close()
    assert codes["producer"] == 0, log_text(tmp_path, "producer")
    assert codes["streamdrift"] == 0, log_text(tmp_path, "streamdrift")


def log_text(tmp_path: Path, name: str) -> str:
    return (tmp_path / f"{name}.log").read_text(errors="replace")[-4000:]
