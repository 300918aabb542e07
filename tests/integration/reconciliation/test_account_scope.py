"""Reconciling one merchant account at a time (``reconcile --account``), on SQLite,
PostgreSQL and MariaDB: the bank-card route has two accounts, ``default`` and ``shop2``,
each with refunds made through ``RefundGateway`` (payments naming their account) and its
own settlement file, as each shop's finance team has.

A run scoped to shop2 judges shop2's refunds only, and carries shop2's open items only:
an in-transit refund of ``default`` whose deadline passes is not made "refunded, not
received" by a shop2 run that never read default's statement; the next default (or
unscoped) run still judges it. An item unknown to the platform belongs to the accounts
of the run that first saw it. The run records its accounts (``recon_runs.accounts``),
and its outputs name them. The platform CSV's ``merchant_account`` column scopes a CSV
run the same way."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, select, update

from gateway.bootstrap import build_gateway
from gateway.cli import main
from gateway.clock import BEIJING
from gateway.models import ChannelStatus, Payment, Refund, RefundRequest, RefundStatus, Route
from gateway.money import Money
from gateway.service import RefundGateway
from gateway.settings import load_settings
from gateway.store.schema import refunds
from reconciliation.platform import paid_twice
from reconciliation.schema import recon_items, recon_runs
from tests.helpers import FakeClock
from tests.integration.reconciliation.test_carry_over import FakeBankcard
from tests.unit.reconciliation.bills import Line, unionpay_settlement

THU, LATE, MON = date(2026, 11, 19), date(2026, 11, 27), date(2026, 11, 30)
DEADLINE = "2026-11-26"      # 5 working days after Thursday the 19th


def _at(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=BEIJING)


class Shops:
    """A gateway whose bank-card route has the accounts ``default`` and ``shop2``, and
    ``run(day, label, statements, *options)``: ``reconcile --json`` of that day."""

    def __init__(self, database_url: str, tmp: Path) -> None:
        self.database_url, self.tmp = database_url, tmp
        self.engine: Engine = create_engine(database_url)
        self.clock = FakeClock(_at(THU, 10).astimezone(UTC))
        default, shop2 = FakeBankcard(), FakeBankcard()
        default.settle = shop2.settle = ChannelStatus.SUCCEEDED
        self.gw: RefundGateway = build_gateway(
            load_settings(database_url=database_url), clock=self.clock,
            sleep=lambda _: None, configure_logs=False, adapters={Route.BANKCARD: default},
            accounts={(Route.BANKCARD, "shop2"): shop2})

    def refund(self, day: date, key: str, account: str, amount: int) -> Refund:
        """A refund of ``account``'s payment that succeeds at 10:00 of ``day``."""
        self.clock.now = _at(day, 10).astimezone(UTC)
        payment = Payment(route=Route.BANKCARD, merchant_order_no=f"ORD-{key}",
                          channel_trade_no=f"T-{key}", amount=Money(10_000),
                          merchant_account=account)
        refund = self.gw.refund(RefundRequest(idempotency_key=key, payment=payment,
                                              amount=Money(amount), reason="not delivered"))
        assert refund.status is RefundStatus.SUCCEEDED, refund
        return refund

    def statement(self, day: date, account: str, lines: list[Line]) -> Path:
        path = self.tmp / f"{account}-{day:%Y%m%d}" / f"777290058110048_{day:%Y%m%d}.zip"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(unionpay_settlement(lines, day))
        return path

    def run(self, day: date, label: str, statements: list[Path], *options: str
            ) -> tuple[int, dict[str, Any], dict[str, Any]]:
        """(exit code, the ``--json`` document, the JSON report)."""
        args = ["reconcile", "--date", day.isoformat(), "--route", "bankcard",
                "--out", str(self.tmp / f"out-{day}-{label}"), "--format", "json,html",
                "--json", *options]
        for s in statements:
            args += ["--statement", str(s)]
        done = CliRunner().invoke(main, args,
                                  env={"REFUND_GATEWAY_DATABASE_URL": self.database_url})
        assert done.exit_code in (0, 1), (done.output, repr(done.exception))
        doc = json.loads(done.stdout)
        report = json.loads(Path(doc["reports"][0]).read_text("utf-8"))
        return done.exit_code, doc, report

    def items(self) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            return {r.item_key: dict(r._mapping) for r in conn.execute(select(recon_items))}

    def run_accounts(self) -> list[str | None]:
        """Each recorded run's ``accounts`` column, oldest first."""
        with self.engine.connect() as conn:
            return [r.accounts for r in conn.execute(
                select(recon_runs.c.accounts).order_by(recon_runs.c.id))]


