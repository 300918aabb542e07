"""The sandbox's WeChat platform certificates (addendum §3) and service-provider mode
(addendum §4), driven by the real wechatpayv3 2.0.4 SDK: its own ``/v3/certificates``
parser (exact keys, AES-GCM with the API v3 key) and verifier (``Wechatpay-Serial`` ==
public_key_id -> the key, else the certificate, refetched on a miss), its partner mode.

Certificate-mode clients are built the way CH §2.7 says: the SDK's constructor would
download from the hard-coded host, so ``_init_certificates`` is skipped while it runs and
``_gate_way`` is set before the first download.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# The sandbox is tested with the real SDK (issue 3), not through our adapter.
from wechatpayv3 import WeChatPay, WeChatPayType  # noqa: TID251
from wechatpayv3.core import Core  # noqa: TID251
from wechatpayv3.utils import (  # noqa: TID251
    build_authorization,
    load_private_key,
    rsa_verify,
)

from sandbox.server import SandboxServer
from sandbox.state import BEIJING, Fault, Payment
from sandbox.wechatpay import (
    MCHID,
    PUB_KEY_ID_PARTNER,
    PUB_KEY_ID_SANDBOX,
    SP_MCHID,
    SUB_MCHID,
    WechatPayChannel,
)
from tests.sandbox.test_wechatpay import parse_bill

P = "REFUND_GATEWAY_WECHATPAY__"


def channel(server: SandboxServer) -> WechatPayChannel:
    found = server.channel("wechatpay")
    assert isinstance(found, WechatPayChannel)
    return found


def sdk(server: SandboxServer, verification: str = "certificate", *,
        partner: bool = False, monkeypatch: pytest.MonkeyPatch) -> WeChatPay:
    s = channel(server).settings_for(server.url, verification=verification,
                                     partner=partner)
    kw: dict[str, Any] = {}
    if P + "PUBLIC_KEY" in s:
        kw = {"public_key": s[P + "PUBLIC_KEY"], "public_key_id": s[P + "PUBLIC_KEY_ID"]}
    with monkeypatch.context() as patch:   # CH §2.7: no download from the real host
        patch.setattr(Core, "_init_certificates", lambda self: None)
        wx = WeChatPay(wechatpay_type=WeChatPayType.NATIVE, mchid=s[P + "MCHID"],
                       private_key=s[P + "PRIVATE_KEY"], cert_serial_no=s[P + "CERT_SERIAL_NO"],
                       appid=s[P + "APPID"], apiv3_key=s[P + "APIV3_KEY"],
                       partner_mode=partner, timeout=(2, 5), **kw)
    wx._core._gate_way = s[P + "BASE_URL"]
    if verification == "certificate":
        wx._core._update_certificates()
    return wx


@pytest.fixture
def sandbox(refund_sandbox: SandboxServer) -> SandboxServer:
    return refund_sandbox


@pytest.fixture
def cert_wx(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> WeChatPay:
    return sdk(sandbox, monkeypatch=monkeypatch)


def pay(sandbox: SandboxServer, fen: int = 10_000, merchant: str | None = None) -> Payment:
    return sandbox.state.add_payment("wechatpay", fen, merchant=merchant)


def fault(sandbox: SandboxServer, operation: str, kind: str, count: int | None = 1) -> None:
    sandbox.state.add_fault(Fault("wechatpay", operation, kind, count, {}))


def refund(wx: WeChatPay, payment: Payment, no: str, fen: int = 2_500,
           **kw: Any) -> tuple[int, dict[str, Any]]:
    code, body = wx.refund(out_refund_no=no, amount={"refund": fen,
                                                     "total": payment.amount_fen,
                                                     "currency": "CNY"},
                           transaction_id=payment.channel_trade_no, **kw)
    return code, json.loads(body)


def raw_get(sandbox: SandboxServer, path: str, mchid: str = MCHID,
            headers: dict[str, str] | None = None) -> requests.Response:
    m = channel(sandbox).merchants[mchid]
    auth = build_authorization(path, "GET", m.mchid, m.cert_serial,
                               load_private_key(m.key.private_pem()))
    return requests.get(sandbox.url + path, headers={"Authorization": auth, **(headers or {})},
                        timeout=5)


def raw_post(sandbox: SandboxServer, path: str, body: dict[str, Any],
             mchid: str = MCHID) -> requests.Response:
    m = channel(sandbox).merchants[mchid]
    text = json.dumps(body)
    auth = build_authorization(path, "POST", m.mchid, m.cert_serial,
                               load_private_key(m.key.private_pem()), data=text)
    return requests.post(sandbox.url + path, data=text, timeout=5,
                         headers={"Authorization": auth, "Content-Type": "application/json"})


# -- /v3/certificates ---------------------------------------------------------------------
def test_certificates_answer_has_the_exact_keys_and_decrypts(sandbox: SandboxServer) -> None:
    before = channel(sandbox).certificate_downloads
    channel(sandbox).set_verification(MCHID, "certificate")
    r = raw_get(sandbox, "/v3/certificates")
    assert r.status_code == 200
    [item] = r.json()["data"]
    assert set(item) == {"serial_no", "effective_time", "expire_time", "encrypt_certificate"}
    enc = item["encrypt_certificate"]
    assert set(enc) == {"algorithm", "nonce", "associated_data", "ciphertext"}
    assert (enc["algorithm"], enc["associated_data"], len(enc["nonce"])) == \
        ("AEAD_AES_256_GCM", "certificate", 12)
    apiv3 = sandbox.keys.apiv3_key
    pem = AESGCM(apiv3.encode()).decrypt(enc["nonce"].encode(),
                                         base64.b64decode(enc["ciphertext"]), b"certificate")
    cert = x509.load_pem_x509_certificate(pem)
    assert f"{cert.serial_number:X}" == item["serial_no"] == channel(sandbox).certificate.serial
    assert len(item["serial_no"]) == 40 and item["serial_no"] == item["serial_no"].upper()
    assert item["expire_time"].endswith("+08:00") and item["effective_time"].endswith("+08:00")
    assert datetime.fromisoformat(item["expire_time"]) == \
        cert.not_valid_after_utc.astimezone(BEIJING)
    # signed like every answer, by the certificate it lists
    h = r.headers
    assert h["Wechatpay-Serial"] == item["serial_no"]
    assert rsa_verify(h["Wechatpay-Timestamp"], h["Wechatpay-Nonce"], r.text,
                      h["Wechatpay-Signature"], cert.public_key())
    # the certificate's key is not the public-key mode key
    assert cert.public_key().public_numbers() != \
        sandbox.keys.wechat_platform.public.public_numbers()
    assert channel(sandbox).certificate_downloads == before + 1


def test_verification_mode_per_merchant(sandbox: SandboxServer) -> None:
    wechat = channel(sandbox)
    assert (wechat.verification_of(MCHID), wechat.verification_of(SP_MCHID)) == \
        ("public_key", "public_key")
    path = "/v3/certificates"
    assert raw_get(sandbox, path).headers["Wechatpay-Serial"] == PUB_KEY_ID_SANDBOX
    wechat.set_verification(MCHID, "both")      # as each request asks
    assert raw_get(sandbox, path).headers["Wechatpay-Serial"] == wechat.certificate.serial
    asked = raw_get(sandbox, path, headers={"Wechatpay-Serial": PUB_KEY_ID_SANDBOX})
    assert asked.headers["Wechatpay-Serial"] == PUB_KEY_ID_SANDBOX
    assert raw_get(sandbox, path, SP_MCHID).headers["Wechatpay-Serial"] == PUB_KEY_ID_PARTNER
    with pytest.raises(ValueError):
        wechat.set_verification("1900000999", "both")
    sandbox.state.reset()                       # forgotten on reset
    assert wechat.verification_of(MCHID) == "public_key"


def test_certificates_algorithm_type_and_authentication(sandbox: SandboxServer) -> None:
    assert raw_get(sandbox, "/v3/certificates?algorithm_type=SM2").json() == {"data": []}
    assert len(raw_get(sandbox, "/v3/certificates?algorithm_type=ALL").json()["data"]) == 1
    bad = raw_get(sandbox, "/v3/certificates?algorithm_type=DSA")
    assert bad.status_code == 400 and bad.json()["code"] == "PARAM_ERROR"
    anonymous = requests.get(sandbox.url + "/v3/certificates", timeout=5)
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "SIGN_ERROR"


def test_the_sdks_own_download_and_certificate_mode(sandbox: SandboxServer,
                                                    cert_wx: WeChatPay) -> None:
    # wechatpayv3 kept the certificate: every exact key was there, the GCM tag held
    [cert] = cert_wx._core._certificates
    assert f"{cert.serial_number:X}" == channel(sandbox).certificate.serial
    payment = pay(sandbox)
    code, body = refund(cert_wx, payment, "RC1")       # verified by the certificate
    assert code == 200 and body["status"] == "PROCESSING"
    code, text = cert_wx.query_refund("RC1")
    assert code == 200 and json.loads(text)["status"] == "SUCCESS"
    [note] = sandbox.pending_notifications("wechatpay")
    assert note.headers["Wechatpay-Serial"] == channel(sandbox).certificate.serial
    decoded = cert_wx.callback(note.headers, note.body)
    assert decoded is not None and decoded["resource"]["mchid"] == MCHID


def test_cert_rotated_signs_with_a_new_certificate_both_listed(
        sandbox: SandboxServer, cert_wx: WeChatPay) -> None:
    first = channel(sandbox).certificate
    payment = pay(sandbox)
    refund(cert_wx, payment, "RR1")
    fault(sandbox, "query", "cert_rotated")
    code, _ = cert_wx.query_refund("RR1")     # the SDK refetches on the miss, verifies
    assert code == 200
    second = channel(sandbox).certificate
    assert second.serial != first.serial and second.key != first.key
    assert sorted(f"{c.serial_number:X}" for c in cert_wx._core._certificates) == \
        sorted([first.serial, second.serial])
    # later answers and notifications: the new certificate
    code, _ = refund(cert_wx, payment, "RR2")
    assert code == 200
    notes = sandbox.pending_notifications("wechatpay")
    assert notes[-1].headers["Wechatpay-Serial"] == second.serial
    assert all(cert_wx.callback(n.headers, n.body) for n in notes)
    # a reset brings back the first certificate
    sandbox.state.reset()
    assert channel(sandbox).certificate == first
    assert len(raw_get(sandbox, "/v3/certificates").json()["data"]) == 1


def test_serial_switch_between_the_key_and_the_certificate(
        sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # wechatpayv3 with a public key and a hex serial: it downloads and verifies (the
    # migration path of addendum §3)
    wx = sdk(sandbox, "public_key", monkeypatch=monkeypatch)
    before = channel(sandbox).certificate_downloads
    payment = pay(sandbox)
    code, _ = refund(wx, payment, "RS1")
    assert code == 200 and not wx._core._certificates
    fault(sandbox, "query", "serial_switch")
    seen: list[str] = []
    original = wx._core._verify_signature

    def spy(headers: Any, body: str) -> bool:
        seen.append(headers["Wechatpay-Serial"])
        return bool(original(headers, body))

    monkeypatch.setattr(wx._core, "_verify_signature", spy)
    assert wx.query_refund("RS1")[0] == 200
    assert wx.query_refund("RS1")[0] == 200
    assert seen == [channel(sandbox).certificate.serial, PUB_KEY_ID_SANDBOX]
    assert channel(sandbox).certificate_downloads == before + 1
    # a certificate-mode client under serial_switch gets a PUB_KEY_ID it cannot verify
    # (the SDK even parses it as hex, CH §0 #5)
    cert_wx = sdk(sandbox, monkeypatch=monkeypatch)
    fault(sandbox, "query", "serial_switch")
    with pytest.raises(ValueError, match="invalid literal"):
        cert_wx.query_refund("RS1")


def test_notification_faults_switch_and_rotate(sandbox: SandboxServer,
                                               cert_wx: WeChatPay,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    payment = pay(sandbox)
    fault(sandbox, "notify", "cert_rotated")
    refund(cert_wx, payment, "RN1")
    [note] = sandbox.pending_notifications("wechatpay")
    assert note.headers["Wechatpay-Serial"] == channel(sandbox).certificate.serial
    assert cert_wx.callback(note.headers, note.body) is not None    # after one refetch
    both = sdk(sandbox, "both", monkeypatch=monkeypatch)
    fault(sandbox, "notify", "serial_switch")
    refund(both, payment, "RN2")          # asks for the key; the notification: certificate
    [note] = sandbox.pending_notifications("wechatpay")
    assert note.headers["Wechatpay-Serial"] == channel(sandbox).certificate.serial
    refund(both, payment, "RN3")
    [note] = sandbox.pending_notifications("wechatpay")
    assert note.headers["Wechatpay-Serial"].startswith("PUB_KEY_ID_")


def test_certificates_take_connection_faults(sandbox: SandboxServer) -> None:
    fault(sandbox, "certificates", "http_500")
    r = raw_get(sandbox, "/v3/certificates")
    assert r.status_code == 500 and r.json()["code"] == "SYSTEM_ERROR"
    assert raw_get(sandbox, "/v3/certificates").status_code == 200


# wechatpayv3's _last_certificate compares cryptography's deprecated naive not_valid_after
@pytest.mark.filterwarnings("ignore:Properties that return a naïve datetime")
def test_abnormal_refund_fields_encrypted_with_a_certificate(sandbox: SandboxServer,
                                                             cert_wx: WeChatPay) -> None:
    payment = pay(sandbox)
    fault(sandbox, "refund", "abnormal")
    _, body = refund(cert_wx, payment, "RA1")
    cert_wx.query_refund("RA1")
    # the SDK encrypts with its latest certificate and names it in Wechatpay-Serial
    code, text = cert_wx.abnormal_refund(refund_id=body["refund_id"], out_refund_no="RA1",
                                         type="USER_BANK_CARD", bank_type="ICBC_DEBIT",
                                         bank_account="6222021234567890123", real_name="张三")
    assert code == 200, text
    [row] = [r for r in sandbox.state.truth() if r["channel_refund_no"] == "RA1"]
    assert row["extra"]["abnormal_refund"]["bank_account_last4"] == "0123"


# -- service provider -----------------------------------------------------------------------
@pytest.fixture
def sp_wx(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> WeChatPay:
    return sdk(sandbox, "public_key", partner=True, monkeypatch=monkeypatch)


def test_partner_refund_query_notification_and_bill(sandbox: SandboxServer,
                                                    sp_wx: WeChatPay) -> None:
    payment = pay(sandbox, merchant=SUB_MCHID)
    code, body = refund(sp_wx, payment, "RP1", sub_mchid=SUB_MCHID)
    assert code == 200 and body["status"] == "PROCESSING"
    code, text = sp_wx.query_refund("RP1", sub_mchid=SUB_MCHID)
    assert code == 200 and json.loads(text)["status"] == "SUCCESS"
    [note] = sandbox.pending_notifications("wechatpay")
    assert note.headers["Wechatpay-Serial"] == PUB_KEY_ID_PARTNER
    decoded = sp_wx.callback(note.headers, note.body)
    assert decoded is not None
    resource = decoded["resource"]
    assert (resource["sp_mchid"], resource["sub_mchid"]) == (SP_MCHID, SUB_MCHID)
    assert "mchid" not in resource
    today = datetime.now(BEIJING).date().isoformat()
    code, answer = sp_wx.trade_bill(today, bill_type="REFUND", sub_mchid=SUB_MCHID)
    assert code == 200
    meta = json.loads(answer)
    code, raw = sp_wx.download_bill(meta["download_url"])
    header, rows, _, _ = parse_bill(gzip.decompress(raw))
    [record] = [dict(zip(header, row, strict=True)) for row in rows]
    assert (record["商户号"], record["特约商户号"], record["商户退款单号"]) == \
        (SP_MCHID, SUB_MCHID, "RP1")
    # the provider's fund flow holds none of the sub-merchant's money
    code, _ = sp_wx.fundflow_bill(today)
    assert code == 400
    # the direct merchant's bill does not show it
    assert b"RP1" not in sandbox.statement("wechatpay", datetime.now(BEIJING).date())


def test_partner_rules(sandbox: SandboxServer, sp_wx: WeChatPay) -> None:
    theirs, ours = pay(sandbox, merchant=SUB_MCHID), pay(sandbox)
    amount = {"refund": 100, "total": 10_000, "currency": "CNY"}
    missing = raw_post(sandbox, "/v3/refund/domestic/refunds", {
        "out_refund_no": "RX1", "transaction_id": theirs.channel_trade_no,
        "amount": amount}, mchid=SP_MCHID)
    assert missing.status_code == 400 and missing.json()["code"] == "PARAM_ERROR"
    unbound = raw_post(sandbox, "/v3/refund/domestic/refunds", {
        "sub_mchid": "1900000999", "out_refund_no": "RX2",
        "transaction_id": theirs.channel_trade_no, "amount": amount}, mchid=SP_MCHID)
    assert unbound.status_code == 403 and unbound.json()["code"] == "NO_AUTH"
    # a provider cannot refund the direct merchant's order, nor the reverse
    code, body = refund(sp_wx, ours, "RX3", 100, sub_mchid=SUB_MCHID)
    assert code == 404 and body["code"] == "RESOURCE_NOT_EXISTS"
    direct = raw_post(sandbox, "/v3/refund/domestic/refunds", {
        "out_refund_no": "RX4", "transaction_id": theirs.channel_trade_no,
        "amount": amount})
    assert direct.status_code == 404
    with_sub = raw_post(sandbox, "/v3/refund/domestic/refunds", {
        "sub_mchid": SUB_MCHID, "out_refund_no": "RX5",
        "transaction_id": ours.channel_trade_no, "amount": amount})
    assert with_sub.status_code == 400 and with_sub.json()["code"] == "PARAM_ERROR"
    # the query: the sub-merchant named, and only its refunds
    code, _ = refund(sp_wx, theirs, "RX6", 100, sub_mchid=SUB_MCHID)
    assert code == 200
    assert raw_get(sandbox, "/v3/refund/domestic/refunds/RX6", SP_MCHID).status_code == 400
    assert raw_get(sandbox, "/v3/refund/domestic/refunds/RX6").status_code == 404
    assert raw_get(sandbox, f"/v3/refund/domestic/refunds/RX6?sub_mchid={SUB_MCHID}",
                   SP_MCHID).status_code == 200
    assert [r["executions"] for r in sandbox.state.truth()] == [1]


def test_payments_control_api_takes_the_merchant(sandbox: SandboxServer) -> None:
    doc = requests.post(sandbox.url + "/_sandbox/payments", timeout=5, json={
        "route": "wechatpay", "amount_fen": 100, "merchant": SUB_MCHID}).json()
    assert doc["merchant"] == SUB_MCHID
    bad = requests.post(sandbox.url + "/_sandbox/payments", timeout=5, json={
        "route": "wechatpay", "amount_fen": 100, "merchant": 7})
    assert bad.status_code == 400


# -- the settings it writes ------------------------------------------------------------------
@pytest.mark.parametrize("verification", ["public_key", "certificate", "both"])
def test_settings_in_each_mode(sandbox: SandboxServer, verification: str) -> None:
    s = channel(sandbox).settings_for(sandbox.url, verification=verification)
    assert (P + "PUBLIC_KEY" in s) is (verification != "certificate")
    assert s.get(P + "VERIFICATION") == (None if verification == "public_key"
                                         else verification)
    partner = channel(sandbox).settings_for(sandbox.url, partner=True)
    assert (partner[P + "MCHID"], partner[P + "SUB_MCHID"]) == (SP_MCHID, SUB_MCHID)
    assert partner[P + "PRIVATE_KEY"] != s[P + "PRIVATE_KEY"]
    with pytest.raises(ValueError, match="verification"):
        channel(sandbox).settings_for(sandbox.url, verification="pin")


@pytest.fixture
def cert_env(sandbox: SandboxServer) -> Iterator[WechatPayChannel]:
    wechat = channel(sandbox)
    wechat.env_verification = "certificate"
    yield wechat
    wechat.env_verification = "public_key"


def test_env_file_in_certificate_mode(sandbox: SandboxServer, cert_env: WechatPayChannel,
                                      tmp_path: Any) -> None:
    text = sandbox.write_env_file(tmp_path / "sandbox.env").read_text()
    assert f'{P}VERIFICATION="certificate"' in text
    assert f"{P}PUBLIC_KEY=" not in text and f"{P}PUBLIC_KEY_ID=" not in text
