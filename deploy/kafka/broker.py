#!/usr/bin/env python3
"""The local Kafka broker's command line, from a checkout: ``fetch``, ``run``, ``check``.

    python deploy/kafka/broker.py fetch                  # only fetch the classpath (Maven)
    python deploy/kafka/broker.py run [--port 9092]      # foreground broker until Ctrl-C
    python deploy/kafka/broker.py check                  # start, round-trip a message, stop

The launcher is the package module :mod:`stream.broker` (``python -m stream.broker`` is the
same command line); this script only puts this checkout first on ``sys.path``, so that its
own ``stream`` package runs whatever is installed in the interpreter.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    from stream.broker.cli import main

    sys.exit(main(prog="broker.py"))
