#!/usr/bin/env python3
"""A real Apache Kafka broker on loopback, without Docker.

One KRaft node (``process.roles=broker,controller``) from the ``kafka_2.13`` jars on Maven
Central, run as a plain ``java`` process.  Needs Java 17+ always, and Maven (``mvn``) once,
to fetch the classpath into ``<repo>/.cache/kafka/`` (git-ignored; about 45 MB).

As a library (stdlib + kafka-python only)::

    from broker import LocalBroker        # deploy/ is not a package: import it by file path
    with LocalBroker(partitions=3) as kafka:
        kafka.create_topic("features", partitions=3)
        produce_to(kafka.bootstrap_servers)

As a script::

    python deploy/kafka/broker.py fetch                  # only fetch the classpath (Maven)
    python deploy/kafka/broker.py run [--port 9092]      # foreground broker until Ctrl-C
    python deploy/kafka/broker.py check                  # start, round-trip a message, stop

Environment:
    STREAMDRIFT_KAFKA_CACHE      classpath cache folder (default: <repo>/.cache/kafka)
    STREAMDRIFT_KAFKA_JVM_OPTS   extra JVM options for the broker, appended last
    JAVA_HOME                    used before ``java`` on PATH
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
POM = HERE / "pom.xml"
LOG4J2_CONFIG = HERE / "log4j2.properties"
DEFAULT_CACHE_DIR = REPO_ROOT / ".cache" / "kafka"

READY_LINE = "Kafka Server started"
# Logged before a failing broker exits; the JVM can then take ~15 s more to die.
FATAL_LINES = (
    "Exiting Kafka due to fatal exception",
    "Fatal error during broker startup",
    "Fatal error during controller startup",
)
MIN_JAVA = 17
BROKER_JVM_OPTS = (
    "-Xms512m",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)
TOOL_JVM_OPTS = (
    "-Xmx256m",
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseSerialGC",
    "-Djava.awt.headless=true",
)
MAVEN_TIMEOUT_S = 1200.0
FORMAT_TIMEOUT_S = 120.0

INSTALL_JAVA_HINT = (
    "install a Java 17+ runtime (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`; "
    "macOS: `brew install openjdk@17`) or point JAVA_HOME at one"
)
INSTALL_MAVEN_HINT = (
    "install Maven (Debian/Ubuntu: `apt-get install maven`; macOS: `brew install maven`); "
    "it is needed once, to download the Kafka jars from Maven Central"
)


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started or reached."""


def _progress(msg: str) -> None:
    print(f"[kafka] {msg}", file=sys.stderr, flush=True)


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
# Classpath (Maven -> .cache/kafka/kafka_2.13-<version>/libs)
# --------------------------------------------------------------------------------------------


def _pom_property(name: str) -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).getroot().find(f"m:properties/m:{name}", ns)
    if node is None or not (node.text or "").strip():
        raise BrokerError(f"{POM} has no <{name}> property")
    return node.text.strip()


def kafka_version() -> str:
    """The Kafka version pinned in deploy/kafka/pom.xml."""
    return _pom_property("kafka.version")


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
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
    say = _progress if verbose else (lambda _msg: None)
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
            + _tail(log_path, 30)
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


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * lines))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return f"  ({path} does not exist)"
    out = data.splitlines()[-lines:]
    return "\n".join("  " + line for line in out) if out else f"  ({path} is empty)"


def _first_errors(path: Path, limit: int = 12) -> str:
    """The first ERROR/FATAL lines and 'Caused by:' lines of a Kafka log."""
    out: list[str] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if " ERROR " in line or " FATAL " in line or line.startswith("Caused by:"):
                    out.append("  " + line.rstrip()[:400])
                    if len(out) >= limit:
                        break
    except OSError:
        return ""
    return "\n".join(out)


