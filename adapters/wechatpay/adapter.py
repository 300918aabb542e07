"""The WeChat Pay route's implementation of the channel port (API v3, CH §2, §5).

Owns: the refund / query / apply-abnormal-refund requests, the checks before any I/O,
turning answers into ``ChannelResult`` or errors through ``translate``'s tables,
notifications (``notify``), and the bills (trade REFUND/ALL/..., fund flow) with their
``hash_value`` checked (``bills``). One adapter is one merchant: direct, or a service
provider refunding for its ``sub_mchid`` (addendum §4), verifying by public key,
platform certificates or both (``client``). Must not touch the store, retry or sleep; the SDK and
HTTP live in ``client``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Final, NoReturn

import structlog

from adapters.wechatpay import bills, notify, translate
from adapters.wechatpay.client import CHANNEL, Answer, WechatPayClient, pkcs8_private_key
from adapters.wechatpay.client import spki_public_key as _spki
from adapters.wechatpay.translate import Operation, Verdict
from gateway.clock import Clock
from gateway.errors import (
    ChannelAuthError,
    ConfigurationError,
    InvalidRequest,
    OutcomeUnknown,
    StatementError,
)
from gateway.masking import mask_account
from gateway.models import ChannelResult, ChannelStatus, NotificationAck, Refund, Route
from gateway.ports import (
    DEFAULT_QUERY_SCHEDULE,
    AbnormalRefundInstruction,
    AbnormalRefundPort,
    AbnormalTarget,
    Capabilities,
    ChannelAdapter,
)
from gateway.settings import GatewaySettings, WechatPaySettings, pem_text

log = structlog.get_logger(__name__)

# CH §5.1: out_refund_no <= 64 of [0-9A-Za-z_-|*@]; the gateway's numbers are narrower.
OUT_REFUND_NO: Final = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")
REASON_MAX: Final = 80          # 退款原因, shown to the user: <= 80 bytes (addendum §9)
BANK_TYPE: Final = re.compile(r"[A-Z][A-Z0-9_]{1,31}")   # CH §5.6 e.g. ICBC_DEBIT
# CH §5.1 timing: "poll every 1 min, back off after 5 min" -> five 1-minute checks, then
# the default schedule from its 10-minute step on (hourly, then daily; never give up).
WECHAT_QUERY_SCHEDULE: Final = (*([timedelta(minutes=1)] * 5), *DEFAULT_QUERY_SCHEDULE[2:])


class BillKind(StrEnum):
    """CH §5.7: the trade bill's ``bill_type`` values and the fund-flow accounts."""

    ALL = "ALL"
    SUCCESS = "SUCCESS"
    REFUND = "REFUND"
    RECHARGE_REFUND = "RECHARGE_REFUND"
    FUNDFLOW_BASIC = "FUNDFLOW_BASIC"
    FUNDFLOW_OPERATION = "FUNDFLOW_OPERATION"
    FUNDFLOW_FEES = "FUNDFLOW_FEES"

    @property
    def fund_account(self) -> str | None:
        return self.value.removeprefix("FUNDFLOW_") if self.value.startswith("FUNDFLOW_") \
            else None


