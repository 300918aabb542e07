"""Every route's channel call under its total deadline (issue 16 #5), over a real socket.

``Trickler`` is an HTTP server on 127.0.0.1 that answers each request with a genuine,
correctly signed answer of the route, only slowly: some bytes at once, then one byte every
0.2 s, at most ``CAP`` bytes, then it hangs up by itself. Each gap is well inside the 1 s
read timeout, so only the deadline can end such a call: with a 2 s deadline the adapter
raises ``OutcomeUnknown(DEADLINE_EXCEEDED)`` after about 2 s and hangs up (without the
deadline: until the sender stops, 12 s here). WeChat goes through the SDK's ``Core``
with our transport, Alipay through urllib, UnionPay and the wallet through requests.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest

from adapters.alipay.adapter import AlipayAdapter
from adapters.alipay.client import AlipayClient
from adapters.balance.adapter import BalanceAdapter
from adapters.balance.client import WalletClient
from adapters.bankcard import signing
from adapters.bankcard.adapter import BankcardAdapter
from adapters.bankcard.client import UnionPayClient
from adapters.wechatpay.adapter import WechatPayAdapter
from adapters.wechatpay.client import WechatPayClient
from gateway.errors import ChannelUnavailable, OutcomeUnknown
from gateway.models import ChannelStatus, Payment, Refund, RefundStatus, Route
from gateway.money import Money
from gateway.ports import ChannelAdapter
from tests.helpers import FakeClock
from tests.unit.adapters.alipay.conftest import APP_ID, KeyPair, _pair, signed_answer
from tests.unit.adapters.bankcard import canned as up
from tests.unit.adapters.bankcard import certs
from tests.unit.adapters.wechatpay import canned as wx

pytestmark = pytest.mark.slow   # about 45 s: each trickle runs to its deadline

GAP = 0.2     # seconds between trickled bytes
CAP = 60      # trickled bytes at most (12 s), then the server hangs up
READ = 1.0    # read timeout of every client here; the connect timeout is 1 s too
NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


# -- the server -------------------------------------------------------------------------
def http_answer(body: bytes, headers: dict[str, str], *, framed: bool = True) -> bytes:
    """A raw HTTP/1.1 200 answer; unframed: no Content-Length, the end is the hang-up."""
    lines = ["HTTP/1.1 200 OK", *(f"{k}: {v}" for k, v in headers.items())]
    lines.append(f"Content-Length: {len(body)}" if framed else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Trickler:
    """Answers every request with ``answer``: ``at_once`` bytes at once (None: all), the
    rest one byte every ``GAP`` s, at most ``CAP``; keeps a connection open for the next
    request only after a whole framed answer. Records connections and hang-ups seen."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.answer = b""
        self.at_once: int | None = None
        self.connections = 0
        self.requests = 0
        self.hangups: list[float] = []   # when a trickle found the client gone
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def close(self) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout=2)
        self._listener.close()

    def hung_up_by_client(self, within: float) -> bool:
        end = time.monotonic() + within
        while not self.hangups and time.monotonic() < end:
            time.sleep(0.05)
        return bool(self.hangups)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            while self._read_request(conn):
                self.requests += 1
                answer, at_once = self.answer, self.at_once
                head = answer if at_once is None else answer[:at_once]
                rest = answer[len(head):]
                conn.sendall(head)
                for i in range(min(len(rest), CAP)):
                    if self._stop.wait(GAP):
                        return
                    try:
                        conn.sendall(rest[i:i + 1])
                    except OSError:   # the client hung up (RST after its shutdown)
                        self.hangups.append(time.monotonic())
                        return
                if len(rest) > CAP or b"Content-Length" not in answer:
                    return   # the sender gives up, or an unframed answer ends here

    @staticmethod
    def _read_request(conn: socket.socket) -> bool:
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return False
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return False
                body += chunk
        except OSError:
            return False
        return True


@pytest.fixture
def server() -> Iterator[Trickler]:
    s = Trickler()
    yield s
    s.close()


# -- one kit per route: a genuine answer, an adapter, its calls ----------------------------
@cache
def alipay_keys() -> tuple[KeyPair, KeyPair]:
    return _pair(), _pair()   # the app's, "Alipay's"


def _refund(route: Route, no: str) -> Refund:
    pay = Payment(route=route, merchant_order_no="ORD1", channel_trade_no="T1",
                  amount=Money(10_000), user_id="u-1")
    return Refund(id=no, idempotency_key="k1", route=route, payment=pay,
                  amount=Money(2500), reason="test", status=RefundStatus.PENDING,
                  channel_refund_no=no, created_at=NOW, updated_at=NOW)


@dataclass(frozen=True)
class Kit:
    """``client(url, deadline, download_deadline)``; ``adapter(client)``; ``answer()`` a
    genuine answer to ``refund``'s query, read as ``status``; ``download(client, url)``
    the statement file's request; ``pooled``: the client keeps its connection."""

    client: Callable[..., Any]
    adapter: Callable[[Any], ChannelAdapter]
    refund: Refund
    answer: Callable[[], bytes]
    status: ChannelStatus
    download: Callable[[Any, str], object]
    pooled: bool = True


