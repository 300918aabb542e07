"""The platform-balance route against the sandbox's wallet over HTTP, through
RefundGateway on SQLite and PostgreSQL (contract: sandbox/balance.py)."""

from __future__ import annotations

from datetime import datetime

import pytest

from gateway import RefundGateway, RefundStatus, Route
from gateway.clock import BEIJING
from tests.integration.bankcard.conftest import fault, truth
from tests.integration.bankcard.test_sandbox import ask

S = RefundStatus

def test_balance_credit_is_instant(gw: RefundGateway, sandbox_url: str) -> None:
    refund = gw.refund(ask(gw, sandbox_url, route=Route.BALANCE)[0])
    assert refund.status is S.SUCCEEDED
    assert refund.channel_refund_id and refund.channel_refund_id.startswith("WT")
    today = datetime.now(BEIJING).date()
    ledger = gw.adapters[Route.BALANCE].download_statement(today).decode()
    assert ledger.startswith("wallet_txn_id,refund_no,")
    assert refund.channel_refund_no in ledger


def test_balance_resend_is_idempotent(gw: RefundGateway, sandbox_url: str) -> None:
    refund = gw.refund(ask(gw, sandbox_url, route=Route.BALANCE)[0])
    again = gw.adapters[Route.BALANCE].submit(gw.get(refund.id))
    assert again.channel_refund_id == refund.channel_refund_id
    assert [r["executions"] for r in truth(sandbox_url, Route.BALANCE)] == [1]


def test_balance_frozen_wallet_is_refused(gw: RefundGateway, sandbox_url: str) -> None:
    fault(sandbox_url, Route.BALANCE, "refund", "abnormal")
    refund = gw.refund(ask(gw, sandbox_url, route=Route.BALANCE)[0])
    assert (refund.status, refund.failure_code) == (S.FAILED, "ACCOUNT_FROZEN")
    assert truth(sandbox_url, Route.BALANCE) == []


@pytest.mark.parametrize("kind,params", [
    ("timeout_after_commit", {"stall_seconds": 2}),
    ("drop_before_commit", {}),
    ("http_500", {}),
    ("rate_limited", {}),
])
def test_balance_unknown_outcomes(gw: RefundGateway, sandbox_url: str, kind: str,
                                  params: dict[str, object]) -> None:
    fault(sandbox_url, Route.BALANCE, "refund", kind, **params)
    refund = gw.refund(ask(gw, sandbox_url, route=Route.BALANCE)[0])
    assert refund.status in (S.PROCESSING, S.PENDING)
    after = gw.sync(refund.id)
    if after.status is not S.SUCCEEDED:
        after = gw.sync(refund.id)
    assert after.status is S.SUCCEEDED
    assert [r["executions"] for r in truth(sandbox_url, Route.BALANCE)] == [1]


def test_balance_forged_hmac_is_rejected_by_the_wallet(sandbox_url: str,
                                                       sandbox_settings: dict[str, str]
                                                       ) -> None:
    from adapters.balance.adapter import BalanceAdapter
    from adapters.balance.client import WalletClient
    from gateway.errors import ChannelAuthError
    from tests.unit.adapters.balance.test_balance_adapter import make_refund

    forged = BalanceAdapter(WalletClient(
        base_url=sandbox_settings["REFUND_GATEWAY_BALANCE__BASE_URL"],
        hmac_key=b"not-the-wallet-key-0123456789", connect_timeout=1, read_timeout=2),
        datetime.now)   # type: ignore[arg-type]
    with pytest.raises(ChannelAuthError) as err:
        forged.submit(make_refund())
    assert (err.value.http_status, err.value.code) == (401, "SIGN_ERROR")
    assert truth(sandbox_url, Route.BALANCE) == []
