#!/usr/bin/env python3
"""Build the streamdrift container image (deploy/Dockerfile) with Docker, or with Podman
where no Docker engine answers; optionally from a Debian base image made on this machine.

    python3 deploy/image/build.py                          # streamdrift:dev, public base image
    python3 deploy/image/build.py --base local             # base made here: no registry needed
    python3 deploy/image/build.py --tag streamdrift:0.1.0 --engine podman
    python3 deploy/image/build.py base                     # only make the local base; print it

``make image`` runs this script (``make image BASE=local`` for the local base).

* Engine: ``docker`` when ``docker info`` answers (a daemon is reachable), else ``podman``.
* Podman runs as CI needs it on machines without cgroup delegation: ``--runtime runc``
  (when ``runc`` is installed; crun fails on cgroups and rlimits there),
  ``build --isolation=chroot --network=host``, and ``CONTAINERS_CONF`` pointing at a file
  with ``default_ulimits = []`` (written to ``.cache/image/containers.conf``) unless the
  environment already sets it. :func:`podman` and :func:`podman_env` give the same command
  and environment to ``podman run``.
* Podman builds see the host's CA bundle (``/etc/ssl/certs/ca-certificates.crt``, mounted
  read-only into the build's ``RUN`` steps, never into a layer) so that ``pip`` works behind
  a TLS-inspecting proxy. ``--no-host-ca`` turns that off.
* ``--base local``: no image registry is needed. ``mmdebstrap`` makes a minimal Debian 12
  root file system with Python 3.11 (the Python of the public ``python:3.11-slim-bookworm``),
  ``podman import`` turns it into ``localhost/streamdrift-base:bookworm-<recipe hash>``,
  and that image is reused until the recipe below changes. Needs root (or user namespaces
  for mmdebstrap's unshare mode) and Debian's ``mmdebstrap`` package.
* Caches: the engine's layers. An unchanged build takes seconds; a change of the code
  reuses the layer of the dependencies (the Dockerfile installs them from pyproject.toml
  alone, before it copies the code), so only a change of pyproject.toml downloads them.
* Podman builds write the ``docker`` image format, the only one that keeps ``HEALTHCHECK``.

Standard library only (Python 3.11+): it runs before any virtual environment exists.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DOCKERFILE = REPO / "deploy" / "Dockerfile"
#: what this script keeps between runs (git ignores .cache/)
CACHE = REPO / ".cache" / "image"
#: the Dockerfile's build argument naming the base image of both stages
BASE_ARG = "PYTHON_IMAGE"
DEFAULT_TAG = "streamdrift:dev"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")

# -- the local base image -----------------------------------------------------------------
SUITE = "bookworm"
MIRROR = os.environ.get("STREAMDRIFT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
#: what the Dockerfile needs of its base: python (3.11) with venv and pip, groupadd/useradd
#: (passwd), CA certificates (pip, Kafka TLS), libstdc++ (numpy, scipy, llvmlite)
PACKAGES = ("python3", "python3-venv", "python-is-python3", "passwd", "ca-certificates",
            "libstdc++6")
#: no documentation, manual pages or translations in the base
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*",
                 "/usr/share/locale/*")
#: the image configuration of the public python image that the Dockerfile relies on
IMPORT_CHANGES = ("ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                  "ENV=LANG=C.UTF-8", 'CMD=["python3"]')


class ImageError(Exception):
    """The image cannot be built here; the message says what is missing."""


def _mmdebstrap_args() -> list[str]:
    return ["--variant=essential", f"--include={','.join(PACKAGES)}",
            *(f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES)]


def local_base_name() -> str:
    """The tag of the local base image: changes whenever its recipe changes."""
    recipe = repr((SUITE, MIRROR, _mmdebstrap_args(), IMPORT_CHANGES)).encode()
    return f"localhost/streamdrift-base:{SUITE}-{hashlib.sha256(recipe).hexdigest()[:12]}"


# -- engines ------------------------------------------------------------------------------
def docker_answers() -> bool:
    """True when a Docker daemon is reachable (not only the client installed)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def choose_engine(choice: str = "auto") -> str:
    """``docker`` or ``podman``: the one asked for, or (``auto``) Docker when its daemon
    answers, else Podman."""
    if choice == "auto":
        if docker_answers():
            return "docker"
        if shutil.which("podman"):
            return "podman"
        raise ImageError("neither a Docker daemon nor podman is available "
                         "(Debian/Ubuntu: apt-get install podman runc)")
    if shutil.which(choice) is None:
        raise ImageError(f"{choice} is not installed")
    return choice


def podman() -> list[str]:
    """The podman command: with ``--runtime runc`` when runc is installed."""
    exe = shutil.which("podman")
    if exe is None:
        raise ImageError("podman is not installed (Debian/Ubuntu: apt-get install podman runc)")
    return [exe, "--runtime", "runc"] if shutil.which("runc") else [exe]


