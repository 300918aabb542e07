"""What each sandbox fault kind does, in words, for docs/sandbox.md's table.

The table's rows come from ``sandbox.state.FAULT_KINDS``; a kind the code knows and this
file does not describe fails ``mkdocs build --strict`` and tests/docs/ (so a new kind is
documented when it is added). Sources: the docstrings of sandbox/server.py (connection
faults), sandbox/channel.py (notifications, statements), and each channel module.
"""

# Imports are lazy on purpose (the project is imported when a page is built, not when
# the hook loads); asserts narrow importlib's optional results.
# ruff: noqa: PLC0415

from __future__ import annotations

FAULT_NOTES: dict[str, str] = {
    # connection faults, any route (sandbox/server.py)
    "drop_before_commit": "Any route. The connection is closed before anything executes: "
    "the client sees a dropped connection, the channel never saw the request.",
    "http_500": "Any route. The channel's own HTTP 500 answer (WeChat `SYSTEM_ERROR`, the "
    "wallet's `SYSTEM_ERROR`, Alipay a plain 500 page); nothing executed.",
    "timeout_after_commit": "Any route. The request EXECUTES, then the answer stalls for "
    "`stall_seconds` (default 3, past the client's read timeout) and the connection is "
    "closed without an answer: the refund exists on the channel, the gateway must query.",
    "truncated_body": "Any route. The request executes; the answer goes out with its full "
    "`Content-Length` but only half of its body, then the connection closes.",
    "latency": "Any route. Delays the answer by `ms` ± a uniform `jitter_ms` (seeded). "
    "`\"where\": \"before\"` (default) delays before the channel handles the request; "
    "`\"after\"` executes at once and delays the answer. Stacks with every other fault; "
    "may be given for a whole route (no operation) and with `\"count\": null`.",
    # business faults (each channel module)
    "rate_limited": "Alipay 40004 `isv.app-call-limited`; WeChat 429 `FREQUENCY_LIMITED`; "
    "UnionPay respCode 06; wallet 429 `RATE_LIMITED`. Nothing executed (operation refund, "
    "query or statement): a resend under the same number later executes once.",
    "abnormal": "Operation refund: the refund is accepted, then ends abnormal (the card was "
    "cancelled, the wallet frozen): WeChat `ABNORMAL`, Alipay's bank leg `F`, UnionPay "
    "origRespCode 63, wallet 403 `ACCOUNT_FROZEN`. No money reaches the user; the gateway "
    "shows `abnormal` and `reroute()` resolves it.",
    "bad_signature": "The answer (the refund still executes) or, with operation `notify`, "
    "the next notification is signed with the wrong key: the gateway must not trust it.",
    "duplicate_notification": "Operation `notify`: the next notification is queued twice "
    "(a channel redelivering): the second must change nothing.",
    "out_of_order_notification": "Operation `notify`: the next notification is held back "
    "and sent after the one that follows it.",
    "missing_from_statement": "Operation `statement`: the next refund line of a statement "
    "is left out (\"shows refunded but not received\" for reconciliation).",
    "duplicate_in_statement": "Operation `statement`: the next refund line of a statement "
    "appears twice.",
    "amount_drift": "Operation `statement`: the next refund line's amount is off by "
    "`drift` fen (default 1).",
    # Alipay gateway-level errors (sandbox/alipay.py "Gateway errors", addendum §6):
    # answered instead of the method's own answer; other routes ignore them.
    "invalid_signature": "Alipay only. Answered 40002 `isv.invalid-signature` (signed, "
    "echoing the gateway's string-to-sign); nothing executed.",
    "invalid_app_id": "Alipay only. Answered 40002 `isv.invalid-app-id`, unsigned; nothing "
    "executed.",
    "missing_parameter": "Alipay only. Answered as if `parameter` (sign by default; method, "
    "app_id, sign_type, timestamp, version) were missing: 40001, signed or not as Alipay "
    "does; nothing executed.",
    "invalid_auth_token": "Alipay only. Signed `error_response` 20001 "
    "`aop.invalid-app-auth-token`; nothing executed.",
    "insufficient_permissions": "Alipay only. Signed 40006 "
    "`isv.insufficient-isv-permissions`; nothing executed.",
    "service_unavailable": "Alipay only. Signed 20000 `isp.unknow-error` 系统繁忙; nothing "
    "executed, unless `\"executed\": true`: the refund executes and the answer still says "
    "20000 (the query tells the truth).",
    # certificates (sandbox/alipay.py, sandbox/unionpay.py "Certificates")
    "cert_rotated": "The channel signs with a new certificate from the request it hits on "
    "(any operation; `notify`: from the next notification), until the next rotation or a "
    "reset. Alipay (the certificate-mode app): a new Alipay certificate from the sandbox "
    "CA, its `alipay_cert_sn` on every answer and downloadable with "
    "`alipay.open.app.alipaycert.download`. UnionPay: a new `signPubKeyCert` from the same "
    "middle CA. Params to test trust: `\"issuer\": \"foreign\"` (from a CA outside the "
    "chain), `\"expired\": true`, `\"cn\"` (UnionPay: another CN). WeChat: a new "
    "platform certificate (new key and serial) signs every certificate-signed answer and "
    "notification from this one on (the public key's are unchanged), the previous one "
    "still listed by `/v3/certificates`.",
    "serial_switch": "WeChat only. The answer (or, operation `notify`, the next "
    "notification) is signed by the merchant's other verifier: the platform certificate "
    "instead of the public key, or the public key instead of the certificate (a merchant "
    "migrating between the two); `\"count\": null` for every one.",
}

# UnionPay answer codes (sandbox/unionpay.py "Fault kinds resp_code_<code>", addendum §2).
_EXECUTED_UNANSWERED = {"03": "交易通讯超时", "04": "交易状态未明", "05": "交易已受理",
                        "12": "重复交易"}
_NOTHING_EXECUTED = {"02": "系统未开放", "06": "系统繁忙", "34": "查无此交易",
                     "37": "过于频繁"}


def resp_code_note(code: str) -> str | None:
    """What ``resp_code_<code>`` does; None for a code this file does not know."""
    from sandbox.state import UNIONPAY_CODES, UNIONPAY_FAILURE_CODES

    if code not in UNIONPAY_CODES:
        return None
    tail = (" Operation `query`: the query's own respCode is that code and the refund does "
            "not progress; operation `notify`: the next back notification carries it.")
    if code == "A6":
        return ("Bank card only. 有缺陷的成功: operation refund: executed and succeeds at "
                "once, answered A6 with its queryId, and its query and notification say A6 "
                "from then on; operation query/notify: a succeeded refund is reported A6.")
    if code in _EXECUTED_UNANSWERED:
        return (f"Bank card only. Operation refund: EXECUTED, but answered "
                f"{code} {_EXECUTED_UNANSWERED[code]} with no queryId: the query tells the "
                f"truth." + tail)
    if code in _NOTHING_EXECUTED:
        return (f"Bank card only. Operation refund: answered {code} "
                f"{_NOTHING_EXECUTED[code]}, nothing executed (a resend may succeed)."
                + tail)
    if code in UNIONPAY_FAILURE_CODES:
        return (f"Bank card only. Operation refund: refused with final-failure code {code} "
                f"(addendum §2), nothing executed (the gateway records `failed`; 11, a "
                f"signature refusal, is a credentials error instead)." + tail)
    return None
