"""Throughput: refunds per second end to end, several workers, SQLite and PostgreSQL.

The sandbox runs in its own process (``python -m sandbox serve``) so it does not share a
GIL with the gateway. Payments are created through its control API before the clock
starts. ``--procs`` worker processes (spawned; each builds its own ``RefundGateway``
through bootstrap, keys loaded once per process) each run ``--threads`` threads; all wait
on one barrier, then refund their share of fresh payments in full. The rate is refunds /
(last finish - first start). SQLite: one file (WAL, synchronous=FULL) shared by the
processes; PostgreSQL: a fresh schema (``search_path``), dropped afterwards.

The same layout is then run with the raw SDK call and no store: the sandbox's own ceiling
on this machine (client signing + sandbox + answer verification), which bounds the
gateway's figure. Target: >= 300 refunds/s on each database (2 cores).

    .venv/bin/python bench/bench_throughput.py                       # 1,000 refunds per run
    .venv/bin/python bench/bench_throughput.py -n 5000 --procs 2 --threads 8
    .venv/bin/python bench/bench_throughput.py --databases sqlite --routes alipay
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RAW_CLIENTS,
    SDK_ROUTES,
    SandboxProcess,
    build_gateway,
    configured_routes,
    database,
    log_to_file,
    postgres_available,
    workdir,
    write_result,
)

TARGET = 300.0


def _worker(mode: str, route: str, env_file: str, db_url: str, tmp: str,
            jobs: list[tuple[str, str, int]], threads: int, barrier: Any,
            out: Any) -> None:
    """One process: ``threads`` threads over ``jobs`` (merchant_order_no, trade_no, fen)."""
    from _common import read_env_file, refund_request

    logs = log_to_file(Path(tmp))
    if mode == "gateway":
        # a connection per thread (REFUND_GATEWAY_DATABASE_POOL_SIZE), as README advises
        gw = build_gateway(Path(env_file), db_url, [route], database_pool_size=threads)

        def call(i: int, job: tuple[str, str, int]) -> str:
            mo, trade, fen = job
            refund = gw.refund(refund_request(route, mo, trade, fen, f"tp-{mo}"))
            return str(refund.status.value)
    else:
        raw = RAW_CLIENTS[route](read_env_file(Path(env_file)))

        def call(i: int, job: tuple[str, str, int]) -> str:
            mo, trade, fen = job
            raw.refund(f"RAW{mo[-20:]}", trade, fen, fen)
            return "raw_ok"

    chunks = [jobs[t::threads] for t in range(threads)]
    results: list[dict[str, Any]] = []

    def run(chunk: list[tuple[str, str, int]]) -> None:
        statuses: dict[str, int] = {}
        errors = 0
        start = time.time()
        for i, job in enumerate(chunk):
            try:
                s = call(i, job)
            except Exception as exc:
                errors += 1
                s = f"error:{type(exc).__name__}"
            statuses[s] = statuses.get(s, 0) + 1
        results.append({"start": start, "end": time.time(), "n": len(chunk),
                        "errors": errors, "statuses": statuses})

    pool = [threading.Thread(target=run, args=(c,)) for c in chunks]
    barrier.wait()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if mode == "gateway":
        gw.close()
    logs.close()
    out.put(results)


def run_once(mode: str, route: str, sandbox: SandboxProcess, db_url: str, tmp: Path,
             n: int, procs: int, threads: int) -> dict[str, Any]:
    jobs = []
    for i in range(n):
        fen = 100 + i % 9000
        p = sandbox.add_payment(route, fen)
        jobs.append((p["merchant_order_no"], p["channel_trade_no"], fen))
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs)
    out = ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(
        mode, route, str(sandbox.env_file), db_url, str(tmp), jobs[k::procs], threads,
        barrier, out)) for k in range(procs)]
    for w in workers:
        w.start()
    rows: list[dict[str, Any]] = []
    for _ in workers:
        rows += out.get(timeout=600)
    for w in workers:
        w.join()
    start = min(r["start"] for r in rows)
    end = max(r["end"] for r in rows)
    statuses: dict[str, int] = {}
    for r in rows:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    done = sum(r["n"] for r in rows)
    errors = sum(r["errors"] for r in rows)
    return {"refunds": done, "errors": errors, "seconds": round(end - start, 3),
            "per_second": round((done - errors) / (end - start), 1), "statuses": statuses}


def run(n: int, procs: int, threads: int, routes: list[str], databases: list[str],
        ceiling: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"n": n, "procs": procs, "threads": threads, "target": TARGET,
                              "runs": []}
    pg_problem = postgres_available() if "postgres" in databases else None
    with workdir("bench-throughput-") as tmp:
        sandbox = SandboxProcess(tmp)
        try:
            for route in configured_routes(sandbox.settings, routes):
                if ceiling:
                    r = run_once("raw", route, sandbox, "", tmp, n, procs, threads)
                    result["runs"].append({"route": route, "database": "-",
                                           "mode": "raw SDK (sandbox ceiling)", **r})
                    _print(result["runs"][-1])
                for kind in databases:
                    if kind == "postgres" and pg_problem:
                        result["runs"].append({"route": route, "database": kind,
                                               "mode": "gateway", "skipped": pg_problem})
                        print(f"{route:<10} postgres   skipped: {pg_problem}")
                        continue
                    with database(kind, tmp / f"{route}-{kind}") as url:
                        (tmp / f"{route}-{kind}").mkdir(exist_ok=True)
                        build_gateway(sandbox.env_file, url, [route]).close()  # migrate once
                        r = run_once("gateway", route, sandbox, url, tmp, n, procs, threads)
                    result["runs"].append({"route": route, "database": kind,
                                           "mode": "gateway", **r,
                                           "meets_target": r["per_second"] >= TARGET})
                    _print(result["runs"][-1])
        finally:
            sandbox.stop()
    return result


def _print(r: dict[str, Any]) -> None:
    mark = "" if "meets_target" not in r else ("ok" if r["meets_target"] else "MISS")
    print(f"{r['route']:<10} {r['database']:<9} {r['mode']:<26} {r['per_second']:>8.1f}/s "
          f"({r['refunds']} in {r['seconds']} s, errors {r['errors']}) {mark}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="refunds per run")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4, help="threads per process")
    ap.add_argument("--routes", nargs="+", default=["wechatpay"], choices=SDK_ROUTES)
    ap.add_argument("--databases", nargs="+", default=["sqlite", "postgres"],
                    choices=["sqlite", "postgres"])
    ap.add_argument("--no-ceiling", action="store_true", help="skip the raw-SDK run")
    args = ap.parse_args()
    print(f"throughput: {args.procs} processes x {args.threads} threads, sandbox in its own "
          f"process; target >= {TARGET:.0f} refunds/s")
    result = run(args.n, args.procs, args.threads, args.routes, args.databases,
                 not args.no_ceiling)
    print(f"wrote {write_result('throughput', result)}")


if __name__ == "__main__":
    main()
