"""The RabbitMQ relay against the RabbitMQ server on this machine (127.0.0.1:5672,
guest/guest; ``.ci/run`` starts it in CI): a consumer bound to the exchange checks that
every refund event arrives, routed ``refund.<route>.<status>``, persistent, with the
event id as message id; with ``mandatory``, events no queue takes are not confirmed, the
cursor stays, and they arrive once a queue is bound; a connection the broker closes is
reopened, nothing sent twice. ``refund-gateway relay rabbitmq`` runs as a process until
SIGTERM."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from sqlalchemy import select

from gateway import RefundGateway
from gateway.relay.payload import event_body, routing_key
from gateway.relay.rabbitmq import RabbitRelay
from gateway.store.schema import outbox_consumers
from tests.fakes import FakeChannel
from tests.integration.relay.conftest import settle

AMQP_URL = os.environ.get("REFUND_GATEWAY_TEST_AMQP_URL",
                          "amqp://guest:guest@127.0.0.1:5672/%2F")


@pytest.fixture
def broker() -> Iterator[Any]:
    if os.environ.get("REFUND_GATEWAY_TEST_RABBITMQ") == "skip":
        pytest.skip("REFUND_GATEWAY_TEST_RABBITMQ=skip")
    try:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    except pika.exceptions.AMQPError as exc:   # CI must exercise it: a failure, not a skip
        pytest.fail(f"RabbitMQ is not reachable at {AMQP_URL}: {exc!r} "
                    "(start it with `rabbitmq-server -detached`)")
    yield connection
    connection.close()


@pytest.fixture
def exchange(broker: Any) -> Iterator[str]:
    name = f"test-refund-events-{secrets.token_hex(4)}"
    channel = broker.channel()
    # as the relay declares it (a durable topic exchange); deleted afterwards
    channel.exchange_declare(exchange=name, exchange_type="topic", durable=True)
    yield name
    channel.exchange_delete(exchange=name)


def bind(broker: Any, exchange: str, pattern: str) -> str:
    channel = broker.channel()
    queue = channel.queue_declare(queue="", exclusive=True).method.queue
    channel.queue_bind(queue=queue, exchange=exchange, routing_key=pattern)
    return str(queue)


def drain(broker: Any, queue: str, want: int, timeout: float = 20.0) -> list[Any]:
    channel = broker.channel()
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        method, properties, body = channel.basic_get(queue=queue, auto_ack=True)
        if method is None:
            broker.sleep(0.05)
            continue
        got.append((method, properties, body))
    # anything more that arrives shortly after is a duplicate the test must see
    broker.sleep(0.3)
    while True:
        method, properties, body = channel.basic_get(queue=queue, auto_ack=True)
        if method is None:
            return got
        got.append((method, properties, body))


def running(relay: RabbitRelay) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,),
                              kwargs={"batch": 25, "poll_interval": 0.05}, daemon=True)
    thread.start()
    return stop, thread


def test_every_event_arrives_routed_and_confirmed(
        gw: RefundGateway, channel: FakeChannel, broker: Any, exchange: str) -> None:
    settle(gw, channel, 20)
    events = gw.events_since(0, 1000)
    assert len(events) == 60
    everything = bind(broker, exchange, "refund.#")
    succeeded = bind(broker, exchange, "refund.*.succeeded")
    relay = RabbitRelay(gw.store, url=AMQP_URL, exchange=exchange)
    stop, thread = running(relay)
    try:
        got = drain(broker, everything, len(events))
    finally:
        stop.set()
        thread.join(timeout=30)
    by_id = {e.event_id: e for e in events}
    assert sorted(p.message_id for _, p, _ in got) == sorted(by_id)   # each once
    for method, props, body in got:
        event = by_id[props.message_id]
        assert method.routing_key == routing_key(event) == \
            f"refund.{event.route.value}.{event.status_to.value}"
        assert body == event_body(event)
        assert props.delivery_mode == 2 and props.content_type == "application/json"
        assert props.headers["sequence"] == event.cursor
    # the broker's order is the outbox's
    assert [p.headers["sequence"] for _, p, _ in got] == [e.cursor for e in events]
    only = drain(broker, succeeded, 20)
    assert sorted(p.message_id for _, p, _ in only) == sorted(
        e.event_id for e in events if e.status_to.value == "succeeded")
    assert relay.published == 60


def test_unroutable_events_are_not_confirmed_until_a_queue_takes_them(
        gw: RefundGateway, channel: FakeChannel, broker: Any, exchange: str) -> None:
    settle(gw, channel, 3)
    events = gw.events_since(0, 1000)
    relay = RabbitRelay(gw.store, url=AMQP_URL, exchange=exchange, mandatory=True)
    stop, thread = running(relay)
    try:
        time.sleep(1.0)              # several tries, each returned unroutable
        with gw.store.engine.connect() as conn:
            position = conn.execute(select(outbox_consumers.c.position).where(
                outbox_consumers.c.name == "relay:rabbitmq")).scalar()
        assert position in (None, 0)
        queue = bind(broker, exchange, "refund.#")
        got = drain(broker, queue, len(events))
    finally:
        stop.set()
        thread.join(timeout=30)
    ids = [p.message_id for _, p, _ in got]
    assert set(ids) == {e.event_id for e in events}
    with gw.store.engine.connect() as conn:
        assert conn.execute(select(outbox_consumers.c.position).where(
            outbox_consumers.c.name == "relay:rabbitmq")).scalar() == events[-1].cursor


def close_broker_side(connection_name: str) -> int:
    """Close, from the broker, every connection with that name (as a broker restart or
    a network cut would); returns how many."""
    listed = subprocess.run(["rabbitmqctl", "-q", "list_connections", "pid",
                             "client_properties"], capture_output=True, text=True,
                            timeout=60, check=True).stdout
    closed = 0
    for line in listed.splitlines():
        if connection_name in line:
            pid = line.split("\t")[0]
            subprocess.run(["rabbitmqctl", "close_connection", pid, "test cut"],
                           capture_output=True, timeout=60, check=True)
            closed += 1
    return closed


def test_a_connection_the_broker_closed_is_reopened(
        gw: RefundGateway, channel: FakeChannel, broker: Any, exchange: str) -> None:
    queue = bind(broker, exchange, "refund.#")
    relay = RabbitRelay(gw.store, url=AMQP_URL, exchange=exchange,
                        name=f"cut-{secrets.token_hex(3)}")
    stop, thread = running(relay)
    try:
        settle(gw, channel, 2, prefix="a")
        first = drain(broker, queue, 6)
        assert close_broker_side(f"refund-gateway {relay.consumer}") == 1
        settle(gw, channel, 2, prefix="b")
        second = drain(broker, queue, 6)
    finally:
        stop.set()
        thread.join(timeout=30)
    ids = [p.message_id for _, p, _ in first + second]
    assert set(ids) == {e.event_id for e in gw.events_since(0, 1000)}
    assert len(ids) == 12        # the cut fell between batches: nothing sent twice


def test_the_command_runs_until_sigterm(gw: RefundGateway, channel: FakeChannel,
                                        broker: Any, exchange: str, database_url: str,
                                        tmp_path: Path) -> None:
    settle(gw, channel, 2)
    events = gw.events_since(0, 1000)
    queue = bind(broker, exchange, "refund.#")
    env = {**os.environ, "REFUND_GATEWAY_DATABASE_URL": database_url,
           "NO_PROXY": "127.0.0.1,localhost"}
    log = (tmp_path / "relay.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from gateway.cli import main; main()", "relay", "rabbitmq",
         "--url", AMQP_URL, "--exchange", exchange, "--poll-interval", "0.1"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        got = drain(broker, queue, len(events))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert sorted(p.message_id for _, p, _ in got) == sorted(e.event_id for e in events)
    assert json.loads(got[0][2])["event_id"] == events[0].event_id
    assert "published 6" in (tmp_path / "relay.log").read_text()
