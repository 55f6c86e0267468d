"""``LocalBroker``: one Kafka node (broker + KRaft controller) as a child ``java`` process on
127.0.0.1, from the classpath of :mod:`stream.broker.classpath`."""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from stream.broker.admin import admin_client, create_topic
from stream.broker.classpath import LOG4J2_CONFIG, fetch_classpath, find_java
from stream.broker.errors import BrokerError
from stream.broker.process import first_errors, free_ports, parent_death_signal, progress, tail

READY_LINE = "Kafka Server started"
# Logged before a failing broker exits; the JVM can then take ~15 s more to die.
FATAL_LINES = (
    "Exiting Kafka due to fatal exception",
    "Fatal error during broker startup",
    "Fatal error during controller startup",
)
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
FORMAT_TIMEOUT_S = 120.0


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
                        progress("a picked port was taken meanwhile; retrying on other ports")
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
        self.port, self.controller_port = free_ports(2, prefer)
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
        failed = re.findall(r"failed to bind to [^\s:]*:(\d+)", first_errors(self.log_path, 40))
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
        lines = ["# written by stream.broker (local.py); regenerated on every start"]
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
            preexec_fn=parent_death_signal() if main_thread else None,
        )
        self.pid = self.proc.pid
        if not self._atexit_registered:
            atexit.register(self._atexit_stop)
            self._atexit_registered = True
        if self.verbose:
            progress(f"launched kafka.Kafka pid {self.pid}, logs in {logs}")

    def _failure(self, what: str) -> BrokerError:
        assert self.workdir is not None
        logs = self.workdir / "logs"
        errors = first_errors(logs / "server.log")
        return BrokerError(
            f"{what}\n"
            + (f"--- first errors in {logs / 'server.log'} ---\n{errors}\n" if errors else "")
            + f"--- tail of {logs / 'server.log'} ---\n{tail(logs / 'server.log', 30)}"
            f"\n--- tail of {logs / 'console.log'} (JVM stdout/stderr) ---\n"
            f"{tail(logs / 'console.log', 15)}"
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
