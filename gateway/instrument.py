"""Observing a gateway from outside: its operations and its adapters' channel calls.

``gateway.metrics`` and ``gateway.tracing`` both need "around each refund operation" and
"around each channel call", with the route, the operation and how it came out. Rather
than hooks inside ``RefundGateway`` (whose rules must stay readable), this module wraps
the bound methods of one gateway instance and of its adapters: the objects stay what
they were (``isinstance``, ``route``, ``capabilities`` unchanged), observers stack, and
an uninstrumented gateway pays nothing. It must not change what a method returns or
raises.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from gateway.errors import SignatureInvalid
from gateway.models import ChannelResult, NotificationAck, Refund, RefundRequest, Route
from gateway.ports import ChannelAdapter
from gateway.service import RefundGateway


@dataclass(slots=True)
class Call:
    """One observed call. ``kind`` is ``operation`` (a ``RefundGateway`` method) or
    ``channel`` (an adapter method, i.e. network I/O to the channel). ``outcome``: the
    refund's status after it, a channel status, ``accepted``/``rejected`` for a
    notification, or the exception's class name; ``reason`` why a notification was
    rejected (``NotificationAck.reason``)."""

    kind: str
    operation: str
    route: str | None
    outcome: str = "ok"
    refund_id: str | None = None
    reason: str | None = None


Observer = Callable[[Call], AbstractContextManager[None]]

# The public operations of RefundGateway, and the adapter methods that talk to a channel
# (method name -> the operation label, the same names ``attempts.operation`` uses).
OPERATIONS = ("refund", "sync", "reroute", "handle_notification", "resolve_due")
CHANNEL_CALLS = {"submit": "submit", "query": "query",
                 "apply_abnormal_refund": "abnormal_refund",
                 "download_statement": "statement"}


def _route_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    first = args[0] if args else next(iter(kwargs.values()), None)
    if isinstance(first, RefundRequest):
        return first.payment.route.value
    if isinstance(first, Route):
        return first.value
    if isinstance(first, str) and first in Route._value2member_map_:
        return first
    return None


# What the adapter's parse_notification raised during the notification in hand (set by
# the wrapper below; one notification per thread/task at a time, so a context variable).
# A one-item list shared by the stacked wrappers of one notification (the outermost
# sets it up, so an inner observer's exit cannot hide what the outer one must read).
_verify_error: contextvars.ContextVar[list[BaseException | None] | None] = \
    contextvars.ContextVar("refund_gateway_verify_error", default=None)


def _rejection(gateway: RefundGateway | None, call: Call, ack: NotificationAck) -> str:
    """Why a notification was refused: the ack's own ``reason`` where the service gives
    one; else what can be told from outside (the route, the adapter's verification,
    the answer's status). ``refused``: verified but not applied (a replay, an unknown
    refund, an amount that does not match; each logged on ``gateway.security``)."""
    given = getattr(ack, "reason", None)
    if isinstance(given, str) and given:
        return given
    adapter = gateway.adapters.get(Route(call.route)) if gateway and call.route else None
    holder = _verify_error.get()
    error = holder[0] if holder else None
    if adapter is None:
        return "unknown_route"
    if not adapter.capabilities.notifications:
        return "route_sends_none"
    if error is not None:
        return "signature_invalid" if isinstance(error, SignatureInvalid) else "unreadable"
    if ack.http_status == 503:
        return "store_unavailable"
    return "refused"


def _settle(call: Call, result: Any, gateway: RefundGateway | None) -> None:
    if isinstance(result, Refund):
        call.outcome, call.refund_id = result.status.value, result.id
        call.route = call.route or result.route.value
    elif isinstance(result, ChannelResult):
        call.outcome = result.status.value
    elif isinstance(result, NotificationAck):
        call.outcome = "accepted" if result.accepted else "rejected"
        call.refund_id = result.refund_id
        call.reason = "accepted" if result.accepted else _rejection(gateway, call, result)


def _observed(fn: Callable[..., Any], observer: Observer, kind: str, operation: str,
              route: str | None, gateway: RefundGateway | None) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = Call(kind, operation, route or _route_of(args, kwargs))
        token = (_verify_error.set([None]) if operation == "handle_notification"
                 and _verify_error.get() is None else None)
        try:
            with observer(call):
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    call.outcome = type(exc).__name__
                    raise
                _settle(call, result, gateway)
                return result
        finally:
            if token is not None:
                _verify_error.reset(token)

    return wrapper


def _noting_verify_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            holder = _verify_error.get()
            if holder is not None:
                holder[0] = exc
            raise

    return wrapper


_VERIFY_MARKER = "_refund_gateway_verify_noted"


def _replace(obj: object, name: str, marker: str,
             make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    fn = getattr(obj, name, None)
    if fn is None or getattr(fn, marker, False):
        return                       # not offered by this object, or already wrapped
    wrapped = make(fn)
    setattr(wrapped, marker, True)
    setattr(obj, name, wrapped)      # on the instance: the class is untouched


def observe_adapter(adapter: ChannelAdapter, observer: Observer, *, marker: str) -> None:
    """Wrap ``adapter``'s channel calls (once per ``marker``)."""
    for name, operation in CHANNEL_CALLS.items():
        _replace(adapter, name, marker, functools.partial(
            _observed, observer=observer, kind="channel", operation=operation,
            route=adapter.route.value, gateway=None))
    _replace(adapter, "parse_notification", _VERIFY_MARKER, _noting_verify_errors)


def observe_gateway(gateway: RefundGateway, observer: Observer, *, marker: str) -> None:
    """Wrap ``gateway``'s operations and every adapter's channel calls (once per
    ``marker``: instrumenting twice observes once)."""
    for name in OPERATIONS:
        _replace(gateway, name, marker, functools.partial(
            _observed, observer=observer, kind="operation", operation=name, route=None,
            gateway=gateway))
    for adapter in gateway.adapters.values():
        observe_adapter(adapter, observer, marker=marker)
