"""Pinned behaviour: the replay report and the exported series of a fixed input.

Written before ``stream/`` is split into sub-packages and its runner/pipeline internals
are retyped, so that the refactor can show "behaviour unchanged".  The fixed input lives
in ``tests/stream/pinned/`` (``config.yaml``, a gzipped reference JSONL per model and a
gzipped events JSONL; ``make_inputs.py`` regenerates them and describes their content).
The test unpacks them into a temporary folder (so the baseline cache that ``replay``
writes beside the configuration never lands in the repository), runs

    streamdrift replay -c config.yaml --input events.jsonl --report report.json

in-process through the CLI entry point (the baselines are built and calibrated from the
references, as ``replay`` does without a cache: ~7 s), and compares

* the whole report with ``pinned/expected_report.json``: input lines, events processed,
  invalid events by reason, every detection (model, feature, detector, index, statistic,
  threshold) and the final per-model / per-column summaries (with ``baseline_id``, a
  content hash of the calibrated baselines), floats exactly, types too;
* the Prometheus series of ``make_registry`` over the pipeline the replay used with
  ``pinned/expected_series.json``: the identity (name and labels) of every sample, and
  the value of every sample whose value does not depend on timing.

Excluded, because they legitimately vary from run to run or between installs:

* report key ``seconds`` (wall-clock duration of the replay);
* the *value* of ``streamdrift_build_info``'s ``version`` label (the package version; it
  is pinned as ``<version>``, the series itself is pinned);
* the *values* (not the series) of ``streamdrift_batch_processing_seconds_bucket`` and
  ``_sum`` (processing time), ``streamdrift_last_batch_timestamp_seconds`` (wall clock)
  and ``streamdrift_event_lag_seconds`` (wall clock minus event time).  The histogram's
  ``_count`` (batches processed) is pinned.

Regenerating the expected files, deliberately (after a change of behaviour that is
meant, or after ``make_inputs.py``)::

    STREAMDRIFT_UPDATE_PINNED=1 python -m pytest tests/stream/test_behaviour_pinned.py

rewrites ``expected_report.json`` and ``expected_series.json`` (review the diff before
committing).  Without the variable a difference fails the test, with a short diff.

Only the imports right below touch streamdrift modules: the CLI entry point, the
``Pipeline`` class (only to capture the instance the CLI builds; the test calls nothing
on it) and ``make_registry``.  Update them when the modules move.
"""

from __future__ import annotations

import difflib
import gzip
import json
import logging
import math
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# -- every streamdrift import of this module (the refactor renames these modules) ---------
from stream.cli import main as streamdrift_main
from stream.engine.pipeline import Pipeline
from stream.sinks.metrics import make_registry

# ------------------------------------------------------------------------------------------

PINNED = Path(__file__).resolve().parent / "pinned"
EXPECTED_REPORT = PINNED / "expected_report.json"
EXPECTED_SERIES = PINNED / "expected_series.json"
UPDATE_ENV = "STREAMDRIFT_UPDATE_PINNED"

#: report keys whose values depend on the wall clock
REPORT_VOLATILE_KEYS = ("seconds",)
#: (metric, label) whose label value depends on the install, pinned as a placeholder
VOLATILE_LABELS = {("streamdrift_build_info", "version"): "<version>"}
#: samples whose value depends on timing or the wall clock (their identity is pinned)
VOLATILE_VALUES = (
    "streamdrift_batch_processing_seconds_bucket",
    "streamdrift_batch_processing_seconds_sum",
    "streamdrift_last_batch_timestamp_seconds",
    "streamdrift_event_lag_seconds",
)
#: lines of diff shown when a comparison fails
MAX_DIFF_LINES = 25


