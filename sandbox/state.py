"""The sandbox's one place of state: payments, executed refunds, faults, notifications.

Everything is guarded by one lock; handlers never hold it while stalling or sending.
Ids come from counters and a seeded RNG, so a run with the same seed and the same calls
produces the same ids. ``refunds`` is the truth: a refund enters it only when a channel
*executes* it, and ``executions`` counts how often the same refund number was executed
(a correct client can never push it above 1).

With a state file (``State(store=StateFile(path))``, ``sandbox serve --state``) every
change to a payment, refund, notification, replay nonce, the id counter or the config is
written through: releasing the lock (its outermost hold) writes what changed, in one
transaction, before another thread gets it; a restarted sandbox loads it all back.
Faults (and ``cert_rotated``'s certificates) stay in memory: a restart clears them.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from sandbox.state_file import Loaded, StateFile

BEIJING = timezone(timedelta(hours=8))
ROUTES = ("alipay", "wechatpay", "bankcard", "balance")
# Faults about the connection, applied by the server (sandbox/server.py docstring).
FRAMEWORK_FAULTS = ("drop_before_commit", "http_500", "timeout_after_commit",
                    "truncated_body")
STATEMENT_FAULTS = ("missing_from_statement", "duplicate_in_statement", "amount_drift")
# ``latency`` delays answers and stacks with every other fault (sandbox/server.py); it is
# the one kind that may be given for a whole route (operation omitted: ANY_OPERATION) and
# with "count": null (every matching request until reset).
LATENCY = "latency"
ANY_OPERATION = "*"
# Alipay gateway-level errors (CHANNELS-ADDENDUM §6), answered instead of the method's
# own answer, nothing executed (except ``service_unavailable`` with "executed": true);
# what each answers: sandbox/alipay.py "Gateway errors". Other routes ignore them.
ALIPAY_GATEWAY_FAULTS = ("invalid_signature", "invalid_app_id", "missing_parameter",
                         "invalid_auth_token", "insufficient_permissions",
                         "service_unavailable")
# UnionPay answer codes the bank-card sandbox can be told to answer with, one kind per
# code of CHANNELS-ADDENDUM §2 ("resp_code_A6" ...); what each does: sandbox/unionpay.py
# "Fault kinds resp_code_<code>". Other routes ignore them.
# The addendum's final-failure row too: a refund refused with that code, nothing executed.
UNIONPAY_FAILURE_CODES = ("01", "10", "11", "13", "30", "31", "32", "33", "35", "36", "38",
                          "39", "45", "60", "61", "62", "63", "99")
UNIONPAY_CODES = ("A6", "02", "03", "04", "05", "06", "12", "34", "37",
                  *UNIONPAY_FAILURE_CODES)
RESP_CODE_FAULTS = tuple(f"resp_code_{code}" for code in UNIONPAY_CODES)
# ``cert_rotated``: the channel signs from then on with a new certificate (Alipay's
# certificate-mode app: a new Alipay certificate; UnionPay: a new signPubKeyCert); what
# each does with it and its params: sandbox/alipay.py, sandbox/unionpay.py "Certificates".
CERT_ROTATED = "cert_rotated"
# ``serial_switch`` (WeChat, sandbox/wechatpay.py): an answer or notification signed by the
# merchant's other verifier, the platform certificate instead of the public key or back.
SERIAL_SWITCH = "serial_switch"
FAULT_KINDS = (*FRAMEWORK_FAULTS, "rate_limited", "abnormal", "bad_signature",
               "duplicate_notification", "out_of_order_notification",
               "missing_from_statement", "duplicate_in_statement", "amount_drift",
               *RESP_CODE_FAULTS, LATENCY, *ALIPAY_GATEWAY_FAULTS, CERT_ROTATED,
               SERIAL_SWITCH)
# ``download``: fetching a bill file a statement answer pointed at (Alipay's
# bill_download_url, WeChat's /v3/billdownload/file); UnionPay's file comes in the answer.
# ``certificates``: WeChat's platform-certificate download (GET /v3/certificates).
OPERATIONS = ("refund", "query", "notify", "statement", "download", "certificates")


def now_utc() -> datetime:
    return datetime.now(UTC)


class _Kept:
    """A payment, refund or notification the state file keeps: setting an attribute marks
    its row for the next write (``_record`` is set when it enters the state). ``extra``
    is wrapped so that setting one of its items marks the row too."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "extra" and isinstance(value, dict) and \
                not (isinstance(value, _Items) and value._owner is self):
            value = _Items(value, owner=self)
        object.__setattr__(self, name, value)
        self._changed()

    def _changed(self) -> None:
        record = self.__dict__.get("_record")
        if record is not None:
            record(self)


