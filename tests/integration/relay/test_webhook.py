"""The webhook relay against a real HTTP receiver on 127.0.0.1: every refund event
delivered and verified through the receiver's failures (500s, a timeout, a dropped
connection), each attempt recorded, in order per refund; a receiver that never takes an
event puts it on the dead-letter list, and ``relay replay`` sends it again; the
signature is HMAC-SHA256 over ``timestamp.body`` (rotation, tampering, staleness)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway import RefundGateway
from gateway.cli import main
from gateway.relay import signing
from gateway.relay.payload import SCHEMA, event_body, event_document
from gateway.relay.store import DEAD, DELIVERED, RelayStore
from gateway.relay.webhook import DEFAULT_SCHEDULE, WebhookRelay, parse_schedule
from tests.fakes import FakeChannel
from tests.integration.relay.conftest import settle
from tests.integration.relay.receiver import Receiver

SECRET = "whsec-test-0123456789"
FAST = (timedelta(seconds=0.1),) * 4
DOCS = Path(__file__).resolve().parents[3] / "docs" / "operations"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(SECRET, slow_seconds=1.2).start()
    yield r
    r.stop()


def run_until(relay: WebhookRelay, done: threading.Event | None = None, *,
              until: object = None, timeout: float = 30.0) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,),
                              kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not (callable(until) and until()):
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive(), "the relay did not stop"


def test_delivers_every_event_through_the_receivers_failures(
        gw: RefundGateway, channel: FakeChannel, receiver: Receiver) -> None:
    ids = settle(gw, channel, 5)
    events = gw.events_since(0, 1000)
    assert len(events) == 15
    receiver.plans[events[0].event_id] = ["500", "slow", "drop", "500"]
    relay = WebhookRelay(gw.store, url=receiver.url, secrets=[SECRET], schedule=FAST,
                         read_timeout=0.5, connect_timeout=1)
    wanted = {e.event_id for e in events}
    run_until(relay, until=lambda: wanted <= {
        r.headers[signing.EVENT_ID_HEADER] for r in receiver.accepted()})
    taken = {r.headers[signing.EVENT_ID_HEADER] for r in receiver.accepted()}
    assert taken == wanted
    assert all(r.verified for r in receiver.received)

    relays = RelayStore(gw.store.engine)
    deliveries = {d.event_id: d for d in relays.deliveries("webhook")}
    assert {d.status for d in deliveries.values()} == {DELIVERED}
    first = deliveries[events[0].event_id]
    outcomes = [(a.outcome, a.http_status) for a in relays.attempts(first.id)]
    assert outcomes == [("http_error", 500), ("timeout", None), ("connect_error", None),
                        ("http_error", 500), ("delivered", 200)]
    assert [a.attempt for a in relays.attempts(first.id)] == [1, 2, 3, 4, 5]
    for event in events[1:]:
        assert [a.outcome for a in relays.attempts(deliveries[event.event_id].id)] == [
            "delivered"]

    # each refund's changes reached the receiver in order, body as documented
    seen: dict[str, list[int]] = {}
    for got in receiver.accepted():
        doc = got.document
        seen.setdefault(doc["refund_id"], []).append(doc["sequence"])
        assert got.body == event_body(next(e for e in events if e.event_id == doc["event_id"]))
        assert got.headers[signing.ATTEMPT_HEADER].isdigit()
    assert set(seen) == set(ids)
    for sequence in seen.values():
        assert sequence == sorted(sequence)
    # nothing is sent again once taken
    assert relay.run_once().attempted == 0


def test_dead_letter_then_replay_from_the_command_line(
        gw: RefundGateway, channel: FakeChannel, receiver: Receiver,
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settle(gw, channel, 1)
    events = gw.events_since(0, 1000)
    monkeypatch.setenv("REFUND_GATEWAY_DATABASE_URL", database_url)
    monkeypatch.setenv("REFUND_GATEWAY_RELAY_WEBHOOK_SECRET", SECRET)
    receiver.default = "500"
    runner = CliRunner()
    result = runner.invoke(main, ["--json", "relay", "webhook", "--url", receiver.url,
                                  "--schedule", "0s*2", "--once"])
    assert result.exit_code == 0, result.output
    # each event: the first attempt and two retries, then dead; in order
    report = json.loads(result.stdout)
    assert report.pop("database")                        # every --json names its db
    assert report == {"attempted": 9, "delivered": 0, "retrying": 6, "dead": 3}
    sent = [r.headers[signing.EVENT_ID_HEADER] for r in receiver.received]
    assert sent == [e.event_id for e in events for _ in range(3)]
    dead = runner.invoke(main, ["--json", "relay", "dead-letters"])
    assert dead.exit_code == 1
    listed = json.loads(dead.stdout)
    assert [d["event_id"] for d in listed] == [e.event_id for e in events]
    assert listed[0]["attempts"] == 3 and "HTTP 500" in listed[0]["last_error"]
    relays = RelayStore(gw.store.engine)
    assert receiver.accepted() == []

    receiver.default = "ok"
    replay = runner.invoke(main, ["--json", "relay", "replay", "--url", receiver.url,
                                  "--dead"])
    assert replay.exit_code == 0, replay.output
    assert json.loads(replay.stdout)["delivered"] == 3
    assert [r.headers[signing.EVENT_ID_HEADER] for r in receiver.accepted()] == [
        e.event_id for e in events]
    assert {d.status for d in relays.deliveries("webhook")} == {DELIVERED}
    history = runner.invoke(main, ["relay", "attempts", events[0].event_id])
    assert history.exit_code == 0 and history.stdout.count("http_error") == 3
    assert history.stdout.count("delivered") == 1
    assert runner.invoke(main, ["relay", "dead-letters"]).exit_code == 0

    # a receiver that lost an event asks for it again: replay by id resends it
    before = len(receiver.accepted())
    again = runner.invoke(main, ["relay", "replay", "--url", receiver.url,
                                 "--event-id", events[1].event_id])
    assert again.exit_code == 0, again.output
    assert len(receiver.accepted()) == before + 1
    assert receiver.accepted()[-1].headers[signing.EVENT_ID_HEADER] == events[1].event_id


def test_dead_letters_do_not_hold_later_refunds(
        gw: RefundGateway, channel: FakeChannel, receiver: Receiver) -> None:
    settle(gw, channel, 2)
    events = gw.events_since(0, 1000)
    receiver.default = "500"
    relay = WebhookRelay(gw.store, url=receiver.url, secrets=[SECRET], schedule=())
    report = relay.run_once()
    # one attempt per refund (their first events); each dead at once (empty schedule)
    assert (report.attempted, report.dead) == (6, 6)
    assert {d.status for d in RelayStore(gw.store.engine).deliveries("webhook")} == {DEAD}
    assert len(receiver.received) == len(events)


def test_signature_verification() -> None:
    body = b'{"event_id":"e1"}'
    now = int(time.time())
    header = signing.signature_header(["new-secret", "old-secret"], now, body)
    headers = {signing.TIMESTAMP_HEADER: str(now), signing.SIGNATURE_HEADER: header}
    assert signing.verify("new-secret", headers, body, now=now)
    assert signing.verify("old-secret", headers, body, now=now)    # during rotation
    assert not signing.verify("other", headers, body, now=now)
    assert not signing.verify("new-secret", headers, body + b" ", now=now)
    assert not signing.verify("new-secret", headers, body, now=now + 301)   # stale
    lower = {k.lower(): v for k, v in headers.items()}
    assert signing.verify("new-secret", lower, body, now=now)
    # the documented construction: hex HMAC-SHA256 of "<timestamp>.<body>"
    import hashlib
    import hmac
    expected = hmac.new(b"new-secret", f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    assert header.split(",")[0] == f"v1={expected}"


def test_body_matches_the_documented_schema(gw: RefundGateway, channel: FakeChannel) -> None:
    settle(gw, channel, 1)
    schema = json.loads((DOCS / "refund-event.schema.json").read_text(encoding="utf-8"))
    kinds = {"string": str, "integer": int, "object": dict, "null": type(None)}
    for event in gw.events_since(0, 100):
        doc = event_document(event)
        assert doc["schema"] == SCHEMA
        assert set(doc) == set(schema["properties"]) == set(schema["required"])
        for key, spec in schema["properties"].items():
            types = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
            assert isinstance(doc[key], tuple(kinds[t] for t in types)), key
            if "enum" in spec:
                assert doc[key] in spec["enum"], key
        assert json.loads(event_body(event)) == doc


def test_schedule() -> None:
    assert parse_schedule("1m,5m,30m,2h,1d*3") == DEFAULT_SCHEDULE
    assert DEFAULT_SCHEDULE[:4] == (timedelta(minutes=1), timedelta(minutes=5),
                                    timedelta(minutes=30), timedelta(hours=2))
    assert set(DEFAULT_SCHEDULE[4:]) == {timedelta(days=1)}
    assert parse_schedule("0.5s, 2") == (timedelta(seconds=0.5), timedelta(seconds=2))
    with pytest.raises(ValueError, match="bad schedule"):
        parse_schedule("5x")
