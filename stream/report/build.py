"""``streamdrift report``: replay a history, optionally inject what-if drifts, write HTML.

The replay is the ordinary one (:func:`stream.runtime.replay.replay`, so the JSON report
is the same as ``streamdrift replay`` writes for the same batch size); the report only
adds an observer between batches (:class:`~stream.report.collect.ReportRecorder`) and
the what-if runs after it (:mod:`stream.report.inject`).  Nothing of it runs in
``run`` or in a plain ``replay``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from stream.config import Config
from stream.engine.pipeline import Pipeline
from stream.report.collect import ReportRecorder
from stream.report.html import WhatIfModel, render
from stream.report.inject import ColumnWhatIf, combine, runs, what_if
from stream.runtime.replay import replay

#: plot resolution: about this many batches over the input (each is one point before
#: downsampling), within the batch sizes below
TARGET_BATCHES = 500
MIN_BATCH, MAX_BATCH = 100, 5000


def estimate_lines(path: Path, sample_bytes: int = 1 << 20) -> int:
    """Lines of ``path``, estimated from its size and the lines of its first MiB."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(sample_bytes)
    n = head.count(b"\n") + (0 if head.endswith(b"\n") or not head else 1)
    if not n:
        return 0
    return n if len(head) >= size else int(size / (len(head) / n))


def report_batch_lines(lines: int) -> int:
    """Lines per batch for a report over about ``lines`` lines.

    >>> report_batch_lines(30_000), report_batch_lines(1_000_000), report_batch_lines(10**8)
    (100, 2000, 5000)
    """
    return int(min(MAX_BATCH, max(MIN_BATCH, lines // TARGET_BATCHES)))


def whatif_to_dict(w: Mapping[str, Sequence[WhatIfModel]], within: int) -> dict[str, Any]:
    """The what-if results as the JSON report writes them: per model, each position's
    results and their ``summary`` (median delays over the positions)."""
    def col(c: ColumnWhatIf) -> dict[str, Any]:
        return {"type": c.type, "drifting_at_injection": c.drifting,
                "alarm_without_injection": None if c.control is None
                else {"delay": c.control[0], "detector": c.control[1]},
                "scenarios": {s.kind: {"target": s.target,
                                       "delays": [{"magnitude": m, "delay": d, "detector": k}
                                                  for m, d, k in s.delays],
                                       "smallest_within": s.smallest_within(within)}
                              for s in c.scenarios}}

    def summary(ws: Sequence[WhatIfModel]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for c in combine([v.columns for v in ws]):
            out.setdefault(c.column, {})[c.kind] = {
                "target": c.target, "smallest_within": c.smallest_within(within),
                "delays": [{"magnitude": m, "median_delay": med, "fastest": lo,
                            "slowest": hi, "seen": k, "positions": n}
                           for m, med, lo, hi, k, n in c.rows]}
        return out

    return {m: {"within": within,
                "positions": [{"at_line": v.at, "events_before": v.events_before,
                               "events": v.events,
                               "columns": {c.column: col(c) for c in v.columns}} for v in ws],
                "summary": summary(ws)}
            for m, ws in w.items()}


class _Progress:
    """A rich progress bar on stderr (replay by bytes, then the what-if runs)."""

    def __init__(self, enabled: bool, total_bytes: int) -> None:
        self.prog: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.prog = Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(),
                             TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn(),
                             console=Console(stderr=True), transient=True)
        self.replay = self.prog.add_task("replay", total=total_bytes)

    def __enter__(self) -> _Progress:
        if self.prog is not None:
            self.prog.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.prog is not None:
            self.prog.__exit__(*exc)

    def on_batch(self) -> Callable[[int, int], None] | None:
        if self.prog is None:
            return None
        return lambda _lines, nbytes: self.prog.update(self.replay, advance=nbytes)

    def task(self, what: str, total: int) -> Callable[[int], None] | None:
        if self.prog is None:
            return None
        t = self.prog.add_task(what, total=max(total, 1))
        return lambda n: self.prog.update(t, advance=n)


def build_report(config: Config, pipeline: Pipeline, input_path: Path, html_path: Path, *,
                 inject: Mapping[str, Sequence[float]] | None = None,
                 inject_at: Sequence[int] | None = None, within: int = 2000,
                 horizon: int | None = None, seed: int = 0, batch_lines: int | None = None,
                 progress: bool = False,
                 share_targets: Mapping[str, str] | None = None,
                 labels_path: Path | None = None) -> dict[str, Any]:
    """Replay ``input_path``, run the what-if scenarios ``inject`` (kind -> magnitudes;
    None: none), write the page to ``html_path``; return the replay report, with a
    ``what_if`` section when scenarios ran.

    ``inject_at`` (default: the middle of the input) are input lines; each injection
    starts at the first batch end at or after its line.  Each scenario runs over at most
    ``horizon`` events of the model (default ``5 * within``); the sensitivity table
    gives the smallest magnitude whose median delay over the positions is at most
    ``within`` events.  ``share_targets``:
    column -> the category whose share the ``share`` scenario raises.  ``labels_path``:
    label events merged with the input by event time (``replay --labels``).
    """
    started = time.perf_counter()
    est = estimate_lines(input_path)
    lines = batch_lines or report_batch_lines(est)
    positions = list(inject_at or [est // 2]) if inject is not None else []
    span = horizon if horizon is not None else 5 * within
    recorder = ReportRecorder(pipeline, inject_at=positions, horizon=span)
    bar = _Progress(progress, input_path.stat().st_size)
    with bar if progress else nullcontext(bar):
        report = replay(config, pipeline, input_path, lines, bar.on_batch(), observe=recorder,
                        labels_path=labels_path)
        whatif: dict[str, list[WhatIfModel]] = {}
        if inject is not None:
            profiles = {m: base.profiles for m, base in pipeline.baselines.items()}
            total = sum(runs(seg, profiles[m], inject) for segs in recorder.segments.values()
                        for m, seg in segs.items())
            tick = bar.task("what-if", total)
            for segs in recorder.segments.values():
                for model, seg in segs.items():
                    cols = what_if(seg, profiles[model], inject, seed, tick, share_targets)
                    whatif.setdefault(model, []).append(
                        WhatIfModel(seg.at, seg.events_before, seg.n, cols))
    skipped = None
    if inject is not None and not recorder.segments:
        skipped = (f"--inject-at {','.join(map(str, positions))}: the input has only "
                   f"{report['input_lines']} lines")
    profiles = {m: base.profiles for m, base in pipeline.baselines.items()}
    page = render(report, recorder, profiles, source=input_path.name,
                  false_alarm_events=float(config.detection.false_alarm_events),
                  whatif=whatif if inject is not None else None, within=within,
                  kinds=inject, note=None if skipped is None
                  else f"No what-if scenario ran: {skipped}.")
    write_atomic(html_path, page.encode("utf-8"))
    if inject is not None:
        report["what_if"] = whatif_to_dict(whatif, within)
        if skipped is not None:
            report["what_if_skipped"] = skipped
    report["report_seconds"] = round(time.perf_counter() - started, 3)
    return report


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
