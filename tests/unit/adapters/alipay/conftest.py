"""Alipay unit-test kit: an app key pair and an "Alipay" key pair generated per session,
a client wired to the real SDK, and canned answers signed the way Alipay signs them
(the exact inner JSON text of ``<method>_response``, RSA2, CH §1.4)."""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from adapters.alipay.adapter import AlipayAdapter
from adapters.alipay.client import AlipayClient

APP_ID = "2021000000000001"


@dataclass(frozen=True)
class KeyPair:
    private: rsa.RSAPrivateKey

    @property
    def private_pem(self) -> str:
        return self.private.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode()

    @property
    def public_pem(self) -> str:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def sign(self, text: str) -> str:
        sig = self.private.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(sig).decode()


def _pair() -> KeyPair:
    return KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="session")
def app_keys() -> KeyPair:
    return _pair()


@pytest.fixture(scope="session")
def alipay_keys() -> KeyPair:
    return _pair()


@pytest.fixture(scope="session")
def other_keys() -> KeyPair:
    return _pair()


def fixed_clock() -> datetime:
    return datetime(2026, 11, 20, 2, 0, tzinfo=UTC)   # 10:00 Beijing


@pytest.fixture
def client(app_keys: KeyPair, alipay_keys: KeyPair) -> AlipayClient:
    return AlipayClient(app_id=APP_ID, app_private_key_pem=app_keys.private_pem,
                        alipay_public_key_pem=alipay_keys.public_pem,
                        gateway_url="http://127.0.0.1:9/gateway.do",
                        connect_timeout=1.0, read_timeout=2.0, clock=fixed_clock)


def signed_answer(method: str, inner: Mapping[str, Any], keys: KeyPair) -> bytes:
    text = json.dumps(inner, ensure_ascii=False, separators=(",", ":"))
    rt = method.replace(".", "_") + "_response"
    return f'{{"{rt}":{text},"sign":"{keys.sign(text)}"}}'.encode()


class Canned:
    """Replaces the client's transport: records the URLs, answers the queued bodies."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.answers: list[bytes | BaseException] = []

    def __call__(self, url: str, *, operation: str, limit: int) -> bytes:
        self.urls.append(url)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def params(self, i: int = -1) -> dict[str, str]:
        query = self.urls[i].split("?", 1)[1]
        return dict(urllib.parse.parse_qsl(query, keep_blank_values=True))

    def biz(self, i: int = -1) -> dict[str, Any]:
        return dict(json.loads(self.params(i)["biz_content"]))


@pytest.fixture
def canned(client: AlipayClient, monkeypatch: pytest.MonkeyPatch) -> Canned:
    fake = Canned()
    monkeypatch.setattr(client, "_get", fake)
    return fake


@pytest.fixture
def adapter(client: AlipayClient, canned: Canned) -> AlipayAdapter:
    return AlipayAdapter(client)


@pytest.fixture
def answer(alipay_keys: KeyPair) -> Callable[..., bytes]:
    def make(method: str, **inner: Any) -> bytes:
        return signed_answer(method, inner, alipay_keys)
    return make
