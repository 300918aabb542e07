"""A refund's rules, in one place and pure: (refund, evidence, now, capabilities) -> Change.

Every transition of a refund is decided here: a channel's answer (to a submit, a query or
an abnormal-refund application), a channel error, a notification, a reroute, a check
that cannot be made. Nothing here does I/O, reads a clock or a setting, or logs: the
service gathers the evidence, asks this module, and hands the ``Change`` to the store's
unit of work, which is the only code that turns it into columns.

Why one module: the paths on which a customer could be paid twice (a stale ABNORMAL
notification reopening a refund that was already handed to WeChat's abnormal-refund API,
a success arriving for a refund whose amount was released) each lived where the rules
were spread over service closures, the state table and the repository. Here each one is
a row of a table test (``tests/unit/core/test_lifecycle.py``).

Age never moves a refund (DESIGN.md invariant 4; Jeepay's 2-hour auto-close is the
anti-pattern): every change below is taken on evidence, or is only a new check time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum, StrEnum
from typing import Any, Final, Literal

from gateway.calendar import arrival_window
from gateway.errors import CalendarRangeError
from gateway.models import (
    ArrivalWindow,
    ChannelResult,
    ChannelStatus,
    EventKind,
    Refund,
    RefundStatus,
)
from gateway.ports import Capabilities

S = RefundStatus

# Which status may follow which. Only evidence takes an edge; the self-edges are
# "evidence that changes no status" (a refreshed bank acknowledgement, a next check).
ALLOWED: Final[Mapping[RefundStatus, frozenset[RefundStatus]]] = {
    S.PENDING: frozenset({S.PENDING, S.PROCESSING, S.SUCCEEDED, S.FAILED, S.CLOSED,
                          S.ABNORMAL}),
    S.PROCESSING: frozenset({S.PROCESSING, S.SUCCEEDED, S.FAILED, S.CLOSED, S.ABNORMAL}),
    # ABNORMAL is left by reroute() (REROUTED, or PROCESSING through the channel's own
    # abnormal-refund API), or by evidence that the money arrived after all.
    S.ABNORMAL: frozenset({S.ABNORMAL, S.PROCESSING, S.REROUTED, S.SUCCEEDED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CLOSED: frozenset(),
    # A REROUTED original stays REROUTED; a failed linked refund is replaced by another.
    S.REROUTED: frozenset({S.REROUTED}),
}

# Released: the amount no longer counts against the payment (models.RefundStatus).
RELEASED: Final = frozenset({S.FAILED, S.CLOSED, S.REROUTED})

_FROM_CHANNEL: Final[Mapping[ChannelStatus, RefundStatus]] = {
    ChannelStatus.PROCESSING: S.PROCESSING,
    ChannelStatus.SUCCEEDED: S.SUCCEEDED,
    ChannelStatus.FAILED: S.FAILED,
    ChannelStatus.CLOSED: S.CLOSED,
    ChannelStatus.ABNORMAL: S.ABNORMAL,
}

# A PENDING refund whose submit is still in flight is not picked up by a resolver.
SUBMIT_GRACE: Final = timedelta(seconds=60)
# Credentials rejected: nothing moved; look again after an operator had time to fix them.
AUTH_RECHECK: Final = timedelta(hours=1)


class InvalidTransition(Exception):
    """A programming error: a change asked for an edge the machine does not have."""


def can_move(current: RefundStatus, target: RefundStatus) -> bool:
    return target in ALLOWED[current]


def check(current: RefundStatus, target: RefundStatus) -> None:
    if not can_move(current, target):
        raise InvalidTransition(f"{current.value} -> {target.value} is not allowed")


class _Keep(Enum):
    KEEP = "keep"


KEEP: Final = _Keep.KEEP
"""An ``Update`` field left at ``KEEP`` is not written."""


@dataclass(frozen=True, slots=True)
class Update:
    """The columns a change writes, typed; ``KEEP`` leaves a column as it is."""

    channel_refund_id: str | Literal[_Keep.KEEP] = KEEP
    succeeded_at: datetime | Literal[_Keep.KEEP] | None = KEEP
    next_check_at: datetime | Literal[_Keep.KEEP] | None = KEEP
    check_count: int | Literal[_Keep.KEEP] = KEEP
    failure_code: str | Literal[_Keep.KEEP] | None = KEEP
    failure_message: str | Literal[_Keep.KEEP] | None = KEEP
    received_account: str | Literal[_Keep.KEEP] = KEEP
    bank_ack: Mapping[str, str] | Literal[_Keep.KEEP] = KEEP
    expected_arrival: ArrivalWindow | Literal[_Keep.KEEP] = KEEP
    rerouted_to: str | Literal[_Keep.KEEP] = KEEP
    linked_refunds: tuple[str, ...] | Literal[_Keep.KEEP] = KEEP
    abnormal_applied_at: datetime | Literal[_Keep.KEEP] = KEEP
    paid_after_release_at: datetime | Literal[_Keep.KEEP] = KEEP

    def written(self) -> dict[str, Any]:
        """The fields this update writes, by name."""
        return {name: value for name in self.__slots__
                if (value := getattr(self, name)) is not KEEP}


@dataclass(frozen=True, slots=True)
class Note:
    """One event to append to the refund's evidence trail."""

    kind: EventKind
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Alarm:
    """Money moved after its amount was released: finance must recover it (paid twice)."""

    refund_id: str
    released_as: RefundStatus
    amount_minor: int
    currency: str
    linked_refunds: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Change:
    """What one piece of evidence does to one refund. ``status`` None: unchanged.

    ``durable``: the store must sync this commit whatever the caller asked for (a final
    outcome the caller is told about, or an amount released or counted again)."""

    status: RefundStatus | None = None
    update: Update = field(default_factory=Update)
    notes: tuple[Note, ...] = ()
    durable: bool = False
    alarm: Alarm | None = None
    warnings: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return self.status is None and not self.update.written() and not self.notes

    def moves(self, current: RefundStatus) -> bool:
        return self.status is not None and self.status is not current


