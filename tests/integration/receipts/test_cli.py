"""``refund-gateway receipt`` through the real console group (entry point plugin):
one refund, several, a reconciliation class of a day, verify a file and a typed digest,
and the errors a user can make."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from reconciliation.receipts import verify
from tests.integration.receipts.conftest import KEY, World


def _run(world: World, *args: str, key: str | None = KEY) -> Result:
    env = {"REFUND_GATEWAY_DATABASE_URL": world.settings.database_url,
           "REFUND_GATEWAY_RECEIPTS__HMAC_KEY": key or ""}
    return CliRunner().invoke(main, ["receipt", *args], env=env, catch_exceptions=False)


def test_one_refund_as_json_on_stdout_verifies(world: World) -> None:
    result = _run(world, world.succeeded.id, "--format", "json")
    assert result.exit_code == 0, result.output
    blob = result.stdout.strip().encode("utf-8")
    assert verify(blob, KEY).ok
    assert json.loads(blob)["refund_id"] == world.succeeded.id


def test_one_refund_to_a_file_takes_the_format_from_its_suffix(world: World,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "r" / "receipt.pdf"
    result = _run(world, world.not_received.id, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"%PDF-")


def test_a_list_of_ids_in_every_format(world: World, tmp_path: Path) -> None:
    ids = [world.succeeded.id, world.linked.id]
    result = _run(world, *ids, "--format", "all", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("RF*")) == sorted(
        f"{i}.{f}" for i in ids for f in ("json", "html", "pdf"))


def test_batch_by_date_and_class_reads_reconciliation_items(world: World,
                                                            tmp_path: Path) -> None:
    result = _run(world, "--date", "2026-12-01", "--class", "refunded-not-received",
                  "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.glob("RF*")] == [f"{world.not_received.id}.pdf"]
    # The same refund was in transit on the first run's day (carried over since).
    none = _run(world, "--date", "2026-11-19", "--class", "refunded-not-received",
                "--out", str(tmp_path / "none"))
    assert none.exit_code == 0 and "no refunded-not-received items" in none.output


def test_verify_a_file_and_a_typed_digest(world: World, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert _run(world, world.not_received.id, "--out", str(out)).exit_code == 0
    ok = _run(world, "verify", str(out))
    assert ok.exit_code == 0 and "VERIFIED" in ok.output
    doc = json.loads(out.read_bytes())
    typed = " ".join(doc["hmac_sha256"][i:i + 8] for i in range(0, 64, 8)).upper()
    assert _run(world, "verify", str(out), "--digest", typed).exit_code == 0
    assert _run(world, "verify", str(out), "--digest", "0" * 64).exit_code == 1
    # A printed receipt: digest + refund id + issue time, rebuilt from the store.
    printed = _run(world, "verify", "--digest", typed, "--refund-id", world.not_received.id,
                   "--issued-at", doc["issued_at"])
    assert printed.exit_code == 0, printed.output
    wrong_time = _run(world, "verify", "--digest", typed, "--refund-id",
                      world.not_received.id, "--issued-at", "2026-11-21T09:00:00+08:00")
    assert wrong_time.exit_code == 1 and "NOT VERIFIED" in wrong_time.output
    out.write_bytes(out.read_bytes().replace(b"****0123", b"****0124"))
    bad = _run(world, "verify", str(out))
    assert bad.exit_code == 1 and "NOT VERIFIED" in bad.output


@pytest.mark.parametrize(("args", "code", "message"), [
    (["RF20261120NOPE0000000000"], 1, "no refund RF20261120NOPE0000000000"),
    (["--date", "2026-12-01"], 2, "--date and --class go together"),
    ([], 2, "Usage:"),   # bare `receipt` shows its help
    (["verify"], 2, "give a JSON receipt FILE"),
])
def test_user_mistakes_are_one_line(world: World, args: list[str], code: int,
                                    message: str) -> None:
    result = _run(world, *args)
    assert result.exit_code == code and message in result.output
    assert "Traceback" not in result.output


def test_missing_key_names_the_setting(world: World) -> None:
    result = _run(world, world.succeeded.id, key="")
    assert result.exit_code == 2
    assert "REFUND_GATEWAY_RECEIPTS__HMAC_KEY" in result.output
