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
    built = _two_accounts(monkeypatch)
    sources: list[Any] = cli._download(None, [Route.BALANCE], date(2026, 11, 20))  # type: ignore[arg-type]
    assert [s.name for s in sources] == ["balance-2026-11-20", "balance-shop2-2026-11-20"]
    assert built["default"].closed and built["shop2"].closed


def _two_accounts(monkeypatch: pytest.MonkeyPatch) -> dict[str, Ledger]:
    """Real settings for the balance route's accounts ``default`` and ``shop2``; the
    route's adapter factory (the one ``build_adapters`` and ``build_accounts`` use)
    makes a ``Ledger`` per account, known by its base URL."""
    from gateway import bootstrap
    from gateway.settings import GatewaySettings

    for name, value in {"BASE_URL": "http://wallet-default", "HMAC_KEY": "k" * 32,
                        "ACCOUNTS__SHOP2__BASE_URL": "http://wallet-shop2",
                        "ACCOUNTS__SHOP2__HMAC_KEY": "z" * 32}.items():
        monkeypatch.setenv(f"REFUND_GATEWAY_BALANCE__{name}", value)
    settings = GatewaySettings(_env_file=None)
    built: dict[str, Ledger] = {}

    def factory(scoped: Any, clock: Any) -> Ledger:
        label = scoped.balance.base_url.removeprefix("http://wallet-")
        built[label] = Ledger(label)
        return built[label]

    monkeypatch.setattr(cli, "_settings", lambda ctx: settings)
    monkeypatch.setattr(bootstrap, "adapter_factory", lambda route: factory)
    return built


def test_account_downloads_that_account_statement_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``reconcile --account shop2``: shop2's statement is downloaded, and the account
    ``default``'s adapter is not even built (its settings may be another team's)."""
    built = _two_accounts(monkeypatch)
    day = date(2026, 11, 20)
    sources: list[Any] = cli._download(None, [], day, ["shop2"])  # type: ignore[arg-type]
    assert [s.name for s in sources] == ["balance-shop2-2026-11-20"]
    assert sources[0].data == b"shop2:2026-11-20"
    assert set(built) == {"shop2"} and built["shop2"].closed

    built.clear()
    sources = cli._download(None, [Route.BALANCE], day, ["default"])  # type: ignore[arg-type]
    assert [s.name for s in sources] == ["balance-2026-11-20"]
    assert set(built) == {"default"}

    built.clear()
    sources = cli._download(None, [Route.BALANCE], day, None)  # type: ignore[arg-type]
    assert [s.name for s in sources] == ["balance-2026-11-20", "balance-shop2-2026-11-20"]


def test_an_account_no_route_configures_is_named_with_those_configured(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.errors import ConfigurationError

    built = _two_accounts(monkeypatch)
    with pytest.raises(ConfigurationError) as err:
        cli._download(None, [], date(2026, 11, 20), ["nosuch", "shop2"])  # type: ignore[arg-type]
    assert str(err.value) == ("no merchant account nosuch is configured on any route "
                              "(configured: balance: default, shop2)")
    with pytest.raises(ConfigurationError, match="route alipay has no settings"):
        cli._download(None, [Route.ALIPAY], date(2026, 11, 20), ["shop2"])  # type: ignore[arg-type]
    assert built == {}
