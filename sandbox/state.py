"""The sandbox's one place of state: payments, executed refunds, faults, notifications.

Everything is guarded by one lock; handlers never hold it while stalling or sending.
Ids come from counters and a seeded RNG, so a run with the same seed and the same calls
produces the same ids. ``refunds`` is the truth: a refund enters it only when a channel
*executes* it, and ``executions`` counts how often the same refund number was executed
(a correct client can never push it above 1).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

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
FAULT_KINDS = (*FRAMEWORK_FAULTS, "rate_limited", "abnormal", "bad_signature",
               "duplicate_notification", "out_of_order_notification",
               "missing_from_statement", "duplicate_in_statement", "amount_drift",
               *RESP_CODE_FAULTS, LATENCY, *ALIPAY_GATEWAY_FAULTS, CERT_ROTATED)
# ``download``: fetching a bill file a statement answer pointed at (Alipay's
# bill_download_url, WeChat's /v3/billdownload/file); UnionPay's file comes in the answer.
OPERATIONS = ("refund", "query", "notify", "statement", "download")


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass
class Payment:
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


@dataclass
class Refund:
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
class Notification:
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
    # timestamp and nonce); ``headers`` is used when absent.
    resign: Callable[[bytes], dict[str, str]] | None = None


@dataclass
class Settle:
    """When an accepted refund reaches its final status (configurable per route)."""

    mode: str = "immediate"        # immediate | after_queries | after_seconds
    n: int = 1
    seconds: float = 0.0


class State:
    def __init__(self, seed: int = 0) -> None:
        self.lock = threading.RLock()
        self.seed = seed
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        with self.lock:
            self.seed = self.seed if seed is None else seed
            # Deterministic ids for reproducible runs, not secrets: a seeded PRNG is the point.
            self.rng = random.Random(self.seed)  # noqa: S311
            self.counter = 0
            self.payments: dict[tuple[str, str], Payment] = {}
            self.payments_by_trade: dict[tuple[str, str], Payment] = {}
            self.refunds: dict[tuple[str, str], Refund] = {}
            self.faults: list[Fault] = []
            self.notifications: list[Notification] = []
            self.settle: dict[str, Settle] = {r: Settle() for r in ROUTES}
            self.notify_urls: dict[str, str] = {}
            self.nonces: set[str] = set()
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
                    funding: str | None = None) -> Payment:
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
                              funding=funding)
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
            for n in held:          # out_of_order: the held one goes after this one
                n.hold_back = False
                self.notifications.remove(n)
                self.notifications.append(n)

    def truth(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r.truth() for r in sorted(self.refunds.values(),
                                              key=lambda r: (r.created_at, r.channel_refund_no))]

    def monotonic(self) -> float:
        return time.monotonic()