NO_CHANGE: Final = Change()


class Source(StrEnum):
    """Where a verified channel answer came from."""

    SUBMIT = "submit"
    QUERY = "query"
    NOTIFICATION = "notification"
    ABNORMAL_REFUND = "abnormal_refund"


class Failure(StrEnum):
    """What a channel error proves (gateway.errors): the service maps the class here."""

    UNAVAILABLE = "unavailable"   # provably not sent: status unchanged, resend due
    AUTH = "auth"                 # our credentials rejected: nothing moved
    UNKNOWN = "unknown"           # sent, answer not established: query first


def backoff(caps: Capabilities, refund: Refund) -> timedelta:
    schedule = caps.query_schedule
    return schedule[min(refund.check_count, len(schedule) - 1)]


def _arrival(caps: Capabilities, moment: datetime) -> tuple[ArrivalWindow | None, str | None]:
    try:
        return arrival_window(caps.arrival_working_days, moment), None
    except CalendarRangeError as exc:
        return None, str(exc)


def initial_arrival(caps: Capabilities, now: datetime) -> tuple[ArrivalWindow | None,
                                                                  str | None]:
    """The arrival estimate a new refund is stored with (refreshed when it succeeds)."""
    return _arrival(caps, now)


# -- answers ----------------------------------------------------------------------------
def on_answer(current: Refund, result: ChannelResult, *, source: Source, now: datetime,
              caps: Capabilities) -> Change:
    """A verified channel answer about ``current`` (submit, query, abnormal refund or
    notification; see ``on_notification`` for what a notification adds first)."""
    notes: list[Note] = []
    if result.amount is not None and result.amount != current.amount:
        notes.append(Note(EventKind.CONFLICT, {
            "reason": "channel states another amount", "channel_minor": result.amount.minor,
            "stored_minor": current.amount.minor}))
    evidence = _evidence(current, result)
    status = current.status
    if status in RELEASED and result.status is ChannelStatus.SUCCEEDED:
        return _paid_after_release(current, result, source, now, evidence, notes)
    if status.is_final:
        if (result.status.value != status.value
                and result.status not in (ChannelStatus.NOT_FOUND, ChannelStatus.PROCESSING)):
            # A stale PROCESSING (or not-found) answer overtaken by a notification is no
            # contradiction; only a different final status is.
            notes.append(Note(EventKind.CONFLICT, {
                "reason": "channel contradicts a final status", "stored": status.value,
                "channel": result.status.value}))
        return Change(update=evidence, notes=tuple(notes))
    if status is S.ABNORMAL:
        return _abnormal_answer(current, result, now, caps, evidence, notes)
    return _open_answer(current, result, source, now, caps, evidence, notes)


def _evidence(current: Refund, result: ChannelResult) -> Update:
    """What any verified answer adds, whatever the status: ids and bank acknowledgements."""
    return Update(
        channel_refund_id=result.channel_refund_id
        if result.channel_refund_id and not current.channel_refund_id else KEEP,
        received_account=result.received_account[:128] if result.received_account
        else KEEP,
        bank_ack={**current.bank_ack, **result.bank_ack} if result.bank_ack else KEEP)


def _with(update: Update, **fields: Any) -> Update:
    return Update(**{**update.written(), **fields})


