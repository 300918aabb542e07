"""The platform-balance route's implementation of the channel port.

Owns: the wallet refund request for a ``Refund`` (whose payment may belong to another
route when this is a reroute), the checks before I/O, and turning wallet answers into
``ChannelResult``. Must not touch the store, retry or sleep; HTTP lives in ``client``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Any, ClassVar, Final

from adapters.balance import translate
from adapters.balance.client import CHANNEL, LEDGER_PATH, REFUNDS_PATH, Answer, WalletClient
from adapters.balance.translate import Verdict
from gateway import failpoints
from gateway.clock import Clock
from gateway.errors import (
    ChannelAuthError,
    ConfigurationError,
    InvalidRequest,
    OutcomeUnknown,
    SignatureInvalid,
)
from gateway.models import ChannelResult, ChannelStatus, Refund, Route
from gateway.ports import Capabilities, ChannelAdapter
from gateway.settings import BalanceSettings, GatewaySettings

REFUND_NO: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
NAME: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")   # user_id / order_no (sandbox/balance.py)


class BalanceAdapter(ChannelAdapter):
    route: ClassVar[Route] = Route.BALANCE
    capabilities: ClassVar[Capabilities] = Capabilities(
        idempotent_submit=True,      # the wallet dedupes per refund no
        refund_query=True,
        notifications=False,         # instant: the answer is final, nothing to notify
        statements=True,             # the wallet's credit ledger
        partial_refunds=True,
        max_refunds=None,
        refund_window=None,
        arrival_working_days=(0, 0),  # DOMAIN.md: platform balance at once
        refund_no=REFUND_NO,
        order_no=NAME,                # the wallet keeps order_no (sandbox/balance.py)
        user_id=NAME,                 # it credits a platform user, named by user_id
        takes_reroutes=True,          # any route's payment can be paid back as balance
    )

    def __init__(self, client: WalletClient, clock: Clock) -> None:
        self._client = client
        self._clock = clock

    def submit(self, refund: Refund) -> ChannelResult:
        answer = self._client.call("submit", "POST", REFUNDS_PATH, self.refund_body(refund))
        failpoints.failpoint(failpoints.AFTER_SEND)
        return self._result(refund, answer)

    def query(self, refund: Refund) -> ChannelResult:
        no = self._refund_no(refund)
        return self._result(refund, self._client.call("query", "GET",
                                                      f"{REFUNDS_PATH}/{no}"))

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ChannelResult:
        """The wallet sends no notifications (``capabilities.notifications`` is False), so
        the service never routes one here; anything posted to this route is refused."""
        raise SignatureInvalid("the balance route sends no notifications", channel=CHANNEL,
                               operation="notification", code="NO_NOTIFICATIONS")

    def download_statement(self, day: date) -> bytes:
        answer = self._client.call("statement", "GET", f"{LEDGER_PATH}/{day.isoformat()}")
        if answer.http_status != 200:
            data = answer.json()
            raise OutcomeUnknown(f"wallet ledger answered HTTP {answer.http_status}",
                                 channel=CHANNEL, operation="statement",
                                 http_status=answer.http_status,
                                 code=str(data.get("code") or f"HTTP_{answer.http_status}"),
                                 request_id=answer.request_id)
        return answer.content

    def close(self) -> None:
        self._client.close()

    # -- helpers -----------------------------------------------------------------------
    def refund_body(self, refund: Refund) -> dict[str, Any]:
        """The credit request. The wallet credits ``user_id`` (required: it does not look
        users up by order) and keeps ``order_no`` for the record; for a reroute both come
        from the original payment of another route. Validates first, no I/O."""
        no = self._refund_no(refund)
        if refund.amount.currency != "CNY" or refund.amount.minor <= 0:
            raise InvalidRequest("the wallet takes a positive CNY amount", field="amount")
        payment = refund.payment
        if not payment.user_id or not NAME.fullmatch(payment.user_id):
            raise InvalidRequest("a balance refund needs the platform user id (1-64 of "
                                 "[A-Za-z0-9_.:-])", field="payment.user_id")
        if not NAME.fullmatch(payment.merchant_order_no):
            raise InvalidRequest("the wallet takes order numbers of [A-Za-z0-9_.:-]",
                                 field="payment.merchant_order_no")
        return {"refund_no": no, "user_id": payment.user_id,
                "order_no": payment.merchant_order_no,
                "amount_fen": refund.amount.minor, "currency": refund.amount.currency,
                "reason": refund.reason}

    @staticmethod
    def _refund_no(refund: Refund) -> str:
        if not REFUND_NO.fullmatch(refund.channel_refund_no):
            raise InvalidRequest("wallet refund no must be 1-64 of [A-Za-z0-9_-]",
                                 field="channel_refund_no")
        return refund.channel_refund_no

    def _result(self, refund: Refund, answer: Answer) -> ChannelResult:
        data = answer.json()
        op, status_code = answer.operation, answer.http_status
        if 200 <= status_code < 300:
            echoed = data.get("refund_no")
            if echoed != refund.channel_refund_no:
                raise OutcomeUnknown("wallet answered about another refund no",
                                     channel=CHANNEL, operation=op, http_status=status_code,
                                     code="REFUND_NO_MISMATCH", request_id=answer.request_id)
            status = translate.status_of(data.get("status"))
            entry = data.get("wallet_txn_id")
            return ChannelResult(
                status=status, channel_refund_no=refund.channel_refund_no,
                channel_refund_id=str(entry) if entry else None,
                amount=translate.amount_of(data),
                succeeded_at=translate.time_of(data.get("credited_at"))
                if status is ChannelStatus.SUCCEEDED else None,
                bank_ack={"wallet_txn_id": str(entry)} if entry and
                status is ChannelStatus.SUCCEEDED else {},
                failure_code=str(data.get("code") or "FAILED")
                if status is ChannelStatus.FAILED else None,
                failure_message=data.get("message") if status is ChannelStatus.FAILED
                else None,
                raw=translate.redact(data))
        code = data.get("code")
        code_text = str(code) if code is not None else None
        verdict = translate.error_verdict(status_code, code_text, query=op == "query")
        if verdict is Verdict.NOT_FOUND:
            return ChannelResult(status=ChannelStatus.NOT_FOUND,
                                 channel_refund_no=refund.channel_refund_no,
                                 raw=translate.redact(data))
        if verdict is Verdict.REFUSED:
            return ChannelResult(status=ChannelStatus.FAILED,
                                 channel_refund_no=refund.channel_refund_no,
                                 failure_code=code_text,
                                 failure_message=str(data.get("message") or "") or None,
                                 raw=translate.redact(data))
        if verdict is Verdict.AUTH:
            raise ChannelAuthError("the wallet service rejected our request signature",
                                   channel=CHANNEL, operation=op, http_status=status_code,
                                   code=code_text, request_id=answer.request_id)
        raise OutcomeUnknown(f"wallet answered HTTP {status_code} {code_text or ''}".strip(),
                             channel=CHANNEL, operation=op, http_status=status_code,
                             code=code_text or f"HTTP_{status_code}",
                             request_id=answer.request_id)


def build(settings: GatewaySettings, clock: Clock) -> ChannelAdapter:
    """The composition root's factory (entry point ``refund_gateway.adapters:balance``)."""
    cfg: BalanceSettings | None = settings.balance
    if cfg is None:
        raise ConfigurationError("the balance route needs REFUND_GATEWAY_BALANCE__* settings",
                                 setting="REFUND_GATEWAY_BALANCE")
    key = cfg.hmac_key.get_secret_value().encode("utf-8")
    if len(key) < 16:
        raise ConfigurationError("the wallet HMAC key is shorter than 16 bytes",
                                 setting="REFUND_GATEWAY_BALANCE__HMAC_KEY")
    client = WalletClient(base_url=cfg.base_url, hmac_key=key,
                          connect_timeout=cfg.timeouts.connect,
                          read_timeout=cfg.timeouts.read,
                          deadline=cfg.timeouts.deadline,
                          download_deadline=cfg.timeouts.download_deadline)
    return BalanceAdapter(client, clock)
