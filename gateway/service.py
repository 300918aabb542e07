"""``RefundGateway``: the one object the refund service talks to.

Every public method reads the same way (DESIGN.md invariants 1-5): validate (pure: the
request, then the route's own rules through its adapter's ``validate``) -> a unit of work
(reserve, or lock the refund and apply a ``gateway.lifecycle`` change) -> the channel
call, outside any transaction -> a unit of work recording what the channel said. What a
piece of evidence does to a refund is decided only in ``gateway.lifecycle``; only the
store turns a decision into columns. Anything uncertain leaves the refund PROCESSING
with a ``next_check_at``; ``resolve_due`` queries those and resends only under the same
channel refund number. Nothing is closed because of its age.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from gateway import failpoints, lifecycle
from gateway.clock import Clock, to_beijing, utcnow
from gateway.errors import (
    ChannelAuthError,
    ChannelError,
    ChannelUnavailable,
    ConfigurationError,
    InvalidRequest,
    OutcomeUnknown,
    RerouteRefused,
    StoreUnavailable,
)
from gateway.events import run_consumer
from gateway.groupcommit import GroupCommit
from gateway.lanes import Batch, PerThreadCount
from gateway.lifecycle import Change, Failure, Source
from gateway.models import (
    Attempt,
    ChannelResult,
    ChannelStatus,
    NotificationAck,
    OutboxEvent,
    Refund,
    RefundEvent,
    RefundRequest,
    RefundStatus,
    Route,
)
from gateway.ports import AbnormalRefundInstruction, AbnormalRefundPort, ChannelAdapter
from gateway.ratelimit import Lane, Pacer
from gateway.retry import resend_policy
from gateway.settings import (
    DEFAULT_ACCOUNT,
    GatewaySettings,
    ResolverSettings,
    RetrySettings,
    load_settings,
)
from gateway.store import NotificationWork, RefundStore, UnitOfWork

log = structlog.get_logger("gateway.service")
security_log = structlog.get_logger("gateway.security")
# What operations must act on at once (paid after release: a customer paid twice).
operations_log = structlog.get_logger("gateway.operations")


def new_refund_id(now: datetime) -> str:
    """``RF`` + Beijing date + 16 random hex: 26 characters of [A-Z0-9], valid as every
    channel's refund number (UnionPay: 8-32 alphanumerics, CH §6)."""
    return f"RF{to_beijing(now):%Y%m%d}{secrets.token_hex(8).upper()}"


@dataclass(frozen=True, slots=True)
class ResolveReport:
    """What one resolver cycle (``RefundGateway.resolve_due``) did.

    Attributes:
        claimed: refunds whose check was due and that this cycle took.
        changed: of those, how many changed status.
        resent: how many were sent again under their same channel refund number (the
            channel had no record of them).
        errors: how many raised something unexpected (logged; retried next cycle).
        final: how many ended in a final state.
        stopped: a stop request handed the rest of the batch back (due at once).
    """

    claimed: int
    changed: int
    resent: int
    errors: int
    final: int
    stopped: bool = False


_RELEARNABLE = frozenset({ChannelStatus.PROCESSING, ChannelStatus.NOT_FOUND})


@dataclass(frozen=True, slots=True)
class _Verified:
    """A notification verified by the adapter of the merchant account it is for."""

    route: Route
    account: str
    adapter: ChannelAdapter
    result: ChannelResult


_Decided = tuple[str, "Refund | None", "Change | None"]


def _relearnable(verified: _Verified) -> bool:
    """What the notification says can be learnt again by a query: its commit may be
    relaxed (DESIGN.md invariant 5 asks a full sync only for what cannot)."""
    return (verified.adapter.capabilities.refund_query
            and verified.result.status in _RELEARNABLE)


def _failure(exc: ChannelError) -> Failure:
    if isinstance(exc, ChannelUnavailable):
        return Failure.UNAVAILABLE
    if isinstance(exc, ChannelAuthError):
        return Failure.AUTH
    return Failure.UNKNOWN