def podman_env() -> dict[str, str]:
    """This process' environment with ``CONTAINERS_CONF`` set (unless it already is) to a
    file that clears podman's default rlimits."""
    env = dict(os.environ)
    if not env.get("CONTAINERS_CONF"):
        conf = CACHE / "containers.conf"
        text = "[containers]\ndefault_ulimits = []\n"
        if not conf.is_file() or conf.read_text() != text:
            CACHE.mkdir(parents=True, exist_ok=True)
            tmp = conf.with_name(f".{conf.name}.{os.getpid()}")
            tmp.write_text(text)
            tmp.replace(conf)
        env["CONTAINERS_CONF"] = str(conf)
    return env


def image_exists(engine: str, name: str) -> bool:
    cmd = podman() if engine == "podman" else [engine]
    return subprocess.run([*cmd, "image", "inspect", name], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=podman_env() if engine == "podman"
                          else None, timeout=60).returncode == 0


def _run(cmd: Sequence[str], *, env: dict[str, str] | None = None, quiet: bool = False,
         what: str) -> None:
    out = subprocess.PIPE if quiet else None
    proc = subprocess.run(list(cmd), env=env, stdin=subprocess.DEVNULL, stdout=out,
                          stderr=subprocess.STDOUT if quiet else None, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout or "").splitlines()[-40:])
        raise ImageError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


def make_local_base(*, quiet: bool = False) -> str:
    """The local Debian base image in podman's storage (made when missing); its name."""
    name = local_base_name()
    if image_exists("podman", name):
        return name
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise ImageError("mmdebstrap is not installed (Debian/Ubuntu: apt-get install "
                         "mmdebstrap); it makes the local base image")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="base-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        _run([mmdebstrap, "--quiet", *_mmdebstrap_args(), SUITE, str(rootfs), MIRROR],
             quiet=quiet, what="mmdebstrap")
        changes = [arg for c in IMPORT_CHANGES for arg in ("--change", c)]
        _run([*podman(), "import", "--quiet", *changes, str(rootfs), name],
             env=podman_env(), quiet=quiet, what="podman import")
    return name


def build_command(engine: str, tag: str, base: str | None, *, host_ca: bool = True,
                  extras: str = "") -> list[str]:
    """The command that builds deploy/Dockerfile as ``tag`` from ``base`` (None: the
    Dockerfile's default)."""
    args = ["-f", str(DOCKERFILE), "-t", tag]
    if base:
        args += ["--build-arg", f"{BASE_ARG}={base}"]
    if extras:
        args += ["--build-arg", f"STREAMDRIFT_EXTRAS={extras}"]
    if engine == "docker":
        return ["docker", "build", *args, str(REPO)]
    # docker format: the OCI format has no HEALTHCHECK, podman would drop it
    args = ["--format", "docker", "--isolation=chroot", "--network=host", "--layers", *args]
    if host_ca and HOST_CA.is_file():
        args += ["--volume", f"{HOST_CA}:{HOST_CA}:ro"]
    return [*podman(), "build", *args, str(REPO)]


def build(tag: str = DEFAULT_TAG, base: str | None = None, *, engine: str = "auto",
          host_ca: bool = True, extras: str = "", quiet: bool = False) -> str:
    """Build the image; ``base`` "local" makes and uses the local Debian base (podman only).
    Returns the tag."""
    # the local base lives in podman's storage: podman builds from it even where Docker runs
    engine = choose_engine("podman" if base == "local" and engine == "auto" else engine)
    if base == "local":
        if engine != "podman":
            raise ImageError("--base local needs podman (the base is imported into podman's "
                             "storage)")
        base = make_local_base(quiet=quiet)
    cmd = build_command(engine, tag, base, host_ca=host_ca, extras=extras)
    try:
        _run(cmd, env=podman_env() if engine == "podman" else None, quiet=quiet,
             what=f"{engine} build")
    except ImageError as exc:
        if base is None:
            raise ImageError(f"{exc}\nIf no image registry is reachable from here, build "
                             "from a local base: --base local (make image BASE=local)") from exc
        raise
    return tag


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", choices=["image", "base"], default="image",
                        help="image (default) or only the local base image")
    parser.add_argument("--tag", default=DEFAULT_TAG, help=f"default {DEFAULT_TAG}")
    parser.add_argument("--base", default=None,
                        help=f"the base image ({BASE_ARG}); 'local' makes one with mmdebstrap; "
                             "default: the Dockerfile's python:3.11-slim-bookworm")
    parser.add_argument("--engine", choices=["auto", "docker", "podman"], default="auto")
    parser.add_argument("--extras", default="", help="STREAMDRIFT_EXTRAS, e.g. parquet")
    parser.add_argument("--no-host-ca", dest="host_ca", action="store_false",
                        help="do not mount the host's CA bundle into podman builds")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    try:
        if args.what == "base":
            print(make_local_base())
            return 0
        tag = build(args.tag, args.base, engine=args.engine, host_ca=args.host_ca,
                    extras=args.extras)
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"built {tag} in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
