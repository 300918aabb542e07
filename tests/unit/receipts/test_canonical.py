"""Canonical JSON, the HMAC key setting, and the receipt group's argument routing. (The
masking rule receipts use is gateway.masking's: tests/unit/core/test_masking.py.)"""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from gateway.errors import ConfigurationError
from reconciliation.receipts.canonical import (
    KEY_SETTING,
    canonical_json,
    digest,
    key_bytes,
    verify,
    verify_digest,
)
from reconciliation.receipts.cli import ReceiptGroup

KEY = "unit-test-key-0123456789"


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": {"y": "退款", "x": None}}) == \
        '{"a":{"x":null,"y":"退款"},"b":1}'.encode()
    with pytest.raises(ValueError, match="JSON compliant"):
        canonical_json({"a": float("nan")})


def test_digest_and_verify_digest() -> None:
    fields = {"refund_id": "RF1", "amount": {"minor": 1230, "currency": "CNY"}}
    d = digest(fields, KEY)
    assert verify_digest(fields, d, KEY)
    assert verify_digest(fields, " ".join(d[i:i + 8] for i in range(0, 64, 8)).upper(), KEY)
    assert not verify_digest({**fields, "refund_id": "RF2"}, d, KEY)
    assert not verify_digest(fields, d[:-1], KEY)
    assert not verify_digest(fields, d, KEY + "x")


def test_verify_rejects_what_is_not_a_receipt() -> None:
    assert verify(b"\xff", KEY).reason.startswith("not a JSON receipt")
    assert not verify(b"[]", KEY).ok
    assert not verify(b'{"refund_id":"RF1"}', KEY).ok
    assert not verify(b'{"a":NaN,"hmac_sha256":"00"}', KEY).ok
    body = {"refund_id": "RF1"}
    signed = {**body, "hmac_sha256": digest(body, KEY)}
    good = canonical_json(signed)
    assert verify(good, KEY).ok
    spaced = good.replace(b",", b", ")
    result = verify(spaced, KEY)
    assert not result.ok and "canonical" in result.reason


@pytest.mark.parametrize("key", [None, "", SecretStr(""), "short"])
def test_missing_or_weak_key_names_the_setting(key: str | SecretStr | None) -> None:
    with pytest.raises(ConfigurationError) as info:
        key_bytes(key)
    assert KEY_SETTING in info.value.message
    assert key_bytes(SecretStr(KEY)) == KEY.encode()


def test_group_routes_refund_ids_to_make_and_keeps_verify() -> None:
    seen: list[tuple[str, tuple[str, ...]]] = []

    @click.group(cls=ReceiptGroup)
    def group() -> None:
        pass

    @group.command("make")
    @click.argument("ids", nargs=-1)
    @click.option("--date")
    def make(ids: tuple[str, ...], date: str | None) -> None:
        seen.append(("make", ids))

    @group.command("verify")
    @click.argument("file")
    def verify_cmd(file: str) -> None:
        seen.append(("verify", (file,)))

    runner = CliRunner()
    assert runner.invoke(group, ["RF1", "RF2"]).exit_code == 0
    assert runner.invoke(group, ["--date", "2026-11-20"]).exit_code == 0
    assert runner.invoke(group, ["verify", "x.json"]).exit_code == 0
    assert seen == [("make", ("RF1", "RF2")), ("make", ()), ("verify", ("x.json",))]
    assert "verify" in runner.invoke(group, ["--help"]).output
