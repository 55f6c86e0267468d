"""Java, Maven and the Kafka classpath of the local broker.

The broker runs from the ``kafka_2.13`` jars on Maven Central: ``mvn`` copies them, once,
from the dependencies of this package's ``pom.xml`` into a cache folder (about 45 MB):

* ``$STREAMDRIFT_KAFKA_CACHE`` when set;
* else ``<repository>/.cache/kafka`` when the package runs from a streamdrift checkout (the
  Makefile's ``kafka`` target and CI fill that folder);
* else ``$XDG_CACHE_HOME/streamdrift/kafka`` (default ``~/.cache/streamdrift/kafka``).

A cached classpath is stamped with the SHA-256 of the pom: changing the pom invalidates it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
import tomllib
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

from stream.broker.errors import BrokerError
from stream.broker.process import progress, tail

PACKAGE_DIR = Path(__file__).resolve().parent
#: the Maven project whose runtime dependencies are the broker's classpath (package data)
POM = PACKAGE_DIR / "pom.xml"
#: the broker's Log4j2 configuration (package data)
LOG4J2_CONFIG = PACKAGE_DIR / "log4j2.properties"

MIN_JAVA = 17
MAVEN_TIMEOUT_S = 1200.0

INSTALL_JAVA_HINT = (
    "install a Java 17+ runtime (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`; "
    "macOS: `brew install openjdk@17`) or point JAVA_HOME at one"
)
INSTALL_MAVEN_HINT = (
    "install Maven (Debian/Ubuntu: `apt-get install maven`; macOS: `brew install maven`); "
    "it is needed once, to download the Kafka jars from Maven Central"
)


def checkout_root() -> Path | None:
    """The root of the streamdrift repository this package is imported from, or None when
    it is not imported from a checkout (e.g. installed from a wheel)."""
    root = PACKAGE_DIR.parents[1]
    try:
        with open(root / "pyproject.toml", "rb") as f:
            project = tomllib.load(f).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return root if project.get("name") == "streamdrift" else None


def default_cache_dir() -> Path:
    """``<repository>/.cache/kafka`` in a checkout, else the user's cache folder."""
    root = checkout_root()
    if root is not None:
        return root / ".cache" / "kafka"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamdrift" / "kafka"


DEFAULT_CACHE_DIR = default_cache_dir()


# --------------------------------------------------------------------------------------------
# Tools: java, mvn
# --------------------------------------------------------------------------------------------

_java_checked: dict[str, int] = {}


def find_java() -> str:
    """Path of a Java 17+ ``java`` (JAVA_HOME first, then PATH); BrokerError if none."""
    candidates = []
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidates.append(str(Path(java_home) / "bin" / "java"))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(on_path)
    candidates = [c for c in candidates if os.path.isfile(c) and os.access(c, os.X_OK)]
    if not candidates:
        raise BrokerError(
            f"`java` not found (JAVA_HOME unset or invalid, none on PATH): {INSTALL_JAVA_HINT}"
        )
    java = candidates[0]
    if java not in _java_checked:
        try:
            out = subprocess.run(
                [java, "-version"], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BrokerError(f"cannot run {java} -version: {exc}; {INSTALL_JAVA_HINT}") from exc
        text = out.stderr + out.stdout
        m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
        if not m:
            raise BrokerError(f"cannot tell the version of {java}:\n{text.strip()}")
        major = int(m.group(1))
        if major == 1 and m.group(2):  # "1.8.0_392" style
            major = int(m.group(2))
        if major < MIN_JAVA:
            raise BrokerError(
                f"{java} is Java {major}; Kafka 4 needs {MIN_JAVA}+: {INSTALL_JAVA_HINT}"
            )
        _java_checked[java] = major
    return java


def java_major() -> int:
    """Major version of the java that find_java() picks."""
    return _java_checked[find_java()]


def find_mvn() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerError(
            f"`mvn` not found on PATH and the Kafka classpath is not cached yet: {INSTALL_MAVEN_HINT}"
        )
    return mvn


# --------------------------------------------------------------------------------------------
# Classpath (Maven -> <cache>/kafka_2.13-<version>/libs)
# --------------------------------------------------------------------------------------------


def _pom_property(name: str) -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).getroot().find(f"m:properties/m:{name}", ns)
    text = (node.text or "").strip() if node is not None else ""
    if not text:
        raise BrokerError(f"{POM} has no <{name}> property")
    return text


