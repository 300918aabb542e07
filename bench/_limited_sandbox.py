"""The sandbox with a merchant's call-rate limit and a log of every channel call (bench only).

``python bench/_limited_sandbox.py --env-file F [--port 0]`` serves the ordinary sandbox
(``sandbox.server.SandboxServer``, all four channels) in this process, plus:

* a limit per route, like WeChat's per-merchant calls per second (addendum §9): a token
  bucket of ``rate`` calls/s holding ``rate x BURST_SECONDS`` calls; a call that finds it
  empty is answered as the channel answers "too many requests" (the sandbox's own
  ``rate_limited`` answer: WeChat 429 FREQUENCY_LIMITED, nothing executed), after the
  route's latency fault like any answer. Off until ``POST /_bench/limits
  {"wechatpay": 150}`` (0 or null: off again).
* ``GET /_bench/calls``: every channel call since the last ``POST /_bench/calls/reset``
  (WeChat refunds and queries: time, operation, out_refund_no, answered or limited), so a
  benchmark counts queries per refund and the rate the channel really accepted.

Latency is the sandbox's own fault (``POST /_sandbox/faults {"kind": "latency", ...}``).
Nothing of the gateway is imported: this is the channel's side.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

from sandbox.http import Request, Response  # noqa: E402 - after the path is set
from sandbox.server import Outcome, SandboxServer  # noqa: E402
from sandbox.state import LATENCY, Fault  # noqa: E402

# The bucket holds this many seconds of calls: arrivals bunched by the network and the
# client's scheduling within 200 ms still pass; a client sending above the rate does not.
BURST_SECONDS = 0.2
REFUNDS_PATH = "/v3/refund/domestic/refunds"


class Bucket:
    """``rate`` calls per second, ``rate x BURST_SECONDS`` at once."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate * BURST_SECONDS)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class LimitedSandbox(SandboxServer):
    """The sandbox, with per-route call limits and a call log (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bench_lock = threading.Lock()
        self.buckets: dict[str, Bucket] = {}
        self.calls: list[tuple[float, str, str, str, bool]] = []

    def dispatch(self, request: Request) -> Outcome | None:
        if request.path.startswith("/_bench/"):
            return Outcome(self._bench(request))
        for channel in self.channels:
            if request.path.startswith(channel.prefixes) and channel.route == "wechatpay":
                operation = channel.operation(request)
                if operation in ("refund", "query"):
                    return self._limited(channel, request, operation)
        return super().dispatch(request)

    def _limited(self, channel: Any, request: Request, operation: str) -> Outcome | None:
        no = _refund_no(request, operation)
        with self._bench_lock:
            bucket = self.buckets.get(channel.route)
            allowed = bucket is None or bucket.take()
            self.calls.append((time.time(), channel.route, operation, no, allowed))
        if allowed:
            return super().dispatch(request)
        slow = self.state.take_fault(channel.route, operation, (LATENCY,))
        if slow is not None:
            time.sleep(self.state.latency_seconds(slow))
        request.fault = Fault(channel.route, operation, "rate_limited", 1)
        return Outcome(channel.handle(request))

    def _bench(self, request: Request) -> Response:
        if request.path == "/_bench/limits" and request.method == "POST":
            body = json.loads(request.body or b"{}")
            with self._bench_lock:
                for route, rate in body.items():
                    if rate:
                        self.buckets[route] = Bucket(float(rate))
                    else:
                        self.buckets.pop(route, None)
            return Response.json({"ok": True})
        if request.path == "/_bench/calls/reset" and request.method == "POST":
            with self._bench_lock:
                self.calls = []
            return Response.json({"ok": True})
        if request.path == "/_bench/calls":
            with self._bench_lock:
                rows = list(self.calls)
            return Response.json({"calls": [
                {"t": t, "route": r, "operation": op, "no": no, "allowed": ok}
                for t, r, op, no, ok in rows]})
        return Response.json({"error": request.path}, 404)


def _refund_no(request: Request, operation: str) -> str:
    if operation == "query":
        return request.path[len(REFUNDS_PATH) + 1:]
    try:
        return str(json.loads(request.body).get("out_refund_no", ""))
    except ValueError:
        return ""


def latency_fault(ms: float, jitter_ms: float = 0.0) -> dict[str, Any]:
    """The control-API body of a route-wide WeChat latency (every refund and query)."""
    return {"route": "wechatpay", "operation": None, "kind": LATENCY, "ms": ms,
            "jitter_ms": jitter_ms, "count": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--env-file", required=True)
    args = ap.parse_args()
    server = LimitedSandbox("127.0.0.1", args.port).start()
    server.write_env_file(args.env_file)
    print(f"limited sandbox listening on {server.url}", file=sys.stderr, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()



if __name__ == "__main__":
    main()
