"""What every emulated channel implements, and the helpers they share."""

from __future__ import annotations

import abc
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any, ClassVar

from sandbox.http import Request, Response
from sandbox.state import STATEMENT_FAULTS, Notification, Refund, State, now_utc

if TYPE_CHECKING:
    from sandbox.keys import SandboxKeys


class Channel(abc.ABC):
    route: ClassVar[str]
    prefixes: ClassVar[tuple[str, ...]]       # URL path prefixes this channel serves

    def __init__(self, state: State, keys: SandboxKeys) -> None:
        self.state = state
        self.keys = keys

    @abc.abstractmethod
    def operation(self, request: Request) -> str | None:
        """``refund`` | ``query`` | ``statement`` | None: which faults apply."""

    @abc.abstractmethod
    def handle(self, request: Request) -> Response:
        """Answer one request (``request.fault`` holds a channel-specific fault)."""

    @abc.abstractmethod
    def server_error(self) -> Response:
        """The channel's HTTP 500 answer (fault ``http_500``)."""

    @abc.abstractmethod
    def statement(self, day: date, base_url: str) -> bytes:
        """The statement for ``day`` in the channel's real format."""

    @abc.abstractmethod
    def client_settings(self, base_url: str) -> dict[str, str]:
        """REFUND_GATEWAY_<ROUTE>__* settings that point a gateway at this channel."""

    def tick(self) -> None:  # noqa: B027 - optional hook, most channels need none
        """Advance time-based progression (the server calls it every ~50 ms), e.g. settle
        refunds whose ``after_seconds`` rule is due and send their notifications."""

    def notify(self, refund: Refund, headers: dict[str, str], body: bytes,
               url: str | None,
               resign: Callable[[bytes], dict[str, str]] | None = None) -> None:
        """Queue a notification, applying notify faults (duplicate, out of order).

        ``resign``, when given, makes fresh headers for every delivery attempt."""
        fault = self.state.take_fault(self.route, "notify",
                                      ("duplicate_notification",
                                       "out_of_order_notification"))
        note = Notification(self.route, url or refund.notify_url
                            or self.state.notify_urls.get(self.route), headers, body,
                            refund.channel_refund_no, resign=resign)
        if fault is not None and fault.kind == "out_of_order_notification":
            note.hold_back = True
        self.state.queue_notification(note)
        if fault is not None and fault.kind == "duplicate_notification":
            self.state.queue_notification(Notification(
                note.route, note.url, dict(headers), body, refund.channel_refund_no,
                resign=resign))

    def settle(self, refund: Refund, *, query: bool) -> bool:
        """Move an accepted refund to its final status when its settle rule says so.

        Returns True when it changed (the caller then sends a notification)."""
        if query:
            refund.queries += 1
        if refund.status != "PROCESSING" or not self.state.settle_due(refund):
            return False
        if refund.abnormal:
            refund.status = "ABNORMAL"
        else:
            refund.status = "SUCCESS"
            refund.succeeded_at = now_utc()
        return True

    def settle_due_refunds(self) -> list[Refund]:
        """Settle this route's PROCESSING refunds that came due without a query (Settle
        mode ``after_seconds``; for ``tick()``); returns those that changed, for the caller
        to notify outside the lock."""
        with self.state.lock:
            return [refund for refund in list(self.state.refunds.values())
                    if refund.route == self.route and refund.status == "PROCESSING"
                    and self.settle(refund, query=False)]

    def statement_faults(self, refunds: list[Refund]) -> list[tuple[Refund, int]]:
        """Refunds as the statement lists them, after statement faults: (refund, fen)."""
        lines: list[tuple[Refund, int]] = []
        for refund in refunds:
            fault = self.state.take_fault(self.route, "statement", STATEMENT_FAULTS)
            if fault is None:
                lines.append((refund, refund.amount_fen))
            elif fault.kind == "missing_from_statement":
                continue
            elif fault.kind == "duplicate_in_statement":
                lines += [(refund, refund.amount_fen)] * 2
            elif fault.kind == "amount_drift":
                lines.append((refund, refund.amount_fen + int(fault.params.get("drift", 1))))
            else:
                lines.append((refund, refund.amount_fen))
        return lines

    def refunds_on(self, day: date) -> list[Refund]:
        """Refunds the channel executed on ``day`` (Beijing), oldest first."""
        from sandbox.state import BEIJING  # noqa: PLC0415 - tiny helper module

        with self.state.lock:
            return sorted((r for r in self.state.refunds.values()
                           if r.route == self.route
                           and r.created_at.astimezone(BEIJING).date() == day),
                          key=lambda r: (r.created_at, r.channel_refund_no))

    @staticmethod
    def fen_to_yuan(fen: int) -> str:
        sign = "-" if fen < 0 else ""
        return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"

    @staticmethod
    def yuan_to_fen(text: str) -> int:
        """Parse a yuan decimal string to fen exactly (no floats)."""
        text = text.strip()
        sign = -1 if text.startswith("-") else 1
        whole, _, frac = text.lstrip("+-").partition(".")
        if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac) > 2:
            raise ValueError(f"bad amount {text!r}")
        return sign * (int(whole) * 100 + int(frac.ljust(2, "0") or 0))


def public_truth(refund: Refund) -> dict[str, Any]:
    return refund.truth()
