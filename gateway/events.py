"""Delivering the outbox to the refund service: a durable cursor per consumer name.

Why a loop here and not a callback in the service: the refund service must hear about
every status change, in order, even across crashes (DESIGN "Events"). The store writes
each change's outbox row in the change's own transaction; this loop reads after the
consumer's committed cursor, calls the handler, and commits the cursor only after the
handler returned. So delivery is at least once: a crash between the handler and the
commit redelivers that batch, and ``OutboxEvent.event_id`` lets the consumer dedupe.
Several processes may run one consumer name: a lease on the consumer row makes one of
them the owner of each batch; the others wait for the lease to pass.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta

import structlog

from gateway.clock import Clock, utcnow
from gateway.models import OutboxEvent
from gateway.store import RefundStore

log = structlog.get_logger("gateway.events")

Handler = Callable[[Sequence[OutboxEvent]], None]


def run_consumer(store: RefundStore, handler: Handler, *, consumer: str,
                 stop: threading.Event, batch: int = 100, poll_interval: float = 1.0,
                 lease: timedelta = timedelta(seconds=30), clock: Clock = utcnow,
                 owner: str | None = None) -> int:
    """Deliver batches to ``handler`` until ``stop`` is set; returns events delivered.

    A handler that raises leaves the cursor where it was: the batch is delivered again
    after ``poll_interval`` (logged; the loop does not die of it, nor of a database
    outage)."""
    me = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    delivered = 0
    try:
        while not stop.is_set():
            try:
                position = store.claim_consumer(consumer, owner=me, now=clock(), lease=lease)
                if position is None:           # another process owns the batch
                    stop.wait(poll_interval)
                    continue
                events = store.events_since(position, batch)
                if not events:
                    stop.wait(poll_interval)
                    continue
                handler(events)
                if store.advance_consumer(consumer, owner=me, position=events[-1].cursor,
                                          now=clock(), lease=lease):
                    delivered += len(events)
                else:
                    log.warning("events.lease_lost", consumer=consumer, owner=me)
            except Exception as exc:  # the consumer must outlive faults; logged, retried
                log.error("events.batch_failed", consumer=consumer,
                          error=type(exc).__name__, message=str(exc)[:300])
                stop.wait(poll_interval)
    finally:
        try:
            store.release_consumer(consumer, owner=me, now=clock())
        except Exception:  # best effort: the lease expires anyway
            log.warning("events.release_failed", consumer=consumer)
    return delivered