def _wechat_client(url: str, deadline: float | None = None,
                   download_deadline: float | None = None) -> WechatPayClient:
    k = wx.keys()
    return WechatPayClient(mchid=wx.MCHID, appid=wx.APPID, private_key_pem=k.merchant_pem,
                           cert_serial_no=wx.CERT_SERIAL, apiv3_key=wx.APIV3, base_url=url,
                           connect_timeout=1, read_timeout=READ,
                           public_key_pem=k.platform_public_pem, public_key_id=wx.PUB_ID,
                           deadline=deadline, download_deadline=download_deadline)


def _wechat_answer() -> bytes:
    body = json.dumps(wx.refund_object("RF20261120000001"), ensure_ascii=False)
    return http_answer(body.encode(), {"Content-Type": "application/json; charset=utf-8",
                                       **wx.signed_headers(body)})


def _alipay_client(url: str, deadline: float | None = None,
                   download_deadline: float | None = None) -> AlipayClient:
    app, alipay = alipay_keys()
    return AlipayClient(app_id=APP_ID, app_private_key_pem=app.private_pem,
                        alipay_public_key_pem=alipay.public_pem,
                        gateway_url=url + "/gateway.do", connect_timeout=1,
                        read_timeout=READ, clock=lambda: NOW, deadline=deadline,
                        download_deadline=download_deadline)


def _alipay_answer() -> bytes:
    body = signed_answer("alipay.trade.fastpay.refund.query", {
        "code": "10000", "msg": "Success", "out_request_no": "RFabc123",
        "refund_amount": "25.00", "refund_status": "REFUND_SUCCESS",
        "gmt_refund_pay": "2026-11-20 10:00:05"}, alipay_keys()[1])
    return http_answer(body, {"Content-Type": "text/html;charset=utf-8"})


def _unionpay_client(url: str, deadline: float | None = None,
                     download_deadline: float | None = None) -> UnionPayClient:
    return UnionPayClient(base_url=url, mer_id=up.MER_ID, cert_id="69629715588",
                          private_key=certs.KEY,
                          trust=signing.load_pin(certs.public_pem()),
                          connect_timeout=1, read_timeout=READ, deadline=deadline,
                          download_deadline=download_deadline)


def _unionpay_adapter(client: Any) -> ChannelAdapter:
    return BankcardAdapter(client, back_url="http://127.0.0.1:9/notify/bankcard",
                           channel_type="07", trust=signing.load_pin(
                               certs.public_pem()), clock=lambda: NOW)


def _unionpay_answer() -> bytes:
    body = up.signed_answer(respCode="00", origRespCode="00", origRespMsg="success",
                            orderId="RF20261120A1B2C3D4E5F60718", queryId="Q1",
                            txnAmt="2500", settleDate="1120")
    return http_answer(body.encode(), {"Content-Type": "text/plain;charset=UTF-8"})


def _wallet_client(url: str, deadline: float | None = None,
                   download_deadline: float | None = None) -> WalletClient:
    return WalletClient(base_url=url, hmac_key=b"k" * 32, connect_timeout=1,
                        read_timeout=READ, deadline=deadline,
                        download_deadline=download_deadline)


def _wallet_answer() -> bytes:
    body = json.dumps({"refund_no": "RF20261120ABCDEF0123456789",
                       "wallet_txn_id": "WT202611200000000001", "status": "SUCCESS",
                       "amount_fen": 2500, "user_id": "u-1", "order_no": "ORD1",
                       "currency": "CNY", "credited_at": "2026-11-20T10:00:01+08:00"})
    return http_answer(body.encode(), {"Content-Type": "application/json"})


KITS: dict[str, Kit] = {
    "wechatpay": Kit(
        _wechat_client,
        lambda c: WechatPayAdapter(c, clock=FakeClock(NOW), max_skew_seconds=300),
        wx.refund("RF20261120000001"), _wechat_answer, ChannelStatus.PROCESSING,
        lambda c, url: c.download_bill(url + "/v3/billdownload/file?token=t")),
    "alipay": Kit(
        _alipay_client, AlipayAdapter, _refund(Route.ALIPAY, "RFabc123"), _alipay_answer,
        ChannelStatus.SUCCEEDED,
        lambda c, url: c.fetch(url + "/bill.zip", operation="statement", limit=1 << 20),
        pooled=False),   # urllib: one connection per call
    "bankcard": Kit(
        _unionpay_client, _unionpay_adapter,
        _refund(Route.BANKCARD, "RF20261120A1B2C3D4E5F60718"), _unionpay_answer,
        ChannelStatus.SUCCEEDED,
        lambda c, url: c.send_url("statement", url + "/", {"txnType": "76"})),
    "balance": Kit(
        _wallet_client, lambda c: BalanceAdapter(c, lambda: NOW),
        _refund(Route.BALANCE, "RF20261120ABCDEF0123456789"), _wallet_answer,
        ChannelStatus.SUCCEEDED,
        lambda c, url: c.call("statement", "GET", "/v1/ledger/2026-11-20")),
}
ROUTES = sorted(KITS)


