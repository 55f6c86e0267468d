"""The live view of ``streamdrift demo`` (stream.demoview): episodes in the table, and
log records that never land inside it."""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from rich.console import Console
from rich.live import Live
from rich.text import Text

from detectors.model import ModelBaseline
from stream.config import parse_config
from stream.demoview import (
    CLOSED_STYLE,
    HEADERS,
    OPEN_STYLE,
    EpisodeTally,
    drift_table,
    logs_above_live,
)
from stream.engine.baselines import column_specs, detection_settings
from stream.engine.episodes import Episode
from stream.engine.pipeline import Pipeline
from stream.logs import JsonFormatter

CONFIG = {
    "models": [{
        "name": "m1",
        "select": {"field": "model", "equals": "m1"},
        "baseline": {"file": "m1.json"},
        "features": [{"name": "x", "path": "f.x", "type": "numeric"},
                     {"name": "c", "path": "f.c", "type": "categorical"}],
    }],
    "detection": {"false_alarm_events": 20000, "window": 200, "cadence": 20},
}


@pytest.fixture(scope="module")
def baselines() -> tuple[Any, dict[str, ModelBaseline]]:
    cfg = parse_config(CONFIG, "/cfg")
    rng = np.random.default_rng(5)
    data = {"x": rng.normal(size=5000),
            "c": rng.choice(np.array(["a", "b", "c"], dtype=object), 5000, p=[0.5, 0.3, 0.2])}
    # a quick calibration (the calibration key leaves calibration_values out)
    settings = dataclasses.replace(detection_settings(cfg.detection), calibration_values=100_000)
    return cfg, {"m1": ModelBaseline.build("m1", data, column_specs(cfg.models[0]), settings)}


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


def _events(rng: np.random.Generator, n: int, drift_x: bool = False,
            drift_c: bool = False) -> list[bytes]:
    return [orjson.dumps({"model": "m1", "f": {
        "x": float(rng.normal(1.5 if drift_x else 0.0, 1.0)),
        "c": str(rng.choice(["a", "b", "c"], p=[0.1, 0.3, 0.6] if drift_c else [0.5, 0.3, 0.2]))}})
        for _ in range(n)]


def _feed(p: Pipeline, clock: Clock, messages: list[bytes], partition: tuple[str, int],
          start: int) -> None:
    for i in range(0, len(messages), 100):
        clock.t += 1.0
        p.process(messages[i:i + 100], base_index=start + i, partition=partition)


