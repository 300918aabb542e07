"""The bank-card route's implementation of the channel port (UnionPay 5.1.0, CH §6).

Owns: the request fields of a refund (退货, txnType=04) and a single query (txnType=00),
the checks before any I/O, and turning verified answers into ``ChannelResult`` through
``translate``. Must not touch the store, retry or sleep; HTTP lives in ``client``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, timedelta
from typing import ClassVar, Final

import structlog
from pydantic import SecretStr

from adapters.bankcard import files, notify, signing, translate
from adapters.bankcard.client import BACK_TRANS_PATH, CHANNEL, QUERY_PATH, UnionPayClient
from adapters.bankcard.translate import Verdict
from gateway import failpoints
from gateway.clock import Clock, to_beijing, utcnow
from gateway.errors import (
    ChannelAuthError,
    ChannelUnavailable,
    ConfigurationError,
    InvalidRequest,
    OutcomeUnknown,
)
from gateway.models import ChannelResult, ChannelStatus, NotificationAck, Refund, Route
from gateway.ports import DEFAULT_QUERY_SCHEDULE, Capabilities, ChannelAdapter
from gateway.settings import BankcardSettings, GatewaySettings, pem_text

log = structlog.get_logger(__name__)

VERSION: Final = "5.1.0"
# CH §6: orderId is a new 8-32 alphanumeric string (no '-' or '_').
ORDER_ID: Final = re.compile(r"[A-Za-z0-9]{8,32}")
# CH §6: "≤6 queries at 1,2,4,8,16,32 s" for back-channel transactions, then our tail.
UNIONPAY_QUERY_CADENCE: Final = tuple(timedelta(seconds=s) for s in (1, 2, 4, 8, 16, 32))


def txn_time(refund: Refund) -> str:
    """``YYYYMMDDhhmmss`` Beijing time of the refund's creation: identical on every resend,
    and the key (with orderId) a query needs (CH §6)."""
    return f"{to_beijing(refund.created_at):%Y%m%d%H%M%S}"


def _common() -> dict[str, str]:
    return {"version": VERSION, "encoding": "UTF-8", "signMethod": "01", "accessType": "0"}


class BankcardAdapter(ChannelAdapter):
    route: ClassVar[Route] = Route.BANKCARD
    capabilities: ClassVar[Capabilities] = Capabilities(
        idempotent_submit=True,            # UnionPay dedupes per orderId (respCode 12)
        refund_query=True,
        notifications=True,
        statements=True,
        partial_refunds=True,              # CH §6: partial and multiple refunds allowed
        max_refunds=None,
        refund_window=timedelta(days=330),  # CH §6: within 11 months
        arrival_working_days=(1, 5),       # DOMAIN.md: bank card 1-5 working days
        refund_no=ORDER_ID,                # CH §6, addendum §2: 8-32 alphanumerics
        query_schedule=(*UNIONPAY_QUERY_CADENCE, *DEFAULT_QUERY_SCHEDULE),
    )

    # Certificate validity is checked against the wall clock (``utcnow``), not the
    # injected ``clock``: it is a fact about the real world, and tests that move the
    # business clock must not make UnionPay's certificate look expired.
    def __init__(self, client: UnionPayClient, *, back_url: str, channel_type: str,
                 trust: signing.Trust, clock: Clock,
                 file_trans_url: str | None = None) -> None:
        self._client = client
        self._file_trans_url = file_trans_url
        self._back_url = back_url
        self._channel_type = channel_type
        self._trust = trust
        self._clock = clock

    # -- port ------------------------------------------------------------------------
    def submit(self, refund: Refund) -> ChannelResult:
        fields = self.refund_fields(refund)
        answer = self._client.send("submit", BACK_TRANS_PATH, fields)
        failpoints.failpoint(failpoints.AFTER_SEND)
        resp = self._client.decode(answer, utcnow())
        self._same_order(resp, fields["orderId"], "submit")
        code = resp.get("respCode", "")
        status = self._accepted(translate.submit_outcome(code), code, resp, "submit")
        failed = status is ChannelStatus.FAILED
        succeeded = status is ChannelStatus.SUCCEEDED   # A6 (addendum §2)
        return ChannelResult(
            status=status, channel_refund_no=refund.channel_refund_no,
            channel_refund_id=None if failed else (resp.get("queryId") or None),
            amount=translate.fen(resp.get("txnAmt")) if succeeded else None,
            bank_ack=translate.bank_ack(resp) if succeeded else {},
            failure_code=code if failed else None,
            failure_message=resp.get("respMsg") if failed else None,
            raw=translate.redact(resp))

    def query(self, refund: Refund) -> ChannelResult:
        order_id = self._order_id(refund)
        fields = {**_common(), "txnType": "00", "txnSubType": "00", "bizType": "000000",
                  "orderId": order_id, "txnTime": txn_time(refund)}
        resp = self._client.decode(self._client.send("query", QUERY_PATH, fields),
                                   utcnow())
        code = resp.get("respCode", "")
        orig = resp.get("origRespCode") or None
        status = self._accepted(translate.query_outcome(code, orig), code, resp, "query")
        if status is not ChannelStatus.NOT_FOUND:
            self._same_order(resp, order_id, "query")
        abnormal = status is ChannelStatus.ABNORMAL
        return ChannelResult(
            status=status, channel_refund_no=refund.channel_refund_no,
            channel_refund_id=resp.get("queryId") or None,
            amount=translate.fen(resp.get("txnAmt")) if status is ChannelStatus.SUCCEEDED
            else None,
            bank_ack=translate.bank_ack(resp) if status is ChannelStatus.SUCCEEDED else {},
            failure_code=orig if abnormal else None,
            failure_message=resp.get("origRespMsg") if abnormal else None,
            raw=translate.redact(resp))

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ChannelResult:
        return notify.parse(headers, body, trust=self._trust, mer_id=self._client.mer_id,
                            now=utcnow())

    def notification_ack(self, accepted: bool) -> NotificationAck:
        # UnionPay redelivers until it gets HTTP 200; the body is not read.
        if accepted:
            return NotificationAck(200, b"ok", "text/plain")
        return NotificationAck(400, b"rejected", "text/plain", accepted=False)

    def download_statement(self, day: date) -> bytes:
        """The settlement ZIP of clearing day ``day``: the file transfer (txnType 76) on
        UnionPay's file-download host, ``fileContent`` decoded as the SDK does (``files``)."""
        return files.download(self._client, self._file_trans_url, day, self._clock())

    def close(self) -> None:
        self._client.close()

    # -- helpers -----------------------------------------------------------------------
    def refund_fields(self, refund: Refund) -> dict[str, str]:
        """The 退货 request (CH §6) before certId/signature; validates first, no I/O."""
        order_id = self._order_id(refund)
        if refund.amount.currency != "CNY" or refund.amount.minor <= 0:
            raise InvalidRequest("UnionPay refunds take a positive CNY amount",
                                 field="amount")
        orig = refund.payment.channel_trade_no
        if not orig:
            raise InvalidRequest("the original payment's queryId (channel_trade_no) is "
                                 "needed as origQryId", field="payment.channel_trade_no")
        return {**_common(), "txnType": "04", "txnSubType": "00", "bizType": "000201",
                "channelType": self._channel_type, "backUrl": self._back_url,
                "orderId": order_id, "txnTime": txn_time(refund),
                "txnAmt": str(refund.amount.minor), "origQryId": orig,
                "currencyCode": "156"}

    @staticmethod
    def _order_id(refund: Refund) -> str:
        order_id = refund.channel_refund_no
        if not ORDER_ID.fullmatch(order_id):
            raise InvalidRequest("UnionPay orderId must be 8-32 letters or digits (CH §6)",
                                 field="channel_refund_no")
        return order_id

    @staticmethod
    def _same_order(resp: Mapping[str, str], order_id: str, operation: str) -> None:
        echoed = resp.get("orderId")
        if echoed and echoed != order_id:
            raise OutcomeUnknown("UnionPay answered about another orderId", channel=CHANNEL,
                                 operation=operation, code="ORDER_MISMATCH")

    @staticmethod
    def _accepted(outcome: translate.Outcome, code: str, resp: Mapping[str, str],
                  operation: str) -> ChannelStatus:
        """The business status of a verified answer, or the error its code stands for."""
        if outcome.verdict is Verdict.ACCEPTED and outcome.status is not None:
            return outcome.status
        request_id = resp.get("queryId") or None
        message = f"UnionPay respCode {code or '(none)'}"
        if outcome.verdict is Verdict.UNKNOWN:
            raise OutcomeUnknown(message, channel=CHANNEL, operation=operation,
                                 http_status=200, code=code or None, request_id=request_id)
        if outcome.verdict is Verdict.UNAVAILABLE:
            raise ChannelUnavailable(message, channel=CHANNEL, operation=operation,
                                     http_status=200, code=code, request_id=request_id)
        if outcome.verdict is Verdict.AUTH:
            raise ChannelAuthError(message, channel=CHANNEL, operation=operation,
                                   http_status=200, code=code, request_id=request_id)
        raise OutcomeUnknown(message, channel=CHANNEL, operation=operation, http_status=200,
                             code=code or None, request_id=request_id)


