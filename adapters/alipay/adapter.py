"""The Alipay route's implementation of the channel port (CH §1, §4).

Owns: which OpenAPI method each port operation calls and with which fields, and turning
verified answers into ``ChannelResult`` or the error tree through ``translate``. Must not
touch the store, retry, sleep or import the SDK (``client`` does). Submitting the same
refund again is safe: ``out_request_no`` is the refund's fixed channel refund number and
Alipay refunds at most once per value (CH §4.1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Any, ClassVar, Final

import structlog
from pydantic import SecretStr

from adapters.alipay import notify, translate
from adapters.alipay.certs import CertificateMode
from adapters.alipay.client import CHANNEL, AlipayClient, Answer
from adapters.alipay.zipguard import check_zip
from gateway import failpoints
from gateway.clock import Clock
from gateway.errors import (
    ChannelAuthError,
    ConfigurationError,
    InvalidRequest,
    OutcomeUnknown,
    StatementError,
)
from gateway.models import ChannelResult, NotificationAck, Refund, Route
from gateway.ports import DEFAULT_QUERY_SCHEDULE, Capabilities, ChannelAdapter
from gateway.settings import AlipaySettings, GatewaySettings, pem_text

log = structlog.get_logger(__name__)

REFUND: Final = "alipay.trade.refund"
REFUND_QUERY: Final = "alipay.trade.fastpay.refund.query"
BILL_URL: Final = "alipay.data.dataservice.bill.downloadurl.query"
# CH §4.2: only on request; deposit_back_info tracks the bank-card leg.
QUERY_OPTIONS: Final = ("gmt_refund_pay", "deposit_back_info", "refund_detail_item_list")
# The bill is a ZIP of two CSVs; 10M detail lines deflate to ~200 MB.
MAX_BILL_DOWNLOAD: Final = 256 * 1024**2
# CH §4.5: no bill for the day.
BILL_NOT_EXIST: Final = "isp.bill_not_exist"


class AlipayAdapter(ChannelAdapter):
    route: ClassVar[Route] = Route.ALIPAY
    capabilities: ClassVar[Capabilities] = Capabilities(
        idempotent_submit=True,     # per out_request_no (CH §4.1)
        refund_query=True,
        notifications=True,         # best-effort (CH §4.4); the query is authoritative
        statements=True,
        partial_refunds=True,
        max_refunds=None,           # CH §4 states no per-trade refund count limit
        # The refundable period is set by the merchant's product contract, not the API
        # (CH §4.3 ACQ.TRADE_NOT_ALLOW_REFUND "e.g. past refundable period"): no window
        # we could justify, so None; Alipay's own refusal is final and authoritative.
        refund_window=None,
        arrival_working_days=(0, 3),
        abnormal_refund_api=False,  # dback F lands in the buyer's Alipay balance
        refund_no=re.compile(r"[A-Za-z0-9_-]{1,64}"),   # CH §4.1: out_request_no <= 64
        reason_max=256,             # CH §4.1: refund_reason <= 256
        query_schedule=DEFAULT_QUERY_SCHEDULE,
    )

    def __init__(self, client: AlipayClient, *,
                 max_bill_bytes: int = MAX_BILL_DOWNLOAD) -> None:
        self._client = client
        self._max_bill_bytes = max_bill_bytes

    # -- port -------------------------------------------------------------------------
    def submit(self, refund: Refund) -> ChannelResult:
        if refund.amount.currency != "CNY":
            # refund_amount is yuan of CNY (CH §4.1): another currency would go out as
            # that many yuan. validate() refuses it first; this guards the wire.
            raise InvalidRequest(f"Alipay refunds CNY, not {refund.amount.currency}",
                                 field="amount.currency")
        biz: dict[str, Any] = {
            "refund_amount": refund.amount.format(),
            "out_request_no": refund.channel_refund_no,
            "query_options": ["refund_detail_item_list"],
            **self._trade_ids(refund),
        }
        if refund.reason:
            biz["refund_reason"] = refund.reason[:256]
        answer = self._client.call(REFUND, biz, operation="submit",
                                   after_send=_after_send)
        if answer.code == translate.SUCCESS_CODE:
            return translate.submit_result(answer.body, refund.channel_refund_no)
        outcome = translate.refund_failure(answer.code, answer.sub_code)
        return self._failure(answer, outcome, refund, "submit")

    def query(self, refund: Refund) -> ChannelResult:
        biz: dict[str, Any] = {
            "out_request_no": refund.channel_refund_no,
            "query_options": list(QUERY_OPTIONS),
            **self._trade_ids(refund),
        }
        answer = self._client.call(REFUND_QUERY, biz, operation="query")
        if answer.code == translate.SUCCESS_CODE:
            return translate.query_result(answer.body, refund.channel_refund_no)
        outcome = translate.query_failure(answer.code, answer.sub_code)
        return self._failure(answer, outcome, refund, "query")

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ChannelResult:
        return notify.parse(body, app_id=self._client.app_id, verify=self._client.verify)

    def notification_ack(self, accepted: bool) -> NotificationAck:
        # CH §1.5: Alipay wants the literal body "success"; anything else is a redelivery.
        if accepted:
            return NotificationAck(200, b"success", "text/plain")
        return NotificationAck(400, b"fail", "text/plain", accepted=False)

    def download_statement(self, day: date) -> bytes:
        answer = self._client.call(BILL_URL, {"bill_type": "trade",
                                              "bill_date": day.isoformat()},
                                   operation="statement")
        name = f"alipay-trade-{day.isoformat()}.zip"
        if answer.code != translate.SUCCESS_CODE:
            if answer.sub_code == BILL_NOT_EXIST:
                raise StatementError(f"Alipay has no trade bill for {day.isoformat()} "
                                     f"({BILL_NOT_EXIST})", file=name)
            if translate.is_auth_failure(answer.code, answer.sub_code):
                raise ChannelAuthError("Alipay refused the bill query", channel=CHANNEL,
                                       operation="statement",
                                       code=answer.sub_code or answer.code)
            raise StatementError(f"Alipay refused the bill query: {answer.code} "
                                 f"{answer.sub_code or ''}".rstrip(), file=name)
        url = answer.body.get("bill_download_url")
        if not isinstance(url, str) or not url:
            raise StatementError("Alipay answered no bill_download_url", file=name)
        # CH §4.5: the URL is valid for 30 s; fetch at once.
        data = self._client.fetch(url, operation="statement", limit=self._max_bill_bytes)
        check_zip(data, name)
        return data

    # -- helpers ----------------------------------------------------------------------
    @staticmethod
    def _trade_ids(refund: Refund) -> dict[str, str]:
        # CH §4.1: one of them is required; trade_no wins if both are sent. Both are sent
        # so the request names the trade even if one id was stored wrongly.
        ids: dict[str, str] = {}
        if refund.payment.channel_trade_no:
            ids["trade_no"] = refund.payment.channel_trade_no
        if refund.payment.merchant_order_no:
            ids["out_trade_no"] = refund.payment.merchant_order_no
        return ids

    @staticmethod
    def _failure(answer: Answer, outcome: translate.Outcome, refund: Refund,
                 operation: str) -> ChannelResult:
        sub_code = answer.sub_code
        code = sub_code or answer.code or "UNKNOWN"
        sub_msg = str(answer.body.get("sub_msg") or answer.body.get("msg") or "")[:256]
        if outcome.verdict is translate.Verdict.RESULT and outcome.status is not None:
            return ChannelResult(status=outcome.status,
                                 channel_refund_no=refund.channel_refund_no,
                                 failure_code=code, failure_message=sub_msg or None,
                                 raw=translate.redact(answer.body))
        if outcome.verdict is translate.Verdict.AUTH:
            raise ChannelAuthError(f"Alipay rejected our credentials: {answer.code} {code}",
                                   channel=CHANNEL, operation=operation, code=code)
        what = ("rate-limited, not accepted" if outcome.verdict is
                translate.Verdict.RATE_LIMITED else "outcome unknown, query first")
        raise OutcomeUnknown(f"Alipay {answer.code} {code}: {what}", channel=CHANNEL,
                             operation=operation, code=code)


def _after_send() -> None:
    failpoints.failpoint(failpoints.AFTER_SEND)


def build(settings: GatewaySettings, clock: Clock) -> ChannelAdapter:
    """The composition root's factory (entry point ``refund_gateway.adapters: alipay``)."""
    alipay: AlipaySettings | None = settings.alipay
    if alipay is None:
        raise ConfigurationError("the alipay route is not configured "
                                 "(REFUND_GATEWAY_ALIPAY__APP_ID and keys)",
                                 setting="REFUND_GATEWAY_ALIPAY")
    return AlipayAdapter(client_for(alipay, clock))


