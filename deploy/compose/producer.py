#!/usr/bin/env python3
"""Synthetic inference events for the Compose stack (the ``producer`` service).

Runs the producer of ``streamdrift demo`` (:class:`stream.demo.Producer`): events of the
two demo models at a steady rate to the topic ``inference-events``, with drift injected
into a few columns (credit: income, country; fraud: amount, score) once ``DRIFT_AFTER``
seconds have passed, and an occasional poison message. Settings come from the
environment so that deploy/compose.yaml can change them:

    BOOTSTRAP_SERVERS   Kafka bootstrap servers (kafka:9092)
    RATE                events per second (200)
    DRIFT_AFTER         seconds from start until drift is injected; negative: never (300)

Stops on SIGTERM or SIGINT; exits non-zero when producing fails (the service restarts).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping

log = logging.getLogger("streamdrift.compose.producer")


def settings(environ: Mapping[str, str]) -> tuple[str, float, float]:
    """(bootstrap servers, events per second, seconds until drift) from the environment."""
    bootstrap = environ.get("BOOTSTRAP_SERVERS", "kafka:9092").strip()
    rate = float(environ.get("RATE", "200"))
    drift_after = float(environ.get("DRIFT_AFTER", "300"))
    if not bootstrap:
        raise ValueError("BOOTSTRAP_SERVERS is empty")
    if not rate > 0:
        raise ValueError(f"RATE must be > 0, got {rate}")
    return bootstrap, rate, drift_after


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    from stream.demo import TOPIC, Producer

    bootstrap, rate, drift_after = settings(os.environ)
    drift_at = time.time() + drift_after if drift_after >= 0 else float("inf")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    producer = Producer(bootstrap, rate, drift_at)
    producer.start()
    when = "never" if drift_after < 0 else f"in {drift_after:.0f} s (at {drift_at:.3f})"
    log.info("producing %.0f events/s to %s on %s; drift %s", rate, TOPIC, bootstrap, when)
    drifting = False
    ticks = 0
    while not stop.wait(1.0) and producer.is_alive():
        ticks += 1
        if producer.drifting and not drifting:
            log.info("drift injected now")
        drifting = producer.drifting
        if ticks % 10 == 0:
            log.info("%d events sent%s", producer.sent, " (drifted)" if drifting else "")
    producer.stop_event.set()
    producer.join(timeout=15)
    if producer.error is not None:
        log.error("producing failed: %s: %s", type(producer.error).__name__, producer.error)
        return 1
    log.info("stopped after %d events", producer.sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