def kafka_version() -> str:
    """The Kafka version pinned in the pom."""
    return _pom_property("kafka.version")


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The classpath cache folder: ``override``, $STREAMDRIFT_KAFKA_CACHE or the default."""
    if override is not None:
        return Path(override).resolve()
    env = os.environ.get("STREAMDRIFT_KAFKA_CACHE")
    return Path(env).resolve() if env else DEFAULT_CACHE_DIR


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def _libs_dir(cache: Path) -> Path:
    return cache / f"kafka_2.13-{kafka_version()}" / "libs"


def cached_classpath(cache: str | os.PathLike[str] | None = None) -> Path | None:
    """The cached libs folder if it is complete and matches the current pom, else None."""
    libs = _libs_dir(cache_dir(cache))
    stamp = libs.parent / ".complete"
    try:
        if stamp.read_text().strip() == _pom_digest() and libs.is_dir():
            return libs
    except OSError:
        pass
    return None


def _slf4j_bindings(libs: Path) -> list[str]:
    """Jars that carry an SLF4J binding (1.x StaticLoggerBinder or 2.x service provider)."""
    found = []
    for jar in sorted(libs.glob("*.jar")):
        try:
            with zipfile.ZipFile(jar) as zf:
                names = set(zf.namelist())
        except zipfile.BadZipFile as exc:
            raise BrokerError(f"corrupt jar {jar}: {exc}") from exc
        if (
            "org/slf4j/impl/StaticLoggerBinder.class" in names
            or "META-INF/services/org.slf4j.spi.SLF4JServiceProvider" in names
        ):
            found.append(jar.name)
    return found


def _verify_libs(libs: Path, version: str) -> None:
    jars = {p.name for p in libs.glob("*.jar")}
    for needed in (f"kafka_2.13-{version}.jar", f"kafka-clients-{version}.jar"):
        if needed not in jars:
            raise BrokerError(f"Maven ran but {needed} is missing from {libs}")
    bindings = _slf4j_bindings(libs)
    if len(bindings) != 1:
        raise BrokerError(
            f"expected exactly one SLF4J binding on the classpath, found {bindings or 'none'}: "
            f"fix the dependencies/exclusions in {POM}"
        )


def fetch_classpath(cache: str | os.PathLike[str] | None = None, *, verbose: bool = True) -> Path:
    """Make sure the Kafka jars are in the cache; return the libs folder (idempotent).

    The first call runs ``mvn dependency:copy-dependencies`` (downloads from Maven Central
    into ~/.m2 and copies into the cache); later calls return at once.  Safe against
    concurrent callers (file lock).  Changing pom.xml invalidates the cache.
    """
    libs = cached_classpath(cache)
    if libs is not None:
        return libs
    root = cache_dir(cache)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        libs = cached_classpath(cache)  # another process may have finished meanwhile
        if libs is not None:
            return libs
        return _maven_fetch(root, verbose=verbose)


def _maven_fetch(root: Path, *, verbose: bool) -> Path:
    version = kafka_version()
    libs = _libs_dir(root)
    target = libs.parent
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f"libs.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    mvn = find_mvn()
    log_path = target / "mvn.log"
    cmd = [
        mvn,
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={tmp}",
    ]
    say = progress if verbose else (lambda _msg: None)
    say(f"fetching the Kafka {version} classpath with Maven into {libs}")
    say(f"first run only: Maven downloads about 60 MB into ~/.m2 (full log: {log_path})")
    t0 = time.monotonic()
    downloaded = 0
    total_bytes = 0.0
    latest = "-"
    last_beat = t0
    try:
        with open(log_path, "w") as log:
            log.write("$ " + shlex.join(cmd) + "\n")
            log.flush()
            proc = subprocess.Popen(
                cmd,
                cwd=target,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
            assert proc.stdout is not None
            # A watchdog: readline() blocks, so the timeout is enforced from another thread.
            timer = threading.Timer(MAVEN_TIMEOUT_S, proc.kill)
            timer.daemon = True
            timer.start()
            try:
                for raw in proc.stdout:
                    log.write(raw)
                    line = _ANSI.sub("", raw).strip()
                    if line.startswith("[INFO] "):
                        line = line[7:]
                    m = _DOWNLOADED.match(line)
                    if m:
                        downloaded += 1
                        size = _size_bytes(m.group(3), m.group(4))
                        total_bytes += size
                        latest = m.group(2)
                        if m.group(2).endswith(".jar") and size >= 1e6:
                            say(f"  downloaded {m.group(2)} ({m.group(3)} {m.group(4)})")
                    elif line.startswith(("[ERROR]", "[FATAL]")):
                        say("  " + line)
                    now = time.monotonic()
                    if now - last_beat >= 5:
                        last_beat = now
                        say(
                            f"  ... {now - t0:.0f}s: {downloaded} files, {total_bytes / 1e6:.1f} MB "
                            f"downloaded (latest {latest})"
                        )
                rc = proc.wait()
            finally:
                timer.cancel()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BrokerError(f"cannot run Maven ({mvn}): {exc}") from exc
    if rc != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        why = "timed out" if time.monotonic() - t0 >= MAVEN_TIMEOUT_S else f"exited with {rc}"
        raise BrokerError(
            f"Maven {why} while fetching the Kafka {version} classpath. Is Maven Central "
            f"reachable (a proxy goes in ~/.m2/settings.xml)? Last lines of {log_path}:\n"
            + tail(log_path, 30)
        )
    try:
        _verify_libs(tmp, version)
    except BrokerError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    (target / ".complete").write_text(_pom_digest() + "\n")
    jars = list(libs.glob("*.jar"))
    size = sum(j.stat().st_size for j in jars) / 1e6
    say(f"classpath ready: {len(jars)} jars, {size:.0f} MB, in {time.monotonic() - t0:.1f}s")
    return libs


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_DOWNLOADED = re.compile(r"Downloaded from (\S+): \S*/([^/\s]+) \(([\d.]+) (B|kB|MB|GB)\b")
_UNITS = {"B": 1.0, "kB": 1e3, "MB": 1e6, "GB": 1e9}


def _size_bytes(number: str, unit: str) -> float:
    return float(number) * _UNITS.get(unit, 1.0)


def local_broker_unavailable_reason(cache: str | os.PathLike[str] | None = None) -> str | None:
    """None when a LocalBroker can start here (java 17+, and the cached classpath or mvn);
    otherwise why not.  Cheap: runs at most ``java -version``."""
    try:
        find_java()
        if cached_classpath(cache) is None:
            find_mvn()
    except BrokerError as exc:
        return str(exc)
    return None
