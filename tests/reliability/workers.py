"""Gateway processes of the reliability suite (run in forked children, then killed).

Module-level functions so a ``forkserver`` can run them. Each builds its own gateway
from the sandbox's env file and a database URL, like a refund-service process would.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import requests

from gateway import Money, Payment, RefundRequest, Route
from gateway.bootstrap import build_adapters, build_gateway
from gateway.clock import utcnow
from gateway.failpoints import ENV as FAILPOINTS_ENV
from gateway.service import RefundGateway
from gateway.settings import load_settings


def gateway(env_file: str, db_url: str, routes: list[Route],
            offset: timedelta | list[timedelta] = timedelta(0)) -> RefundGateway:
    """``offset`` may be a one-item list the caller moves forward (a clock that jumps)."""
    def clock() -> Any:
        return utcnow() + (offset[0] if isinstance(offset, list) else offset)

    settings = load_settings(env_file, database_url=db_url, log_level="ERROR")
    wanted = sorted(set(routes) | {Route.BALANCE}, key=lambda r: r.value)
    return build_gateway(settings, clock=clock, sleep=lambda _: None,
                         adapters=build_adapters(settings, clock, routes=wanted))


def request_for(payment: dict[str, Any], key: str, amount: int) -> RefundRequest:
    return RefundRequest(
        idempotency_key=key,
        payment=Payment(route=Route(payment["route"]),
                        merchant_order_no=payment["merchant_order_no"],
                        channel_trade_no=payment["channel_trade_no"],
                        amount=Money(payment["amount_fen"]), user_id=payment["user_id"]),
        amount=Money(amount), reason="reliability")


def arm(failpoint: str) -> None:
    os.environ[FAILPOINTS_ENV] = failpoint


def crash_refund(env_file: str, db_url: str, failpoint: str, payment: dict[str, Any],
                 key: str, amount: int) -> None:
    """Refund with ``failpoint`` armed: the process dies there (SIGKILL)."""
    gw = gateway(env_file, db_url, [Route(payment["route"])])
    arm(failpoint)
    gw.refund(request_for(payment, key, amount))


def crash_notification(env_file: str, db_url: str, failpoint: str, sandbox_url: str,
                       payment: dict[str, Any], key: str, amount: int) -> None:
    """Refund, then apply the channel's notification with ``failpoint`` armed."""
    route = Route(payment["route"])
    gw = gateway(env_file, db_url, [route])
    refund = gw.refund(request_for(payment, key, amount))
    gw.sync(refund.id)                       # lets the sandbox settle and notify
    pending = requests.get(f"{sandbox_url}/_sandbox/notifications", timeout=10).json()
    import base64

    mine = [n for n in pending["notifications"]
            if n["channel_refund_no"] == refund.channel_refund_no]
    arm(failpoint)
    for note in mine:
        gw.handle_notification(route, note["headers"], base64.b64decode(note["body_b64"]))


def crash_reroute(env_file: str, db_url: str, failpoint: str, payment: dict[str, Any],
                  key: str, amount: int) -> None:
    """Refund that ends ABNORMAL (the parent armed the sandbox), then reroute to balance
    with ``failpoint`` armed."""
    gw = gateway(env_file, db_url, [Route(payment["route"])])
    refund = gw.refund(request_for(payment, key, amount))
    refund = gw.sync(refund.id)
    arm(failpoint)
    gw.reroute(refund.id, Route.BALANCE, note="card cancelled")


def resolve(env_file: str, db_url: str, routes: list[str] | None = None,
            cycles: int = 12) -> int:
    """A fresh process runs the resolver; the clock jumps an hour per cycle so every
    backoff step comes due. Returns the cycles that found work."""
    used = 0
    offset = [timedelta(0)]
    gw = gateway(env_file, db_url, [Route(r) for r in routes] if routes else list(Route),
                 offset=offset)
    for cycle in range(cycles):
        offset[0] = timedelta(hours=cycle + 1)
        report = gw.resolve_due(limit=1000)
        if report.claimed == 0:
            break
        used += 1
    gw.close()
    return used
