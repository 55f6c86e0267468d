"""Hostile and broken input files: one ``error:`` line and exit status 2, never a traceback.

Each case runs the CLI in-process (``stream.cli.main``) over a configuration, baseline,
reference or secret file that an attacker or an accident could produce (issue #12), and
checks: exit status 2, exactly one line on stderr (the error; nothing is logged before it
at the default settings), that the line names the file or key at fault, and that no
traceback was printed.  docs/security.md lists the cases and the limits.

The baseline every case starts from is built once per module by ``streamdrift baseline``
from clean reference events of model m1 (a few seconds of calibration).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from detectors.calibration import Calibration
from detectors.model import ModelBaseline, content_hash
from detectors.profile import profile_from_dict
from stream.cli import main
from stream.config.files import MAX_BASELINE_BYTES, MAX_YAML_BYTES
from tests.support.configs import m1_config, write_config
from tests.support.events import write_clipped_reference

DETECTION = {"false_alarm_events": 10_000, "window": 200, "cadence": 20}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``main`` installs its own log handler on the root logger: undo it after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def config_data(**kw: Any) -> dict[str, Any]:
    """m1's configuration with an unreachable broker (nothing here may connect to it)."""
    data = m1_config(bootstrap="127.0.0.1:9", topic="t", group="g", port=0,
                     detection=DETECTION, baseline={"file": "baseline.json"})
    data.update(kw)
    return data


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``config.yaml``, ``reference.jsonl`` and a fresh ``baseline.json``."""
    folder = tmp_path_factory.mktemp("hostile")
    write_clipped_reference(folder / "reference.jsonl")
    data = config_data()
    data["models"][0]["baseline"] = {"reference": "reference.jsonl"}
    write_config(folder / "build.yaml", data)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        assert main(["baseline", "-c", str(folder / "build.yaml"), "--no-progress",
                     "-o", str(folder / "baseline.json")]) == 0
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    write_config(folder / "config.yaml", config_data())
    return folder


@pytest.fixture
def work(built: Path, tmp_path: Path) -> Path:
    """A copy of the built folder for one case to break."""
    for name in ("config.yaml", "reference.jsonl", "baseline.json"):
        shutil.copy(built / name, tmp_path / name)
    return tmp_path


def test_the_untouched_baseline_passes(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The starting point of every case is valid: check-config loads it without a word."""
    rc, out, err = run_cli(["check-config", "-c", str(work / "config.yaml")], capsys)
    assert (rc, err) == (0, "")
    assert "configuration OK" in out
    assert "sha256" in json.loads((work / "baseline.json").read_text())


