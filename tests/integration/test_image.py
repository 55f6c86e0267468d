"""The container image of deploy/Dockerfile, built and run with podman (no Docker engine).

The image is built from a Debian 12 base image made on this machine (no image registry is
reachable: ``deploy/image/build.py --base local``), or a build of the same inputs is reused
(:func:`tests.support.images.streamdrift_image`). Then it is run as users run it, with its
default command (``streamdrift run -c /etc/streamdrift/config.yaml``), a configuration and
a baseline file mounted read-only, on the host's network so that it reaches the test broker
on loopback. It must: run as the unprivileged user 10001; consume the topic; serve /metrics
that ``promtool check metrics`` accepts; raise no alarm on clean events and raise one when
drift is injected; pass its own HEALTHCHECK (run by podman in the container); stop with exit
status 0 within 10 s of a SIGTERM (as PID 1, without an init process, as Kubernetes runs
it).

Under CI (``CI`` set) a missing podman, runc or mmdebstrap fails these tests (``make test``
installs them there); elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.configs import m1_config, write_config
from tests.support.e2e import run_baseline
from tests.support.events import CLEAN, MODEL, SHIFTED, m1_events
from tests.support.images import ContainerRun, image_size, podman, streamdrift_image
from tests.support.kafka import produce
from tests.support.metrics import sample, samples
from tests.support.policy import require_tool
from tests.support.ports import free_port
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

N_CLEAN, N_DRIFT = 5_000, 5_000
UID = GID = 10001
#: the image must stay below this (it is about 590 MB: numpy, scipy, numba and llvmlite)
MAX_IMAGE_BYTES = 700_000_000
#: seconds from `podman run` until /metrics answers, with a pre-built baseline
MAX_START_S = 30
STOP_S = 10


@pytest.fixture(scope="module")
def image() -> str:
    name, built_in = streamdrift_image()
    took = "reused a build of the same inputs" if built_in is None else f"built in {built_in:.0f} s"
    print(f"\nimage {name}: {took}, {image_size(name) / 1e6:.0f} MB")
    return name


def _alarms(text: str) -> dict[str, float]:
    """feature -> streamdrift_drift_alarms_total summed over its detectors."""
    out: dict[str, float] = {}
    for (name, labels), value in samples(text).items():
        if name == "streamdrift_drift_alarms_total":
            feature = dict(labels)["feature"]
            out[feature] = out.get(feature, 0.0) + value
    return out


def test_image_is_small_non_root_and_keeps_its_healthcheck(image: str) -> None:
    size = image_size(image)
    assert size < MAX_IMAGE_BYTES, f"the image is {size / 1e6:.0f} MB"
    user = podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
    assert user == f"{UID}:{GID}"
    # the docker image format keeps HEALTHCHECK (podman's default OCI format drops it)
    health = podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}",
                    image).stdout
    assert "STREAMDRIFT_HEALTHCHECK_URL" in health, health
    # the final layer holds no compiler, no pip, no pip cache, no test suites
    probe = ("import glob, os, shutil, sys; "
             "found = [p for p in ('gcc', 'cc', 'c++', 'pip', 'pip3') if shutil.which(p)]; "
             "found += glob.glob('/root/.cache/pip') + glob.glob('/opt/streamdrift/lib/*/site-packages/*/tests'); "
             "found += [m for m in ('pip', 'setuptools') if __import__('importlib.util').util.find_spec(m)]; "
             "print(os.getuid(), os.getgid(), sys.version.split()[0], *found)")
    out = podman("run", "--rm", "--network=host", "--entrypoint", "python", image, "-c",
                 probe).stdout.split()
    assert out[:2] == [str(UID), str(GID)], out
    assert out[2].startswith("3.11."), out
    assert out[3:] == [], f"left in the image: {out[3:]}"


def test_image_consumes_detects_drift_serves_metrics_and_stops_on_sigterm(
        image: str, kafka_bootstrap: str, make_topic, tmp_path: Path) -> None:
    topic = make_topic(partitions=1)
    port = free_port()

    # the baseline is built once on the host: the container only loads it
    build = tmp_path / "build"
    build.mkdir()
    (build / "reference.jsonl").write_bytes(b"\n".join(m1_events(99, [(10_000, CLEAN)])))
    settings = {"bootstrap": kafka_bootstrap, "topic": topic, "group": f"g-{topic}",
                "port": port, "kafka": {"max_poll_records": 1000, "poll_timeout_ms": 200}}
    etc = tmp_path / "etc"  # mounted at /etc/streamdrift, read-only
    etc.mkdir()
    run_baseline(write_config(build / "baseline.yaml", m1_config(**settings)),
                 etc / f"{MODEL}.baseline.json", timeout=180)
    write_config(etc / "config.yaml",
                 m1_config(**settings, baseline={"file": f"{MODEL}.baseline.json"}))
    etc.chmod(0o755)  # the container's user is not root
    for f in etc.iterdir():
        f.chmod(0o644)

    produce(kafka_bootstrap, topic, m1_events(1, [(N_CLEAN, CLEAN)]), linger_ms=10)
    run = ContainerRun(image, log=tmp_path / "container.log", port=port,
                       volumes={etc: "/etc/streamdrift:ro"})
    try:
        started_in = run.wait_serving(timeout=MAX_START_S * 4)
        health = run.healthcheck()
        assert health.returncode == 0, f"HEALTHCHECK: {health.stdout}{health.stderr}"
        ids = run.process_ids()
        assert ids == {"Uid": [UID] * 4, "Gid": [GID] * 4}, ids  # real, effective, saved, fs
        # PID 1 is streamdrift itself (no init): it must handle SIGTERM on its own
        cmdline = podman("exec", run.name, "cat", "/proc/1/cmdline").stdout.split("\0")
        assert any(arg.endswith("/streamdrift") for arg in cmdline[:2]), cmdline

        clean = run.wait_consumed(N_CLEAN, timeout=120)
        assert sample(samples(clean), "streamdrift_events_processed_total",
                      model=MODEL) == N_CLEAN
        assert not any(_alarms(clean).values()), f"alarms on clean events: {_alarms(clean)}"

        produce(kafka_bootstrap, topic, m1_events(2, [(N_DRIFT, SHIFTED)]), linger_ms=10)
        def x1_alarmed() -> str | None:
            text = run.scrape()
            return text if _alarms(text).get("x1") else None

        drifted = wait_for(x1_alarmed, 120, "an alarm on the drifted feature x1", interval=0.5,
                           alive=run.check_alive, retry=(OSError,), details=run.log_tail)
        run.wait_consumed(N_CLEAN + N_DRIFT, timeout=120)
        assert run.logs("drift alarm"), run.log_tail()

        promtool = require_tool("promtool")
        check = subprocess.run([promtool, "check", "metrics"], input=drifted.encode(),
                               capture_output=True, timeout=30)
        assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr

        rc = run.terminate(timeout=30)
    finally:
        run.remove()
    print(f"\nstart-up {started_in:.1f} s (podman run to /metrics), "
          f"SIGTERM to exit {run.stopped_in:.1f} s")
    assert rc == 0, f"exit status {rc}:\n{run.log_tail()}"
    assert run.stopped_in is not None and run.stopped_in < STOP_S, \
        f"SIGTERM to exit took {run.stopped_in:.1f} s"
    assert run.logs("signal received, stopping") and run.logs("stopped"), run.log_tail()
    assert started_in < MAX_START_S, f"start-up took {started_in:.1f} s"

