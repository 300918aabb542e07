"""The ``latency`` and ``truncated_body`` faults (sandbox/server.py) over real sockets.

Latency: fixed and jittered delays, per operation or for a whole route, a count or
``null`` (always), before the channel (the refund executes late) or after it (executed
at once, the answer waits), stacked on another fault, and concurrent requests delayed in
parallel, not one after another (the performance work drives it with many clients).
Truncated bodies: the full ``Content-Length`` is announced and half the bytes arrive.
"""

from __future__ import annotations

import http.client
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from alipay import AliPay  # noqa: TID251 - the real SDK is the point

from sandbox.server import SandboxServer
from sandbox.state import FAULT_KINDS, FRAMEWORK_FAULTS
from tests.sandbox import test_alipay
from tests.sandbox.test_alipay import client, payment, query, refund, truth

# The plugin's sandbox, reset per test, and the real SDK configured for it.
sandbox, alipay = test_alipay.sandbox, test_alipay.alipay

# A request the Alipay channel classifies as operation "refund" and answers at once
# (unsigned: isv.missing-signature): the cheapest way to time the server itself.
BARE_REFUND = "/gateway.do?method=alipay.trade.refund"
BARE_QUERY = "/gateway.do?method=alipay.trade.fastpay.refund.query"


def fault(sandbox: SandboxServer, kind: str, operation: str | None = "refund",
          count: int | None = 1, route: str = "alipay", **params: Any) -> requests.Response:
    body: dict[str, Any] = {"route": route, "kind": kind, "count": count, **params}
    if operation is not None:
        body["operation"] = operation
    return requests.post(sandbox.url + "/_sandbox/faults", json=body, timeout=5)


def timed_get(sandbox: SandboxServer, path: str) -> float:
    started = time.monotonic()
    r = requests.get(sandbox.url + path, timeout=10)
    assert r.status_code == 200
    return time.monotonic() - started


def test_both_kinds_are_listed() -> None:
    assert {"latency", "truncated_body"} <= set(FAULT_KINDS)
    assert "truncated_body" in FRAMEWORK_FAULTS


def test_fixed_latency_delays_that_operation_only(sandbox: SandboxServer) -> None:
    assert fault(sandbox, "latency", ms=300, count=2).ok
    assert timed_get(sandbox, BARE_QUERY) < 0.2           # another operation: not delayed
    assert 0.3 <= timed_get(sandbox, BARE_REFUND) < 0.6
    assert 0.3 <= timed_get(sandbox, BARE_REFUND) < 0.6
    assert timed_get(sandbox, BARE_REFUND) < 0.2          # count 2: used up


def test_jitter_spreads_delays_within_its_bounds(sandbox: SandboxServer) -> None:
    assert fault(sandbox, "latency", ms=200, jitter_ms=150, count=None).ok
    delays = [timed_get(sandbox, BARE_REFUND) for _ in range(8)]
    assert all(0.05 <= d < 0.45 for d in delays), delays
    assert max(delays) - min(delays) > 0.03, delays       # random, not one fixed value


def test_null_count_is_every_request_until_reset(sandbox: SandboxServer) -> None:
    assert fault(sandbox, "latency", ms=150, count=None).ok
    assert all(timed_get(sandbox, BARE_REFUND) >= 0.15 for _ in range(4))
    [listed] = requests.get(sandbox.url + "/_sandbox/faults", timeout=5).json()["faults"]
    assert (listed["kind"], listed["remaining"]) == ("latency", None)   # still live
    requests.post(sandbox.url + "/_sandbox/reset", json={}, timeout=5)
    assert timed_get(sandbox, BARE_REFUND) < 0.15


def test_a_whole_route_when_no_operation_is_given(sandbox: SandboxServer) -> None:
    assert fault(sandbox, "latency", operation=None, ms=200, count=None).ok
    assert timed_get(sandbox, BARE_REFUND) >= 0.2
    assert timed_get(sandbox, BARE_QUERY) >= 0.2
    # another route is not slowed
    started = time.monotonic()
    requests.get(sandbox.url + "/v3/refund/domestic/refunds/R1", timeout=5)
    assert time.monotonic() - started < 0.15