def _cells(table: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """(model, column) -> header -> cell (a str or a rich Text)."""
    cols = {c.header: list(c.cells) for c in table.columns}
    assert tuple(cols) == HEADERS
    rows = zip(*cols.values(), strict=True)
    return {(r[0], r[1]): dict(zip(cols, r, strict=True)) for r in rows}


def _styles(text: Text) -> dict[str, str]:
    """word -> its style, of a Text built with one span per word."""
    return {text.plain[s.start:s.end]: str(s.style) for s in text.spans}


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------
def test_table_shows_an_open_and_a_closed_episode(baselines: Any) -> None:
    cfg, bases = baselines
    clock = Clock()
    p = Pipeline(cfg, bases, clock=clock)
    rng = np.random.default_rng(1)
    # partition 0: x drifts, then recovers (a closed episode)
    _feed(p, clock, _events(rng, 1000) + _events(rng, 600, drift_x=True)
          + _events(rng, 3000), ("t", 0), 0)
    # partitions 1 and 2: c drifts and stays drifted (an open episode on each: one for the
    # view, which merges a column's overlapping episodes over partitions)
    _feed(p, clock, _events(rng, 1000) + _events(rng, 1000, drift_c=True), ("t", 1), 10_000)
    opened_at = min(ep.opened_at for ep in p.open_episodes())
    _feed(p, clock, _events(rng, 1000) + _events(rng, 1000, drift_c=True), ("t", 2), 20_000)
    assert [(e.feature, e.partition) for e in p.open_episodes()] == [("c", ("t", 1)),
                                                                    ("c", ("t", 2))]
    assert [(e.feature, e.partition) for e in p.recent_episodes] == [("x", ("t", 0))]
    closed = p.recent_episodes[0]

    table = drift_table(p, EpisodeTally(), now=opened_at + 12.4, title="t", caption="cap")
    cells = _cells(table)
    x, c = cells[("m1", "x")], cells[("m1", "c")]

    assert x["status"].plain == "ok"
    assert x["episodes"] == "1"
    # the last episode's detectors, in order of opening, all dim: none is open
    assert x["episode detectors"].plain == " ".join(closed.detectors)
    assert set(_styles(x["episode detectors"]).values()) == {CLOSED_STYLE}
    assert "ks" in closed.detectors

    assert c["status"].plain == "DRIFT 12s"
    assert c["episodes"] == "1"
    open_dets = set().union(*(e.open_detectors for e in p.open_episodes()))
    styles = _styles(c["episode detectors"])
    assert set(styles) == open_dets
    assert all(s == OPEN_STYLE for s in styles.values())
    # the alarms column is the alarms counter: detector episodes over partitions
    snap = p.snapshot().models["m1"].columns
    assert c["alarms"] == str(sum(d.alarms for d in snap["c"].detectors.values()))
    assert int(c["alarms"]) >= 2 * len(open_dets)  # one per detector and partition
    assert table.caption == "cap\nepisodes: 1 open, 1 closed"


def _episode(feature: str, partition: int, opened: int | None, closed: int | None,
             opened_at: float, detectors: list[str], open_detectors: set[str]) -> Episode:
    return Episode("m", feature, ("t", partition), opened, opened_at, closed,
                   detectors=detectors, open_detectors=open_detectors)


def test_tally_merges_partitions_and_keeps_closed_episodes_out_of_the_deque() -> None:
    tally = EpisodeTally()
    a = _episode("x", 0, 100, 500, 10.0, ["ks", "cusum"], set())
    b = _episode("x", 1, 300, 800, 12.0, ["adwin"], set())  # overlaps a: the same episode
    tally.update([a, b])
    c = _episode("x", 0, 900, 950, 20.0, ["ks"], set())
    tally.update([b, c])  # a left the deque: still counted; b is not counted twice
    still = _episode("x", 2, 940, None, 19.0, ["ks", "chi2"], {"chi2"})  # overlaps c
    restored = _episode("y", 0, None, None, 5.0, ["psi"], {"psi"})
    cols = tally.columns([still, restored])
    x = cols[("m", "x")]
    assert x.closed == 1 and x.count == 2
    assert x.last is not None and x.last.detectors == ["ks", "cusum", "adwin"]
    assert x.open is not None
    assert (x.open.start, x.open.end, x.open.opened_at) == (900, math.inf, 20.0)
    assert x.open.detectors == ["ks", "chi2"] and x.open.open_detectors == {"chi2"}
    y = cols[("m", "y")]
    assert y.count == 1 and y.open is not None and y.open.start == -math.inf


# --------------------------------------------------------------------------
# logs while the view is live
# --------------------------------------------------------------------------
_CSI = re.compile(r"\x1b\[(\??)(\d*)([A-Za-z])")


def _screen(raw: str) -> list[str]:
    """The lines a terminal shows after ``raw``: the cursor moves and erasures a rich
    ``Live`` uses (CR, LF, cursor up, erase line, cursor show/hide) applied."""
    lines: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(raw):
        m = _CSI.match(raw, i)
        if m:
            private, n, op = m.groups()
            if not private and op == "A":
                row = max(0, row - int(n or 1))
            elif not private and op == "K":
                lines[row] = []
            i = m.end()
            continue
        ch = raw[i]
        i += 1
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row, col = row + 1, 0
            while len(lines) <= row:
                lines.append([])
        else:
            line = lines[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
    return ["".join(line).rstrip() for line in lines]


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = saved
    root.setLevel(level)


def _table() -> Any:
    from rich.table import Table

    t = Table(title="view", caption="the caption")
    t.add_column("column")
    t.add_column("status")
    for i in range(4):
        t.add_row(f"col{i}", "ok")
    return t


def _run_view(terminal: io.StringIO, log_file: Path | None) -> Console:
    """A live view on ``terminal`` that logs while it runs; through
    :func:`logs_above_live` unless ``log_file`` is None."""
    console = Console(file=terminal, force_terminal=True, force_interactive=True, width=100,
                      color_system=None, legacy_windows=False)
    live = Live(_table(), console=console, auto_refresh=False)

    def run() -> None:
        with live:
            live.refresh()
            logging.getLogger("streamdrift.run").info("drift alarm",
                                                      extra={"feature": "amount"})
            logging.getLogger("kafka.conn").warning("connection to node 1 lost")
            live.update(_table(), refresh=True)

    if log_file is None:
        run()
    else:
        with logs_above_live(console, log_file):
            run()
    return console


def _table_lines() -> list[str]:
    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(_table())
    return [line.rstrip() for line in out.getvalue().rstrip("\n").split("\n")]


def _view_is_intact(screen: list[str]) -> bool:
    """The table appears once, whole, at the bottom, with no stray piece of it above."""
    table = _table_lines()
    body = [line for line in screen if line]
    return body[-len(table):] == table and not any(
        line in table for line in body[:-len(table)])


def test_log_records_go_above_the_live_table(root_logger: logging.Logger,
                                             tmp_path: Path) -> None:
    # as `streamdrift` sets it up: JSON lines on the terminal the view draws on
    terminal = io.StringIO()
    handler = logging.StreamHandler(terminal)
    handler.setFormatter(JsonFormatter())
    root_logger.handlers[:] = [handler]
    root_logger.setLevel(logging.INFO)

    _run_view(terminal, tmp_path / "streamdrift.log")

    screen = _screen(terminal.getvalue())
    assert _view_is_intact(screen), "\n".join(screen)
    # the warning printed above the table, as one line; the info record only in the file
    warn = [line for line in screen if "connection to node 1 lost" in line]
    assert len(warn) == 1 and warn[0].endswith("WARNING kafka.conn: connection to node 1 lost")
    assert screen.index(warn[0]) < screen.index(_table_lines()[0].rstrip())
    assert "drift alarm" not in terminal.getvalue()
    records = [orjson.loads(line) for line in
               (tmp_path / "streamdrift.log").read_text().splitlines()]
    assert [(r["logger"], r["msg"]) for r in records] == [
        ("streamdrift.run", "drift alarm"), ("kafka.conn", "connection to node 1 lost")]
    assert records[0]["feature"] == "amount"
    # and the handlers are back as they were
    assert root_logger.handlers == [handler]


def test_without_the_routing_a_log_line_breaks_the_table(root_logger: logging.Logger) -> None:
    """The check above can fail: a handler writing straight to the terminal (what the demo
    did) puts its line inside the table's redraw."""
    terminal = io.StringIO()
    handler = logging.StreamHandler(terminal)
    handler.setFormatter(JsonFormatter())
    root_logger.handlers[:] = [handler]
    root_logger.setLevel(logging.INFO)

    _run_view(terminal, None)

    # the record is written onto the table's last line, the redraw then erases it and
    # leaves the top of the previous frame on the screen
    assert re.search(r'the caption *\{"ts"', terminal.getvalue())
    screen = _screen(terminal.getvalue())
    assert not _view_is_intact(screen)
    assert not any("drift alarm" in line or "connection" in line for line in screen)
    assert screen.count(_table_lines()[1]) == 2
