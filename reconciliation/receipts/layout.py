"""What the printed formats (HTML, PDF) show, in order: bilingual rows built once from a
``Receipt``, so the two layouts cannot drift apart. The JSON receipt keeps everything;
the printed history folds repeated channel calls so one A4 page holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.money import Money
from reconciliation.receipts.build import display_time
from reconciliation.receipts.model import Receipt

MAX_HISTORY_ROWS: Final = 12
STATUS_NAMES: Final[dict[str, str]] = {
    "pending": "待提交 pending", "processing": "处理中 processing",
    "succeeded": "退款成功 succeeded", "failed": "失败 failed", "closed": "已关闭 closed",
    "abnormal": "异常 abnormal", "rerouted": "已改道 rerouted"}
KIND_NAMES: Final[dict[str, str]] = {
    "requested": "申请 requested", "attempt": "渠道调用 channel call",
    "status_changed": "状态变更 status change", "notification": "渠道通知 notification",
    "rerouted": "改道 rerouted", "reroute_of": "改道自 reroute of",
    "ignored": "忽略 ignored", "conflict": "冲突 conflict"}
CLASS_NAMES: Final[dict[str, str]] = {
    "matched": "已核对一致 matched", "in_transit": "在途 in transit",
    "not_refunded": "未退款 not refunded", "unknown_to_platform": "平台无记录 unknown to platform",
    "refunded_not_received": "已退款未到账 refunded, not received",
    "amount_mismatch": "金额不符 amount mismatch", "duplicate": "重复 duplicate",
    "status_mismatch": "状态不符 status mismatch", "paid_twice": "重复退款 paid twice"}
STATE_NAMES: Final[dict[str, str]] = {"open": "跟进中 open", "resolved": "已处理 resolved"}


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    value: str
    mono: bool = False


def status_name(status: str) -> str:
    return STATUS_NAMES.get(status, status)


def main_rows(r: Receipt) -> list[Row]:
    rows = [
        Row("平台退款单号 Refund ID", r.refund_id, True),
        Row("商户订单号 Merchant order no.", r.merchant_order_no, True),
        Row("退款金额 Amount", f"{r.amount_text}（{r.amount_minor} 分 minor units）"),
        Row("退款路径 Route", r.route_label),
        Row("状态 Status", f"{status_name(r.status)}  {display_time(r.status_at) or ''}"),
        Row("渠道退款单号 Channel refund no.", r.channel_refund_no, True),
        Row("渠道退款流水号 Channel refund ID", r.channel_refund_id or "—", True),
        Row("渠道退款成功时间 Channel success time", display_time(r.channel_success_time)
            or "—"),
        Row("收款账户 Received by", r.received_account or "—"),
    ]
    rows += [Row(f"{c.label_zh} {c.label_en}", c.text, c.text == c.value)
             for c in r.channel_fields if c.printed]
    if r.arrival_latest:
        span = (r.arrival_latest if r.arrival_earliest == r.arrival_latest
                else f"{r.arrival_earliest} ~ {r.arrival_latest}")
        rows.append(Row("预计到账 Expected arrival",
                        f"{span}（{r.arrival_working_days} 个工作日 working days）"))
    if r.failure_code:
        rows.append(Row("渠道原因 Channel reason", r.failure_code, True))
    rows += reconciliation_rows(r)
    for x in r.linked:
        label = ("关联退款（改退至）Rerouted to" if x.relation == "rerouted_to"
                 else "原退款（改道自）Replaces")
        rows.append(Row(label, f"{x.refund_id} · {x.route} · {status_name(x.status)} · "
                               f"{x.amount_text}"))
    return rows


def reconciliation_rows(r: Receipt) -> list[Row]:
    """Where reconciliation stands, and the statement line that confirmed the refund."""
    rec = r.reconciliation
    if rec is None:
        return [Row("对账 Reconciliation", "尚未对账 not yet reconciled")]
    run = (f"{rec.run_date} 第 {rec.run_id} 次对账 run {rec.run_id}" if rec.run_id
           else (rec.run_date or ""))
    state = f" · {STATE_NAMES.get(rec.state, rec.state)}" if rec.state else ""
    rows = [Row("对账结果 Reconciliation", f"{CLASS_NAMES.get(rec.klass, rec.klass)}{state}"),
            Row("对账批次 Reconciliation run", run)]
    if rec.file:
        where = f"{rec.file} 第 {rec.line} 行 line {rec.line}" if rec.line else rec.file
        rows.append(Row("对账单文件 Statement file", where, True))
        facts = []
        if rec.amount_minor is not None:
            facts.append(f"{Money(rec.amount_minor, rec.currency or r.currency)}")
        if rec.statement_time:
            facts.append(display_time(rec.statement_time) or "")
        if rec.statement_status:
            facts.append(STATUS_NAMES.get(rec.statement_status, rec.statement_status))
        if facts:
            rows.append(Row("账单行内容 Statement line", " · ".join(facts)))
    else:
        rows.append(Row("对账单文件 Statement file",
                        "账单中无此笔 not on the channel's statement"))
    return rows


def version_rows(r: Receipt) -> list[Row]:
    """Which version this is and what it replaces (printed above the signature)."""
    rows = [Row("回执版本 Receipt version", f"第 {r.version} 版 version {r.version}")]
    if r.previous is not None:
        rows.append(Row("替代版本 Replaces", f"第 {r.previous.version} 版 version "
                        f"{r.previous.version}（{display_time(r.previous.issued_at)}）"
                        f" SHA-256 {r.previous.sha256[:16]}…"))
    return rows


def history_rows(r: Receipt) -> list[tuple[str, str, str]]:
    """(time, kind, change) with runs of the same status-less event folded into one."""
    folded: list[tuple[str, str, str]] = []
    i, events = 0, r.events
    while i < len(events):
        e = events[i]
        j = i
        if e.status_to is None:
            while j + 1 < len(events) and events[j + 1].kind == e.kind and \
                    events[j + 1].status_to is None:
                j += 1
        kind = KIND_NAMES.get(e.kind, e.kind)
        change = (f"{e.status_from or '—'} → {e.status_to}" if e.status_to else "")
        when = display_time(e.at) or ""
        if j > i:
            kind = f"{kind} ×{j - i + 1}"
            when = f"{when} … {(display_time(events[j].at) or '')[11:]}"
        folded.append((when, kind, change))
        i = j + 1
    if len(folded) > MAX_HISTORY_ROWS:
        head, tail = folded[:3], folded[-(MAX_HISTORY_ROWS - 4):]
        hidden = len(folded) - len(head) - len(tail)
        folded = [*head, ("…", f"另有 {hidden} 条见 JSON 回执 {hidden} more in the JSON "
                               f"receipt", ""), *tail]
    return folded


def digest_groups(digest: str | None) -> str:
    """The 64 hex digits in groups of 8, easier to read out and type."""
    if not digest:
        return "UNSIGNED"
    return " ".join(digest[i:i + 8] for i in range(0, len(digest), 8))


def verify_hint(r: Receipt) -> str:
    """How to check this receipt: anyone with the JSON form and the published keys, or
    the platform from the printed digest."""
    return ("核验 Verify: refund-gateway receipt verify RECEIPT.json --keys receipt-keys.json"
            "（公钥 public keys: refund-gateway receipt keys）; "
            f"或 or: refund-gateway receipt verify --digest {r.digest or '<digest>'}")