def test_concurrent_requests_are_delayed_in_parallel(sandbox: SandboxServer) -> None:
    """40 clients at once under a 400 ms latency: about 400 ms in all, not 40 x 400 ms
    (one thread per connection; no lock held while delaying; a deep listen backlog)."""
    assert fault(sandbox, "latency", ms=400, count=None).ok
    done: list[float] = []
    barrier = threading.Barrier(40)

    def one() -> None:
        barrier.wait()
        done.append(timed_get(sandbox, BARE_REFUND))

    threads = [threading.Thread(target=one) for _ in range(40)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    elapsed = time.monotonic() - started
    assert len(done) == 40 and min(done) >= 0.4
    assert elapsed < 1.6, f"40 delayed requests took {elapsed:.2f} s: serialised?"


def test_before_the_channel_the_refund_executes_late(sandbox: SandboxServer) -> None:
    """``before`` (default): a client that gives up at 0.3 s left before the refund ran;
    it runs all the same when the delay is over (a request in flight)."""
    pay = payment(sandbox)
    assert fault(sandbox, "latency", ms=1000).ok
    with pytest.raises(OSError):        # urllib's socket.timeout is an OSError
        refund(client(sandbox, timeout=0.3), pay)
    assert truth(sandbox) == []
    deadline = time.monotonic() + 3
    while not truth(sandbox) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r["executions"] for r in truth(sandbox)] == [1]


def test_after_the_channel_the_refund_executed_and_the_answer_waits(
        sandbox: SandboxServer, alipay: AliPay) -> None:
    pay = payment(sandbox)
    assert fault(sandbox, "latency", ms=1000, where="after").ok
    started = time.monotonic()
    with pytest.raises(OSError):
        refund(client(sandbox, timeout=0.3), pay)
    assert time.monotonic() - started < 0.9
    assert [r["executions"] for r in truth(sandbox)] == [1]    # before the answer came
    assert query(alipay, pay)["refund_status"] == "REFUND_SUCCESS"


def test_latency_stacks_with_another_fault(sandbox: SandboxServer) -> None:
    assert fault(sandbox, "latency", ms=250).ok
    assert fault(sandbox, "http_500").ok
    started = time.monotonic()
    r = requests.get(sandbox.url + BARE_REFUND, timeout=5)
    assert r.status_code == 500 and time.monotonic() - started >= 0.25


@pytest.mark.parametrize("body", [
    {"kind": "latency"},                                  # no ms
    {"kind": "latency", "ms": -5},
    {"kind": "latency", "ms": 10, "jitter_ms": "x"},
    {"kind": "latency", "ms": 10, "where": "during"},
    {"kind": "latency", "ms": 10, "count": 0},
    {"kind": "truncated_body", "count": True},
])
def test_bad_fault_bodies_are_refused(sandbox: SandboxServer, body: dict[str, Any]) -> None:
    r = requests.post(sandbox.url + "/_sandbox/faults",
                      json={"route": "alipay", "operation": "refund", **body}, timeout=5)
    assert r.status_code == 400


# -- truncated bodies ------------------------------------------------------------------------
def raw_get(sandbox: SandboxServer, path: str) -> tuple[int, int, bytes]:
    """(status, announced Content-Length, the bytes that arrived before the close)."""
    conn = http.client.HTTPConnection(urlsplit(sandbox.url).netloc, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        announced = int(resp.headers["Content-Length"])
        try:
            body = resp.read()
        except http.client.IncompleteRead as short:
            body = short.partial
        return resp.status, announced, body
    finally:
        conn.close()


def test_truncated_body_sends_half_of_the_announced_length(sandbox: SandboxServer) -> None:
    whole = raw_get(sandbox, BARE_REFUND)
    assert fault(sandbox, "truncated_body").ok
    status, announced, body = raw_get(sandbox, BARE_REFUND)
    assert (status, announced) == (200, len(whole[2])) and announced > 20
    assert body == whole[2][:announced // 2]
    assert raw_get(sandbox, BARE_REFUND) == whole          # count 1: used up


def test_a_truncated_refund_answer_was_executed(sandbox: SandboxServer,
                                                alipay: AliPay) -> None:
    pay = payment(sandbox)
    assert fault(sandbox, "truncated_body").ok
    with pytest.raises(http.client.IncompleteRead):
        refund(alipay, pay)
    assert [r["executions"] for r in truth(sandbox)] == [1]
    assert query(alipay, pay)["refund_status"] == "REFUND_SUCCESS"


def test_a_bill_download_can_be_cut(sandbox: SandboxServer, alipay: AliPay) -> None:
    """Operation ``download``: the bill file a bill_download_url points at."""
    refund(alipay, payment(sandbox))
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 8 * 3600))
    link = alipay.server_api("alipay.data.dataservice.bill.downloadurl.query",
                             {"bill_type": "trade", "bill_date": day})["bill_download_url"]
    path = link[len(sandbox.url):]
    assert fault(sandbox, "truncated_body", operation="download").ok
    status, announced, body = raw_get(sandbox, path)
    assert status == 200 and len(body) == announced // 2 and announced > 100
    status, announced, whole = raw_get(sandbox, path)
    assert len(whole) == announced and whole.startswith(body) and whole[:2] == b"PK"
