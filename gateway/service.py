"""``RefundGateway``: the one object the refund service talks to.

The flow for every refund (DESIGN.md invariants 1-5): validate (no I/O) -> reserve and
commit (idempotency key, over-refund guard under a lock) -> call the route's adapter
outside any transaction, resending inline only what provably was not sent -> record the
outcome in a new transaction. Anything uncertain leaves the refund PROCESSING with a
``next_check_at``; ``resolve_due`` queries those and resends only under the same channel
refund number. Nothing is closed because of its age.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from gateway import failpoints
from gateway.calendar import expected_arrival
from gateway.clock import Clock, to_beijing, utcnow
from gateway.errors import (
    CalendarRangeError,
    ChannelAuthError,
    ChannelError,
    ChannelUnavailable,
    ConfigurationError,
    InvalidRequest,
)
from gateway.logging import mask_stored_account
from gateway.models import (
    ArrivalWindow,
    Attempt,
    ChannelResult,
    ChannelStatus,
    EventKind,
    NotificationAck,
    Refund,
    RefundEvent,
    RefundRequest,
    RefundStatus,
    Route,
)
from gateway.ports import AbnormalRefundInstruction, AbnormalRefundPort, ChannelAdapter
from gateway.retry import resend_policy
from gateway.settings import GatewaySettings, ResolverSettings, RetrySettings
from gateway.states import target_for
from gateway.store import Decision, RefundStore

log = structlog.get_logger("gateway.service")
security_log = structlog.get_logger("gateway.security")

# A PENDING refund whose submit is still in flight must not be picked up by a resolver.
SUBMIT_GRACE = timedelta(seconds=60)
AUTH_RECHECK = timedelta(hours=1)


def new_refund_id(now: datetime) -> str:
    """``RF`` + Beijing date + 16 random hex: 26 characters of [A-Z0-9], valid as every
    channel's refund number (UnionPay: 8-32 alphanumerics, CH §6)."""
    return f"RF{to_beijing(now):%Y%m%d}{secrets.token_hex(8).upper()}"


@dataclass(frozen=True, slots=True)
class ResolveReport:
    claimed: int
    changed: int
    resent: int
    errors: int
    final: int


