"""Prometheus metrics (prometheus_client, the ``web`` extra): what operations watch.

Two sources, because a gateway runs as several processes (refund service, resolver,
web app) that share one database:
* **the store**, read at scrape time by ``StoreCollector``, so every process's
  ``/metrics`` shows the same whole picture: refunds by route, account and status;
  refunds whose outcome is unknown and the age of the oldest; the resolver's lag (the
  oldest check that is due); refunds paid after their amount was released; open
  reconciliation discrepancies by class; receipts issued; relay deliveries by status.
  Tables another package owns (``recon_items``, ``receipt_versions``) are read by name
  when they exist, so the core imports nothing of theirs.
* **this process**, observed by ``instrument(gateway)`` (``gateway.instrument``): channel
  call latency by route, operation and outcome; notifications accepted and rejected by
  reason; refund operations by outcome.

Nothing here changes what the gateway does; a database that cannot be read at scrape
time is ``refund_gateway_store_up 0``, never a failed scrape.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, column, func, inspect, literal, select, table

from gateway.clock import Clock, utcnow
from gateway.instrument import Call, observe_gateway
from gateway.models import ChannelStatus, RefundStatus, Route
from gateway.service import RefundGateway
from gateway.store import RefundStore
from gateway.store.schema import attempts, payments, refunds

log = structlog.get_logger("gateway.metrics")

PREFIX = "refund_gateway"
# Channel calls: a wallet answers in ~10 ms, a bank in seconds; deadlines cap at 600 s.
CHANNEL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 600.0)
_NOT_FINAL = [RefundStatus.PENDING.value, RefundStatus.PROCESSING.value]
# An attempt's outcome is a ChannelStatus value when the channel answered; an error
# class name (OutcomeUnknown, ChannelUnavailable, ...) when it did not.
_ANSWERED = [s.value for s in ChannelStatus]


@dataclass(frozen=True, slots=True)
class StoreFigures:
    """What the store says at one moment (``read_store_figures``)."""

    refunds: dict[tuple[str, str, str], int]        # (route, account, status) -> count
    unknown: dict[str, int]                         # route -> refunds, outcome unknown
    oldest_unknown_seconds: float                   # 0 when there is none
    due: int                                        # checks due now
    resolver_lag_seconds: float                     # age of the oldest due check
    paid_after_release: int
    discrepancies: dict[str, int] | None            # open items by class (None: no table)
    receipts: int | None                            # receipt versions (None: no table)
    relay: dict[tuple[str, str], int] | None        # (relay, status) -> deliveries


def _aware(value: Any) -> datetime | None:
    """An aggregate over a UTC column (MIN keeps the column's type on every backend;
    text is parsed in case a driver hands it back raw)."""
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def _group_counts(conn: Connection, query: Any) -> list[Any]:
    return list(conn.execute(query).all())


def read_store_figures(store: RefundStore, now: datetime) -> StoreFigures:
    """One read of the store's operational figures (a handful of grouped counts)."""
    r, p, a = refunds.c, payments.c, attempts.c
    account = p.get("merchant_account")     # named accounts, once the schema has them
    account_col = account if account is not None else literal("default")
    with store.engine.connect() as conn:
        by_status = {
            (row[0], str(row[1] or "default"), row[2]): int(row[3])
            for row in _group_counts(conn, select(
                r.route, account_col, r.status, func.count()).select_from(
                refunds.join(payments, p.id == r.payment_id)).group_by(
                r.route, account_col, r.status))}
        # Outcome unknown: not final, and the last channel call did not establish what
        # happened (an error, not an answer), or no call was recorded at all.
        last = (select(a.refund_id, func.max(a.id).label("last_id"))
                .group_by(a.refund_id).subquery())
        last_attempt = attempts.alias("last_attempt")
        unknown_q = (
            select(r.route, func.count(), func.min(r.created_at))
            .select_from(refunds.outerjoin(last, last.c.refund_id == r.id)
                         .outerjoin(last_attempt, last_attempt.c.id == last.c.last_id))
            .where(r.status.in_(_NOT_FINAL),
                   (last_attempt.c.outcome.is_(None))
                   | last_attempt.c.outcome.not_in(_ANSWERED))
            .group_by(r.route))
        unknown: dict[str, int] = {}
        oldest: datetime | None = None
        for route, count, first in _group_counts(conn, unknown_q):
            unknown[route] = int(count)
            first_at = _aware(first)
            if first_at is not None and (oldest is None or first_at < oldest):
                oldest = first_at
        due_row = conn.execute(select(func.count(), func.min(r.next_check_at)).where(
            r.status.in_(_NOT_FINAL), r.next_check_at <= now)).one()
        first_due = _aware(due_row[1])
        paid_twice = int(conn.execute(select(func.count()).where(
            r.paid_after_release_at.is_not(None))).scalar_one())
        names = set(inspect(conn).get_table_names())
        discrepancies: dict[str, int] | None = None
        if "recon_items" in names:
            items = table("recon_items", column("class"), column("state"))
            discrepancies = {str(k): int(n) for k, n in conn.execute(
                select(items.c["class"], func.count()).where(items.c.state == "open")
                .group_by(items.c["class"])).all()}
        relay: dict[tuple[str, str], int] | None = None
        if "relay_deliveries" in names:
            deliveries = table("relay_deliveries", column("relay"), column("status"))
            relay = {(str(name), str(status)): int(n) for name, status, n in conn.execute(
                select(deliveries.c.relay, deliveries.c.status, func.count())
                .group_by(deliveries.c.relay, deliveries.c.status)).all()}
        receipts_issued: int | None = None
        if "receipt_versions" in names:
            receipts_issued = int(conn.execute(select(func.count()).select_from(
                table("receipt_versions"))).scalar_one())
    return StoreFigures(
        refunds=by_status, unknown=unknown,
        oldest_unknown_seconds=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
        due=int(due_row[0]),
        resolver_lag_seconds=(max(0.0, (now - first_due).total_seconds())
                              if first_due is not None else 0.0),
        paid_after_release=paid_twice, discrepancies=discrepancies,
        receipts=receipts_issued, relay=relay)


