"""Backlog after an outage: how fast ``refund-gateway resolve --loop`` drains it.

The WeChat sandbox answers every call after 150 ms (the sandbox's latency fault) and
limits the merchant to 150 calls/s (``bench/_limited_sandbox.py``: beyond it, 429
FREQUENCY_LIMITED, nothing executed). The outage left N refunds behind (default 10,000):
``--pending`` of them never reached the channel (made with the channel unreachable:
PENDING, a query then a resend each), the rest were executed by the channel but their
answer was lost (PROCESSING, one query each); all are due at once. Then 1 and 3 resolver
processes (``refund-gateway resolve --loop``, default settings: WeChat 150 calls/s,
concurrency 64) on PostgreSQL drain it, each run on a fresh backlog.

From the sandbox's call log: the drain rate (refunds/s, first call to the last refund's
deciding call), the calls/s the channel accepted beside the limit (target: at least 90%,
135 calls/s, with any number of processes), the 429s, and that no refund was queried
twice in one cycle (two answered queries of one refund less than 10 s apart: nothing
reschedules a check that soon). The refunds' end state is checked in the store.

    .venv/bin/python bench/bench_backlog.py              # 10,000 refunds, 1 and 3 processes
    .venv/bin/python bench/bench_backlog.py --quick      # 1,000 refunds (development)
    .venv/bin/python bench/bench_backlog.py -n 3000 --procs 3 --pending 0
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RESULTS,
    ROOT,
    SandboxProcess,
    database,
    log_to_file,
    postgres_available,
    refund_request,
    workdir,
    write_result,
)
from _limited_sandbox import latency_fault

TARGET_SHARE = 0.9
# Two answered queries of one refund closer than this are one cycle querying it twice:
# the lifecycle never schedules a check that soon (first check >= 10 s, then minutes).
SAME_CYCLE_SECONDS = 10.0


def make_backlog(sandbox: SandboxProcess, url: str, tmp: Path, n: int, pending: int,
                 threads: int = 16) -> dict[str, list[str]]:
    """N refunds as an outage leaves them, all due now: ``pending`` never reached the
    channel (PENDING), the rest executed by it with the answer lost (PROCESSING)."""
    from sqlalchemy import update

    from gateway.bootstrap import build_gateway
    from gateway.models import RefundStatus
    from gateway.settings import load_settings
    from gateway.store.schema import refunds

    payments = sandbox.add_payments("wechatpay", [100 + i % 9000 for i in range(n)])
    off = {r: None for r in ("alipay", "bankcard", "balance")}
    logs = log_to_file(tmp)
    made: dict[str, list[str]] = {"processing": [], "pending": []}

    def refund_all(gw: Any, part: list[dict[str, Any]], kind: str) -> None:
        def one(p: dict[str, Any]) -> str:
            r = gw.refund(refund_request("wechatpay", p["merchant_order_no"],
                                         p["channel_trade_no"], p["amount_fen"],
                                         f"bl-{p['merchant_order_no']}"))
            return str(r.id) if r.status.value == kind else f"!{r.status.value}"

        with ThreadPoolExecutor(threads) as pool:
            ids = list(pool.map(one, part))
        wrong = [i for i in ids if i.startswith("!")]
        if wrong:
            raise RuntimeError(f"{len(wrong)} backlog refunds are not {kind}: {wrong[:3]}")
        made[kind] = ids

    # The channel unreachable (a port nobody listens on): refunds stay PENDING.
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    os.environ["REFUND_GATEWAY_WECHATPAY__BASE_URL"] = f"http://127.0.0.1:{dead.getsockname()[1]}"
    try:
        gw = build_gateway(load_settings(sandbox.env_file, database_url=url,
                                         retry={"max_attempts": 1}, **off),
                           configure_logs=False)
    finally:
        del os.environ["REFUND_GATEWAY_WECHATPAY__BASE_URL"]
    refund_all(gw, payments[:pending], RefundStatus.PENDING.value)
    gw.close()
    dead.close()
    # The channel executed these; the answers were lost (the gateway stored what it got,
    # PROCESSING: WeChat's answer means "accepted").
    gw = build_gateway(load_settings(sandbox.env_file, database_url=url, **off),
                       configure_logs=False)
    refund_all(gw, payments[pending:], RefundStatus.PROCESSING.value)
    with gw.store.engine.begin() as conn:     # the outage is over: everything is due
        conn.execute(update(refunds).where(refunds.c.status.in_(["pending", "processing"]))
                     .values(next_check_at=datetime.now(UTC)))
    gw.close()
    logs.close()
    return made


def state_of(url: str, ids: list[str]) -> dict[str, int]:
    from sqlalchemy import create_engine, func, select

    from gateway.store.schema import refunds

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(refunds.c.status, func.count()).where(
                refunds.c.id.in_(ids)).group_by(refunds.c.status)).all()
    finally:
        engine.dispose()
    return {str(s): int(c) for s, c in rows}


def resolvers(procs: int, sandbox: SandboxProcess, url: str, tmp: Path,
              concurrency: int | None, profile: bool = False
              ) -> list[subprocess.Popen[bytes]]:
    """``refund-gateway resolve --loop`` processes, as deployed (JSON logs at INFO);
    ``profile``: each under ``py-spy record`` (``pip install py-spy``), a flame graph per
    process in bench/results/."""
    exe = Path(sys.executable).with_name("refund-gateway")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUND_GATEWAY_")}
    env.update({"REFUND_GATEWAY_DATABASE_URL": url, "REFUND_GATEWAY_LOG_FORMAT": "json",
                "REFUND_GATEWAY_LOG_LEVEL": "INFO", "REFUND_GATEWAY_AUTO_MIGRATE": "false"})
    extra = ["--concurrency", str(concurrency)] if concurrency else []
    out = []
    for k in range(procs):
        log = (tmp / f"resolver-{k}.log").open("wb")
        spy = ([str(exe.with_name("py-spy")), "record", "--nonblocking", "-o",
                str(RESULTS / f"backlog_resolver_{procs}proc_{k}.svg"), "--"]
               if profile else [])
        out.append(subprocess.Popen(
            [*spy, str(exe), "--env-file", str(sandbox.env_file), "resolve", "--loop",
             "--interval", "1", *extra], cwd=ROOT, env=env, stdout=log, stderr=log))
    return out


def drain(procs: int, n: int, pending_share: float, latency_ms: float, limit: float,
          concurrency: int | None, kind: str, profile: bool = False) -> dict[str, Any]:
    pending = round(n * pending_share)
    with workdir("bench-backlog-") as tmp:
        sandbox = SandboxProcess(tmp, limited=True)
        try:
            with database(kind, tmp) as url:
                from gateway.bootstrap import build_gateway
                from gateway.settings import load_settings

                build_gateway(load_settings(sandbox.env_file, database_url=url),
                              configure_logs=False).close()          # migrate once
                t0 = time.monotonic()
                made = make_backlog(sandbox, url, tmp, n, pending)
                setup = time.monotonic() - t0
                sandbox.post("/_sandbox/faults", latency_fault(latency_ms))
                sandbox.post("/_bench/limits", {"wechatpay": limit})
                sandbox.post("/_bench/calls/reset", {})
                every = made["processing"] + made["pending"]
                cpu_before = _children_cpu()
                workers = resolvers(procs, sandbox, url, tmp, concurrency, profile)
                deadline = time.monotonic() + 120 + 3 * n / limit
                try:
                    while time.monotonic() < deadline:   # every PENDING one sent, every
                        time.sleep(1.0)                   # PROCESSING one SUCCEEDED
                        if (state_of(url, made["pending"]).get("pending", 0) == 0
                                and state_of(url, made["processing"]).get("succeeded", 0)
                                == len(made["processing"])):
                            break
                finally:
                    for w in workers:
                        w.send_signal(signal.SIGTERM)
                    for w in workers:
                        try:
                            w.wait(60)
                        except subprocess.TimeoutExpired:
                            w.kill()
                resolver_cpu = _children_cpu() - cpu_before
                end_state = state_of(url, every)
                calls = sandbox.get("/_bench/calls")["calls"]
                log_dir = RESULTS / f"backlog_{procs}proc"
                log_dir.mkdir(parents=True, exist_ok=True)
                (log_dir / "calls.json").write_text(json.dumps(calls), encoding="utf-8")
                (log_dir / "made.json").write_text(json.dumps(made), encoding="utf-8")
                for log in tmp.glob("resolver-*.log"):
                    shutil.copy(log, log_dir / log.name)
        finally:
            sandbox.stop()
    return {"procs": procs, "database": kind, "refunds": n, "pending": pending,
            "setup_seconds": round(setup, 1), "end_state": end_state,
            "exit_codes": [w.returncode for w in workers],
            # the resolver processes' CPU (user + system) per refund drained, whole run
            "resolver_cpu_ms_per_refund": round(resolver_cpu * 1000 / n, 2),
            **figures(calls, made, limit)}


def figures(calls: list[dict[str, Any]], made: dict[str, list[str]], limit: float
            ) -> dict[str, Any]:
    """What the channel saw: rates, 429s, and queries per refund."""
    answered = [c for c in calls if c["allowed"]]
    limited = len(calls) - len(answered)
    queries: dict[str, list[float]] = defaultdict(list)
    deciding: dict[str, float] = {}
    for c in answered:
        if c["operation"] == "query":
            queries[c["no"]].append(c["t"])
    pending = set(made["pending"])
    for c in answered:
        no = c["no"]
        wanted = "refund" if no in pending else "query"
        if c["operation"] == wanted and no not in deciding:
            deciding[no] = c["t"]
    every = made["processing"] + made["pending"]
    undecided = [no for no in every if no not in deciding]
    twice = sorted(no for no, ts in queries.items()
                   if any(b - a < SAME_CYCLE_SECONDS for a, b in zip(sorted(ts), sorted(ts)[1:],
                                                                   strict=False)))
    if not answered:
        return {"error": "the channel answered nothing", "limited_429": limited}
    start = min(c["t"] for c in calls)
    last = max(deciding.values()) if deciding else start
    span = max(last - start, 1e-9)
    in_span = sum(1 for c in answered if c["t"] <= last)
    per_second = len(deciding) / span
    calls_per_second = in_span / span
    calls_per_refund = in_span / max(len(deciding), 1)
    return {
        "drain_seconds": round(span, 2),
        "refunds_per_second": round(per_second, 1),
        "calls_per_second": round(calls_per_second, 1),
        "calls_per_refund": round(calls_per_refund, 3),
        "limit": limit,
        "calls_share_of_limit": round(calls_per_second / limit, 3),
        # refunds/s beside what the limit allows at this mix of calls per refund
        "refunds_share_of_ceiling": round(per_second * calls_per_refund / limit, 3),
        "limited_429": limited,
        "peak_calls_in_1s": _peak(sorted(c["t"] for c in answered)),
        "queried_twice_in_one_cycle": len(twice), "queried_twice_examples": twice[:5],
        "undecided": len(undecided),
        "meets_target": calls_per_second >= TARGET_SHARE * limit and not twice
        and not undecided,
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _peak(times: list[float]) -> int:
    best = j = 0
    for i, t in enumerate(times):
        while times[j] < t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


def _print(r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"{r['procs']} process(es): {r['error']}", flush=True)
        return
    mark = "ok" if r["meets_target"] else "MISS"
    print(f"{r['procs']} resolver process(es), {r['database']}: {r['refunds']} refunds "
          f"({r['pending']} pending) drained in {r['drain_seconds']} s: "
          f"{r['refunds_per_second']}/s; channel accepted {r['calls_per_second']} calls/s "
          f"= {r['calls_share_of_limit']:.0%} of the {r['limit']:.0f}/s limit "
          f"({r['calls_per_refund']} calls per refund; peak {r['peak_calls_in_1s']} in 1 s); "
          f"429s {r['limited_429']}; queried twice in one cycle: "
          f"{r['queried_twice_in_one_cycle']}; undecided {r['undecided']}; "
          f"store {r['end_state']}; resolver CPU {r['resolver_cpu_ms_per_refund']} ms per "
          f"refund {mark}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10_000, help="refunds in the backlog")
    ap.add_argument("--quick", action="store_true", help="1,000 refunds (development)")
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 3],
                    help="resolver processes per run (one run each)")
    ap.add_argument("--pending", type=float, default=0.1,
                    help="share of the backlog that never reached the channel")
    ap.add_argument("--latency-ms", type=float, default=150.0)
    ap.add_argument("--limit", type=float, default=150.0, help="the channel's calls/s")
    ap.add_argument("--concurrency", type=int, default=None,
                    help="resolve --concurrency (default: the setting's, 64)")
    ap.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--profile", action="store_true",
                    help="run each resolver under py-spy (flame graphs in bench/results/)")
    args = ap.parse_args()
    n = 1_000 if args.quick else args.n
    problem = postgres_available() if args.database == "postgres" else None
    result: dict[str, Any] = {"n": n, "latency_ms": args.latency_ms, "limit": args.limit,
                              "target_share": TARGET_SHARE, "runs": []}
    print(f"backlog: {n} refunds, WeChat sandbox at {args.latency_ms:.0f} ms a call and "
          f"{args.limit:.0f} calls/s; target >= {TARGET_SHARE:.0%} of the limit "
          f"({TARGET_SHARE * args.limit:.0f} calls/s), no refund queried twice in one "
          f"cycle; load {os.getloadavg()[0]:.1f}", flush=True)
    for procs in args.procs:
        if problem:
            result["runs"].append({"procs": procs, "database": args.database,
                                   "skipped": problem})
            print(f"{procs} process(es): skipped: {problem}")
            continue
        if args.database == "sqlite" and procs > 1:
            print(f"{procs} processes: skipped (several resolvers need PostgreSQL)")
            continue
        run = drain(procs, n, args.pending, args.latency_ms, args.limit, args.concurrency,
                    args.database, args.profile)
        result["runs"].append(run)
        _print(run)
    print(f"wrote {write_result('backlog', result)}")


if __name__ == "__main__":
    threading.excepthook = lambda a: print(f"thread error: {a.exc_value!r}")
    main()
