"""The UnionPay code tables (CH §6, CHANNELS-ADDENDUM §2), code by code (pure).

The codes below are copied by hand from the addendum's table, not from the module, so a
row dropped or misclassified there fails here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters.bankcard import translate
from adapters.bankcard.translate import Outcome, Verdict
from gateway.models import ChannelStatus
from gateway.money import Money

S = ChannelStatus
ACCEPTED = Verdict.ACCEPTED
# Addendum §2, "final failure" row.
FAILURE_ROW = ["01", "10", "11", "13", "30", "31", "32", "33", "35", "36", "38", "39",
               "45", "60", "61", "62", "63", "99"]
# Not in any table: a code UnionPay may add, a neighbour of A6 the table does not list,
# and an empty code.
UNLISTED = ["A2", "A7", "98", "ZZ", ""]


def warned(logs: Sequence[Mapping[str, Any]], event: str) -> bool:
    return any(entry["event"] == event and entry["log_level"] == "warning"
               for entry in logs)


# -- synchronous refund answer --------------------------------------------------------------
@pytest.mark.parametrize("code,expected", [
    ("00", Outcome(ACCEPTED, S.PROCESSING)),     # accepted; the result comes later
    ("A6", Outcome(ACCEPTED, S.SUCCEEDED)),      # success with defects: final success
    ("03", Outcome(Verdict.UNKNOWN)),            # timeout -> query
    ("04", Outcome(Verdict.UNKNOWN)),            # state unknown -> query
    ("05", Outcome(Verdict.UNKNOWN)),            # accepted, pending -> query
    ("02", Outcome(Verdict.UNAVAILABLE)),        # system not open: not accepted
    ("06", Outcome(Verdict.UNAVAILABLE)),        # system busy: not accepted
    ("37", Outcome(Verdict.UNKNOWN)),            # too frequent: the resolver waits
    ("12", Outcome(Verdict.UNKNOWN)),            # duplicate orderId: the first one's fate
    ("11", Outcome(Verdict.AUTH)),               # our signature rejected (deviation)
    *[(code, Outcome(ACCEPTED, S.FAILED)) for code in FAILURE_ROW if code != "11"],
])
def test_submit_table(code: str, expected: Outcome) -> None:
    assert translate.submit_outcome(code) == expected


@pytest.mark.parametrize("code", [*UNLISTED, "34"])
def test_submit_unlisted_code_is_unknown_with_a_warning(code: str) -> None:
    with capture_logs() as logs:
        assert translate.submit_outcome(code) == Outcome(Verdict.UNKNOWN)
    assert warned(logs, "bankcard.unknown_submit_code")


# -- query ----------------------------------------------------------------------------------
@pytest.mark.parametrize("orig,status", [
    ("00", S.SUCCEEDED),
    ("A6", S.SUCCEEDED),
    ("03", S.PROCESSING), ("04", S.PROCESSING), ("05", S.PROCESSING),
    *[(code, S.ABNORMAL) for code in FAILURE_ROW],   # failure after acceptance
])
def test_query_orig_table(orig: str, status: ChannelStatus) -> None:
    assert translate.query_outcome("00", orig) == Outcome(ACCEPTED, status)


@pytest.mark.parametrize("orig", [*UNLISTED, None, "02", "06", "12", "34", "37"])
def test_query_unlisted_orig_code_is_processing_with_a_warning(orig: str | None) -> None:
    with capture_logs() as logs:
        assert translate.query_outcome("00", orig) == Outcome(ACCEPTED, S.PROCESSING)
    assert warned(logs, "bankcard.unknown_origRespCode")


@pytest.mark.parametrize("code,expected", [
    ("34", Outcome(ACCEPTED, S.NOT_FOUND)),      # no such transaction: resend same orderId
    ("03", Outcome(Verdict.UNKNOWN)), ("04", Outcome(Verdict.UNKNOWN)),
    ("05", Outcome(Verdict.UNKNOWN)),
    ("02", Outcome(Verdict.UNKNOWN)), ("06", Outcome(Verdict.UNKNOWN)),
    ("37", Outcome(Verdict.UNKNOWN)),
    ("11", Outcome(Verdict.AUTH)),
    # a refused query never decides the refund
    *[(code, Outcome(Verdict.UNKNOWN)) for code in FAILURE_ROW if code != "11"],
])
def test_query_own_code_table(code: str, expected: Outcome) -> None:
    # origRespCode "00" is present to prove it is not read unless the query worked
    assert translate.query_outcome(code, "00") == expected


@pytest.mark.parametrize("code", [*UNLISTED, "A6", "12"])
def test_query_unlisted_own_code_is_unknown_with_a_warning(code: str) -> None:
    with capture_logs() as logs:
        assert translate.query_outcome(code, "00") == Outcome(Verdict.UNKNOWN)
    assert warned(logs, "bankcard.unknown_query_code")


# -- back notification ----------------------------------------------------------------------
@pytest.mark.parametrize("code,status", [
    ("00", S.SUCCEEDED),
    ("A6", S.SUCCEEDED),
    *[(code, S.ABNORMAL) for code in FAILURE_ROW],
])
def test_notification_table(code: str, status: ChannelStatus) -> None:
    assert translate.notification_status(code) is status


@pytest.mark.parametrize("code", [*UNLISTED, "03", "04", "05", "12", "34"])
def test_notification_unlisted_code_is_processing_with_a_warning(code: str) -> None:
    with capture_logs() as logs:
        assert translate.notification_status(code) is S.PROCESSING
    assert warned(logs, "bankcard.unknown_notification_code")


def test_success_with_defects_is_flagged_for_reconciliation() -> None:
    with capture_logs() as logs:
        translate.submit_outcome("A6")
        translate.query_outcome("00", "A6")
        translate.notification_status("A6")
        translate.notification_status("00")
    assert [e["where"] for e in logs if e["event"] == "bankcard.success_with_defects"] == [
        "submit", "query", "notification"]


@pytest.mark.parametrize("code", [*UNLISTED, "34", "12", "37"])
def test_no_unlisted_code_is_ever_final(code: str) -> None:
    final = {S.SUCCEEDED, S.FAILED, S.ABNORMAL}
    assert translate.submit_outcome(code).status not in final
    assert translate.query_outcome("00", code).status not in final
    assert translate.query_outcome(code, "00").status not in final
    assert translate.notification_status(code) not in final


# -- evidence -------------------------------------------------------------------------------
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
