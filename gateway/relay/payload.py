"""What a relay sends for one outbox event: the JSON body (schema
``refund-gateway.event/v1``, documented in README "Refund events" and
``docs/operations/refund-event.schema.json``) and the broker routing key.

The body is built once per event and kept (``relay_deliveries.body``), so every attempt
and a replay send the same bytes, and receivers dedupe on ``event_id``.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from gateway.models import OutboxEvent

SCHEMA = "refund-gateway.event/v1"
EVENT_TYPE = "refund.status_changed"


def event_document(event: OutboxEvent) -> dict[str, Any]:
    """The event as the JSON object receivers read (amounts in minor units)."""
    return {
        "schema": SCHEMA,
        "type": EVENT_TYPE,
        "event_id": event.event_id,
        "sequence": event.cursor,
        "refund_id": event.refund_id,
        "idempotency_key": event.idempotency_key,
        "merchant_order_no": event.merchant_order_no,
        "route": event.route.value,
        "status_from": event.status_from.value if event.status_from else None,
        "status_to": event.status_to.value,
        "amount": {"minor": event.amount.minor, "currency": event.amount.currency},
        "at": event.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


def event_body(event: OutboxEvent) -> bytes:
    """Compact UTF-8 JSON with sorted keys (stable bytes for one event)."""
    return json.dumps(event_document(event), ensure_ascii=False, sort_keys=True,
                      separators=(",", ":")).encode("utf-8")


def routing_key(event: OutboxEvent) -> str:
    """``refund.<route>.<status>``: bind ``refund.#``, ``refund.*.succeeded``, ..."""
    return f"refund.{event.route.value}.{event.status_to.value}"
