"""Money as integer minor units plus a currency. No floats, anywhere.

Strings and decimals exist only at the wire edge: ``Money.parse("12.30")`` and
``Money.format()`` are the one converter for major-unit decimal strings (yuan), which every
channel in CHANNELS.md uses where it does not use fen integers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from gateway.errors import InvalidRequest

# ISO 4217 exponents of the currencies the routes can carry. CNY is the only one the
# domestic channels accept today (WeChat "currency":"CNY", UnionPay 156).
_EXPONENTS: Final[dict[str, int]] = {"CNY": 2, "HKD": 2, "USD": 2, "JPY": 0}
_DECIMAL = re.compile(r"^(?P<sign>[+-]?)(?P<int>\d+)(?:\.(?P<frac>\d+))?$")
# Far above any real refund (10^15 fen = 10 trillion yuan) yet far below int64.
MAX_MINOR: Final[int] = 10**15


@dataclass(frozen=True, slots=True, order=False)
class Money:
    """An exact amount: ``minor`` units (fen for CNY) of ``currency``. Floats and bools
    are refused; ``Money.parse("12.30")`` reads a decimal string at the edges.

    Attributes:
        minor: the amount in minor units (an ``int``: 1250 is 12.50 CNY).
        currency: the ISO 4217 code (CNY, HKD, USD or JPY; every route carries CNY
            only).
        exponent: the currency's decimal places (2 for CNY).
    """

    minor: int
    currency: str = "CNY"

    def __post_init__(self) -> None:
        # bool is an int subclass; True fen is a bug, not one fen.
        if isinstance(self.minor, bool) or not isinstance(self.minor, int):
            raise InvalidRequest(
                f"Money.minor must be an int of minor units, not {type(self.minor).__name__}",
                field="amount",
            )
        if self.currency not in _EXPONENTS:
            raise InvalidRequest(f"unsupported currency {self.currency!r}", field="currency")
        if abs(self.minor) > MAX_MINOR:
            raise InvalidRequest("amount is out of range", field="amount")

    @property
    def exponent(self) -> int:
        return _EXPONENTS[self.currency]

    @classmethod
    def parse(cls, text: str, currency: str = "CNY") -> Money:
        """Parse a major-unit decimal string such as ``"12.30"`` or ``"-0.01"``.

        Rejects floats, exponents, thousands separators and more decimals than the
        currency has; surrounding whitespace (Alipay pads cells with tabs) is trimmed.
        """
        if not isinstance(text, str):
            raise InvalidRequest(
                f"amount must be a decimal string, not {type(text).__name__}", field="amount"
            )
        if currency not in _EXPONENTS:
            raise InvalidRequest(f"unsupported currency {currency!r}", field="currency")
        m = _DECIMAL.match(text.strip())
        if m is None:
            raise InvalidRequest(f"not a decimal amount: {text.strip()[:32]!r}", field="amount")
        exp = _EXPONENTS[currency]
        frac = m.group("frac") or ""
        if len(frac) > exp:
            if frac[exp:].strip("0"):
                raise InvalidRequest(
                    f"{text.strip()!r} has more than {exp} decimals", field="amount"
                )
            frac = frac[:exp]
        digits = m.group("int") + frac.ljust(exp, "0")
        if len(digits) > 18:
            raise InvalidRequest("amount is out of range", field="amount")
        value = int(digits)
        return cls(-value if m.group("sign") == "-" else value, currency)

    def format(self) -> str:
        """Major units with exactly the currency's decimals: ``Money(1230).format() == "12.30"``."""
        exp = self.exponent
        sign = "-" if self.minor < 0 else ""
        q, r = divmod(abs(self.minor), 10**exp) if exp else (abs(self.minor), 0)
        return f"{sign}{q}.{r:0{exp}d}" if exp else f"{sign}{q}"

    def __str__(self) -> str:
        return f"{self.format()} {self.currency}"

    def _same(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise InvalidRequest(
                f"currency mismatch: {self.currency} vs {other.currency}", field="currency"
            )

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor - other.minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.minor < other.minor

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.minor <= other.minor

    def __gt__(self, other: Money) -> bool:
        self._same(other)
        return self.minor > other.minor

    def __ge__(self, other: Money) -> bool:
        self._same(other)
        return self.minor >= other.minor

    def is_positive(self) -> bool:
        """Whether the amount is above zero."""
        return self.minor > 0