@contextmanager
def wired(kit: Kit, url: str, **deadlines: float) -> Iterator[tuple[Any, ChannelAdapter]]:
    """The route's client and adapter at ``url``; closed afterwards."""
    client = kit.client(url, **deadlines)
    adapter = kit.adapter(client)
    try:
        yield client, adapter
    finally:
        adapter.close()


def _timed(fn: Callable[[], object]) -> tuple[BaseException | None, float]:
    start = time.monotonic()
    try:
        fn()
    except (OutcomeUnknown, ChannelUnavailable) as exc:
        return exc, time.monotonic() - start
    return None, time.monotonic() - start


# -- the deadline ------------------------------------------------------------------------
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("trickled", ["headers", "body"])
def test_a_trickled_answer_is_abandoned_at_the_deadline(server: Trickler, route: str,
                                                        trickled: str) -> None:
    kit = KITS[route]
    server.answer = kit.answer()
    server.at_once = 0 if trickled == "headers" else server.answer.index(b"\r\n\r\n") + 4
    with wired(kit, server.url, deadline=2.0) as (_, adapter):
        error, elapsed = _timed(lambda: adapter.submit(kit.refund))
    assert isinstance(error, OutcomeUnknown), error   # sent: query first, never resend
    assert error.code == "DEADLINE_EXCEEDED" and error.channel == kit.refund.route.value
    assert 1.9 <= elapsed < 5, elapsed   # not the 1 s read timeout, not the 12 s trickle
    assert server.hung_up_by_client(within=1.0)   # the connection was closed, not left


@pytest.mark.parametrize("route", ["alipay", "balance"])   # urllib and requests
def test_an_unframed_answer_cut_by_the_deadline_is_not_taken_as_whole(
        server: Trickler, route: str) -> None:
    """Without Content-Length the end of the answer is the hang-up: the shutdown at the
    deadline looks like one, and the half answer must not be read as the answer."""
    kit = KITS[route]
    framed = kit.answer()
    head, _, body = framed.partition(b"\r\n\r\n")
    headers = dict(line.decode().split(": ", 1) for line in head.split(b"\r\n")[1:]
                   if not line.lower().startswith(b"content-length"))
    server.answer = http_answer(body, headers, framed=False)
    server.at_once = server.answer.index(b"\r\n\r\n") + 4
    with wired(kit, server.url, deadline=2.0) as (_, adapter):
        error, elapsed = _timed(lambda: adapter.submit(kit.refund))
    assert isinstance(error, OutcomeUnknown) and error.code == "DEADLINE_EXCEEDED", error
    assert 1.9 <= elapsed < 5, elapsed


@pytest.mark.parametrize("route", ROUTES)
def test_a_statement_download_has_its_own_longer_deadline(server: Trickler,
                                                          route: str) -> None:
    kit = KITS[route]
    server.answer = kit.answer()
    server.at_once = server.answer.index(b"\r\n\r\n") + 4
    with wired(kit, server.url, deadline=1.0, download_deadline=2.5) as (client, _):
        error, elapsed = _timed(lambda: kit.download(client, server.url))
    assert isinstance(error, OutcomeUnknown) and error.code == "DEADLINE_EXCEEDED", error
    assert error.operation == "statement"
    assert 2.4 <= elapsed < 5.5, elapsed   # the download's 2.5 s, not the call's 1 s


# -- what the deadline must not change ----------------------------------------------------
@pytest.mark.parametrize("route", ROUTES)
def test_answers_within_the_deadline_still_work_slow_or_fast(server: Trickler,
                                                             route: str) -> None:
    kit = KITS[route]
    server.answer = kit.answer()
    with wired(kit, server.url, deadline=2.0) as (_, adapter):
        assert adapter.query(kit.refund).status is kit.status
        server.at_once = len(server.answer) - 4   # the last 4 bytes in 0.8 s: in time
        start = time.monotonic()
        assert adapter.query(kit.refund).status is kit.status
        assert 0.7 <= time.monotonic() - start < 2.0
        time.sleep(max(0.0, start + 2.3 - time.monotonic()))   # past that call's deadline
        server.at_once = None
        # Its watchdog had nothing left to cut: the (pooled) connection still answers.
        assert adapter.query(kit.refund).status is kit.status
    assert server.requests == 3 and not server.hangups
    assert server.connections == (1 if kit.pooled else 3)


@pytest.mark.parametrize("route", ROUTES)
def test_a_refused_connection_stays_channel_unavailable(route: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]   # closed below: nothing listens there
    kit = KITS[route]
    with wired(kit, f"http://127.0.0.1:{port}", deadline=2.0) as (_, adapter):
        error, elapsed = _timed(lambda: adapter.submit(kit.refund))
    assert isinstance(error, ChannelUnavailable), error   # provably not sent: resend
    assert error.code == "CONNECT_FAILED" and elapsed < 1.0
