"""``/_sandbox/...``: the control API tests and developers drive the sandbox with.

POST /_sandbox/payments      {"route", "amount_fen", "user_id"?, "funding"?, "merchant"?}
                             -> a paid payment ("funding": "bankcard" = paid by bank
                             card; "merchant": which of the channel's merchants took it,
                             e.g. WeChat's sub-merchant SUB_MCHID)
GET  /_sandbox/refunds       the truth: every refund a channel executed
POST /_sandbox/faults        {"route", "operation"?, "kind", "count"?, ...params}
                             operation omitted (or "*"): any operation of the route;
                             count 1 by default, null: every match until reset. Kinds
                             and their params: sandbox/server.py (connection faults,
                             ``latency``), each channel module's docstring.
GET  /_sandbox/faults        faults not yet used up
POST /_sandbox/reset         {"seed"?} back to empty
POST /_sandbox/config        {"settle": {"<route>": {"mode", "n", "seconds"}},
                              "notify_url": {"<route>": URL},
                              "limits": {"<route>": {"<rule>": number}}}
                             limits: channel rules that are off by default, e.g.
                             {"wechatpay": {"refund_interval_seconds": 60}}
                             (sandbox/wechatpay.py); 0 turns a rule off again
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
from sandbox.state import ANY_OPERATION, FAULT_KINDS, LATENCY, OPERATIONS, ROUTES, Fault, Settle

if TYPE_CHECKING:
    from sandbox.server import SandboxServer


def _bad(message: str) -> Response:
    return Response.json({"error": message}, 400)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _latency_problem(params: dict[str, Any]) -> str | None:
    """Why a ``latency`` fault's params are unusable, None when they are fine."""
    for name in ("ms", "jitter_ms"):
        if name in params and not (_number(params[name]) and params[name] >= 0):
            return f"latency: {name} must be a non-negative number of milliseconds"
    if "ms" not in params:
        return "latency needs ms (and optionally jitter_ms)"
    if params.get("where", "before") not in ("before", "after"):
        return "latency: where is 'before' (the channel) or 'after' (the answer)"
    return None


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
        funding, merchant = body.get("funding"), body.get("merchant")
        if funding is not None and not isinstance(funding, str):
            return _bad("funding must be a string")
        if merchant is not None and not isinstance(merchant, str):
            return _bad("merchant must be a string")
        p = state.add_payment(route, amount, body.get("user_id"), funding, merchant)
        return Response.json({"route": p.route, "merchant_order_no": p.merchant_order_no,
                              "channel_trade_no": p.channel_trade_no,
                              "amount_fen": p.amount_fen, "user_id": p.user_id,
                              "card_last4": p.card_no[-4:], "funding": p.funding,
                              "merchant": p.merchant})
    if path == "/_sandbox/refunds":
        return Response.json({"refunds": state.truth()})
    if path == "/_sandbox/faults":
        if request.method != "POST":
            with state.lock:
                return Response.json({"faults": [asdict(f) for f in state.faults
                                                 if f.live]})
        route, kind = body.get("route"), body.get("kind")
        op = body.get("operation") or ANY_OPERATION
        count = body.get("count", 1)
        if route not in ROUTES or op not in (*OPERATIONS, ANY_OPERATION) \
                or kind not in FAULT_KINDS:
            return _bad(f"route in {ROUTES}, operation in {OPERATIONS} (or omitted: any), "
                        f"kind in {FAULT_KINDS}")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or count < 1):
            return _bad("count must be a positive integer, or null for every request")
        params = {k: v for k, v in body.items()
                  if k not in ("route", "operation", "kind", "count")}
        problem = _latency_problem(params) if kind == LATENCY else None
        if problem:
            return _bad(problem)
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
            for route, rules in (body.get("limits") or {}).items():
                if route not in ROUTES or not isinstance(rules, dict) or not all(
                        _number(v) and v >= 0 for v in rules.values()):
                    return _bad("limits: {route: {rule: non-negative number}}")
                state.limits[route].update({str(k): float(v) for k, v in rules.items()})
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
