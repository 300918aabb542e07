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


def _worker(env_file: str, url: str, tmp: str, notes: list[tuple[dict[str, str], bytes]],
            barrier: Any, out: Any) -> None:
    """One web worker: its own gateway and keys; handles its share after the barrier."""
    logs = log_to_file(Path(tmp))
    gw = build_gateway(Path(env_file), url, [ROUTE])
    barrier.wait()
    start = time.time()
    accepted = sum(gw.handle_notification(ROUTE, h, b).accepted for h, b in notes)
    end = time.time()
    gw.close()
    logs.close()
    out.put({"start": start, "end": end, "n": len(notes), "accepted": accepted})


def run_procs(env_file: Path, url: str, tmp: Path,
              notes: list[tuple[dict[str, str], bytes]], procs: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(str(env_file), url, str(tmp),
                                                 notes[k::procs], barrier, out))
               for k in range(procs)]
    for w in workers:
        w.start()
    rows = [out.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
    wall = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    accepted = sum(r["accepted"] for r in rows)
    return {"procs": procs, "seconds": round(wall, 3),
            "per_second": round(len(notes) / wall, 1), "rejected": len(notes) - accepted}


def run_one(kind: str, n: int, tmp: Path, procs: int) -> dict[str, Any]:
    from sandbox.server import SandboxServer

    with SandboxServer() as server, database(kind, tmp) as url:
        env_file = server.write_env_file(tmp / f"sandbox-{kind}.env")
        gw = build_gateway(env_file, url, [ROUTE])
        try:
            # Twice as many refunds: one half for the single process, one for the workers.
            notes = prepare(server, gw, 2 * n)
            single, multi = notes[:n], notes[n:]
            parts = split(gw, single,
                          server.settings()["REFUND_GATEWAY_WECHATPAY__APIV3_KEY"])
            t0 = time.perf_counter()
            acks = [gw.handle_notification(ROUTE, h, b) for h, b in single]
            wall = time.perf_counter() - t0
            rejected = sum(1 for a in acks if not a.accepted)
            parallel = run_procs(env_file, url, tmp, multi, procs)
            rejected += parallel["rejected"]
            succeeded = sum(1 for r in gw.store.list_refunds()
                            if r.status.value == "succeeded")
        finally:
            gw.close()
    per = wall / n
    best = max(n / wall, parallel["per_second"])
    return {
        "database": kind, "notifications": n, "seconds": round(wall, 3),
        "per_second": round(n / wall, 1), "parallel": parallel,
        "best_per_second": round(best, 1), "rejected": rejected, "succeeded": succeeded,
        "split_ms": {"verify": round(parts["verify"] * 1000, 4),
                     "decrypt": round(parts["decrypt"] * 1000, 4),
                     "parse_total": round(parts["parse"] * 1000, 4),
                     "apply": round((per - parts["parse"]) * 1000, 4),
                     "handle_total": round(per * 1000, 4)},
        "meets_target": best >= TARGET and rejected == 0 and succeeded == 2 * n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="notifications per run (each run "
                    "prepares 2n refunds: n for one process, n for the workers)")
    ap.add_argument("--procs", type=int, default=2, help="worker processes")
    ap.add_argument("--databases", nargs="+", default=["sqlite", "postgres"],
                    choices=["sqlite", "postgres"])
    args = ap.parse_args()
    require_sandbox()
    print(f"notifications: {args.n} genuine WeChat REFUND.SUCCESS through "
          f"handle_notification, one process, then {args.procs} worker processes; "
          f"target >= {TARGET:.0f}/s")
    result: dict[str, Any] = {"n": args.n, "target": TARGET, "runs": []}
    with workdir("bench-notify-") as tmp:
        logs = log_to_file(tmp)
        for kind in args.databases:
            problem = postgres_available() if kind == "postgres" else None
            if problem:
                result["runs"].append({"database": kind, "skipped": problem})
                print(f"{kind:<9} skipped: {problem}")
                continue
            r = run_one(kind, args.n, tmp, args.procs)
            result["runs"].append(r)
            s = r["split_ms"]
            print(f"{kind:<9} {r['per_second']:>8.1f}/s one process; "
                  f"{r['parallel']['per_second']:>8.1f}/s with {args.procs} processes; "
                  f"per notification "
                  f"{s['handle_total']:.3f} ms"
                  f" = verify {s['verify']:.3f} + decrypt {s['decrypt']:.3f} (+ decode: parse "
                  f"{s['parse_total']:.3f}) + apply {s['apply']:.3f}; rejected "
                  f"{r['rejected']}, succeeded {r['succeeded']}/{2 * args.n}  "
                  f"{'ok' if r['meets_target'] else 'MISS'}", flush=True)
        logs.close()
    print(f"wrote {write_result('notifications', result)}")


if __name__ == "__main__":
    main()