@pytest.fixture
def shops(database_url: str, tmp_path: Path) -> Iterator[Shops]:
    s = Shops(database_url, tmp_path)
    yield s
    s.gw.close()
    s.engine.dispose()


def _classes(report: dict[str, Any]) -> dict[str, str]:
    """Channel refund number -> class of the report's rows (matched rows are left out)."""
    return {r["channel_refund_no"]: r["class"] for r in report["rows"]}


def test_a_scoped_run_judges_and_carries_its_accounts_only(shops: Shops) -> None:
    d1 = shops.refund(THU, "d1", "default", 4_500).channel_refund_no
    s1 = shops.refund(THU, "s1", "shop2", 1_000).channel_refund_no
    s2 = shops.refund(THU, "s2", "shop2", 2_000).channel_refund_no    # not on any file
    shop2_thu = shops.statement(THU, "shop2", [
        Line(s1, "ORD-s1", 1_000, "00", at=_at(THU, 11)),
        Line("RFSHOP2X", "ORD-X", 300, "00", at=_at(THU, 12))])       # unknown to platform

    # 1. shop2's finance team: shop2's statement against shop2's refunds only.
    code, doc, report = shops.run(THU, "shop2", [shop2_thu], "--account", "shop2")
    assert code == 1 and doc["accounts"] == ["shop2"] and report["accounts"] == ["shop2"]
    assert doc["counts"] == {**dict.fromkeys(doc["counts"], 0), "matched": 1,
                             "in_transit": 1, "unknown_to_platform": 1}
    assert _classes(report) == {s2: "in_transit", "RFSHOP2X": "unknown_to_platform"}
    assert Path(doc["reports"][0]).name == "reconciliation-2026-11-19-shop2.json"
    html = Path(doc["reports"][1]).read_text("utf-8")
    assert "商户号/账户 Accounts: shop2" in html
    assert d1 not in shops.items()

    # 2. An unscoped run of the day, with both accounts' files: every account, as before.
    default_thu = shops.statement(THU, "default", [
        Line("RFALLX", "ORD-Y", 400, "00", at=_at(THU, 13))])          # unknown to platform
    code, doc, report = shops.run(THU, "all", [default_thu, shop2_thu])
    assert doc["accounts"] is None and report["accounts"] is None
    assert _classes(report) == {d1: "in_transit", s2: "in_transit",
                                "RFSHOP2X": "unknown_to_platform",
                                "RFALLX": "unknown_to_platform"}
    assert "商户号/账户 Accounts: 全部 all" in Path(doc["reports"][1]).read_text("utf-8")
    assert shops.run_accounts() == ['["shop2"]', None]

    # 3. shop2, a week later: the deadline of Thursday's refunds has passed. shop2's
    # in-transit refund is now refunded, not received; default's is not shop2's to judge,
    # nor is the unknown line an unscoped run saw first; shop2's own unknown line is.
    s3 = shops.refund(LATE, "s3", "shop2", 700).channel_refund_no
    code, doc, report = shops.run(LATE, "shop2", [shops.statement(LATE, "shop2", [
        Line(s3, "ORD-s3", 700, "00", at=_at(LATE, 11))])], "--account", "shop2")
    assert code == 1
    assert _classes(report) == {s2: "refunded_not_received",
                                "RFSHOP2X": "unknown_to_platform"}
    items = shops.items()
    run3 = items[s2]["last_seen_run"]
    assert (items[d1]["class"], items[d1]["state"]) == ("in_transit", "open")
    assert items[d1]["last_seen_run"] == items["RFALLX"]["last_seen_run"] < run3

    # 4. default's team, the same day: its refund is judged (refunded, not received);
    # shop2's items are not carried into a run that did not read shop2's statement.
    code, doc, report = shops.run(LATE, "default", [shops.statement(LATE, "default", [])],
                                  "--account", "default")
    assert code == 1 and doc["accounts"] == ["default"]
    assert _classes(report) == {d1: "refunded_not_received"}
    row = report["rows"][0]
    assert (row["arrival_latest"], row["state"]) == (DEADLINE, "open")
    assert shops.items()[d1]["class"] == "refunded_not_received"

    # 5. Monday, unscoped: default's line arrives and closes the item; everything open
    # of every account is carried again.
    code, doc, report = shops.run(MON, "all", [
        shops.statement(MON, "default", [Line(d1, "ORD-d1", 4_500, "00", at=_at(MON, 9))]),
        shops.statement(MON, "shop2", [])])
    assert doc["counts"]["matched"] == 1
    assert _classes(report) == {s2: "refunded_not_received",
                                "RFSHOP2X": "unknown_to_platform",
                                "RFALLX": "unknown_to_platform"}
    items = shops.items()
    assert (items[d1]["class"], items[d1]["state"]) == ("matched", "resolved")
    assert shops.run_accounts() == ['["shop2"]', None, '["shop2"]', '["default"]', None]


