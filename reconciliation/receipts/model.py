"""The transfer receipt (转账回执) as data: what a receipt states, nothing about how it looks.

A ``Receipt`` is plain strings and integers (money as minor units plus its text, times as
Beijing ISO-8601), so its canonical JSON is stable and signable. Everything a person reads
is already masked (``gateway.masking``, applied by ``build``); renderers only lay it out.
No I/O, no secrets.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final

SCHEMA: Final = "refund-gateway/receipt/v1"
DIGEST_FIELD: Final = "hmac_sha256"


class Situation(StrEnum):
    """Which "what you can do next" paragraph applies."""

    SUCCEEDED = "succeeded"
    IN_TRANSIT = "in_transit"
    REROUTED = "rerouted"            # abnormal on the original route, resolved elsewhere
    NOT_RECEIVED = "not_received"    # reconciliation: refunded, not received
    ABNORMAL = "abnormal"            # original route refused after acceptance; being handled
    NOT_REFUNDED = "not_refunded"    # failed / closed: no money moved on this route


@dataclass(frozen=True, slots=True)
class AckItem:
    """One bank/channel acknowledgement reference, labelled for a person."""

    name: str        # the channel's field name (dback_status, bank_ack_time, queryId...)
    label_zh: str
    label_en: str
    value: str


@dataclass(frozen=True, slots=True)
class StatementRef:
    """Where reconciliation stands on this refund, and the statement line behind it."""

    klass: str                      # reconciliation class, e.g. refunded_not_received
    state: str | None = None        # open | resolved (persisted items)
    run_id: int | None = None
    run_date: str | None = None
    file: str | None = None
    line: int | None = None
    statement_status: str | None = None


@dataclass(frozen=True, slots=True)
class LinkedRefund:
    """The other half of a reroute: where the money went instead, or what this replaces."""

    relation: str                   # rerouted_to | rerouted_from
    refund_id: str
    route: str
    status: str
    amount_text: str
    channel_refund_no: str
    status_at: str | None = None


@dataclass(frozen=True, slots=True)
class EventLine:
    """One step of the refund's history: time, kind, status change. No payloads."""

    at: str
    kind: str
    status_from: str | None
    status_to: str | None


@dataclass(frozen=True, slots=True)
class Guidance:
    situation: Situation
    zh: str
    en: str


@dataclass(frozen=True, slots=True)
class Receipt:
    """A refund's transfer receipt. ``digest`` is the HMAC over ``fields()`` (canonical)."""

    platform: str
    issued_at: str
    refund_id: str
    merchant_order_no: str
    amount_minor: int
    currency: str
    amount_text: str                # "12.30 CNY"
    route: str
    route_label: str                # "支付宝 Alipay"
    status: str
    status_at: str | None
    channel_refund_no: str
    channel_refund_id: str | None
    channel_success_time: str | None
    received_account: str | None    # masked, as the channel states it
    received_account_source: str | None   # the channel field it came from
    bank_ack: tuple[AckItem, ...]
    arrival_earliest: str | None
    arrival_latest: str | None
    arrival_working_days: str | None      # "0-3"
    failure_code: str | None
    reconciliation: StatementRef | None
    linked: tuple[LinkedRefund, ...]
    events: tuple[EventLine, ...]
    guidance: Guidance
    schema: str = SCHEMA
    digest: str | None = field(default=None, compare=False)

    def fields(self) -> dict[str, Any]:
        """Everything the digest covers: the receipt as JSON-ready values, minus the digest."""
        return {
            "schema": self.schema,
            "platform": self.platform,
            "issued_at": self.issued_at,
            "refund_id": self.refund_id,
            "merchant_order_no": self.merchant_order_no,
            "amount": {"minor": self.amount_minor, "currency": self.currency,
                       "text": self.amount_text},
            "route": self.route,
            "route_label": self.route_label,
            "status": self.status,
            "status_at": self.status_at,
            "channel_refund_no": self.channel_refund_no,
            "channel_refund_id": self.channel_refund_id,
            "channel_success_time": self.channel_success_time,
            "received_account": self.received_account,
            "received_account_source": self.received_account_source,
            "bank_ack": [{"name": a.name, "label_zh": a.label_zh, "label_en": a.label_en,
                          "value": a.value} for a in self.bank_ack],
            "expected_arrival": None if self.arrival_latest is None else {
                "earliest": self.arrival_earliest, "latest": self.arrival_latest,
                "working_days": self.arrival_working_days},
            "failure_code": self.failure_code,
            "reconciliation": None if self.reconciliation is None else {
                "class": self.reconciliation.klass, "state": self.reconciliation.state,
                "run_id": self.reconciliation.run_id,
                "run_date": self.reconciliation.run_date,
                "statement_file": self.reconciliation.file,
                "statement_line": self.reconciliation.line,
                "statement_status": self.reconciliation.statement_status},
            "linked_refunds": [{"relation": x.relation, "refund_id": x.refund_id,
                                "route": x.route, "status": x.status,
                                "amount_text": x.amount_text,
                                "channel_refund_no": x.channel_refund_no,
                                "status_at": x.status_at} for x in self.linked],
            "events": [{"at": e.at, "kind": e.kind, "from": e.status_from,
                        "to": e.status_to} for e in self.events],
            "guidance": {"situation": self.guidance.situation.value,
                         "zh": self.guidance.zh, "en": self.guidance.en},
        }

    def to_dict(self) -> dict[str, Any]:
        """``fields()`` plus the digest: the JSON receipt."""
        return {**self.fields(), DIGEST_FIELD: self.digest}

    def with_digest(self, digest: str) -> Receipt:
        return replace(self, digest=digest)
