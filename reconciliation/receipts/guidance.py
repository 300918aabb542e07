"""The plain-language "what you can do next" paragraph, in Chinese and English.

One template pair per ``Situation``; the references a bank or payment app can trace
(channel refund number and id, success time, bank acknowledgement) are spelled out so the
user can read them to the hotline. Route names and hotlines: Alipay 95188, WeChat Pay
95017, UnionPay 95516 (the public customer-service numbers). Pure text, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from reconciliation.receipts.model import Guidance, Situation

ROUTE_NAMES: Final[dict[str, tuple[str, str]]] = {
    "alipay": ("支付宝", "Alipay"),
    "wechatpay": ("微信支付", "WeChat Pay"),
    "bankcard": ("银行卡（银联）", "bank card (UnionPay)"),
    "balance": ("平台余额", "platform balance"),
}
CONTACTS: Final[dict[str, tuple[str, str]]] = {
    "alipay": ("支付宝客服（95188）", "Alipay customer service (95188)"),
    "wechatpay": ("微信支付客服（95017）", "WeChat Pay customer service (95017)"),
    "bankcard": ("您的发卡银行客服（或银联 95516）",
                 "your card-issuing bank (or UnionPay, 95516)"),
    "balance": ("本平台客服", "the platform's customer service"),
}


STATUS_ZH: Final[dict[str, str]] = {
    "pending": "待提交", "processing": "处理中", "succeeded": "退款成功", "failed": "失败",
    "closed": "已关闭", "abnormal": "异常", "rerouted": "已改道"}


def route_names(route: str) -> tuple[str, str]:
    return ROUTE_NAMES.get(route, (route, route))


@dataclass(frozen=True, slots=True)
class Facts:
    """What the paragraphs quote; every value already masked and formatted."""

    route: str
    status: str
    amount: str
    success_time: str | None
    account: tuple[str, str] | None         # (zh, en) display of the receiving account
    earliest: str | None
    latest: str | None
    working_days: str | None
    refs: tuple[tuple[str, str, str], ...]  # (label zh, label en, value)
    linked_to: tuple[str, str, str] | None = None   # (refund id, route, status)
    rerouted_from: str | None = None


def _refs(facts: Facts) -> tuple[str, str]:
    zh = "、".join(f"{lz} {v}" for lz, _, v in facts.refs)
    en = "; ".join(f"{le} {v}" for _, le, v in facts.refs)
    return zh, en


def _window(facts: Facts) -> tuple[str, str]:
    if facts.latest is None:
        return "", ""
    if facts.earliest == facts.latest:
        return (f"预计 {facts.latest} 到账（节假日顺延）。",
                f"It should arrive on {facts.latest} (public holidays push this back). ")
    return (f"预计 {facts.earliest} 至 {facts.latest} 之间到账（{facts.working_days} 个工作日，"
            f"节假日顺延）。",
            f"It should arrive between {facts.earliest} and {facts.latest} "
            f"({facts.working_days} working days; public holidays push this back). ")


def guidance(situation: Situation, facts: Facts) -> Guidance:
    rz, re_ = route_names(facts.route)
    cz, ce = CONTACTS.get(facts.route, CONTACTS["balance"])
    refs_zh, refs_en = _refs(facts)
    win_zh, win_en = _window(facts)
    acct_zh, acct_en = facts.account or ("原支付账户", "the account that paid")
    when = facts.success_time or "—"
    if situation is Situation.SUCCEEDED:
        zh = (f"本笔退款 {facts.amount} 已于 {when} 由{rz}处理成功，退回至{acct_zh}。{win_zh}"
              f"如届时仍未看到这笔钱，请携带本回执及以下凭证联系{cz}查询：{refs_zh}。")
        en = (f"This refund of {facts.amount} was completed by {re_} on {when} and sent to "
              f"{acct_en}. {win_en}If you still cannot see it by then, contact {ce} with "
              f"this receipt and these references: {refs_en}.")
    elif situation is Situation.IN_TRANSIT:
        zh = (f"本笔退款 {facts.amount} 已提交{rz}，目前处理中（资金在途）。{win_zh}"
              f"到账前无需操作；如超过预计时间仍未到账，请携带本回执及以下凭证联系{cz}查询："
              f"{refs_zh}。")
        en = (f"This refund of {facts.amount} has been sent to {re_} and is on its way. "
              f"{win_en}There is nothing to do before then; if it has not arrived after that, "
              f"contact {ce} with this receipt and these references: {refs_en}.")
    elif situation is Situation.NOT_RECEIVED:
        zh = (f"平台记录本笔退款 {facts.amount} 已于 {when} 退款成功，但对账时{rz}账单未能确认"
              f"入账（显示已退款但未到账）。平台已登记并在跟进。请携带本回执及以下凭证联系{cz}"
              f"查询资金去向：{refs_zh}；也可联系平台客服，我们会协助向渠道核查。")
        en = (f"The platform recorded this refund of {facts.amount} as completed on {when}, "
              f"but {re_}'s statement has not confirmed it (refunded but not received). The "
              f"platform has logged this and is following it up. Contact {ce} with this "
              f"receipt and these references to trace the money: {refs_en}; or contact the "
              f"platform's customer service and we will check with the channel.")
    elif situation is Situation.REROUTED and facts.linked_to is not None:
        lid, lroute, lstatus = facts.linked_to
        lz, le = route_names(lroute)
        zh = (f"原路退款未能完成：{rz}无法入账（例如银行卡已注销或账户冻结），这笔钱没有退回原"
              f"账户。平台已将 {facts.amount} 改为退至{lz}，关联退款单号 {lid}"
              f"（状态：{STATUS_ZH.get(lstatus, lstatus)}）。"
              f"请以关联退款为准查看到账情况；如有疑问，请携带本回执联系平台客服。")
        en = (f"The refund could not be completed on the original route: {re_} could not "
              f"credit it (for example a cancelled card or a frozen account), so the money did "
              f"not go back to the original account. The platform sent the {facts.amount} to "
              f"the {le} instead, under linked refund {lid} (status: {lstatus}). Check that "
              f"refund for arrival; for questions, contact the platform's customer service "
              f"with this receipt.")
    elif situation in (Situation.ABNORMAL, Situation.REROUTED):
        zh = (f"{rz}已受理本笔退款 {facts.amount}，但原账户无法入账（例如银行卡已注销或账户冻结），"
              f"资金未到账。平台将改为退至其他账户（如平台余额），完成后会有关联退款单号。"
              f"无需向银行查询；如有疑问，请携带本回执联系平台客服。")
        en = (f"{re_} accepted this refund of {facts.amount}, but the original account could "
              f"not be credited (for example a cancelled card or a frozen account), so the "
              f"money has not arrived. The platform will send it to another account (such as "
              f"the platform balance) under a linked refund. There is no need to ask your "
              f"bank; for questions, contact the platform's customer service with this receipt.")
    else:
        zh = (f"本笔退款未通过{rz}完成（状态：{STATUS_ZH.get(facts.status, facts.status)}），"
              f"没有资金退出。"
              f"请携带本回执联系平台客服处理。")
        en = (f"This refund was not completed through {re_} (status: {facts.status}); no "
              f"money was sent. Please contact the platform's customer service with this "
              f"receipt.")
    if facts.rerouted_from:
        zh += f"本笔退款替代原退款 {facts.rerouted_from}（原路退款未能入账）。"
        en += (f" This refund replaces {facts.rerouted_from}, which could not be credited on "
               f"its original route.")
    return Guidance(situation, zh, en)
