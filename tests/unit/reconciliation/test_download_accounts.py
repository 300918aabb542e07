"""Statements are downloaded for every merchant account of a route (issue 19): the
platform's refunds of a route span its accounts, so each account's statement is read."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from gateway.models import Route
from reconciliation import cli
from tests.fakes import FakeBalance


class Ledger(FakeBalance):
    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label
        self.closed = False

    def download_statement(self, day: date) -> bytes:
        return f"{self.label}:{day.isoformat()}".encode()

    def close(self) -> None:
        self.closed = True


def test_every_account_statement_is_downloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway import bootstrap

    default, shop2 = Ledger("default"), Ledger("shop2")
    monkeypatch.setattr(cli, "_settings", lambda ctx: object())
    monkeypatch.setattr(bootstrap, "build_adapters",
                        lambda settings, routes=None: {Route.BALANCE: default})
    monkeypatch.setattr(bootstrap, "build_accounts",
                        lambda settings, routes=None: {(Route.BALANCE, "shop2"): shop2})
    sources: list[Any] = cli._download(None, [Route.BALANCE], date(2026, 11, 20))  # type: ignore[arg-type]
    assert [s.name for s in sources] == ["balance-2026-11-20", "balance-shop2-2026-11-20"]
    assert default.closed and shop2.closed
