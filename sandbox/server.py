"""``SandboxServer``: one loopback HTTP server for all four channels and the control API.

Framework-level faults live here because they are about the connection, not the
channel (``POST /_sandbox/faults``, any route, operation refund | query | statement |
download, or omitted for all of them):

* ``drop_before_commit``: the connection is closed before anything executes.
* ``http_500``: the channel's own 500 answer, nothing executed.
* ``timeout_after_commit``: the request executes, then the answer stalls for
  ``stall_seconds`` (default 3, past the client's read timeout) and the connection is
  closed without an answer.
* ``truncated_body``: the request executes and the answer goes out with its status,
  headers and FULL ``Content-Length``, then only the first half of the body bytes, and
  the connection is closed (a broken body: the client sees a short read).
* ``latency``: ``{"ms": 150, "jitter_ms": 50, "where": "before"|"after"}`` delays the
  answer by ``ms`` +- a uniform ``jitter_ms`` (never below 0; seeded). ``before``
  (default): the delay comes before the channel handles the request, like a slow
  channel, so a client that gives up early has left before the refund executes (it
  still executes); ``after``: the request executes at once and the answer waits.
  Stacks with every other fault (a slow 500, a slow cut body). ``"count": null`` delays
  every matching request until reset; with no operation it covers every refund,
  query, statement and download request of the route (WeChat's apply-abnormal-refund
  takes no faults).

Every connection has its own thread (``ThreadingHTTPServer``) and nothing holds the
state lock while stalling or delaying, so N concurrent requests under a 150 ms latency
answer in about 150 ms, not N x 150 ms; the listen backlog is sized for bursts.

Notifications are delivered by a background thread with the channel's retry
schedule compressed into seconds; without a notify URL they wait in
``pending_notifications()`` for tests that feed them to a handler directly.

``state_path`` (``sandbox serve --state``) keeps the run in a SQLite file
(``sandbox.state_file``): payments, executed refunds, notifications, the id counter and
config through ``State``; here, the run's keys, each channel's certificates and the
receipt signing key, so a sandbox restarted on the file signs as before and the env file
it writes again is the same. Every answer leaves after its changes are written.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass, fields, replace
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox.channel import Channel
from sandbox.control import handle_control
from sandbox.http import Headers, Request, Response
from sandbox.keys import SandboxKeys
from sandbox.state import (
    FAULT_KINDS,
    FRAMEWORK_FAULTS,
    LATENCY,
    STATEMENT_FAULTS,
    Notification,
    State,
)
from sandbox.state_file import StateFile, keepable

INBOX_PATH = "/_sandbox/inbox/"
INBOX_SETTINGS = {"alipay": "NOTIFY_URL", "wechatpay": "NOTIFY_URL", "bankcard": "BACK_URL"}
# Compressed versions of the channels' redelivery schedules (WeChat: 15s/15s/30s/3m...).
RETRY_SCHEDULE = (0.2, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4)
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")


def _to_inbox(url: str | None) -> bool:
    """Notifications with no URL, or addressed to the sandbox's own inbox, are held for
    ``pending_notifications()`` instead of being POSTed."""
    return url is None or INBOX_PATH in url


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    # The answer goes out in two writes (headers, then body); on a kept-alive connection
    # Nagle holds the body until the client's delayed ACK (~40 ms). Real channels do not.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the sandbox's record is the truth endpoint, not an access log."""

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_port}"
        request = Request(self.command, self.path, Headers(dict(self.headers.items())),
                          body, f"http://{host}")
        outcome = self.server.sandbox.dispatch(request)
        if outcome is None:       # drop the connection without an answer
            self.close_connection = True
            return
        if outcome.delay:         # latency "after": executed, the answer waits
            time.sleep(outcome.delay)
        response = outcome.response
        if outcome.stall:
            time.sleep(outcome.stall)
            self.close_connection = True
            return
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if outcome.truncate:      # the full length announced, half of it sent
            self.wfile.write(response.body[:len(response.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = _serve


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the server sends an answer: as is, after ``delay`` s, stalled ``stall`` s then
    dropped, or cut in half (``truncate``)."""

    response: Response
    stall: float = 0.0
    delay: float = 0.0
    truncate: bool = False


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog is 5: a burst of concurrent clients (the latency
    # fault under load) would wait on SYN retries instead of being accepted at once.
    request_queue_size = 512
    sandbox: SandboxServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up before its (delayed, stalled or cut) answer is no error:
        it gave up, as clients do. Anything else is printed as usual."""
        if isinstance(sys.exc_info()[1], ConnectionError):   # broken pipe, reset
            return
        super().handle_error(request, client_address)


class SandboxServer:
    """Start with ``start()`` (a free port unless one is given); ``url``; ``stop()``.

    ``state_path``: a SQLite state file to keep the run in and, when it holds one, to
    resume (its keys, certificates, seed, payments, refunds and notifications win over
    ``seed``); faults stay in memory. ``StateFileError`` when another sandbox holds it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, seed: int = 0,
                 keys: SandboxKeys | None = None,
                 state_path: str | Path | None = None) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the sandbox serves loopback only")
        from sandbox.alipay import AlipayChannel  # noqa: PLC0415 - avoid import cycles
        from sandbox.balance import BalanceChannel  # noqa: PLC0415
        from sandbox.unionpay import UnionPayChannel  # noqa: PLC0415
        from sandbox.wechatpay import WechatPayChannel  # noqa: PLC0415

        self._file = StateFile(state_path) if state_path is not None else None
        try:
            self.state = State(seed, store=self._file)
            self.keys = self._keys(keys)
            self.channels: list[Channel] = [
                cls(self.state, self.keys)
                for cls in (AlipayChannel, WechatPayChannel, UnionPayChannel, BalanceChannel)]
            self._keep_certificates()
            self._http = _HTTPServer((host, port), _Handler)
        except BaseException:
            if self._file is not None:
                self._file.close()
            raise
        self._http.sandbox = self
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def channel(self, route: str) -> Channel:
        for channel in self.channels:
            if channel.route == route:
                return channel
        raise KeyError(route)

    def start(self) -> SandboxServer:
        for target in (self._http.serve_forever, self._deliver_loop):
            thread = threading.Thread(target=target, daemon=True, name=f"sandbox-{target}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._threads:         # shutdown() waits for a serve_forever that never ran
            self._http.shutdown()
        self._http.server_close()
        self.state.close()

    # -- the state file ---------------------------------------------------------------
    def _keys(self, given: SandboxKeys | None) -> SandboxKeys:
        """The run's keys: the state file's (a restart), else ``given`` or fresh ones,
        then kept in the file. Fields the file lacks (a newer sandbox) are fresh."""
        if self._file is None:
            return given or SandboxKeys.generate()
        saved = self._file.get("keys")
        if saved is not None and given is not None:
            raise ValueError("the state file has its keys already; give keys or a new file")
        names = {f.name for f in fields(SandboxKeys)}
        if saved is not None and names <= set(saved):
            return SandboxKeys(**{k: v for k, v in saved.items() if k in names})
        keys = given or SandboxKeys.generate()
        if saved is not None:
            keys = replace(keys, **{k: v for k, v in saved.items() if k in names})
        self._file.put("keys", {f.name: getattr(keys, f.name) for f in fields(keys)})
        return keys

    def _keep_certificates(self) -> None:
        """Each channel's key and certificate material (what its constructor made: e.g.
        UnionPay's CA chain): the state file's when it has them, else kept in it."""
        if self._file is None:
            return
        saved = self._file.get("channels") or {}
        for channel in self.channels:
            for name, value in (saved.get(channel.route) or {}).items():
                setattr(channel, name, value)
        self._file.put("channels", {channel.route: {
            name: value for name, value in vars(channel).items()
            if name not in ("state", "keys") and keepable(value)}
            for channel in self.channels})

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- settings ---------------------------------------------------------------------
    def settings(self) -> dict[str, str]:
        """REFUND_GATEWAY_* settings that point a gateway at this sandbox (keys included).

        Where a channel needs a notification URL (UnionPay's backUrl is mandatory) and
        none is configured, it points at this sandbox's inbox: notifications sent there
        wait in ``pending_notifications()`` for a test or the demo to hand them over.
        """
        out: dict[str, str] = {}
        for channel in self.channels:
            out.update(channel.client_settings(self.url))
        for route, field_name in INBOX_SETTINGS.items():
            key = f"REFUND_GATEWAY_{route.upper()}__{field_name}"
            out.setdefault(key, self.state.notify_urls.get(route) or self.inbox_url(route))
        return out

    def inbox_url(self, route: str) -> str:
        return f"{self.url}{INBOX_PATH}{route}"

    def write_env_file(self, path: str | Path) -> Path:
        """The settings, plus a fresh Ed25519 receipt signing key and its key id, so the
        gateway pointed at this sandbox makes transfer receipts (``receipt`` needs one)."""
        lines = ["# Written by `refund-gateway sandbox serve`: sandbox keys, never real ones."]
        for key, value in sorted({**self.settings(), **self._receipt_settings()}.items()):
            lines.append(f"{key}={json.dumps(value)}")   # "\n" escapes survive dotenv
        target = Path(path)
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return target

    def _receipt_settings(self) -> dict[str, str]:
        """New each time; with a state file, the first ones again (the env file a
        restarted sandbox writes stays the one the gateway was given)."""
        if self._file is None:
            return receipt_settings()
        saved = self._file.get("receipts")
        if saved is None:
            saved = receipt_settings()
            self._file.put("receipts", saved)
        return dict(saved)

    # -- requests ---------------------------------------------------------------------
    def dispatch(self, request: Request) -> Outcome | None:
        """The answer to one request and how to send it; None: drop the connection.
        Runs on the connection's own thread; may sleep (latency), never under the lock."""
        if request.path.startswith("/_sandbox/"):
            outcome: Outcome | None = Outcome(handle_control(self, request))
        else:
            channel = next((c for c in self.channels
                            if request.path.startswith(c.prefixes)), None)
            if channel is None:
                return Outcome(Response.json({"code": "NOT_FOUND",
                                              "message": request.path}, 404))
            outcome = self._channel_request(channel, request)
        # Anything changed outside the lock is written before the answer (or the stall,
        # or the dropped connection) goes out: nothing acknowledged is only in memory.
        self.state.flush()
        return outcome

    def _channel_request(self, channel: Channel, request: Request) -> Outcome | None:
        operation = channel.operation(request)
        if operation is None:
            return Outcome(channel.handle(request))
        slow = self.state.take_fault(channel.route, operation, (LATENCY,))
        delay = self.state.latency_seconds(slow) if slow is not None else 0.0
        if slow is not None and slow.params.get("where", "before") == "before":
            time.sleep(delay)     # outside the state lock: other requests go on
            delay = 0.0
        # Statement faults stay for the channel's statement_faults() (one per listed refund).
        request_faults = tuple(k for k in FAULT_KINDS
                               if k not in STATEMENT_FAULTS and k != LATENCY)
        fault = self.state.take_fault(channel.route, operation, request_faults)
        if fault is not None and fault.kind == "drop_before_commit":
            return None
        if fault is not None and fault.kind == "http_500":
            return Outcome(channel.server_error(), delay=delay)
        request.fault = fault if fault is not None and \
            fault.kind not in FRAMEWORK_FAULTS else None
        response = channel.handle(request)
        if fault is not None and fault.kind == "timeout_after_commit":
            return Outcome(response, stall=float(fault.params.get("stall_seconds", 3.0)),
                           delay=delay)
        return Outcome(response, delay=delay,
                       truncate=fault is not None and fault.kind == "truncated_body")

    # -- statements and notifications ---------------------------------------------------
    def statement(self, route: str, day: date) -> bytes:
        return self.channel(route).statement(day, self.url)

    def pending_notifications(self, route: str | None = None) -> list[Notification]:
        """Take the notifications that have no URL to go to (for in-process handlers)."""
        with self.state.lock:
            taken = [n for n in self.state.notifications
                     if not n.delivered and _to_inbox(n.url) and not n.hold_back
                     and (route is None or n.route == route)]
            for n in taken:
                n.delivered = True
            return taken

    def deliver_now(self) -> int:
        """Deliver every due notification with a URL once; returns how many were accepted."""
        return self._deliver_once(force=True)

    def _deliver_once(self, force: bool = False) -> int:
        now = self.state.monotonic()
        with self.state.lock:
            due = [n for n in self.state.notifications
                   if not n.delivered and not _to_inbox(n.url) and not n.hold_back
                   and (force or n.next_at <= now)]
        accepted = 0
        for note in due:
            try:
                headers = note.resign(note.body) if note.resign else note.headers
                r = requests.post(str(note.url), data=note.body, headers=headers, timeout=5)
                ok = 200 <= r.status_code < 300
            except requests.RequestException:
                ok = False
            with self.state.lock:
                note.attempts += 1
                if ok:
                    note.delivered = True
                    accepted += 1
                elif note.attempts >= len(RETRY_SCHEDULE) + 1:
                    note.delivered = True          # the channel gives up
                else:
                    note.next_at = now + RETRY_SCHEDULE[note.attempts - 1]
        return accepted

    def _deliver_loop(self) -> None:
        while not self._stopping.wait(0.05):
            try:
                for channel in self.channels:
                    channel.tick()
                self._deliver_once()
            except Exception:  # noqa: S112 - delivery must never kill the sandbox
                continue


def receipt_settings() -> dict[str, str]:
    """A sandbox receipt signing key (Ed25519, PEM PKCS#8) and its key id: new each time,
    like every sandbox key, so receipts made against the sandbox verify only with it."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode("ascii")
    return {"REFUND_GATEWAY_RECEIPTS__SIGNING_KEY": pem,
            "REFUND_GATEWAY_RECEIPTS__KEY_ID": f"sandbox-{secrets.token_hex(4)}"}
