"""Structured logs (structlog) with secrets and account numbers scrubbed.

JSON lines in production, a readable console in a terminal. ``redact`` is the one
scrubber: it drops values under secret-looking keys, replaces PEM blocks and
``Authorization``/signature values, and masks accounts with ``gateway.masking`` (by field
for account fields, card-shaped numbers in any other text). It also serves stored raw
payloads (``redact_mapping``). How an account is masked is ``gateway.masking``'s alone.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Final, cast

import structlog

from gateway.masking import ACCOUNT_FIELDS, mask_account, mask_text

_SECRET_KEY = re.compile(
    r"(private_?key|secret|apiv3|api_v3|password|passwd|hmac|authorization|signature|"
    r"^sign$|_sign$|token|cert_?pem|real_name|bank_account)",
    re.IGNORECASE,
)
_PEM = re.compile(r"-----BEGIN [A-Z ]+-----.*?(-----END [A-Z ]+-----|$)", re.DOTALL)
_AUTH = re.compile(r"(WECHATPAY2-SHA256-RSA2048\s+)\S.*", re.IGNORECASE)
REDACTED: Final = "[REDACTED]"

# What the store keeps of a receiving account is what a person is shown of it.
# Kept under this name for its callers (the store) until they import gateway.masking.
mask_stored_account = mask_account


def redact_text(value: str) -> str:
    # The substring tests are cheap guards: most values are short codes and ids, and this
    # runs on every logged field and stored payload (it was 10% of a refund's cost).
    if "-----BEGIN" in value:
        value = _PEM.sub("[REDACTED PEM]", value)
    if "SHA256-RSA2048" in value.upper():
        value = _AUTH.sub(r"\1[REDACTED]", value)
    # Shorter text cannot hold a card-shaped number (16+ digits).
    return mask_text(value) if len(value) >= 16 else value


@functools.lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


_PLAIN: Final = (int, float, bool, type(None))


def redact(value: Any, key: str | None = None) -> Any:
    if key is not None and _is_secret_key(key):
        return REDACTED
    if type(value) in _PLAIN:   # most values; checked first because this runs per field
        return value
    if isinstance(value, str):
        return mask_account(value) if key in ACCOUNT_FIELDS else redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if hasattr(value, "get_secret_value"):   # pydantic SecretStr
        return REDACTED
    return value


def redact_mapping(data: Mapping[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], redact(data))


def _redact_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]
                      ) -> MutableMapping[str, Any]:
    for k in list(event_dict):
        if k in ("event", "level", "timestamp", "logger"):
            if isinstance(event_dict[k], str):
                event_dict[k] = redact_text(event_dict[k])
            continue
        event_dict[k] = redact(event_dict[k], k)
    return event_dict


def configure_logging(fmt: str = "auto", level: str = "INFO", stream: Any = None) -> None:
    """Idempotent. ``fmt``: json | console | auto (console when ``stream`` is a TTY).
    Lines written inside an OpenTelemetry span carry its ``trace_id`` (gateway.tracing)."""
    from gateway.tracing import add_trace_context  # noqa: PLC0415 - tracing imports the service

    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(out, "isatty", lambda: False)() else "json"
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=False) if fmt == "console"
                     else structlog.processors.JSONRenderer(ensure_ascii=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_trace_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_processor,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