class StoreCollector(Collector):
    """Reads ``read_store_figures`` at scrape time (at most once per ``cache_seconds``,
    so several scrapers cost one read)."""

    def __init__(self, store: RefundStore, *, clock: Clock = utcnow,
                 cache_seconds: float = 5.0) -> None:
        self._store = store
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, StoreFigures | None] | None = None

    def _figures(self) -> StoreFigures | None:
        with self._lock:
            moment = time.monotonic()
            if self._cached is not None and moment - self._cached[0] < self._cache_seconds:
                return self._cached[1]
            try:
                figures: StoreFigures | None = read_store_figures(self._store, self._clock())
            except Exception as exc:  # a scrape must answer even when the database is down
                log.warning("metrics.store_unreadable", error=type(exc).__name__,
                            message=str(exc)[:200])
                figures = None
            self._cached = (moment, figures)
            return figures

    def describe(self) -> Iterable[Metric]:
        return []   # collected on demand: no describe-time read of the database

    def collect(self) -> Iterator[Metric]:
        figures = self._figures()
        up = GaugeMetricFamily(f"{PREFIX}_store_up",
                               "1 when the store answered the last metrics read")
        up.add_metric([], 0.0 if figures is None else 1.0)
        yield up
        if figures is None:
            return
        by_status = GaugeMetricFamily(f"{PREFIX}_refunds", "Refunds by route, merchant "
                                      "account and status", labels=["route", "account",
                                                                     "status"])
        for (route, account, status), count in sorted(figures.refunds.items()):
            by_status.add_metric([route, account, status], count)
        yield by_status
        unknown = GaugeMetricFamily(
            f"{PREFIX}_unknown_outcomes", "Refunds not final whose last channel call did "
            "not establish the outcome (or was never made)", labels=["route"])
        for route in Route:
            unknown.add_metric([route.value], figures.unknown.get(route.value, 0))
        yield unknown
        oldest = GaugeMetricFamily(f"{PREFIX}_unknown_outcome_oldest_age_seconds",
                                   "Age of the oldest refund whose outcome is unknown "
                                   "(since it was created; 0: none)")
        oldest.add_metric([], figures.oldest_unknown_seconds)
        yield oldest
        due = GaugeMetricFamily(f"{PREFIX}_resolver_due_checks",
                                "Refunds whose check by the resolver is due now")
        due.add_metric([], figures.due)
        yield due
        lag = GaugeMetricFamily(f"{PREFIX}_resolver_lag_seconds",
                                "How long the oldest due check has been waiting (0: none)")
        lag.add_metric([], figures.resolver_lag_seconds)
        yield lag
        paid = GaugeMetricFamily(f"{PREFIX}_paid_after_release_refunds",
                                 "Refunds paid after their amount was released (a "
                                 "customer paid twice); should be 0")
        paid.add_metric([], figures.paid_after_release)
        yield paid
        if figures.discrepancies is not None:
            disc = GaugeMetricFamily(f"{PREFIX}_discrepancies_open",
                                     "Open reconciliation discrepancies by class",
                                     labels=["class"])
            for klass, count in sorted(figures.discrepancies.items()):
                disc.add_metric([klass], count)
            yield disc
        if figures.receipts is not None:
            issued = CounterMetricFamily(f"{PREFIX}_receipts_issued",
                                         "Transfer receipt versions issued")
            issued.add_metric([], figures.receipts)
            yield issued
        if figures.relay is not None:
            relayed = GaugeMetricFamily(f"{PREFIX}_relay_deliveries",
                                        "Relay deliveries by relay and status (pending, "
                                        "delivered, dead: the dead-letter list)",
                                        labels=["relay", "status"])
            for (name, status), count in sorted(figures.relay.items()):
                relayed.add_metric([name, status], count)
            yield relayed


