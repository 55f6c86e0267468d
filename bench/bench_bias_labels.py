"""Bias drift of the joined pairs (recall and accuracy differences): what it costs per
labelled event.

In one process, no broker.  The labelled events of ``tests/support/biaslabels.py`` (model
m1: one numeric feature, the score; facets ``sex``, 3 values, and ``age``, 4 values,
outside the model's columns; binary labels, every event labelled) go through
``Pipeline.process`` (predictions, batches of 500) and ``Pipeline.process_labels`` (their
labels, 500 events behind) of two pipelines interleaved batch by batch, so that they see
the same machine state: one with the facets' label-based monitors, one with them switched
off (``LabelBook.bias`` emptied: no facet values carried in the join, no monitors fed).
Everything else is the same (DPPL, label join, quality metrics, concept drift).
Cost per labelled event = (time with - time without) / events; also the ratio.

Writes ``bench/results/bias-labels.md``.

Usage::

    .venv/bin/python bench/bench_bias_labels.py                 # ~2 min
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "bias-labels.md"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BATCH = 500


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _pipelines(folder: Path) -> tuple[Any, Any]:
    import yaml

    from stream.config import load_config
    from stream.engine.baselines import resolve_baselines
    from stream.engine.pipeline import Pipeline
    from tests.support.biaslabels import labelled_bias_model, write_labelled_reference

    write_labelled_reference(folder / "reference.jsonl")
    cfg = {"source": {"timestamp": {"path": "ts", "unit": "s"}},
           "models": [labelled_bias_model("labels")]}
    (folder / "c.yaml").write_text(yaml.safe_dump(cfg))
    config = load_config(folder / "c.yaml")
    baselines = resolve_baselines(config)
    with_, without = Pipeline(config, baselines), Pipeline(config, baselines)
    assert with_.labels is not None and without.labels is not None and with_.labels.bias
    without.labels.bias = {}
    return with_, without


def cost(n: int, rounds: int, seed: int) -> dict[str, Any]:
    from tests.support.biaslabels import labelled_facets

    with tempfile.TemporaryDirectory() as tmp:
        with_, without = _pipelines(Path(tmp))
        per_round: list[tuple[float, float]] = []
        for r in range(rounds):
            s = labelled_facets(n, seed + r, start=r * n)
            events, labels = s.events(), s.labels()
            took = {id(with_): 0.0, id(without): 0.0}
            for i in range(0, n, BATCH):
                for p in ((with_, without) if (i // BATCH) % 2 else (without, with_)):
                    t0 = time.perf_counter()
                    p.process(events[i:i + BATCH], base_index=r * n + i)
                    if i >= BATCH:
                        p.process_labels(labels[i - BATCH:i], topic="labels")
                    took[id(p)] += time.perf_counter() - t0
            per_round.append((took[id(with_)] / n * 1e6, took[id(without)] / n * 1e6))
            log(f"round {r}: with {per_round[-1][0]:.2f} us, without {per_round[-1][1]:.2f} "
                f"us per labelled event")
        fed = dict(with_.labels.bias["m1"].pairs)
    return {"with_us": statistics.median(a for a, _ in per_round),
            "without_us": statistics.median(b for _, b in per_round),
            "added_us": statistics.median(a - b for a, b in per_round),
            "ratio": statistics.median(a / b for a, b in per_round),
            "rounds": per_round, "fed": fed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    res = cost(args.events, args.rounds, args.seed)
    lines = [
        "# Bias drift of the joined pairs: cost per labelled event",
        "",
        f"`bench/bench_bias_labels.py --events {args.events} --rounds {args.rounds} "
        f"--seed {args.seed}`: model m1, facets sex (3 values) and age (4), every event "
        f"labelled; predictions and their labels through two pipelines interleaved batch by "
        f"batch (batches of {BATCH}), with and without the facets' recall and accuracy "
        "monitors (everything else alike). Medians over the rounds (of each column, of the "
        "per-round differences and ratios), microseconds per "
        "labelled event (prediction decoded and monitored, label decoded and joined).",
        "",
        "| with | without | added | ratio |",
        "| --- | --- | --- | --- |",
        f"| {res['with_us']:.2f} | {res['without_us']:.2f} | {res['added_us']:.2f} | "
        f"{res['ratio']:.3f} |",
        "",
        "Rounds (with, without): " + ", ".join(f"({a:.2f}, {b:.2f})" for a, b in res["rounds"]),
        "",
        f"Pairs fed to the label monitors: {res['fed']}",
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
