"""``refund-gateway receipt`` through the real console group (entry point plugin): one
refund, several, a reconciliation class of a day; ``receipt keys`` and ``receipt verify``
with nothing but the published public keys (no database, no secret); a printed digest;
``--json`` documents; and the errors a user can make."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from reconciliation.receipts import key_ring, verify
from tests.integration.receipts.conftest import KEY_ID, SIGNING_PEM, World


def _run(world: World, *args: str, key: str | None = SIGNING_PEM,
         env: dict[str, str] | None = None) -> Result:
    base = {"REFUND_GATEWAY_DATABASE_URL": world.settings.database_url,
            "REFUND_GATEWAY_RECEIPTS__SIGNING_KEY": key or "",
            "REFUND_GATEWAY_RECEIPTS__KEY_ID": KEY_ID}
    root = ["--json"] if args[:1] == ("--json",) else []   # the root flag, before "receipt"
    rest = args[len(root):]
    return CliRunner().invoke(main, [*root, "receipt", *rest], env={**base, **(env or {})},
                              catch_exceptions=False)


def _bare(*args: str) -> Result:
    """Anyone: no settings of the platform at all (no key, a database that is not there)."""
    env = {"REFUND_GATEWAY_DATABASE_URL": "sqlite:////nonexistent/none.db",
           "REFUND_GATEWAY_RECEIPTS__SIGNING_KEY": "", "REFUND_GATEWAY_RECEIPTS__KEY_ID": ""}
    return CliRunner().invoke(main, ["receipt", *args], env=env, catch_exceptions=False)


def test_one_refund_as_json_on_stdout_verifies(world: World) -> None:
    result = _run(world, world.succeeded.id, "--format", "json")
    assert result.exit_code == 0, result.output
    blob = result.stdout.strip().encode("utf-8")
    assert verify(blob, key_ring(world.settings)).ok
    assert json.loads(blob)["refund_id"] == world.succeeded.id


def test_the_same_receipt_twice_is_the_same_version(world: World) -> None:
    first = _run(world, world.succeeded.id).stdout
    again = _run(world, world.succeeded.id).stdout
    assert first == again and json.loads(first)["version"] == 1


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


def test_anyone_verifies_with_the_published_keys_alone(world: World, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert _run(world, world.not_received.id, "--out", str(out)).exit_code == 0
    keys = _run(world, "keys")
    assert keys.exit_code == 0, keys.output
    published = json.loads(keys.stdout)
    assert published["schema"] == "refund-gateway/receipt-keys/v1"
    [entry] = published["keys"]
    assert (entry["key_id"], entry["alg"], entry["current"]) == (KEY_ID, "Ed25519", True)
    assert "PRIVATE" not in keys.stdout
    assert "".join(SIGNING_PEM.splitlines()[1:-1]) not in keys.stdout
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(keys.stdout, encoding="utf-8")

    ok = _bare("verify", str(out), "--keys", str(keys_file))
    assert ok.exit_code == 0 and "VERIFIED" in ok.output, ok.output
    one_key = _bare("verify", str(out), "--public-key", entry["public_key_pem"],
                    "--key-id", KEY_ID)
    assert one_key.exit_code == 0, one_key.output
    doc = json.loads(out.read_bytes())
    typed = " ".join(doc["signature"]["sha256"][i:i + 8] for i in range(0, 64, 8)).upper()
    assert _bare("verify", str(out), "--keys", str(keys_file), "--digest",
                 typed).exit_code == 0
    assert _bare("verify", str(out), "--keys", str(keys_file), "--digest",
                 "0" * 64).exit_code == 1
    out.write_bytes(out.read_bytes().replace(b"****0123", b"****0124"))
    bad = _bare("verify", str(out), "--keys", str(keys_file))
    assert bad.exit_code == 1 and "NOT VERIFIED" in bad.output


def test_verify_json_is_one_document(world: World, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert _run(world, world.succeeded.id, "--out", str(out)).exit_code == 0
    for args in (["verify", str(out), "--json"], ["--json", "verify", str(out)]):
        result = _run(world, *args)
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)     # the whole of stdout, nothing else
        assert doc["schema"] == "refund-gateway/cli/receipt-verify/v1"
        assert (doc["verified"], doc["method"], doc["refund_id"], doc["version"],
                doc["alg"], doc["key_id"], doc["exit_code"]) == (
            True, "file", world.succeeded.id, 1, "Ed25519", KEY_ID, 0)
        assert doc["receipt_schema"] == "refund-gateway/receipt/v2"
        assert doc["database"] is None       # a file needs no database
    out.write_bytes(out.read_bytes().replace(b'"minor":1230', b'"minor":1231'))
    bad = _run(world, "verify", str(out), "--json")
    assert bad.exit_code == 1 and json.loads(bad.stdout)["verified"] is False


def test_make_json_names_version_digest_and_database(world: World, tmp_path: Path) -> None:
    result = _run(world, "--json", world.succeeded.id, world.linked.id, "RF20261120NOPE00",
                  "--out", str(tmp_path))
    assert result.exit_code == 1          # one refund missing
    doc = json.loads(result.stdout)
    assert doc["schema"] == "refund-gateway/cli/receipt/v1"
    assert doc["database"] == world.settings.database_url
    assert doc["missing"] == ["RF20261120NOPE00"] and doc["exit_code"] == 1
    made = {r["refund_id"]: r for r in doc["receipts"]}
    assert set(made) == {world.succeeded.id, world.linked.id}
    entry = made[world.succeeded.id]
    assert (entry["version"], entry["new_version"], entry["key_id"]) == (1, True, KEY_ID)
    assert entry["files"] == [str(tmp_path / f"{world.succeeded.id}.pdf")]
    single = json.loads(_run(world, "--json", world.succeeded.id).stdout)
    [again] = single["receipts"]
    assert again["new_version"] is False and again["sha256"] == entry["sha256"]
    assert again["receipt"]["signature"]["sha256"] == entry["sha256"]


def test_a_printed_digest_is_found_among_the_issued_versions(world: World) -> None:
    receipt = json.loads(_run(world, world.not_received.id).stdout)
    printed = " ".join(receipt["signature"]["sha256"][i:i + 8] for i in range(0, 64, 8))
    ok = _run(world, "verify", "--digest", printed)
    assert ok.exit_code == 0 and "VERIFIED" in ok.output, ok.output
    unknown = _run(world, "--json", "verify", "--digest", "ab" * 32)
    assert unknown.exit_code == 1
    assert json.loads(unknown.stdout)["reason"] == "no receipt with this digest was issued here"


@pytest.mark.parametrize(("args", "code", "message"), [
    (["RF20261120NOPE0000000000"], 1, "no refund RF20261120NOPE0000000000"),
    (["--date", "2026-12-01"], 2, "--date and --class go together"),
    ([], 2, "Usage:"),   # bare `receipt` shows its help
    (["verify"], 2, "give a JSON receipt FILE"),
    (["verify", "--digest", "12ab"], 2, "--digest is not 64 hex digits"),
])
def test_user_mistakes_are_one_line(world: World, args: list[str], code: int,
                                    message: str) -> None:
    result = _run(world, *args)
    assert result.exit_code == code and message in result.output
    assert "Traceback" not in result.output


def test_missing_key_names_the_setting(world: World) -> None:
    result = _run(world, world.succeeded.id, key="")
    assert result.exit_code == 2
    assert "REFUND_GATEWAY_RECEIPTS__SIGNING_KEY" in result.output
    as_json = _run(world, "--json", world.succeeded.id, key="")
    assert as_json.exit_code == 2
    assert "REFUND_GATEWAY_RECEIPTS__SIGNING_KEY" in json.loads(as_json.stdout)["error"]
