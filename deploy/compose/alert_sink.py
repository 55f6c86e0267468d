#!/usr/bin/env python3
"""Stand-in for the paging and ticketing systems of the Compose stack (``alert-sink``).

deploy/alertmanager/alertmanager.yml ships placeholder receivers that post to webhooks on
127.0.0.1:5001 (/pager, /tickets, /deadmansswitch). In the Compose stack this server runs
in the network namespace of the alertmanager container, so those placeholders reach it,
and it prints one line per alert of every notification: follow them with
``docker compose -f deploy/compose.yaml logs -f alert-sink``. Replace the receivers with
real integrations before using the Alertmanager configuration anywhere else.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 4 * 1024 * 1024


def describe(receiver: str, payload: dict[str, Any]) -> list[str]:
    """One line per alert of an Alertmanager webhook notification."""
    lines = []
    for alert in payload.get("alerts") or []:
        labels = alert.get("labels") or {}
        where = " ".join(f"{k}={labels[k]}" for k in ("model", "feature") if k in labels)
        summary = (alert.get("annotations") or {}).get("summary", "")
        lines.append(f"[{receiver}] {alert.get('status', '?').upper():8s} "
                     f"{labels.get('alertname', '?')} severity={labels.get('severity', '-')}"
                     f"{' ' + where if where else ''}: {summary}")
    return lines


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= MAX_BODY:
            self.send_error(413)
            return
        try:
            payload = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self.send_error(400, "not JSON")
            return
        receiver = self.path.strip("/") or "webhook"
        for line in describe(receiver, payload if isinstance(payload, dict) else {}):
            print(line, flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # one line per alert is printed above; no access log


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    # PID 1 of its container: SIGTERM (docker stop) would be ignored without a handler.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"alert sink listening on {args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
