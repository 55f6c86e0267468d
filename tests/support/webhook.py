"""An HTTP server on 127.0.0.1 recording every notification an Alertmanager delivers."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Notification:
    at: float  # time.monotonic() of the delivery
    path: str
    payload: dict

    @property
    def alerts(self) -> list[dict]:
        return self.payload.get("alerts", [])

    @property
    def alertnames(self) -> set[str]:
        return {a["labels"].get("alertname", "") for a in self.alerts}


class Webhook:
    """Records every POST as a :class:`Notification` (an unparsable body as
    ``{"unparsable": text}``); ``url`` is its base URL, ``netloc`` its host:port."""

    def __init__(self) -> None:
        self.received: list[Notification] = []
        lock = threading.Lock()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    payload = json.loads(body or b"{}")
                except ValueError:
                    payload = {"unparsable": body.decode(errors="replace")}
                with lock:
                    received.append(Notification(time.monotonic(), self.path, payload))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="webhook")
        self.thread.start()
        self.netloc = f"127.0.0.1:{self.server.server_port}"
        self.url = f"http://{self.netloc}"

    def notifications(self) -> list[Notification]:
        return list(self.received)

    def alerts(self, path: str) -> list[dict]:
        """Every alert delivered to ``path`` so far."""
        return [a for n in self.notifications() if n.path == path for a in n.alerts]

    def summary(self) -> str:
        return "\n".join(
            f"  {n.path} status={n.payload.get('status')} "
            + ", ".join(sorted(f"{a['labels'].get('alertname')}{{feature="
                               f"{a['labels'].get('feature', '')}}}={a.get('status')}"
                               for a in n.alerts))
            for n in self.notifications()) or "  (none)"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
