#!/usr/bin/env python3
"""Init step of the Compose stack: reference data and baselines for streamdrift.

Writes ``--events`` synthetic events WITHOUT drift (the generator of ``streamdrift demo``,
:func:`stream.demo.make_events`) to ``--reference``, then runs
``streamdrift baseline -c CONFIG --reference REFERENCE``, which profiles them and calibrates
the detectors of every model of the configuration into the model's ``baseline.file``.

In deploy/compose.yaml this runs in the ``baseline`` service (the streamdrift image) before
the ``streamdrift`` service starts; both share the volume mounted at /var/lib/streamdrift.
Run by hand (from the repository, with the package installed)::

    python deploy/compose/baseline.py --config my-config.yaml --reference /tmp/ref.jsonl
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

DEFAULT_CONFIG = "/etc/streamdrift/config.yaml"
DEFAULT_REFERENCE = "/var/lib/streamdrift/reference.jsonl"


def write_reference(path: Path, events: int, seed: int) -> None:
    """``events`` demo events without drift, one JSON object per line (written atomically)."""
    import numpy as np

    from stream.demo import make_events

    rng = np.random.default_rng(seed)
    lines = make_events(rng, events, time.time() - 86_400, False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(b"\n".join(lines) + b"\n")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"streamdrift configuration ({DEFAULT_CONFIG})")
    parser.add_argument("--reference", default=DEFAULT_REFERENCE,
                        help=f"where to write the reference events ({DEFAULT_REFERENCE})")
    parser.add_argument("--events", type=int, default=30_000,
                        help="number of reference events, both models together (30000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (7)")
    args = parser.parse_args(argv)

    from stream.cli import main as streamdrift

    reference = Path(args.reference)
    write_reference(reference, args.events, args.seed)
    print(f"wrote {args.events} reference events to {reference}", flush=True)
    return streamdrift(["--log-format", "text", "baseline", "-c", args.config,
                        "--reference", str(reference), "--no-progress"])


if __name__ == "__main__":
    sys.exit(main())
