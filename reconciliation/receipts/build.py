"""``build_receipt``: one refund (+ its events, linked refund and reconciliation item) ->
a signed ``Receipt``. Reads through ``RefundStore``; never calls a channel, never writes.

Times are shown in Beijing time, ISO-8601 with ``+08:00`` (what channels and users use).
Account values are masked here, once, by field with ``gateway.masking`` (the rule logs,
reports and adapters use), so no renderer can leak them; times and ids are never masked.
Channel fields are labelled from their route's table (``labels``); fields it does not
know go to the JSON's ``evidence`` only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Protocol

from gateway.bootstrap import capabilities_of
from gateway.calendar import is_approximate
from gateway.clock import BEIJING, to_beijing, utcnow
from gateway.errors import ConfigurationError, RefundNotFound
from gateway.masking import ACCOUNT_FIELDS, mask_account, mask_text
from gateway.models import Refund, RefundEvent, RefundStatus
from gateway.settings import GatewaySettings, load_settings
from gateway.store import RefundStore
from reconciliation.receipts import canonical
from reconciliation.receipts.guidance import Facts, guidance, route_names
from reconciliation.receipts.labels import TABLES, Kind
from reconciliation.receipts.model import (
    ChannelField,
    EventLine,
    LinkedRefund,
    Receipt,
    Signature,
    Situation,
    StatementRef,
)
from reconciliation.receipts.signing import Signer, signer_from_settings
from reconciliation.receipts.sources import reconciliation_for

NOT_RECEIVED_CLASS: Final = "refunded_not_received"
IN_TRANSIT_CLASS: Final = "in_transit"

# Where the receiving account comes from, per route (CH §4.1, §5.1).
_ACCOUNT_SOURCE: Final[dict[str, str]] = {
    "alipay": "buyer_logon_id", "wechatpay": "user_received_account",
    "bankcard": "accNo", "balance": "user_id"}
_ALIPAY_BALANCE: Final = "alipay_balance"
# Channel fields quoted in "what you can do next" (the references a hotline traces).
_QUOTED: Final = frozenset({Kind.REFERENCE, Kind.TIME, Kind.AMOUNT})


class RefundSource(Protocol):
    """``RefundGateway`` or ``RefundStore``: what a receipt reads."""

    def get(self, refund_id: str) -> Refund: ...

    def events(self, refund_id: str) -> list[RefundEvent]: ...


def iso(moment: datetime | None) -> str | None:
    return to_beijing(moment).isoformat(timespec="seconds") if moment else None


def display_time(value: str | None) -> str | None:
    """``2026-11-20T10:00:05+08:00`` -> ``2026-11-20 10:00:05`` (Beijing, as channels
    print it)."""
    if value is None:
        return None
    return value.replace("T", " ").removesuffix("+08:00")


def _store_of(source: RefundSource | RefundStore) -> RefundStore | None:
    store = getattr(source, "store", source)
    return store if isinstance(store, RefundStore) else None


def _account(refund: Refund) -> tuple[str | None, str | None, tuple[str, str] | None]:
    """(masked value, source field, (zh, en) display)."""
    raw = refund.received_account
    if raw is None and refund.route.value == "balance":
        return None, None, ("您的平台余额", "your balance on the platform")
    if raw is None:
        return None, None, None
    if raw.startswith(_ALIPAY_BALANCE):
        logon = mask_account(raw.partition(":")[2])
        value = f"支付宝账户余额 Alipay balance {logon}".strip()
        suffix = f"（{logon}）" if logon else ""
        return value, "deposit_back_info.dback_status=F", (
            f"支付宝账户余额{suffix}", f"the Alipay balance {logon}".strip())
    masked = mask_account(raw)
    return masked, _ACCOUNT_SOURCE.get(refund.route.value), (masked, masked)


def _value(name: str, raw: object) -> str:
    """A channel value as it may be shown: an account masked by the one rule, any other
    value with card-shaped numbers hidden (times and ids are not card-shaped)."""
    value = str(raw)
    return mask_account(value) if name in ACCOUNT_FIELDS else mask_text(value)


def _channel_fields(refund: Refund, main: dict[str, str | None]
                    ) -> tuple[tuple[ChannelField, ...], dict[str, str]]:
    """The labelled fields (the route's table order) and the evidence (unknown fields)."""
    route = refund.route.value
    table = TABLES.get(route, {})
    known = [k for k in table if k in refund.bank_ack]
    out: list[ChannelField] = []
    for key in known:
        label = table[key]
        value = _value(key, refund.bank_ack[key])
        shown = main.get(label.same_as) if label.same_as else None
        repeats = shown is not None and shown in (value, iso_of(value))
        out.append(ChannelField(key, label.zh, label.en, value, label.text(value),
                                printed=not repeats))
    evidence = {k: _value(k, v) for k, v in sorted(refund.bank_ack.items()) if k not in table}
    return tuple(out), evidence


def iso_of(value: str) -> str | None:
    """A channel time (ISO-8601 with offset, or Beijing ``YYYY-MM-DD HH:MM:SS``) as
    ``iso``; None when it is not a time."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return iso(moment if moment.tzinfo else moment.replace(tzinfo=BEIJING))


def _status_at(refund: Refund, events: list[RefundEvent]) -> str | None:
    if refund.status is RefundStatus.SUCCEEDED and refund.succeeded_at:
        return iso(refund.succeeded_at)
    for event in reversed(events):
        if event.status_to is refund.status:
            return iso(event.at)
    return iso(refund.updated_at)


def situation_of(refund: Refund, recon: StatementRef | None) -> Situation:
    status = refund.status
    if status is RefundStatus.REROUTED:
        return Situation.REROUTED
    if status is RefundStatus.ABNORMAL:
        return Situation.ABNORMAL
    if status in (RefundStatus.FAILED, RefundStatus.CLOSED):
        return Situation.NOT_REFUNDED
    if status in (RefundStatus.PENDING, RefundStatus.PROCESSING):
        return Situation.IN_TRANSIT
    if recon is not None and recon.klass == NOT_RECEIVED_CLASS and recon.state != "resolved":
        return Situation.NOT_RECEIVED
    if (recon is not None and recon.klass == IN_TRANSIT_CLASS) or \
            refund.bank_ack.get("dback_status") == "P":
        return Situation.IN_TRANSIT
    return Situation.SUCCEEDED


def _arrival_days(refund: Refund) -> tuple[int, int] | None:
    """The route's declared arrival in working days (its adapter's ``Capabilities``, the
    source of the refund's window); None when no adapter is installed for the route."""
    try:
        return capabilities_of(refund.route).arrival_working_days
    except ConfigurationError:
        return None


def _linked(source: RefundSource, refund: Refund) -> tuple[LinkedRefund, ...]:
    out = []
    for relation, other_id in (("rerouted_to", refund.rerouted_to),
                               ("rerouted_from", refund.rerouted_from)):
        if not other_id:
            continue
        try:
            other = source.get(other_id)
        except RefundNotFound:
            continue
        out.append(LinkedRefund(relation, other.id, other.route.value, other.status.value,
                                str(other.amount), other.channel_refund_no,
                                _status_at(other, source.events(other.id))))
    return tuple(out)


def build_unsigned(source: RefundSource, refund_id: str, *, platform: str = "refund-gateway",
                   reconciliation: StatementRef | None = None, lookup_reconciliation: bool = True,
                   now: datetime | None = None) -> Receipt:
    """The receipt without its digest (``build_receipt`` signs it)."""
    refund = source.get(refund_id)
    events = source.events(refund_id)
    if now is not None:   # the receipt as of ``now`` (re-building a printed one)
        now = now.replace(microsecond=0)   # issued_at is printed to the second
        events = [e for e in events if e.at.replace(microsecond=0) <= now]
    store = _store_of(source)
    if reconciliation is None and lookup_reconciliation and store is not None:
        reconciliation = reconciliation_for(store.engine, refund)
    account, account_source, account_display = _account(refund)
    success = iso(refund.succeeded_at)
    fields, evidence = _channel_fields(refund, {
        "channel_refund_id": refund.channel_refund_id, "channel_success_time": success,
        "received_account": account})
    linked = _linked(source, refund)
    window = refund.expected_arrival
    days = _arrival_days(refund)
    working_days = f"{days[0]}-{days[1]}" if days and days[0] != days[1] else \
        (str(days[0]) if days else None)
    if working_days and is_approximate(window):
        # no holiday data for those dates: counted Monday to Friday (gateway.calendar)
        working_days += "，估算 approximate: Mon-Fri, no holiday data"
    refs: list[tuple[str, str, str]] = [("渠道退款单号", "channel refund number",
                                         refund.channel_refund_no)]
    if refund.channel_refund_id:
        refs.append(("渠道退款流水号", "channel refund id", refund.channel_refund_id))
    refs.append(("退款金额", "amount", str(refund.amount)))
    if success:
        refs.append(("退款成功时间", "completed at", display_time(success) or ""))
    refs += [(c.label_zh, c.label_en, c.text) for c in fields
             if c.printed and TABLES[refund.route.value][c.name].kind in _QUOTED]
    to = next((x for x in linked if x.relation == "rerouted_to"), None)
    situation = situation_of(refund, reconciliation)
    facts = Facts(
        route=refund.route.value, status=refund.status.value, amount=str(refund.amount),
        success_time=display_time(success), account=account_display,
        earliest=window.earliest.isoformat() if window else None,
        latest=window.latest.isoformat() if window else None, working_days=working_days,
        refs=tuple(refs), linked_to=(to.refund_id, to.route, to.status) if to else None,
        rerouted_from=refund.rerouted_from)
    zh, en = route_names(refund.route.value)
    return Receipt(
        platform=platform, issued_at=iso(now or utcnow()) or "",
        refund_id=refund.id, merchant_order_no=refund.payment.merchant_order_no,
        amount_minor=refund.amount.minor, currency=refund.amount.currency,
        amount_text=str(refund.amount), route=refund.route.value, route_label=f"{zh} {en}",
        status=refund.status.value, status_at=_status_at(refund, events),
        channel_refund_no=refund.channel_refund_no, channel_refund_id=refund.channel_refund_id,
        channel_success_time=success, received_account=account,
        received_account_source=account_source, channel_fields=fields, evidence=evidence,
        arrival_earliest=window.earliest.isoformat() if window else None,
        arrival_latest=window.latest.isoformat() if window else None,
        arrival_working_days=working_days, failure_code=refund.failure_code,
        reconciliation=reconciliation, linked=linked,
        events=tuple(EventLine(iso(e.at) or "", e.kind.value,
                               e.status_from.value if e.status_from else None,
                               e.status_to.value if e.status_to else None) for e in events),
        guidance=guidance(situation, facts))


def sign_receipt(receipt: Receipt, signer: Signer) -> Receipt:
    """``receipt`` with its Ed25519 signature (over ``fields()``, canonical)."""
    sig = canonical.sign(receipt.fields(), signer)
    return receipt.with_signature(Signature(**sig))


def build_receipt(source: RefundSource, refund_id: str, *,
                  settings: GatewaySettings | None = None,
                  signer: Signer | None = None,
                  reconciliation: StatementRef | None = None,
                  lookup_reconciliation: bool = True,
                  now: datetime | None = None) -> Receipt:
    """A signed receipt (version 1, not stored) for ``refund_id`` read from a
    ``RefundGateway`` or ``RefundStore``; ``versions.issue`` makes and keeps versions.

    The key is ``signer`` or the one in ``settings.receipts`` (settings loaded from the
    environment when not given); ``ConfigurationError`` naming
    ``REFUND_GATEWAY_RECEIPTS__SIGNING_KEY`` when there is none. ``reconciliation``
    overrides the persisted item (e.g. a matched row with its statement file and line).
    """
    if signer is None:
        settings = settings or load_settings()
        signer = signer_from_settings(settings)
    platform = settings.receipts.platform_name if settings else "refund-gateway"
    receipt = build_unsigned(source, refund_id, platform=platform,
                             reconciliation=reconciliation,
                             lookup_reconciliation=lookup_reconciliation, now=now)
    return sign_receipt(receipt, signer)
