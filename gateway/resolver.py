"""The long-running resolver (``refund-gateway resolve --loop``): it never dies of a fault.

Why a module of its own: the loop is where an outage meets the promise "never lost". A
database or channel error in one cycle is logged and retried after a capped, jittered
backoff; only a signal stops the loop, and then after the refund in hand is finished
(``RefundGateway.resolve_due(stop=...)`` hands the rest of the batch back at once). It
also watches the wall clock against the monotonic clock: a jump is logged as a clock
anomaly (the store re-checks refunds scheduled by a clock that ran ahead, see
``RefundStore.claim_due``). Given the settings, it logs once a day the certificates that
expire soon (``gateway.doctor.log_certificate_warnings``), so nobody learns it from a
channel's refusal.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from gateway.doctor import WARN_DAYS, log_certificate_warnings
from gateway.service import RefundGateway, ResolveReport
from gateway.settings import GatewaySettings

log = structlog.get_logger("gateway.resolver")

# How far the wall clock may drift from the monotonic one in one cycle before we say so.
CLOCK_JUMP_SECONDS = 30.0
# How often the loop looks at certificate expiry (the first look is at start).
CERTIFICATE_CHECK_SECONDS = 86_400.0


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
             rng: random.Random | None = None, settings: GatewaySettings | None = None,
             certificate_warn_days: int = WARN_DAYS) -> int:
    """Resolve due refunds until ``stop`` is set; returns the number of cycles run.

    Any exception of a cycle (``StoreUnavailable`` during an outage, an unexpected bug)
    is logged with the consecutive-failure count and the loop waits the backoff before
    trying again. ``stop.wait`` is the only sleep, so a signal ends a wait at once.
    With ``settings``, certificates expiring within ``certificate_warn_days`` are logged
    at start and then at most once every ``CERTIFICATE_CHECK_SECONDS``."""
    policy = backoff or Backoff()
    chance = rng or random.Random()  # noqa: S311 - jitter, not cryptography
    failures = cycles = 0
    last_wall, last_mono = wall(), monotonic()
    next_certificates = last_mono
    while not stop.is_set():
        if settings is not None and monotonic() >= next_certificates:
            next_certificates = monotonic() + CERTIFICATE_CHECK_SECONDS
            _certificates(settings, datetime.fromtimestamp(wall(), UTC),
                          certificate_warn_days)
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


def _certificates(settings: GatewaySettings, now: datetime, warn_days: int) -> None:
    """The daily certificate look; a fault in it is logged, never the loop's end."""
    try:
        log_certificate_warnings(settings, now, warn_days)
    except Exception as exc:  # the loop must outlive every fault
        log.error("certificate.check_failed", error=type(exc).__name__)