def _free_ports(count: int, prefer: tuple[int, ...] = ()) -> list[int]:
    """Distinct free loopback ports; each preferred port is used if it can be bound."""
    socks: list[socket.socket] = []
    try:
        for i in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            # as Kafka's own server socket: TIME_WAIT leftovers do not count as "in use"
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            want = prefer[i] if i < len(prefer) else 0
            try:
                s.bind(("127.0.0.1", want))
            except OSError:
                s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _random_cluster_id() -> str:
    """What ``kafka.tools.StorageTool random-uuid`` prints (Kafka's Uuid.randomUuid()),
    without the 1 s JVM start: 16 random bytes, URL-safe base64, unpadded, no leading '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _property_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _escape_property(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _parent_death_signal():
    """A preexec_fn doing Linux prctl(PR_SET_PDEATHSIG, SIGTERM): the JVM then gets SIGTERM
    even when its Python parent dies without running atexit (SIGKILL, unhandled SIGTERM).
    None where that is not available.  libc is loaded here, before the fork."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 == PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


# --------------------------------------------------------------------------------------------
# Client helpers (kafka-python, imported lazily so that `fetch` works without it)
# --------------------------------------------------------------------------------------------


def admin_client(
    bootstrap_servers: str, timeout: float = 30.0, client_config: Mapping[str, Any] | None = None
):
    """A kafka-python KafkaAdminClient whose bootstrap and requests give up after ``timeout``."""
    from kafka import KafkaAdminClient

    ms = max(1000, int(timeout * 1000))
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "client_id": "streamdrift-local-broker",
        "request_timeout_ms": ms,
        "bootstrap_timeout_ms": ms,
    }
    config.update(client_config or {})
    return KafkaAdminClient(**config)


def create_topic(
    bootstrap_servers: str,
    name: str,
    partitions: int = 1,
    *,
    replication_factor: int = 1,
    timeout: float = 30.0,
    client_config: Mapping[str, Any] | None = None,
) -> str:
    """Create a topic on any broker and wait until every partition has a leader.

    An existing topic is fine (its partition count is then left as it is).  Returns the name.
    """
    from kafka.errors import TopicAlreadyExistsError

    admin = admin_client(bootstrap_servers, timeout, client_config)
    try:
        result = admin.create_topics(
            {
                name: {
                    "num_partitions": int(partitions),
                    "replication_factor": int(replication_factor),
                }
            },
            timeout_ms=int(timeout * 1000),
            raise_errors=False,
        )
        for topic in result.get("topics", []):
            code = topic.get("error_code", 0)
            if code not in (0, TopicAlreadyExistsError.errno):
                raise BrokerError(
                    f"creating topic {name!r} failed: error {code} {topic.get('error_message')}"
                )
        admin.wait_for_topics([name], timeout_ms=int(timeout * 1000))
    finally:
        admin.close()
    return name


def delete_topics(
    bootstrap_servers: str,
    names: list[str],
    *,
    timeout: float = 30.0,
    client_config: Mapping[str, Any] | None = None,
) -> None:
    """Delete topics; missing ones are ignored."""
    if not names:
        return
    admin = admin_client(bootstrap_servers, timeout, client_config)
    try:
        admin.delete_topics(list(names), timeout_ms=int(timeout * 1000), raise_errors=False)
    finally:
        admin.close()


# --------------------------------------------------------------------------------------------
# The broker
# --------------------------------------------------------------------------------------------


