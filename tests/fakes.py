"""A test double of the channel port: a scripted channel with its own ledger.

It implements ``ChannelAdapter`` like a real adapter (it is not a mock of the service):
refunds it "executes" are kept in ``executed`` keyed by channel refund number, so tests
count executions the way the sandbox's truth endpoint does.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import ClassVar

from gateway.errors import (
    ChannelUnavailable,
    InvalidRequest,
    OutcomeUnknown,
    SignatureInvalid,
)
from gateway.models import ChannelResult, ChannelStatus, Refund, Route
from gateway.money import Money
from gateway.ports import (
    AbnormalRefundInstruction,
    AbnormalRefundPort,
    Capabilities,
    ChannelAdapter,
)

Step = Callable[[Refund], ChannelResult]


@dataclass
class Ledger:
    executed: dict[str, int] = field(default_factory=dict)   # channel_refund_no -> count
    amounts: dict[str, int] = field(default_factory=dict)
    status: dict[str, ChannelStatus] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeChannel(ChannelAdapter, AbnormalRefundPort):
    route: ClassVar[Route] = Route.WECHATPAY
    capabilities: ClassVar[Capabilities] = Capabilities(
        idempotent_submit=True, refund_query=True, notifications=True, statements=True,
        partial_refunds=True, max_refunds=50, refund_window=timedelta(days=365),
        arrival_working_days=(0, 3), abnormal_refund_api=True,
        query_schedule=(timedelta(seconds=30), timedelta(minutes=5), timedelta(minutes=10)))

    def __init__(self, ledger: Ledger | None = None) -> None:
        self.ledger = ledger or Ledger()
        # Scripted behaviour: a queue of "what the next submit/query does".
        self.submit_script: list[str] = []
        self.query_script: list[str] = []
        self.settle = ChannelStatus.PROCESSING   # what an executed refund reports

    def _execute(self, refund: Refund) -> None:
        with self.ledger.lock:
            no = refund.channel_refund_no
            if no not in self.ledger.executed:   # the channel dedupes by refund number
                self.ledger.executed[no] = 1
                self.ledger.amounts[no] = refund.amount.minor
                self.ledger.status[no] = self.settle

    def submit(self, refund: Refund) -> ChannelResult:
        self.ledger.calls.append(("submit", refund.channel_refund_no))
        step = self.submit_script.pop(0) if self.submit_script else "ok"
        if step == "unavailable":
            raise ChannelUnavailable("connection refused", channel="fake", operation="submit")
        if step == "refuse":
            return ChannelResult(ChannelStatus.FAILED, refund.channel_refund_no,
                                 failure_code="NOT_ENOUGH", failure_message="balance")
        self._execute(refund)
        if step == "timeout_after_commit":
            raise OutcomeUnknown("read timed out", channel="fake", operation="submit")
        if step == "bad_signature":
            raise OutcomeUnknown("response signature invalid", channel="fake",
                                 operation="submit", code="SIGNATURE_INVALID")
        return self._answer(refund)

    def _answer(self, refund: Refund) -> ChannelResult:
        no = refund.channel_refund_no
        return ChannelResult(self.ledger.status[no], no, channel_refund_id=f"CH{no}",
                             amount=Money(self.ledger.amounts[no]))

    def query(self, refund: Refund) -> ChannelResult:
        self.ledger.calls.append(("query", refund.channel_refund_no))
        step = self.query_script.pop(0) if self.query_script else "ok"
        if step == "unknown":
            raise OutcomeUnknown("HTTP 500", channel="fake", operation="query", http_status=500)
        if refund.channel_refund_no not in self.ledger.executed:
            return ChannelResult(ChannelStatus.NOT_FOUND, refund.channel_refund_no)
        return self._answer(refund)

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ChannelResult:
        if headers.get("x-signature") != "good":
            raise SignatureInvalid("bad signature", channel="fake", operation="notify")
        no, status, amount = body.decode().split(":")
        return ChannelResult(ChannelStatus(status), no, amount=Money(int(amount)),
                             event_id=f"ev-{no}-{status}", replay_key=headers.get("x-nonce"))

    def download_statement(self, day: date) -> bytes:
        return b""

    def validate_instruction(self, refund: Refund,
                             instruction: AbnormalRefundInstruction) -> None:
        if instruction.target.value == "USER_BANK_CARD" and not instruction.bank_type:
            raise InvalidRequest("needs bank_type", field="instruction.bank_type")

    def apply_abnormal_refund(self, refund: Refund,
                              instruction: AbnormalRefundInstruction) -> ChannelResult:
        self.ledger.calls.append(("abnormal", refund.channel_refund_no))
        self.ledger.status[refund.channel_refund_no] = ChannelStatus.PROCESSING
        return self._answer(refund)


class FakeBalance(FakeChannel):
    route: ClassVar[Route] = Route.BALANCE
    capabilities: ClassVar[Capabilities] = Capabilities(
        idempotent_submit=True, refund_query=True, notifications=False, statements=True,
        partial_refunds=True, max_refunds=None, refund_window=None,
        arrival_working_days=(0, 0), takes_reroutes=True,
        user_id=re.compile(r"[A-Za-z0-9_.:-]{1,64}"))

    def __init__(self, ledger: Ledger | None = None) -> None:
        super().__init__(ledger)
        self.settle = ChannelStatus.SUCCEEDED
