"""``refund-gateway serve`` as a process: the sandbox's channels deliver their signed
notifications to it over HTTP (the notify URLs the refunds carried), the refunds settle,
its resolver (``--resolve``) settles an unknown outcome, ``/readyz`` and ``/metrics``
answer from the process, and SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from gateway import RefundStatus, Route
from gateway.bootstrap import build_gateway
from gateway.settings import load_settings
from sandbox.server import SandboxServer
from tests.integration.web.conftest import NOTIFYING, Sandbox, ask

NOTIFY_SETTING = {Route.ALIPAY: "NOTIFY_URL", Route.WECHATPAY: "NOTIFY_URL",
                  Route.BANKCARD: "BACK_URL"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_takes_the_channels_notifications(refund_sandbox: SandboxServer,
                                                sandbox: Sandbox, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # where each channel sends its notifications (Alipay's is the app's, set on the
    # channel's side; the others' travel in the refund request): the served app
    urls = {route.value: f"{base}/notify/{route.value}" for route in NOTIFYING}
    sandbox.call("POST", "/_sandbox/config", {"notify_url": urls})
    settings = dict(refund_sandbox.settings())
    for route, name in NOTIFY_SETTING.items():
        assert settings[f"REFUND_GATEWAY_{route.value.upper()}__{name}"] == urls[route.value]
    settings["REFUND_GATEWAY_DATABASE_URL"] = f"sqlite:///{tmp_path / 'gateway.db'}"
    # an unknown outcome is queried at once by the resolver the served process runs
    settings["REFUND_GATEWAY_RESOLVER__FIRST_CHECK_SECONDS"] = "0"
    settings["REFUND_GATEWAY_BALANCE__TIMEOUTS__READ"] = "1"
    env_file = tmp_path / "gateway.env"
    env_file.write_text("".join(f"{k}={json.dumps(v)}\n" for k, v in settings.items()),
                        encoding="utf-8")
    log = (tmp_path / "serve.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUND_GATEWAY_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from gateway.cli import main; main()", "--env-file",
         str(env_file), "serve", "--host", "127.0.0.1", "--port", str(port),
         "--metrics-cache", "0", "--resolve", "1"],
        stdout=log, stderr=subprocess.STDOUT, env={**env, "NO_PROXY": "127.0.0.1,localhost"})
    gw = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if requests.get(f"{base}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert requests.get(f"{base}/readyz", timeout=5).json()["status"] == "ready"

        gw = build_gateway(load_settings(str(env_file)), sleep=lambda _: None,
                           configure_logs=False)
        refunds = {route: gw.refund(ask(sandbox.payment(route))) for route in NOTIFYING}
        sandbox.fault(Route.BALANCE, "refund", "timeout_after_commit", stall_seconds=2)
        unknown = gw.refund(ask(sandbox.payment(Route.BALANCE)))
        assert unknown.status is not RefundStatus.SUCCEEDED
        refunds[Route.BALANCE] = unknown
        def accepted(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float],
                     route: Route) -> float:
            return samples.get(("refund_gateway_notifications_total", (
                ("reason", "accepted"), ("result", "accepted"), ("route", route.value))), 0)

        deadline = time.monotonic() + 30
        while True:
            refund_sandbox.deliver_now()
            text = requests.get(f"{base}/metrics", timeout=5).text
            samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                       for f in text_string_to_metric_families(text) for s in f.samples}
            settled = all(gw.get(r.id).status is RefundStatus.SUCCEEDED
                          for r in refunds.values())
            resolved = samples.get(("refund_gateway_channel_call_seconds_count", (
                ("operation", "query"), ("outcome", "succeeded"), ("route", "balance"))), 0)
            if settled and resolved >= 1 and all(accepted(samples, route) >= 1
                                                 for route in NOTIFYING):
                break
            assert time.monotonic() < deadline, (
                {route: gw.get(r.id).status for route, r in refunds.items()},
                {route: accepted(samples, route) for route in NOTIFYING},
                (tmp_path / "serve.log").read_text()[-3000:])
            time.sleep(0.2)
        for route in (*NOTIFYING, Route.BALANCE):
            assert samples[("refund_gateway_refunds", (
                ("account", "default"), ("route", route.value), ("status", "succeeded")))] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, (tmp_path / "serve.log").read_text()
        assert "stopped (SIGTERM)" in (tmp_path / "serve.log").read_text()
    finally:
        if gw is not None:
            gw.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
