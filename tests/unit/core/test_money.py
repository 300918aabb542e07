import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import InvalidRequest, Money


def test_parse_and_format_round_trip() -> None:
    assert Money.parse("12.30") == Money(1230)
    assert Money.parse(" -0.01\t") == Money(-1)
    assert Money.parse("7") == Money(700)
    assert Money(1230).format() == "12.30"
    assert Money(-5).format() == "-0.05"
    assert Money(5, "JPY").format() == "5"
    assert str(Money(100)) == "1.00 CNY"


@pytest.mark.parametrize("bad", ["1.234", "1e3", "1,000.00", "", "abc", "0x10", "1.2.3"])
def test_parse_rejects_non_decimal(bad: str) -> None:
    with pytest.raises(InvalidRequest):
        Money.parse(bad)


def test_parse_accepts_trailing_zero_decimals() -> None:
    assert Money.parse("1.2300") == Money(123)


@pytest.mark.parametrize("bad", [1.5, True, "100", None])
def test_minor_must_be_int(bad: object) -> None:
    with pytest.raises(InvalidRequest):
        Money(bad)  # type: ignore[arg-type]


def test_parse_refuses_float_argument() -> None:
    with pytest.raises(InvalidRequest):
        Money.parse(12.3)  # type: ignore[arg-type]


def test_currency_checked() -> None:
    with pytest.raises(InvalidRequest):
        Money(1, "XYZ")
    with pytest.raises(InvalidRequest):
        Money(1) + Money(1, "USD")


def test_huge_amount_rejected() -> None:
    with pytest.raises(InvalidRequest):
        Money(10**16)


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_format_parse_inverse(minor: int) -> None:
    assert Money.parse(Money(minor).format()) == Money(minor)
