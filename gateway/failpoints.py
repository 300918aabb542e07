"""Crash hooks for the reliability suite: ``failpoint("name")`` kills this process.

Switched on only by the environment variable ``REFUND_GATEWAY_FAILPOINTS`` (a
comma-separated list of names; ``name@N`` fires on the N-th hit), which only tests set.
With it unset a failpoint costs one dict lookup. SIGKILL, not an exception: the point is
to prove recovery from a process that vanished mid-step, with no ``finally`` blocks run.
"""

from __future__ import annotations

import os
import signal
from typing import Final

ENV: Final = "REFUND_GATEWAY_FAILPOINTS"

# The names the code defines; tests iterate over these.
AFTER_RESERVE: Final = "after_reserve"           # reservation committed, nothing sent
AFTER_SEND: Final = "after_send"                 # request sent, answer not yet read
AFTER_ANSWER: Final = "after_answer"             # answer parsed, outcome not recorded
IN_NOTIFICATION: Final = "in_notification"       # notification verified, not yet applied
IN_REROUTE: Final = "in_reroute"                 # linked refund stored, not yet submitted
ALL: Final = (AFTER_RESERVE, AFTER_SEND, AFTER_ANSWER, IN_NOTIFICATION, IN_REROUTE)

_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        wanted, _, nth = item.strip().partition("@")
        if wanted != name:
            continue
        _hits[name] = _hits.get(name, 0) + 1
        if not nth or _hits[name] == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)
