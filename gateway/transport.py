"""What every channel call shares below the adapters: the total deadline of one call, and
the one map from a failed ``requests`` call to the error tree (WeChat's transport, UnionPay,
the wallet service; Alipay's urllib stack maps its own exceptions but uses the deadline).

Two lessons, both about the connection. httpx's (STYLE.md): only a connection that was
never established proves the request was not sent (``ChannelUnavailable``: resend at
once); anything after connecting may have been processed (``OutcomeUnknown``: query
first). And a read timeout bounds each socket read, not the answer: one byte every
read-timeout-minus-a-bit holds a call for as long as the sender likes (issue 16 #5). So
each call runs under a ``deadline_guard``: a shared watchdog thread shuts the call's
sockets down once its deadline passes, which ends any blocked read or write at once
(TLS handshake included), and the call raises ``DeadlineExceeded``.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Final

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from gateway.errors import ChannelError, ChannelUnavailable, OutcomeUnknown

# Defaults of the settings' ``timeouts`` block (README, settings table): a call may take
# connect + read timeout + this margin in all; a statement file download this long.
DEADLINE_MARGIN: Final = 2.0
DOWNLOAD_DEADLINE: Final = 600.0
_CHUNK: Final = 64 * 1024
# Connections kept open per channel host. requests keeps 10 by default and closes any
# further one after its call, so the resolver's concurrent checks (64 by default) and a
# refund service's threads would open a new connection (a TLS handshake) for most calls.
POOL_SIZE: Final = 64


def call_deadline(connect: float, read: float, deadline: float | None = None) -> float:
    """Seconds one call may take in all: the setting, else connect + read + margin."""
    return deadline if deadline is not None else connect + read + DEADLINE_MARGIN


def download_deadline(deadline: float | None = None) -> float:
    """Seconds one statement/bill download may take in all: the setting, else 600."""
    return deadline if deadline is not None else DOWNLOAD_DEADLINE


class ConnectFailed(OSError):
    """Raised from a connection's ``connect()``: nothing of the request left this process."""


class DeadlineExceeded(requests.RequestException):
    """The call's deadline passed after connecting; whatever arrived is abandoned."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no complete answer within the {seconds:g} s deadline")
        self.seconds = seconds


class AnswerTooLarge(Exception):
    """The answer (declared or read) is above the caller's limit; it was not kept."""

    def __init__(self, http_status: int, headers: Mapping[str, str], limit: int) -> None:
        super().__init__(f"answer larger than {limit} bytes")
        self.http_status = http_status
        self.headers = headers
        self.limit = limit


# -- the deadline -------------------------------------------------------------------------
class _Guard:
    """One call's deadline and the sockets it has used. Each socket is watched through a
    duplicate descriptor (``shutdown`` acts on the connection, whichever descriptor names
    it), so the watchdog can end a TLS handshake whose raw socket is already detached, and
    never touches a descriptor number the call has closed and another thread reused."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.fired = False
        self.done = False
        self._lock = threading.Lock()
        self._watched: list[tuple[socket.socket, socket.socket]] = []

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self.done or any(s is sock for s, _ in self._watched):
                return
            try:
                shadow = socket.socket(sock.family, sock.type, sock.proto,
                                       fileno=os.dup(sock.fileno()))
            except OSError:   # already closed: nothing left to bound
                return
            self._watched.append((sock, shadow))
            if self.fired:
                _shutdown(shadow)

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            for _, shadow in self._watched:
                _shutdown(shadow)

    def finish(self) -> None:
        with self._lock:
            self.done = True
            watched, self._watched = self._watched, []
        for _, shadow in watched:
            shadow.close()


def _shutdown(sock: socket.socket) -> None:
    with suppress(OSError):   # not connected any more
        sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread firing guards at their deadline (a heap; finished guards are
    dropped when they reach the top). Started on first use, again after a fork."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Guard]] = []
        self._seq = itertools.count()
        threading.Thread(target=self._run, name="channel-deadlines", daemon=True).start()

    def arm(self, guard: _Guard) -> None:
        with self._cond:
            heapq.heappush(self._heap, (guard.at, next(self._seq), guard))
            if self._heap[0][2] is guard:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][2].done:
                        heapq.heappop(self._heap)
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    if wait is not None and wait <= 0:
                        guard = heapq.heappop(self._heap)[2]
                        break
                    self._cond.wait(wait)
            guard.fire()


_local = threading.local()
_dog_lock = threading.Lock()
_dogs: dict[int, _Watchdog] = {}   # by pid: a forked child starts its own thread


def _watchdog() -> _Watchdog:
    with _dog_lock:
        dog = _dogs.get(os.getpid())
        if dog is None:
            _dogs.clear()
            dog = _dogs[os.getpid()] = _Watchdog()
        return dog


@contextmanager
def deadline_guard(seconds: float) -> Iterator[None]:
    """Run one channel call under a total deadline of ``seconds``.

    Sockets connected inside (by a connection of ``session()`` or ``create_connection``)
    are shut down when it passes. Past it the block raises ``DeadlineExceeded`` (from the
    cut-short read's exception, or even after a block that ended normally: a read ended by
    the shutdown looks like the end of an answer without Content-Length). Only an exception
    proving the connection was never made is re-raised as it is.
    """
    guard = _Guard(seconds)
    outer = getattr(_local, "guard", None)
    _local.guard = guard
    _watchdog().arm(guard)
    try:
        yield
    except Exception as exc:
        if guard.fired and not never_connected(exc):
            raise DeadlineExceeded(seconds) from exc
        raise
    finally:
        _local.guard = outer
        guard.finish()
    if guard.fired:
        raise DeadlineExceeded(seconds)


def watch(sock: socket.socket) -> None:
    """Put ``sock`` under the current call's deadline (no-op outside a guard)."""
    guard: _Guard | None = getattr(_local, "guard", None)
    if guard is not None:
        guard.watch(sock)