class WechatPayAdapter(ChannelAdapter, AbnormalRefundPort):
    route: ClassVar[Route] = Route.WECHATPAY
    capabilities: ClassVar[Capabilities] = Capabilities(
        idempotent_submit=True,        # CH §5.1: same out_refund_no => refunded at most once
        refund_query=True,
        notifications=True,
        statements=True,
        partial_refunds=True,
        max_refunds=50,                # CH §5.1: <= 50 partial refunds per order
        refund_window=timedelta(days=365),   # CH §5.1: within 1 year
        arrival_working_days=(0, 3),   # CH §5.1: balance <= 5 min, bank cards 1-3 days
        abnormal_refund_api=True,      # CH §5.6
        query_schedule=WECHAT_QUERY_SCHEDULE,
        refund_no=OUT_REFUND_NO,        # CH §5.1: <= 64 of [0-9A-Za-z_-|*@]
        reason_max=REASON_MAX,          # addendum §9: reason <= 80 bytes of UTF-8
        reason_unit="utf8_bytes",
    )

    def __init__(self, client: WechatPayClient, *, clock: Clock,
                 max_skew_seconds: int = 300,
                 gzip_limits: bills.GzipLimits | None = None) -> None:
        self._client = client
        self._clock = clock
        self._max_skew = max_skew_seconds
        self._gzip_limits = gzip_limits or bills.GzipLimits()

    def __repr__(self) -> str:
        return f"WechatPayAdapter({self._client!r})"

    # -- port ------------------------------------------------------------------------
    def submit(self, refund: Refund) -> ChannelResult:
        """POST /v3/refund/domestic/refunds (CH §5.1). The answer only means accepted
        (usually PROCESSING); the result comes by notification or query."""
        out_refund_no = self._refund_no(refund)
        if refund.amount.currency != "CNY" or refund.payment.amount.currency != "CNY":
            raise InvalidRequest("WeChat Pay refunds are in CNY fen", field="amount")
        if not 0 < refund.amount.minor <= refund.payment.amount.minor:
            raise InvalidRequest("refund amount must be positive and at most the amount "
                                 "paid", field="amount")
        transaction_id = refund.payment.channel_trade_no or None
        answer = self._client.refund(
            out_refund_no=out_refund_no,
            amount={"refund": refund.amount.minor, "total": refund.payment.amount.minor,
                    "currency": "CNY"},
            transaction_id=transaction_id,
            out_trade_no=None if transaction_id else refund.payment.merchant_order_no,
            reason=reason_within(refund.reason))
        return self._refund_answer(answer, refund, Operation.SUBMIT)

    def query(self, refund: Refund) -> ChannelResult:
        """GET /v3/refund/domestic/refunds/{out_refund_no} (CH §5.2); 404 -> NOT_FOUND."""
        answer = self._client.query_refund(self._refund_no(refund))
        return self._refund_answer(answer, refund, Operation.QUERY)

    def apply_abnormal_refund(self, refund: Refund,
                              instruction: AbnormalRefundInstruction) -> ChannelResult:
        """POST .../{refund_id}/apply-abnormal-refund (CH §5.6). The card number and name
        go only to the SDK, which encrypts them; they are never logged or kept."""
        out_refund_no = self._refund_no(refund)
        self.validate_instruction(refund, instruction)
        if not refund.channel_refund_id:
            raise InvalidRequest("the abnormal-refund API needs WeChat's refund_id; query "
                                 "the refund first", field="channel_refund_id")
        bank_type = bank_account = real_name = None
        if instruction.target is AbnormalTarget.USER_BANK_CARD:
            bank_type, bank_account = instruction.bank_type, instruction.bank_account
            real_name = instruction.real_name
        answer = self._client.abnormal_refund(
            refund_id=refund.channel_refund_id, out_refund_no=out_refund_no,
            target=instruction.target.value, bank_type=bank_type, bank_account=bank_account,
            real_name=real_name)
        return self._refund_answer(answer, refund, Operation.ABNORMAL_REFUND)

    def validate_instruction(self, refund: Refund,
                             instruction: AbnormalRefundInstruction) -> None:
        """CH §5.6: USER_BANK_CARD needs bank_type, the card number and the holder's name;
        MERCHANT_BANK_CARD needs nothing. Checked before the refund changes state."""
        if not isinstance(instruction, AbnormalRefundInstruction):
            raise InvalidRequest("instruction must be an AbnormalRefundInstruction",
                                 field="instruction")
        if instruction.target is AbnormalTarget.USER_BANK_CARD:
            bank_type, bank_account = instruction.bank_type, instruction.bank_account
            if not (bank_type and BANK_TYPE.fullmatch(bank_type)):
                raise InvalidRequest("USER_BANK_CARD needs a bank_type such as ICBC_DEBIT "
                                     "(CH §5.6)", field="instruction.bank_type")
            if not (bank_account and re.fullmatch(r"\d{8,32}", bank_account)):
                raise InvalidRequest("USER_BANK_CARD needs the card number (digits)",
                                     field="instruction.bank_account")
            if not (instruction.real_name and instruction.real_name.strip()):
                raise InvalidRequest("USER_BANK_CARD needs the card holder's name",
                                     field="instruction.real_name")
        elif instruction.target is not AbnormalTarget.MERCHANT_BANK_CARD:
            raise InvalidRequest("unknown abnormal-refund target", field="instruction")

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ChannelResult:
        return notify.parse(headers, body, verifier=self._client, mchid=self._client.mchid,
                            sub_mchid=self._client.sub_mchid, now=self._clock(),
                            max_skew_seconds=self._max_skew)

    def notification_ack(self, accepted: bool) -> NotificationAck:
        # CH §2.6: WeChat wants 200/204 (JSON optional); anything else is redelivered
        # (15 s ... 6 h, about 24 h in all). A rejection names no reason to the sender.
        if accepted:
            return NotificationAck(204, b"", "application/json")
        return NotificationAck(400, b'{"code":"FAIL","message":"rejected"}',
                               "application/json", accepted=False)

    def download_statement(self, day: date) -> bytes:
        """The trade bill of ``day`` with ``bill_type=REFUND`` (what reconciliation reads)."""
        return self.download_bill(day, BillKind.REFUND)

    def download_bill(self, day: date, kind: BillKind | str = BillKind.REFUND) -> bytes:
        """A trade or fund-flow bill (CH §5.7), un-gzipped, its SHA1 checked."""
        kind = BillKind(kind)
        name = f"wechatpay-{kind.value.lower()}-{day.isoformat()}"
        account = kind.fund_account
        if account and self._client.sub_mchid:
            # The provider's fund flow is its own account, not the sub-merchant's money;
            # the sub-merchant's (/v3/bill/sub-merchant-fundflowbill) comes encrypted,
            # its key unwrapping UNCONFIRMED (addendum §4): not read rather than misread.
            raise StatementError("a service provider's fund-flow bill does not show the "
                                 "sub-merchant's refunds; use the trade bill", file=name)
        answer = (self._client.fundflow_bill(day.isoformat(), account) if account
                  else self._client.trade_bill(day.isoformat(), kind.value))
        if not 200 <= answer.http_status < 300:
            self._bill_error(answer, day)
        doc = answer.json()
        url = doc.get("download_url") if doc else None
        if not doc or not isinstance(url, str) or not url:
            raise OutcomeUnknown("WeChat bill answer without download_url", channel=CHANNEL,
                                 operation="statement", http_status=answer.http_status,
                                 code="UNPARSEABLE", request_id=answer.request_id)
        gate_way = self._client.gate_way
        if not url.startswith(gate_way + "/"):
            # CH §0 #6: the SDK would request gate_way + url, a broken URL. Usually the
            # base URL setting differs from the host WeChat (or the sandbox) answers with.
            raise StatementError("download_url does not start with "
                                 "REFUND_GATEWAY_WECHATPAY__BASE_URL "
                                 f"({gate_way}); refusing to fetch it", file=name)
        try:
            file = self._client.download_bill(url)
        except OutcomeUnknown as exc:
            if exc.code != "ANSWER_TOO_LARGE":
                raise
            raise StatementError(f"bill download above {exc.message.rsplit(' ', 2)[-2]} "
                                 "bytes compressed", file=name) from None
        if not 200 <= file.http_status < 300:
            self._bill_error(file, day)
        data = file.body.encode("utf-8") if isinstance(file.body, str) else file.body
        return bills.open_bill(data, hash_type=str(doc.get("hash_type") or ""),
                               hash_value=str(doc.get("hash_value") or ""), name=name,
                               limits=self._gzip_limits)

    def close(self) -> None:
        self._client.close()

    # -- answers -----------------------------------------------------------------------
    def _refund_answer(self, answer: Answer, refund: Refund, op: Operation) -> ChannelResult:
        if 200 <= answer.http_status < 300:
            return self._refund_object(answer, refund, op)
        doc = answer.json() or {}
        code = doc.get("code") if isinstance(doc.get("code"), str) else None
        message = str(doc.get("message") or "")[:256] or None
        verdict = translate.error_verdict(op, answer.http_status, code)
        raw = {"http_status": answer.http_status, "code": code, "message": message,
               "request_id": answer.request_id}
        if verdict is Verdict.REFUSED and op is Operation.SUBMIT:
            log.info("wechatpay.refused", code=code, http_status=answer.http_status)
            return ChannelResult(ChannelStatus.FAILED, channel_refund_no=refund.channel_refund_no,
                                 failure_code=code, failure_message=message, raw=raw)
        if verdict is Verdict.REFUSED and op is Operation.ABNORMAL_REFUND:
            # The application was refused; the refund itself is still ABNORMAL.
            return ChannelResult(ChannelStatus.ABNORMAL,
                                 channel_refund_no=refund.channel_refund_no,
                                 channel_refund_id=refund.channel_refund_id,
                                 failure_code=code, failure_message=message, raw=raw)
        if verdict is Verdict.NOT_FOUND:
            return ChannelResult(ChannelStatus.NOT_FOUND,
                                 channel_refund_no=refund.channel_refund_no, raw=raw)
        return self._raise(verdict, answer, code, op.value)

    def _refund_object(self, answer: Answer, refund: Refund, op: Operation) -> ChannelResult:
        doc = answer.json()
        if doc is None:
            raise OutcomeUnknown("WeChat answer is not a JSON object", channel=CHANNEL,
                                 operation=op.value, http_status=answer.http_status,
                                 code="UNPARSEABLE", request_id=answer.request_id)
        echoed = doc.get("out_refund_no")
        if echoed is not None and echoed != refund.channel_refund_no:
            raise OutcomeUnknown("WeChat answered about another out_refund_no",
                                 channel=CHANNEL, operation=op.value,
                                 http_status=answer.http_status, code="REFUND_NO_MISMATCH",
                                 request_id=answer.request_id)
        return refund_result(doc, refund.channel_refund_no, answer.request_id)

    def _bill_error(self, answer: Answer, day: date) -> None:
        doc = answer.json() or {}
        code = doc.get("code") if isinstance(doc.get("code"), str) else None
        verdict = translate.error_verdict(Operation.STATEMENT, answer.http_status, code)
        if verdict is Verdict.NO_STATEMENT:
            raise StatementError(f"no statement for {day.isoformat()}",
                                 file=f"wechatpay-{day.isoformat()}")
        if verdict is Verdict.BAD_REQUEST:
            raise StatementError(f"WeChat refused the bill request ({code})",
                                 file=f"wechatpay-{day.isoformat()}")
        # STATEMENT_CREATING lands here as OutcomeUnknown(code=STATEMENT_CREATING): the
        # bill is not ready yet (T+1, after ~08:00/10:00 Beijing); try again later.
        self._raise(verdict, answer, code, "statement")

    @staticmethod
    def _raise(verdict: Verdict, answer: Answer, code: str | None, operation: str
               ) -> NoReturn:
        message = f"WeChat answered HTTP {answer.http_status} {code or ''}".rstrip()
        if verdict is Verdict.AUTH:
            raise ChannelAuthError(message, channel=CHANNEL, operation=operation,
                                   http_status=answer.http_status, code=code,
                                   request_id=answer.request_id)
        raise OutcomeUnknown(message, channel=CHANNEL, operation=operation,
                             http_status=answer.http_status,
                             code=code or f"HTTP_{answer.http_status}",
                             request_id=answer.request_id)

    @staticmethod
    def _refund_no(refund: Refund) -> str:
        if not OUT_REFUND_NO.fullmatch(refund.channel_refund_no):
            raise InvalidRequest("out_refund_no must be 1-64 of [0-9A-Za-z_-|*@] (CH §5.1)",
                                 field="channel_refund_no")
        return refund.channel_refund_no


