"""Notifications: WeChat REFUND.SUCCESS notifications verified + decrypted + applied per second.

Setup (untimed): an in-process ``SandboxServer`` settles WeChat refunds only after one
query; N refunds go through ``RefundGateway`` (stored PROCESSING), then one raw SDK query
each makes the sandbox settle them and queue its genuine notification (RSA-signed with
the platform key, resource AES-256-GCM with the API v3 key), taken with
``server.pending_notifications("wechatpay")``. Timed: ``RefundGateway.handle_notification``
over all N, first in one process (one web worker), then split over ``--procs`` worker
processes sharing the store (how a webhook endpoint is deployed: several workers; each
builds its own gateway, loads its keys, and starts on one barrier; the rate is
N / (last finish - first start)). Each must be accepted and leave the refund SUCCEEDED.

Split (same notifications, measured separately before the timed run, store untouched):
verify = the SDK's RSA check, decrypt = AES-256-GCM of the resource, parse = the adapter's
whole ``parse_notification`` (headers, skew, verify, decrypt, decode); apply = the rest of
``handle_notification`` (replay guard, lookup, state change and events in the store).
Target: >= 3,000 notifications/s.

    .venv/bin/python bench/bench_notifications.py                   # 1,000, SQLite then PostgreSQL
    .venv/bin/python bench/bench_notifications.py -n 10000 --databases sqlite
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RawWechat,
    build_gateway,
    database,
    log_to_file,
    postgres_available,
    refund_request,
    require_sandbox,
    workdir,
    write_result,
)

TARGET = 3000.0
ROUTE = "wechatpay"


def prepare(server: Any, gw: Any, n: int) -> list[tuple[dict[str, str], bytes]]:
    from sandbox.state import Settle

    server.state.settle[ROUTE] = Settle(mode="after_queries", n=1)
    raw = RawWechat(server.settings())
    for i in range(n):
        p = server.state.add_payment(ROUTE, 100 + i % 9000)
        refund = gw.refund(refund_request(ROUTE, p.merchant_order_no, p.channel_trade_no,
                                          p.amount_fen, f"nt-{p.merchant_order_no}"))
        code, message = raw.sdk.query_refund(out_refund_no=refund.channel_refund_no)
        if code != 200:
            raise RuntimeError(f"sandbox query answered {code}: {message[:200]}")
    notes = server.pending_notifications(ROUTE)
    if len(notes) != n:
        raise RuntimeError(f"expected {n} notifications from the sandbox, got {len(notes)}")
    return [(dict(note.headers), note.body) for note in notes]


def split(gw: Any, notes: list[tuple[dict[str, str], bytes]], apikey: str
          ) -> dict[str, float]:
    """Seconds per notification for verify, decrypt and the adapter's whole parse."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from adapters.wechatpay.notify import canonical_headers

    adapter = gw.adapters[ROUTE]
    client = adapter._client
    prepared = [(canonical_headers(h), b.decode()) for h, b in notes]
    t0 = time.perf_counter()
    for h, text in prepared:
        assert client.verify_notification(h, text)
    verify = (time.perf_counter() - t0) / len(notes)
    aes = AESGCM(apikey.encode())
    t0 = time.perf_counter()
    for _, text in prepared:
        r = json.loads(text)["resource"]
        aes.decrypt(r["nonce"].encode(), base64.b64decode(r["ciphertext"]),
                    r["associated_data"].encode())
    decrypt = (time.perf_counter() - t0) / len(notes)
    t0 = time.perf_counter()
    for h, b in notes:
        adapter.parse_notification(h, b)
    parse = (time.perf_counter() - t0) / len(notes)
    return {"verify": verify, "decrypt": decrypt, "parse": parse}


