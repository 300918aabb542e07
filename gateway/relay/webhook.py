"""The webhook relay: every outbox event POSTed, signed, to one URL, until it is taken.

Two loops share a ``RelayStore``: the outbox consumer (``gateway.events.run_consumer``,
consumer name ``relay:<name>``) queues one delivery per event, and its cursor moves only
once they are queued; the dispatcher sends what is due. So a receiver that is down
holds nothing up in the outbox, and each event has its own retry schedule (default 1
min, 5 min, 30 min, 2 h, then daily, three times); when the schedule runs out the
delivery is dead (``relay dead-letters``) until ``relay replay`` queues it again.
Success is any 2xx. Every attempt is recorded (``relay_attempts``); the body is the
same bytes each time (``gateway.relay.payload``), signed afresh (``signing``). A
refund's events go out in order (``RelayStore.claim_due``). Delivery is at least once:
receivers dedupe on ``event_id``. Never raises out of ``run``; a database outage is
logged and retried.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import requests
import structlog

from gateway.clock import Clock, utcnow
from gateway.events import run_consumer
from gateway.models import OutboxEvent
from gateway.relay import signing
from gateway.relay.payload import event_body
from gateway.relay.store import DEAD, DELIVERED, PENDING, AttemptRecord, Delivery, RelayStore
from gateway.store import RefundStore

log = structlog.get_logger("gateway.relay.webhook")

DEFAULT_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2),
    timedelta(days=1), timedelta(days=1), timedelta(days=1))


def parse_schedule(text: str) -> tuple[timedelta, ...]:
    """``"1m,5m,30m,2h,1d*3"``: delays after the 1st, 2nd, ... failure (s, m, h, d;
    ``*N`` repeats). An empty schedule dead-letters at the first failure."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    out: list[timedelta] = []
    for raw in (p.strip() for p in text.split(",")):
        if not raw:
            continue
        item, _, times = raw.partition("*")
        unit = item[-1] if item[-1] in units else "s"
        number = item[:-1] if item[-1] in units else item
        try:
            delay = timedelta(seconds=float(number) * units[unit])
            count = int(times) if times else 1
        except ValueError:
            raise ValueError(f"bad schedule item {raw!r} (e.g. 30s, 5m, 2h, 1d*3)") from None
        if delay < timedelta(0) or count < 1:
            raise ValueError(f"bad schedule item {raw!r}")
        out.extend([delay] * count)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class DispatchReport:
    attempted: int
    delivered: int
    retrying: int
    dead: int


def _excerpt(response: requests.Response) -> str:
    return response.content[:200].decode("utf-8", "replace")