def reason_within(reason: str | None) -> str | None:
    """The reason cut to REASON_MAX bytes of UTF-8 at a character boundary (addendum §9:
    WeChat counts bytes, so 80 characters of Chinese would be refused as PARAM_ERROR).
    ``validate`` refuses a longer one before anything is stored; this guards the wire."""
    cut = (reason or "").strip().encode("utf-8")[:REASON_MAX]
    return cut.decode("utf-8", errors="ignore") or None   # a split last character goes


def refund_result(doc: Mapping[str, Any], channel_refund_no: str,
                  request_id: str | None) -> ChannelResult:
    """A verified refund object (CH §5.1, same for query and abnormal refund)."""
    status = translate.refund_status(doc.get("status"))
    account = doc.get("user_received_account")
    final_other = status in (ChannelStatus.ABNORMAL, ChannelStatus.CLOSED)
    raw = translate.redact(doc)
    if request_id:
        raw["request_id"] = request_id
    return ChannelResult(
        status=status,
        channel_refund_no=channel_refund_no,
        channel_refund_id=doc.get("refund_id") or None,
        amount=translate.fen(doc.get("amount")),
        succeeded_at=translate.parse_time(doc.get("success_time"))
        if status is ChannelStatus.SUCCEEDED else None,
        received_account=mask_account(account)
        if isinstance(account, str) and account else None,
        bank_ack=translate.bank_ack(doc),
        failure_code=str(doc.get("status")) if final_other else None,
        failure_message=("the original account cannot take the refund (CH §5.6)"
                         if status is ChannelStatus.ABNORMAL else
                         "closed by WeChat Pay" if status is ChannelStatus.CLOSED else None),
        raw=raw,
    )


