"""The WeChat route end to end against the sandbox in every verification mode and as a
service provider (issue 19): refund, query, notification verified, bill download, through
``RefundGateway`` built from the settings the sandbox writes.

Certificate mode downloads ``/v3/certificates`` on first use; a ``cert_rotated`` or a
``serial_switch`` shows a serial the gateway does not hold, which costs exactly one
download, then verifies: nothing is left unknown. The sandbox counts the downloads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.wechatpay.adapter import BillKind, WechatPayAdapter
from gateway import Money, Payment, RefundGateway, RefundRequest, RefundStatus, Route
from gateway.bootstrap import build_gateway
from gateway.clock import to_beijing
from gateway.errors import StatementError
from gateway.settings import load_settings
from sandbox.server import SandboxServer
from sandbox.state import Fault, Settle
from sandbox.wechatpay import SP_MCHID, SUB_MCHID, WechatPayChannel
from tests.helpers import FakeClock
from tests.integration.wechatpay.test_wechat_sandbox import resolve as resolve_every

S = RefundStatus
PREFIX = "REFUND_GATEWAY_WECHATPAY__"
MakeGateway = Callable[..., RefundGateway]


@pytest.fixture
def sandbox(refund_sandbox: SandboxServer) -> SandboxServer:
    return refund_sandbox


@pytest.fixture
def wechat(sandbox: SandboxServer) -> WechatPayChannel:
    channel = sandbox.channel("wechatpay")
    assert isinstance(channel, WechatPayChannel)
    return channel


@pytest.fixture
def clock() -> FakeClock:
    # notifications carry wall-clock timestamps; the business clock starts at now
    return FakeClock(datetime.fromtimestamp(int(time.time()), UTC))


@pytest.fixture
def make_gateway(sqlite_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[MakeGateway]:
    """A gateway whose WeChat accounts are the given settings blocks (``default`` and
    named ones, as ``..._ACCOUNTS__<NAME>__...``)."""
    built: list[RefundGateway] = []

    def make(**accounts: Mapping[str, str]) -> RefundGateway:
        for name, block in accounts.items():
            prefix = PREFIX if name == "default" else f"{PREFIX}ACCOUNTS__{name.upper()}__"
            for key, value in block.items():
                monkeypatch.setenv(prefix + key.removeprefix(PREFIX), value)
            monkeypatch.setenv(prefix + "TIMEOUTS__READ", "1")
            # resolving moves the business clock on; the sandbox stamps notifications
            # with the wall clock
            monkeypatch.setenv(prefix + "NOTIFICATION_MAX_SKEW_SECONDS", "3600")
        gateway = build_gateway(load_settings(database_url=sqlite_url), clock=clock,
                                sleep=lambda _: None, configure_logs=False)
        built.append(gateway)
        return gateway

    yield make
    for gateway in built:
        gateway.close()


def pay(sandbox: SandboxServer, fen: int = 10_000, *, merchant: str | None = None,
        account: str = "default") -> Payment:
    p = sandbox.state.add_payment("wechatpay", fen, merchant=merchant)
    return Payment(Route.WECHATPAY, p.merchant_order_no, p.channel_trade_no, Money(fen),
                   merchant_account=account)


def ask(payment: Payment, key: str, fen: int = 2_500) -> RefundRequest:
    return RefundRequest(key, payment, Money(fen), "sandbox")


def fault(sandbox: SandboxServer, operation: str, kind: str) -> None:
    sandbox.state.add_fault(Fault("wechatpay", operation, kind, 1, {}))


def settle_after_queries(sandbox: SandboxServer, n: int) -> None:
    sandbox.state.settle["wechatpay"] = Settle(mode="after_queries", n=n)


def resolve(gw: RefundGateway, clock: FakeClock, refund_id: str) -> RefundStatus:
    """WeChat's first checks are a minute apart: 2-minute steps keep the business clock
    near the wall clock the sandbox stamps notifications with."""
    return resolve_every(gw, clock, refund_id, step_minutes=2)


def notify_all(gw: RefundGateway, sandbox: SandboxServer) -> list[Any]:
    """Every pending WeChat notification handed to the gateway; their answers."""
    notes: list[Any] = []
    deadline = time.monotonic() + 5
    while not notes and time.monotonic() < deadline:
        notes = sandbox.pending_notifications("wechatpay")
        time.sleep(0.02)
    assert notes, "the sandbox sent no notification"
    return [(n, gw.handle_notification(Route.WECHATPAY, n.headers, n.body)) for n in notes]


def adapter(gw: RefundGateway, account: str = "default") -> WechatPayAdapter:
    found = gw.adapters[Route.WECHATPAY] if account == "default" else \
        gw.accounts[(Route.WECHATPAY, account)]
    assert isinstance(found, WechatPayAdapter)
    return found


def executed_once(sandbox: SandboxServer, *numbers: str) -> None:
    rows = {r["channel_refund_no"]: r["executions"] for r in sandbox.state.truth()}
    assert [rows.get(n) for n in numbers] == [1] * len(numbers)


def test_certificate_mode_across_a_rotation(sandbox: SandboxServer,
                                            wechat: WechatPayChannel,
                                            make_gateway: MakeGateway,
                                            clock: FakeClock) -> None:
    gw = make_gateway(default=wechat.settings_for(sandbox.url, verification="certificate"))
    downloads = wechat.certificate_downloads
    first = wechat.certificate.serial
    rf = gw.refund(ask(pay(sandbox), "c1"))
    assert rf.status is S.PROCESSING
    assert wechat.certificate_downloads == downloads + 1          # on first use
    [(note, ack)] = notify_all(gw, sandbox)
    assert note.headers["Wechatpay-Serial"] == first and ack.accepted
    assert gw.get(rf.id).status is S.SUCCEEDED
    # WeChat rotates its certificate while a refund is followed by queries
    settle_after_queries(sandbox, 1)
    rf2 = gw.refund(ask(pay(sandbox), "c2"))
    fault(sandbox, "query", "cert_rotated")
    assert resolve(gw, clock, rf2.id) is S.SUCCEEDED
    assert wechat.certificate.serial != first
    assert wechat.certificate_downloads == downloads + 2          # one for the new serial
    [(note, ack)] = notify_all(gw, sandbox)
    assert note.headers["Wechatpay-Serial"] == wechat.certificate.serial and ack.accepted
    assert wechat.certificate_downloads == downloads + 2          # already held
    # the old certificate still verifies (both sign during a rotation)
    assert {s for s, _ in adapter(gw)._client.platform_certificates()} == \
        {first, wechat.certificate.serial}
    day = to_beijing(rf.created_at).date()
    bill = adapter(gw).download_statement(day)
    assert rf.channel_refund_no.encode() in bill and rf2.channel_refund_no.encode() in bill
    adapter(gw).download_bill(day, BillKind.FUNDFLOW_BASIC)
    executed_once(sandbox, rf.channel_refund_no, rf2.channel_refund_no)


def test_public_key_mode_never_downloads_and_ignores_a_rotation(
        sandbox: SandboxServer, wechat: WechatPayChannel, make_gateway: MakeGateway,
        clock: FakeClock) -> None:
    gw = make_gateway(default=wechat.settings_for(sandbox.url, verification="public_key"))
    downloads = wechat.certificate_downloads
    settle_after_queries(sandbox, 1)
    rf = gw.refund(ask(pay(sandbox), "p1"))
    fault(sandbox, "query", "cert_rotated")
    assert resolve(gw, clock, rf.id) is S.SUCCEEDED
    [(note, ack)] = notify_all(gw, sandbox)
    assert note.headers["Wechatpay-Serial"].startswith("PUB_KEY_ID_") and ack.accepted
    assert adapter(gw).download_statement(to_beijing(rf.created_at).date())
    assert wechat.certificate_downloads == downloads


def test_public_key_mode_after_a_serial_switch_is_unknown_then_resolved(
        sandbox: SandboxServer, wechat: WechatPayChannel, make_gateway: MakeGateway,
        clock: FakeClock) -> None:
    # a public-key-only gateway cannot verify a certificate: the answer is no answer
    gw = make_gateway(default=wechat.settings_for(sandbox.url, verification="public_key"))
    fault(sandbox, "refund", "serial_switch")
    rf = gw.refund(ask(pay(sandbox), "p2"))
    assert rf.status is S.PROCESSING             # sent, outcome unknown: never FAILED
    assert resolve(gw, clock, rf.id) is S.SUCCEEDED
    executed_once(sandbox, rf.channel_refund_no)


def test_both_modes_at_once_across_a_rotation_and_a_serial_switch(
        sandbox: SandboxServer, wechat: WechatPayChannel, make_gateway: MakeGateway,
        clock: FakeClock) -> None:
    gw = make_gateway(default=wechat.settings_for(sandbox.url, verification="both"))
    downloads = wechat.certificate_downloads
    settle_after_queries(sandbox, 3)
    rf = gw.refund(ask(pay(sandbox), "b1"))        # answered by the public key
    assert rf.status is S.PROCESSING
    assert wechat.certificate_downloads == downloads + 1          # certificates too
    fault(sandbox, "query", "cert_rotated")      # 1st query: rotated, answer by the key
    fault(sandbox, "query", "serial_switch")     # 2nd: by the NEW certificate
    fault(sandbox, "notify", "serial_switch")    # the notification: by the certificate
    assert resolve(gw, clock, rf.id) is S.SUCCEEDED
    assert wechat.certificate_downloads == downloads + 2          # one for the new serial
    [(note, ack)] = notify_all(gw, sandbox)
    assert note.headers["Wechatpay-Serial"] == wechat.certificate.serial and ack.accepted
    assert wechat.certificate_downloads == downloads + 2
    # and a notification by the key verifies as well
    rf2 = gw.refund(ask(pay(sandbox), "b2"))
    resolve(gw, clock, rf2.id)
    [(note, ack)] = notify_all(gw, sandbox)
    assert note.headers["Wechatpay-Serial"].startswith("PUB_KEY_ID_") and ack.accepted
    bill = adapter(gw).download_statement(to_beijing(rf.created_at).date())
    assert rf.channel_refund_no.encode() in bill
    executed_once(sandbox, rf.channel_refund_no, rf2.channel_refund_no)


def test_certificates_unreachable_sends_nothing_then_recovers(
        sandbox: SandboxServer, wechat: WechatPayChannel, make_gateway: MakeGateway,
        clock: FakeClock) -> None:
    block = dict(wechat.settings_for(sandbox.url, verification="certificate"))
    block[PREFIX + "CERTIFICATE_RETRY_SECONDS"] = "0"
    gw = make_gateway(default=block)
    # every inline try (3) finds /v3/certificates failing: nothing goes out
    sandbox.state.add_fault(Fault("wechatpay", "certificates", "http_500", 3, {}))
    rf = gw.refund(ask(pay(sandbox), "u1"))
    assert rf.status is S.PENDING                # provably not sent
    assert sandbox.state.truth() == []
    assert resolve(gw, clock, rf.id) is S.SUCCEEDED       # resent once certificates came
    executed_once(sandbox, rf.channel_refund_no)


def test_one_gateway_a_direct_merchant_by_certificate_and_a_provider_by_key(
        sandbox: SandboxServer, wechat: WechatPayChannel, make_gateway: MakeGateway,
        clock: FakeClock) -> None:
    """Issue 19 "done when", WeChat part: two accounts, one per verification mode, one a
    service provider refunding for its sub-merchant, across a certificate rotation."""
    gw = make_gateway(
        default=wechat.settings_for(sandbox.url, verification="certificate"),
        sp=wechat.settings_for(sandbox.url, verification="public_key", partner=True))
    direct = gw.refund(ask(pay(sandbox), "d1"))
    partner = gw.refund(ask(pay(sandbox, merchant=SUB_MCHID, account="sp"), "s1"))
    assert direct.status is S.PROCESSING and partner.status is S.PROCESSING
    answers = notify_all(gw, sandbox)
    assert len(answers) == 2 and all(ack.accepted for _, ack in answers)
    assert gw.get(direct.id).status is S.SUCCEEDED and gw.get(partner.id).status is S.SUCCEEDED
    # the rotation, then a partner refund resolved by query (its ?sub_mchid=)
    settle_after_queries(sandbox, 1)
    fault(sandbox, "refund", "cert_rotated")
    direct2 = gw.refund(ask(pay(sandbox), "d2"))
    partner2 = gw.refund(ask(pay(sandbox, merchant=SUB_MCHID, account="sp"), "s2"))
    assert resolve(gw, clock, direct2.id) is S.SUCCEEDED
    assert resolve(gw, clock, partner2.id) is S.SUCCEEDED
    answers = notify_all(gw, sandbox)
    assert len(answers) == 2 and all(ack.accepted for _, ack in answers)
    # bills per account: the provider's names its sub-merchant, the direct one does not
    day = to_beijing(direct.created_at).date()
    direct_bill = adapter(gw).download_statement(day)
    partner_bill = adapter(gw, "sp").download_statement(day)
    assert direct.channel_refund_no.encode() in direct_bill
    assert partner.channel_refund_no.encode() not in direct_bill
    assert partner.channel_refund_no.encode() in partner_bill
    assert f"`{SP_MCHID},`{SUB_MCHID}".encode() in partner_bill
    with pytest.raises(StatementError, match="fund-flow"):
        adapter(gw, "sp").download_bill(day, BillKind.FUNDFLOW_BASIC)
    executed_once(sandbox, *(r.channel_refund_no for r in
                             (direct, partner, direct2, partner2)))


def test_a_provider_refuses_another_sub_merchants_notification(
        sandbox: SandboxServer, wechat: WechatPayChannel, make_gateway: MakeGateway) -> None:
    gw = make_gateway(default=wechat.settings_for(sandbox.url, partner=True))
    rf = gw.refund(ask(pay(sandbox, merchant=SUB_MCHID), "x1"))
    [note] = sandbox.pending_notifications("wechatpay")
    forged = note.body   # genuinely signed; now hand it to a gateway for another sub
    other = make_gateway(default={**wechat.settings_for(sandbox.url, partner=True),
                                  PREFIX + "SUB_MCHID": "1900000999"})
    assert not other.handle_notification(Route.WECHATPAY, note.headers, forged).accepted
    assert gw.handle_notification(Route.WECHATPAY, note.headers, forged).accepted
    assert gw.get(rf.id).status is S.SUCCEEDED


def test_env_file_in_certificate_mode_configures_a_gateway(
        sandbox: SandboxServer, wechat: WechatPayChannel, tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    wechat.env_verification = "certificate"
    try:
        env_file = sandbox.write_env_file(tmp_path / "sandbox.env")
    finally:
        wechat.env_verification = "public_key"
    monkeypatch.setenv("REFUND_GATEWAY_DATABASE_URL", f"sqlite:///{tmp_path}/gw.db")
    gw = RefundGateway.from_settings(env_file=env_file)
    try:
        assert "verification='certificate'" in repr(adapter(gw))
        rf = gw.refund(ask(pay(sandbox), "e1"))
        assert rf.status is S.PROCESSING
    finally:
        gw.close()