class RefundGateway:
    """The one object the refund service talks to: refund, follow, reroute, and apply
    notifications. Build it with ``RefundGateway.from_settings()``; safe to share
    between threads; ``close()`` releases connections.

    Attributes:
        store: the refund store (``gateway.store.RefundStore``), internal.
        adapters: the enabled routes' channel adapters, by route: each route's account
            ``default`` (only routes with settings are enabled).
        accounts: the adapters of named merchant accounts, by (route, name)
            (``REFUND_GATEWAY_<ROUTE>__ACCOUNTS__<NAME>``).
    """

    def __init__(self, store: RefundStore, adapters: Mapping[Route, ChannelAdapter], *,
                 clock: Clock = utcnow, sleep: Callable[[float], None] = time.sleep,
                 retry: RetrySettings | None = None, resolver: ResolverSettings | None = None,
                 id_factory: Callable[[datetime], str] = new_refund_id,
                 accounts: Mapping[tuple[Route, str], ChannelAdapter] | None = None,
                 notification_group_max: int = 256) -> None:
        self.store = store
        self.adapters = dict(adapters)          # the account ``default`` of each route
        # Named merchant accounts (settings ``..._ACCOUNTS__<NAME>``), by (route, name).
        self.accounts = dict(accounts or {})
        self._clock = clock
        self._sleep = sleep
        self._retry = retry or RetrySettings()
        self._resolver = resolver or ResolverSettings()
        self._new_id = id_factory
        # Resends counted per thread: each resolver worker reports its own (gateway.lanes).
        self._resends = PerThreadCount()
        self._pacer = Pacer(self._resolver)     # the resolver's lanes and their rates
        # Concurrent ``handle_notification`` calls (a web worker's threads) share commits
        # (gateway.groupcommit); a failure that is not the store's is retried one by one.
        self._notification_commits: GroupCommit[tuple[_Verified, datetime], _Decided] = (
            GroupCommit(self._apply_notifications, max_batch=notification_group_max,
                        split_on=lambda exc: not isinstance(exc, StoreUnavailable)))
        for route, adapter in [*self.adapters.items(),
                               *((r, a) for (r, _), a in self.accounts.items())]:
            if adapter.route is not route:
                raise ConfigurationError(f"adapter for {route.value} says it is "
                                         f"{adapter.route.value}")

    @classmethod
    def from_settings(cls, settings: GatewaySettings | None = None, *,
                      env_file: str | Path | None = None, **kwargs: Any) -> RefundGateway:
        """Build a gateway through ``gateway.bootstrap`` (the one composition root).

        With no arguments, settings come from the environment (``REFUND_GATEWAY_...``),
        ``.env`` in the working directory and the TOML file named by
        ``REFUND_GATEWAY_CONFIG_FILE``. ``env_file`` names the file to read instead of
        ``.env``, e.g. the ``sandbox.env`` the sandbox writes (the environment still
        wins over it). ``settings`` gives them ready-made (``load_settings(...)``).
        Other keyword arguments go to ``gateway.bootstrap.build_gateway`` (``clock``,
        ``adapters``, ``configure_logs``).

        Raises:
            ConfigurationError: a bad or missing setting, an ``env_file`` that does not
                exist, or both ``settings`` and ``env_file`` given.
        """
        from gateway.bootstrap import build_gateway  # noqa: PLC0415 - composition root

        if env_file is not None:
            if settings is not None:
                raise ConfigurationError("give settings or env_file, not both",
                                         setting="env_file")
            settings = load_settings(env_file)
        return build_gateway(settings, **kwargs)

    # -- public API -------------------------------------------------------------------
    def refund(self, request: RefundRequest) -> Refund:
        """Refund ``request.amount`` of ``request.payment`` exactly once per key.

        Returns the stored refund: SUCCEEDED/FAILED when the channel answered at once,
        PROCESSING when accepted or uncertain (the resolver follows it), PENDING when the
        channel could not be reached at all. Raises, with nothing stored and nothing
        sent: ``InvalidRequest`` (the request, or a rule of its route), ``OverRefund``,
        ``IdempotencyConflict``, ``ConfigurationError``, ``StoreUnavailable``. Once the
        refund is stored, a database failure raises ``OutcomeUnknown`` with its id.
        """
        request.validate()
        adapter = self._adapter(request.payment.route, request.payment.merchant_account)
        now = self._clock()
        refund_id = self._new_id(now)
        adapter.validate(request, channel_refund_no=refund_id, now=now)
        arrival, warning = lifecycle.initial_arrival(adapter.capabilities, now)
        if warning:
            log.warning("calendar.out_of_range", error=warning)
        refund, created = self.store.reserve(
            request, refund_id=refund_id, channel_refund_no=refund_id, now=now,
            next_check_at=now + lifecycle.SUBMIT_GRACE, arrival=arrival,
            max_refunds=adapter.capabilities.max_refunds)
        bound = log.bind(refund_id=refund.id, idempotency_key=refund.idempotency_key,
                         route=refund.route.value)
        if not created:
            bound.info("refund.idempotent_replay", status=refund.status.value)
            return refund
        bound.info("refund.reserved", amount_minor=refund.amount.minor)
        failpoints.failpoint(failpoints.AFTER_RESERVE)
        return self._submit(refund, adapter)

    def get(self, refund_id: str) -> Refund:
        """The stored refund, as the gateway knows it now (no channel call);
        ``RefundNotFound`` for an unknown id."""
        return self.store.get(refund_id)

    def events(self, refund_id: str) -> list[RefundEvent]:
        """The refund's history, oldest first: every request, attempt, status change,
        notification and reroute (the evidence trail)."""
        return self.store.events(refund_id)

    def sync(self, refund_id: str) -> Refund:
        """Ask the channel now about one refund (whatever its next check time).

        A SUCCEEDED refund is asked too: its bank leg (Alipay ``deposit_back_info``,
        UnionPay settlement) may still be moving, and the answer refreshes that evidence
        without ever changing the final status.
        """
        refund = self.store.get(refund_id)
        if refund.status.is_final and refund.status is not RefundStatus.SUCCEEDED:
            return refund
        return self._check(refund)

    def resolve_due(self, limit: int | None = None, *,
                    stop: Callable[[], bool] | None = None) -> ResolveReport:
        """Query every refund whose check is due; resend under the same number when the
        channel has no record of it. Safe to run from several processes (PostgreSQL).

        The batch is worked through concurrently: a pool per route and merchant account,
        at most ``ResolverSettings.concurrency`` refunds at once, each account's calls
        within its rate limit and in-flight cap (``ResolverSettings.limits``); a
        rate-limited answer (429, FREQUENCY_LIMITED, ...) slows that account down until
        it recovers. The batch is hidden from other resolvers by a lease, renewed while
        the batch runs (so a slow channel never lets a peer claim the same refunds in
        the same cycle). ``stop()`` is asked before each refund is taken: once true, the
        refunds in hand are finished and the rest of the batch is handed back, due at
        once. One refund's error is counted and logged, never a reason to stop."""
        now = self._clock()
        lease = timedelta(seconds=self._resolver.lease_seconds)
        due = self.store.claim_due(now, limit=limit or self._resolver.batch_size,
                                   lease=lease)
        done = Batch(due, lane_of=self._lane_of, check=self._check, resend=self._resend,
                     resends=self._resends, store=self.store, clock=self._clock, lease=lease,
                     held_until=now + lease, stop=stop,
                     concurrency=self._resolver.concurrency).run()
        report = ResolveReport(claimed=len(due), changed=done.changed, resent=done.resent,
                               errors=done.errors, final=done.final, stopped=done.stopped)
        if due:
            log.info("resolver.cycle", claimed=report.claimed, changed=report.changed,
                     errors=report.errors, final=report.final)
        return report

    def _lane_of(self, refund: Refund) -> tuple[Lane, ChannelAdapter]:
        """The resolver lane (route, merchant account) that checks ``refund``, and the
        adapter it goes through (made pace-able)."""
        adapter = self._adapter_of(refund)
        Pacer.attach(adapter)
        account = (refund.payment.merchant_account if refund.route is refund.payment.route
                   else DEFAULT_ACCOUNT)
        return self._pacer.lane(refund.route, account), adapter

    def _resend(self, refund: Refund) -> Refund:
        """A resend the channel refused as too many, sent again under the same number
        (the resolver's retry within its batch: the query before it found nothing)."""
        return self._submit(refund, self._adapter_of(refund))

    def reroute(self, refund_id: str, to: Route | str | None = None, *,
                instruction: AbnormalRefundInstruction | None = None,
                note: str = "") -> Refund:
        """Resolve an ABNORMAL refund, after asking its channel.

        The original route is queried first; only when it confirms the refund as
        ABNORMAL (or finally failed or closed, with nothing outstanding) does anything
        change, else ``RerouteRefused`` (the answer is kept as evidence). With
        ``instruction``: through the channel's own abnormal-refund API (WeChat, CH §5.6);
        the same refund goes on, PROCESSING. Otherwise: a linked refund on ``to``
        (default the platform balance); the original becomes REROUTED and the linked
        refund is returned. Called again, it returns the live linked refund; when that
        one FAILED or CLOSED, it makes a new one (to ``to``, or the same route), so one
        linked refund is live at a time and the chain is in ``linked_refunds``.
        """
        refund = self.store.get(refund_id)
        target = self._route(to) if to is not None else None
        if refund.status is RefundStatus.REROUTED and refund.rerouted_to:
            return self._reroute_again(refund, target, instruction, note)
        refusal = lifecycle.reroute_refusal(refund, ChannelStatus.ABNORMAL)
        if refusal:   # not ABNORMAL at all: nothing to ask the channel
            raise InvalidRequest(refusal, field="refund_id")
        adapter = self._adapter_of(refund)
        linked_adapter: ChannelAdapter | None = None
        if instruction is not None:
            port = self._abnormal_port(adapter, refund)
            port.validate_instruction(refund, instruction)
        else:
            target = target or Route.BALANCE
            linked_adapter = self._reroute_target(refund, target)
        confirmed = self._confirm_for_reroute(refund, adapter)
        now = self._clock()
        linked: Refund | None = None
        with self._unit(refund, "reroute", now=now, pipelined=False) as tx:
            tx.apply(lifecycle.on_answer(tx.current, confirmed, source=Source.QUERY,
                                         now=now, caps=adapter.capabilities))
            refusal = lifecycle.reroute_refusal(tx.current, confirmed.status)
            if refusal is None and instruction is not None \
                    and confirmed.status is not ChannelStatus.ABNORMAL:
                refusal = (f"the abnormal-refund API takes only refunds WeChat reports as "
                           f"ABNORMAL; it says {confirmed.status.value}")
            if refusal is None and instruction is not None:
                tx.apply(lifecycle.abnormal_application(
                    tx.current, target=instruction.target.value, note=note, now=now,
                    confirmed=confirmed.status))
            elif refusal is None:
                assert target is not None and linked_adapter is not None  # noqa: S101
                linked = self._link(tx, target, linked_adapter, note, now,
                                    confirmed.status)
        if refusal is not None:
            raise RerouteRefused(refusal, refund_id=refund.id,
                                 channel_status=confirmed.status.value)
        failpoints.failpoint(failpoints.IN_REROUTE)
        if instruction is not None:
            return self._apply_abnormal(refund.id, adapter, instruction)
        assert linked is not None and linked_adapter is not None  # noqa: S101
        log.info("refund.rerouted", refund_id=refund.id, linked=linked.id,
                 route=linked.route.value)
        return self._submit(linked, linked_adapter)

    def handle_notification(self, route: Route | str, headers: Mapping[str, str],
                            body: bytes | str, *, account: str | None = None
                            ) -> NotificationAck:
        """Verify and apply a channel notification; returns what to answer over HTTP.

        A forged, stale or replayed notification, or one whose amount or merchant does
        not match the stored refund, changes nothing and is logged on the security log.
        One whose event id was applied before is acknowledged and changes nothing. When
        the database cannot record it, the answer is one the channel retries. With
        several merchant accounts on the route, ``account`` names the one the endpoint
        serves; unset, each account's adapter tries it (each verifies its own merchant
        id: mchid / app_id / merId), the default first.
        """
        verified = self._verify_notification(route, headers, body, account)
        if isinstance(verified, NotificationAck):
            return verified
        failpoints.failpoint(failpoints.IN_NOTIFICATION)
        try:
            decided = self._notification_commits.submit((verified, self._clock()))
        except StoreUnavailable as exc:
            return self._not_recorded(verified, exc)
        return self._answer_notification(verified, decided)

    def handle_notifications(self, batch: Sequence[tuple[Route | str, Mapping[str, str],
                                                         bytes | str]],
                             ) -> list[NotificationAck]:
        """Many notifications (a queue consumer's batch), verified one by one and applied
        in one transaction: one commit for the batch, one answer each, in order. None is
        acknowledged before the batch is durable; if the database fails, every verified
        one is answered so its channel retries."""
        answers: list[NotificationAck | None] = []
        verified: list[tuple[int, _Verified]] = []
        for index, (route, headers, body) in enumerate(batch):
            checked = self._verify_notification(route, headers, body, None)
            if isinstance(checked, NotificationAck):
                answers.append(checked)
            else:
                answers.append(None)
                verified.append((index, checked))
        if verified:
            now = self._clock()
            try:
                decided = self._apply_notifications([(v, now) for _, v in verified])
            except StoreUnavailable as exc:
                for i, v in verified:
                    answers[i] = self._not_recorded(v, exc)
            else:
                for (i, v), outcome in zip(verified, decided, strict=True):
                    answers[i] = self._answer_notification(v, outcome)
        return [a for a in answers if a is not None]

    def events_since(self, cursor: int = 0, limit: int = 100) -> list[OutboxEvent]:
        """Status changes after ``cursor`` (an ``OutboxEvent.cursor``; 0 from the start),
        oldest first: each refund's creation (PENDING) and every later status change,
        written in the same transaction as the change."""
        return self.store.events_since(cursor, limit)

    def subscribe(self, handler: Callable[[Sequence[OutboxEvent]], None], *,
                  consumer: str = "default", stop: threading.Event | None = None,
                  batch: int = 100, poll_interval: float = 1.0) -> int:
        """Call ``handler`` with every status change, in order, at least once, until
        ``stop`` is set (blocking; run it in its own thread or process). The consumer's
        cursor is committed after ``handler`` returns; dedupe on ``event_id``. Several
        processes with one ``consumer`` name share the stream: one owns each batch."""
        return run_consumer(self.store, handler, consumer=consumer,
                            stop=stop or threading.Event(), batch=batch,
                            poll_interval=poll_interval, clock=self._clock)

    def close(self) -> None:
        """Release the adapters' pooled connections and the database's."""
        for adapter in self.adapters.values():
            adapter.close()
        self.store.engine.dispose()

    # -- internals: routes ------------------------------------------------------------
    @staticmethod
    def _route(route: Route | str) -> Route:
        try:
            return Route(route)
        except ValueError:
            raise InvalidRequest(f"unknown route {route!r} (one of "
                                 f"{', '.join(r.value for r in Route)})",
                                 field="to") from None

    def _adapter(self, route: Route, account: str = DEFAULT_ACCOUNT) -> ChannelAdapter:
        found = (self.adapters.get(route) if account == DEFAULT_ACCOUNT
                 else self.accounts.get((route, account)))
        if found is None:
            where = (f"REFUND_GATEWAY_{route.value.upper()}" if account == DEFAULT_ACCOUNT
                     else f"REFUND_GATEWAY_{route.value.upper()}__ACCOUNTS__{account.upper()}")
            raise ConfigurationError(
                f"route {route.value}, merchant account {account!r}, is not configured "
                f"(set {where}__...)", setting=where)
        return found

    def _adapter_of(self, refund: Refund) -> ChannelAdapter:
        """The adapter that sends ``refund``: its payment's merchant account on the
        payment's own route; a linked refund on another route (a reroute to the
        balance) goes through that route's default account."""
        account = (refund.payment.merchant_account if refund.route is refund.payment.route
                   else DEFAULT_ACCOUNT)
        return self._adapter(refund.route, account)

    def _notification_adapters(self, route: Route, account: str | None
                               ) -> list[tuple[str, ChannelAdapter]]:
        if account is not None:
            return [(account, self._adapter(route, account))]
        named = [(n, a) for (r, n), a in sorted(self.accounts.items()) if r is route]
        default = self.adapters.get(route)
        found = ([(DEFAULT_ACCOUNT, default)] if default is not None else []) + named
        if not found:
            raise ConfigurationError(f"route {route.value} is not configured")
        return found

    # -- internals: units of work -----------------------------------------------------
    @contextmanager
    def _unit(self, refund: Refund, operation: str, *, now: datetime,
              relaxed: bool = False, pipelined: bool = True) -> Iterator[UnitOfWork]:
        """The refund's unit of work after a channel call: a database failure here is
        ``OutcomeUnknown`` carrying the refund id (the channel may have moved money; the
        resolver finds out), never a raw driver error and never "failed"."""
        try:
            with self.store.locked(refund.id, now=now, relaxed=relaxed,
                                   pipelined=pipelined) as tx:
                yield tx
        except StoreUnavailable as exc:
            log.error("store.outcome_not_recorded", refund_id=refund.id,
                      operation=operation, error=exc.message)
            raise OutcomeUnknown(
                f"the outcome of {refund.id} could not be recorded ({exc.message}); it "
                f"is stored and will be checked with the channel: do not refund again",
                channel="store", operation=operation, refund_id=refund.id) from exc

    def _announce(self, refund: Refund, change: Change, operation: str) -> None:
        """Log what a committed change means for people: status, alarms, warnings."""
        for warning in change.warnings:
            log.warning("calendar.out_of_range", refund_id=refund.id, error=warning)
        if change.alarm is not None:
            alarm = change.alarm
            operations_log.error(
                "refund.paid_after_release", refund_id=alarm.refund_id,
                released_as=alarm.released_as.value, amount_minor=alarm.amount_minor,
                currency=alarm.currency, linked_refunds=list(alarm.linked_refunds),
                operation=operation)

    def _attempt(self, refund: Refund, operation: str, started: datetime, *,
                 result: ChannelResult | None = None, error: ChannelError | None = None
                 ) -> Attempt:
        finished = self._clock()
        if error is not None:
            return Attempt(refund_id=refund.id, operation=operation, started_at=started,
                           finished_at=finished, outcome=type(error).__name__,
                           http_status=error.http_status, code=error.code,
                           request_id=error.request_id, raw={"message": error.message})
        assert result is not None  # noqa: S101 - one of the two is given
        return Attempt(refund_id=refund.id, operation=operation, started_at=started,
                       finished_at=finished, outcome=result.status.value,
                       code=result.failure_code, raw=result.raw)

    def _record(self, refund: Refund, operation: str, result: ChannelResult,
                started: datetime, adapter: ChannelAdapter) -> Refund:
        """A verified answer: the attempt and the lifecycle's change, in one unit."""
        attempt = self._attempt(refund, operation, started, result=result)
        now = self._clock()
        caps = adapter.capabilities
        # Relaxed only where losing the commit is harmless: the route can be asked again
        # and the answer is not final (a final outcome told to the caller is durable).
        relaxed = caps.refund_query and result.status in _RELEARNABLE
        with self._unit(refund, operation, now=now, relaxed=relaxed) as tx:
            tx.record(attempt)
            before = tx.current.status
            change = lifecycle.on_answer(tx.current, result, source=Source(operation),
                                         now=now, caps=caps)
            after = tx.apply(change)
        self._announce(after, change, operation)
        if after.status is not before:
            log.info("refund.status", refund_id=refund.id, route=refund.route.value,
                     status_from=before.value, status_to=after.status.value,
                     operation=operation)
        return after

    def _record_error(self, refund: Refund, operation: str, exc: ChannelError,
                      started: datetime, adapter: ChannelAdapter, *,
                      attempt_no: int = 1) -> Refund:
        """Unknown is never failure: the attempt, and a next check (lifecycle)."""
        log.warning("channel.error", refund_id=refund.id, route=refund.route.value,
                    attempt=attempt_no, **exc.describe())
        if isinstance(exc, ChannelAuthError):
            log.error("channel.credentials_rejected", refund_id=refund.id,
                      route=refund.route.value)
        attempt = self._attempt(refund, operation, started, error=exc)
        now = self._clock()
        caps = adapter.capabilities
        with self._unit(refund, operation, now=now, relaxed=caps.refund_query) as tx:
            tx.record(attempt)
            return tx.apply(lifecycle.on_error(
                tx.current, _failure(exc), now=now, caps=caps,
                first_check=timedelta(seconds=self._resolver.first_check_seconds)))

    # -- internals: channel calls -----------------------------------------------------
    def _submit(self, refund: Refund, adapter: ChannelAdapter) -> Refund:
        """Send under the refund's fixed number, resending inline only what provably
        was not sent (``ChannelUnavailable``); record what came of it."""
        attempt_no = 0
        started = self._clock()

        def note_unsent(exc: BaseException, attempt: int) -> None:
            if isinstance(exc, ChannelUnavailable):
                self._note_unsent(refund, exc, started, attempt)

        policy = resend_policy(self._retry, self._sleep, before_resend=note_unsent)

        def call() -> ChannelResult:
            nonlocal attempt_no, started
            attempt_no += 1
            started = self._clock()
            try:
                return adapter.submit(refund)
            except InvalidRequest as exc:
                # validate() should have refused this before the reservation: nothing
                # was sent, so it is kept open (never failed) and logged as a gap.
                log.error("adapter.validate_gap", refund_id=refund.id, error=exc.message)
                raise ChannelUnavailable(f"refused before sending: {exc.message}",
                                         channel=refund.route.value, operation="submit",
                                         code="LOCAL_VALIDATION") from exc

        try:
            result = policy(call)
        except ChannelError as exc:
            return self._record_error(refund, "submit", exc, started, adapter,
                                      attempt_no=attempt_no)
        failpoints.failpoint(failpoints.AFTER_ANSWER)
        return self._record(refund, "submit", result, started, adapter)

    def _note_unsent(self, refund: Refund, exc: ChannelUnavailable, started: datetime,
                     attempt_no: int) -> None:
        """An inline resend is coming: keep the failed try as evidence."""
        log.warning("channel.error", refund_id=refund.id, route=refund.route.value,
                    attempt=attempt_no, **exc.describe())
        attempt = self._attempt(refund, "submit", started, error=exc)
        with self._unit(refund, "submit", now=self._clock(), relaxed=True) as tx:
            tx.record(attempt)

    def _check(self, refund: Refund) -> Refund:
        """Query the channel; resend under the same number when it has no record."""
        adapter = self._adapter_of(refund)
        caps = adapter.capabilities
        if not caps.refund_query:
            if caps.idempotent_submit and not refund.status.is_final:
                return self._submit(refund, adapter)
            now = self._clock()
            log.warning("resolver.cannot_check", refund_id=refund.id,
                        reason="no query and no idempotent submit")
            with self._unit(refund, "check", now=now) as tx:
                return tx.apply(lifecycle.cannot_check(tx.current, now=now, caps=caps))
        started = self._clock()
        try:
            result = adapter.query(refund)
        except ChannelError as exc:
            return self._record_error(refund, "query", exc, started, adapter)
        recorded = self._record(refund, "query", result, started, adapter)
        if (result.status is ChannelStatus.NOT_FOUND and caps.idempotent_submit
                and recorded.status in (RefundStatus.PENDING, RefundStatus.PROCESSING)):
            self._resends += 1
            log.info("resolver.resend", refund_id=refund.id,
                     channel_refund_no=refund.channel_refund_no)
            return self._submit(recorded, adapter)
        return recorded

    def _verify_notification(self, route: Route | str, headers: Mapping[str, str],
                             body: bytes | str, account: str | None
                             ) -> _Verified | NotificationAck:
        """The notification verified by the account adapter it is for, or the answer that
        refuses it (unknown route, a route that sends none, a forgery)."""
        try:
            route = Route(route)
            candidates = self._notification_adapters(route, account)
        except (ValueError, ConfigurationError):
            security_log.warning("notification.unknown_route", route=str(route)[:32])
            return NotificationAck(404, b"unknown route", accepted=False,
                                   reason="unknown_route")
        first = candidates[0][1]
        if not first.capabilities.notifications:   # the wallet notifies nobody
            security_log.warning("notification.route_sends_none", route=route.value)
            return NotificationAck(404, b"this route sends no notifications",
                                   accepted=False, reason="route_sends_none")
        if isinstance(body, str):
            body = body.encode("utf-8")
        if not isinstance(body, bytes | bytearray | memoryview):
            raise InvalidRequest("a notification body is the raw request body, bytes or "
                                 "str", field="body")
        rejected: ChannelError | None = None
        for name, candidate in candidates:
            try:
                result = candidate.parse_notification(headers, bytes(body))
            except ChannelError as exc:
                rejected = rejected or exc
                continue
            return _Verified(route, name, candidate, result)
        assert rejected is not None  # noqa: S101 - at least one candidate
        security_log.warning("notification.rejected", route=route.value,
                             **rejected.describe())
        return replace(first.notification_ack(False), reason="signature_invalid")

    def _apply_notifications(self, items: Sequence[tuple[_Verified, datetime]]
                             ) -> list[_Decided]:
        """Verified notifications in one transaction (a batch, or a group commit of
        concurrent handlers), decided in the order of their refunds' numbers so two
        processes' batches lock rows in the same order (no deadlock); one notification
        is its own unit of work. The commit is relaxed only when every one of them
        could be learnt again by a query."""
        order = sorted(range(len(items)), key=lambda k: (
            items[k][0].route.value, items[k][0].result.channel_refund_no or ""))
        decided: dict[int, _Decided] = {}
        with self.store.notifications(
                relaxed=all(_relearnable(v) for v, _ in items)) as batch_tx:
            for k in order:
                v, now = items[k]
                decided[k] = self._decide_notification(
                    batch_tx.one(v.route, channel_refund_no=v.result.channel_refund_no,
                                 replay_key=v.result.replay_key,
                                 event_id=v.result.event_id, now=now), v, now)
        return [decided[k] for k in range(len(items))]

    @staticmethod
    def _decide_notification(tx: NotificationWork, verified: _Verified, now: datetime
                             ) -> _Decided:
        """Within a notification's unit of work: (outcome, refund, change applied)."""
        route, result = verified.route, verified.result
        caps = verified.adapter.capabilities
        if tx.outcome == "duplicate":
            return "duplicate", tx.apply(lifecycle.duplicate_notification(result)), None
        if tx.outcome is not None:
            return tx.outcome, None, None
        current = tx.current
        if current.route is not route:
            return "unknown_refund", None, None
        if (current.payment.route is route
                and current.payment.merchant_account != verified.account):
            return "account_mismatch", current, None   # verified for another account
        if result.amount is not None and result.amount != current.amount:
            return "amount_mismatch", current, None
        change = lifecycle.on_notification(current, result, now=now, caps=caps)
        return "applied", tx.apply(change), change

    def _not_recorded(self, verified: _Verified, exc: StoreUnavailable) -> NotificationAck:
        log.error("notification.not_recorded", route=verified.route.value,
                  event_id=verified.result.event_id, error=exc.message)
        refused = verified.adapter.notification_ack(False)
        # 503: every channel redelivers a notification it was not told "success" for
        return NotificationAck(503, refused.body, refused.content_type, accepted=False,
                               reason="store_unavailable")

    def _answer_notification(self, verified: _Verified, decided: _Decided
                             ) -> NotificationAck:
        outcome, refund, change = decided
        route, result, adapter = verified.route, verified.result, verified.adapter
        if outcome == "duplicate" and refund is not None:
            log.info("notification.duplicate", refund_id=refund.id, route=route.value,
                     event_id=result.event_id)
        elif outcome != "applied" or refund is None:
            security_log.warning(f"notification.{outcome}", route=route.value,
                                 event_id=result.event_id,
                                 channel_refund_no=result.channel_refund_no,
                                 refund_id=refund.id if refund else None,
                                 stated_minor=result.amount.minor if result.amount else None)
            return replace(adapter.notification_ack(False), reason=outcome)
        else:
            log.info("notification.applied", refund_id=refund.id, route=route.value,
                     status=refund.status.value, event_id=result.event_id)
        if change is not None:
            self._announce(refund, change, "notification")
        ack = adapter.notification_ack(True)
        return NotificationAck(ack.http_status, ack.body, ack.content_type, refund.id, True,
                               reason=outcome)

    # -- internals: reroutes ----------------------------------------------------------
    def _abnormal_port(self, adapter: ChannelAdapter, refund: Refund) -> AbnormalRefundPort:
        if not (adapter.capabilities.abnormal_refund_api
                and isinstance(adapter, AbnormalRefundPort)):
            raise InvalidRequest(f"{refund.route.value} has no abnormal-refund API; "
                                 f"reroute to another route instead", field="instruction")
        return adapter

    def _reroute_target(self, refund: Refund, target: Route) -> ChannelAdapter:
        """The linked refund's adapter, once its route's rules accept it (pure)."""
        if target is refund.route:
            raise InvalidRequest("reroute needs another route, or an instruction for the "
                                 "channel's abnormal-refund API", field="to")
        adapter = self._adapter(target)
        request = RefundRequest(idempotency_key=f"reroute:{refund.id}",
                                payment=refund.payment, amount=refund.amount,
                                reason=refund.reason)
        adapter.validate(request, channel_refund_no=self._new_id(self._clock()),
                         now=self._clock(), rerouted_from=refund.payment.route)
        return adapter

    def _confirm_for_reroute(self, refund: Refund, adapter: ChannelAdapter
                             ) -> ChannelResult:
        """What the original route says of the refund now; a query that fails leaves
        nothing confirmed, so nothing changes (the attempt is kept as evidence)."""
        if not adapter.capabilities.refund_query:
            raise RerouteRefused(f"{refund.route.value} cannot be asked about {refund.id}; "
                                 f"it is not rerouted on the gateway's word alone",
                                 refund_id=refund.id, channel_status=None)
        started = self._clock()
        try:
            return adapter.query(refund)
        except ChannelError as exc:
            self._record_error(refund, "query", exc, started, adapter)
            raise RerouteRefused(
                f"{refund.route.value} could not confirm {refund.id} ({exc.message}); "
                f"nothing was rerouted: try again later", refund_id=refund.id,
                channel_status=None) from exc

    def _link(self, tx: UnitOfWork, target: Route, adapter: ChannelAdapter, note: str,
              now: datetime, confirmed: ChannelStatus | None) -> Refund:
        """Within the original's unit: the linked refund, then the original REROUTED."""
        arrival, _ = lifecycle.initial_arrival(adapter.capabilities, now)
        linked = tx.add_linked(new_id=self._new_id(now), route=target, arrival=arrival,
                               note=note)
        tx.apply(lifecycle.reroute(tx.current, linked_id=linked.id, route=target.value,
                                   note=note, confirmed=confirmed))
        return linked

    def _reroute_again(self, original: Refund, target: Route | None,
                       instruction: AbnormalRefundInstruction | None, note: str) -> Refund:
        """An original already REROUTED: its live linked refund, or, once that one
        failed or closed, a new linked refund (the chain grows; one is live at a time)."""
        assert original.rerouted_to is not None  # noqa: S101 - checked by the caller
        linked = self.store.get(original.rerouted_to)
        if linked.status not in (RefundStatus.FAILED, RefundStatus.CLOSED):
            return linked
        if instruction is not None:
            raise InvalidRequest("the original was rerouted already; reroute it again to "
                                 "another route (to=...)", field="instruction")
        route = target or linked.route
        adapter = self._reroute_target(original, route)
        now = self._clock()
        new: Refund | None = None
        with self._unit(original, "reroute", now=now, pipelined=False) as tx:
            if tx.current.rerouted_to == linked.id:   # nobody replaced it meanwhile
                new = self._link(tx, route, adapter, note, now, None)
            current_link = tx.current.rerouted_to
        if new is None:
            assert current_link is not None  # noqa: S101
            return self.store.get(current_link)
        log.info("refund.rerouted_again", refund_id=original.id, failed_link=linked.id,
                 linked=new.id, route=route.value)
        return self._submit(new, adapter)

    def _apply_abnormal(self, refund_id: str, adapter: ChannelAdapter,
                        instruction: AbnormalRefundInstruction) -> Refund:
        port = self._abnormal_port(adapter, self.store.get(refund_id))
        current = self.store.get(refund_id)
        started = self._clock()
        try:
            result = port.apply_abnormal_refund(current, instruction)
        except ChannelError as exc:
            return self._record_error(current, "abnormal_refund", exc, started, adapter)
        return self._record(current, "abnormal_refund", result, started, adapter)