def create_connection(address: tuple[str, int], timeout: Any = None,
                      source_address: Any = None) -> socket.socket:
    """``socket.create_connection`` for http.client connections, the socket watched."""
    sock = socket.create_connection(address, timeout, source_address)
    watch(sock)
    return sock


# -- requests: a session whose connections are watched ------------------------------------
class _WatchedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        watch(sock)   # before any TLS handshake
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:   # a pooled connection, reused
            watch(self.sock)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(_WatchedHTTPConnection, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS: Final = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):   # SOCKS pools are their own classes
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


def session() -> requests.Session:
    """A pooled session whose sockets ``deadline_guard`` can bound."""
    s = requests.Session()
    adapter = _WatchedAdapter(pool_maxsize=POOL_SIZE)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


@dataclass(frozen=True, slots=True)
class Reply:
    http_status: int
    headers: Mapping[str, str]
    content: bytes


def exchange(session: requests.Session, method: str, url: str, *, connect: float,
             read: float, deadline: float, limit: int | None = None,
             data: Any = None, headers: Mapping[str, str] | None = None) -> Reply:
    """One request and its whole answer within ``deadline`` seconds, at most ``limit``
    bytes of it. Raises ``requests.RequestException`` (``DeadlineExceeded`` included:
    ``classify`` it) or ``AnswerTooLarge``; no redirect is followed."""
    with deadline_guard(deadline):
        resp = session.request(method, url, data=data, headers=headers, stream=True,
                               timeout=(min(connect, deadline), read),
                               allow_redirects=False)
        with resp:   # closes the connection unless the answer was read to its end
            content = _read(resp, limit)
    return Reply(resp.status_code, resp.headers, content)


def _read(resp: requests.Response, limit: int | None) -> bytes:
    declared = resp.headers.get("Content-Length")
    if limit is not None and declared and declared.isdigit() and int(declared) > limit:
        raise AnswerTooLarge(resp.status_code, resp.headers, limit)
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_content(_CHUNK):
        size += len(chunk)
        if limit is not None and size > limit:
            raise AnswerTooLarge(resp.status_code, resp.headers, limit)
        chunks.append(chunk)
    return b"".join(chunks)


# -- the map ------------------------------------------------------------------------------
def never_connected(exc: BaseException) -> bool:
    """True when the connection was never established (so nothing was sent)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, NewConnectionError | ConnectTimeoutError | ConnectionRefusedError
                      | ConnectFailed):
            return True
        reason = getattr(cause, "reason", None)
        if isinstance(reason, BaseException):
            cause = reason
            continue
        args = getattr(cause, "args", ())
        nested = next((a for a in args if isinstance(a, BaseException)), None)
        cause = nested or cause.__cause__ or cause.__context__
    return False


def deadline_error(exc: DeadlineExceeded, *, channel: str, operation: str,
                   label: str) -> OutcomeUnknown:
    """The request was sent (or may have been): query first."""
    return OutcomeUnknown(f"{label}: {exc}", channel=channel, operation=operation,
                          code="DEADLINE_EXCEEDED")


def classify(exc: requests.RequestException, *, channel: str, operation: str,
             label: str) -> ChannelError:
    """The error to raise for ``exc``; ``label`` names the service in messages."""
    if isinstance(exc, DeadlineExceeded):
        return deadline_error(exc, channel=channel, operation=operation, label=label)
    if isinstance(exc, requests.ConnectTimeout):
        return ChannelUnavailable(f"{label} connect timeout", channel=channel,
                                  operation=operation, code="CONNECT_TIMEOUT")
    if isinstance(exc, requests.ConnectionError):
        if never_connected(exc):
            return ChannelUnavailable(f"{label} connection refused", channel=channel,
                                      operation=operation, code="CONNECT_FAILED")
        return OutcomeUnknown(f"{label} connection lost after sending", channel=channel,
                              operation=operation, code="CONNECTION_LOST")
    if isinstance(exc, requests.Timeout):
        return OutcomeUnknown(f"{label} read timeout", channel=channel,
                              operation=operation, code="READ_TIMEOUT")
    return OutcomeUnknown(f"{label} transport error: {type(exc).__name__}", channel=channel,
                          operation=operation, code="TRANSPORT")
