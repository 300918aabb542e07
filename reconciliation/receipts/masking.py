"""Masking for what a person reads on a receipt: account and card numbers as their last 4.

Stricter than ``gateway.logging.mask_account`` (16-19 digit runs only): any run of more
than 4 digits, spaces or dashes between them included, becomes ``****`` + last 4. A value
the channel already masked (WeChat ``招商银行信用卡0403``, Alipay ``159****5620``,
``622202******0123``) is kept as stated when it shows at most BIN (6) + last 4 digits.
References the user must quote (UnionPay ``queryId``, channel refund ids) are not masked.
"""

from __future__ import annotations

import re
from typing import Final

# A digit, then digits / masking stars / spaces / dashes, ending in a digit.
_RUN: Final = re.compile(r"\d[\d*\s\-]*\d|\d")
_EMAIL: Final = re.compile(r"([^\s@]{1,64})@([A-Za-z0-9.\-]+\.[A-Za-z]{2,})")
_BIN: Final = 6
_TAIL: Final = 4


def _mask_run(match: re.Match[str]) -> str:
    run = match.group(0)
    digits = re.sub(r"\D", "", run)
    if len(digits) <= _TAIL:
        return run
    if "*" in run:
        head, _, rest = run.partition("*")
        tail = rest.rsplit("*", 1)[-1]
        head_d, tail_d = re.sub(r"\D", "", head), re.sub(r"\D", "", tail)
        middle = run[len(head):len(run) - len(tail)]
        if (len(head_d) <= _BIN and len(tail_d) <= _TAIL
                and not re.search(r"\d", middle)):
            return run          # the channel's own masking, within BIN + last 4
    return "****" + digits[-_TAIL:]


def _mask_email(match: re.Match[str]) -> str:
    local, domain = match.group(1), match.group(2)
    if "*" in local:
        return match.group(0)   # already masked by the channel (Alipay: abc***@163.com)
    return f"{local[:1]}***@{domain}"


def mask_account(value: str | None) -> str | None:
    """``6222021234567890123`` -> ``****0123``; ``招商银行信用卡0403`` unchanged."""
    if value is None:
        return None
    return _RUN.sub(_mask_run, _EMAIL.sub(_mask_email, value))
