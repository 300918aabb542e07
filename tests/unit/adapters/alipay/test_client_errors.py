"""Transport and SDK-exception normalisation (CH §1.3), with real sockets on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import urllib.error
from collections.abc import Iterator
from email.message import Message

import pytest

from adapters.alipay import client as c
from adapters.alipay.client import AlipayClient
from gateway.errors import ChannelAuthError, ChannelUnavailable, OutcomeUnknown
from tests.unit.adapters.alipay.conftest import APP_ID, KeyPair, fixed_clock


class _Handler(http.server.BaseHTTPRequestHandler):
    mode = "ok"

    def do_GET(self) -> None:
        if self.mode == "slow":
            threading.Event().wait(1.5)
            return
        if self.mode == "reset":
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        status = {"500": 500, "404": 404, "401": 401, "ok": 200}[self.mode]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def make(url: str, app_keys: KeyPair, alipay_keys: KeyPair) -> AlipayClient:
    return AlipayClient(app_id=APP_ID, app_private_key_pem=app_keys.private_pem,
                        alipay_public_key_pem=alipay_keys.public_pem, gateway_url=url,
                        connect_timeout=0.5, read_timeout=0.5, clock=fixed_clock)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_is_unavailable(app_keys: KeyPair, alipay_keys: KeyPair) -> None:
    cl = make(f"http://127.0.0.1:{free_port()}/gateway.do", app_keys, alipay_keys)
    with pytest.raises(ChannelUnavailable) as info:
        cl.call("alipay.trade.refund", {"refund_amount": "1.00"}, operation="submit")
    assert info.value.code == "CONNECT_FAILED" and info.value.channel == "alipay"


@pytest.mark.parametrize("mode,error,code,status", [
    ("slow", OutcomeUnknown, "READ_TIMEOUT", None),
    ("reset", OutcomeUnknown, "READ_FAILED", None),
    ("500", OutcomeUnknown, "HTTP_500", 500),
    ("404", OutcomeUnknown, "HTTP_404", 404),
    ("401", ChannelAuthError, "HTTP_401", 401),
    ("ok", OutcomeUnknown, "UNPARSEABLE", None),   # "{}": no response object at all
])
def test_after_connect_failures(server: http.server.ThreadingHTTPServer, app_keys: KeyPair,
                                alipay_keys: KeyPair, monkeypatch: pytest.MonkeyPatch,
                                mode: str, error: type[Exception], code: str,
                                status: int | None) -> None:
    monkeypatch.setattr(_Handler, "mode", mode)
    port = server.server_address[1]
    cl = make(f"http://127.0.0.1:{port}/gateway.do", app_keys, alipay_keys)
    sent: list[bool] = []
    with pytest.raises(error) as info:
        cl.call("alipay.trade.refund", {"refund_amount": "1.00"}, operation="submit",
                after_send=lambda: sent.append(True))
    assert getattr(info.value, "code", None) == code
    assert getattr(info.value, "http_status", None) == status


def test_transport_error_table() -> None:
    refused = urllib.error.URLError(c._ConnectFailed("ConnectionRefusedError"))
    assert isinstance(c.transport_error(refused, "submit"), ChannelUnavailable)
    sending = urllib.error.URLError(BrokenPipeError())
    assert isinstance(c.transport_error(sending, "submit"), OutcomeUnknown)
    http500 = urllib.error.HTTPError("http://x", 502, "bad", Message(), None)
    assert isinstance(c.transport_error(http500, "submit"), OutcomeUnknown)
    assert isinstance(c.transport_error(TimeoutError(), "query"), OutcomeUnknown)
    assert isinstance(c.transport_error(ConnectionResetError(), "query"), OutcomeUnknown)
    assert c.transport_error(KeyError("x"), "query") is None


def test_sdk_exception_fields_are_read_defensively() -> None:
    body = json.dumps({"error_response": {"code": "40002", "msg": "Invalid Arguments",
                                          "sub_code": "isv.invalid-signature",
                                          "sub_msg": "验签出错"}})
    exc = c.AliPayException(code="40002", message=body)
    assert c.sdk_exception_fields(exc) == ("40002", "isv.invalid-signature", "验签出错")
    assert isinstance(c.unsigned_failure(exc, "submit"), ChannelAuthError)
    plain = c.AliPayException(None, "not json")
    assert c.sdk_exception_fields(plain) == (None, None, None)
    err = c.unsigned_failure(plain, "query")
    assert isinstance(err, OutcomeUnknown) and err.code == "UNSIGNED"
    unknown = c.AliPayException("20000", json.dumps({"alipay_trade_refund_response": {
        "code": "20000", "sub_code": "isp.unknow-error"}}))
    err = c.unsigned_failure(unknown, "submit")
    assert isinstance(err, OutcomeUnknown) and err.code == "isp.unknow-error"
    broken = c.AliPayException.__new__(c.AliPayException)     # attributes missing entirely
    assert c.sdk_exception_fields(broken) == (None, None, None)


def test_validation_error_class_maps_to_unknown(client: AlipayClient,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object) -> None:
        raise c.AliPayValidationError

    monkeypatch.setattr(client, "_get", lambda *a, **k: b'{"x_response":{},"sign":"a"}')
    monkeypatch.setattr(client._sdk, "_verify_and_return_sync_response", boom)
    with pytest.raises(OutcomeUnknown) as info:
        client.call("x", {}, operation="query")
    assert info.value.code == "SIGNATURE_INVALID"


def test_oversized_answer(server: http.server.ThreadingHTTPServer, app_keys: KeyPair,
                          alipay_keys: KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_Handler, "mode", "ok")
    port = server.server_address[1]
    cl = make(f"http://127.0.0.1:{port}/gateway.do", app_keys, alipay_keys)
    with pytest.raises(OutcomeUnknown) as info:
        cl.fetch(f"http://127.0.0.1:{port}/bill", operation="statement", limit=1)
    assert info.value.code == "TOO_LARGE"
    with pytest.raises(OutcomeUnknown):
        cl.fetch("file:///etc/passwd", operation="statement", limit=10)