def build(settings: GatewaySettings, clock: Clock) -> ChannelAdapter:
    """The composition root's factory (entry point ``refund_gateway.adapters:wechatpay``)."""
    cfg: WechatPaySettings | None = settings.wechatpay
    if cfg is None:
        raise ConfigurationError("the WeChat Pay route needs REFUND_GATEWAY_WECHATPAY__* "
                                 "settings", setting="REFUND_GATEWAY_WECHATPAY")
    key_setting = "REFUND_GATEWAY_WECHATPAY__PRIVATE_KEY"
    private_key = pkcs8_private_key(pem_text(cfg.private_key, key_setting), key_setting)
    apiv3 = cfg.apiv3_key.get_secret_value()
    if len(apiv3.encode("utf-8")) != 32:
        # AES-256-GCM key (CH §2.6): exactly 32 bytes
        raise ConfigurationError("REFUND_GATEWAY_WECHATPAY__APIV3_KEY must be 32 bytes",
                                 setting="REFUND_GATEWAY_WECHATPAY__APIV3_KEY")
    public_key = None
    if cfg.public_key is not None:
        pub_setting = "REFUND_GATEWAY_WECHATPAY__PUBLIC_KEY"
        public_key = _spki(pem_text(cfg.public_key, pub_setting), pub_setting)
        if not cfg.public_key_id:
            raise ConfigurationError("public-key mode needs the key's id (PUB_KEY_ID_...)",
                                     setting="REFUND_GATEWAY_WECHATPAY__PUBLIC_KEY_ID")
    elif cfg.public_key_id:
        raise ConfigurationError("PUBLIC_KEY_ID is set but PUBLIC_KEY is not",
                                 setting="REFUND_GATEWAY_WECHATPAY__PUBLIC_KEY")
    if not cfg.base_url.startswith(("https://", "http://")):
        raise ConfigurationError("base_url must be an http(s) URL",
                                 setting="REFUND_GATEWAY_WECHATPAY__BASE_URL")
    if cfg.sub_mchid is not None and cfg.sub_mchid == cfg.mchid:
        raise ConfigurationError("sub_mchid is the sub-merchant, mchid the service "
                                 "provider: they differ",
                                 setting="REFUND_GATEWAY_WECHATPAY__SUB_MCHID")
    client = WechatPayClient(
        mchid=cfg.mchid, appid=cfg.appid, private_key_pem=private_key,
        cert_serial_no=cfg.cert_serial_no, apiv3_key=apiv3, base_url=cfg.base_url,
        connect_timeout=cfg.timeouts.connect, read_timeout=cfg.timeouts.read,
        deadline=cfg.timeouts.deadline, download_deadline=cfg.timeouts.download_deadline,
        public_key_pem=public_key, public_key_id=cfg.public_key_id if public_key else None,
        cert_dir=cfg.cert_dir, notify_url=cfg.notify_url, verification=cfg.verification,
        sub_mchid=cfg.sub_mchid, certificate_refresh_seconds=cfg.certificate_refresh_seconds,
        certificate_retry_seconds=cfg.certificate_retry_seconds)
    return WechatPayAdapter(client, clock=clock,
                            max_skew_seconds=cfg.notification_max_skew_seconds)