def build(settings: GatewaySettings, clock: Clock) -> ChannelAdapter:
    """The composition root's factory (entry point ``refund_gateway.adapters:bankcard``)."""
    cfg: BankcardSettings | None = settings.bankcard
    if cfg is None:
        raise ConfigurationError("the bank-card route needs REFUND_GATEWAY_BANKCARD__* "
                                 "settings", setting="REFUND_GATEWAY_BANKCARD")
    if not cfg.back_url:
        raise ConfigurationError("UnionPay refunds need a backUrl for their notifications",
                                 setting="REFUND_GATEWAY_BANKCARD__BACK_URL")
    key_setting = "REFUND_GATEWAY_BANKCARD__PRIVATE_KEY"
    try:
        key = signing.load_private_key(pem_text(cfg.private_key, key_setting))
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{key_setting}: not an unencrypted RSA private key",
                                 setting=key_setting) from exc
    trust = load_trust(cfg)
    client = UnionPayClient(base_url=cfg.base_url, mer_id=cfg.mer_id, cert_id=cfg.cert_id,
                            private_key=key, trust=trust,
                            connect_timeout=cfg.timeouts.connect,
                            read_timeout=cfg.timeouts.read,
                            deadline=cfg.timeouts.deadline,
                            download_deadline=cfg.timeouts.download_deadline)
    return BankcardAdapter(client, back_url=cfg.back_url, channel_type=cfg.channel_type,
                           trust=trust, clock=clock,
                           file_trans_url=files.file_trans_url(cfg.base_url,
                                                               cfg.file_trans_url))