class GatewayMetrics:
    """The metrics of one process: its own registry (never the global default one, so
    two gateways in one process or a test never collide)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=False)
        self.channel_seconds = Histogram(
            f"{PREFIX}_channel_call_seconds", "Channel calls (network I/O) by route, "
            "operation and outcome (a channel status, or the error class)",
            ["route", "operation", "outcome"], buckets=CHANNEL_BUCKETS,
            registry=self.registry)
        self.operation_seconds = Histogram(
            f"{PREFIX}_operation_seconds", "RefundGateway operations by operation, route "
            "and outcome (the refund's status after it, or the error class)",
            ["operation", "route", "outcome"], buckets=CHANNEL_BUCKETS,
            registry=self.registry)
        self.notifications = Counter(
            f"{PREFIX}_notifications", "Channel notifications by route, result (accepted "
            "or rejected) and reason", ["route", "result", "reason"],
            registry=self.registry)
        self._watched: set[int] = set()

    def watch_store(self, store: RefundStore, *, clock: Clock = utcnow,
                    cache_seconds: float = 5.0) -> None:
        """Read ``store``'s figures at scrape time (once per store)."""
        if id(store) in self._watched:
            return
        self._watched.add(id(store))
        self.registry.register(StoreCollector(store, clock=clock,
                                              cache_seconds=cache_seconds))

    @contextmanager
    def observe(self, call: Call) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            route = call.route or "none"
            if call.kind == "channel":
                self.channel_seconds.labels(route, call.operation,
                                            call.outcome).observe(elapsed)
            else:
                self.operation_seconds.labels(call.operation, route,
                                              call.outcome).observe(elapsed)
            if call.operation == "handle_notification":
                self.notifications.labels(
                    route if call.route in Route._value2member_map_ else "unknown",
                    "accepted" if call.outcome == "accepted" else "rejected",
                    call.reason or call.outcome).inc()


def instrument(gateway: RefundGateway, metrics: GatewayMetrics | None = None, *,
               watch_store: bool = True, cache_seconds: float = 5.0) -> GatewayMetrics:
    """Observe ``gateway`` (its operations and channel calls) into ``metrics`` (a new
    ``GatewayMetrics`` by default) and, with ``watch_store``, read its store at scrape
    time. Instrumenting one gateway twice with the same metrics observes once."""
    metrics = metrics or GatewayMetrics()
    observe_gateway(gateway, metrics.observe, marker=f"_observed_by_{id(metrics)}")
    if watch_store:
        metrics.watch_store(gateway.store, clock=gateway._clock,
                            cache_seconds=cache_seconds)
    return metrics