# -- the replay ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], Any]]:
    """(The replay report, the pipeline the replay used), once per module."""
    work = tmp_path_factory.mktemp("pinned")
    shutil.copyfile(PINNED / "config.yaml", work / "config.yaml")
    for packed in sorted(PINNED.glob("*.jsonl.gz")):
        with gzip.open(packed, "rb") as src, (work / packed.name[:-3]).open("wb") as dst:
            shutil.copyfileobj(src, dst)

    # the pipeline the CLI builds, captured at construction whatever module imports the class
    built: list[Any] = []
    original_init = Pipeline.__init__

    def recording_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        built.append(self)

    # the CLI replaces the root logger's handlers and level: put them back afterwards
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Pipeline, "__init__", recording_init)
            rc = streamdrift_main([
                "--log-level", "warning", "--log-format", "text",
                "replay", "-c", str(work / "config.yaml"),
                "--input", str(work / "events.jsonl"),
                "--report", str(work / "report.json"), "--no-progress",
            ])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert rc == 0, f"streamdrift replay exited with {rc}"
    assert len(built) == 1, f"expected the replay to build one Pipeline, it built {len(built)}"
    report = json.loads((work / "report.json").read_bytes())
    yield report, built[0]


# -- comparison helpers --------------------------------------------------------------------


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + "..."


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same JSON types (1 is not 1.0, True is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def _nested(value: Any) -> bool:
    """A list, or an object holding lists or objects (a flat record is shown whole)."""
    if isinstance(value, dict):
        return any(isinstance(v, dict | list) for v in value.values())
    return isinstance(value, list)


def _diff(expected: Any, actual: Any, path: str = "") -> Iterator[str]:
    """One line per difference, by JSON path; lists of records are compared item by item."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in expected:
            sub = f"{path}.{key}" if path else str(key)
            if key not in actual:
                yield f"{sub}: missing (expected {_short(expected[key])})"
            else:
                yield from _diff(expected[key], actual[key], sub)
        for key in actual.keys() - expected.keys():
            sub = f"{path}.{key}" if path else str(key)
            yield f"{sub}: unexpected {_short(actual[key])}"
    elif isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            yield f"{path}: {len(expected)} items expected, {len(actual)} found"
        # an aligned diff, so that one extra or missing item shows as one line
        exp_text = [_short(x, 10_000) for x in expected]
        act_text = [_short(x, 10_000) for x in actual]
        matcher = difflib.SequenceMatcher(a=exp_text, b=act_text, autojunk=False)
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            if op == "equal":
                continue
            if op == "replace" and i2 - i1 == j2 - j1 and all(
                    _nested(expected[i]) for i in range(i1, i2)):
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                    yield from _diff(expected[i], actual[j], f"{path}[{i}]")
                continue
            yield from (f"- {path}[{i}] expected {_short(expected[i])}" for i in range(i1, i2))
            yield from (f"+ {path}[{j}] got      {_short(actual[j])}" for j in range(j1, j2))
    elif not _same(expected, actual):
        yield f"{path}: expected {expected!r}, got {actual!r}"


def _fail_with(title: str, lines: list[str]) -> None:
    shown = lines[:MAX_DIFF_LINES]
    more = len(lines) - len(shown)
    tail = [f"... and {more} more difference line(s)"] if more > 0 else []
    pytest.fail("\n".join([title, *shown, *tail,
                           f"If the change is meant: {UPDATE_ENV}=1 python -m pytest {__file__}"]),
                pytrace=False)


def _check_or_update(path: Path, actual: Any, title: str,
                     diff_lines: Any = None) -> None:
    """Compare ``actual`` with the JSON in ``path``; rewrite ``path`` under UPDATE_ENV."""
    if os.environ.get(UPDATE_ENV) == "1":
        path.write_text(json.dumps(actual, indent=1) + "\n", encoding="utf-8")
        warnings.warn(f"{UPDATE_ENV} is set: rewrote {path}", stacklevel=2)
        return
    if not path.is_file():
        pytest.fail(f"{path} does not exist; create it with {UPDATE_ENV}=1", pytrace=False)
    expected = json.loads(path.read_text(encoding="utf-8"))
    if _same(expected, actual):
        return
    lines = list(diff_lines(expected, actual) if diff_lines else _diff(expected, actual))
    _fail_with(f"{title} differs from {path.name}:", lines or ["(types differ)"])


# -- the report ----------------------------------------------------------------------------


#: report keys compared first, in this order, so that the diff starts with them
REPORT_HEAD = ("input_lines", "events_processed", "events_invalid", "detections")


def _report_diff(expected: dict[str, Any], actual: dict[str, Any]) -> Iterator[str]:
    """Counters first, then the detections, then the rest (the final summaries)."""
    for key in REPORT_HEAD:
        yield from _diff(expected.get(key), actual.get(key), key)
    yield from _diff({k: v for k, v in expected.items() if k not in REPORT_HEAD},
                     {k: v for k, v in actual.items() if k not in REPORT_HEAD})


def test_replay_report_is_pinned(replayed: tuple[dict[str, Any], Any]) -> None:
    report, _ = replayed
    for key in REPORT_VOLATILE_KEYS:
        assert key in report, f"the report has no {key!r} any more: update REPORT_VOLATILE_KEYS"
    pinned = {k: v for k, v in report.items() if k not in REPORT_VOLATILE_KEYS}
    _check_or_update(EXPECTED_REPORT, pinned, "the replay report", _report_diff)


# -- the series ----------------------------------------------------------------------------


def _series_id(name: str, labels: dict[str, str]) -> str:
    body = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
    return f"{name}{{{body}}}"


def _collect(pipeline: Any) -> tuple[list[str], dict[str, float | int]]:
    """(Every series identity, sorted; the value of every series with a stable value)."""
    ids: list[str] = []
    values: dict[str, float | int] = {}
    for family in make_registry(pipeline).collect():
        for sample in family.samples:
            labels = dict(sample.labels)
            for (metric, label), placeholder in VOLATILE_LABELS.items():
                if family.name == metric and label in labels:
                    labels[label] = placeholder
            sid = _series_id(sample.name, labels)
            assert sid not in values and sid not in ids, f"series {sid} exported twice"
            ids.append(sid)
            if sample.name not in VOLATILE_VALUES:
                v = float(sample.value)
                values[sid] = int(v) if v.is_integer() and abs(v) < 2**53 else v
    return sorted(ids), dict(sorted(values.items()))


def _series_diff(expected: dict[str, Any], actual: dict[str, Any]) -> Iterator[str]:
    exp_ids, act_ids = set(expected.get("series", [])), set(actual["series"])
    if exp_ids != act_ids:
        yield (f"series: {len(exp_ids)} expected, {len(act_ids)} exported; "
               f"{len(exp_ids - act_ids)} missing, {len(act_ids - exp_ids)} new")
        yield from (f"  missing {s}" for s in sorted(exp_ids - act_ids)[:10])
        yield from (f"  new     {s}" for s in sorted(act_ids - exp_ids)[:10])
    exp_vals, act_vals = expected.get("values", {}), actual["values"]
    changed = [s for s in sorted(exp_vals.keys() & act_vals.keys())
               if not _same(exp_vals[s], act_vals[s])]
    if changed:
        yield f"values: {len(changed)} series changed value"
        yield from (f"  {s}: expected {exp_vals[s]!r}, got {act_vals[s]!r}" for s in changed)
    for s in sorted(exp_vals.keys() - act_vals.keys()):
        if s in act_ids:
            yield f"  {s}: value no longer pinned (now in VOLATILE_VALUES?)"
    for s in sorted(act_vals.keys() - exp_vals.keys()):
        if s in exp_ids:
            yield f"  {s}: value newly pinned: {act_vals[s]!r}"


def test_exported_series_are_pinned(replayed: tuple[dict[str, Any], Any]) -> None:
    _, pipeline = replayed
    ids, values = _collect(pipeline)
    assert len(ids) == len(set(ids))
    # the excluded values exist: otherwise VOLATILE_VALUES is stale
    names = {sid.split("{", 1)[0] for sid in ids}
    stale = [n for n in VOLATILE_VALUES if n not in names]
    assert not stale, f"no series named {stale} any more: update VOLATILE_VALUES"
    _check_or_update(EXPECTED_SERIES, {"series": ids, "values": values},
                     "the exported series", _series_diff)
