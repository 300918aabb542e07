"""The one masking rule for account and card numbers: logs, stored evidence, reports,
receipts and adapters all call this module, so one account reads the same everywhere.

Owns: how a value that *is* an account is shown (``mask_account``), how a card number
inside free text is hidden (``mask_text``), which channel fields are accounts
(``ACCOUNT_FIELDS``), and the last-4 form of opaque personal ids (``mask_opaque``).
Callers mask by field; times, amounts and reference ids are never passed here as accounts.
No I/O.
"""

from __future__ import annotations

import re
from typing import Final, overload

# DESIGN.md "Receipts": "masked: last 4, at most BIN + last 4". What we produce is the
# last 4 (what banks and WeChat show a user: 招商银行信用卡0403); a value the channel
# masked itself is kept as stated when it shows no more than BIN (6) + last 4 (the most
# PCI DSS 3.3.1 lets be displayed; UnionPay 622609******0048, Alipay 159****5620), so the
# account reads as in the user's own app and masking a masked value changes nothing.
MASK: Final = "****"
_BIN: Final = 6
_TAIL: Final = 4

# Fields whose value is a receiving or paying account, by the channel's own name: WeChat
# user_received_account (CH §5.1), Alipay buyer_logon_id / buyer_user_id (CH §4.1),
# UnionPay accNo / payCardNo (CH §6), and ours (``Refund.received_account``).
ACCOUNT_FIELDS: Final = frozenset({
    "user_received_account", "buyer_logon_id", "buyer_user_id", "buyer_id",
    "buyer_pay_amount_account", "accNo", "payCardNo", "received_account", "account"})

# In an account field: an e-mail (local part may hold the channel's stars), or a digit
# run that may hold spaces, dashes and masking stars (6222 0212 3456 7890, 159****5620).
_EMAIL: Final = (r"(?P<local>[A-Za-z0-9._%+*\-]{1,64})"
                 r"@(?P<domain>[A-Za-z0-9.\-]+\.[A-Za-z]{2,})")
_ACCOUNT_PART: Final = re.compile(rf"{_EMAIL}|(?P<run>\d[\d*\s\-]*\d|\d)")
_NON_DIGIT: Final = re.compile(r"\D")

# In free text, only what is shaped like a card: 16-19 digits (UnionPay cards are 16-19,
# CH §6), bare or in groups of 4, not glued to letters, digits or "_" (so an id such as
# RF20261120<hex> or a file name keeps its digits). Shorter runs are left alone on
# purpose: 14-digit times (UnionPay txnTime) and 15-digit merIds fill payloads and logs;
# a shorter account is masked by field instead. Longer ids (WeChat refund_id, 29 digits;
# UnionPay queryId, 21) never match.
_CARD_IN_TEXT: Final = re.compile(
    r"(?<![0-9A-Za-z_])(?:\d{16,19}|\d{4}(?:[ -]\d{4}){3}(?:[ -]?\d{1,3})?)(?![0-9A-Za-z_])")


def _channel_masked(run: str) -> bool:
    """``622202******0123`` / ``159****5620``: the channel's stars, showing at most
    BIN + last 4 and no digit between the stars."""
    if "*" not in run:
        return False
    head = run[:run.index("*")]
    tail = run[run.rindex("*") + 1:]
    middle = run[len(head):len(run) - len(tail)]
    return (len(_NON_DIGIT.sub("", head)) <= _BIN and len(_NON_DIGIT.sub("", tail)) <= _TAIL
            and not any(c.isdigit() for c in middle))


def _mask_part(match: re.Match[str]) -> str:
    run = match.group("run")
    if run is None:   # an e-mail: first letter of the local part, the domain kept
        local, domain = match.group("local"), match.group("domain")
        return match.group(0) if "*" in local else f"{local[:1]}***@{domain}"
    digits = _NON_DIGIT.sub("", run)
    if len(digits) <= _TAIL or _channel_masked(run):
        return run
    return MASK + digits[-_TAIL:]


@overload
def mask_account(value: str) -> str: ...
@overload
def mask_account(value: None) -> None: ...
def mask_account(value: str | None) -> str | None:
    """A value that is an account, as a person may see it: every number in it longer than
    4 digits becomes ``****`` + its last 4, an e-mail keeps its first letter and domain.

    ``6222021234567890123`` -> ``****0123``; ``招商银行信用卡0403`` and ``支付用户零钱``
    unchanged; ``zhangsan@163.com`` -> ``z***@163.com``; ``622202******0123`` kept.
    Idempotent: ``mask_account(mask_account(x)) == mask_account(x)``.
    """
    if not value:
        return value
    return _ACCOUNT_PART.sub(_mask_part, value)


def mask_text(text: str) -> str:
    """Free text (a log line, a stored payload's string, a bad-line message) with every
    card-shaped number as ``****`` + last 4, the form ``mask_account`` gives it; times,
    amounts and ids are left whole."""
    return _CARD_IN_TEXT.sub(lambda m: MASK + _NON_DIGIT.sub("", m.group(0))[-_TAIL:], text)


def mask_opaque(value: str) -> str:
    """A personal value with nothing in it a person reads (Alipay ``buyer_open_id``,
    UnionPay ``customerInfo``): ``****`` + its last 4, or ``****`` alone when it is
    shorter than 8 (so at least half of it is always hidden)."""
    return MASK + value[-_TAIL:] if len(value) >= 2 * _TAIL else MASK
