"""How a failed ``requests`` call maps onto the error tree, for every requests-based
adapter (WeChat's transport, UnionPay, the wallet service).

The one distinction that matters (httpx's lesson, STYLE.md): a connection that was never
established proves the request was not sent (``ChannelUnavailable``: resend at once);
anything that fails after connecting — a read timeout, a reset, a remote disconnect —
may have been processed (``OutcomeUnknown``: query first).
"""

from __future__ import annotations

import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from gateway.errors import ChannelError, ChannelUnavailable, OutcomeUnknown


def never_connected(exc: BaseException) -> bool:
    """True when the connection was never established (so nothing was sent)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, NewConnectionError | ConnectTimeoutError | ConnectionRefusedError):
            return True
        reason = getattr(cause, "reason", None)
        if isinstance(reason, BaseException):
            cause = reason
            continue
        args = getattr(cause, "args", ())
        nested = next((a for a in args if isinstance(a, BaseException)), None)
        cause = nested or cause.__cause__ or cause.__context__
    return False


def classify(exc: requests.RequestException, *, channel: str, operation: str,
             label: str) -> ChannelError:
    """The error to raise for ``exc``; ``label`` names the service in messages."""
    if isinstance(exc, requests.ConnectTimeout):
        return ChannelUnavailable(f"{label} connect timeout", channel=channel,
                                  operation=operation, code="CONNECT_TIMEOUT")
    if isinstance(exc, requests.ConnectionError):
        if never_connected(exc):
            return ChannelUnavailable(f"{label} connection refused", channel=channel,
                                      operation=operation, code="CONNECT_FAILED")
        return OutcomeUnknown(f"{label} connection lost after sending", channel=channel,
                              operation=operation, code="CONNECTION_LOST")
    if isinstance(exc, requests.Timeout):
        return OutcomeUnknown(f"{label} read timeout", channel=channel,
                              operation=operation, code="READ_TIMEOUT")
    return OutcomeUnknown(f"{label} transport error: {type(exc).__name__}", channel=channel,
                          operation=operation, code="TRANSPORT")
