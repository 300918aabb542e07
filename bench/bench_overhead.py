"""Overhead: the same refunds through ``RefundGateway`` and through the raw SDK call.

Per route (WeChat Pay: wechatpayv3 ``WeChatPay.refund`` in public-key mode; Alipay:
python-alipay-sdk ``AliPay.api_alipay_trade_refund``), against one in-process
``SandboxServer``, alternating gateway/raw every iteration (and which goes first) so drift
(caches, the sandbox's growing state) hits both alike. Each call refunds a fresh payment
in full. The gateway runs on SQLite (WAL, synchronous=FULL) in a temporary directory and
logs JSON at INFO to a file; both sides load their keys once, before timing.

Reports per route: median and p99 of each side, the ratio gateway/raw at the median
(target <= 1.2) and the p99 of the per-pair overhead gateway - raw (target <= 5 ms).

The commit floor, measured in the same run on the same store: every iteration also times
two durable transactions that each write one row and nothing else (the gateway's engine,
so the same WAL and synchronous=FULL): the physical cost of what invariants 2 and 5
require (the reservation committed before the call, the outcome in a transaction of its
own). The gateway's median overhead is printed as a multiple of it (target <= 2x).

    .venv/bin/python bench/bench_overhead.py                 # 1,000 pairs per route
    .venv/bin/python bench/bench_overhead.py -n 10000 --routes wechatpay
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RAW_CLIENTS,
    SDK_ROUTES,
    build_gateway,
    configured_routes,
    log_to_file,
    ms,
    percentile,
    refund_request,
    require_sandbox,
    workdir,
    write_result,
)

TARGET_RATIO = 1.2
TARGET_OVERHEAD_P99_MS = 5.0
TARGET_FLOOR_MULTIPLE = 2.0


def run(n: int, warmup: int, routes: list[str]) -> dict[str, object]:
    require_sandbox()
    from sandbox.server import SandboxServer

    out: dict[str, object] = {"n": n, "warmup": warmup, "database": "sqlite (WAL, FULL)",
                              "targets": {"ratio_median": TARGET_RATIO,
                                          "overhead_p99_ms": TARGET_OVERHEAD_P99_MS,
                                          "overhead_floor_multiple": TARGET_FLOOR_MULTIPLE},
                              "routes": {}}
    with workdir("bench-overhead-") as tmp, SandboxServer() as server:
        settings = server.settings()
        env_file = server.write_env_file(tmp / "sandbox.env")
        logs = log_to_file(tmp)
        routes = configured_routes(settings, routes)
        gw = build_gateway(env_file, f"sqlite:///{tmp / 'gateway.db'}", routes)
        try:
            for route in routes:
                raw = RAW_CLIENTS[route](settings)
                out["routes"][route] = measure(route, n, warmup, gw, raw, server)  # type: ignore[index]
        finally:
            gw.close()
            logs.close()
    return out


def measure(route: str, n: int, warmup: int, gw: object, raw: object,
            server: object) -> dict[str, object]:
    state = server.state  # type: ignore[attr-defined]
    floor = CommitFloor(gw.store.engine)  # type: ignore[attr-defined]
    gw_t: list[float] = []
    raw_t: list[float] = []
    floor_t: list[float] = []
    statuses: dict[str, int] = {}
    gc.collect()
    for i in range(warmup + n):
        fen = 100 + i % 9000
        mine = state.add_payment(route, fen)
        theirs = state.add_payment(route, fen)
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for side in order:
            if side == 0:
                request = refund_request(route, mine.merchant_order_no,
                                         mine.channel_trade_no, fen, f"ovh-{route}-{i}")
                t0 = time.perf_counter()
                refund = gw.refund(request)  # type: ignore[attr-defined]
                dt = time.perf_counter() - t0
                if i >= warmup:
                    gw_t.append(dt)
                    statuses[refund.status.value] = statuses.get(refund.status.value, 0) + 1
            else:
                number = f"RAW{route[:2].upper()}{i:010d}"
                t0 = time.perf_counter()
                raw.refund(number, theirs.channel_trade_no, fen, fen)  # type: ignore[attr-defined]
                dt = time.perf_counter() - t0
                if i >= warmup:
                    raw_t.append(dt)
        dt = floor.two_commits()
        if i >= warmup:
            floor_t.append(dt)
    overhead = [g - r for g, r in zip(gw_t, raw_t, strict=True)]
    floor_med = statistics.median(floor_t)
    gw_med, raw_med = statistics.median(gw_t), statistics.median(raw_t)
    result = {
        "gateway_median_ms": ms(gw_med), "gateway_p99_ms": ms(percentile(gw_t, 99)),
        "raw_median_ms": ms(raw_med), "raw_p99_ms": ms(percentile(raw_t, 99)),
        "ratio_median": round(gw_med / raw_med, 3),
        "overhead_median_ms": ms(statistics.median(overhead)),
        "overhead_p99_ms": ms(percentile(overhead, 99)),
        "commit_floor_median_ms": ms(floor_med),
        "overhead_floor_multiple": round(statistics.median(overhead) / floor_med, 2),
        "gateway_statuses": statuses,
    }
    result["meets_targets"] = (result["ratio_median"] <= TARGET_RATIO  # type: ignore[operator]
                               and result["overhead_p99_ms"] <= TARGET_OVERHEAD_P99_MS)  # type: ignore[operator]
    return result


class CommitFloor:
    """Two durable transactions of one row each on the gateway's own engine (its WAL,
    synchronous=FULL): what the two commits a refund needs cost, and nothing else."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import text

        self._engine = engine
        self._update = text("UPDATE bench_commit_floor SET n = n + 1 WHERE id = 1")
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS bench_commit_floor "
                              "(id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"))
            conn.execute(text("INSERT OR IGNORE INTO bench_commit_floor VALUES (1, 0)"))

    def two_commits(self) -> float:
        t0 = time.perf_counter()
        for _ in range(2):
            with self._engine.begin() as conn:
                conn.execute(self._update)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="timed pairs per route")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--routes", nargs="+", default=list(SDK_ROUTES), choices=SDK_ROUTES)
    args = ap.parse_args()
    result = run(args.n, args.warmup, args.routes)
    print(f"overhead: {args.n} refunds per route, gateway (SQLite FULL) vs raw SDK, "
          "alternating, one in-process sandbox")
    print(f"{'route':<10} {'gw med':>8} {'gw p99':>8} {'raw med':>8} {'raw p99':>8} "
          f"{'ratio':>6} {'ovh p99':>8} {'ovh med':>8} {'floor':>6} {'x floor':>7}   "
          f"targets: ratio <= {TARGET_RATIO}, overhead p99 <= {TARGET_OVERHEAD_P99_MS} ms, "
          f"overhead <= {TARGET_FLOOR_MULTIPLE:g}x the commit floor")
    for route, r in result["routes"].items():  # type: ignore[attr-defined]
        print(f"{route:<10} {r['gateway_median_ms']:>8.2f} {r['gateway_p99_ms']:>8.2f} "
              f"{r['raw_median_ms']:>8.2f} {r['raw_p99_ms']:>8.2f} {r['ratio_median']:>6.2f} "
              f"{r['overhead_p99_ms']:>8.2f} {r['overhead_median_ms']:>8.2f} "
              f"{r['commit_floor_median_ms']:>6.2f} {r['overhead_floor_multiple']:>6.2f}x   "
              f"{'ok' if r['meets_targets'] else 'MISS'}")
    print(f"wrote {write_result('overhead', result)}")


if __name__ == "__main__":
    main()