def load_trust(cfg: BankcardSettings) -> signing.Trust:
    """Which ``signPubKeyCert`` the adapter trusts (``BankcardSettings.trust``): the chain
    to the configured middle and root with the CN rule, or, opted into, a pinned key."""
    prefix = "REFUND_GATEWAY_BANKCARD__"
    if cfg.trust == "pin":
        setting = prefix + "UNIONPAY_PUBLIC_KEY"
        if cfg.unionpay_public_key is None:
            raise ConfigurationError(f"TRUST=pin needs {setting}", setting=setting)
        try:
            return signing.load_pin(pem_text(cfg.unionpay_public_key, setting))
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"{setting}: not an RSA public key or certificate",
                                     setting=setting) from exc
    pems: list[str] = []
    for name, value in (("MIDDLE_CERT", cfg.middle_cert), ("ROOT_CERT", cfg.root_cert)):
        if not value:
            raise ConfigurationError(
                f"UnionPay answers are trusted by chain: set {prefix}{name} (UnionPay's "
                f"{name.split('_')[0].lower()} certificate), or opt into pinning with "
                f"{prefix}TRUST=pin and {prefix}UNIONPAY_PUBLIC_KEY", setting=prefix + name)
        pems.append(pem_text(SecretStr(value), prefix + name))
    try:
        return signing.load_chain(pems[0], pems[1], validate_cn_name=cfg.validate_cn_name)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{prefix}MIDDLE_CERT / ROOT_CERT: not CA certificates "
                                 f"({exc})", setting=prefix + "MIDDLE_CERT") from exc
