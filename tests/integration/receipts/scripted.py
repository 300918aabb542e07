"""A scripted channel for receipt tests: each route answers what the test queued, with the
fields real adapters put in ``ChannelResult`` (Alipay ``deposit_back_info`` bank_ack and
``buyer_logon_id``, WeChat ``user_received_account``, UnionPay ``queryId``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, timedelta
from typing import ClassVar

from gateway.bootstrap import capabilities_of
from gateway.models import ChannelResult, ChannelStatus, Refund, Route
from gateway.ports import Capabilities, ChannelAdapter

Answer = Callable[[Refund], ChannelResult]


class ScriptedChannel(ChannelAdapter):
    """Answers submit/query from a queue; with the queue empty, repeats the last answer."""

    route: ClassVar[Route] = Route.ALIPAY
    capabilities: ClassVar[Capabilities]

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self._last: Answer | None = None

    def _next(self, refund: Refund) -> ChannelResult:
        if self.answers:
            self._last = self.answers.pop(0)
        if self._last is None:
            return ChannelResult(ChannelStatus.PROCESSING, refund.channel_refund_no)
        return self._last(refund)

    def submit(self, refund: Refund) -> ChannelResult:
        return self._next(refund)

    def query(self, refund: Refund) -> ChannelResult:
        return self._next(refund)

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ChannelResult:
        raise NotImplementedError("not used by receipt tests")

    def download_statement(self, day: date) -> bytes:
        return b""


def scripted(route: Route) -> ScriptedChannel:
    """A ``ScriptedChannel`` subclass instance for ``route`` (route is a ClassVar)."""
    caps = Capabilities(
        idempotent_submit=True, refund_query=True, notifications=False, statements=True,
        partial_refunds=True, max_refunds=None, refund_window=timedelta(days=365),
        arrival_working_days=capabilities_of(route).arrival_working_days,   # the real one
        takes_reroutes=route is Route.BALANCE)
    cls = type(f"Scripted{route.value.title()}", (ScriptedChannel,),
               {"route": route, "capabilities": caps})
    channel: ScriptedChannel = cls()
    return channel
