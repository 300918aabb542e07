"""Retry policies, driven only by the error attributes (``retryable``, ``resubmit_safe``).

Inline, the service retries a submit only when the error proves the request was not
processed (``ChannelUnavailable``: both flags true). Everything uncertain goes to the
resolver, which queries first. Backoff is exponential with full jitter, bounded in
attempts and in total time; ``sleep`` is injectable so tests run instantly.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from gateway.errors import GatewayError
from gateway.settings import RetrySettings


def is_safe_to_resend(exc: BaseException) -> bool:
    return isinstance(exc, GatewayError) and exc.retryable and exc.resubmit_safe


def resend_policy(settings: RetrySettings, sleep: Callable[[float], None] = time.sleep,
                  before_resend: Callable[[BaseException, int], None] | None = None
                  ) -> Retrying:
    """Inline resends of a submit that provably was not sent. ``before_resend(error,
    attempt_number)`` runs only when another try follows (after the stop conditions
    said go on), so the failed try it keeps as evidence is never also the last one."""
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        if before_resend is not None and error is not None:
            before_resend(error, state.attempt_number)

    return Retrying(
        retry=retry_if_exception(is_safe_to_resend),
        stop=stop_after_attempt(settings.max_attempts)
        | stop_after_delay(settings.max_total_seconds),
        wait=wait_random_exponential(multiplier=settings.initial_backoff,
                                     max=settings.max_backoff),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
