"""The sandbox's state file (``SandboxServer(state_path=...)``, ``sandbox serve --state``):
a sandbox restarted on it remembers payments, executed refunds (statuses, ids, times),
notifications (delivered or not), replay nonces, its id counter and config, and signs
with the same keys and certificates, so a resend after the restart gets the original
answer, not a refusal. Every acknowledged change is on disk before the answer leaves
(the file copied while the sandbox runs, as a kill would leave it, holds it all).
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from gateway import Money, Payment, RefundGateway, RefundRequest, RefundStatus, Route
from gateway.bootstrap import build_adapters, build_gateway
from gateway.clock import utcnow
from gateway.settings import load_settings
from sandbox.cli import sandbox_group
from sandbox.server import SandboxServer
from sandbox.state import Notification, Refund, Settle, State
from sandbox.state_file import StateFile, StateFileError
from tests.sandbox.test_alipay import client as alipay_client
from tests.sandbox.test_alipay import refund as alipay_refund
from tests.sandbox.test_balance import Wallet
from tests.sandbox.test_wechatpay import client as wechat_client
from tests.sandbox.test_wechatpay import query as wechat_query
from tests.sandbox.test_wechatpay import refund as wechat_refund

ROUTES = ("alipay", "wechatpay", "bankcard", "balance")


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "sandbox-state.db"


@pytest.fixture
def sandbox(state_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(state_path=state_path).start()
    yield server
    server.stop()


def restart(server: SandboxServer, state_path: Path) -> SandboxServer:
    """Stop ``server`` and start a new one on the same port and state file."""
    port = server.port
    server.stop()
    return SandboxServer(port=port, state_path=state_path).start()


def gateway(env_file: Path, tmp_path: Path) -> RefundGateway:
    settings = load_settings(env_file, database_url=f"sqlite:///{tmp_path / 'gw.db'}",
                             log_level="ERROR")
    return build_gateway(settings, configure_logs=False, sleep=lambda _: None,
                         adapters=build_adapters(settings, utcnow))


def refund_every_route(server: SandboxServer, gw: RefundGateway) -> list[str]:
    ids = []
    for route in ROUTES:
        p = server.state.add_payment(route, 10_000)
        refund = gw.refund(RefundRequest(
            f"k-{route}", Payment(Route(route), p.merchant_order_no, p.channel_trade_no,
                                  Money(p.amount_fen), p.user_id), Money(2_500), "restart"))
        ids.append(gw.sync(refund.id).id)
    return ids


def remembered(server: SandboxServer) -> dict[str, Any]:
    """Everything a restarted sandbox must have back, compared as data."""
    state = server.state
    with state.lock:
        return {"truth": state.truth(),
                "payments": {key: vars(p).copy() for key, p in state.payments.items()},
                "by_trade": sorted(state.payments_by_trade),
                "notifications": [(n.route, n.url, n.headers, n.body, n.channel_refund_no,
                                   n.attempts, n.delivered, n.hold_back)
                                  for n in state.notifications],
                "nonces": sorted(state.nonces), "counter": state.counter}


def strip(data: dict[str, Any]) -> dict[str, Any]:
    for payment in data["payments"].values():
        payment.pop("_record", None)
    return data


def test_a_resend_after_a_restart_gets_the_original_answer(sandbox: SandboxServer,
                                                           state_path: Path,
                                                           tmp_path: Path) -> None:
    wx, ali, wallet = wechat_client(sandbox), alipay_client(sandbox), Wallet(sandbox)
    env_before = sandbox.write_env_file(tmp_path / "before.env").read_bytes()
    wx_pay = sandbox.state.add_payment("wechatpay", 10_000)
    code, wx_first = wechat_refund(wx, wx_pay, "RFW-1", 400)
    assert code == 200
    _, wx_settled = wechat_query(wx, "RFW-1")
    ali_pay = requests.post(f"{sandbox.url}/_sandbox/payments",
                            json={"route": "alipay", "amount_fen": 10_000}, timeout=5).json()
    ali_first = alipay_refund(ali, ali_pay, "25.00", "RFA-1")
    assert ali_first["code"] == "10000" and ali_first["fund_change"] == "Y"
    wallet_first = wallet.credit("RFB-1", 1_500)
    assert wallet_first.status_code == 200
    truth_before = sandbox.state.truth()

    sandbox = restart(sandbox, state_path)
    try:
        # The clients keep the settings of the first run: same keys, same certificates.
        code, wx_again = wechat_refund(wx, wx_pay, "RFW-1", 400)
        assert code == 200, wx_again
        assert wx_again["refund_id"] == wx_first["refund_id"]
        assert wx_again["create_time"] == wx_first["create_time"]
        assert wechat_query(wx, "RFW-1") == (200, wx_settled)
        ali_again = alipay_refund(ali, ali_pay, "25.00", "RFA-1")
        assert ali_again["code"] == "10000", ali_again
        assert (ali_again["trade_no"], ali_again["fund_change"]) == (ali_pay["channel_trade_no"],
                                                                     "N")
        wallet_again = wallet.credit("RFB-1", 1_500)
        assert wallet_again.status_code == 200
        assert wallet_again.json() == wallet_first.json()
        truth_after = sandbox.state.truth()
        assert [r["executions"] for r in truth_after] == [1, 1, 1]
        assert [{**r, "queries": 0} for r in truth_after] == \
            [{**r, "queries": 0} for r in truth_before]
        env_after = sandbox.write_env_file(tmp_path / "after.env").read_bytes()
        assert env_after == env_before          # the gateway's env file stays valid
    finally:
        sandbox.stop()


def test_the_file_holds_every_acknowledged_change_while_the_sandbox_runs(
        sandbox: SandboxServer, tmp_path: Path) -> None:
    gw = gateway(sandbox.write_env_file(tmp_path / "sandbox.env"), tmp_path)
    ids = refund_every_route(sandbox, gw)
    assert {gw.get(i).status for i in ids} == {RefundStatus.SUCCEEDED}
    taken = sandbox.pending_notifications("alipay")        # delivered; the rest wait
    assert taken
    Wallet(sandbox).credit("RFB-nonce", 100, nonce="0badcafe")
    live = strip(remembered(sandbox))
    # What a SIGKILL leaves: the database and its WAL as they are, nothing closed.
    crash = tmp_path / "crash"
    crash.mkdir()
    for suffix in ("", "-wal"):
        shutil.copy(f"{sandbox._file.path}{suffix}", crash / f"state.db{suffix}")  # type: ignore[union-attr]
    with SandboxServer(state_path=crash / "state.db") as reopened:
        assert strip(remembered(reopened)) == live
        assert live["notifications"] and any(n[6] for n in live["notifications"])
        waiting = reopened.pending_notifications()
        assert waiting and {n.route for n in waiting} == {"wechatpay", "bankcard"}
        for note in waiting:            # genuine: the gateway verifies them
            ack = gw.handle_notification(note.route, note.headers, note.body)
            assert 200 <= ack.http_status < 300, ack
    gw.close()


def test_ids_config_and_nonces_carry_on_faults_do_not(sandbox: SandboxServer,
                                                      state_path: Path) -> None:
    before = [sandbox.state.add_payment(route, 1_000) for route in ROUTES]
    requests.post(f"{sandbox.url}/_sandbox/config", timeout=5, json={
        "settle": {"wechatpay": {"mode": "after_queries", "n": 3}},
        "notify_url": {"alipay": "http://127.0.0.1:9/notify"},
        "limits": {"wechatpay": {"refund_interval_seconds": 60}}}).raise_for_status()
    requests.post(f"{sandbox.url}/_sandbox/faults", timeout=5, json={
        "route": "alipay", "operation": "refund", "kind": "http_500"}).raise_for_status()
    wallet = Wallet(sandbox)
    assert wallet.credit("RFB-2", 100, nonce="5a3e0c11d00d").status_code == 200
    sandbox = restart(sandbox, state_path)
    try:
        after = [sandbox.state.add_payment(route, 1_000) for route in ROUTES]
        old = {(p.merchant_order_no, p.channel_trade_no) for p in before}
        assert not old & {(p.merchant_order_no, p.channel_trade_no) for p in after}
        assert sandbox.state.counter == 2 * len(ROUTES) + 1      # the wallet's refund id
        assert sandbox.state.settle["wechatpay"] == Settle("after_queries", 3)
        assert sandbox.state.notify_urls == {"alipay": "http://127.0.0.1:9/notify"}
        assert sandbox.state.limits["wechatpay"] == {"refund_interval_seconds": 60.0}
        assert sandbox.state.faults == []                        # faults: memory only
        replay = wallet.credit("RFB-3", 100, nonce="5a3e0c11d00d")
        assert replay.status_code == 401 and replay.json()["code"] == "NONCE_REPLAYED"
    finally:
        sandbox.stop()


def test_reset_empties_the_file_and_keeps_the_keys(sandbox: SandboxServer,
                                                   state_path: Path, tmp_path: Path) -> None:
    gw = gateway(sandbox.write_env_file(tmp_path / "sandbox.env"), tmp_path)
    refund_every_route(sandbox, gw)
    gw.close()
    settings = sandbox.settings()
    requests.post(f"{sandbox.url}/_sandbox/reset", json={}, timeout=5).raise_for_status()
    sandbox.state.add_payment("balance", 500)
    sandbox = restart(sandbox, state_path)
    try:
        assert sandbox.state.truth() == [] and sandbox.state.notifications == []
        assert [p.amount_fen for p in sandbox.state.payments.values()] == [500]
        assert sandbox.settings() == settings
    finally:
        sandbox.stop()


def test_one_sandbox_per_state_file(sandbox: SandboxServer, state_path: Path,
                                    tmp_path: Path) -> None:
    with pytest.raises(StateFileError, match="in use by another sandbox"):
        SandboxServer(state_path=state_path)
    result = CliRunner().invoke(sandbox_group, ["serve", "--port", "0",
                                                "--state", str(state_path)])
    assert result.exit_code == 1 and "in use by another sandbox" in result.output
    missing = tmp_path / "no-such-folder" / "state.db"
    result = CliRunner().invoke(sandbox_group, ["serve", "--port", "0", "--state", str(missing)])
    assert result.exit_code == 1 and f"cannot open {missing}-lock" in result.output
    other = tmp_path / "other.db"
    StateFile(other).close()
    with sqlite3.connect(other) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(StateFileError, match="version 99"):
        StateFile(other)
    SandboxServer(state_path=tmp_path / "kept.db").stop()
    with pytest.raises(ValueError, match="has its keys already"):
        SandboxServer(state_path=tmp_path / "kept.db", keys=sandbox.keys)


def test_changes_outside_the_lock_inside_extra_and_the_queue_order_are_kept(
        tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    state = State(store=StateFile(path))
    payment = state.add_payment("alipay", 1_000)
    refund = Refund("alipay", "R1", "ID1", payment.merchant_order_no,
                    payment.channel_trade_no, 300, "PROCESSING", utcnow(), "fp",
                    extra={"dback_queries": 0})
    with state.lock:
        state.refunds[("alipay", "R1")] = refund
        state.refunds[("alipay", "R2")] = replace(refund, channel_refund_no="R2", extra={})
    refund.extra["dback_queries"] += 1      # outside the lock, inside extra
    state.queue_notification(Notification("alipay", None, {}, b"first", "R1",
                                          hold_back=True))
    state.queue_notification(Notification("alipay", None, {}, b"second", "R2"))
    del state.refunds[("alipay", "R2")]
    stale = state.payments[("alipay", payment.merchant_order_no)]
    state.payments[("alipay", payment.merchant_order_no)] = replace(stale, refunded_fen=300)
    stale.refunded_fen = 999                # replaced: no longer the row's
    state.flush()
    state.close()
    again = State(store=StateFile(path))
    assert again.refunds[("alipay", "R1")].extra == {"dback_queries": 1}
    assert list(again.refunds) == [("alipay", "R1")]
    assert again.payments[("alipay", payment.merchant_order_no)].refunded_fen == 300
    assert [(n.body, n.hold_back) for n in again.notifications] == [(b"second", False),
                                                                   (b"first", False)]
    again.close()
