"""The Alipay client in public-key-certificate mode (CHANNELS-ADDENDUM §5) and ISV mode,
with the real SDK (DCAliPay) and canned answers: the SNs every request carries, the
certificate an answer's ``alipay_cert_sn`` names, the download of one not held and the
chain it must pass, notifications after a rotation, and ``app_auth_token``."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from pydantic import SecretStr

from adapters.alipay.adapter import client_for
from adapters.alipay.certs import CertificateMode
from adapters.alipay.client import CERT_DOWNLOAD, MAX_DOWNLOADED_CERTS, AlipayClient
from gateway.errors import ChannelUnavailable, ConfigurationError, OutcomeUnknown
from gateway.settings import AlipaySettings
from tests.unit.adapters.alipay.ca import CA, ecdsa_root, name, new_key, pem
from tests.unit.adapters.alipay.conftest import Canned, KeyPair, fixed_clock

APP_ID = "2021000000000002"
QUERY = "alipay.trade.fastpay.refund.query"
TOKEN = "202611BBf00dfeedc0ffee0123456789abcdeX01"
ROOT_DN = "CN=Test Root R1,OU=Certification Authority,O=Test,C=CN"
CLASS2_DN = "CN=Test Class 2 R1,OU=Certification Authority,O=Test,C=CN"


class Pki:
    """A root, a Class 2 CA under it, the app's and Alipay's certificates."""

    def __init__(self, class2_ou: str | None = "Certification Authority") -> None:
        self.root = CA.root(name("Test Root R1", ou="Certification Authority", o="Test",
                                 c="CN"))
        self.class2 = self.root.ca(name("Test Class 2 R1", ou=class2_ou, o="Test", c="CN"))
        self.app = KeyPair(new_key())
        self.app_cert = self.class2.leaf(name("2088-app"), key=self.app.private)
        self.alipay = KeyPair(new_key())
        self.alipay_cert = self.class2.leaf(name("Alipay"), key=self.alipay.private)

    def alipay_file(self, cert: x509.Certificate | None = None) -> str:
        return pem(cert or self.alipay_cert) + self.class2.pem

    def mode(self) -> CertificateMode:
        # Alipay's layout: an ECDSA root first; here also CRLF and no blank line, which
        # python-alipay-sdk alone cannot read (addendum §5).
        root_file = (ecdsa_root() + self.root.pem).replace("\n", "\r\n")
        return CertificateMode(app_cert=pem(self.app_cert),
                               alipay_cert=self.alipay_file(), alipay_root_cert=root_file)


def sn(issuer_dn: str, cert: x509.Certificate) -> str:
    text = f"{issuer_dn}{cert.serial_number}".encode()
    return hashlib.md5(text, usedforsecurity=False).hexdigest()


def answer(method: str, inner: dict[str, Any], keys: KeyPair, cert_sn: str | None) -> bytes:
    text = json.dumps(inner, ensure_ascii=False, separators=(",", ":"))
    rt = method.replace(".", "_") + "_response"
    named = f'"alipay_cert_sn":"{cert_sn}",' if cert_sn else ""
    return f'{{"{rt}":{text},{named}"sign":"{keys.sign(text)}"}}'.encode()


def download(pem_text: str, keys: KeyPair, cert_sn: str) -> bytes:
    content = base64.b64encode(pem_text.encode()).decode()
    return answer(CERT_DOWNLOAD, {"code": "10000", "msg": "Success",
                                  "alipay_cert_content": content}, keys, cert_sn)


OK = {"code": "10000", "msg": "Success", "refund_status": "REFUND_SUCCESS"}


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def make(pki: Pki, token: str | None = None) -> AlipayClient:
    return AlipayClient(app_id=APP_ID, app_private_key_pem=pki.app.private_pem,
                        certificates=pki.mode(), app_auth_token=token,
                        gateway_url="http://127.0.0.1:9/gateway.do", connect_timeout=1,
                        read_timeout=2, clock=fixed_clock)


@pytest.fixture
def client(pki: Pki) -> AlipayClient:
    return make(pki, TOKEN)


@pytest.fixture
def canned(client: AlipayClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[Canned]:
    fake = Canned()
    monkeypatch.setattr(client, "_get", lambda url, **kw: fake(url, operation="", limit=0))
    yield fake


def alipay_sn(pki: Pki, cert: x509.Certificate | None = None) -> str:
    return sn(CLASS2_DN, cert or pki.alipay_cert)


def test_requests_carry_both_sns_and_the_token_signed(client: AlipayClient, canned: Canned,
                                                      pki: Pki) -> None:
    canned.answers.append(answer(QUERY, OK, pki.alipay, alipay_sn(pki)))
    client.call(QUERY, {"out_request_no": "R1"}, operation="query")
    params = canned.params()
    assert params["app_cert_sn"] == sn(CLASS2_DN, pki.app_cert)
    assert params["alipay_root_cert_sn"] == sn(ROOT_DN, pki.root.cert)   # the RSA root only
    assert params["app_auth_token"] == TOKEN                     # top level, not biz_content
    assert "app_auth_token" not in canned.biz()
    signed = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "sign")
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    pki.app.private.public_key().verify(base64.b64decode(params["sign"]), signed.encode(),
                                        padding.PKCS1v15(), hashes.SHA256())


def test_the_named_certificate_verifies(client: AlipayClient, canned: Canned,
                                        pki: Pki) -> None:
    canned.answers.append(answer(QUERY, OK, pki.alipay, alipay_sn(pki)))
    assert client.call(QUERY, {}, operation="query").body["refund_status"] == "REFUND_SUCCESS"
    canned.answers.append(answer(QUERY, OK, KeyPair(new_key()), alipay_sn(pki)))
    with pytest.raises(OutcomeUnknown) as info:
        client.call(QUERY, {}, operation="query")
    assert info.value.code == "SIGNATURE_INVALID"
    assert len(canned.urls) == 2                    # no download for a known SN


def test_a_success_naming_no_certificate_is_unknown(client: AlipayClient, canned: Canned,
                                                    pki: Pki) -> None:
    canned.answers.append(answer(QUERY, OK, pki.alipay, None))
    with pytest.raises(OutcomeUnknown) as info:
        client.call(QUERY, {}, operation="query")
    assert info.value.code == "CERT_SN_MISSING"
    refusal = {"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_NOT_EXIST"}
    canned.answers.append(answer(QUERY, refusal, pki.alipay, None))   # checked all the same
    assert client.call(QUERY, {}, operation="query").sub_code == "ACQ.TRADE_NOT_EXIST"


def test_a_rotated_certificate_is_downloaded_once_and_verifies_notifications(
        client: AlipayClient, canned: Canned, pki: Pki) -> None:
    new = KeyPair(new_key())
    new_cert = pki.class2.leaf(name("Alipay"), key=new.private)
    new_sn = alipay_sn(pki, new_cert)
    canned.answers += [answer(QUERY, OK, new, new_sn),
                       download(pki.alipay_file(new_cert), new, new_sn),
                       answer(QUERY, OK, new, new_sn)]
    client.call(QUERY, {}, operation="query")
    fetch = canned.params(1)
    assert fetch["method"] == CERT_DOWNLOAD and canned.biz(1) == {"alipay_cert_sn": new_sn}
    assert "app_auth_token" not in fetch                 # the app's own certificate
    client.call(QUERY, {}, operation="query")
    assert len(canned.urls) == 3                         # downloaded once
    assert client.alipay_cert_sns == (new_sn, alipay_sn(pki))
    note = {"notify_type": "trade_status_sync", "app_id": APP_ID, "out_biz_no": "R1"}
    text = "&".join(f"{k}={v}" for k, v in sorted(note.items()))
    assert client.verify(note, new.sign(text))            # signed with the new key
    assert client.verify(note, pki.alipay.sign(text))     # the old one still held
    assert not client.verify(note, KeyPair(new_key()).sign(text))


def _impostor(pki: Pki) -> tuple[str, KeyPair, str]:
    other = Pki()                                        # the same names, other keys
    return other.alipay_file(), other.alipay, alipay_sn(other)


def _expired(pki: Pki) -> tuple[str, KeyPair, str]:
    keys = KeyPair(new_key())
    cert = pki.class2.leaf(name("Alipay"), key=keys.private,
                           not_before=datetime.now(UTC) - timedelta(days=30), days=10)
    return pki.alipay_file(cert), keys, alipay_sn(pki, cert)


def _mismatch(pki: Pki) -> tuple[str, KeyPair, str]:
    return pki.alipay_file(), pki.alipay, "0" * 32      # a good file, not that SN's


@pytest.mark.parametrize("make_file", [_impostor, _expired, _mismatch],
                         ids=["another-ca", "expired", "another-sn"])
def test_a_downloaded_certificate_must_chain_to_the_root(client: AlipayClient,
                                                         canned: Canned, pki: Pki,
                                                         make_file: Any) -> None:
    file, keys, named = make_file(pki)
    canned.answers += [answer(QUERY, OK, keys, named), download(file, keys, named)]
    with pytest.raises(OutcomeUnknown) as info:
        client.call(QUERY, {}, operation="query")
    assert info.value.code == "CERT_UNTRUSTED"
    assert named not in client.alipay_cert_sns


@pytest.mark.parametrize("fetched", [
    ChannelUnavailable("refused", channel="alipay", operation="query",
                       code="CONNECT_FAILED"),
    b"<html>502</html>",
    answer(CERT_DOWNLOAD, {"code": "40004", "msg": "Business Failed",
                           "sub_code": "isv.alipay-cert-not-exist"}, KeyPair(new_key()),
           None),
], ids=["not-reached", "unreadable", "refused"])
def test_no_certificate_to_download_is_unknown_never_unavailable(
        client: AlipayClient, canned: Canned, pki: Pki, fetched: Any) -> None:
    """The refund request itself was sent: whatever happens to the download, the outcome
    is unknown (ChannelUnavailable would let the gateway think nothing was sent)."""
    canned.answers += [answer(QUERY, OK, pki.alipay, "f" * 32), fetched]
    with pytest.raises(OutcomeUnknown) as info:
        client.call(QUERY, {}, operation="query")
    assert info.value.code == "CERT_UNAVAILABLE"


def test_an_expired_configured_certificate_verifies_nothing(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    pki = Pki()
    old = pki.class2.leaf(name("Alipay"), key=pki.alipay.private,
                          not_before=datetime.now(UTC) - timedelta(days=30), days=10)
    pki.alipay_cert = old
    cl = make(pki)
    fake = Canned()
    monkeypatch.setattr(cl, "_get", lambda url, **kw: fake(url, operation="", limit=0))
    fake.answers.append(answer(QUERY, OK, pki.alipay, alipay_sn(pki, old)))
    with pytest.raises(OutcomeUnknown) as info:
        cl.call(QUERY, {}, operation="query")
    assert info.value.code == "CERT_EXPIRED"


def test_an_issuer_without_ou_gets_alipays_sn_not_the_sdks(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """python-alipay-sdk writes 'OU=None' for an issuer without OU (addendum §5)."""
    pki = Pki(class2_ou=None)
    cl = make(pki)
    fake = Canned()
    monkeypatch.setattr(cl, "_get", lambda url, **kw: fake(url, operation="", limit=0))
    fake.answers.append(answer(QUERY, OK, pki.alipay, sn("CN=Test Class 2 R1,O=Test,C=CN",
                                                         pki.alipay_cert)))
    cl.call(QUERY, {}, operation="query")
    assert fake.params()["app_cert_sn"] == sn("CN=Test Class 2 R1,O=Test,C=CN", pki.app_cert)


def test_the_sdk_alone_cannot_read_a_crlf_root_file(pki: Pki) -> None:
    from alipay import DCAliPay  # noqa: TID251 - the SDK's quirk is the point

    assert DCAliPay.get_root_cert_sn(pki.mode().alipay_root_cert) is None


def test_the_token_never_stays_in_an_echoed_string_to_sign(client: AlipayClient,
                                                           canned: Canned, pki: Pki) -> None:
    echo = {"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-signature",
            "sub_msg": "验签出错，网关生成的验签字符串为："
                       f"app_auth_token={TOKEN}&amp;app_id={APP_ID}"}
    canned.answers.append(answer(QUERY, echo, pki.alipay, alipay_sn(pki)))
    body = client.call(QUERY, {}, operation="query").body
    assert TOKEN not in json.dumps(body, ensure_ascii=False) and "***" in body["sub_msg"]
    assert TOKEN not in repr(client)


def settings(**fields: Any) -> AlipaySettings:
    return AlipaySettings(app_id=APP_ID, app_private_key=SecretStr(KeyPair(new_key())
                                                                   .private_pem), **fields)


def test_settings_select_the_mode(pki: Pki) -> None:
    files = pki.mode()
    cert = client_for(settings(app_cert=files.app_cert, alipay_cert=files.alipay_cert,
                               alipay_root_cert=files.alipay_root_cert,
                               app_auth_token=SecretStr(TOKEN)), fixed_clock)
    assert cert.certificate_mode and cert.alipay_cert_sns == (alipay_sn(pki),)
    key = client_for(settings(alipay_public_key=SecretStr(pki.alipay.public_pem)),
                     fixed_clock)
    assert not key.certificate_mode
    with pytest.raises(ConfigurationError) as info:
        client_for(settings(app_cert=files.app_cert), fixed_clock)
    assert info.value.setting == "REFUND_GATEWAY_ALIPAY__ALIPAY_CERT"
    assert "ALIPAY_ROOT_CERT" in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        client_for(settings(), fixed_clock)
    assert info.value.setting == "REFUND_GATEWAY_ALIPAY__ALIPAY_PUBLIC_KEY"
    with pytest.raises(ConfigurationError):
        client_for(settings(app_cert="-----BEGIN CERTIFICATE-----\nAAAA\n-----END "
                            "CERTIFICATE-----", alipay_cert=files.alipay_cert,
                            alipay_root_cert=files.alipay_root_cert), fixed_clock)


def test_notification_params_are_what_the_sdk_verifies(client: AlipayClient,
                                                       pki: Pki) -> None:
    form = {"notify_id": "n1", "app_id": APP_ID, "sign_type": "RSA2", "charset": "utf-8"}
    text = "&".join(f"{k}={v}" for k, v in sorted(form.items()) if k != "sign_type")
    assert client.verify(dict(form), pki.alipay.sign(text))
    assert urllib.parse.urlencode(form)        # the form as Alipay posts it


def test_downloaded_certificates_are_bounded_the_configured_one_stays(
        client: AlipayClient, canned: Canned, pki: Pki) -> None:
    sns = []
    for _ in range(MAX_DOWNLOADED_CERTS + 2):
        keys = KeyPair(new_key())
        cert = pki.class2.leaf(name("Alipay"), key=keys.private)
        sns.append(alipay_sn(pki, cert))
        canned.answers += [answer(QUERY, OK, keys, sns[-1]),
                           download(pki.alipay_file(cert), keys, sns[-1])]
        client.call(QUERY, {}, operation="query")
    held = client.alipay_cert_sns
    assert held[0] == sns[-1] and alipay_sn(pki) in held
    assert set(held) == {alipay_sn(pki), *sns[-MAX_DOWNLOADED_CERTS:]}
