"""The ``streamdrift`` command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import stream
from detectors.errors import StreamdriftError

log = logging.getLogger("streamdrift")

EXIT_CONFIG = 2


def _progress_printer(enabled: bool) -> Any:
    """A calibration progress callback that draws a rich progress bar on stderr."""
    if not enabled:
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn("[bold]calibrating[/] {task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True)
    task = prog.add_task("", total=1)

    def cb(what: str, i: int, n: int) -> None:
        prog.update(task, description=what, completed=i, total=n)

    return prog, cb


def _input_file(arg: str) -> Path | None:
    """``--input`` as a path, or None after saying on stderr why it cannot be read."""
    src = Path(arg)
    if not src.is_file():
        problem = "no such file" if not src.exists() else "not a regular file"
        print(f"error: --input {src}: {problem}", file=sys.stderr)
        return None
    return src


def _load(args: argparse.Namespace) -> Any:
    from stream.config import load_config

    return load_config(args.config)


def _baselines(config: Any, show_progress: bool) -> dict[str, Any]:
    from stream.engine.baselines import resolve_baselines

    prog, cb = _progress_printer(show_progress)
    if prog is None:
        return resolve_baselines(config)
    with prog:
        return resolve_baselines(config, cb)


def cmd_check_config(args: argparse.Namespace) -> int:
    from stream.config import check_paths

    config = _load(args)
    errors = check_paths(config, files=not args.skip_files)
    if not errors and not args.skip_files:
        errors = _check_baselines(config)
    if errors:
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    from detectors.catalogue import series_per_detector

    n_series = 0
    for m in config.models:
        cols = [*m.features, *m.predictions]
        print(f"model {m.name}: {len(m.features)} features, {len(m.predictions)} predictions")
        for c in cols:
            n_series += (sum(series_per_detector(d) for d in c.detectors)
                         + (3 if c.type == "numeric" else 2) + 3 + 3)
            print(f"  {c.role:10s} {c.name:24s} {c.type:11s} detectors: {', '.join(c.detectors)}")
        # info, processed, invalid timestamps, last event time, lag, 2 drifting, incomplete
        # events, incomplete ratio, data quality active
        n_series += 10
        for g in m.multivariate:  # streamdrift_multivariate_* (stream.sinks.multivariate_metrics)
            print(f"  group      {g.name:24s} {len(g.columns)} columns, method {g.method}")
            n_series += 9
        for v in m.vectors:  # streamdrift_vector_* (stream.sinks.vector_metrics)
            from stream.sinks.vector_metrics import SERIES_PER_VECTOR

            print(f"  vector     {v.name:24s} dim {v.dim}, {v.components} components")
            n_series += SERIES_PER_VECTOR
        if m.segments:
            from stream.engine.segments import describe, series_bound

            print("\n".join(describe(m)))
            print(f"  segments: at most {series_bound(m)} series (monitored values x "
                  f"(1 + 2 x columns)); the model-wide monitor keeps half the false-alarm "
                  f"budget")
            n_series += series_bound(m)
        if m.bias is not None:  # bias drift (#16.2)
            from stream.engine import bias as bias_engine

            print("\n".join(bias_engine.describe(m)))
            print(f"  bias: at most {bias_engine.series_bound(m)} series; the facets take "
                  f"10 % of the false-alarm budget")
            n_series += bias_engine.series_bound(m)
        # attribution drift and root cause (#16 items 3-4; stream.sinks.attribution_metrics)
        from stream.engine.attribution import describe_attribution

        line, extra = describe_attribution(m)
        print(line)
        n_series += extra
        if config.detection.partition_check.enabled:
            # partition skew (once two partitions are compared): score, effect, active per
            # cause per column; partitions compared and checks per model
            n_series += 4 * len(cols) + 2
        if m.labels is not None:
            from detectors.quality_metrics import METRICS

            # outcomes, pending, early, newest label time, quality metrics x 3 scopes
            n_series += 7 + 3 + 3 * len(METRICS[m.labels.task])
            where = m.labels.topic or "the inference topic (labels.select)"
            print(f"  labels     from {where}, task {m.labels.task}, horizon "
                  f"{m.labels.horizon_s:g} s")
            if m.labels.estimate is not None:  # estimated performance (docs/metrics.md)
                n_series += 32
                print(f"  estimate   CBPE over {m.labels.estimate.window} predictions per "
                      f"partition, calibration {m.labels.estimate.calibration}")
    print(f"configuration OK: {len(config.models)} model(s), about {n_series} per-model series "
          f"plus the pipeline's own")
    return 0


def _check_baselines(config: Any) -> list[str]:
    """Problems of the baseline files (loaded and checked as ``run`` and ``replay`` load
    them) and of the reference files (regular files within the size limit)."""
    from stream.config import ConfigError
    from stream.config.files import MAX_REFERENCE_BYTES, regular_file
    from stream.engine.baselines import load_model_baseline

    errors: list[str] = []
    for i, model in enumerate(config.models):
        try:
            if model.baseline.file is not None:
                base = load_model_baseline(config, model, warn=False)
                if not base.verified:
                    print(f"warning: models[{i}].baseline.file: {model.baseline.file} has no "
                          f"sha256 (written by an older streamdrift), so edits to it cannot "
                          f"be detected; rebuild it with `streamdrift baseline`",
                          file=sys.stderr)
            elif model.baseline.reference is not None:
                try:
                    regular_file(model.baseline.reference, "reference", MAX_REFERENCE_BYTES)
                except ConfigError as exc:
                    raise ConfigError(f"models[{i}].baseline.reference: {exc.errors[0]}") \
                        from None
        except ConfigError as exc:
            errors.extend(exc.errors)
    return errors


def cmd_baseline(args: argparse.Namespace) -> int:
    from stream.engine.baselines import build_baseline, default_baseline_path, save_baseline

    config = _load(args)
    models = [m for m in config.models if args.model in (None, m.name)]
    if not models:
        print(f"error: --model {args.model}: no such model in {args.config}; models: "
              f"{', '.join(m.name for m in config.models)}", file=sys.stderr)
        return EXIT_CONFIG
    if args.output and len(models) > 1:
        print("error: --output names one file; add --model to choose which model",
              file=sys.stderr)
        return EXIT_CONFIG
    for m in models:
        prog, cb = _progress_printer(not args.no_progress)
        ref = Path(args.reference) if args.reference else None
        if prog is None:
            base = build_baseline(config, m, ref)
        else:
            with prog:
                base = build_baseline(config, m, ref, cb)
        out = Path(args.output) if args.output else default_baseline_path(config, m)
        save_baseline(base, out)
        cols = len(base.profiles)
        print(f"{m.name}: baseline {base.id} from {base.meta.get('reference_events')} events, "
              f"{cols} columns, calibrated in {base.meta.get('calibration_seconds')} s "
              f"-> {out}")
    return 0


def _bad_labels(args: argparse.Namespace, config: Any) -> bool:
    """``--labels``: says what is wrong (True) with the file or the configuration."""
    if args.labels is None:
        return False
    if not Path(args.labels).is_file():
        print(f"error: --labels {args.labels}: no such file", file=sys.stderr)
        return True
    if not any(m.labels for m in config.models):
        print("error: --labels: no model of the configuration has a labels: section; add one "
              "(see docs/labels.md)", file=sys.stderr)
        return True
    return False


def cmd_replay(args: argparse.Namespace) -> int:
    from stream.engine.pipeline import Pipeline
    from stream.runtime.replay import replay, write_report

    config = _load(args)
    src = _input_file(args.input)
    if src is None:
        return EXIT_CONFIG
    if _bad_labels(args, config):
        return EXIT_CONFIG
    labels = None if args.labels is None else Path(args.labels)
    if Path(args.report).is_dir():  # found now rather than after the replay
        print(f"error: --report {args.report}: cannot write: is a directory", file=sys.stderr)
        return EXIT_CONFIG
    show = not args.no_progress and sys.stderr.isatty()
    if args.html:
        return _report(args, config, src, show, json_path=Path(args.report))
    baselines = _baselines(config, show)
    pipeline = Pipeline(config, baselines)
    if show:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        with Progress(TextColumn("[bold]replay[/]"), BarColumn(), DownloadColumn(),
                      TextColumn("{task.fields[lines]} lines"), TimeRemainingColumn(),
                      console=Console(stderr=True)) as prog:
            task = prog.add_task("", total=src.stat().st_size, lines=0)
            report = replay(config, pipeline, src, args.batch_size,
                            lambda lines, nbytes: prog.update(task, advance=nbytes, lines=lines),
                            labels_path=labels)
    else:
        report = replay(config, pipeline, src, args.batch_size, labels_path=labels)
    try:
        write_report(report, Path(args.report))
    except OSError as exc:
        print(f"error: --report {args.report}: cannot write: "
              f"{exc.strerror or type(exc).__name__}", file=sys.stderr)
        return EXIT_CONFIG
    inv = sum(report["events_invalid"].values())
    print(f"{report['input_lines']} lines, {report['events_processed']} events processed, "
          f"{inv} invalid, {len(report['detections'])} detections -> {args.report}")
    return 0


def _report(args: argparse.Namespace, config: Any, src: Path, show: bool,
            json_path: Path | None) -> int:
    """``report`` and ``replay --html``: the replay with the HTML report (stream.report)."""
    from stream.engine.pipeline import Pipeline
    from stream.report.build import build_report
    from stream.report.inject import parse_inject
    from stream.runtime.replay import write_report

    inject = getattr(args, "inject", None)
    try:
        kinds = None if inject is None else parse_inject(inject)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    for flag in ("within", "horizon"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            print(f"error: --{flag} {value}: must be >= 1", file=sys.stderr)
            return EXIT_CONFIG
    at = getattr(args, "inject_at", None)
    positions = None
    if at is not None:
        try:
            positions = [int(v) for v in at.split(",") if v.strip()]
        except ValueError:
            positions = []
        if not positions or min(positions) < 0:
            print(f"error: --inject-at {at}: must be input lines >= 0, comma-separated "
                  f"(e.g. 100000,400000)", file=sys.stderr)
            return EXIT_CONFIG
    targets: dict[str, str] = {}
    for spec in getattr(args, "share_category", None) or []:
        col, sep, cat = spec.partition("=")
        kinds_of = {c.name: c.type for m in config.models for c in m.columns}
        if not sep or not cat or kinds_of.get(col) != "categorical":
            print(f"error: --share-category {spec}: must be COLUMN=CATEGORY with a categorical "
                  f"column; categorical columns: "
                  f"{', '.join(sorted(c for c, t in kinds_of.items() if t == 'categorical'))}",
                  file=sys.stderr)
            return EXIT_CONFIG
        targets[col] = cat
    html = Path(args.html)
    if html.is_dir():
        print(f"error: --html {html}: cannot write: is a directory", file=sys.stderr)
        return EXIT_CONFIG
    pipeline = Pipeline(config, _baselines(config, show))
    try:
        report = build_report(
            config, pipeline, src, html, inject=kinds, inject_at=positions,
            within=getattr(args, "within", None) or 2000, horizon=getattr(args, "horizon", None),
            seed=getattr(args, "seed", 0), batch_lines=getattr(args, "explicit_batch", None),
            progress=show, share_targets=targets,
            labels_path=Path(args.labels) if getattr(args, "labels", None) else None)
        if json_path is not None:
            write_report(report, json_path)
    except OSError as exc:
        print(f"error: cannot write {exc.filename or 'the report'}: "
              f"{exc.strerror or type(exc).__name__}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{report['input_lines']} lines, {report['events_processed']} events processed, "
          f"{len(report['episodes'])} episodes -> {html}"
          + (f", {json_path}" if json_path else ""))
    if report.get("what_if_skipped"):
        print(f"warning: no what-if scenario ran: {report['what_if_skipped']}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    config = _load(args)
    src = _input_file(args.input)
    if src is None or _bad_labels(args, config):
        return EXIT_CONFIG
    show = not args.no_progress and sys.stderr.isatty()
    return _report(args, config, src, show, Path(args.json) if args.json else None)


def _install_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: Any) -> None:
        log.info("signal received, stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def cmd_run(args: argparse.Namespace) -> int:
    from stream.config import require_kafka
    from stream.engine.pipeline import Pipeline
    from stream.runtime.runner import KafkaRunner
    from stream.sinks.metrics import serve

    config = _load(args)
    require_kafka(config)
    if args.stage != "both" and config.source.repartition is None:
        print(f"error: --stage {args.stage} needs source.repartition in the configuration",
              file=sys.stderr)
        return EXIT_CONFIG
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        print(f"error: --metrics-port {args.metrics_port}: must be a port number in 0..65535",
              file=sys.stderr)
        return EXIT_CONFIG
    baselines = _baselines(config, sys.stderr.isatty())
    pipeline = Pipeline(config, baselines)
    stop = threading.Event()
    runner: Any
    if config.source.repartition is None:
        runner = KafkaRunner(config, pipeline, stop)
    else:
        from stream.runtime.monitors import FramedRunner, monitor_config
        from stream.runtime.twostage import TwoStageRunner, first_stage

        if args.stage == "repartition":
            runner = first_stage(config, pipeline, stop)
        elif args.stage == "monitor":
            runner = FramedRunner(monitor_config(config), pipeline, stop)
        else:
            runner = TwoStageRunner(config, pipeline, stop)
    port = config.metrics.port if args.metrics_port is None else args.metrics_port
    server, _thread, bound = serve(pipeline, config.metrics.host, port, health=runner.health)
    scheme = getattr(server, "scheme", "http")
    log.info("metrics served", extra={"url": f"{scheme}://{config.metrics.host}:{bound}/metrics"})
    _install_signals(stop)
    try:
        if args.stage == "repartition":
            runner.run()
        else:
            runner.run(max_events=args.max_events, idle_timeout=args.idle_timeout)
    finally:
        server.shutdown()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from stream.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="streamdrift",
        description="Real-time drift detection for ML models: Kafka in, Prometheus out.")
    p.add_argument("--version", action="version", version=f"streamdrift {stream.__version__}")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="json", choices=["json", "text"])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-c", "--config", required=True, help="configuration file (YAML)")

    sp = sub.add_parser("check-config", help="validate a configuration without running")
    with_config(sp)
    sp.add_argument("--skip-files", action="store_true",
                    help="do not require baseline files to exist yet")
    sp.set_defaults(func=cmd_check_config)

    sp = sub.add_parser("baseline", help="build a baseline file (profiles + calibrated "
                                         "thresholds) from reference data")
    with_config(sp)
    sp.add_argument("--model", help="only this model")
    sp.add_argument("--reference", help="reference data (.jsonl events, .csv, .parquet); "
                                        "default: the model's baseline.reference")
    sp.add_argument("-o", "--output", help="output file; default: the model's baseline.file "
                                           "or MODEL.baseline.json beside the config")
    sp.add_argument("--no-progress", action="store_true")
    sp.set_defaults(func=cmd_baseline)

    sp = sub.add_parser("replay", help="run the pipeline over a JSONL file and write a report")
    with_config(sp)
    sp.add_argument("--input", required=True, help="events, one JSON object per line")
    sp.add_argument("--report", required=True, help="where to write the JSON report")
    sp.add_argument("--batch-size", type=int, default=5000, help="lines per batch (5000)")
    sp.add_argument("--html", help="also write the HTML report here (see `report`)")
    sp.add_argument("--labels", help="label events (JSONL), merged with the input by event time")
    sp.add_argument("--no-progress", action="store_true")
    sp.set_defaults(func=cmd_replay)

    sp = sub.add_parser("report", help="replay a history and write an HTML report, "
                                       "optionally with what-if drifts injected")
    with_config(sp)
    sp.add_argument("--input", required=True, help="events, one JSON object per line")
    sp.add_argument("--html", required=True, help="where to write the HTML report")
    sp.add_argument("--json", help="also write the JSON report (replay's, plus what_if)")
    sp.add_argument("--labels", help="label events (JSONL), merged with the input by event "
                    "time (model-quality episodes, as replay --labels)")
    sp.add_argument("--inject", nargs="*", action="extend", metavar="KIND[=M1,M2]",
                    help="what-if drifts: mean (shift, sd), variance (sd factor), share "
                    "(share gained by the top category), missing (rise of the missing "
                    "rate); no value: all four with default magnitudes")
    sp.add_argument("--inject-at", metavar="LINE[,LINE...]", help="input line(s) where the "
                    "drifts start, each injected separately; several give median delays "
                    "(default: the middle of the input)")
    sp.add_argument("--within", type=int, help="sensitivity: smallest drift seen within this "
                    "many events of the model (2000)")
    sp.add_argument("--horizon", type=int, help="events followed after the injection "
                    "(default 5 x --within)")
    sp.add_argument("--share-category", action="append", metavar="COLUMN=CATEGORY",
                    help="the category whose share `share` raises in COLUMN (default: its "
                    "most frequent reference category); repeatable")
    sp.add_argument("--seed", type=int, default=0, help="seed of the random injections (0)")
    sp.add_argument("--batch-size", type=int, dest="explicit_batch",
                    help="lines per batch (default: about 500 batches over the input)")
    sp.add_argument("--no-progress", action="store_true")
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser("run", help="consume the configured Kafka topics and serve /metrics")
    with_config(sp)
    sp.add_argument("--metrics-port", type=int, help="override metrics.port (0 = any free)")
    sp.add_argument("--max-events", type=int, help="stop after this many messages")
    sp.add_argument(
        "--idle-timeout",
        type=float,
        help="stop after this many seconds without events while partitions are assigned "
        "(waiting to join the group does not count)",
    )
    sp.add_argument(
        "--stage", choices=["both", "repartition", "monitor"], default="both",
        help="with source.repartition: run both stages (default), only the first "
        "(source -> repartition topic) or only the monitors (repartition topic -> metrics)")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("demo", help="local broker + synthetic producer + live drift view")
    sp.add_argument("--bootstrap-servers", help="use this broker instead of starting one")
    sp.add_argument("--duration", type=float, default=0,
                    help="stop after this many seconds (0 = until Ctrl-C)")
    sp.add_argument("--drift-after", type=float, default=45.0,
                    help="seconds before drift is injected (45)")
    sp.add_argument("--rate", type=float, default=2000.0, help="events per second (2000)")
    sp.add_argument("--concept-after", type=float, default=20.0,
                    help="seconds before fraud's P(y|x) changes, seen only through its "
                         "labels (20)")
    sp.add_argument("--metrics-port", type=int, default=9108)
    sp.add_argument("--workdir", help="folder for the demo's config and data")
    sp.add_argument("--no-live", action="store_true", help="print lines instead of a live view")
    sp.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from stream.logs import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format == "json")
    try:
        return int(args.func(args) or 0)
    except StreamdriftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