# --------------------------------------------------------------------------- the cases
def baseline_json(work: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((work / "baseline.json").read_text())
    return data


def write_baseline(work: Path, data: Any, *, rehash: bool = False) -> None:
    if rehash:  # an edit by someone who also recomputes id and sha256 (the checks still apply)
        data["id"] = ModelBaseline(
            data["model"], {k: profile_from_dict(v) for k, v in data["columns"].items()},
            {c: {k: Calibration.from_dict(v) for k, v in d.items()}
             for c, d in data["calibration"].items()}, data["calibration_key"]).id
        data["sha256"] = content_hash({k: v for k, v in data.items() if k != "sha256"})
    (work / "baseline.json").write_text(json.dumps(data))


def edit_baseline(change: Callable[[dict[str, Any]], None], *, rehash: bool = False
                  ) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        data = baseline_json(work)
        change(data)
        write_baseline(work, data, rehash=rehash)
    return setup


def set_threshold(value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["calibration"]["x1"]["ks"]["threshold"] = value
    return change


def rewrite_config(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        data = config_data()
        change(data)
        write_config(work / "config.yaml", data)
    return setup


def alias_bomb(work: Path) -> None:
    """A "billion laughs" (6 levels of 9 aliases: 531,441 strings) ahead of a valid config."""
    lines = ["lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 7)]
    text = (work / "config.yaml").read_text()
    (work / "config.yaml").write_text("\n".join(lines) + "\n" + text)


def web_config_alias_bomb(work: Path) -> None:
    """The same bomb in the metrics web config (read with the same loader)."""
    lines = ["lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 7)]
    (work / "web.yml").write_text("\n".join(lines) + "\n")
    write_config(work / "config.yaml", config_data(metrics={"port": 0, "web_config": "web.yml"}))


def recursive_alias(work: Path) -> None:
    text = (work / "config.yaml").read_text()
    (work / "config.yaml").write_text("loop: &a [1, *a]\n" + text)


def deep_nesting(work: Path) -> None:
    text = (work / "config.yaml").read_text()
    (work / "config.yaml").write_text("deep: " + "[" * 10_000 + "]" * 10_000 + "\n" + text)


def oversized_config(work: Path) -> None:
    text = (work / "config.yaml").read_text()
    padding = "# " + "x" * 100 + "\n"
    (work / "config.yaml").write_text(text + padding * (MAX_YAML_BYTES // len(padding) + 1))


def config_is_a_directory(work: Path) -> None:
    (work / "config.yaml").unlink()
    (work / "config.yaml").mkdir()


def config_is_a_fifo(work: Path) -> None:
    (work / "config.yaml").unlink()
    os.mkfifo(work / "config.yaml")


def baseline_at(target: str) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        (work / "baseline.json").unlink()
        (work / "baseline.json").symlink_to(target)
    return setup


def baseline_is_a_fifo(work: Path) -> None:
    (work / "baseline.json").unlink()
    os.mkfifo(work / "baseline.json")


def baseline_is_a_directory(work: Path) -> None:
    (work / "baseline.json").unlink()
    (work / "baseline.json").mkdir()


def oversized_baseline(work: Path) -> None:
    """Over the limit for m1: 256 MiB plus 32 bytes a reservoir value of its 3 numeric
    columns (10,000 values each by default): 256 MiB + 960,000 bytes."""
    with (work / "baseline.json").open("r+b") as fh:  # sparse: costs no disk
        fh.truncate(MAX_BASELINE_BYTES + 3 * 10_000 * 32 + 1)


def truncated_baseline(work: Path) -> None:
    raw = (work / "baseline.json").read_bytes()
    (work / "baseline.json").write_bytes(raw[: len(raw) // 2])


def json_list_baseline(work: Path) -> None:
    (work / "baseline.json").write_text(json.dumps([baseline_json(work)]))


def fifo_secret(work: Path) -> None:
    os.mkfifo(work / "password")
    data = config_data()
    data["source"]["kafka"].update(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                                   sasl_username="u", sasl_password={"file": "password"})
    write_config(work / "config.yaml", data)


def dev_zero_secret(work: Path) -> None:
    data = config_data()
    data["source"]["kafka"].update(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                                   sasl_username="u", sasl_password={"file": "/dev/zero"})
    write_config(work / "config.yaml", data)


def reference_only(target: str) -> Callable[[Path], None]:
    """The model builds its baseline from ``target`` (no baseline file)."""
    def setup(work: Path) -> None:
        data = config_data()
        data["models"][0]["baseline"] = {"reference": target}
        write_config(work / "config.yaml", data)
    return setup


def dev_zero_reference(work: Path) -> None:
    (work / "zero.jsonl").symlink_to("/dev/zero")
    reference_only("zero.jsonl")(work)


def fifo_reference(work: Path) -> None:
    os.mkfifo(work / "fifo.jsonl")
    reference_only("fifo.jsonl")(work)


def csv_reference_with_a_huge_field(work: Path) -> None:
    (work / "reference.csv").write_text("x1,x2,c1,c2,score\n" + "1," * 4 + "9" * 200_000 + "\n")
    reference_only("reference.csv")(work)


def wrong_model(data: dict[str, Any]) -> None:
    data["model"] = "m2"


def drop(*keys: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        target = data
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return change


def set_key(value: Any, *keys: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return change


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Path], None]
    #: fragments the error line must hold ({work}: the case's folder)
    expect: tuple[str, ...]
    commands: tuple[str, ...] = ("check-config", "replay")


BASELINE = "{work}/baseline.json"
KEY = "models[0].baseline.file"
CASES = [
    # the configuration file
    Case("alias bomb", alias_bomb,
         ("{work}/config.yaml", "aliases expand to more than 100000 YAML nodes")),
    Case("alias bomb in the web config", web_config_alias_bomb,
         ("metrics.web_config", "{work}/web.yml", "aliases expand to more than 100000")),
    Case("recursive alias", recursive_alias, ("{work}/config.yaml", "recursive")),
    Case("deep nesting", deep_nesting, ("{work}/config.yaml", "nested deeper than 64")),
    Case("oversized config", oversized_config,
         ("{work}/config.yaml", "over the limit of 1 MiB")),
    Case("config is a directory", config_is_a_directory, ("{work}/config.yaml", "directory")),
    Case("config is a FIFO", config_is_a_fifo, ("{work}/config.yaml", "FIFO")),
    # secret files
    Case("FIFO as a secret file", fifo_secret,
         ("source.kafka.sasl_password.file", "{work}/password", "FIFO"), ("check-config",)),
    Case("/dev/zero as a secret file", dev_zero_secret,
         ("source.kafka.sasl_password.file", "/dev/zero", "character device"),
         ("check-config",)),
    # the baseline file: not a baseline at all
    Case("/dev/zero baseline", baseline_at("/dev/zero"), (KEY, BASELINE, "not a regular file")),
    Case("/etc/passwd baseline", baseline_at("/etc/passwd"), (KEY, BASELINE, "not valid JSON")),
    Case("FIFO baseline", baseline_is_a_fifo, (KEY, BASELINE, "FIFO")),
    Case("directory baseline", baseline_is_a_directory, (KEY, BASELINE, "directory")),
    Case("oversized baseline", oversized_baseline, (KEY, BASELINE, f"over the limit of {MAX_BASELINE_BYTES + 960_000} bytes")),
    Case("truncated baseline", truncated_baseline, (KEY, BASELINE, "not valid JSON")),
    Case("JSON list baseline", json_list_baseline, (KEY, BASELINE, "got a list")),
    # the baseline file: edited
    Case("missing calibration of a column", edit_baseline(drop("calibration", "x1")),
         (KEY, BASELINE, "is not the id of its content", "edited")),
    Case("missing calibration of a column, id and sha256 recomputed",
         edit_baseline(drop("calibration", "x1"), rehash=True),
         (KEY, BASELINE, "no calibration of detector(s)", "'x1'")),
    Case("missing profile of a column", edit_baseline(drop("columns", "c2")),
         (KEY, BASELINE, "calibration.c2: no such column")),
    Case("threshold -1.0", edit_baseline(set_threshold(-1.0)),
         (KEY, BASELINE, "calibration.x1.ks.threshold: must be a number > 0, got -1.0")),
    Case("threshold -1.0, sha256 recomputed", edit_baseline(set_threshold(-1.0), rehash=True),
         (KEY, BASELINE, "calibration.x1.ks.threshold: must be a number > 0")),
    Case('threshold "0.09"', edit_baseline(set_threshold("0.09")),
         (KEY, BASELINE, "calibration.x1.ks.threshold: must be a finite number, got the string")),
    Case("threshold true", edit_baseline(set_threshold(True)),
         (KEY, BASELINE, "threshold: must be a finite number, got a boolean")),
    Case("ADWIN threshold 5", edit_baseline(set_key(5.0, "calibration", "x1", "adwin",
                                                    "threshold")),
         (KEY, BASELINE, "calibration.x1.adwin.threshold: must be a number in (0, 1)")),
    Case("std 0", edit_baseline(set_key(0, "columns", "x1", "std")),
         (KEY, BASELINE, "columns.x1: numeric profile: std 0 does not match")),
    Case("negative count", edit_baseline(set_key(-5, "columns", "c1", "count")),
         (KEY, BASELINE, "columns.c1: categorical profile: count must be an integer >= 0")),
    Case("missing id", edit_baseline(drop("id")), (KEY, BASELINE, "baseline id: must be")),
    Case("unknown detector", edit_baseline(set_key({}, "calibration", "x1", "chi2")),
         (KEY, BASELINE, "calibration.x1.chi2: not a detector of a numeric column")),
    Case("schema_version 2", edit_baseline(set_key(2, "schema_version")),
         (KEY, BASELINE, "schema_version 2 is not 1")),
    Case("edited threshold (id mismatch)", edit_baseline(set_threshold(0.5)),
         (KEY, BASELINE, "is not the id of its content", "edited")),
    Case("edited meta (sha256 mismatch)",
         edit_baseline(set_key(1, "meta", "reference_events")),
         (KEY, BASELINE, "sha256 does not match", "edited", "streamdrift baseline")),
    Case("another model's baseline", edit_baseline(wrong_model, rehash=True),
         (KEY, BASELINE, "baseline of model 'm2', not 'm1'")),
    # reference files (a model without a baseline file builds from them)
    Case("/dev/zero reference", dev_zero_reference,
         ("models[0].baseline.reference", "{work}/zero.jsonl", "not a regular file")),
    Case("FIFO reference", fifo_reference,
         ("models[0].baseline.reference", "{work}/fifo.jsonl", "FIFO")),
    Case("CSV reference with a 200 kB field", csv_reference_with_a_huge_field,
         ("baseline.reference", "{work}/reference.csv", "not a readable UTF-8 CSV"),
         ("replay",)),
]


def argv(command: str, work: Path) -> list[str]:
    config = ["-c", str(work / "config.yaml")]
    if command == "replay":
        return ["replay", *config, "--input", str(work / "reference.jsonl"),
                "--report", str(work / "report.json"), "--no-progress"]
    return [command, *config]


def assert_one_error_line(rc: int, err: str, expect: tuple[str, ...], work: Path) -> None:
    assert "Traceback" not in err
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    for fragment in expect:
        assert fragment.format(work=work) in lines[0], lines[0]


RUNS = [(case, command) for case in CASES for command in case.commands]


@pytest.mark.parametrize(("case", "command"), RUNS,
                         ids=[f"{case.name}-{command}" for case, command in RUNS])
def test_hostile_input(case: Case, command: str, work: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    case.setup(work)
    rc, out, err = run_cli(argv(command, work), capsys)
    assert_one_error_line(rc, err, case.expect, work)
    assert not (work / "report.json").exists()


def test_metrics_port_in_use(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``run`` reports a taken port in one line, before it connects to Kafka (the broker
    at 127.0.0.1:9 would fail only after its bootstrap timeout)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc, _, err = run_cli(["run", "-c", str(work / "config.yaml"),
                              "--metrics-port", str(port)], capsys)
    assert_one_error_line(rc, err, ("metrics", f"127.0.0.1:{port}", "in use"), work)


def test_metrics_port_out_of_range(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run_cli(["run", "-c", str(work / "config.yaml"), "--metrics-port", "70000"],
                         capsys)
    assert_one_error_line(rc, err, ("--metrics-port 70000",), work)


def test_baseline_output_not_writable(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = work / "file" / "baseline.json"
    (work / "file").write_text("a file where a folder should be")
    data = config_data()
    data["models"][0]["baseline"] = {"reference": "reference.jsonl"}
    write_config(work / "config.yaml", data)
    rc, _, err = run_cli(["baseline", "-c", str(work / "config.yaml"), "--no-progress",
                          "-o", str(target)], capsys)
    assert_one_error_line(rc, err, ("cannot write baseline file", str(target)), work)


def test_baseline_without_sha256_loads_with_a_warning(
        work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A baseline from before the sha256 was added still loads (every other check applies
    to it): check-config says that edits to it cannot be detected, and exits 0."""
    data = baseline_json(work)
    del data["sha256"]
    write_baseline(work, data)
    rc, out, err = run_cli(["check-config", "-c", str(work / "config.yaml")], capsys)
    assert rc == 0, err
    assert err.startswith("warning: models[0].baseline.file:") and "no sha256" in err
    assert len(err.splitlines()) == 1
    data["calibration"]["x1"]["ks"]["threshold"] = -1.0
    write_baseline(work, data)
    rc, _, err = run_cli(["check-config", "-c", str(work / "config.yaml")], capsys)
    assert_one_error_line(rc, err, ("threshold: must be a number > 0",), work)


def test_a_broken_cache_is_rebuilt(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The baseline cache of a model built from its reference is only a cache: an edited
    one is ignored (with a warning) and rebuilt, not an error."""
    reference_only("reference.jsonl")(work)
    argv_ = argv("replay", work)
    assert run_cli(argv_, capsys)[0] == 0
    (cache,) = (work / ".streamdrift-cache").iterdir()
    data = json.loads(cache.read_text())
    data["calibration"]["x1"]["ks"]["threshold"] = -1.0
    cache.write_text(json.dumps(data))
    rc, _, err = run_cli(argv_, capsys)
    assert rc == 0, err
    assert "ignoring the cached baseline" in err
    assert json.loads(cache.read_text())["calibration"]["x1"]["ks"]["threshold"] > 0


def test_a_reference_line_over_the_limit_is_skipped(
        work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stream.config import load_config
    from stream.engine import baselines

    monkeypatch.setattr(baselines, "MAX_REFERENCE_LINE_BYTES", 1000)
    lines = (work / "reference.jsonl").read_bytes().splitlines(keepends=True)
    huge = b'{"model": "m1", "f": {"x1": "' + b"9" * 5000 + b'"}}\n'
    (work / "reference.jsonl").write_bytes(b"".join([*lines[:10], huge, *lines[10:]]))
    config = load_config(work / "config.yaml")
    data = baselines.read_reference(work / "reference.jsonl", config.models[0])
    assert data["x1"].size == len(lines)


def test_docs_list_every_case() -> None:
    """docs/security.md names each case of this file."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    missing = [c.name for c in CASES if c.name not in text]
    assert not missing, textwrap.shorten(f"not in docs/security.md: {missing}", 500)


def _fields(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths of every field of a baseline (only the first item of a list)."""
    if path:
        yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _fields(item, (*path, key))
    elif isinstance(value, list) and value:
        yield from _fields(value[0], (*path, 0))


def test_every_field_edited_or_deleted_is_refused_in_one_line() -> None:
    """Each field of a built baseline replaced by a value of another type or range, or
    deleted: ``from_dict`` raises DetectorError (the CLI's one line) or, for the
    ``sha256`` (an older file) and ``meta`` (free-form), loads; never another exception."""
    import numpy as np

    from detectors.errors import DetectorError
    from detectors.model import ColumnSpec, DetectionSettings

    rng = np.random.default_rng(0)
    data = {"x": np.where(rng.random(2000) < 0.05, np.nan, rng.normal(size=2000)),
            "c": rng.choice(np.array(["a", "b", "c", None], dtype=object), 2000)}
    specs = [ColumnSpec("x", "numeric"), ColumnSpec("c", "categorical")]
    settings = DetectionSettings(false_alarm_events=5000, window=200, cadence=20,
                                 calibration_values=50_000, reservoir_size=100)
    original = json.loads(json.dumps(ModelBaseline.build("m", data, specs, settings)
                                      .to_dict()))
    ModelBaseline.from_dict(original)
    deleted = object()
    for path in _fields(original):
        for value in (None, "x", -1, [], True, deleted):
            data = json.loads(json.dumps(original))
            target = data
            for key in path[:-1]:
                target = target[key]
            if value is deleted:
                if isinstance(target, list):
                    continue
                del target[path[-1]]
            elif json.dumps(target[path[-1]]) == json.dumps(value):
                continue  # no change
            else:
                target[path[-1]] = value
            try:
                ModelBaseline.from_dict(data)
            except DetectorError:
                continue
            assert path[0] in ("sha256", "meta"), (path, value)


@pytest.mark.parametrize("where", ["input", "report"])
def test_replay_input_and_report_paths(where: str, work: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """``replay --input /dev/zero`` is refused before anything is read; a ``--report`` that
    is a directory is one line after the replay, not an IsADirectoryError traceback."""
    args = argv("replay", work)
    if where == "input":
        args[args.index("--input") + 1] = "/dev/zero"
        expect: tuple[str, ...] = ("--input /dev/zero", "not a regular file")
    else:
        (work / "report.json").mkdir()
        expect = ("--report", "report.json", "cannot write")
    rc, _, err = run_cli(args, capsys)
    assert_one_error_line(rc, err, expect, work)
