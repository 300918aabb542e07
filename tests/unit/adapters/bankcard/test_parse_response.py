"""The UnionPay answer parser on tricky inputs (CH §6: values not URL-encoded, nests)."""

from __future__ import annotations

import pytest

from adapters.bankcard.client import ResponseFormatError, parse_response


def test_plain_pairs() -> None:
    assert parse_response("respCode=00&respMsg=成功[0000000]&txnAmt=2500") == {
        "respCode": "00", "respMsg": "成功[0000000]", "txnAmt": "2500"}


def test_equals_inside_values_splits_at_first() -> None:
    assert parse_response("signature=abc+/==&k=a=b=c") == {"signature": "abc+/==",
                                                           "k": "a=b=c"}


def test_nested_braces_keep_their_ampersands() -> None:
    text = "reqReserved={a=1&b={c=2&d=3}}&respCode=00"
    assert parse_response(text) == {"reqReserved": "{a=1&b={c=2&d=3}}", "respCode": "00"}


def test_brackets_and_mixed_nests() -> None:
    text = "list=[{x=1&y=2}&{x=3}]&z=&respCode=05"
    assert parse_response(text) == {"list": "[{x=1&y=2}&{x=3}]", "z": "", "respCode": "05"}


def test_empty_values_and_trailing_newline() -> None:
    assert parse_response("a=&b=&c=1\r\n") == {"a": "", "b": "", "c": "1"}


def test_pem_certificate_value_with_newlines_and_plus() -> None:
    cert = "-----BEGIN CERTIFICATE-----\nMIIB+/x==\n-----END CERTIFICATE-----"
    assert parse_response(f"signPubKeyCert={cert}&respCode=00")["signPubKeyCert"] == cert


@pytest.mark.parametrize("text", ["", "   ", "novalue", "a=1&&b=2", "=1", "a={1&b=2",
                                  "a=1}&b=2", "a=1&a=2", "a=[1}"])
def test_malformed_answers_raise(text: str) -> None:
    with pytest.raises(ResponseFormatError):
        parse_response(text)
