"""What a new developer meets first (issue 22): settings from a named file, routes as
strings or ``Route`` alike, notification bodies as bytes or str (anything else refused
with ``InvalidRequest``), a missing database driver and ``db upgrade`` on a new database
as one clear line each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import (
    ConfigurationError,
    InvalidRequest,
    Money,
    Payment,
    RefundGateway,
    RefundRequest,
    RefundStatus,
    Route,
    load_settings,
)
from sandbox.server import SandboxServer
from sandbox.state import Fault

CLI = [sys.executable, "-c", "from gateway.cli import main; main()"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("REFUND_GATEWAY_")}


@pytest.fixture
def gw(refund_sandbox: SandboxServer, tmp_path: Path,
       monkeypatch: pytest.MonkeyPatch) -> Iterator[RefundGateway]:
    monkeypatch.setenv("REFUND_GATEWAY_DATABASE_URL", f"sqlite:///{tmp_path}/gw.db")
    gateway = RefundGateway.from_settings(
        env_file=refund_sandbox.write_env_file(tmp_path / "sandbox.env"),
        configure_logs=False)
    yield gateway
    gateway.close()


def _paid(sandbox: SandboxServer, route: str, fen: int = 10_000) -> Payment:
    p = sandbox.state.add_payment(route, fen)
    return Payment(route=route, merchant_order_no=p.merchant_order_no,  # type: ignore[arg-type]
                   channel_trade_no=p.channel_trade_no, amount=Money(fen), user_id=p.user_id)


# -- settings from a named file ---------------------------------------------------------

def test_from_settings_reads_the_named_file(gw: RefundGateway) -> None:
    assert set(gw.adapters) == set(Route)      # every route the sandbox's file configures


def test_from_settings_refuses_a_missing_file_or_two_sources(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not found"):
        RefundGateway.from_settings(env_file=tmp_path / "nope.env")
    (tmp_path / "a.env").write_text("REFUND_GATEWAY_LOG_LEVEL=INFO\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="not both"):
        RefundGateway.from_settings(load_settings(), env_file=tmp_path / "a.env")


# -- routes as strings ------------------------------------------------------------------

def test_a_route_string_works_wherever_a_route_does(gw: RefundGateway,
                                                    refund_sandbox: SandboxServer) -> None:
    refund_sandbox.state.add_fault(Fault("bankcard", "refund", "abnormal", 1, {}))
    refund = gw.refund(RefundRequest("k-str", _paid(refund_sandbox, "bankcard"),
                                     Money(10_000)))
    assert refund.route is Route.BANKCARD
    refund = gw.sync(refund.id)
    assert refund.status is RefundStatus.ABNORMAL
    with pytest.raises(InvalidRequest, match="unknown route 'paypal'"):
        gw.reroute(refund.id, to="paypal")
    linked = gw.reroute(refund.id, to="balance")
    assert linked.route is Route.BALANCE


@pytest.mark.parametrize("route", ["wechatpay", Route.WECHATPAY])
def test_notifications_take_a_route_string_and_a_str_body(
        gw: RefundGateway, refund_sandbox: SandboxServer, route: str | Route) -> None:
    refund = gw.refund(RefundRequest("k-n", _paid(refund_sandbox, "wechatpay"), Money(500)))
    (note,) = refund_sandbox.pending_notifications("wechatpay")
    ack = gw.handle_notification(route, note.headers, note.body.decode("utf-8"))
    assert ack.accepted and ack.refund_id == refund.id
    assert gw.get(refund.id).status is RefundStatus.SUCCEEDED


@pytest.mark.parametrize("body", [{"a": 1}, None, 42, ["x"]])
def test_a_body_that_is_not_bytes_or_str_is_invalid_request(gw: RefundGateway,
                                                           body: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        gw.handle_notification("wechatpay", {}, body)  # type: ignore[arg-type]
    assert caught.value.field == "body"


def test_an_unknown_route_string_is_answered_404(gw: RefundGateway) -> None:
    ack = gw.handle_notification("paypal", {}, b"{}")
    assert (ack.http_status, ack.accepted) == (404, False)


# -- the CLI on first use ---------------------------------------------------------------

def test_db_upgrade_says_what_it_created(tmp_path: Path) -> None:
    env = {**_env(), "REFUND_GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path}/new.db"}
    first = subprocess.run([*CLI, "db", "upgrade"], env=env, cwd=tmp_path, text=True,
                           capture_output=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("created the schema at sqlite:///"), first.stdout
    assert "refunds" in first.stdout and "tables:" in first.stdout
    again = subprocess.run([*CLI, "--json", "db", "upgrade"], env=env, cwd=tmp_path,
                           text=True, capture_output=True, timeout=120, check=False)
    doc = json.loads(again.stdout)
    assert (doc["action"], doc["created_tables"]) == ("current", [])
    assert doc["revision"] == doc["from_revision"]


def test_a_missing_driver_names_the_extra(tmp_path: Path) -> None:
    env = {**_env(), "REFUND_GATEWAY_DATABASE_URL": "postgresql+psycopg://u@127.0.0.1/db"}
    hide = "import sys; sys.modules['psycopg'] = None; "   # as if not installed
    done = subprocess.run([sys.executable, "-c", hide + "from gateway.cli import main; "
                           "main()", "db", "upgrade"], env=env, cwd=tmp_path, text=True,
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "refund-gateway[postgres]" in done.stderr
    assert "Traceback" not in done.stderr
