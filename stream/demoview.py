"""The live view of ``streamdrift demo``: the drift table, and logs that never break it.

:func:`drift_table` renders a pipeline as a ``rich`` table, one row per model and
column: its drift episode (since when, which detectors; those still in evidence
highlighted), how many episodes it had, and the detectors' figures.  An episode
here is a column's episode merged over partitions (:class:`EpisodeTally`): the
demo's topic has three partitions, each with its own detectors and episodes, and
one injected drift opens an episode on each; the view counts it once.

While the view is live, every log record goes to a file and warnings and errors
are also printed *above* the table through the live console
(:func:`logs_above_live`): a record written straight to the terminal would land
inside the table and shift its redraw.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.engine.labelbook import QUALITY_FEATURE
from stream.logs import JsonFormatter

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from stream.engine.episodes import Episode

#: styles of the detectors of an episode: still in evidence, or already released
OPEN_STYLE = "bold red"
CLOSED_STYLE = "dim"
#: the header of each column of the table, in order
HEADERS = ("model", "column", "role", "status", "episode detectors", "episodes", "score",
           "alarms", "missing", "PSI")

ColumnKey = tuple[str, str]


@dataclass
class Span:
    """A column episode (or several overlapping ones of different partitions), located in
    the input: ``start`` and ``end`` are input indexes (``end`` is inf while open)."""

    start: float
    end: float
    opened_at: float
    detectors: list[str] = field(default_factory=list)
    open_detectors: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, ep: Episode) -> Span:
        # an episode open before a restore has no index: it began before all input
        start = -math.inf if ep.opened is None else float(ep.opened)
        end = math.inf if ep.closed is None else float(ep.closed)
        return cls(start, end, ep.opened_at, list(ep.detectors), set(ep.open_detectors))

    @property
    def is_open(self) -> bool:
        return self.end == math.inf


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Overlapping spans as one (detectors in order of opening, the union of open ones)."""
    out: list[Span] = []
    for s in sorted(spans, key=lambda s: (s.start, s.opened_at)):
        last = out[-1] if out else None
        if last is not None and s.start <= last.end:
            last.end = max(last.end, s.end)
            last.detectors += [d for d in s.detectors if d not in last.detectors]
            last.open_detectors |= s.open_detectors
        else:
            out.append(Span(s.start, s.end, s.opened_at, list(s.detectors),
                            set(s.open_detectors)))
    return out


@dataclass(frozen=True)
class ColumnEpisodes:
    """The episodes of one column, merged over partitions."""

    closed: int
    #: the open episode, if any
    open: Span | None
    #: the last closed episode, if any
    last: Span | None

    @property
    def count(self) -> int:
        return self.closed + (self.open is not None)


class EpisodeTally:
    """Counts a pipeline's column episodes merged over partitions.

    :meth:`update` reads ``Pipeline.recent_episodes`` (the last closed episodes, a
    bounded deque) and keeps every closed episode it has not seen yet, so the counts
    stay right as long as it runs more often than the deque fills up.
    :meth:`columns` adds the open episodes.
    """

    def __init__(self) -> None:
        #: id -> episode, of the episodes in the deque at the last update (the references
        #: keep their ids from being reused)
        self._seen: dict[int, Episode] = {}
        self._closed: dict[ColumnKey, list[Span]] = {}

    def update(self, recent: Iterable[Episode]) -> None:
        now = {id(ep): ep for ep in recent}
        for key, ep in now.items():
            if key not in self._seen:
                col = (ep.model, ep.feature)
                self._closed[col] = merge_spans([*self._closed.get(col, []), Span.of(ep)])
        self._seen = now

    def columns(self, open_episodes: Sequence[Episode]) -> dict[ColumnKey, ColumnEpisodes]:
        spans: dict[ColumnKey, list[Span]] = {k: list(v) for k, v in self._closed.items()}
        for ep in open_episodes:
            spans.setdefault((ep.model, ep.feature), []).append(Span.of(ep))
        out = {}
        for col, found in spans.items():
            merged = merge_spans(found)
            is_open = bool(merged) and merged[-1].is_open
            closed = merged[:-1] if is_open else merged
            out[col] = ColumnEpisodes(len(closed), merged[-1] if is_open else None,
                                      closed[-1] if closed else None)
        return out


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s // 60 % 60:02d}m"


def _detectors(span: Span | None, live: bool) -> Text:
    from rich.text import Text

    out = Text()
    if span is None:
        return Text("-", style=CLOSED_STYLE)
    for i, kind in enumerate(span.detectors):
        if i:
            out.append(" ")
        out.append(kind, style=OPEN_STYLE if live and kind in span.open_detectors
                   else CLOSED_STYLE)
    return out


