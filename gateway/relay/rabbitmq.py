"""The RabbitMQ relay (pika, the ``rabbitmq`` extra): the outbox published to a topic
exchange with publisher confirms, routing key ``refund.<route>.<status>``.

It is an outbox consumer (``gateway.events.run_consumer``, consumer ``relay:<name>``):
a batch's cursor moves only after the broker confirmed every message of it, so a broker
that is down, a nack, or (with ``mandatory``) a message no queue takes leaves the batch
to be published again, in order. At least once: messages carry ``message_id`` = the
event id for consumers to dedupe. Messages are persistent (delivery mode 2); the body
is the webhook's JSON (``gateway.relay.payload``). A lost connection is reopened at the
next batch. Queues are the consumers' to declare and bind (``refund.#``, ...).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any

import pika
import structlog
from pika.exceptions import AMQPError

from gateway.events import run_consumer
from gateway.models import OutboxEvent
from gateway.relay.payload import EVENT_TYPE, SCHEMA, event_body, routing_key
from gateway.store import RefundStore

log = structlog.get_logger("gateway.relay.rabbitmq")

DEFAULT_EXCHANGE = "refund-gateway.events"


class RabbitRelay:
    def __init__(self, store: RefundStore, *, url: str, exchange: str = DEFAULT_EXCHANGE,
                 name: str = "rabbitmq", mandatory: bool = False,
                 declare_exchange: bool = True) -> None:
        self.store = store
        self.url = url
        self.exchange = exchange
        self.name = name
        self.mandatory = mandatory
        self._declare = declare_exchange
        self._connection: Any = None
        self._channel: Any = None
        self.published = 0

    @property
    def consumer(self) -> str:
        return f"relay:{self.name}"

    def _open(self) -> Any:
        if self._channel is not None and self._channel.is_open \
                and self._connection is not None and self._connection.is_open:
            try:
                # an idle connection is not read between batches (no heartbeats): find
                # out now whether the broker dropped it, rather than at the first publish
                self._connection.process_data_events(time_limit=0)
                return self._channel
            except AMQPError:
                log.info("relay.rabbitmq_reconnecting", relay=self.name)
        self.close()
        params = pika.URLParameters(self.url)
        # named, so the broker's connection list says which relay a connection is
        params.client_properties = {"connection_name": f"refund-gateway {self.consumer}"}
        self._connection = pika.BlockingConnection(params)
        channel = self._connection.channel()
        channel.confirm_delivery()   # basic_publish now waits for the broker's ack
        if self._declare:
            channel.exchange_declare(exchange=self.exchange, exchange_type="topic",
                                     durable=True)
        self._channel = channel
        log.info("relay.rabbitmq_connected", relay=self.name, exchange=self.exchange,
                 host=params.host, port=params.port)
        return channel

    def publish(self, events: Sequence[OutboxEvent]) -> None:
        """Publish ``events`` in order, each confirmed; raises (after closing the
        connection) when any is not, so the batch is delivered again."""
        try:
            channel = self._open()
            for event in events:
                channel.basic_publish(
                    exchange=self.exchange, routing_key=routing_key(event),
                    body=event_body(event), mandatory=self.mandatory,
                    properties=pika.BasicProperties(
                        content_type="application/json", content_encoding="utf-8",
                        delivery_mode=pika.DeliveryMode.Persistent,
                        message_id=event.event_id, type=EVENT_TYPE,
                        timestamp=int(event.at.timestamp()),
                        headers={"schema": SCHEMA, "sequence": event.cursor,
                                 "refund_id": event.refund_id}))
                self.published += 1
        except AMQPError as exc:
            log.warning("relay.rabbitmq_publish_failed", relay=self.name,
                        error=type(exc).__name__, message=str(exc)[:300])
            self.close()
            raise

    def run(self, stop: threading.Event, *, batch: int = 100,
            poll_interval: float = 1.0) -> int:
        """Until ``stop``: publish the outbox; returns events published and confirmed."""
        try:
            return run_consumer(self.store, self.publish, consumer=self.consumer,
                                stop=stop, batch=batch, poll_interval=poll_interval)
        finally:
            self.close()

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(AMQPError):   # already gone: nothing to hand back
                connection.close()
