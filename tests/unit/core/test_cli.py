"""The console script, run as a user would (a subprocess), on the embedded default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import RefundStatus, Route
from gateway.bootstrap import build_gateway
from gateway.settings import load_settings
from tests.fakes import FakeChannel
from tests.helpers import request

CLI = [sys.executable, "-c", "from gateway.cli import main; main()"]


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REFUND_GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db"}
    env = {k: v for k, v in env.items() if not k.startswith("REFUND_GATEWAY_") or
           k == "REFUND_GATEWAY_DATABASE_URL"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60, check=False)


def test_help_lists_core_commands(tmp_path: Path) -> None:
    out = run(["--help"], tmp_path)
    assert out.returncode == 0
    for name in ("db", "refund", "status", "resolve", "reroute"):
        assert name in out.stdout


def test_db_upgrade_then_status_of_a_stored_refund(tmp_path: Path) -> None:
    assert run(["db", "upgrade"], tmp_path).returncode == 0
    gw = build_gateway(load_settings(database_url=f"sqlite:///{tmp_path}/cli.db"),
                       adapters={Route.WECHATPAY: FakeChannel()}, configure_logs=False)
    refund = gw.refund(request())
    gw.close()
    out = run(["--json", "status", refund.id, "--events"], tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["refund"]["id"] == refund.id
    assert data["refund"]["status"] == RefundStatus.PROCESSING.value
    assert data["refund"]["amount"] == {"minor": 2500, "currency": "CNY", "text": "25.00"}
    assert data["events"][0]["kind"] == "requested"
    text = run(["status", refund.id], tmp_path)
    assert "processing" in text.stdout and "25.00 CNY" in text.stdout


@pytest.mark.parametrize("args,needle", [
    # a read-only command on a database file that does not exist creates none (issue 18)
    (["status", "RFNOPE"], "no database at"),
    (["refund", "--route", "wechatpay", "--order", "O", "--trade-no", "T", "--paid", "1.00",
      "--amount", "0.001", "--key", "k"], "more than 2 decimals"),
    (["refund", "--route", "alipay", "--order", "O", "--trade-no", "T", "--paid", "1.00",
      "--amount", "0.50", "--key", "k"], "not configured"),
    (["--env-file", "/nonexistent.env", "status", "X"], "does not exist"),
])
def test_user_mistakes_exit_2_without_traceback(tmp_path: Path, args: list[str],
                                                needle: str) -> None:
    out = run(args, tmp_path)
    assert out.returncode == 2
    assert needle in out.stderr
    assert "Traceback" not in out.stderr


def test_resolve_with_nothing_due(tmp_path: Path) -> None:
    out = run(["--json", "resolve"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["claimed"] == 0


def test_resolve_concurrency_reaches_the_resolver(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from gateway import RefundGateway, cli

    seen: list[int] = []
    build = RefundGateway.from_settings

    def spy(settings: object = None, **kwargs: object) -> RefundGateway:
        seen.append(settings.resolver.concurrency)  # type: ignore[attr-defined]
        return build(settings, **kwargs)  # type: ignore[arg-type]

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REFUND_GATEWAY_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.setattr(RefundGateway, "from_settings", staticmethod(spy))
    out = CliRunner().invoke(cli.main, ["--json", "resolve", "--concurrency", "3"])
    assert out.exit_code == 0, out.output
    assert seen == [3] and json.loads(out.output)["claimed"] == 0
    refused = CliRunner().invoke(cli.main, ["resolve", "--concurrency", "0"])
    assert refused.exit_code == 2
