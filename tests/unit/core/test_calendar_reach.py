"""Working days past the package's data (issue 18): a holiday schedule file extends it;
where nothing covers a year, Monday to Friday with one warning, estimates approximate."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner

from gateway import calendar
from gateway.errors import ConfigurationError
from gateway.models import ArrivalWindow

SCHEDULE_2027 = """
# 国务院办公厅关于2027年部分节假日安排的通知 (as typed by the operator; test data)
[2027]
holidays = ["2027-01-01", "2027-01-04"]     # a Monday off
workdays = ["2027-01-09"]                   # a make-up Saturday
"""


@pytest.fixture(autouse=True)
def _fresh_calendar() -> Iterator[None]:
    calendar.configure(None)
    yield
    calendar.configure(None)


def test_a_year_nobody_covers_is_monday_to_friday_with_one_warning() -> None:
    with structlog.testing.capture_logs() as logs:
        assert calendar.is_working_day(date(2027, 1, 4))       # a Monday
        assert not calendar.is_working_day(date(2027, 1, 9))   # a Saturday
        assert calendar.add_working_days(date(2027, 1, 8), 1) == date(2027, 1, 11)
    assert [e["event"] for e in logs].count("calendar.approximate") == 1
    window = calendar.arrival_window((1, 5), datetime(2026, 12, 30, 4, tzinfo=UTC))
    assert window.latest.year == 2027                          # no empty window
    assert calendar.is_approximate(window)
    assert not calendar.is_approximate(ArrivalWindow(date(2026, 11, 2), date(2026, 11, 6)))


def test_a_schedule_file_extends_the_data(tmp_path: Path) -> None:
    path = tmp_path / "holidays.toml"
    path.write_text(SCHEDULE_2027, encoding="utf-8")
    calendar.configure(calendar.load_schedule(path))
    assert not calendar.is_working_day(date(2027, 1, 4))   # the notice's Monday off
    assert calendar.is_working_day(date(2027, 1, 9))       # its make-up Saturday
    assert calendar.add_working_days(date(2026, 12, 31), 1) == date(2027, 1, 5)
    window = calendar.arrival_window((1, 5), datetime(2026, 12, 31, 4, tzinfo=UTC))
    assert not calendar.is_approximate(window)
    assert calendar.reach()["covered_through"] == 2027


@pytest.mark.parametrize("text,message", [
    ("[2027]\nholidays = ['2027-13-01']", "not a date"),
    ("[2027]\nholidays = ['2028-01-01']", "listed under"),
    ("[2027]\nholidays = ['2027-01-01']\nworkdays = ['2027-01-01']", "both"),
    ("[abc]\nholidays = []", "not a year"),
    ("[2027\n", "holiday schedule"),
])
def test_a_bad_schedule_file_is_a_configuration_error(tmp_path: Path, text: str,
                                                      message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigurationError, match=message):
        calendar.load_schedule(path)


def test_the_cli_says_how_far_the_calendar_reaches(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.cli import main

    path = tmp_path / "holidays.toml"
    path.write_text(SCHEDULE_2027, encoding="utf-8")
    monkeypatch.setenv("REFUND_GATEWAY_HOLIDAY_SCHEDULE", str(path))
    monkeypatch.setenv("REFUND_GATEWAY_DATABASE_URL", f"sqlite:///{tmp_path / 'g.db'}")
    result = CliRunner().invoke(main, ["--json", "calendar"])
    assert result.exit_code == 0, result.output
    assert '"covered_through": 2027' in result.output


def test_a_refund_in_january_2027_gets_an_arrival_window(sqlite_url: str) -> None:
    from gateway.bootstrap import build_gateway
    from gateway.models import Route
    from gateway.settings import load_settings
    from tests.fakes import FakeBalance, FakeChannel, Ledger
    from tests.helpers import FakeClock, request

    gw = build_gateway(load_settings(database_url=sqlite_url),
                       clock=FakeClock(datetime(2027, 1, 5, 2, tzinfo=UTC)),
                       sleep=lambda _: None, configure_logs=False,
                       adapters={Route.WECHATPAY: FakeChannel(),
                                 Route.BALANCE: FakeBalance(Ledger())})
    refund = gw.refund(request())
    gw.close()
    assert refund.expected_arrival is not None
    assert refund.expected_arrival.latest == date(2027, 1, 8)   # 3 working days, Mon-Fri
    assert calendar.is_approximate(refund.expected_arrival)


def test_a_report_near_uncovered_days_says_its_deadlines_are_approximate() -> None:
    from types import SimpleNamespace

    from reconciliation.reports import warning_records

    late = warning_records(SimpleNamespace(warnings=[], run_date=date(2026, 12, 28)))
    assert [w["code"] for w in late] == ["calendar_approximate"]
    assert warning_records(SimpleNamespace(warnings=[], run_date=date(2026, 11, 20))) == []


def test_json_output_names_the_database(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18: every command's --json names the database it used (absolute path)."""
    from gateway.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REFUND_GATEWAY_DATABASE_URL", "sqlite:///refund-gateway.db")
    result = CliRunner().invoke(main, ["--json", "calendar"])
    assert result.exit_code == 0, result.output
    assert f'"database": "sqlite:///{tmp_path / "refund-gateway.db"}"' in result.output