class WebhookRelay:
    """POST the outbox to ``url``, signed with ``secrets`` (the first is current; every
    one signs, for rotation). ``schedule``: the delays after each failure."""

    def __init__(self, store: RefundStore, *, url: str, secrets: Sequence[str],
                 name: str = "webhook", schedule: Sequence[timedelta] = DEFAULT_SCHEDULE,
                 connect_timeout: float = 5.0, read_timeout: float = 10.0,
                 clock: Clock = utcnow, session: requests.Session | None = None,
                 lease: timedelta = timedelta(minutes=2), batch: int = 100,
                 wall_clock: Callable[[], float] = time.time) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("the webhook URL must be http(s)://...")
        if not secrets or not all(secrets):
            raise ValueError("the webhook relay needs a signing secret")
        self.store = store
        self.relays = RelayStore(store.engine)
        self.url = url
        self.name = name
        self._secrets = list(secrets)
        self._schedule = tuple(schedule)
        self._timeout = (connect_timeout, read_timeout)
        self._clock = clock
        self._wall = wall_clock
        self._session = session or requests.Session()
        self._lease = lease
        self._batch = batch
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    @property
    def consumer(self) -> str:
        return f"relay:{self.name}"

    # -- the outbox side ------------------------------------------------------------------
    def enqueue(self, events: Sequence[OutboxEvent]) -> None:
        """The outbox handler: queue a delivery per event (idempotent)."""
        new = self.relays.enqueue(self.name, [(e, event_body(e)) for e in events],
                                  now=self._clock())
        if new:
            log.debug("relay.queued", relay=self.name, events=new)

    # -- the receiver side ----------------------------------------------------------------
    def deliver_due(self, *, ids: Sequence[int] | None = None,
                    stop: threading.Event | None = None) -> DispatchReport:
        """Send every due delivery once (in order per refund); returns what came of it."""
        attempted = delivered = retrying = dead = 0
        while stop is None or not stop.is_set():
            due = self.relays.claim_due(self.name, now=self._clock(), owner=self.owner,
                                        lease=self._lease, limit=self._batch, ids=ids)
            if not due:
                break
            for index, delivery in enumerate(due):
                if stop is not None and stop.is_set():
                    self.relays.release([d.id for d in due[index:]], owner=self.owner,
                                        now=self._clock())
                    break
                status = self.attempt(delivery)
                attempted += 1
                delivered += status == DELIVERED
                retrying += status == PENDING
                dead += status == DEAD
        return DispatchReport(attempted, delivered, retrying, dead)

    def attempt(self, delivery: Delivery) -> str:
        """One POST of ``delivery``, recorded; returns its status afterwards."""
        number = delivery.attempts + 1
        started = self._clock()
        stamp = int(self._wall())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "refund-gateway-relay/1",
            signing.EVENT_ID_HEADER: delivery.event_id,
            signing.TIMESTAMP_HEADER: str(stamp),
            signing.SIGNATURE_HEADER: signing.signature_header(self._secrets, stamp,
                                                               delivery.body),
            signing.ATTEMPT_HEADER: str(number),
        }
        http_status: int | None = None
        response: str | None = None
        error: str | None = None
        try:
            answer = self._session.post(self.url, data=delivery.body, headers=headers,
                                        timeout=self._timeout, allow_redirects=False)
            http_status, response = answer.status_code, _excerpt(answer)
            outcome = "delivered" if 200 <= answer.status_code < 300 else "http_error"
        except requests.ConnectTimeout as exc:
            outcome, error = "connect_error", f"connect timeout: {exc}"
        except requests.Timeout as exc:
            outcome, error = "timeout", f"timeout: {exc}"
        except requests.ConnectionError as exc:
            outcome, error = "connect_error", f"connection failed: {exc}"
        except requests.RequestException as exc:
            outcome, error = "error", f"{type(exc).__name__}: {exc}"
        finished = self._clock()
        record = AttemptRecord(delivery.id, number, started, finished, outcome,
                               http_status, error, response)
        if outcome == "delivered":
            status, next_at = DELIVERED, None
        elif delivery.failures < len(self._schedule):
            status, next_at = PENDING, finished + self._schedule[delivery.failures]
        else:
            status, next_at = DEAD, None
        if not self.relays.record(delivery, record, owner=self.owner, status=status,
                                  next_attempt_at=next_at):
            log.warning("relay.lease_lost", relay=self.name, event_id=delivery.event_id)
            return delivery.status
        if status == DEAD:
            log.error("relay.dead_letter", relay=self.name, event_id=delivery.event_id,
                      refund_id=delivery.refund_id, attempts=number, outcome=outcome,
                      http_status=http_status)
        elif status == PENDING:
            log.warning("relay.retry", relay=self.name, event_id=delivery.event_id,
                        attempt=number, outcome=outcome, http_status=http_status,
                        next_attempt_at=next_at.isoformat() if next_at else None)
        return status

    def replay(self, *, event_ids: Sequence[str] | None = None,
               dead: bool = False) -> DispatchReport:
        """Queue the given events (or every dead letter) again from the start of the
        schedule, and send them now."""
        ids = self.relays.requeue(self.name, now=self._clock(), event_ids=event_ids,
                                  dead=dead)
        if not ids:
            return DispatchReport(0, 0, 0, 0)
        log.info("relay.replay", relay=self.name, deliveries=len(ids))
        return self.deliver_due(ids=ids)

    # -- running ----------------------------------------------------------------------
    def run_once(self) -> DispatchReport:
        """Queue what the outbox has for this relay, then send what is due (cron)."""
        while True:
            position = self.store.claim_consumer(self.consumer, owner=self.owner,
                                                 now=self._clock(), lease=self._lease)
            if position is None:
                break                      # another relay process owns the outbox now
            events = self.store.events_since(position, self._batch)
            if not events:
                self.store.release_consumer(self.consumer, owner=self.owner,
                                            now=self._clock())
                break
            self.enqueue(events)
            self.store.advance_consumer(self.consumer, owner=self.owner,
                                        position=events[-1].cursor, now=self._clock(),
                                        lease=self._lease)
        return self.deliver_due()

    def run(self, stop: threading.Event, *, poll_interval: float = 1.0) -> None:
        """Until ``stop``: the outbox consumer in a thread, the dispatcher here."""
        consumer = threading.Thread(
            target=run_consumer, name=f"relay-{self.name}-outbox",
            args=(self.store, self.enqueue),
            kwargs={"consumer": self.consumer, "stop": stop, "batch": self._batch,
                    "poll_interval": poll_interval, "clock": self._clock,
                    "owner": self.owner},
            daemon=True)
        consumer.start()
        try:
            while not stop.is_set():
                try:
                    report = self.deliver_due(stop=stop)
                except Exception as exc:  # the relay outlives faults; logged, retried
                    log.error("relay.dispatch_failed", relay=self.name,
                              error=type(exc).__name__, message=str(exc)[:300])
                    report = DispatchReport(0, 0, 0, 0)
                if not report.attempted:
                    stop.wait(poll_interval)
        finally:
            consumer.join(timeout=30)
            self._session.close()
