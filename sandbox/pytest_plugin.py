"""pytest plugin (entry point ``pytest11``) for the refund service's own tests.

Fixtures:
* ``refund_sandbox``: a running ``SandboxServer`` on a free port, shared by the session
  and reset before each test (payments, refunds, faults and notifications emptied).
* ``sandbox_settings``: the ``REFUND_GATEWAY_*`` settings (dict) pointing at it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from sandbox.server import SandboxServer


@pytest.fixture(scope="session")
def _refund_sandbox_session() -> Iterator[SandboxServer]:
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
    server = SandboxServer().start()
    yield server
    server.stop()


@pytest.fixture
def refund_sandbox(_refund_sandbox_session: SandboxServer) -> SandboxServer:
    _refund_sandbox_session.state.reset()
    return _refund_sandbox_session


@pytest.fixture
def sandbox_settings(refund_sandbox: SandboxServer) -> dict[str, str]:
    return refund_sandbox.settings()
