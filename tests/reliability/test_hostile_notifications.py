"""Hostile notifications against the real WeChat adapter and the sandbox's keys: a forged
signature, a timestamp 301 s off, a replayed nonce, a wrong amount, another merchant —
each rejected, zero state change, one line on the security log. And hostile refund
requests: InvalidRequest before any I/O (the sandbox sees nothing)."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from structlog.testing import capture_logs

from gateway import InvalidRequest, Money, Payment, RefundGateway, RefundRequest, Route
from gateway.bootstrap import build_adapters, build_gateway
from gateway.clock import utcnow
from gateway.settings import load_settings
from sandbox.server import SandboxServer
from tests.helpers import FakeClock


@pytest.fixture
def setup(refund_sandbox: SandboxServer, tmp_path: Path, database_url: str
          ) -> Iterator[tuple[RefundGateway, FakeClock, SandboxServer]]:
    """On both stores: the replay guard and the refund's lookup share a round trip in
    PostgreSQL's pipeline, and a replay must still change nothing there."""
    env = refund_sandbox.write_env_file(tmp_path / "sandbox.env")
    settings = load_settings(env, database_url=database_url)
    clock = FakeClock(utcnow())
    gw = build_gateway(settings, clock=clock, configure_logs=False,
                       adapters=build_adapters(settings, clock))
    yield gw, clock, refund_sandbox
    gw.close()


def _genuine(gw: RefundGateway, sandbox: SandboxServer, key: str) -> tuple[Any, Any]:
    p = sandbox.state.add_payment("wechatpay", 10_000)
    refund = gw.refund(RefundRequest(key, Payment(Route.WECHATPAY, p.merchant_order_no,
                                                  p.channel_trade_no, Money(10_000),
                                                  p.user_id), Money(3_000)))
    notes = [n for n in sandbox.pending_notifications("wechatpay")
             if n.channel_refund_no == refund.channel_refund_no]
    assert notes
    return refund, notes[0]


def _reforge(sandbox: SandboxServer, body: bytes,
             change: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    """Decrypt, change, re-encrypt and re-sign with the platform's own keys: a message
    only the channel could make, but carrying another amount or merchant."""
    envelope = json.loads(body)
    res = envelope["resource"]
    aes = AESGCM(sandbox.keys.apiv3_key.encode())
    plain = json.loads(aes.decrypt(res["nonce"].encode(), base64.b64decode(res["ciphertext"]),
                                   res["associated_data"].encode()))
    for path, value in change.items():
        target = plain
        *parents, leaf = path.split(".")
        for part in parents:
            target = target[part]
        target[leaf] = value
    nonce = secrets.token_hex(6)
    res.update(nonce=nonce, ciphertext=base64.b64encode(aes.encrypt(
        nonce.encode(), json.dumps(plain).encode(), res["associated_data"].encode())).decode())
    new_body = json.dumps(envelope).encode()
    return _sign(sandbox, new_body), new_body


def _sign(sandbox: SandboxServer, body: bytes, stamp: int | None = None) -> dict[str, str]:
    ts = str(stamp if stamp is not None else int(utcnow().timestamp()))
    nonce = secrets.token_hex(16).upper()
    return {"Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
            "Wechatpay-Serial": sandbox.settings()["REFUND_GATEWAY_WECHATPAY__PUBLIC_KEY_ID"],
            "Wechatpay-Timestamp": ts, "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": sandbox.keys.wechat_platform.sign_b64(
                f"{ts}\n{nonce}\n".encode() + body + b"\n")}


def _rejected(gw: RefundGateway, refund_id: str, headers: dict[str, str], body: bytes) -> None:
    before = gw.store.get(refund_id)
    events_before = len(gw.events(refund_id))
    with capture_logs() as logs:
        ack = gw.handle_notification(Route.WECHATPAY, headers, body)
    assert not ack.accepted and ack.http_status >= 400
    assert gw.store.get(refund_id) == before
    assert len(gw.events(refund_id)) == events_before
    assert any(entry["log_level"] == "warning" and entry["event"].startswith("notification.")
               for entry in logs), logs


def test_forged_signature(setup: tuple[RefundGateway, FakeClock, SandboxServer]) -> None:
    gw, _, sandbox = setup
    refund, note = _genuine(gw, sandbox, "h1")
    headers = dict(note.headers)
    sig = headers["Wechatpay-Signature"]
    headers["Wechatpay-Signature"] = ("A" if sig[0] != "A" else "B") + sig[1:]
    _rejected(gw, refund.id, headers, note.body)


def test_timestamp_301_seconds_off(setup: tuple[RefundGateway, FakeClock, SandboxServer]) -> None:
    gw, clock, sandbox = setup
    refund, note = _genuine(gw, sandbox, "h2")
    stale = int((clock.now - timedelta(seconds=301)).timestamp())
    _rejected(gw, refund.id, _sign(sandbox, note.body, stale), note.body)


def test_replayed_nonce(setup: tuple[RefundGateway, FakeClock, SandboxServer]) -> None:
    gw, _, sandbox = setup
    refund, note = _genuine(gw, sandbox, "h3")
    assert gw.handle_notification(Route.WECHATPAY, note.headers, note.body).accepted
    _rejected(gw, refund.id, note.headers, note.body)


def test_wrong_amount(setup: tuple[RefundGateway, FakeClock, SandboxServer]) -> None:
    gw, _, sandbox = setup
    refund, note = _genuine(gw, sandbox, "h4")
    headers, body = _reforge(sandbox, note.body, {"amount.refund": 9_999})
    _rejected(gw, refund.id, headers, body)


def test_wrong_merchant(setup: tuple[RefundGateway, FakeClock, SandboxServer]) -> None:
    gw, _, sandbox = setup
    refund, note = _genuine(gw, sandbox, "h5")
    headers, body = _reforge(sandbox, note.body, {"mchid": "1999999999"})
    _rejected(gw, refund.id, headers, body)


@pytest.mark.parametrize("amount", [0, -100, 1.5, 10**16, "100", True, None])
def test_hostile_amounts_fail_before_io(setup: tuple[RefundGateway, FakeClock, SandboxServer],
                                        amount: Any) -> None:
    gw, _, sandbox = setup
    p = sandbox.state.add_payment("wechatpay", 10_000)
    payment = Payment(Route.WECHATPAY, p.merchant_order_no, p.channel_trade_no,
                      Money(10_000), p.user_id)
    with pytest.raises(InvalidRequest):
        gw.refund(RefundRequest("bad", payment, Money(amount)))
    with pytest.raises(InvalidRequest):
        gw.refund(RefundRequest("bad-ccy", payment, Money(100, "USD")))
    with pytest.raises(InvalidRequest):
        gw.refund(RefundRequest("bad-huge", payment, Money(10_001)))
    assert sandbox.state.truth() == []
    assert gw.store.find_by_key("bad-ccy") is None