def _succeeded(current: Refund, result: ChannelResult, now: datetime, caps: Capabilities,
               evidence: Update, notes: Sequence[Note]) -> Change:
    moment = result.succeeded_at or now
    arrival, warning = _arrival(caps, moment)
    return Change(
        status=S.SUCCEEDED,
        update=_with(evidence, succeeded_at=moment, next_check_at=None, failure_code=None,
                     failure_message=None,
                     **({"expected_arrival": arrival} if arrival else {})),
        notes=tuple(notes), durable=True, warnings=(warning,) if warning else ())


def _refused(target: RefundStatus, result: ChannelResult, evidence: Update,
             notes: Sequence[Note]) -> Change:
    return Change(
        status=target,
        update=_with(evidence, next_check_at=None, failure_code=result.failure_code,
                     failure_message=(result.failure_message or "")[:512] or None),
        notes=tuple(notes), durable=True)


def _open_answer(current: Refund, result: ChannelResult, source: Source, now: datetime,
                 caps: Capabilities, evidence: Update, notes: list[Note]) -> Change:
    """PENDING or PROCESSING: the answer decides."""
    channel = result.status
    if channel is ChannelStatus.SUCCEEDED:
        return _succeeded(current, result, now, caps, evidence, notes)
    if channel is ChannelStatus.ABNORMAL and source is Source.NOTIFICATION and \
            current.abnormal_applied_at is not None and not _postdates(
                result.occurred_at, current.abnormal_applied_at):
        # CH §5.6: after an abnormal-refund application, a REFUND.ABNORMAL notification
        # that does not postdate it is the old news being redelivered; reopening would
        # let a second reroute() pay the user again.
        notes.append(Note(EventKind.IGNORED, {
            "reason": "abnormal notification older than the abnormal-refund application",
            "notified_at": result.occurred_at.isoformat() if result.occurred_at else None,
            "applied_at": current.abnormal_applied_at.isoformat()}))
        return Change(update=evidence, notes=tuple(notes))
    if channel in (ChannelStatus.FAILED, ChannelStatus.CLOSED, ChannelStatus.ABNORMAL):
        return _refused(_FROM_CHANNEL[channel], result, evidence, notes)
    if channel is ChannelStatus.NOT_FOUND:
        # The channel has no record: resend under the same number, at once (the check that
        # asked does, RefundGateway._check). Never failed. Until that resend is recorded
        # the refund is hidden from other resolvers for a submit's grace, as a new refund
        # is: due "now", a peer would claim it and query it again mid-resend (issue 21).
        return Change(update=_with(evidence, next_check_at=now + SUBMIT_GRACE),
                      notes=tuple(notes))
    # PROCESSING: accepted, not yet final.
    return Change(
        status=S.PROCESSING if current.status is S.PENDING else None,
        update=_with(evidence, next_check_at=now + backoff(caps, current),
                     check_count=current.check_count + 1),
        notes=tuple(notes))


def _postdates(occurred: datetime | None, applied: datetime) -> bool:
    return occurred is not None and occurred > applied


def _abnormal_answer(current: Refund, result: ChannelResult, now: datetime,
                     caps: Capabilities, evidence: Update, notes: list[Note]) -> Change:
    """ABNORMAL waits for reroute(); only proof that the money arrived moves it."""
    if result.status is ChannelStatus.SUCCEEDED:
        return _succeeded(current, result, now, caps, evidence, notes)
    return Change(update=evidence, notes=tuple(notes))


def _paid_after_release(current: Refund, result: ChannelResult, source: Source,
                        now: datetime, evidence: Update, notes: list[Note]) -> Change:
    """DESIGN "paid twice": a verified success for a refund whose amount was released."""
    if current.paid_after_release_at is not None:
        notes.append(Note(EventKind.CONFLICT, {
            "reason": "channel repeats a success after release (already alarmed)",
            "stored": current.status.value}))
        return Change(update=evidence, notes=tuple(notes))
    linked = tuple(current.linked_refunds) or (
        (current.rerouted_to,) if current.rerouted_to else ())
    alarm = Alarm(refund_id=current.id, released_as=current.status,
                  amount_minor=current.amount.minor, currency=current.amount.currency,
                  linked_refunds=linked)
    notes.append(Note(EventKind.PAID_AFTER_RELEASE, {
        "released_as": current.status.value, "amount_minor": current.amount.minor,
        "currency": current.amount.currency, "linked_refunds": list(linked),
        "source": source.value, "channel_refund_id": result.channel_refund_id,
        "succeeded_at": (result.succeeded_at or now).isoformat()}))
    return Change(update=_with(evidence, paid_after_release_at=now), notes=tuple(notes),
                  durable=True, alarm=alarm)


