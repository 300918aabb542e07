"""Crash recovery: a refund-service process is SIGKILLed at each failpoint; a new process
runs the resolver; the sandbox's truth says nothing was paid twice and nothing was lost.

Per failpoint: 50 runs on SQLite and 20 on PostgreSQL in the CI profile, 1,000 on each
with ``--long``. After every run:
no channel refund number executed twice, every stored refund final (or PROCESSING with
a next check), and per payment Σ(counting refunds) <= paid, on both sides.
"""

from __future__ import annotations

import signal
import time
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any

import pytest

from gateway import RefundStatus
from gateway.bootstrap import build_gateway
from gateway.failpoints import (
    AFTER_ANSWER,
    AFTER_RESERVE,
    AFTER_SEND,
    IN_NOTIFICATION,
    IN_REROUTE,
)
from gateway.settings import load_settings
from tests.reliability import workers
from tests.reliability.harness import SandboxProcess, write_summary

ROUTES = {
    AFTER_RESERVE: ["alipay", "wechatpay", "bankcard", "balance"],
    AFTER_SEND: ["alipay", "wechatpay", "bankcard", "balance"],
    AFTER_ANSWER: ["alipay", "wechatpay", "bankcard", "balance"],
    IN_NOTIFICATION: ["wechatpay", "bankcard", "alipay"],
    IN_REROUTE: ["wechatpay", "bankcard"],
}


def _run(ctx: ForkServerContext, target: Any, *args: Any) -> int | None:
    proc = ctx.Process(target=target, args=args)
    proc.start()
    proc.join(timeout=120)
    if proc.is_alive():
        proc.kill()
        pytest.fail(f"{target.__name__} hung")
    return proc.exitcode


def check_invariants(sandbox: SandboxProcess, db_url: str, env_file: str) -> dict[str, int]:
    truth = sandbox.truth()
    numbers = [r["channel_refund_no"] for r in truth]
    assert len(numbers) == len(set(numbers)), "a refund number was executed twice"
    assert all(r["executions"] == 1 for r in truth), "a refund was executed twice"
    gw = build_gateway(load_settings(env_file, database_url=db_url, log_level="ERROR"),
                       adapters={}, configure_logs=False)
    refunds = gw.store.list_refunds()
    gw.close()
    by_no = {r["channel_refund_no"]: r for r in truth}
    open_ = 0
    paid: dict[tuple[str, str], int] = {}
    counted: dict[tuple[str, str], int] = {}
    for refund in refunds:
        key = (refund.payment.route.value, refund.payment.merchant_order_no)
        paid[key] = refund.payment.amount.minor
        if refund.status.counts_against_payment:
            counted[key] = counted.get(key, 0) + refund.amount.minor
        if refund.status in (RefundStatus.PENDING, RefundStatus.PROCESSING):
            assert refund.next_check_at is not None, f"{refund.id} is open with no check"
            open_ += 1
        if refund.status is RefundStatus.SUCCEEDED:
            assert by_no[refund.channel_refund_no]["status"] == "SUCCESS"
    assert all(counted[k] <= paid[k] for k in counted), "over-refund in the store"
    channel_sum: dict[str, int] = {}
    for r in truth:
        if r["status"] not in ("FAILED", "CLOSED"):
            channel_sum[r["merchant_order_no"]] = (channel_sum.get(r["merchant_order_no"], 0)
                                                   + r["amount_fen"])
    order_paid = {order: amount for (_, order), amount in paid.items()}
    for order, total in channel_sum.items():
        if order in order_paid:
            # A rerouted refund's balance credit stands in for the abnormal one.
            rerouted = sum(x.amount.minor for x in refunds
                           if x.payment.merchant_order_no == order
                           and x.status is RefundStatus.REROUTED)
            assert total - rerouted <= order_paid[order], f"channel over-refund on {order}"
    return {"refunds": len(refunds), "open": open_}


@pytest.mark.timeout(7200)   # the long profile: 1,000 kills per failpoint
@pytest.mark.parametrize("failpoint", list(ROUTES))
def test_kill_at_failpoint_then_resolve(failpoint: str, sandbox_proc: SandboxProcess,
                                        forkserver: ForkServerContext, database_url: str,
                                        profile: dict[str, int], summary_path: Path) -> None:
    sandbox_proc.reset()
    db_url = database_url   # SQLite, and PostgreSQL (its transactions are pipelined)
    env_file = str(sandbox_proc.env_file)
    runs = profile["crash_runs" if db_url.startswith("sqlite") else "crash_runs_pg"]
    kills, open_after = 0, 0
    started = time.monotonic()
    for i in range(runs):
        route = ROUTES[failpoint][i % len(ROUTES[failpoint])]
        payment = sandbox_proc.payment(route, 10_000)
        key = f"{failpoint}-{i}"
        if failpoint == IN_REROUTE:
            sandbox_proc.fault(route, "refund", "abnormal")
            code = _run(forkserver, workers.crash_reroute, env_file, db_url, failpoint,
                        payment, key, 4_000)
        elif failpoint == IN_NOTIFICATION:
            code = _run(forkserver, workers.crash_notification, env_file, db_url, failpoint,
                        sandbox_proc.url, payment, key, 4_000)
        else:
            code = _run(forkserver, workers.crash_refund, env_file, db_url, failpoint,
                        payment, key, 4_000)
        kills += code == -signal.SIGKILL
        assert code in (0, -signal.SIGKILL), f"worker failed with exit code {code}"
        assert _run(forkserver, workers.resolve, env_file, db_url, [route]) == 0
        open_after = check_invariants(sandbox_proc, db_url, env_file)["open"]
    assert kills == runs, f"the failpoint fired in {kills} of {runs} runs"
    write_summary(summary_path, {"suite": "crash", "failpoint": failpoint,
                                 "store": db_url.split(":", 1)[0], "runs": runs,
                                 "kills": kills, "duplicates": 0, "lost": 0,
                                 "open_after_resolver": open_after,
                                 "seconds": round(time.monotonic() - started, 1)})
