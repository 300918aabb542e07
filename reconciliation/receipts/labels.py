"""What each channel field on a receipt is called, per route, in Chinese and English.

One table per route, headed by the document it copies. A field in a route's table is
printed with its labels (and a code is printed as the words it stands for); a field the
table does not know is kept, masked, in the JSON receipt's ``evidence`` and never printed:
a person reads labels, not ``channel ORIGINAL`` (issue 18). ``same_as`` names the main
receipt row a field repeats (WeChat's refund_id is the channel refund id): it is printed
only when its value differs. Pure data and lookups, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final


class Kind(StrEnum):
    ACCOUNT = "account"       # masked by gateway.masking
    TIME = "time"             # Beijing, as the channel states it
    REFERENCE = "reference"   # an id the user's bank or app can trace: quoted whole
    AMOUNT = "amount"         # yuan, as the channel states it
    CODE = "code"             # a code with a meaning: printed as its words


@dataclass(frozen=True, slots=True)
class FieldLabel:
    zh: str
    en: str
    kind: Kind
    values: dict[str, tuple[str, str]] = field(default_factory=dict)
    same_as: str | None = None     # the Receipt attribute this field repeats

    def text(self, value: str) -> str:
        """The value as printed: a code's words (the code kept beside them)."""
        if self.kind is Kind.AMOUNT:
            return f"{value} CNY"
        words = self.values.get(value)
        return f"{words[0]} {words[1]} ({value})" if words else value


# WeChat Pay v3 refund answer and REFUND.SUCCESS notification: CHANNELS.md §5.1.
WECHATPAY: Final[dict[str, FieldLabel]] = {
    "refund_id": FieldLabel("微信支付退款单号", "WeChat Pay refund ID", Kind.REFERENCE,
                            same_as="channel_refund_id"),
    "channel": FieldLabel("退款渠道", "Refund channel", Kind.CODE, {
        "ORIGINAL": ("原路退款", "back the way it came"),
        "BALANCE": ("退回到余额", "to the WeChat balance"),
        "OTHER_BALANCE": ("原账户异常退到其他余额账户",
                          "original account abnormal, to another balance"),
        "OTHER_BANKCARD": ("原银行卡异常退到其他银行卡",
                           "original card abnormal, to another bank card")}),
    "funds_account": FieldLabel("退款出资账户", "Refund paid from", Kind.CODE, {
        "UNSETTLED": ("未结算资金", "unsettled funds"),
        "AVAILABLE": ("可用余额", "available balance"),
        "UNAVAILABLE": ("不可用余额", "unavailable balance"),
        "OPERATION": ("运营户", "operation account"),
        "BASIC": ("基本账户", "basic account"),
        "ECNY_BASIC": ("数字人民币基本账户", "e-CNY basic account")}),
    "user_received_account": FieldLabel("退款入账账户", "Credited to", Kind.ACCOUNT,
                                        same_as="received_account"),
    "success_time": FieldLabel("退款成功时间", "Completed at", Kind.TIME,
                               same_as="channel_success_time"),
}

# Alipay deposit_back_info (bank-card leg of a refund): CHANNELS.md §4.2.
ALIPAY: Final[dict[str, FieldLabel]] = {
    "dback_status": FieldLabel("银行卡冲退状态", "Bank card leg", Kind.CODE, {
        "S": ("成功", "succeeded"),
        "F": ("失败，已退至支付宝余额", "failed, credited to the Alipay balance"),
        "P": ("处理中", "processing")}),
    "dback_amount": FieldLabel("银行卡冲退金额", "Bank card leg amount", Kind.AMOUNT),
    "bank_ack_time": FieldLabel("银行受理时间", "Bank acknowledged at", Kind.TIME),
    "est_bank_receipt_time": FieldLabel("银行预计到账时间", "Bank's estimated arrival",
                                        Kind.TIME),
}

# UnionPay 5.1.0 refund / query answer and back notification: CHANNELS.md §6.
BANKCARD: Final[dict[str, FieldLabel]] = {
    "queryId": FieldLabel("银联交易查询流水号", "UnionPay query ID", Kind.REFERENCE),
    "settleDate": FieldLabel("清算日期（月日）", "Settlement date (MMDD)", Kind.REFERENCE),
    "traceNo": FieldLabel("系统跟踪号", "System trace number", Kind.REFERENCE),
    "traceTime": FieldLabel("交易传输时间（月日时分秒）", "Transmission time (MMDDhhmmss)",
                            Kind.REFERENCE),
}

# The platform wallet service's credit answer (adapters/balance).
BALANCE: Final[dict[str, FieldLabel]] = {
    "wallet_txn_id": FieldLabel("余额账户流水号", "Balance ledger entry", Kind.REFERENCE,
                                same_as="channel_refund_id"),
    "entry_id": FieldLabel("余额账户流水号", "Balance ledger entry", Kind.REFERENCE,
                           same_as="channel_refund_id"),
}

TABLES: Final[dict[str, dict[str, FieldLabel]]] = {
    "wechatpay": WECHATPAY, "alipay": ALIPAY, "bankcard": BANKCARD, "balance": BALANCE}


def label_of(route: str, name: str) -> FieldLabel | None:
    """The route's label for a channel field; None: not for print (JSON evidence only)."""
    return TABLES.get(route, {}).get(name)