class RefundGateway:
    def __init__(self, store: RefundStore, adapters: Mapping[Route, ChannelAdapter], *,
                 clock: Clock = utcnow, sleep: Callable[[float], None] = time.sleep,
                 retry: RetrySettings | None = None, resolver: ResolverSettings | None = None,
                 id_factory: Callable[[datetime], str] = new_refund_id) -> None:
        self.store = store
        self.adapters = dict(adapters)
        self._clock = clock
        self._sleep = sleep
        self._retry = retry or RetrySettings()
        self._resolver = resolver or ResolverSettings()
        self._new_id = id_factory
        self._resends = 0
        for route, adapter in self.adapters.items():
            if adapter.route is not route:
                raise ConfigurationError(f"adapter for {route.value} says it is "
                                         f"{adapter.route.value}")

    @classmethod
    def from_settings(cls, settings: GatewaySettings | None = None, **kwargs: Any
                      ) -> RefundGateway:
        """Build from ``GatewaySettings`` (env / .env / TOML) through ``gateway.bootstrap``."""
        from gateway.bootstrap import build_gateway  # noqa: PLC0415 - composition root

        return build_gateway(settings, **kwargs)

    # -- public API -------------------------------------------------------------------
    def refund(self, request: RefundRequest) -> Refund:
        """Refund ``request.amount`` of ``request.payment`` exactly once per key.

        Returns the stored refund: SUCCEEDED/FAILED when the channel answered at once,
        PROCESSING when accepted or uncertain (the resolver follows it), PENDING when the
        channel could not be reached at all. Raises ``InvalidRequest``, ``OverRefund``,
        ``IdempotencyConflict`` or ``ConfigurationError`` before anything is sent.
        """
        request.validate()
        adapter = self._adapter(request.payment.route)
        if adapter.route is Route.BALANCE and not request.payment.user_id:
            raise InvalidRequest("the balance route credits a user: payment.user_id is "
                                 "required", field="payment.user_id")
        caps = adapter.capabilities
        if not caps.partial_refunds and request.amount != request.payment.amount:
            raise InvalidRequest(f"{adapter.route.value} refunds only in full", field="amount")
        now = self._clock()
        refund_id = self._new_id(now)
        refund, created = self.store.reserve(
            request, refund_id=refund_id, channel_refund_no=refund_id, now=now,
            next_check_at=now + SUBMIT_GRACE, arrival=self._arrival(adapter, now),
            max_refunds=caps.max_refunds)
        bound = log.bind(refund_id=refund.id, idempotency_key=refund.idempotency_key,
                         route=refund.route.value)
        if not created:
            bound.info("refund.idempotent_replay", status=refund.status.value)
            return refund
        bound.info("refund.reserved", amount_minor=refund.amount.minor)
        failpoints.failpoint(failpoints.AFTER_RESERVE)
        return self._submit(refund, adapter)

    def get(self, refund_id: str) -> Refund:
        return self.store.get(refund_id)

    def events(self, refund_id: str) -> list[RefundEvent]:
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

    def resolve_due(self, limit: int | None = None) -> ResolveReport:
        """Query every refund whose check is due; resend under the same number when the
        channel has no record of it. Safe to run from several processes (PostgreSQL)."""
        now = self._clock()
        due = self.store.claim_due(now, limit=limit or self._resolver.batch_size,
                                   lease=timedelta(seconds=self._resolver.lease_seconds))
        changed = errors = final = 0
        resends_before = self._resends
        for refund in due:
            try:
                after = self._check(refund)
            except Exception:  # one bad refund must not stop the rest; logged, retried
                errors += 1
                log.exception("resolver.unexpected_error", refund_id=refund.id)
                continue
            changed += after.status is not refund.status
            final += after.status.is_final
        report = ResolveReport(claimed=len(due), changed=changed,
                               resent=self._resends - resends_before,
                               errors=errors, final=final)
        if due:
            log.info("resolver.cycle", claimed=report.claimed, changed=report.changed,
                     errors=report.errors, final=report.final)
        return report

    def reroute(self, refund_id: str, to: Route | None = None, *,
                instruction: AbnormalRefundInstruction | None = None,
                note: str = "") -> Refund:
        """Resolve an ABNORMAL refund.

        With ``instruction``: through the channel's own abnormal-refund API (WeChat,
        CH §5.6); the same refund goes on, PROCESSING. Otherwise: a linked refund on
        ``to`` (default the platform balance); the original becomes REROUTED and the
        linked refund is returned. Calling it again returns the same linked refund.
        """
        refund = self.store.get(refund_id)
        if refund.status is RefundStatus.REROUTED and refund.rerouted_to:
            return self.store.get(refund.rerouted_to)
        if refund.status is not RefundStatus.ABNORMAL:
            raise InvalidRequest(f"only abnormal refunds can be rerouted; {refund_id} is "
                                 f"{refund.status.value}", field="refund_id")
        if instruction is not None:
            return self._abnormal_via_channel(refund, instruction, note)
        target = to or Route.BALANCE
        if target is refund.route:
            raise InvalidRequest("reroute needs another route, or an instruction for the "
                                 "channel's abnormal-refund API", field="to")
        adapter = self._adapter(target)
        if target is Route.BALANCE and not refund.payment.user_id:
            raise InvalidRequest("rerouting to the balance needs the payment's user_id",
                                 field="payment.user_id")
        now = self._clock()
        _, linked = self.store.reroute(refund_id, new_id=self._new_id(now), route=target,
                                       now=now, arrival=self._arrival(adapter, now),
                                       note=note)
        log.info("refund.rerouted", refund_id=refund_id, linked=linked.id, route=target.value)
        failpoints.failpoint(failpoints.IN_REROUTE)
        if linked.status is RefundStatus.PENDING and linked.check_count == 0:
            return self._submit(linked, adapter)
        return linked

    def handle_notification(self, route: Route | str, headers: Mapping[str, str],
                            body: bytes) -> NotificationAck:
        """Verify and apply a channel notification; returns what to answer over HTTP.

        A forged, stale or replayed notification, or one whose amount or merchant does
        not match the stored refund, changes nothing and is logged on the security log.
        """
        try:
            route = Route(route)
            adapter = self._adapter(route)
        except (ValueError, ConfigurationError):
            security_log.warning("notification.unknown_route", route=str(route))
            return NotificationAck(404, b"unknown route", accepted=False)
        now = self._clock()
        try:
            result = adapter.parse_notification(headers, body)
        except ChannelError as exc:
            security_log.warning("notification.rejected", route=route.value,
                                 **exc.describe())
            return adapter.notification_ack(False)
        failpoints.failpoint(failpoints.IN_NOTIFICATION)

        def accept(refund: Refund) -> str | None:
            if refund.route is not route:
                return "unknown_refund"
            if result.amount is not None and result.amount != refund.amount:
                return "amount_mismatch"
            return None

        outcome, refund = self.store.apply_notification(
            route, channel_refund_no=result.channel_refund_no, replay_key=result.replay_key,
            event_id=result.event_id, now=now, accept=accept,
            decide=self._decider(result, now, adapter, kind=EventKind.NOTIFICATION),
            relaxed=self._relearnable(route, result.status))
        if outcome != "applied" or refund is None:
            security_log.warning(f"notification.{outcome}", route=route.value,
                                 event_id=result.event_id,
                                 channel_refund_no=result.channel_refund_no,
                                 refund_id=refund.id if refund else None,
                                 stated_minor=result.amount.minor if result.amount else None)
            return adapter.notification_ack(False)
        log.info("notification.applied", refund_id=refund.id, route=route.value,
                 status=refund.status.value, event_id=result.event_id)
        ack = adapter.notification_ack(True)
        return NotificationAck(ack.http_status, ack.body, ack.content_type, refund.id, True)

    def close(self) -> None:
        for adapter in self.adapters.values():
            adapter.close()
        self.store.engine.dispose()

    # -- internals --------------------------------------------------------------------
    def _adapter(self, route: Route) -> ChannelAdapter:
        try:
            return self.adapters[route]
        except KeyError:
            raise ConfigurationError(
                f"route {route.value} is not configured (set REFUND_GATEWAY_"
                f"{route.value.upper()}__...)", setting=f"REFUND_GATEWAY_{route.value.upper()}"
            ) from None

    def _arrival(self, adapter: ChannelAdapter, moment: datetime) -> ArrivalWindow | None:
        try:
            return expected_arrival(adapter.route, moment)
        except CalendarRangeError as exc:
            log.warning("calendar.out_of_range", error=str(exc))
            return None

    def _submit(self, refund: Refund, adapter: ChannelAdapter) -> Refund:
        started = self._clock()
        policy = resend_policy(self._retry, self._sleep)
        attempt_no = 0

        def call() -> ChannelResult:
            nonlocal attempt_no, started
            attempt_no += 1
            started = self._clock()
            try:
                return adapter.submit(refund)
            except ChannelUnavailable as exc:
                self._note_error(refund, "submit", exc, started, attempt_no)
                raise

        try:
            result = policy(call)
        except ChannelUnavailable as exc:
            return self._after_error(refund, exc, adapter, recorded=True)
        except ChannelError as exc:
            self._note_error(refund, "submit", exc, started, attempt_no)
            return self._after_error(refund, exc, adapter, recorded=True)
        failpoints.failpoint(failpoints.AFTER_ANSWER)
        return self._record(refund, "submit", result, started, adapter)

    def _check(self, refund: Refund) -> Refund:
        """Query the channel; resend under the same number when it has no record."""
        adapter = self._adapter(refund.route)
        if not adapter.capabilities.refund_query:
            if adapter.capabilities.idempotent_submit:
                return self._submit(refund, adapter)
            return self._reschedule(refund, adapter, "no query and no idempotent submit")
        started = self._clock()
        try:
            result = adapter.query(refund)
        except ChannelError as exc:
            self._note_error(refund, "query", exc, started, 1)
            return self._after_error(refund, exc, adapter, recorded=True)
        if (result.status is ChannelStatus.NOT_FOUND
                and refund.status in (RefundStatus.PENDING, RefundStatus.PROCESSING)):
            recorded = self._record(refund, "query", result, started, adapter)
            if adapter.capabilities.idempotent_submit:
                self._resends += 1
                log.info("resolver.resend", refund_id=refund.id,
                         channel_refund_no=refund.channel_refund_no)
                return self._submit(recorded, adapter)
            return recorded
        return self._record(refund, "query", result, started, adapter)

    def _note_error(self, refund: Refund, operation: str, exc: ChannelError,
                    started: datetime, attempt_no: int) -> None:
        now = self._clock()
        log.warning("channel.error", refund_id=refund.id, route=refund.route.value,
                    attempt=attempt_no, **exc.describe())
        self.store.apply(refund.id, lambda _: None, now=now, attempt=Attempt(
            refund_id=refund.id, operation=operation, started_at=started, finished_at=now,
            outcome=type(exc).__name__, http_status=exc.http_status, code=exc.code,
            request_id=exc.request_id, raw={"message": exc.message}),
            relaxed=self._relearnable(refund.route, None))

    def _after_error(self, refund: Refund, exc: ChannelError, adapter: ChannelAdapter, *,
                     recorded: bool) -> Refund:
        """Unknown is never failure: keep the refund open with a next check."""
        now = self._clock()
        if isinstance(exc, ChannelUnavailable):
            # Provably not sent: status unchanged; the resolver resends.
            delay = adapter.capabilities.query_schedule[0]
            status = None
        elif isinstance(exc, ChannelAuthError):
            log.error("channel.credentials_rejected", refund_id=refund.id,
                      route=refund.route.value)
            delay, status = AUTH_RECHECK, None
        else:
            delay = timedelta(seconds=self._resolver.first_check_seconds)
            status = RefundStatus.PROCESSING if refund.status is RefundStatus.PENDING else None

        def decide(current: Refund) -> Decision | None:
            if current.status.is_final or current.status is RefundStatus.ABNORMAL:
                return None
            step = delay if current.check_count == 0 else self._backoff(adapter, current)
            return Decision(status=status if current.status is RefundStatus.PENDING else None,
                            fields={"next_check_at": now + step,
                                    "check_count": current.check_count + 1})

        return self.store.apply(refund.id, decide, now=now,
                                relaxed=self._relearnable(refund.route, None))

    def _relearnable(self, route: Route, status: ChannelStatus | None) -> bool:
        """Whether losing this record in a power cut is harmless because the resolver
        will ask the channel again (RefundStore's docstring): the route can be queried
        and the answer is not a refusal."""
        return (self._adapter(route).capabilities.refund_query
                and status not in (ChannelStatus.FAILED, ChannelStatus.CLOSED))

    def _backoff(self, adapter: ChannelAdapter, refund: Refund) -> timedelta:
        schedule = adapter.capabilities.query_schedule
        return schedule[min(refund.check_count, len(schedule) - 1)]

    def _reschedule(self, refund: Refund, adapter: ChannelAdapter, why: str) -> Refund:
        now = self._clock()
        log.warning("resolver.cannot_check", refund_id=refund.id, reason=why)
        return self.store.apply(refund.id, lambda cur: Decision(fields={
            "next_check_at": now + self._backoff(adapter, cur),
            "check_count": cur.check_count + 1}), now=now)

    def _record(self, refund: Refund, operation: str, result: ChannelResult,
                started: datetime, adapter: ChannelAdapter) -> Refund:
        now = self._clock()
        attempt = Attempt(
            refund_id=refund.id, operation=operation, started_at=started, finished_at=now,
            outcome=result.status.value, code=result.failure_code, raw=result.raw)
        after = self.store.apply(refund.id, self._decider(result, now, adapter), now=now,
                                 attempt=attempt,
                                 relaxed=self._relearnable(refund.route, result.status))
        if after.status is not refund.status:
            log.info("refund.status", refund_id=refund.id, route=refund.route.value,
                     status_from=refund.status.value, status_to=after.status.value,
                     operation=operation)
        return after

    def _decider(self, result: ChannelResult, now: datetime, adapter: ChannelAdapter, *,
                 kind: EventKind | None = None) -> Callable[[Refund], Decision | None]:
        """How a verified channel answer changes a refund, decided under its lock."""

        def decide(current: Refund) -> Decision | None:
            events: list[tuple[EventKind, Mapping[str, Any]]] = []
            if kind is EventKind.NOTIFICATION:
                events.append((kind, {"status": result.status.value,
                                      "event_id": result.event_id, "answer": result.raw}))
            if (result.amount is not None and result.amount != current.amount):
                events.append((EventKind.CONFLICT, {
                    "reason": "channel states another amount",
                    "channel_minor": result.amount.minor, "stored_minor": current.amount.minor}))
                log.error("channel.amount_conflict", refund_id=current.id,
                          channel_minor=result.amount.minor, stored_minor=current.amount.minor)
            target = target_for(current.status, result.status)
            fields: dict[str, Any] = {}
            if result.channel_refund_id and not current.channel_refund_id:
                fields["channel_refund_id"] = result.channel_refund_id
            if result.received_account:
                fields["received_account"] = mask_stored_account(result.received_account)[:128]
            if result.bank_ack:
                fields["bank_ack"] = {**current.bank_ack, **result.bank_ack}
            if current.status.is_final:
                # A stale PROCESSING (or not-found) answer overtaken by a notification is
                # no contradiction; only a different final status is.
                if result.status.value != current.status.value and result.status not in (
                        ChannelStatus.NOT_FOUND, ChannelStatus.PROCESSING):
                    events.append((EventKind.CONFLICT, {
                        "reason": "channel contradicts a final status",
                        "stored": current.status.value, "channel": result.status.value}))
                    log.error("channel.final_status_conflict", refund_id=current.id,
                              stored=current.status.value, channel=result.status.value)
                return Decision(fields=fields, events=events) if (fields or events) else None
            if target is RefundStatus.SUCCEEDED:
                moment = result.succeeded_at or now
                fields.update(succeeded_at=moment, next_check_at=None,
                              failure_code=None, failure_message=None)
                arrival = self._arrival(adapter, moment)
                if arrival is not None:
                    fields.update(arrival_earliest=arrival.earliest,
                                  arrival_latest=arrival.latest)
            elif target in (RefundStatus.FAILED, RefundStatus.CLOSED, RefundStatus.ABNORMAL):
                fields.update(next_check_at=None, failure_code=result.failure_code,
                              failure_message=(result.failure_message or "")[:512] or None)
            elif result.status is ChannelStatus.NOT_FOUND:
                fields.update(next_check_at=now)   # resend is due at once
            else:   # PROCESSING (or an answer that does not move this status)
                fields.update(next_check_at=now + self._backoff(adapter, current),
                              check_count=current.check_count + 1)
            if target is RefundStatus.PENDING:
                target = None
            if target is None and current.status is RefundStatus.PENDING and \
                    result.status is not ChannelStatus.NOT_FOUND:
                target = RefundStatus.PROCESSING
            return Decision(status=target, fields=fields, events=events)

        return decide

    def _abnormal_via_channel(self, refund: Refund, instruction: AbnormalRefundInstruction,
                              note: str) -> Refund:
        adapter = self._adapter(refund.route)
        if not (adapter.capabilities.abnormal_refund_api
                and isinstance(adapter, AbnormalRefundPort)):
            raise InvalidRequest(f"{refund.route.value} has no abnormal-refund API; "
                                 f"reroute to another route instead", field="instruction")
        now = self._clock()
        self.store.apply(refund.id, lambda _: Decision(
            status=RefundStatus.PROCESSING,
            fields={"next_check_at": now + SUBMIT_GRACE, "check_count": 0},
            events=[(EventKind.REROUTED, {"via": "channel_abnormal_refund",
                                          "target": instruction.target.value,
                                          "note": note})]), now=now)
        failpoints.failpoint(failpoints.IN_REROUTE)
        started = self._clock()
        current = self.store.get(refund.id)
        try:
            result = adapter.apply_abnormal_refund(current, instruction)
        except ChannelError as exc:
            self._note_error(current, "abnormal_refund", exc, started, 1)
            return self._after_error(current, exc, adapter, recorded=True)
        return self._record(current, "abnormal_refund", result, started, adapter)