def _handle(gw: Any, notes: list[tuple[dict[str, str], bytes]], threads: int,
            batch: int) -> tuple[int, int]:
    """(accepted, commits): ``batch`` > 0: a queue consumer's batches through
    ``handle_notifications``; else ``handle_notification`` from ``threads`` threads (a
    web worker's thread pool, sharing commits by group commit)."""
    if batch:
        acks = [a for i in range(0, len(notes), batch)
                for a in gw.handle_notifications([(ROUTE, h, b) for h, b in
                                                  notes[i:i + batch]])]
        return sum(a.accepted for a in acks), -(-len(notes) // batch)
    group = gw._notification_commits
    before = group.batches
    with ThreadPoolExecutor(threads) as pool:
        acks = list(pool.map(lambda hb: gw.handle_notification(ROUTE, *hb), notes))
    return sum(a.accepted for a in acks), group.batches - before


def _worker(env_file: str, url: str, tmp: str, notes: list[tuple[dict[str, str], bytes]],
            threads: int, batch: int, barrier: Any, out: Any) -> None:
    """One worker process: its own gateway and keys; handles its share after the
    barrier (``_handle``)."""
    logs = log_to_file(Path(tmp))
    gw = build_gateway(Path(env_file), url, [ROUTE])
    barrier.wait()
    start = time.time()
    accepted, commits = _handle(gw, notes, threads, batch)
    end = time.time()
    gw.close()
    logs.close()
    out.put({"start": start, "end": end, "n": len(notes), "accepted": accepted,
             "commits": commits})


def run_procs(env_file: Path, url: str, tmp: Path,
              notes: list[tuple[dict[str, str], bytes]], procs: int, threads: int = 1,
              batch: int = 0) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(str(env_file), url, str(tmp),
                                                 notes[k::procs], threads, batch,
                                                 barrier, out))
               for k in range(procs)]
    for w in workers:
        w.start()
    rows = [out.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
    wall = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    accepted = sum(r["accepted"] for r in rows)
    commits = sum(r["commits"] for r in rows)
    return {"procs": procs, "threads": threads, "batch": batch, "seconds": round(wall, 3),
            "per_second": round(len(notes) / wall, 1), "rejected": len(notes) - accepted,
            "commits": commits,
            "per_commit": round(len(notes) / commits, 1) if commits else None}


def run_one(kind: str, n: int, tmp: Path, procs: int, threads: int,
            batch: int) -> dict[str, Any]:
    from sandbox.server import SandboxServer

    with SandboxServer() as server, database(kind, tmp) as url:
        env_file = server.write_env_file(tmp / f"sandbox-{kind}.env")
        gw = build_gateway(env_file, url, [ROUTE])
        try:
            # Three sets of refunds: one process and one thread; web workers (processes
            # of threads); queue consumers (processes of batches).
            notes = prepare(server, gw, 3 * n)
            single, web, queue = notes[:n], notes[n:2 * n], notes[2 * n:]
            parts = split(gw, single,
                          server.settings()["REFUND_GATEWAY_WECHATPAY__APIV3_KEY"])
            t0 = time.perf_counter()
            acks = [gw.handle_notification(ROUTE, h, b) for h, b in single]
            wall = time.perf_counter() - t0
            rejected = sum(1 for a in acks if not a.accepted)
            parallel = run_procs(env_file, url, tmp, web, procs, threads=threads)
            batched = run_procs(env_file, url, tmp, queue, procs, batch=batch)
            rejected += parallel["rejected"] + batched["rejected"]
            succeeded = sum(1 for r in gw.store.list_refunds()
                            if r.status.value == "succeeded")
        finally:
            gw.close()
    per = wall / n
    best = max(n / wall, parallel["per_second"], batched["per_second"])
    return {
        "database": kind, "notifications": n, "seconds": round(wall, 3),
        "per_second": round(n / wall, 1), "parallel": parallel, "batched": batched,
        "best_per_second": round(best, 1), "rejected": rejected, "succeeded": succeeded,
        "split_ms": {"verify": round(parts["verify"] * 1000, 4),
                     "decrypt": round(parts["decrypt"] * 1000, 4),
                     "parse_total": round(parts["parse"] * 1000, 4),
                     "apply": round((per - parts["parse"]) * 1000, 4),
                     "handle_total": round(per * 1000, 4)},
        "meets_target": (min(parallel["per_second"], batched["per_second"]) >= TARGET
                         and rejected == 0 and succeeded == 3 * n),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="notifications per run (each run "
                    "prepares 2n refunds: n for one process, n for the workers)")
    ap.add_argument("--procs", type=int, default=2, help="worker processes")
    ap.add_argument("--threads", type=int, default=16,
                    help="threads per web worker process (its thread pool)")
    ap.add_argument("--batch", type=int, default=100,
                    help="notifications per handle_notifications batch (queue consumers)")
    ap.add_argument("--databases", nargs="+", default=["sqlite", "postgres"],
                    choices=["sqlite", "postgres"])
    args = ap.parse_args()
    require_sandbox()
    print(f"notifications: {args.n} genuine WeChat REFUND.SUCCESS per run: one thread; "
          f"{args.procs} web worker processes of {args.threads} threads "
          f"(handle_notification, group commit); {args.procs} queue consumers "
          f"(handle_notifications, batches of {args.batch}); target >= {TARGET:.0f}/s "
          f"for both")
    result: dict[str, Any] = {"n": args.n, "target": TARGET, "runs": []}
    with workdir("bench-notify-") as tmp:
        logs = log_to_file(tmp)
        for kind in args.databases:
            problem = postgres_available() if kind == "postgres" else None
            if problem:
                result["runs"].append({"database": kind, "skipped": problem})
                print(f"{kind:<9} skipped: {problem}")
                continue
            r = run_one(kind, args.n, tmp, args.procs, args.threads, args.batch)
            result["runs"].append(r)
            s = r["split_ms"]
            web, queue = r["parallel"], r["batched"]
            print(f"{kind:<9} {r['per_second']:>8.1f}/s one process, one thread; "
                  f"{web['per_second']:>8.1f}/s web workers ({args.procs} processes x "
                  f"{args.threads} threads, {web['per_commit']} per commit); "
                  f"{queue['per_second']:>8.1f}/s queue consumers ({args.procs} processes, "
                  f"batches of {args.batch}); one thread's notification "
                  f"{s['handle_total']:.3f} ms"
                  f" = verify {s['verify']:.3f} + decrypt {s['decrypt']:.3f} (+ decode: parse "
                  f"{s['parse_total']:.3f}) + apply {s['apply']:.3f}; rejected "
                  f"{r['rejected']}, succeeded {r['succeeded']}/{3 * args.n}  "
                  f"{'ok' if r['meets_target'] else 'MISS'}", flush=True)
        logs.close()
    print(f"wrote {write_result('notifications', result)}")


if __name__ == "__main__":
    main()
