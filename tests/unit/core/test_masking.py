"""The one masking rule (``gateway.masking``), as tables: accounts by field (cards, WeChat
``user_received_account``, Alipay logon ids, the channels' own masking kept within BIN +
last 4), card numbers in free text, and what must never be masked (times, ids, amounts).
Masking is idempotent: what is shown once is shown the same way again."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.masking import ACCOUNT_FIELDS, mask_account, mask_opaque, mask_text

ACCOUNTS = [
    # bank cards (UnionPay 16-19 digits), bare, grouped, inside a bank's name
    ("6222021234567890123", "****0123"),
    ("6216261000000000018", "****0018"),
    ("6222 0212 3456 7890 123", "****0123"),
    ("6222-0212-3456-7890", "****7890"),
    ("622202100012", "****0012"),                       # a 12-digit bank account
    ("工商银行借记卡6222021234567890123", "工商银行借记卡****0123"),
    ("招商银行信用卡6222021234567890", "招商银行信用卡****7890"),
    # WeChat user_received_account (CH §5.1: {bank}{card type}{last 4}, or a wallet)
    ("招商银行信用卡0403", "招商银行信用卡0403"),
    ("工商银行借记卡1234", "工商银行借记卡1234"),
    ("支付用户零钱", "支付用户零钱"),
    ("支付用户零钱通", "支付用户零钱通"),
    # the channel's own masking: kept while it shows at most BIN (6) + last 4
    ("622202******0123", "622202******0123"),
    ("622609******0048", "622609******0048"),
    ("6222021******0123", "****0123"),                  # 7 leading digits: more than a BIN
    ("6222****5678****0123", "****0123"),               # digits between the stars
    ("159****5620", "159****5620"),                     # Alipay's masked mobile
    ("138****5678", "138****5678"),
    ("****0123", "****0123"),                           # our own output
    # Alipay logon ids and user ids (CH §4.1)
    ("13812345678", "****5678"),                        # an unmasked mobile
    ("138 1234 5678", "****5678"),
    ("2088101117955611", "****5611"),                   # buyer_user_id
    ("zhangsan@163.com", "z***@163.com"),
    ("zha***@163.com", "zha***@163.com"),               # Alipay's masked e-mail
    ("a.b+refunds@example.com", "a***@example.com"),
    ("13812345678@qq.com", "1***@qq.com"),
    ("alipay_balance:159****5620", "alipay_balance:159****5620"),
    # short values: nothing beyond a last 4 to hide
    ("0403", "0403"),
    ("123", "123"),
    ("", ""),
]


@pytest.mark.parametrize(("raw", "shown"), ACCOUNTS)
def test_mask_account(raw: str, shown: str) -> None:
    assert mask_account(raw) == shown


@pytest.mark.parametrize(("raw", "shown"), ACCOUNTS)
def test_mask_account_is_idempotent(raw: str, shown: str) -> None:
    assert mask_account(shown) == shown


def test_none_stays_none() -> None:
    assert mask_account(None) is None


TEXT = [
    # card numbers in free text: the same ****last4 an account field gets
    ("card 6222021234567890123 refused", "card ****0123 refused"),
    ("accNo=6216261000000000018&respCode=00", "accNo=****0018&respCode=00"),
    ("卡号6222021234567890123", "卡号****0123"),
    ("6222 0212 3456 7890 123 returned", "****0123 returned"),
    ("6222-0212-3456-7890", "****7890"),
    ("招商银行信用卡6222021234567890", "招商银行信用卡****7890"),
    ("x.csv:3: unsupported currencyCode 6222021234567890123",
     "x.csv:3: unsupported currencyCode ****0123"),
    # never masked: times, ids, amounts, order numbers, already-masked accounts
    ("success_time 2020-12-01T16:18:12+08:00", "success_time 2020-12-01T16:18:12+08:00"),
    ("txnTime 20261122204500", "txnTime 20261122204500"),          # 14-digit time
    ("merId 777290058110048", "merId 777290058110048"),            # 15-digit merchant id
    ("refund_id 50000000382019052709732678859",                    # WeChat, 29 digits
     "refund_id 50000000382019052709732678859"),
    ("queryId 742611201000052816801", "queryId 742611201000052816801"),   # UnionPay, 21
    ("trade_no 2014112611001004680073956707", "trade_no 2014112611001004680073956707"),
    ("RF202611201234567890ABCD", "RF202611201234567890ABCD"),     # our refund id
    ("20881234567890120156_20261120_业务明细.csv:6: bad amount",
     "20881234567890120156_20261120_业务明细.csv:6: bad amount"),
    ("from 2026-11-20 2026-11-21", "from 2026-11-20 2026-11-21"),
    ("amount 12345678.90 CNY", "amount 12345678.90 CNY"),
    ("622202******0123 and 159****5620", "622202******0123 and 159****5620"),
    ("", ""),
]


@pytest.mark.parametrize(("raw", "shown"), TEXT)
def test_mask_text(raw: str, shown: str) -> None:
    assert mask_text(raw) == shown
    assert mask_text(shown) == shown


@pytest.mark.parametrize("card", ["6222021234567890123", "6222 0212 3456 7890 123",
                                  "6222021234567890"])
def test_a_card_reads_the_same_as_a_field_and_in_text(card: str) -> None:
    assert mask_text(f"paid to {card}.") == f"paid to {mask_account(card)}."


@pytest.mark.parametrize(("raw", "shown"), [
    ("074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5", "****oCo5"),   # Alipay open id
    ("e3BwaG9uZU5vPTEzODEyMzQ1Njc4fQ==", "****fQ=="),                  # customerInfo
    ("abc1234", "****"), ("****oCo5", "****oCo5"), ("", "****")])
def test_mask_opaque(raw: str, shown: str) -> None:
    assert mask_opaque(raw) == shown


def test_account_fields_name_the_channels_account_fields() -> None:
    assert {"user_received_account", "buyer_logon_id", "accNo"} <= ACCOUNT_FIELDS
    assert not {"success_time", "refund_id", "out_trade_no", "funds_account",
                "channel"} & ACCOUNT_FIELDS


@given(st.text(alphabet="0123456789 -*@.abc招商银行", max_size=40))
def test_masking_twice_is_masking_once(value: str) -> None:
    once = mask_account(value)
    assert mask_account(once) == once
    assert mask_text(mask_text(value)) == mask_text(value)
