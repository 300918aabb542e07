"""Refunds under channel latency: ``refund()`` from many threads while each call takes 150 ms.

The WeChat sandbox (its own process) answers every refund after ``--latency-ms`` (the
sandbox's latency fault). ``--procs`` spawned processes (default 2), each with one
``RefundGateway`` shared by ``--threads`` threads (default 32: 64 in all, as a refund
service's thread pools), all start on one barrier and refund fresh payments in full. The
rate is refunds / (last finish - first start), beside the raw SDK in the same layout and
latency (what the client side can do at all) and WeChat's limit of 150 calls/s per
merchant: target >= 90% of the limit (135/s). The sandbox does not enforce the limit
here (``refund()`` is never paced; the resolver is, see bench_backlog.py); ``--limit``
turns it on to see what a merchant over it meets (429s, refunds left PROCESSING).

Memory: each process samples its RSS every 20 ms. Per in-flight refund: (peak RSS while
every thread is in a call - RSS before the threads start, warmed up) / threads; and the
growth from a quarter of the run to its end per refund completed, which stays near 0
when nothing is kept per refund (bounded).

    .venv/bin/python bench/bench_latency.py                  # 3,000 refunds, 2 x 32 threads
    .venv/bin/python bench/bench_latency.py --quick          # 800
    .venv/bin/python bench/bench_latency.py -n 6000 --procs 2 --threads 32 --limit 150
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RAW_CLIENTS,
    SandboxProcess,
    build_gateway,
    database,
    log_to_file,
    postgres_available,
    workdir,
    write_result,
)
from _limited_sandbox import latency_fault

RATE_LIMIT = 150.0
TARGET_SHARE = 0.9
SAMPLE_SECONDS = 0.02


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _worker(mode: str, env_file: str, db_url: str, tmp: str,
            jobs: list[tuple[str, str, int]], threads: int, barrier: Any, out: Any) -> None:
    """One process: ``threads`` threads over ``jobs`` (merchant_order_no, trade_no, fen)."""
    from _common import read_env_file, refund_request

    logs = log_to_file(Path(tmp))
    if mode == "gateway":
        # a connection per thread (REFUND_GATEWAY_DATABASE_POOL_SIZE), as README advises
        gw = build_gateway(Path(env_file), db_url, ["wechatpay"], database_pool_size=threads)

        def call(job: tuple[str, str, int]) -> str:
            mo, trade, fen = job
            refund = gw.refund(refund_request("wechatpay", mo, trade, fen, f"lt-{mo}"))
            return str(refund.status.value)
    else:
        raw = RAW_CLIENTS["wechatpay"](read_env_file(Path(env_file)))

        def call(job: tuple[str, str, int]) -> str:
            mo, trade, fen = job
            raw.refund(f"RAW{mo[-20:]}", trade, fen, fen)
            return "raw_ok"

    warm, jobs = jobs[:threads], jobs[threads:]
    warmers = [threading.Thread(target=call, args=(j,)) for j in warm]   # pools, keys
    for t in warmers:
        t.start()
    for t in warmers:
        t.join()
    chunks = [jobs[t::threads] for t in range(threads)]
    results: list[dict[str, Any]] = []
    samples: list[tuple[float, int, int]] = []     # (time, rss, refunds done)
    done = [0]
    running = threading.Event()

    def sample() -> None:
        while running.is_set():
            samples.append((time.time(), rss_bytes(), done[0]))
            time.sleep(SAMPLE_SECONDS)

    def run(chunk: list[tuple[str, str, int]]) -> None:
        statuses: dict[str, int] = {}
        errors = 0
        start = time.time()
        for job in chunk:
            try:
                s = call(job)
            except Exception as exc:
                errors += 1
                s = f"error:{type(exc).__name__}"
            statuses[s] = statuses.get(s, 0) + 1
            done[0] += 1
        results.append({"start": start, "end": time.time(), "n": len(chunk),
                        "errors": errors, "statuses": statuses})

    pool = [threading.Thread(target=run, args=(c,)) for c in chunks]
    barrier.wait()
    idle = rss_bytes()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    running.set()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    running.clear()
    sampler.join()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    if mode == "gateway":
        gw.close()
    logs.close()
    out.put({"rows": results, "idle_rss": idle, "samples": samples, "threads": threads,
             "cpu_seconds": cpu})


def run_once(mode: str, sandbox: SandboxProcess, db_url: str, tmp: Path, n: int,
             procs: int, threads: int) -> dict[str, Any]:
    fens = [100 + i % 9000 for i in range(n + procs * threads)]
    payments = sandbox.add_payments("wechatpay", fens)
    jobs = [(p["merchant_order_no"], p["channel_trade_no"], p["amount_fen"])
            for p in payments]
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs)
    out = ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(
        mode, str(sandbox.env_file), db_url, str(tmp), jobs[k::procs], threads, barrier,
        out)) for k in range(procs)]
    for w in workers:
        w.start()
    parts = [out.get(timeout=900) for _ in workers]
    for w in workers:
        w.join()
    rows = [r for p in parts for r in p["rows"]]
    start = min(r["start"] for r in rows)
    end = max(r["end"] for r in rows)
    statuses: dict[str, int] = {}
    for r in rows:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    count = sum(r["n"] for r in rows)
    errors = sum(r["errors"] for r in rows)
    cpu = sum(p["cpu_seconds"] for p in parts)
    return {"refunds": count, "errors": errors, "seconds": round(end - start, 3),
            "per_second": round((count - errors) / (end - start), 1),
            "statuses": statuses, "memory": memory(parts),
            # the refund processes' own CPU (user + system) per refund, over the run
            "cpu_ms_per_refund": round(cpu * 1000 / max(count, 1), 2)}


def memory(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Per process: KiB per in-flight refund, and RSS growth per completed refund."""
    per_flight, per_done = [], []
    for p in parts:
        samples = p["samples"]
        if len(samples) < 4:
            continue
        total = samples[-1][2]
        busy = [s for s in samples if s[2] < total - p["threads"]]   # all threads in calls
        peak = max(s[1] for s in (busy or samples))
        per_flight.append((peak - p["idle_rss"]) / p["threads"] / 1024)
        quarter = next(s for s in samples if s[2] >= total / 4)
        grown = samples[-1][1] - quarter[1]
        per_done.append(grown / max(samples[-1][2] - quarter[2], 1))
    if not per_flight:
        return {}
    return {"kib_per_in_flight_refund": round(max(per_flight), 1),
            "rss_growth_bytes_per_refund": round(max(per_done), 1),
            "idle_rss_mib": [round(p["idle_rss"] / 2**20, 1) for p in parts]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3000, help="refunds per run")
    ap.add_argument("--quick", action="store_true", help="800 refunds (development)")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=32, help="threads per process")
    ap.add_argument("--latency-ms", type=float, default=150.0)
    ap.add_argument("--limit", type=float, default=None,
                    help="let the sandbox enforce this many calls/s (429 beyond)")
    ap.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the raw-SDK run")
    args = ap.parse_args()
    n = 800 if args.quick else args.n
    print(f"latency: refund() from {args.procs} processes x {args.threads} threads, WeChat "
          f"sandbox at {args.latency_ms:.0f} ms a call, {args.database}; target >= "
          f"{TARGET_SHARE:.0%} of WeChat's {RATE_LIMIT:.0f} calls/s "
          f"({TARGET_SHARE * RATE_LIMIT:.0f}/s); load {os.getloadavg()[0]:.1f}", flush=True)
    result: dict[str, Any] = {"n": n, "procs": args.procs, "threads": args.threads,
                              "latency_ms": args.latency_ms, "rate_limit": RATE_LIMIT,
                              "target": TARGET_SHARE * RATE_LIMIT, "runs": []}
    problem = postgres_available() if args.database == "postgres" else None
    with workdir("bench-latency-") as tmp:
        sandbox = SandboxProcess(tmp, limited=True)
        try:
            sandbox.post("/_sandbox/faults", latency_fault(args.latency_ms))
            if args.limit:
                sandbox.post("/_bench/limits", {"wechatpay": args.limit})
            if not args.no_ceiling:
                raw = run_once("raw", sandbox, "", tmp, n, args.procs, args.threads)
                result["runs"].append({"mode": "raw SDK", "database": "-", **raw})
                _print(result["runs"][-1])
            if problem:
                result["runs"].append({"mode": "gateway", "database": args.database,
                                       "skipped": problem})
                print(f"gateway: skipped: {problem}")
            else:
                with database(args.database, tmp) as url:
                    build_gateway(sandbox.env_file, url, ["wechatpay"]).close()  # migrate
                    r = run_once("gateway", sandbox, url, tmp, n, args.procs, args.threads)
                result["runs"].append({
                    "mode": "gateway", "database": args.database, **r,
                    "share_of_limit": round(r["per_second"] / RATE_LIMIT, 3),
                    "meets_target": r["per_second"] >= TARGET_SHARE * RATE_LIMIT})
                _print(result["runs"][-1])
        finally:
            sandbox.stop()
    print(f"wrote {write_result('latency', result)}")


def _print(r: dict[str, Any]) -> None:
    mem = r.get("memory") or {}
    mark = "" if "meets_target" not in r else ("ok" if r["meets_target"] else "MISS")
    print(f"{r['mode']:<8} {r['database']:<9} {r['per_second']:>7.1f}/s ({r['refunds']} in "
          f"{r['seconds']} s, errors {r['errors']}, {r['statuses']}); CPU "
          f"{r['cpu_ms_per_refund']} ms per refund; "
          f"{mem.get('kib_per_in_flight_refund', '?')} KiB per in-flight refund, RSS "
          f"growth {mem.get('rss_growth_bytes_per_refund', '?')} B per refund done "
          f"{mark}", flush=True)


if __name__ == "__main__":
    main()
