"""The long-running resolver (``refund-gateway resolve --loop``): it never dies of a fault.

Why a module of its own: the loop is where an outage meets the promise "never lost". A
database or channel error in one cycle is logged and retried after a capped, jittered
backoff; only a signal stops the loop, and then after the refund in hand is finished
(``RefundGateway.resolve_due(stop=...)`` hands the rest of the batch back at once). It
also watches the wall clock against the monotonic clock: a jump is logged as a clock
anomaly (the store re-checks refunds scheduled by a clock that ran ahead, see
``RefundStore.claim_due``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from gateway.service import RefundGateway, ResolveReport

log = structlog.get_logger("gateway.resolver")

# How far the wall clock may drift from the monotonic one in one cycle before we say so.
CLOCK_JUMP_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential with full jitter, capped: 1, 2, 4 ... ``cap`` seconds (AWS's "full
    jitter"), so resolvers restarted together after an outage do not stampede."""

    base: float = 1.0
    cap: float = 60.0

    def delay(self, failures: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.cap, self.base * 2 ** max(failures - 1, 0)))


def run_loop(gw: RefundGateway, *, interval: float, limit: int | None = None,
             stop: threading.Event, backoff: Backoff | None = None,
             on_cycle: Callable[[ResolveReport], None] | None = None,
             wall: Callable[[], float] = time.time,
             monotonic: Callable[[], float] = time.monotonic,
             rng: random.Random | None = None) -> int:
    """Resolve due refunds until ``stop`` is set; returns the number of cycles run.

    Any exception of a cycle (``StoreUnavailable`` during an outage, an unexpected bug)
    is logged with the consecutive-failure count and the loop waits the backoff before
    trying again. ``stop.wait`` is the only sleep, so a signal ends a wait at once."""
    policy = backoff or Backoff()
    chance = rng or random.Random()  # noqa: S311 - jitter, not cryptography
    failures = cycles = 0
    last_wall, last_mono = wall(), monotonic()
    while not stop.is_set():
        try:
            report = gw.resolve_due(limit, stop=stop.is_set)
        except Exception as exc:  # the loop must outlive every fault; logged, retried
            failures += 1
            pause = policy.delay(failures, chance)
            log.error("resolver.cycle_failed", error=type(exc).__name__,
                      message=str(exc)[:300], consecutive_failures=failures,
                      retry_in_seconds=round(pause, 2))
            stop.wait(pause)
            continue
        cycles += 1
        if failures:
            log.info("resolver.recovered", after_failures=failures)
        failures = 0
        if on_cycle is not None:
            on_cycle(report)
        now_wall, now_mono = wall(), monotonic()
        drift = (now_wall - last_wall) - (now_mono - last_mono)
        if abs(drift) > CLOCK_JUMP_SECONDS:
            log.warning("clock.anomaly", jumped_seconds=round(drift, 1),
                        direction="forward" if drift > 0 else "backward")
        last_wall, last_mono = now_wall, now_mono
        if report.claimed == 0 or report.stopped:
            stop.wait(interval)
    return cycles
