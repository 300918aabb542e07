"""The CH §6 code tables, row by row (pure)."""

from __future__ import annotations

import pytest

from adapters.bankcard import translate
from adapters.bankcard.translate import Outcome, Verdict
from gateway.models import ChannelStatus
from gateway.money import Money

ACCEPTED = Verdict.ACCEPTED


@pytest.mark.parametrize("code,expected", [
    ("00", Outcome(ACCEPTED, ChannelStatus.PROCESSING)),   # accepted; final comes later
    ("03", Outcome(Verdict.UNKNOWN)),                       # timeout -> query
    ("04", Outcome(Verdict.UNKNOWN)),                       # state unknown -> query
    ("05", Outcome(Verdict.UNKNOWN)),                       # accepted, pending -> query
    ("06", Outcome(Verdict.UNAVAILABLE)),                   # system busy: not processed
    ("11", Outcome(Verdict.AUTH)),                          # our signature rejected
    ("12", Outcome(Verdict.UNKNOWN)),                       # duplicate orderId: first one's fate
    ("37", Outcome(Verdict.UNKNOWN)),                       # too frequent
    ("01", Outcome(ACCEPTED, ChannelStatus.FAILED)),        # others failed (CH §6)
    ("30", Outcome(ACCEPTED, ChannelStatus.FAILED)),
    ("35", Outcome(ACCEPTED, ChannelStatus.FAILED)),        # original not found / state
    ("36", Outcome(ACCEPTED, ChannelStatus.FAILED)),
    ("", Outcome(ACCEPTED, ChannelStatus.FAILED)),
])
def test_submit_table(code: str, expected: Outcome) -> None:
    assert translate.submit_outcome(code) == expected


@pytest.mark.parametrize("code,orig,expected", [
    ("00", "00", Outcome(ACCEPTED, ChannelStatus.SUCCEEDED)),
    ("00", "03", Outcome(ACCEPTED, ChannelStatus.PROCESSING)),
    ("00", "04", Outcome(ACCEPTED, ChannelStatus.PROCESSING)),
    ("00", "05", Outcome(ACCEPTED, ChannelStatus.PROCESSING)),
    ("00", None, Outcome(ACCEPTED, ChannelStatus.PROCESSING)),   # unmapped: never final
    ("00", "01", Outcome(ACCEPTED, ChannelStatus.ABNORMAL)),     # failure after acceptance
    ("00", "61", Outcome(ACCEPTED, ChannelStatus.ABNORMAL)),
    ("00", "ZZ", Outcome(ACCEPTED, ChannelStatus.ABNORMAL)),
    ("34", None, Outcome(ACCEPTED, ChannelStatus.NOT_FOUND)),    # no such transaction
    ("03", None, Outcome(Verdict.UNKNOWN)),
    ("04", None, Outcome(Verdict.UNKNOWN)),
    ("05", None, Outcome(Verdict.UNKNOWN)),
    ("37", None, Outcome(Verdict.UNKNOWN)),                      # a query never fails a refund
    ("01", None, Outcome(Verdict.UNKNOWN)),
    ("11", None, Outcome(Verdict.AUTH)),
])
def test_query_table(code: str, orig: str | None, expected: Outcome) -> None:
    assert translate.query_outcome(code, orig) == expected


@pytest.mark.parametrize("code,status", [
    ("00", ChannelStatus.SUCCEEDED), ("05", ChannelStatus.PROCESSING),
    ("01", ChannelStatus.ABNORMAL), ("61", ChannelStatus.ABNORMAL),
])
def test_notification_table(code: str, status: ChannelStatus) -> None:
    assert translate.notification_status(code) is status


def test_redact_drops_signatures_and_masks_cards() -> None:
    raw = translate.redact({"signature": "s", "signPubKeyCert": "c", "respCode": "00",
                            "accNo": "6216261000000000018", "queryId": "Q1"})
    assert raw == {"accNo": "****0018", "queryId": "Q1", "respCode": "00"}
    assert translate.redact({"customerInfo": "e3Bob25lTm89MTM4MTIzNDU2Nzh9"}) == {
        "customerInfo": "****Nzh9"}   # the cardholder's details: nothing but the last 4


def test_bank_ack_keeps_unionpay_references() -> None:
    assert translate.bank_ack({"queryId": "Q", "settleDate": "1120", "traceNo": "",
                               "respCode": "00"}) == {"queryId": "Q", "settleDate": "1120"}


@pytest.mark.parametrize("text,money", [("2500", Money(2500)), ("", None), (None, None),
                                        ("25.00", None), ("-1", None), ("²", None)])
def test_fen(text: str | None, money: Money | None) -> None:
    assert translate.fen(text) == money
