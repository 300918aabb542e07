"""``/_sandbox/...``: the control API tests and developers drive the sandbox with.

POST /_sandbox/payments      {"route", "amount_fen", "user_id"?, "funding"?} -> a paid
                             payment ("funding": "bankcard" = paid by bank card)
GET  /_sandbox/refunds       the truth: every refund a channel executed
POST /_sandbox/faults        {"route", "operation", "kind", "count", ...params}
GET  /_sandbox/faults        faults not yet used up
POST /_sandbox/reset         {"seed"?} back to empty
POST /_sandbox/config        {"settle": {"<route>": {"mode", "n", "seconds"}},
                              "notify_url": {"<route>": URL}}
GET  /_sandbox/notifications pending (undelivered) notifications
POST /_sandbox/notifications/deliver   deliver due notifications now
GET  /_sandbox/statements/{route}/{YYYY-MM-DD}  raw statement bytes, real format
"""

from __future__ import annotations

import base64
from dataclasses import asdict
from datetime import date
from typing import TYPE_CHECKING, Any

from sandbox.http import Request, Response
from sandbox.state import FAULT_KINDS, OPERATIONS, ROUTES, Fault, Settle

if TYPE_CHECKING:
    from sandbox.server import SandboxServer


def _bad(message: str) -> Response:
    return Response.json({"error": message}, 400)


def handle_control(server: SandboxServer, request: Request) -> Response:
    state = server.state
    path = request.path.rstrip("/")
    try:
        body: Any = request.json() if request.method == "POST" else {}
    except ValueError:
        return _bad("body is not JSON")
    if not isinstance(body, dict):
        return _bad("body must be a JSON object")
    if path == "/_sandbox/payments" and request.method == "POST":
        route, amount = body.get("route"), body.get("amount_fen")
        if route not in ROUTES:
            return _bad(f"route must be one of {', '.join(ROUTES)}")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            return _bad("amount_fen must be a positive integer")
        funding = body.get("funding")
        if funding is not None and not isinstance(funding, str):
            return _bad("funding must be a string")
        p = state.add_payment(route, amount, body.get("user_id"), funding)
        return Response.json({"route": p.route, "merchant_order_no": p.merchant_order_no,
                              "channel_trade_no": p.channel_trade_no,
                              "amount_fen": p.amount_fen, "user_id": p.user_id,
                              "card_last4": p.card_no[-4:], "funding": p.funding})
    if path == "/_sandbox/refunds":
        return Response.json({"refunds": state.truth()})
    if path == "/_sandbox/faults":
        if request.method != "POST":
            with state.lock:
                return Response.json({"faults": [asdict(f) for f in state.faults
                                                 if f.remaining > 0]})
        route, op, kind = body.get("route"), body.get("operation"), body.get("kind")
        count = body.get("count", 1)
        if route not in ROUTES or op not in OPERATIONS or kind not in FAULT_KINDS:
            return _bad(f"route in {ROUTES}, operation in {OPERATIONS}, kind in {FAULT_KINDS}")
        if not isinstance(count, int) or count < 1:
            return _bad("count must be a positive integer")
        params = {k: v for k, v in body.items()
                  if k not in ("route", "operation", "kind", "count")}
        state.add_fault(Fault(route, op, kind, count, params))
        return Response.json({"ok": True})
    if path == "/_sandbox/reset" and request.method == "POST":
        seed = body.get("seed")
        state.reset(seed if isinstance(seed, int) else None)
        return Response.json({"ok": True})
    if path == "/_sandbox/config" and request.method == "POST":
        with state.lock:
            for route, rule in (body.get("settle") or {}).items():
                if route not in ROUTES or not isinstance(rule, dict):
                    return _bad(f"unknown route {route!r}")
                state.settle[route] = Settle(mode=str(rule.get("mode", "immediate")),
                                             n=int(rule.get("n", 1)),
                                             seconds=float(rule.get("seconds", 0)))
            for route, url in (body.get("notify_url") or {}).items():
                if route not in ROUTES:
                    return _bad(f"unknown route {route!r}")
                state.notify_urls[route] = str(url)
        return Response.json({"ok": True})
    if path == "/_sandbox/notifications":
        with state.lock:
            return Response.json({"notifications": [
                {"route": n.route, "url": n.url, "headers": n.headers,
                 "body_b64": base64.b64encode(n.body).decode(),
                 "channel_refund_no": n.channel_refund_no, "attempts": n.attempts}
                for n in state.notifications if not n.delivered]})
    if path == "/_sandbox/notifications/deliver" and request.method == "POST":
        return Response.json({"delivered": server.deliver_now()})
    if path.startswith("/_sandbox/statements/"):
        parts = path.split("/")
        if len(parts) != 5 or parts[3] not in ROUTES:
            return _bad("use /_sandbox/statements/{route}/{YYYY-MM-DD}")
        try:
            day = date.fromisoformat(parts[4])
        except ValueError:
            return _bad("date must be YYYY-MM-DD")
        data = server.statement(parts[3], day)
        return Response(200, data, {"Content-Type": "application/octet-stream"})
    return Response.json({"error": f"no control endpoint {request.method} {path}"}, 404)