class _Items(dict[str, Any]):
    """A kept object's ``extra``: any change marks the owner's row."""

    def __init__(self, *args: Any, owner: _Kept | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner

    def _changed(self) -> None:
        if self._owner is not None:
            self._owner._changed()

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._changed()

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._changed()

    def pop(self, key: str, *default: Any) -> Any:
        value = super().pop(key, *default)
        self._changed()
        return value

    def setdefault(self, key: str, default: Any = None) -> Any:
        value = super().setdefault(key, default)
        self._changed()
        return value


K = TypeVar("K")
V = TypeVar("V")
Touch = Callable[[str, Any, Any], None]


class _Rows(dict[K, V]):
    """``payments`` and ``refunds``: an item set gives the object its ``_record`` and
    marks its row; an item deleted marks the row for deletion."""

    def __init__(self, table: str, touch: Touch) -> None:
        super().__init__()
        self._table, self._touch = table, touch

    def __setitem__(self, key: K, value: V) -> None:
        replaced = self.get(key)
        if replaced is not None and replaced is not value:   # its changes are no longer ours
            object.__setattr__(replaced, "_record", None)
        super().__setitem__(key, value)
        object.__setattr__(value, "_record", functools.partial(self._touch, self._table, key))
        self._touch(self._table, key, value)

    def __delitem__(self, key: K) -> None:
        object.__setattr__(self[key], "_record", None)
        super().__delitem__(key)
        self._touch(self._table, key, None)

    def pop(self, key: K, *default: Any) -> Any:
        if key in self:
            object.__setattr__(self[key], "_record", None)
            self._touch(self._table, key, None)
        return super().pop(key, *default)


class _Nonces(set[str]):
    """Replay nonces (the wallet's X-Nonce): an added one is written too."""

    def __init__(self, touch: Touch) -> None:
        super().__init__()
        self._touch = touch

    def add(self, nonce: str) -> None:
        super().add(nonce)
        self._touch("nonces", nonce, True)


@dataclass
class Payment(_Kept):
    route: str
    merchant_order_no: str
    channel_trade_no: str
    amount_fen: int
    created_at: datetime
    user_id: str
    card_no: str
    refunded_fen: int = 0
    # How the buyer paid, when the creator said (e.g. "bankcard": Alipay then refunds
    # through a bank leg with deposit_back_info); None = the channel's default.
    funding: str | None = None
    # Which of the channel's merchants took it, when not its default one (WeChat: a
    # service provider's sub_mchid, sandbox/wechatpay.py); None = the default merchant.
    merchant: str | None = None


@dataclass
class Refund(_Kept):
    route: str
    channel_refund_no: str
    channel_refund_id: str
    merchant_order_no: str
    channel_trade_no: str
    amount_fen: int
    status: str                    # PROCESSING | SUCCESS | ABNORMAL | CLOSED | FAILED
    created_at: datetime
    request_fingerprint: str
    succeeded_at: datetime | None = None
    executions: int = 1
    queries: int = 0
    abnormal: bool = False         # the abnormal fault hit it: fails after acceptance
    notify_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def truth(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("created_at", "succeeded_at"):
            data[key] = data[key].isoformat() if data[key] else None
        data.pop("request_fingerprint")
        return data


@dataclass
class Fault:
    route: str
    operation: str
    kind: str
    remaining: int | None          # None: every matching request, until reset
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.remaining is None or self.remaining > 0


@dataclass
class Notification(_Kept):
    route: str
    url: str | None
    headers: dict[str, str]
    body: bytes
    channel_refund_no: str
    attempts: int = 0
    next_at: float = 0.0
    delivered: bool = False
    hold_back: bool = False        # out_of_order: released after the next one
    # Fresh headers for each delivery attempt (e.g. WeChat signs every attempt with a new
    # timestamp and nonce); ``headers`` is used when absent. Not kept by a state file: a
    # restored notification goes out with the headers it was queued with.
    resign: Callable[[bytes], dict[str, str]] | None = None


@dataclass
class Settle:
    """When an accepted refund reaches its final status (configurable per route)."""

    mode: str = "immediate"        # immediate | after_queries | after_seconds
    n: int = 1
    seconds: float = 0.0


class _WritingLock:
    """The state's re-entrant lock. Its outermost release first calls ``write`` (the
    state file's write-through), so what changed under it is written before another
    thread sees it, and before the handler that changed it answers."""

    def __init__(self, write: Callable[[], None]) -> None:
        self._lock = threading.RLock()
        self._depth = 0            # only the holder changes it
        self._write = write

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        self._depth += got
        return got

    def release(self) -> None:
        try:
            if self._depth == 1:
                self._write()
        finally:
            self._depth -= 1
            self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class State:
    def __init__(self, seed: int = 0, store: StateFile | None = None) -> None:
        """``store``: the state file to write through to and load from (None: memory)."""
        self._store: StateFile | None = None
        self._dirty: dict[tuple[str, Any], Any] = {}     # (table, key) -> object | None
        self._dirty_lock = threading.Lock()
        self._cleared = False
        self._generation = 0
        self._written = ""
        self.lock = _WritingLock(self._write)
        self.seed = seed
        self.reset(seed)
        if store is not None:
            with self.lock:
                self._store = store
                self._restore(store.load())

    def reset(self, seed: int | None = None) -> None:
        with self.lock:
            self.seed = self.seed if seed is None else seed
            # Deterministic ids for reproducible runs, not secrets: a seeded PRNG is the point.
            self.rng = random.Random(self.seed)  # noqa: S311
            self.counter = 0
            self._notes = 0
            with self._dirty_lock:              # what was marked belongs to the old run
                self._generation += 1
                self._dirty, self._cleared = {}, True
            touch = functools.partial(self._touch, self._generation)
            self.payments: dict[tuple[str, str], Payment] = _Rows("payments", touch)
            self.payments_by_trade: dict[tuple[str, str], Payment] = {}
            self.refunds: dict[tuple[str, str], Refund] = _Rows("refunds", touch)
            self.faults: list[Fault] = []
            self.notifications: list[Notification] = []
            self.settle: dict[str, Settle] = {r: Settle() for r in ROUTES}
            self.notify_urls: dict[str, str] = {}
            self.nonces: set[str] = _Nonces(touch)
            # A channel's signing certificates after cert_rotated, by route (a channel's
            # own object; empty again on reset: the run's first certificates sign again).
            self.certificates: dict[str, Any] = {}
            # Channel rules a test turns on through /_sandbox/config "limits" (off by
            # default: the project's tests refund one order in quick succession), e.g.
            # WeChat's refunds of one order >= 60 s apart (sandbox/wechatpay.py).
            self.limits: dict[str, dict[str, float]] = {r: {} for r in ROUTES}
            # Jitter of the latency fault: its own seeded RNG, so delays never shift ids.
            self.latency_rng = random.Random(self.seed + 1)  # noqa: S311 - not a secret

    def next_id(self, width: int = 10) -> str:
        with self.lock:
            self.counter += 1
            return f"{self.counter:0{width}d}"

    def add_payment(self, route: str, amount_fen: int, user_id: str | None = None,
                    funding: str | None = None, merchant: str | None = None
                    ) -> Payment:
        with self.lock:
            n = self.next_id(8)
            day = datetime.now(BEIJING).strftime("%Y%m%d")
            trade = {"alipay": f"{day}2200140{n}{self.rng.randrange(10**6):06d}",
                     "wechatpay": f"42000{day}{n}{self.rng.randrange(10**5):05d}",
                     # UnionPay queryId: 21 digits (an21, ZM field 10; addendum §1)
                     "bankcard": f"{day}{n}{self.rng.randrange(10**5):05d}",
                     "balance": f"W{day}{n}"}[route]
            payment = Payment(route=route, merchant_order_no=f"ORD{day}{n}",
                              channel_trade_no=trade, amount_fen=amount_fen,
                              created_at=now_utc(), user_id=user_id or f"user{n}",
                              card_no=f"62220210{self.rng.randrange(10**8):08d}",
                              funding=funding, merchant=merchant)
            self.payments[(route, payment.merchant_order_no)] = payment
            self.payments_by_trade[(route, trade)] = payment
            return payment

    def find_payment(self, route: str, *, trade_no: str | None = None,
                     order_no: str | None = None) -> Payment | None:
        with self.lock:
            if trade_no:
                found = self.payments_by_trade.get((route, trade_no))
                if found is not None:
                    return found
            if order_no:
                return self.payments.get((route, order_no))
            return None

    def add_fault(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    def take_fault(self, route: str, operation: str,
                   kinds: tuple[str, ...] | None = None) -> Fault | None:
        """Consume one matching fault (oldest first). A fault given for ANY_OPERATION
        matches every operation; one with ``remaining`` None is never used up."""
        with self.lock:
            for fault in self.faults:
                if fault.route == route and fault.operation in (operation, ANY_OPERATION) \
                        and fault.live and (kinds is None or fault.kind in kinds):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
            return None

    def latency_seconds(self, fault: Fault) -> float:
        """The delay a ``latency`` fault asks for: ``ms`` +- a uniform ``jitter_ms``,
        never negative."""
        ms = float(fault.params.get("ms", 0))
        jitter = float(fault.params.get("jitter_ms", 0))
        if jitter > 0:
            with self.lock:
                ms += self.latency_rng.uniform(-jitter, jitter)
        return max(ms, 0.0) / 1000.0

    def settle_due(self, refund: Refund) -> bool:
        """Whether an accepted refund has reached its final status by now."""
        rule = self.settle[refund.route]
        if rule.mode == "after_queries":
            return refund.queries >= rule.n
        if rule.mode == "after_seconds":
            return (now_utc() - refund.created_at).total_seconds() >= rule.seconds
        return True

    def queue_notification(self, note: Notification) -> None:
        with self.lock:
            held = [n for n in self.notifications if n.hold_back and not n.delivered]
            self.notifications.append(note)
            self._keep_note(note)
            for n in held:          # out_of_order: the held one goes after this one
                n.hold_back = False
                self.notifications.remove(n)
                self.notifications.append(n)
                self._keep_note(n)

    def _keep_note(self, note: Notification) -> None:
        """Give a notification the next row (a moved one leaves its old row): rows load
        in the order they were written, which is the queue's order."""
        old = note.__dict__.get("_record")
        if old is not None:
            old(None)
        self._notes += 1
        record = functools.partial(self._touch, self._generation, "notifications", self._notes)
        object.__setattr__(note, "_record", record)
        record(note)

    # -- the state file -----------------------------------------------------------------
    def flush(self) -> None:
        """Write what changed (outside the lock too) to the state file now."""
        with self.lock:
            pass                    # the outermost release writes

    def close(self) -> None:
        """Write what is left and close the state file (no-op without one)."""
        with self.lock:
            self._write()
            store, self._store = self._store, None
        if store is not None:
            store.close()

    def _touch(self, generation: int, table: str, key: Any, obj: Any) -> None:
        with self._dirty_lock:
            if generation == self._generation and self._store is not None:
                self._dirty[(table, key)] = obj

    def _saved(self) -> str:
        from sandbox.state_file import dumps  # noqa: PLC0415 - the file is optional

        return dumps({"seed": self.seed, "counter": self.counter, "notes": self._notes,
                      "settle": {r: asdict(rule) for r, rule in self.settle.items()},
                      "notify_urls": self.notify_urls, "limits": self.limits})

    def _write(self) -> None:
        """One transaction with every marked row and the counters and config (the lock's
        outermost release calls it). On failure the marks stay for the next write."""
        store = self._store
        if store is None:
            return
        from sandbox.state_file import dumps  # noqa: PLC0415

        saved = self._saved()
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, {}
            clear, self._cleared = self._cleared, False
        if not dirty and not clear and saved == self._written:
            return
        try:
            rows = {(table, dumps(key)): None if obj is None else dumps(_row(obj))
                    for (table, key), obj in dirty.items()}
            store.write(rows, {"state": saved}, clear=clear)
        except BaseException:
            with self._dirty_lock:
                self._dirty = {**dirty, **self._dirty}
                self._cleared = self._cleared or clear
            raise
        self._written = saved

    def _restore(self, loaded: Loaded) -> None:
        """Build the state back from a state file (nothing marked: it is all there)."""
        saved = loaded.state
        if saved is None:           # a new file
            return
        self.seed, self.counter, self._notes = saved["seed"], saved["counter"], saved["notes"]
        self.settle = {r: Settle(**rule) for r, rule in saved["settle"].items()}
        self.notify_urls = dict(saved["notify_urls"])
        self.limits = {r: {} for r in ROUTES} | saved["limits"]
        # New ids after a restart differ from the ones before (the counter is kept) and
        # are still reproducible: the RNGs restart from (seed, counter).
        self.rng = random.Random(f"{self.seed}:{self.counter}")  # noqa: S311 - not a secret
        self.latency_rng = random.Random(f"{self.seed}:{self.counter}:latency")  # noqa: S311
        for key, data in loaded.rows["payments"]:
            payment = self.payments[key] = _build(Payment, data)
            self.payments_by_trade[(payment.route, payment.channel_trade_no)] = payment
        for key, data in loaded.rows["refunds"]:
            self.refunds[key] = _build(Refund, data)
        for key, data in loaded.rows["notifications"]:
            note = _build(Notification, data)
            object.__setattr__(note, "_record", functools.partial(
                self._touch, self._generation, "notifications", key))
            self.notifications.append(note)
        for nonce, _ in loaded.rows["nonces"]:
            set.add(self.nonces, nonce)
        with self._dirty_lock:
            self._dirty, self._cleared = {}, False
        self._written = self._saved()

    def truth(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r.truth() for r in sorted(self.refunds.values(),
                                              key=lambda r: (r.created_at, r.channel_refund_no))]

    def monotonic(self) -> float:
        return time.monotonic()


# Not kept: ``resign`` is code (a restored notification is sent with its headers) and
# ``next_at`` is a monotonic time of this process (a restored one is due at once).
_NOT_KEPT = ("resign", "next_at")
T = TypeVar("T", Payment, Refund, Notification)


def _row(obj: Any) -> Any:
    """A row's data: a kept object's fields (dicts copied whole, under the GIL, so a
    change made outside the lock meanwhile cannot break the copy), or a nonce's True."""
    if obj is True:
        return True
    return {f.name: dict.copy(value) if isinstance(value, dict) else value
            for f in fields(obj) if f.name not in _NOT_KEPT
            for value in (getattr(obj, f.name),)}


def _build(cls: type[T], data: dict[str, Any]) -> T:
    names = {f.name for f in fields(cls)} - set(_NOT_KEPT)
    return cls(**{k: v for k, v in data.items() if k in names})
