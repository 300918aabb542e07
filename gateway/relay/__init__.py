"""Relays: the outbox forwarded to services that are not in Python.

``webhook`` (signed HTTP POSTs with retries, attempts and dead letters, ``store``),
``rabbitmq`` (a topic exchange with publisher confirms; the ``rabbitmq`` extra), both
sending ``payload``'s JSON. Each is an outbox consumer (``RefundGateway.subscribe``'s
loop) under its own name, so relays and Python consumers never share a cursor.
Commands: ``refund-gateway relay ...`` (``cli``).
"""