# -- notifications ----------------------------------------------------------------------
def on_notification(current: Refund, result: ChannelResult, *, now: datetime,
                    caps: Capabilities) -> Change:
    """A verified notification: recorded as evidence, then decided like any answer."""
    decided = on_answer(current, result, source=Source.NOTIFICATION, now=now, caps=caps)
    note = Note(EventKind.NOTIFICATION, {"status": result.status.value,
                                         "event_id": result.event_id, "answer": result.raw})
    return Change(status=decided.status, update=decided.update,
                  notes=(note, *decided.notes), durable=decided.durable,
                  alarm=decided.alarm, warnings=decided.warnings)


def duplicate_notification(result: ChannelResult) -> Change:
    """A notification whose event id was applied before: recorded, nothing changes."""
    return Change(notes=(Note(EventKind.DUPLICATE_NOTIFICATION, {
        "event_id": result.event_id, "status": result.status.value}),))


# -- errors and checks ------------------------------------------------------------------
def on_error(current: Refund, failure: Failure, *, now: datetime, caps: Capabilities,
             first_check: timedelta) -> Change:
    """Unknown is never failure: keep the refund open with a next check."""
    if current.status.is_final or current.status is S.ABNORMAL:
        return NO_CHANGE
    if failure is Failure.UNAVAILABLE:
        delay, status = caps.query_schedule[0], None
    elif failure is Failure.AUTH:
        delay, status = AUTH_RECHECK, None
    else:
        delay = first_check
        status = S.PROCESSING if current.status is S.PENDING else None
    step = delay if current.check_count == 0 else backoff(caps, current)
    return Change(status=status, update=Update(next_check_at=now + step,
                                               check_count=current.check_count + 1))


def cannot_check(current: Refund, *, now: datetime, caps: Capabilities) -> Change:
    """The route can neither be queried nor resent safely: look again later."""
    return Change(update=Update(next_check_at=now + backoff(caps, current),
                                check_count=current.check_count + 1))


# -- reroutes ---------------------------------------------------------------------------
REROUTABLE_ANSWERS: Final = frozenset({ChannelStatus.ABNORMAL, ChannelStatus.FAILED,
                                       ChannelStatus.CLOSED})
LIVE: Final = frozenset({S.PENDING, S.PROCESSING, S.SUCCEEDED, S.ABNORMAL})


def reroute_refusal(current: Refund, confirmed: ChannelStatus | None) -> str | None:
    """Why ``current`` may not be rerouted now, or None when it may.

    ``confirmed`` is what the original route answered when asked just now (None when the
    original was rerouted before and its linked refund is what failed). Only an ABNORMAL
    refund the channel confirms as ABNORMAL, or as finally unsuccessful, is rerouted:
    anything else may still pay the user on the original route."""
    if current.status is S.REROUTED:
        return None
    if current.status is not S.ABNORMAL:
        return (f"only abnormal refunds can be rerouted; {current.id} is "
                f"{current.status.value}")
    if confirmed is None or confirmed not in REROUTABLE_ANSWERS:
        return (f"the channel does not confirm {current.id} as abnormal or failed "
                f"(it says {confirmed.value if confirmed else 'nothing'}); it may still "
                f"pay out on {current.route.value}, so it is not rerouted")
    return None


def reroute(current: Refund, *, linked_id: str, route: str, note: str,
            confirmed: ChannelStatus | None) -> Change:
    """The original's side of a reroute: REROUTED, pointing at its (new) linked refund.
    ``linked_refunds`` keeps the whole chain when a failed linked refund is replaced."""
    chain = (*current.linked_refunds, linked_id)
    return Change(
        status=S.REROUTED,
        update=Update(rerouted_to=linked_id, next_check_at=None, linked_refunds=chain),
        notes=(Note(EventKind.REROUTED, {
            "linked_refund": linked_id, "route": route, "note": note,
            "attempt_no": len(chain),
            "channel_confirmed": confirmed.value if confirmed else None,
            "replaces": current.linked_refunds[-1] if current.linked_refunds else None}),),
        durable=True)


def abnormal_application(current: Refund, *, target: str, note: str, now: datetime,
                         confirmed: ChannelStatus) -> Change:
    """An ABNORMAL refund handed to the channel's own abnormal-refund API (CH §5.6): the
    same refund goes on, PROCESSING, and remembers when it was applied for, so an older
    ABNORMAL notification cannot reopen it (``on_answer``)."""
    return Change(
        status=S.PROCESSING,
        update=Update(next_check_at=now + SUBMIT_GRACE, check_count=0,
                      abnormal_applied_at=now),
        notes=(Note(EventKind.REROUTED, {"via": "channel_abnormal_refund", "target": target,
                                         "note": note,
                                         "channel_confirmed": confirmed.value}),),
        durable=True)
