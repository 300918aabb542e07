"""The transfer receipt (转账回执) as data: what a receipt states, nothing about how it looks.

A ``Receipt`` is plain strings and integers (money as minor units plus its text, times as
Beijing ISO-8601), so its canonical JSON is stable and signable. Everything a person reads
is already masked (``gateway.masking``, applied by ``build``); renderers only lay it out.
A receipt is one immutable *version*: ``fields()`` (what the SHA-256 digest and the
Ed25519 signature cover) names its version and the previous version's digest, and
``content()`` is what decides whether a change needs a new version. No I/O, no secrets.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final

from reconciliation.receipts.canonical import SIGNATURE_FIELD, canonical_json

SCHEMA: Final = "refund-gateway/receipt/v2"
# fields() that are not content: a new version differs in them and nothing else.
VERSION_FIELDS: Final = ("issued_at", "version", "previous")


class Situation(StrEnum):
    """Which "what you can do next" paragraph applies."""

    SUCCEEDED = "succeeded"
    IN_TRANSIT = "in_transit"
    REROUTED = "rerouted"            # abnormal on the original route, resolved elsewhere
    NOT_RECEIVED = "not_received"    # reconciliation: refunded, not received
    ABNORMAL = "abnormal"            # original route refused after acceptance; being handled
    NOT_REFUNDED = "not_refunded"    # failed / closed: no money moved on this route


@dataclass(frozen=True, slots=True)
class ChannelField:
    """One field the channel stated, labelled from its route's table (``labels``)."""

    name: str        # the channel's field name (channel, dback_status, queryId...)
    label_zh: str
    label_en: str
    value: str       # as the channel stated it (an account masked)
    text: str        # as a person reads it (a code as its words)
    printed: bool = field(default=True, compare=False)   # False: repeats a main row


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
    amount_minor: int | None = None          # the statement line's amount
    currency: str | None = None
    statement_time: str | None = None        # Beijing ISO-8601, as the line states it


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
class PreviousVersion:
    """The version this one replaces."""

    version: int
    sha256: str
    issued_at: str


@dataclass(frozen=True, slots=True)
class Signature:
    """Ed25519 over the canonical JSON of ``fields()``, whose SHA-256 is ``sha256``."""

    alg: str
    key_id: str
    sha256: str
    value: str       # base64

    def to_dict(self) -> dict[str, str]:
        return {"alg": self.alg, "key_id": self.key_id, "sha256": self.sha256,
                "value": self.value}


@dataclass(frozen=True, slots=True)
class Receipt:
    """One version of a refund's transfer receipt; ``signature`` once signed."""

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
    channel_fields: tuple[ChannelField, ...]
    evidence: dict[str, str]              # channel fields no table labels: JSON only
    arrival_earliest: str | None
    arrival_latest: str | None
    arrival_working_days: str | None      # "0-3"
    failure_code: str | None
    reconciliation: StatementRef | None
    linked: tuple[LinkedRefund, ...]
    events: tuple[EventLine, ...]
    guidance: Guidance
    version: int = 1
    previous: PreviousVersion | None = None
    schema: str = SCHEMA
    signature: Signature | None = field(default=None, compare=False)

    @property
    def digest(self) -> str | None:
        """SHA-256 (hex) of the signed canonical form; None before signing."""
        return self.signature.sha256 if self.signature else None

    def fields(self) -> dict[str, Any]:
        """Everything the signature covers: the receipt as JSON-ready values."""
        rec = self.reconciliation
        return {
            "schema": self.schema,
            "platform": self.platform,
            "issued_at": self.issued_at,
            "version": self.version,
            "previous": None if self.previous is None else {
                "version": self.previous.version, "sha256": self.previous.sha256,
                "issued_at": self.previous.issued_at},
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
            "channel_fields": [{"name": c.name, "label_zh": c.label_zh,
                                "label_en": c.label_en, "value": c.value, "text": c.text}
                               for c in self.channel_fields],
            "evidence": dict(sorted(self.evidence.items())),
            "expected_arrival": None if self.arrival_latest is None else {
                "earliest": self.arrival_earliest, "latest": self.arrival_latest,
                "working_days": self.arrival_working_days},
            "failure_code": self.failure_code,
            "reconciliation": None if rec is None else {
                "class": rec.klass, "state": rec.state, "run_id": rec.run_id,
                "run_date": rec.run_date, "statement_file": rec.file,
                "statement_line": rec.line, "statement_status": rec.statement_status,
                "statement_amount": None if rec.amount_minor is None else {
                    "minor": rec.amount_minor, "currency": rec.currency or self.currency},
                "statement_time": rec.statement_time},
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

    def content(self) -> dict[str, Any]:
        """``fields()`` without what only a version changes: equal content, same receipt."""
        return {k: v for k, v in self.fields().items() if k not in VERSION_FIELDS}

    def content_sha256(self) -> str:
        return hashlib.sha256(canonical_json(self.content())).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """``fields()`` plus the signature: the JSON receipt."""
        return {**self.fields(),
                SIGNATURE_FIELD: self.signature.to_dict() if self.signature else None}

    def with_signature(self, signature: Signature) -> Receipt:
        return replace(self, signature=signature)

    def as_version(self, version: int, previous: PreviousVersion | None,
                   issued_at: str) -> Receipt:
        return replace(self, version=version, previous=previous, issued_at=issued_at,
                       signature=None)
