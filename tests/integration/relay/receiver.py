"""A real HTTP receiver on 127.0.0.1 for the webhook relay's tests: it verifies each
POST as a receiver would (``gateway.relay.signing.verify``) and answers from a script
(``ok``, ``500``, ``slow``: answer after the relay's read timeout, ``drop``: close the
connection unanswered)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gateway.relay import signing


@dataclass(frozen=True)
class Received:
    action: str
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def document(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


class Receiver:
    def __init__(self, secret: str, *, slow_seconds: float = 1.5) -> None:
        self.secret = secret
        self.slow_seconds = slow_seconds
        self.script: list[str] = []
        self.plans: dict[str, list[str]] = {}    # event id -> its own script
        self.default = "ok"
        self.received: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k: v for k, v in self.headers.items()}
                verified = signing.verify(receiver.secret, headers, body, now=time.time())
                with receiver.lock:
                    plan = receiver.plans.get(headers.get(signing.EVENT_ID_HEADER, ""))
                    action = (plan.pop(0) if plan else receiver.script.pop(0)
                              if receiver.script else receiver.default)
                    receiver.received.append(Received(action, headers, body, verified))
                if action == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if action == "slow":
                    time.sleep(receiver.slow_seconds)
                status = 500 if action == "500" else 200 if verified else 401
                payload = b'{"ok":true}' if status == 200 else b'{"error":"nope"}'
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:    # "slow": the relay stopped waiting and hung up
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/refunds"

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def accepted(self) -> list[Received]:
        """What the receiver took (verified and answered 200)."""
        with self.lock:
            return [r for r in self.received if r.verified and r.action in ("ok", "slow")]
