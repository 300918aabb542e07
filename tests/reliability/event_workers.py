"""Processes of the event-delivery check (tests/reliability/test_event_delivery.py), run
in forked children and killed: a refund service making refunds, and a consumer of the
outbox in its own process writing what it saw to a file. Module-level for a forkserver.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Sequence
from typing import Any

from gateway import Route
from gateway.models import OutboxEvent
from tests.reliability.workers import gateway, request_for


def produce(env_file: str, db_url: str, payments_file: str) -> None:
    """Refund every payment of ``payments_file`` (one refund each, key ``ev-<i>``);
    idempotent, so a restarted process goes over the same list again."""
    with open(payments_file, encoding="utf-8") as fh:
        payments: list[dict[str, Any]] = json.load(fh)
    gw = gateway(env_file, db_url, sorted({Route(p["route"]) for p in payments},
                                          key=lambda r: r.value))
    for i, payment in enumerate(payments):
        gw.refund(request_for(payment, f"ev-{i}", payment["amount_fen"] // 2))
    gw.close()


def consume(env_file: str, db_url: str, out_file: str, consumer: str) -> None:
    """``subscribe`` until SIGTERM; every event handed over is appended to ``out_file``
    (and synced) before the handler returns, so the file holds at least what the
    consumer's committed cursor says it took."""
    gw = gateway(env_file, db_url, [])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    fd = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def handler(events: Sequence[OutboxEvent]) -> None:
        lines = "".join(json.dumps({
            "event_id": e.event_id, "cursor": e.cursor, "refund_id": e.refund_id,
            "from": e.status_from.value if e.status_from else None,
            "to": e.status_to.value, "pid": os.getpid()}) + "\n" for e in events)
        os.write(fd, lines.encode("utf-8"))
        os.fsync(fd)

    try:
        gw.subscribe(handler, consumer=consumer, stop=stop, batch=50, poll_interval=0.05)
    finally:
        os.close(fd)
        gw.close()
