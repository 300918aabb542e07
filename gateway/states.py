"""The refund state machine: which status may follow which. Nothing else lives here.

Age never moves a refund (DESIGN.md invariant 4; Jeepay's 2-hour auto-close is the
anti-pattern): every edge below is taken only on evidence (a channel answer, a
notification, or an explicit reroute).
"""

from __future__ import annotations

from typing import Final

from gateway.models import ChannelStatus, RefundStatus

S = RefundStatus

ALLOWED: Final[dict[RefundStatus, frozenset[RefundStatus]]] = {
    S.PENDING: frozenset({S.PENDING, S.PROCESSING, S.SUCCEEDED, S.FAILED, S.CLOSED,
                          S.ABNORMAL}),
    S.PROCESSING: frozenset({S.PROCESSING, S.SUCCEEDED, S.FAILED, S.CLOSED, S.ABNORMAL}),
    # ABNORMAL is left by reroute() (REROUTED, or PROCESSING through the channel's own
    # abnormal-refund API), or by evidence that the money arrived after all.
    S.ABNORMAL: frozenset({S.ABNORMAL, S.PROCESSING, S.REROUTED, S.SUCCEEDED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CLOSED: frozenset(),
    S.REROUTED: frozenset(),
}

_FROM_CHANNEL: Final[dict[ChannelStatus, RefundStatus]] = {
    ChannelStatus.PROCESSING: S.PROCESSING,
    ChannelStatus.SUCCEEDED: S.SUCCEEDED,
    ChannelStatus.FAILED: S.FAILED,
    ChannelStatus.CLOSED: S.CLOSED,
    ChannelStatus.ABNORMAL: S.ABNORMAL,
}


class InvalidTransition(Exception):
    """A programming error: the caller asked for an edge the machine does not have."""


def can_move(current: RefundStatus, target: RefundStatus) -> bool:
    return target in ALLOWED[current]


def check(current: RefundStatus, target: RefundStatus) -> None:
    if not can_move(current, target):
        raise InvalidTransition(f"{current.value} -> {target.value} is not allowed")


def target_for(current: RefundStatus, channel: ChannelStatus) -> RefundStatus | None:
    """The status a verified channel answer moves ``current`` to, or None to ignore it.

    ``NOT_FOUND`` is never a failure: the refund stays where it is and is resent with the
    same channel refund number. A PROCESSING answer does not pull an ABNORMAL refund back.
    """
    if channel is ChannelStatus.NOT_FOUND:
        return None
    target = _FROM_CHANNEL[channel]
    if current is S.ABNORMAL and target is S.PROCESSING:
        return None
    return target if can_move(current, target) else None