def test_a_run_of_several_accounts_carries_what_a_run_of_fewer_saw(shops: Shops) -> None:
    """An unknown line first seen by a run of S is carried into a run of T when S ⊆ T."""
    shops.refund(THU, "s1", "shop2", 1_000)
    shop2_thu = shops.statement(THU, "shop2", [
        Line("RFSHOP2X", "ORD-X", 300, "00", at=_at(THU, 12))])
    shops.run(THU, "shop2", [shop2_thu], "--account", "shop2")
    _, doc, report = shops.run(THU, "both", [shops.statement(THU, "default", [])],
                               "--account", "shop2", "--account", "default")
    assert doc["accounts"] == ["default", "shop2"]
    assert Path(doc["reports"][0]).name == "reconciliation-2026-11-19-default-shop2.json"
    assert _classes(report)["RFSHOP2X"] == "unknown_to_platform"
    assert shops.run_accounts()[-1] == '["default", "shop2"]'


def test_paid_twice_refunds_are_read_for_the_run_accounts(shops: Shops) -> None:
    d1 = shops.refund(THU, "d1", "default", 4_500)
    engine = shops.engine
    with engine.begin() as conn:   # the alarm the gateway raises, set by hand here
        conn.execute(update(refunds).where(refunds.c.id == d1.id)
                     .values(paid_after_release_at=_at(THU, 11).astimezone(UTC)))
    assert set(paid_twice(engine, [Route.BANKCARD]).numbers) == {d1.channel_refund_no}
    assert set(paid_twice(engine, [Route.BANKCARD], ["default"]).numbers) == {
        d1.channel_refund_no}
    assert paid_twice(engine, [Route.BANKCARD], ["shop2"]).numbers == {}


# -- the platform CSV ---------------------------------------------------------------------

CSV_HEADER = ("refund_id,route,merchant_order_no,channel_trade_no,channel_refund_no,amount,"
              "currency,status,created_at,succeeded_at")


def _csv(path: Path, rows: list[tuple[str, str]], *, column: bool) -> Path:
    """A platform export of bank-card refunds (number, account) of 10.00 each, made at
    10:00 on Thursday; with the optional ``merchant_account`` column or without."""
    at = _at(THU, 10).isoformat()
    lines = [CSV_HEADER + (",merchant_account" if column else "")]
    for number, account in rows:
        cells = [f"rf-{number}", "bankcard", f"ORD-{number}", f"T-{number}", number, "10.00",
                 "CNY", "succeeded", at, at]
        lines.append(",".join(cells + ([account] if column else [])))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _csv_run(tmp: Path, export: Path, *options: str) -> tuple[int, str, dict[str, Any]]:
    statement = tmp / "777290058110048_20261119.zip"
    statement.write_bytes(unionpay_settlement(
        [Line("RFS", "ORD-RFS", 1_000, "00", at=_at(THU, 11))], THU))
    out = tmp / ("out" + "-".join(options))
    done = CliRunner().invoke(main, [
        "reconcile", "--date", THU.isoformat(), "--statement", str(statement),
        "--platform-csv", str(export), "--no-save", "--format", "json", "--out", str(out),
        *options])
    assert done.exit_code in (0, 1), (done.output, repr(done.exception))
    (report,) = out.iterdir()
    return done.exit_code, done.output, json.loads(report.read_text("utf-8"))


