"""The README's sandbox workflow makes receipts: the env file ``sandbox serve --env-file``
writes carries a receipt signing key and key id, so a refund made through the CLI against
the sandbox gets a signed receipt, and the published keys alone verify it."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result
from dotenv import dotenv_values

from gateway.cli import main
from gateway.settings import load_settings
from reconciliation.receipts.signing import signer_from_settings
from sandbox.server import SandboxServer


def _cli(env_file: Path, db: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--env-file", str(env_file), *args],
                              env={"REFUND_GATEWAY_DATABASE_URL": f"sqlite:///{db}",
                                   "NO_PROXY": "127.0.0.1,localhost"},
                              catch_exceptions=False)


def test_the_sandbox_env_file_configures_a_receipt_signing_key(tmp_path: Path) -> None:
    with SandboxServer(seed=7) as sandbox:
        one = sandbox.write_env_file(tmp_path / "one.env")
        two = sandbox.write_env_file(tmp_path / "two.env")
    values = dotenv_values(one)
    assert str(values["REFUND_GATEWAY_RECEIPTS__KEY_ID"]).startswith("sandbox-")
    assert "BEGIN PRIVATE KEY" in str(values["REFUND_GATEWAY_RECEIPTS__SIGNING_KEY"])
    signer = signer_from_settings(load_settings(one))
    assert signer.key_id == values["REFUND_GATEWAY_RECEIPTS__KEY_ID"]
    # A fresh key each time, like every sandbox key.
    assert dotenv_values(two)["REFUND_GATEWAY_RECEIPTS__SIGNING_KEY"] != \
        values["REFUND_GATEWAY_RECEIPTS__SIGNING_KEY"]


def test_refund_then_receipt_against_the_sandbox(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    with SandboxServer(seed=11) as sandbox:
        env_file = sandbox.write_env_file(tmp_path / "sandbox.env")
        paid = sandbox.state.add_payment("wechatpay", 10_000)
        made = _cli(env_file, db, "--json", "refund", "--route", "wechatpay", "--order",
                    paid.merchant_order_no, "--trade-no", paid.channel_trade_no, "--paid",
                    "100.00", "--amount", "25.00", "--key", "readme-1", "--reason", "partly")
        assert made.exit_code in (0, 3), made.output
        refund_id = json.loads(made.stdout)["id"]
        receipt = tmp_path / "receipt.json"
        out = _cli(env_file, db, "receipt", refund_id, "--out", str(receipt))
        assert out.exit_code == 0, out.output
        keys = tmp_path / "keys.json"
        assert _cli(env_file, db, "receipt", "keys", "--out", str(keys)).exit_code == 0
    doc = json.loads(receipt.read_bytes())
    assert doc["refund_id"] == refund_id and doc["route"] == "wechatpay"
    assert doc["signature"]["key_id"].startswith("sandbox-")
    # Verified by someone with nothing but the published keys (no env file, no database).
    checked = CliRunner().invoke(main, ["receipt", "verify", str(receipt), "--keys",
                                        str(keys), "--json"], catch_exceptions=False,
                                 env={"REFUND_GATEWAY_DATABASE_URL": "sqlite:////none/x.db"})
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["verified"] is True
