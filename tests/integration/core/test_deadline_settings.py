"""The per-route ``timeouts.deadline`` / ``download_deadline`` settings reach each
route's client (issue 16 item 5): the composition root passes them on."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.bootstrap import build_adapters
from gateway.clock import utcnow
from gateway.models import Route
from gateway.settings import load_settings
from sandbox.server import SandboxServer


@pytest.mark.parametrize("route", list(Route))
def test_each_route_takes_its_deadlines_from_settings(route: Route, refund_sandbox:
                                                      SandboxServer, tmp_path: Path) -> None:
    env = refund_sandbox.write_env_file(tmp_path / "sandbox.env")
    settings = load_settings(env, database_url=f"sqlite:///{tmp_path / 'g.db'}")
    sub = settings.route_settings(route.value)
    assert sub is not None
    sub.timeouts.deadline = 3.5              # type: ignore[attr-defined]
    sub.timeouts.download_deadline = 77.0    # type: ignore[attr-defined]
    adapter = build_adapters(settings, utcnow, routes=[route])[route]
    client = adapter._client  # type: ignore[attr-defined]
    if route is Route.WECHATPAY:   # the SDK's Core, replaced by our transport, holds them
        client = client._wx._core
    assert client._deadline == 3.5
    assert client._download_deadline == 77.0
