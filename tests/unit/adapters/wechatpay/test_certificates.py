"""Platform-certificate and both-at-once verification (addendum §3, CH §2.4/2.5), and the
service-provider requests (addendum §4), with the real SDK over canned HTTP answers.

Certificates are made here, each with its own key (a platform certificate's key is not
the public-key mode key), so a wrong choice of verifier fails the signature.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from adapters.wechatpay import certificates
from adapters.wechatpay.adapter import BillKind, WechatPayAdapter
from adapters.wechatpay.client import REFUND_PATH, WechatPayClient
from gateway.errors import (
    ChannelAuthError,
    ChannelUnavailable,
    OutcomeUnknown,
    SignatureInvalid,
    StatementError,
)
from gateway.models import ChannelStatus
from gateway.ports import AbnormalRefundInstruction, AbnormalTarget
from tests.helpers import FakeClock
from tests.unit.adapters.wechatpay import canned
from tests.unit.adapters.wechatpay.canned import APIV3, BASE, PUB_ID, keys, refund_object

S = ChannelStatus
REFUNDS = BASE + REFUND_PATH
CERTS = BASE + "/v3/certificates"
SERIAL_A = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
SERIAL_B = "50062CE505775F070CAB06E697F1BBD1AD4F4D87"
SUB_MCHID = "1900000119"
BEIJING = timezone(timedelta(hours=8))


@cache
def cert_key(name: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass(frozen=True)
class Cert:
    serial: str
    key: rsa.RSAPrivateKey
    pem: str
    effective: datetime
    expires: datetime


def make_cert(serial: str, *, key_name: str | None = None,
              not_before: datetime | None = None, days: float = 365 * 5,
              effective: datetime | None = None) -> Cert:
    key = cert_key(key_name or serial)
    start = not_before or datetime.now(UTC) - timedelta(days=1)
    end = start + timedelta(days=days)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com sign")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(int(serial, 16))
            .not_valid_before(start).not_valid_after(end).sign(key, hashes.SHA256()))
    return Cert(serial, key, cert.public_bytes(serialization.Encoding.PEM).decode(),
                effective or start, end)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(BEIJING).isoformat(timespec="seconds")


def entry(cert: Cert, *, apiv3: str = APIV3, algorithm: str = "AEAD_AES_256_GCM",
          serial_no: str | None = None, keys_as: Callable[[str], str] = str
          ) -> dict[str, Any]:
    nonce = secrets.token_hex(6)          # 12 characters, used as bytes (addendum §3)
    ct = AESGCM(apiv3.encode()).encrypt(nonce.encode(), cert.pem.encode(), b"certificate")
    return {keys_as("serial_no"): serial_no or cert.serial,
            keys_as("effective_time"): rfc3339(cert.effective),
            keys_as("expire_time"): rfc3339(cert.expires),
            keys_as("encrypt_certificate"): {
                "algorithm": algorithm, "nonce": nonce, "associated_data": "certificate",
                "ciphertext": base64.b64encode(ct).decode()}}


def signed(body: str, serial: str, key: rsa.RSAPrivateKey) -> dict[str, Any]:
    headers = canned.signed_headers(body, serial=serial, key=key)
    return {"status": 200, "body": body.encode(), "headers": headers,
            "content_type": "application/json; charset=utf-8"}


def certificates_answer(*listed: Cert, signer: Cert | None = None,
                        entries: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body = json.dumps({"data": entries if entries is not None
                       else [entry(c) for c in listed]})
    by = signer or listed[0]
    return signed(body, by.serial, by.key)


def refund_answer(no: str, by: Cert | None = None, status: str = "PROCESSING"
                  ) -> dict[str, Any]:
    body = json.dumps(refund_object(no, status), ensure_ascii=False)
    if by is None:   # the public key (PUB_ID)
        return signed(body, PUB_ID, keys().platform)
    return signed(body, by.serial, by.key)


class Mono:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def mono() -> Mono:
    return Mono()


def make_client(mono: Mono, *, verification: str = "certificate",
                now: Callable[[], datetime] | None = None, **kw: Any) -> WechatPayClient:
    k = keys()
    pub = {} if verification == "certificate" else \
        {"public_key_pem": k.platform_public_pem, "public_key_id": PUB_ID}
    return WechatPayClient(mchid=canned.MCHID, appid=canned.APPID,
                           private_key_pem=k.merchant_pem, cert_serial_no=canned.CERT_SERIAL,
                           apiv3_key=APIV3, base_url=BASE, connect_timeout=1, read_timeout=2,
                           verification=verification,  # type: ignore[arg-type]
                           monotonic=mono, now=now, **pub, **kw)


def adapter_of(client: WechatPayClient) -> WechatPayAdapter:
    return WechatPayAdapter(client, clock=FakeClock(datetime.now(UTC)))


def calls(mocked: responses.RequestsMock) -> list[str]:
    return [f"{c.request.method} {c.request.path_url.partition('?')[0]}"
            for c in mocked.calls]


# -- decoding (pure) ------------------------------------------------------------------------
def _decrypt(nonce: str, ciphertext: str, aad: str) -> str | None:
    try:
        return AESGCM(APIV3.encode()).decrypt(nonce.encode(), base64.b64decode(ciphertext),
                                              aad.encode()).decode()
    except Exception:
        return None


def test_decode_takes_exact_keys_only() -> None:
    a, b = make_cert(SERIAL_A), make_cert(SERIAL_B)
    expired = make_cert("1A2B", not_before=datetime.now(UTC) - timedelta(days=30), days=10)
    doc = {"data": [
        entry(a),
        entry(b, keys_as=lambda k: k + " " if k.endswith("_time") else k),  # the doc typo
        entry(b, algorithm="SM4_GCM"),
        entry(b, apiv3="z" * 32),                   # another merchant's API v3 key
        entry(b, serial_no=SERIAL_A),               # listed under another serial
        entry(expired),
        {"serial_no": SERIAL_B},
        "junk",
    ]}
    found, problems = certificates.decode(doc, _decrypt, datetime.now(UTC))
    assert [c.serial_no for c in found] == [SERIAL_A]
    assert found[0].expires_at == a.expires.replace(microsecond=0)
    reasons = " | ".join(problems)
    for text in ("exact keys", "algorithm SM4_GCM", "does not decrypt",
                 "another serial", "not valid now"):
        assert text in reasons
    assert len(problems) == 7
    assert "BEGIN CERTIFICATE" not in reasons
    with pytest.raises(ValueError, match="data"):
        certificates.decode({"code": "X"}, _decrypt, datetime.now(UTC))


def test_encryption_uses_the_latest_effective_certificate() -> None:
    now = datetime.now(UTC)
    old = make_cert(SERIAL_A)
    new = make_cert(SERIAL_B, effective=now + timedelta(hours=20))  # listed 24 h early
    store = certificates.CertificateStore(refresh_seconds=43200, retry_seconds=60,
                                          now=lambda: now, monotonic=lambda: 0.0)
    found, _ = certificates.decode({"data": [entry(old), entry(new)]}, _decrypt, now)
    store.replace(found)
    chosen = store.for_encryption()
    assert chosen is not None and chosen.serial_no == SERIAL_A
    later = certificates.CertificateStore(refresh_seconds=43200, retry_seconds=60,
                                          now=lambda: now + timedelta(days=1),
                                          monotonic=lambda: 0.0)
    later.replace(found)
    chosen = later.for_encryption()
    assert chosen is not None and chosen.serial_no == SERIAL_B


def test_refresh_rules(mono: Mono) -> None:
    now = datetime.now(UTC)
    clock = FakeClock(now)
    store = certificates.CertificateStore(refresh_seconds=43200, retry_seconds=60,
                                          now=clock, monotonic=mono)
    assert store.due() and store.miss_allowed()
    store.attempted(miss=False)
    assert not store.due()                       # a failed attempt backs off
    mono.t += 60
    assert store.due()
    found, _ = certificates.decode({"data": [entry(make_cert(SERIAL_A))]}, _decrypt, now)
    store.replace(found)
    assert not store.due()
    mono.t += 43199
    assert not store.due()
    mono.t += 1
    assert store.due()                           # 12 h after the download
    store.attempted(miss=True)
    assert not store.miss_allowed()
    mono.t += 59
    assert not store.miss_allowed()
    mono.t += 1
    assert store.miss_allowed()
    # the last certificate has less than refresh_seconds to live: hourly
    short, _ = certificates.decode({"data": [entry(make_cert(SERIAL_B, days=1.2))]},
                                   _decrypt, now)
    store.replace(short)
    mono.t += 3599
    assert not store.due()
    mono.t += 1
    assert store.due()


# -- certificate mode through the adapter ------------------------------------------------------
def test_first_call_downloads_from_base_url_then_verifies(mono: Mono,
                                                         mocked: responses.RequestsMock
                                                         ) -> None:
    a = make_cert(SERIAL_A)
    mocked.add(responses.GET, CERTS, **certificates_answer(a))
    r = canned.refund()
    mocked.add(responses.POST, REFUNDS, **refund_answer(r.channel_refund_no, a))
    mocked.add(responses.GET, REFUNDS + "/" + r.channel_refund_no,
               **refund_answer(r.channel_refund_no, a, "SUCCESS"))
    adapter = adapter_of(make_client(mono))
    assert adapter.submit(r).status is S.PROCESSING
    assert adapter.query(r).status is S.SUCCEEDED
    assert calls(mocked) == ["GET /v3/certificates", "POST " + REFUND_PATH,
                             "GET " + REFUND_PATH + "/" + r.channel_refund_no]
    cert_request = mocked.calls[0].request
    assert cert_request.url.startswith(BASE)       # never api.mch.weixin.qq.com
    assert cert_request.headers["Authorization"].startswith("WECHATPAY2-SHA256-RSA2048 ")
    assert "Wechatpay-Serial" not in mocked.calls[1].request.headers


@pytest.mark.parametrize("answer", ["unsigned", "signed_by_a_stranger", "http_401",
                                    "http_500", "unreachable", "nothing_usable"])
def test_no_usable_download_sends_nothing(mono: Mono, mocked: responses.RequestsMock,
                                          answer: str) -> None:
    a = make_cert(SERIAL_A)
    good = certificates_answer(a)
    if answer == "unsigned":
        good["headers"] = {"Request-ID": "R1"}
    elif answer == "signed_by_a_stranger":      # a serial it does not list, a key of none
        good["headers"] = canned.signed_headers(good["body"].decode(), serial=SERIAL_B,
                                                key=cert_key("stranger"))
    elif answer == "http_401":
        good = {"status": 401, "json": {"code": "SIGN_ERROR", "message": "签名错误"}}
    elif answer == "http_500":
        good = {"status": 500, "json": {"code": "SYSTEM_ERROR", "message": "系统错误"}}
    elif answer == "unreachable":
        good = {"body": requests.ConnectionError("refused")}
    else:
        good = certificates_answer(a, entries=[entry(a, apiv3="q" * 32)])
    mocked.add(responses.GET, CERTS, **good)
    adapter = adapter_of(make_client(mono))
    expected = ChannelAuthError if answer == "http_401" else ChannelUnavailable
    with pytest.raises(expected) as info:
        adapter.submit(canned.refund())
    assert info.value.code == "NO_PLATFORM_CERTIFICATE"
    assert calls(mocked) == ["GET /v3/certificates"]     # the refund was never sent
    # and the next call does not hammer /v3/certificates: it waits retry_seconds
    with pytest.raises(expected):
        adapter.submit(canned.refund())
    assert calls(mocked) == ["GET /v3/certificates"]
    mono.t += 60
    with pytest.raises(expected):
        adapter.submit(canned.refund())
    assert calls(mocked) == ["GET /v3/certificates"] * 2


def test_rotation_unknown_serial_refreshes_once_then_verifies(
        mono: Mono, mocked: responses.RequestsMock) -> None:
    a, b = make_cert(SERIAL_A), make_cert(SERIAL_B)
    mocked.add(responses.GET, CERTS, **certificates_answer(a))
    r1, r2 = canned.refund("RF1"), canned.refund("RF2")
    mocked.add(responses.POST, REFUNDS, **refund_answer("RF1", a))
    adapter = adapter_of(make_client(mono))
    assert adapter.submit(r1).status is S.PROCESSING
    # WeChat rotated: the answer is signed by B, /v3/certificates now lists A and B
    mocked.replace(responses.GET, CERTS, **certificates_answer(a, b, signer=b))
    mocked.replace(responses.POST, REFUNDS, **refund_answer("RF2", b))
    assert adapter.submit(r2).status is S.PROCESSING
    # the unknown serial of the second answer: one download, then the answer verifies
    assert calls(mocked) == ["GET /v3/certificates", "POST " + REFUND_PATH,
                             "POST " + REFUND_PATH, "GET /v3/certificates"]
    # both certificates stay usable (during a rotation either signs)
    mocked.replace(responses.POST, REFUNDS, **refund_answer("RF1", a))
    assert adapter.submit(r1).status is S.PROCESSING
    assert calls(mocked).count("GET /v3/certificates") == 2


def test_forged_serials_cannot_force_a_download_per_request(
        mono: Mono, mocked: responses.RequestsMock) -> None:
    a = make_cert(SERIAL_A)
    mocked.add(responses.GET, CERTS, **certificates_answer(a))
    stranger = make_cert("7E57", key_name="stranger")
    client = make_client(mono)
    adapter = adapter_of(client)
    for n in range(3):
        mocked.upsert(responses.POST, REFUNDS, **refund_answer(f"RF{n}", stranger))
        with pytest.raises(OutcomeUnknown) as info:
            adapter.submit(canned.refund(f"RF{n}"))
        assert info.value.code == "SIGNATURE_INVALID"
    # one scheduled download, one for the first unknown serial, then none
    assert calls(mocked).count("GET /v3/certificates") == 2
    mono.t += 60
    mocked.replace(responses.POST, REFUNDS, **refund_answer("RF9", stranger))
    with pytest.raises(OutcomeUnknown):
        adapter.submit(canned.refund("RF9"))
    assert calls(mocked).count("GET /v3/certificates") == 3


def test_scheduled_refresh_and_a_failed_one_keeps_the_cache(
        mono: Mono, mocked: responses.RequestsMock) -> None:
    a = make_cert(SERIAL_A)
    mocked.add(responses.GET, CERTS, **certificates_answer(a))
    mocked.add(responses.POST, REFUNDS, **refund_answer("RF1", a))
    adapter = adapter_of(make_client(mono))
    adapter.submit(canned.refund("RF1"))
    mono.t += 43_200                                        # 12 h later
    mocked.replace(responses.GET, CERTS, body=requests.ConnectionError("down"))
    assert adapter.submit(canned.refund("RF1")).status is S.PROCESSING
    assert calls(mocked).count("GET /v3/certificates") == 2
    assert calls(mocked)[-2:] == ["GET /v3/certificates", "POST " + REFUND_PATH]


def test_refresh_before_the_last_certificate_expires(
        mono: Mono, mocked: responses.RequestsMock) -> None:
    a = make_cert(SERIAL_A, days=1.2)             # expires in ~5 h: inside the 12 h window
    mocked.add(responses.GET, CERTS, **certificates_answer(a))
    mocked.add(responses.POST, REFUNDS, **refund_answer("RF1", a))
    adapter = adapter_of(make_client(mono))
    adapter.submit(canned.refund("RF1"))
    mono.t += 3600
    adapter.submit(canned.refund("RF1"))
    assert calls(mocked).count("GET /v3/certificates") == 2


def test_an_expired_certificate_is_not_used(mono: Mono,
                                            mocked: responses.RequestsMock) -> None:
    a = make_cert(SERIAL_A, days=2)
    clock = FakeClock(datetime.now(UTC))
    mocked.add(responses.GET, CERTS, **certificates_answer(a))
    mocked.add(responses.POST, REFUNDS, **refund_answer("RF1", a))
    adapter = adapter_of(make_client(mono, now=clock))
    adapter.submit(canned.refund("RF1"))
    clock.advance(days=2)                      # A has expired; WeChat still lists only A
    mono.t += 60
    with pytest.raises(ChannelUnavailable):
        adapter.submit(canned.refund("RF1"))
    assert calls(mocked)[-1] == "GET /v3/certificates"


def test_cert_dir_keeps_downloads_for_the_next_start(
        tmp_path: Path, mono: Mono, mocked: responses.RequestsMock) -> None:
    a = make_cert(SERIAL_A)
    mocked.add(responses.GET, CERTS, **certificates_answer(a))
    mocked.add(responses.POST, REFUNDS, **refund_answer("RF1", a))
    adapter_of(make_client(mono, cert_dir=str(tmp_path / "certs"))).submit(
        canned.refund("RF1"))
    assert [p.name for p in (tmp_path / "certs").iterdir()] == [f"{SERIAL_A}.pem"]
    # next start: WeChat unreachable, the kept certificate verifies
    mocked.replace(responses.GET, CERTS, body=requests.ConnectionError("down"))
    adapter = adapter_of(make_client(Mono(), cert_dir=str(tmp_path / "certs")))
    assert adapter.submit(canned.refund("RF1")).status is S.PROCESSING


def test_a_listed_serial_never_becomes_a_path(tmp_path: Path, mono: Mono,
                                              mocked: responses.RequestsMock) -> None:
    a = make_cert(SERIAL_A)
    evil = entry(a, serial_no="../../evil")
    mocked.add(responses.GET, CERTS, **certificates_answer(a, entries=[evil, entry(a)]))
    mocked.add(responses.POST, REFUNDS, **refund_answer("RF1", a))
    adapter_of(make_client(mono, cert_dir=str(tmp_path / "c"))).submit(canned.refund("RF1"))
    assert {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")} == \
        {"c", f"c/{SERIAL_A}.pem"}


# -- notifications ------------------------------------------------------------------------------
def notification(by: Cert | None, **kw: Any) -> tuple[dict[str, str], bytes]:
    headers, body = canned.notification("RF1", **kw)
    if by is not None:
        headers.update(canned.signed_headers(body.decode(), serial=by.serial, key=by.key,
                                             ts=int(headers["Wechatpay-Timestamp"])))
        headers.pop("Request-ID")
    return headers, body


def test_certificate_mode_notification(mono: Mono, mocked: responses.RequestsMock) -> None:
    a = make_cert(SERIAL_A)
    mocked.add(responses.GET, CERTS, **certificates_answer(a))
    adapter = WechatPayAdapter(make_client(mono), clock=FakeClock(canned.NOW))
    assert adapter.parse_notification(*notification(a)).status is S.SUCCEEDED
    with pytest.raises(SignatureInvalid) as info:      # the public-key id means nothing here
        adapter.parse_notification(*notification(None))
    assert info.value.code == "SERIAL"
    assert calls(mocked) == ["GET /v3/certificates"]


def test_both_modes_at_once(mono: Mono, mocked: responses.RequestsMock) -> None:
    a = make_cert(SERIAL_A)
    client = make_client(mono, verification="both")
    adapter = WechatPayAdapter(client, clock=FakeClock(canned.NOW))
    mocked.add(responses.GET, CERTS, **certificates_answer(a))
    mocked.add(responses.POST, REFUNDS, **refund_answer("RF1"))          # by the key
    assert adapter.submit(canned.refund("RF1")).status is S.PROCESSING
    assert mocked.calls[-1].request.headers["Wechatpay-Serial"] == PUB_ID  # steers WeChat
    mocked.replace(responses.POST, REFUNDS, **refund_answer("RF2", a))   # by a certificate
    assert adapter.submit(canned.refund("RF2")).status is S.PROCESSING
    assert adapter.parse_notification(*notification(None)).status is S.SUCCEEDED
    assert adapter.parse_notification(*notification(a)).status is S.SUCCEEDED
    # the key's id never verifies with a certificate, nor a certificate serial with the key
    wrong = notification(None)
    wrong[0]["Wechatpay-Serial"] = SERIAL_A
    with pytest.raises(SignatureInvalid):
        adapter.parse_notification(*wrong)
    assert client.platform_certificates()[0][0] == SERIAL_A


def test_both_mode_survives_a_dead_certificates_endpoint(
        mono: Mono, mocked: responses.RequestsMock) -> None:
    # a public-key merchant's /v3/certificates may answer an error (addendum §3)
    mocked.add(responses.GET, CERTS, status=404,
               json={"code": "RESOURCE_NOT_EXISTS", "message": "无可用的平台证书"})
    mocked.add(responses.POST, REFUNDS, **refund_answer("RF1"))
    adapter = adapter_of(make_client(mono, verification="both"))
    assert adapter.submit(canned.refund("RF1")).status is S.PROCESSING


def test_public_key_mode_never_downloads(mocked: responses.RequestsMock) -> None:
    a = make_cert(SERIAL_A)
    adapter = WechatPayAdapter(make_client(Mono(), verification="public_key"),
                               clock=FakeClock(canned.NOW))
    with pytest.raises(SignatureInvalid) as info:
        adapter.parse_notification(*notification(a))
    assert info.value.code == "SERIAL" and calls(mocked) == []


def test_abnormal_refund_encrypts_with_the_effective_certificate(
        mono: Mono, mocked: responses.RequestsMock) -> None:
    now = datetime.now(UTC)
    a = make_cert(SERIAL_A)
    b = make_cert(SERIAL_B, effective=now + timedelta(hours=20))   # not in use yet
    mocked.add(responses.GET, CERTS, **certificates_answer(a, b))
    r = canned.refund("RF1", channel_refund_id="50300000001")
    mocked.add(responses.POST, REFUNDS + "/50300000001/apply-abnormal-refund",
               **refund_answer("RF1", a))
    adapter_of(make_client(mono)).apply_abnormal_refund(r, AbnormalRefundInstruction(
        AbnormalTarget.USER_BANK_CARD, "ICBC_DEBIT", "6222021234567890123", "张三"))
    req = mocked.calls[-1].request
    assert req.headers["Wechatpay-Serial"] == SERIAL_A
    sent = json.loads(req.body)
    plain = a.key.decrypt(base64.b64decode(sent["bank_account"]),
                          padding.OAEP(mgf=padding.MGF1(hashes.SHA1()),  # noqa: S303
                                       algorithm=hashes.SHA1(), label=None))  # noqa: S303
    assert plain == b"6222021234567890123"


# -- service provider (addendum §4) ------------------------------------------------------------
def partner_adapter(mono: Mono) -> WechatPayAdapter:
    return WechatPayAdapter(make_client(mono, verification="public_key",
                                        sub_mchid=SUB_MCHID), clock=FakeClock(canned.NOW))


def test_partner_requests_carry_sub_mchid(mono: Mono, mocked: responses.RequestsMock) -> None:
    adapter = partner_adapter(mono)
    r = canned.refund("RF1")
    mocked.add(responses.POST, REFUNDS, **refund_answer("RF1"))
    mocked.add(responses.GET, REFUNDS + "/RF1", **refund_answer("RF1", status="SUCCESS"))
    assert adapter.submit(r).status is S.PROCESSING
    assert json.loads(mocked.calls[0].request.body)["sub_mchid"] == SUB_MCHID
    assert "sp_mchid" not in json.loads(mocked.calls[0].request.body)   # the signer is sp
    assert adapter.query(r).status is S.SUCCEEDED
    assert mocked.calls[1].request.path_url == f"{REFUND_PATH}/RF1?sub_mchid={SUB_MCHID}"
    mocked.add(responses.GET, BASE + "/v3/bill/tradebill",
               **signed(json.dumps({"hash_type": "SHA1", "hash_value": "0" * 40,
                                    "download_url": BASE + "/v3/billdownload/file?token=t"}),
                        PUB_ID, keys().platform))
    mocked.add(responses.GET, BASE + "/v3/billdownload/file", body=b"x",
               content_type="application/octet-stream")
    with pytest.raises(StatementError):     # the hash does not match: we only want the URL
        adapter.download_statement(canned.NOW.date())
    assert f"&sub_mchid={SUB_MCHID}" in mocked.calls[2].request.path_url
    with pytest.raises(StatementError, match="fund-flow"):
        adapter.download_bill(canned.NOW.date(), BillKind.FUNDFLOW_BASIC)
    assert len(mocked.calls) == 4


@pytest.mark.parametrize(("resource", "code"), [
    ({"mchid": None, "sp_mchid": canned.MCHID, "sub_mchid": SUB_MCHID}, None),
    ({"mchid": canned.MCHID, "sp_mchid": canned.MCHID, "sub_mchid": SUB_MCHID}, None),
    ({"mchid": None, "sp_mchid": canned.MCHID, "sub_mchid": "1900000999"},
     "SUB_MCHID_MISMATCH"),
    ({"mchid": None, "sp_mchid": "1900000999", "sub_mchid": SUB_MCHID}, "MCHID_MISMATCH"),
    ({"mchid": canned.MCHID}, "MCHID_MISMATCH"),            # a direct merchant's
    ({"mchid": "1900000777", "sp_mchid": canned.MCHID, "sub_mchid": SUB_MCHID},
     "MCHID_MISMATCH"),
])
def test_partner_notifications_name_our_sub_merchant(mono: Mono, resource: dict[str, Any],
                                                     code: str | None) -> None:
    adapter = partner_adapter(mono)
    extra = {k: v for k, v in resource.items() if k != "mchid"}
    headers, body = canned.notification("RF1", mchid=resource["mchid"], **extra)
    if resource["mchid"] is None:           # drop the key altogether
        doc = json.loads(body)
        headers, body = _without_mchid(doc)
    if code is None:
        assert adapter.parse_notification(headers, body).status is S.SUCCEEDED
        return
    with pytest.raises(SignatureInvalid) as info:
        adapter.parse_notification(headers, body)
    assert info.value.code == code


def _without_mchid(doc: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    res = doc["resource"]
    plain = json.loads(_decrypt(res["nonce"], res["ciphertext"], res["associated_data"])
                       or "{}")
    plain.pop("mchid")
    doc["resource"] = canned.encrypt_resource(plain)
    text = json.dumps(doc, ensure_ascii=False)
    headers = canned.signed_headers(text, ts=int(canned.NOW.timestamp()))
    headers.pop("Request-ID")
    return headers, text.encode()


def test_a_direct_merchant_refuses_a_partner_notification(adapter: WechatPayAdapter) -> None:
    with pytest.raises(SignatureInvalid) as info:
        adapter.parse_notification(*canned.notification("RF1", sp_mchid=canned.MCHID,
                                                        sub_mchid=SUB_MCHID))
    assert info.value.code == "MCHID_MISMATCH"


def test_concurrent_unknown_serials_share_one_download(mono: Mono,
                                                       mocked: responses.RequestsMock) -> None:
    import threading

    a, b = make_cert(SERIAL_A), make_cert(SERIAL_B)
    mocked.add(responses.GET, CERTS, **certificates_answer(a))
    mocked.add(responses.POST, REFUNDS, **refund_answer("RF0", a))
    adapter = adapter_of(make_client(mono))
    adapter.submit(canned.refund("RF0"))
    mocked.replace(responses.GET, CERTS, **certificates_answer(a, b, signer=b))
    mocked.replace(responses.POST, REFUNDS, **refund_answer("RF0", b))   # rotated
    results: list[Any] = []

    def submit() -> None:
        try:
            results.append(adapter.submit(canned.refund("RF0")).status)
        except Exception as exc:  # recorded for the assertion below
            results.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [S.PROCESSING] * 4
    assert calls(mocked).count("GET /v3/certificates") == 2