def test_the_csv_merchant_account_column_scopes_the_platform_side(tmp_path: Path) -> None:
    export = _csv(tmp_path / "export.csv", [("RFD", ""), ("RFS", "shop2"),
                                            ("RFX", "default")], column=True)
    code, printed, report = _csv_run(tmp_path, export, "--account", "shop2")
    assert code == 0 and report["rows"] == []      # RFS matched, nothing else judged
    assert report["counts"]["matched"] == 1 and sum(report["counts"].values()) == 1
    assert "accounts: shop2" in printed.splitlines()

    # default: the empty cell and the word alike; shop2's line is then a refund the
    # export (scoped to default) does not hold.
    code, _, report = _csv_run(tmp_path, export, "--account", "default")
    assert _classes(report) == {"RFD": "in_transit", "RFX": "in_transit",
                                "RFS": "unknown_to_platform"}

    code, printed, report = _csv_run(tmp_path, export)
    assert _classes(report) == {"RFD": "in_transit", "RFX": "in_transit"}
    assert "accounts: all" in printed.splitlines()


def test_a_csv_without_the_column_is_the_default_account(tmp_path: Path) -> None:
    export = _csv(tmp_path / "export.csv", [("RFD", ""), ("RFS", "")], column=False)
    _, _, report = _csv_run(tmp_path, export, "--account", "default")
    assert report["accounts"] == ["default"]
    assert _classes(report) == {"RFD": "in_transit"}
    _, _, report = _csv_run(tmp_path, export, "--account", "shop2")
    assert _classes(report) == {"RFS": "unknown_to_platform"}


# -- usage errors -------------------------------------------------------------------------

def test_an_account_no_route_configures_exits_2_naming_the_configured_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)        # no .env of the working tree
    env = {"REFUND_GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gw.db'}",
           "REFUND_GATEWAY_BALANCE__BASE_URL": "http://127.0.0.1:9",
           "REFUND_GATEWAY_BALANCE__HMAC_KEY": "k" * 32,
           "REFUND_GATEWAY_BALANCE__ACCOUNTS__SHOP2__BASE_URL": "http://127.0.0.1:9",
           "REFUND_GATEWAY_BALANCE__ACCOUNTS__SHOP2__HMAC_KEY": "z" * 32}
    for key in [k for k in os.environ if k.startswith("REFUND_GATEWAY_")]:
        monkeypatch.delenv(key)      # only the balance route's two accounts configured
    runner = CliRunner()
    done = runner.invoke(main, ["reconcile", "--date", "2026-11-20", "--account", "nosuch",
                                "--out", str(tmp_path)], env=env)
    assert done.exit_code == 2 and isinstance(done.exception, SystemExit)
    assert done.stderr.strip() == (
        "error: no merchant account nosuch is configured on any route "
        "(configured: balance: default, shop2)")
    done = runner.invoke(main, ["reconcile", "--date", "2026-11-20", "--account", "nosuch",
                                "--json"], env=env)
    assert done.exit_code == 2
    doc = json.loads(done.stdout)
    assert doc["exit_code"] == 2 and "configured: balance: default, shop2" in doc["error"]
    done = runner.invoke(main, ["reconcile", "--date", "2026-11-20", "--account", "shop 2!"],
                         env=env)
    assert done.exit_code == 2 and isinstance(done.exception, SystemExit)
    assert "--account shop 2!: a merchant account name is 1-32 of [a-z0-9_-]" in done.stderr
    assert not list(tmp_path.glob("reconciliation-*"))