def drift_table(pipeline: Any, tally: EpisodeTally, now: float | None = None,
                title: str = "", caption: str = "") -> Table:
    """The table of ``pipeline`` (a :class:`~stream.engine.pipeline.Pipeline`).

    Per column: status ``DRIFT <for how long>`` while an episode is open (``ok``
    otherwise), the episode's detectors (those still in evidence in bold red, the
    others dim; the last episode's, dim, when none is open), the number of episodes
    (merged over partitions), the best detector score, the alarms (detector episodes,
    summed over detectors and partitions, as the alarms counter), the missing share and
    the PSI.  A summary line of open and closed episodes ends the caption.
    """
    from rich.table import Table
    from rich.text import Text

    now = time.time() if now is None else now
    with pipeline.lock:  # the figures and the episodes of the same moment
        snap = pipeline.snapshot()
        open_eps = pipeline.open_episodes()
        tally.update(pipeline.recent_episodes)
        labels = pipeline.label_snapshot()
    episodes = tally.columns(open_eps)
    n_open = sum(e.open is not None for e in episodes.values())
    n_closed = sum(e.closed for e in episodes.values())
    summary = f"episodes: {n_open} open, {n_closed} closed"
    t = Table(title=title or None, caption="\n".join(filter(None, (caption, summary))),
              expand=False)
    for col in HEADERS:
        t.add_column(col, justify="right" if col in ("episodes", "score", "alarms", "missing",
                                                     "PSI") else "left")
    none = ColumnEpisodes(0, None, None)
    for model, m in snap.models.items():
        for name, s in m.columns.items():
            ep = episodes.get((model, name), none)
            if ep.open is not None:
                status = Text(f"DRIFT {_ago(now - ep.open.opened_at)}", style="bold red")
            elif s.drift:  # a detector in drift with no episode seen yet (between reads)
                status = Text("DRIFT", style="bold red")
            else:
                status = Text("ok", style="green")
            dets = s.detectors
            best = max((d.score for d in dets.values()), default=0.0)
            t.add_row(model, name, s.role, status,
                      _detectors(ep.open or ep.last, ep.open is not None), str(ep.count),
                      f"{best:.2f}", str(sum(d.alarms for d in dets.values())),
                      f"{s.ratios.get('missing_ratio', 0.0):.1%}",
                      f"{s.distances.get('psi', 0):.3f}")
    if labels is not None:
        for model, fig in labels.models.items():
            t.add_row(*quality_row(model, fig, episodes.get((model, QUALITY_FEATURE), none),
                                   now))
    return t


def quality_row(model: str, fig: Any, ep: ColumnEpisodes, now: float) -> list[Any]:
    """The model-quality row of a labelled model (``fig``: its
    :class:`~stream.engine.labelbook.LabelFigures`): accuracy (or the task's first metric)
    over the recent window of joined pairs against the labelled reference's, its
    model-quality episode (a concept-drift alarm), the concept-drift score and alarms, and
    the labels joined in the ``missing`` cell."""
    from rich.text import Text

    metric = "accuracy" if "accuracy" in fig.recent else next(iter(fig.recent), "")

    def pct(values: Any) -> str:
        v = None if values is None else values.get(metric)
        if v is None or not math.isfinite(v):
            return "-"
        return f"{v:.1%}" if metric in ("accuracy", "macro_f1") else f"{v:.3g}"

    if ep.open is not None:
        status = Text(f"DEGRADED {_ago(now - ep.open.opened_at)}", style="bold red")
    elif fig.concept_active:
        status = Text("DEGRADED", style="bold red")
    else:
        status = Text("ok", style="green")
    score = "-" if fig.concept_score is None else f"{fig.concept_score:.2f}"
    return [model, f"{metric} {pct(fig.recent)} (ref {pct(fig.baseline)})", "quality", status,
            _detectors(ep.open or ep.last, ep.open is not None), str(ep.count), score,
            str(fig.concept_alarms), f"{fig.outcomes.get('joined', 0):,} joined", "-"]


# --------------------------------------------------------------------------
# logs while the view is live
# --------------------------------------------------------------------------
class ConsoleHandler(logging.Handler):
    """Prints each record through a ``rich`` console: while a ``Live`` display runs on
    that console the line goes above it and the display is redrawn below."""

    def __init__(self, console: Console, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            self.console.print(msg, markup=False, highlight=False, emoji=False)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


@contextmanager
def logs_above_live(console: Console, log_file: str | Path,
                    echo_level: int = logging.WARNING) -> Iterator[Path]:
    """While the block runs, the root logger writes every record to ``log_file`` (in the
    format of its current first handler: JSON lines by default) and prints records at
    ``echo_level`` and above through ``console`` (one plain line each); its handlers are
    put back afterwards.  Every logger that propagates to the root (streamdrift's,
    kafka-python's) is covered."""
    path = Path(log_file)
    root = logging.getLogger()
    saved = root.handlers[:]
    fmt = next((h.formatter for h in saved if h.formatter is not None), None) or JsonFormatter()
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(fmt)
    echo = ConsoleHandler(console, echo_level)
    echo.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                        "%H:%M:%S"))
    root.handlers[:] = [to_file, echo]
    try:
        yield path
    finally:
        root.handlers[:] = saved
        to_file.close()