def client_for(alipay: AlipaySettings, clock: Clock) -> AlipayClient:
    """The client of one Alipay app: public-key mode, or certificate mode when any of the
    three certificate settings is set (then all three are needed, and the public key is
    not read: what Alipay's own SDKs do), ISV with ``app_auth_token``."""
    prefix = "REFUND_GATEWAY_ALIPAY__"
    files = {"APP_CERT": alipay.app_cert, "ALIPAY_CERT": alipay.alipay_cert,
             "ALIPAY_ROOT_CERT": alipay.alipay_root_cert}
    certificates = None
    if any(files.values()):
        missing = [prefix + name for name, value in files.items() if not value]
        if missing:
            raise ConfigurationError(f"certificate mode needs {', '.join(missing)} too",
                                     setting=missing[0])
        pems = {name: pem_text(SecretStr(str(value)), prefix + name)
                for name, value in files.items()}
        certificates = CertificateMode(app_cert=pems["APP_CERT"],
                                       alipay_cert=pems["ALIPAY_CERT"],
                                       alipay_root_cert=pems["ALIPAY_ROOT_CERT"])
    elif alipay.alipay_public_key is None:
        raise ConfigurationError(
            f"set {prefix}ALIPAY_PUBLIC_KEY (public-key mode) or {prefix}APP_CERT, "
            f"{prefix}ALIPAY_CERT and {prefix}ALIPAY_ROOT_CERT (certificate mode)",
            setting=prefix + "ALIPAY_PUBLIC_KEY")
    token = alipay.app_auth_token.get_secret_value() if alipay.app_auth_token else None
    return AlipayClient(
        app_id=alipay.app_id,
        app_private_key_pem=pem_text(alipay.app_private_key, prefix + "APP_PRIVATE_KEY"),
        alipay_public_key_pem=None if certificates or alipay.alipay_public_key is None
        else pem_text(alipay.alipay_public_key, prefix + "ALIPAY_PUBLIC_KEY"),
        certificates=certificates,
        app_auth_token=token,
        gateway_url=alipay.gateway_url,
        connect_timeout=alipay.timeouts.connect,
        read_timeout=alipay.timeouts.read,
        deadline=alipay.timeouts.deadline,
        download_deadline=alipay.timeouts.download_deadline,
        clock=clock,
    )
