"""Issue 20's "done when": a consumer in another process sees every status change of
1,000 refunds exactly once after dedupe on ``event_id``, with the refund-service process
SIGKILLed mid-run and restarted (and the consumer killed and restarted too).

Real processes against the sandbox in its own process, on SQLite and PostgreSQL. The
check is against the refunds' own evidence (each refund's status changes in
``refund_events``), not against the outbox the consumer reads: nothing missing, nothing
extra, in each refund's order, every refund final.
"""

from __future__ import annotations

import json
import signal
import time
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select

from gateway import RefundStatus
from gateway.bootstrap import build_gateway
from gateway.settings import load_settings
from gateway.store.schema import refunds as refunds_table
from tests.reliability import event_workers, workers
from tests.reliability.harness import SandboxProcess, write_summary

N = 1000
ROUTES = ["balance", "wechatpay"]   # settled at once; settled by the resolver's query


def count_refunds(db_url: str) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(refunds_table))
                       .scalar_one())
    except Exception:    # not created yet (the first process migrates)
        return 0
    finally:
        engine.dispose()


def seen(out_file: Path) -> list[dict[str, Any]]:
    if not out_file.exists():
        return []
    lines = out_file.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite"
                                       else "pg_url"))


@pytest.mark.timeout(900)
def test_consumer_sees_every_status_change_once_across_kills(
        sandbox_proc: SandboxProcess, forkserver: ForkServerContext, db_url: str,
        tmp_path: Path, summary_path: Path) -> None:
    sandbox_proc.reset()
    env_file = str(sandbox_proc.env_file)
    payments = [sandbox_proc.payment(ROUTES[i % len(ROUTES)], 10_000) for i in range(N)]
    payments_file = tmp_path / "payments.json"
    payments_file.write_text(json.dumps(payments), encoding="utf-8")
    out_file = tmp_path / "seen.jsonl"
    started = time.monotonic()

    # the schema first, so the consumer and the producer start on it together
    build_gateway(load_settings(env_file, database_url=db_url, log_level="ERROR"),
                  adapters={}, configure_logs=False).close()

    def consumer() -> Any:
        proc = forkserver.Process(target=event_workers.consume,
                                  args=(env_file, db_url, str(out_file), "done-when"))
        proc.start()
        return proc

    reader = consumer()
    producer = forkserver.Process(target=event_workers.produce,
                                  args=(env_file, db_url, str(payments_file)))
    producer.start()
    try:
        # kill the refund service mid-run; the consumer too, a little later
        wait_for(lambda: count_refunds(db_url) >= N // 3, 180, "a third of the refunds")
        producer.kill()
        producer.join(30)
        assert producer.exitcode == -signal.SIGKILL
        killed_at = count_refunds(db_url)
        wait_for(lambda: len(seen(out_file)) >= killed_at, 60, "the consumer to read")
        reader.kill()
        reader.join(30)
        assert reader.exitcode == -signal.SIGKILL
        reader = consumer()
        producer = forkserver.Process(target=event_workers.produce,
                                      args=(env_file, db_url, str(payments_file)))
        producer.start()
        producer.join(600)
        assert producer.exitcode == 0, f"the restarted refund service exited {producer.exitcode}"
        # a fresh process settles what is due (WeChat's queries, the killed submit)
        resolver = forkserver.Process(target=workers.resolve,
                                      args=(env_file, db_url, ROUTES, 12))
        resolver.start()
        resolver.join(600)
        assert resolver.exitcode == 0

        gw = build_gateway(load_settings(env_file, database_url=db_url, log_level="ERROR"),
                           adapters={}, configure_logs=False)
        try:
            stored = gw.store.list_refunds()
            truth = {r.id: [(e.status_from.value if e.status_from else None,
                             e.status_to.value)
                            for e in gw.events(r.id) if e.status_to is not None]
                     for r in stored}
            statuses = {r.id: r.status for r in stored}
            outbox = len(gw.events_since(0, 100_000))
        finally:
            gw.close()
        total = sum(len(chain) for chain in truth.values())
        wait_for(lambda: len({e["event_id"] for e in seen(out_file)}) >= total, 120,
                 "the consumer to see every event")
        reader.terminate()     # SIGTERM: stops after the batch in hand
        reader.join(30)
        assert reader.exitcode == 0
    finally:
        for proc in (producer, reader):
            if proc.is_alive():
                proc.kill()
                proc.join(10)

    assert killed_at < N, "the refund service finished before it was killed"
    assert len(stored) == N and set(statuses.values()) == {RefundStatus.SUCCEEDED}
    events = seen(out_file)
    unique: dict[str, dict[str, Any]] = {}
    for event in events:
        first = unique.setdefault(event["event_id"], event)
        assert {k: first[k] for k in ("cursor", "refund_id", "from", "to")} == \
            {k: event[k] for k in ("cursor", "refund_id", "from", "to")}, "same id, other event"
    chains: dict[str, list[tuple[str | None, str]]] = {}
    for event in sorted(unique.values(), key=lambda e: e["cursor"]):
        chains.setdefault(event["refund_id"], []).append((event["from"], event["to"]))
    assert chains == truth          # every change, once, in each refund's order
    assert total == outbox == len(unique)
    for chain in chains.values():
        assert chain[0] == (None, "pending") and chain[-1][1] == "succeeded"
    write_summary(summary_path, {
        "suite": "event_delivery", "store": db_url.split(":", 1)[0], "refunds": N,
        "status_changes": total, "delivered": len(events),
        "redelivered": len(events) - len(unique), "killed_after_refunds": killed_at,
        "consumer_processes": len({e["pid"] for e in events}),
        "seconds": round(time.monotonic() - started, 1)})