class LocalBroker:
    """One Kafka node (broker + KRaft controller) as a child ``java`` process on 127.0.0.1.

    ``port``/``controller_port`` 0 pick free loopback ports.  ``extra_properties`` is merged
    last into server.properties (a value of None deletes a default key; ``{port}`` and
    ``{controller_port}`` in a value become the ports chosen at start), e.g. to replace the
    listeners for SASL/SSL tests; ``client_config`` is then passed to the kafka-python admin
    client used for readiness and :meth:`create_topic` (security settings).  ``format_args``
    are appended to ``kafka.tools.StorageTool format``, e.g. ``["--add-scram",
    "SCRAM-SHA-512=[name=admin,password=...]"]`` to create SCRAM credentials.  With
    ``workdir=None`` a fresh temp folder is used and deleted by :meth:`stop`; an explicit
    workdir is kept, and its formatted data is reused while the controller endpoint is the same.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        port: int = 0,
        controller_port: int = 0,
        partitions: int = 1,
        extra_properties: Mapping[str, Any] | None = None,
        *,
        client_config: Mapping[str, Any] | None = None,
        format_args: Sequence[str] = (),
        cache: str | os.PathLike[str] | None = None,
        verbose: bool = False,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self._workdir_arg = Path(workdir).resolve() if workdir is not None else None
        self.workdir: Path | None = self._workdir_arg
        self.requested_port = int(port)
        self.requested_controller_port = int(controller_port)
        self.partitions = int(partitions)
        self.extra_properties = dict(extra_properties or {})
        self.client_config = dict(client_config or {})
        self.format_args = [str(a) for a in format_args]
        self.cache = cache
        self.verbose = verbose
        self.port: int | None = None
        self.controller_port: int | None = None
        self.properties: dict[str, str] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.timings: dict[str, float] = {}
        self._console: IO[bytes] | None = None
        self._own_workdir = False
        self._atexit_registered = False

    # -- public API ----------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise BrokerError("broker not started")
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        return self.workdir / "logs" / "server.log" if self.workdir else None

    def fetch_classpath(self) -> Path:
        """The cached Kafka libs folder, fetching it with Maven the first time."""
        t0 = time.monotonic()
        libs = fetch_classpath(self.cache, verbose=True)
        self.timings["fetch"] = time.monotonic() - t0
        return libs

    def start(self, timeout: float = 90.0) -> LocalBroker:
        """Format the storage, launch the JVM and wait until a client gets metadata back.

        ``timeout`` covers format + launch + readiness, not the one-off Maven fetch.
        Raises BrokerError (with the tail of the broker's logs) on failure; nothing is left
        running then.
        """
        if self.running:
            raise BrokerError(
                f"broker already running (pid {self.pid}) at {self.bootstrap_servers}"
            )
        java = find_java()
        libs = self.fetch_classpath()
        t0 = time.monotonic()
        try:
            self._prepare_workdir()
            attempts = 3  # another process may grab a free port we picked before Kafka binds it
            for attempt in range(1, attempts + 1):
                self._choose_ports()
                self._write_properties()
                self._format(java, libs)
                self._launch(java, libs)
                try:
                    self._wait_ready(t0 + timeout)
                    break
                except BrokerError:
                    self._kill(3.0)  # a JVM that failed to start can hang in its exit hooks
                    if not (
                        attempt < attempts
                        and time.monotonic() < t0 + timeout
                        and self._lost_auto_port()
                    ):
                        raise
                    if self.verbose:
                        _progress("a picked port was taken meanwhile; retrying on other ports")
                    self._wipe_data()  # the voter set remembers the controller port
        except BrokerError as exc:
            kept = self._own_workdir and self.workdir is not None
            if kept:  # keep the logs of a failed start to read; a retry uses a new temp dir
                assert self.workdir is not None
                shutil.rmtree(self.workdir / "data", ignore_errors=True)
                kept_dir, self._own_workdir, self.workdir = self.workdir, False, None
            self.stop(timeout=5.0)
            if kept:
                raise BrokerError(f"{exc}\n(logs kept in {kept_dir / 'logs'})") from exc
            raise
        except BaseException:  # KeyboardInterrupt and the like: clean up everything
            self.stop(timeout=5.0)
            raise
        self.timings["start"] = time.monotonic() - t0
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the broker, wait, SIGKILL after ``timeout``; idempotent."""
        t0 = time.monotonic()
        was_running = self.running
        self._kill(timeout)
        if self._atexit_registered:
            atexit.unregister(self._atexit_stop)
            self._atexit_registered = False
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
            self._own_workdir = False
        if was_running:
            self.timings["stop"] = time.monotonic() - t0

    def create_topic(self, name: str, partitions: int = 1, timeout: float = 30.0) -> str:
        """Create a topic with replication factor 1 and wait for its leaders; an existing
        topic is fine (its partition count is then left as it is).  Returns the name."""
        return create_topic(
            self.bootstrap_servers,
            name,
            partitions,
            timeout=timeout,
            client_config=self.client_config,
        )

    def __enter__(self) -> LocalBroker:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running pid={self.pid} at 127.0.0.1:{self.port}" if self.running else "stopped"
        return f"<LocalBroker {state} workdir={self.workdir}>"

    # -- internals -----------------------------------------------------------------------------

    def _admin(self, timeout: float):
        return admin_client(self.bootstrap_servers, timeout, self.client_config)

    def _prepare_workdir(self) -> None:
        if self._workdir_arg is None:
            if self.workdir is None:
                self.workdir = Path(tempfile.mkdtemp(prefix="streamdrift-kafka-"))
                self._own_workdir = True
        else:
            self.workdir = self._workdir_arg
        assert self.workdir is not None
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)

    def _format_state(self) -> dict[str, Any]:
        assert self.workdir is not None
        try:
            return json.loads((self.workdir / "format.json").read_text())
        except (OSError, ValueError):
            return {}

    def _choose_ports(self) -> None:
        previous = self._format_state()
        prefer = (
            self.requested_port or int(previous.get("port", 0)),
            self.requested_controller_port or int(previous.get("controller_port", 0)),
        )
        self.port, self.controller_port = _free_ports(2, prefer)
        for wanted, got, what in (
            (self.requested_port, self.port, "port"),
            (self.requested_controller_port, self.controller_port, "controller_port"),
        ):
            if wanted and wanted != got:
                raise BrokerError(f"{what} {wanted} on 127.0.0.1 is already in use")
        if self.port == self.controller_port:
            raise BrokerError("port and controller_port must differ")

    def _lost_auto_port(self) -> bool:
        """Did the broker fail to bind a port that we picked (not one the caller asked for)?"""
        assert self.log_path is not None
        auto = set()
        if not self.requested_port:
            auto.add(self.port)
        if not self.requested_controller_port:
            auto.add(self.controller_port)
        failed = re.findall(r"failed to bind to [^\s:]*:(\d+)", _first_errors(self.log_path, 40))
        return any(int(p) in auto for p in failed)

    def _default_properties(self) -> dict[str, str]:
        assert self.workdir is not None
        host = "127.0.0.1"
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{host}:{self.port},CONTROLLER://{host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{host}:{self.port},CONTROLLER://{host}:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": str(self.partitions),
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            # one node: every internal topic has one replica
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "group.initial.rebalance.delay.ms": "0",
            # small machine, small heap
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "num.replica.fetchers": "1",
            "background.threads": "2",
            "log.cleaner.threads": "1",
            # Kafka requires strictly more than 1 MiB per cleaner thread (default 128 MiB)
            "log.cleaner.dedupe.buffer.size": "2097152",
            "log.cleaner.io.buffer.size": "262144",
        }

    def _write_properties(self) -> None:
        assert self.workdir is not None
        props = self._default_properties()
        for key, value in self.extra_properties.items():
            if value is None:
                props.pop(key, None)
            else:
                props[key] = (
                    _property_value(value)
                    .replace("{port}", str(self.port))
                    .replace("{controller_port}", str(self.controller_port))
                )
        self.properties = props
        lines = ["# written by deploy/kafka/broker.py; regenerated on every start"]
        lines += [f"{k}={_escape_property(v)}" for k, v in props.items()]
        (self.workdir / "server.properties").write_text("\n".join(lines) + "\n")

    def _wipe_data(self) -> None:
        assert self.workdir is not None
        shutil.rmtree(self.workdir / "data", ignore_errors=True)
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "format.json").unlink()

    def _format(self, java: str, libs: Path) -> None:
        assert self.workdir is not None
        data = Path(self.properties.get("log.dirs", str(self.workdir / "data")).split(",")[0])
        quorum = {
            k: self.properties.get(k)
            for k in (
                "controller.quorum.bootstrap.servers",
                "controller.quorum.voters",
                "listeners",
            )
        }
        if self.format_args:  # a digest only: the arguments may hold passwords
            quorum["format_args"] = hashlib.sha256("\0".join(self.format_args).encode()).hexdigest()
        state = self._format_state()
        if (data / "meta.properties").exists():
            if state.get("quorum") == quorum:
                self.timings["format"] = 0.0
                return  # reuse: same controller endpoint, same cluster
            self._wipe_data()
        t0 = time.monotonic()
        cluster_id = _random_cluster_id()
        cmd = [
            java,
            *TOOL_JVM_OPTS,
            *self._log_opts(self.workdir / "logs" / "tools"),
            "-cp",
            str(libs / "*"),
        ]
        cmd += [
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.workdir / "server.properties"),
        ]
        if (
            "controller.quorum.bootstrap.servers" in self.properties
            and "controller.quorum.voters" not in self.properties
        ):
            cmd.append("--standalone")  # a hard error together with controller.quorum.voters
        cmd += self.format_args
        try:
            out = subprocess.run(
                cmd,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=FORMAT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(
                f"kafka.tools.StorageTool format timed out after {FORMAT_TIMEOUT_S:.0f}s"
            ) from exc
        if out.returncode != 0:
            text = re.sub(r"(password=)[^,\]\s]*", r"\1***", out.stdout + out.stderr)
            raise BrokerError(
                f"kafka.tools.StorageTool format failed (exit {out.returncode}):\n"
                + "\n".join("  " + x for x in text.strip().splitlines()[-30:])
            )
        (self.workdir / "format.json").write_text(
            json.dumps(
                {
                    "cluster_id": cluster_id,
                    "quorum": quorum,
                    "port": self.port,
                    "controller_port": self.controller_port,
                },
                indent=2,
            )
        )
        self.timings["format"] = time.monotonic() - t0

    @staticmethod
    def _log_opts(logs_dir: Path) -> list[str]:
        return [f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}", f"-Dkafka.logs.dir={logs_dir}"]

    def _launch(self, java: str, libs: Path) -> None:
        assert self.workdir is not None
        logs = self.workdir / "logs"
        # A fresh server.log per launch: readiness looks for the line in this run's log.
        for name in ("server.log", "console.log"):
            p = logs / name
            if p.exists():
                p.replace(logs / (name + ".previous"))
        extra = shlex.split(os.environ.get("STREAMDRIFT_KAFKA_JVM_OPTS", ""))
        cmd = [java, *BROKER_JVM_OPTS, *self._log_opts(logs), *extra, "-cp", str(libs / "*")]
        cmd += ["kafka.Kafka", str(self.workdir / "server.properties")]
        self._console = open(logs / "console.log", "wb")  # closed in _kill
        main_thread = threading.current_thread() is threading.main_thread()
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            # Own session/process group: a terminal Ctrl-C reaches only the Python parent,
            # which then stops the broker itself.
            start_new_session=True,
            # PDEATHSIG fires when the forking *thread* exits, so only from the main thread.
            preexec_fn=_parent_death_signal() if main_thread else None,
        )
        self.pid = self.proc.pid
        if not self._atexit_registered:
            atexit.register(self._atexit_stop)
            self._atexit_registered = True
        if self.verbose:
            _progress(f"launched kafka.Kafka pid {self.pid}, logs in {logs}")

    def _failure(self, what: str) -> BrokerError:
        assert self.workdir is not None
        logs = self.workdir / "logs"
        errors = _first_errors(logs / "server.log")
        return BrokerError(
            f"{what}\n"
            + (f"--- first errors in {logs / 'server.log'} ---\n{errors}\n" if errors else "")
            + f"--- tail of {logs / 'server.log'} ---\n{_tail(logs / 'server.log', 30)}"
            f"\n--- tail of {logs / 'console.log'} (JVM stdout/stderr) ---\n"
            f"{_tail(logs / 'console.log', 15)}"
        )

    def _wait_ready(self, deadline: float) -> None:
        assert self.proc is not None and self.log_path is not None
        seen = False
        buf = ""
        pos = 0
        last_error: Exception | None = None
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise self._failure(
                    f"the Kafka broker (pid {self.pid}) exited with code {rc} before it was ready"
                )
            if not seen:
                try:
                    with open(self.log_path, "rb") as f:
                        f.seek(pos)
                        chunk = f.read()
                        pos = f.tell()
                except FileNotFoundError:
                    chunk = b""
                buf = buf[-200:] + chunk.decode("utf-8", "replace")
                seen = READY_LINE in buf
                fatal = next((x for x in FATAL_LINES if x in buf), None)
                if fatal and not seen:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.proc.wait(3)
                    raise self._failure(
                        f"the Kafka broker (pid {self.pid}) failed to start: {fatal!r}"
                    )
            if seen:
                remaining = deadline - time.monotonic()
                try:
                    admin = self._admin(min(5.0, max(1.0, remaining)))
                    try:
                        info = admin.describe_cluster()
                    finally:
                        admin.close()
                    if info.get("brokers"):
                        return
                    last_error = BrokerError(f"metadata lists no brokers: {info}")
                except Exception as exc:  # anything means "not yet"
                    last_error = exc
            if time.monotonic() >= deadline:
                what = (
                    f"the broker logged {READY_LINE!r} but a metadata request to "
                    f"{self.bootstrap_servers} failed: {last_error!r}"
                    if seen
                    else f"no {READY_LINE!r} line in {self.log_path}"
                )
                raise self._failure(f"Kafka broker not ready in time: {what}")
            time.sleep(0.1 if not seen else 0.5)

    def _kill(self, timeout: float = 20.0) -> None:
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
            self.proc = None
        if self._console is not None:
            self._console.close()
            self._console = None

    def _atexit_stop(self) -> None:
        self.stop(timeout=10.0)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _cmd_fetch(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    libs = fetch_classpath(args.cache)
    print(f"Kafka {kafka_version()} classpath: {libs} ({time.monotonic() - t0:.1f}s)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    stop_requested = threading.Event()
    starting = True

    def on_signal(signum: int, _frame: object) -> None:
        stop_requested.set()
        if starting:
            raise KeyboardInterrupt  # abort start(); LocalBroker.start cleans up

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    broker = LocalBroker(
        workdir=args.workdir,
        port=args.port,
        controller_port=args.controller_port,
        partitions=args.partitions,
        cache=args.cache,
        verbose=True,
    )
    try:
        broker.start(timeout=args.timeout)
    except KeyboardInterrupt:
        print("interrupted while starting; stopped", file=sys.stderr)
        return 130
    starting = False
    print(f"Kafka {kafka_version()} broker pid {broker.pid}, logs in {broker.log_path}")
    print(f"bootstrap.servers={broker.bootstrap_servers}")
    print(f"ready ({broker.timings['start']:.1f}s); Ctrl-C or SIGTERM stops it", flush=True)
    try:
        while not stop_requested.wait(0.5):
            if not broker.running:
                rc = broker.proc.returncode if broker.proc else None
                print(
                    f"the broker exited on its own (code {rc}); see {broker.log_path}",
                    file=sys.stderr,
                )
                broker.stop()
                return 1
    finally:
        print("stopping...", flush=True)
        broker.stop()
    print(f"stopped in {broker.timings.get('stop', 0.0):.1f}s")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    timings: list[tuple[str, float]] = []
    t_all = time.monotonic()
    broker = LocalBroker(partitions=1, cache=args.cache)
    failure = None
    try:
        _check_round_trip(broker, timings, args.timeout)
    except Exception as exc:  # report any failure, after stopping the broker
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        pid = broker.pid
        broker.stop()
    if "stop" in broker.timings:
        timings.append(("stop broker", broker.timings["stop"]))
    if pid is not None and _pid_alive(pid):
        failure = failure or f"java pid {pid} still alive after stop()"
    timings.append(("total", time.monotonic() - t_all))
    print(f"Kafka {kafka_version()}, Java {java_major()}, timings:")
    for name, secs in timings:
        print(f"  {name:<32} {secs:6.2f}s")
    if failure:
        print(f"check FAILED: {failure}", file=sys.stderr)
        return 1
    print("check ok")
    return 0


def _check_round_trip(
    broker: LocalBroker, timings: list[tuple[str, float]], timeout: float
) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    t0 = time.monotonic()
    broker.fetch_classpath()
    timings.append(("fetch classpath", time.monotonic() - t0))
    broker.start(timeout=timeout)
    timings.append(("  format storage", broker.timings.get("format", 0.0)))
    timings.append(("start broker (format to ready)", broker.timings["start"]))
    print(f"broker ready on {broker.bootstrap_servers} (pid {broker.pid})", flush=True)

    topic = f"streamdrift-check-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    broker.create_topic(topic, partitions=1)
    timings.append(("create topic", time.monotonic() - t0))

    payload = f"hello from streamdrift {uuid.uuid4()}".encode()
    t0 = time.monotonic()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    try:
        meta = producer.send(topic, payload).get(timeout=30)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
    timings.append(("produce 1 message", time.monotonic() - t0))

    t0 = time.monotonic()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap_servers,
        group_id=f"check-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    got = None
    try:
        deadline = time.monotonic() + 30
        while got is None and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    got = rec.value
    finally:
        consumer.close()
    timings.append(("consume 1 message (group join)", time.monotonic() - t0))
    if got != payload:
        raise BrokerError(f"consumed {got!r} within 30s, expected {payload!r}")
    print(f"round trip ok: {topic}[{meta.partition}]@{meta.offset}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="broker.py",
        description="A real Apache Kafka broker (KRaft, one node) on 127.0.0.1 without Docker.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--cache",
        metavar="DIR",
        help="classpath cache folder (default: $STREAMDRIFT_KAFKA_CACHE or <repo>/.cache/kafka)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "fetch",
        parents=[common],
        help="only fetch the Kafka classpath with Maven (cached)",
        description="Fetch the Kafka jars with Maven into the cache; no-op when cached.",
    )
    p.set_defaults(func=_cmd_fetch)

    p = sub.add_parser(
        "run",
        parents=[common],
        help="run a broker in the foreground until SIGINT/SIGTERM",
        description="Start a broker, print its bootstrap address and 'ready', "
        "stay in the foreground until Ctrl-C/SIGTERM, then stop it.",
    )
    p.add_argument(
        "--port", type=int, default=9092, help="client port (0 = any free port; default 9092)"
    )
    p.add_argument(
        "--controller-port", type=int, default=0, help="KRaft controller port (default: free)"
    )
    p.add_argument(
        "--partitions", type=int, default=1, help="num.partitions for auto-created topics"
    )
    p.add_argument("--workdir", help="keep data and logs here (default: temp dir, deleted on stop)")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "check",
        parents=[common],
        help="start on a free port, round-trip one message, stop",
        description="Smoke test: start a broker on a free port, create a topic, "
        "produce and consume one message, stop; prints timings.",
    )
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness")
    p.set_defaults(func=_cmd_check)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
