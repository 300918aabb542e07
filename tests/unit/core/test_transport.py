"""``gateway.transport``: the deadline guard on socket pairs, and the one failure map.

The routes' clients under a trickled answer are in
``tests/integration/core/test_channel_deadlines.py``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from pydantic import ValidationError

from gateway import transport
from gateway.errors import ChannelUnavailable, OutcomeUnknown
from gateway.settings import GatewaySettings, Timeouts


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(5)   # the "read timeout": far longer than any deadline here
    yield ours, theirs
    ours.close()
    theirs.close()


def test_a_blocked_read_ends_at_the_deadline(pair: tuple[socket.socket, socket.socket]
                                             ) -> None:
    ours, _ = pair
    start = time.monotonic()
    with pytest.raises(transport.DeadlineExceeded) as info, \
            transport.deadline_guard(0.3):
        transport.watch(ours)
        assert ours.recv(10) == b""   # the shutdown reads as the end of the stream...
    # ...which the guard does not take for a whole answer
    assert 0.25 <= time.monotonic() - start < 1.5
    assert info.value.seconds == 0.3


def test_the_deadline_wins_over_the_exception_it_caused(
        pair: tuple[socket.socket, socket.socket]) -> None:
    ours, _ = pair
    with pytest.raises(transport.DeadlineExceeded) as info, transport.deadline_guard(0.2):
        transport.watch(ours)
        if not ours.recv(10):
            raise ConnectionResetError("peer gone")
    assert isinstance(info.value.__cause__, ConnectionResetError)


def test_a_connect_that_never_happened_keeps_its_own_error() -> None:
    with pytest.raises(transport.ConnectFailed), transport.deadline_guard(0.05):
        time.sleep(0.2)
        raise transport.ConnectFailed("connect timeout")


def test_a_finished_call_leaves_its_sockets_alone(pair: tuple[socket.socket, socket.socket]
                                                  ) -> None:
    ours, theirs = pair
    with transport.deadline_guard(0.2):
        transport.watch(ours)
        theirs.sendall(b"a")
        assert ours.recv(1) == b"a"
    time.sleep(0.4)   # past the deadline of the call that used the socket
    theirs.sendall(b"b")
    assert ours.recv(1) == b"b"   # a pooled connection stays usable


def test_watch_outside_a_call_and_nested_calls(pair: tuple[socket.socket, socket.socket]
                                               ) -> None:
    ours, theirs = pair
    transport.watch(ours)   # no call: nothing to bound
    start = time.monotonic()
    with transport.deadline_guard(5.0):
        # armed later with an earlier deadline: the watchdog wakes for it
        with pytest.raises(transport.DeadlineExceeded), transport.deadline_guard(0.2):
            transport.watch(ours)
            ours.recv(1)
        assert time.monotonic() - start < 1.5
    theirs.close()


def test_many_calls_in_many_threads_each_get_their_own_deadline() -> None:
    results: dict[int, float] = {}

    def call(i: int) -> None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.settimeout(5)
            start = time.monotonic()
            try:
                with transport.deadline_guard(0.1 * (i + 1)):
                    transport.watch(ours)
                    ours.recv(1)
            except transport.DeadlineExceeded:
                results[i] = time.monotonic() - start

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert sorted(results) == list(range(6))
    for i, took in results.items():
        assert 0.1 * (i + 1) - 0.05 <= took < 0.1 * (i + 1) + 1.0, (i, took)


# -- the map ------------------------------------------------------------------------------
def test_deadline_is_outcome_unknown_connect_failure_is_unavailable() -> None:
    err = transport.classify(transport.DeadlineExceeded(2.0), channel="balance",
                             operation="submit", label="wallet")
    assert isinstance(err, OutcomeUnknown) and err.code == "DEADLINE_EXCEEDED"
    assert "2 s deadline" in err.message
    refused = requests.ConnectionError(transport.ConnectFailed("refused"))
    assert transport.never_connected(refused)
    err = transport.classify(refused, channel="balance", operation="submit", label="wallet")
    assert isinstance(err, ChannelUnavailable) and err.code == "CONNECT_FAILED"


# -- settings -----------------------------------------------------------------------------
def test_deadline_defaults_and_settings() -> None:
    assert transport.call_deadline(3, 10) == 15.0
    assert transport.call_deadline(3, 10, 4.5) == 4.5
    assert transport.download_deadline() == 600.0
    assert transport.download_deadline(30) == 30
    t = Timeouts()
    assert t.deadline is None and t.download_deadline is None   # the defaults above
    with pytest.raises(ValidationError):
        Timeouts(deadline=0)
    with pytest.raises(ValidationError):
        Timeouts(download_deadline=-1)


def test_deadlines_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUND_GATEWAY_BALANCE__BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("REFUND_GATEWAY_BALANCE__HMAC_KEY", "k" * 32)
    monkeypatch.setenv("REFUND_GATEWAY_BALANCE__TIMEOUTS__DEADLINE", "4")
    monkeypatch.setenv("REFUND_GATEWAY_BALANCE__TIMEOUTS__DOWNLOAD_DEADLINE", "120")
    settings = GatewaySettings(_env_file=None)
    assert settings.balance is not None
    assert settings.balance.timeouts.deadline == 4.0
    assert settings.balance.timeouts.download_deadline == 120.0
