"""Canonical JSON; Ed25519 signing with key ids (rotation: an earlier key still verifies
what it signed); receipts issued with HMAC (v1) keep verifying; the key settings; the
per-route label tables; and the receipt group's argument routing. (The masking rule
receipts use is gateway.masking's: tests/unit/core/test_masking.py.)"""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from gateway.errors import ConfigurationError
from gateway.settings import load_settings
from reconciliation.receipts.canonical import (
    HMAC_KEY_SETTING,
    canonical_json,
    digest,
    key_bytes,
    sign,
    verify,
    verify_digest,
)
from reconciliation.receipts.cli import ReceiptGroup
from reconciliation.receipts.labels import TABLES, Kind, label_of
from reconciliation.receipts.signing import (
    SIGNING_KEY_SETTING,
    derived_key_id,
    generate_private_pem,
    key_ring,
    keys_document,
    ring_from_text,
    signer_from_settings,
)

KEY = "unit-test-key-0123456789"
OLD, NEW = generate_private_pem(), generate_private_pem()


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": {"y": "退款", "x": None}}) == \
        '{"a":{"x":null,"y":"退款"},"b":1}'.encode()
    with pytest.raises(ValueError, match="JSON compliant"):
        canonical_json({"a": float("nan")})


def test_a_signed_document_verifies_with_its_public_key_only() -> None:
    settings = load_settings(receipts={"signing_key": NEW, "key_id": "rk-2"})
    signer = signer_from_settings(settings)
    body = {"refund_id": "RF1", "amount": {"minor": 1230, "currency": "CNY"}}
    good = canonical_json({**body, "signature": sign(body, signer)})
    public = ring_from_text(signer.public.raw_b64, key_id="rk-2")
    assert verify(good, public).ok
    assert not verify(good, ring_from_text(signer.public.raw_b64, key_id="rk-1")).ok
    spaced = good.replace(b",", b", ")
    assert "canonical" in verify(spaced, public).reason


def test_keys_rotate_earlier_signatures_keep_verifying() -> None:
    old = load_settings(receipts={"signing_key": OLD, "key_id": "rk-1"})
    body = {"refund_id": "RF1"}
    signed_before = canonical_json({**body, "signature": sign(body,
                                                              signer_from_settings(old))})
    old_public = key_ring(old)["rk-1"].raw_b64
    rotated = load_settings(receipts={"signing_key": NEW, "key_id": "rk-2",
                                      "public_keys": {"rk-1": old_public}})
    ring = key_ring(rotated)
    assert list(ring) == ["rk-2", "rk-1"]
    assert verify(signed_before, ring).ok
    published = keys_document(rotated)
    assert [(k["key_id"], k["current"]) for k in published["keys"]] == [
        ("rk-2", True), ("rk-1", False)]
    assert verify(signed_before, ring_from_text(json.dumps(published))).ok
    # Without the old key published, the old receipt names a key nobody has.
    assert "no public key with id 'rk-1'" in verify(
        signed_before, key_ring(load_settings(receipts={"signing_key": NEW}))).reason


def test_key_id_defaults_to_the_keys_fingerprint() -> None:
    signer = signer_from_settings(load_settings(receipts={"signing_key": NEW}))
    assert signer.key_id == derived_key_id(signer.private.public_key())
    assert signer.key_id.startswith("ed25519-") and len(signer.key_id) == 24
    assert "PRIVATE" not in repr(signer) and NEW not in repr(signer)


@pytest.mark.parametrize("pem", [None, "", "-----BEGIN PRIVATE KEY-----\nAAAA\n"
                                            "-----END PRIVATE KEY-----"])
def test_missing_or_unreadable_signing_key_names_the_setting(pem: str | None) -> None:
    with pytest.raises(ConfigurationError) as info:
        signer_from_settings(load_settings(receipts={"signing_key": pem}))
    assert SIGNING_KEY_SETTING in info.value.message


def test_hmac_receipts_issued_before_keep_verifying() -> None:
    body = {"refund_id": "RF1", "schema": "refund-gateway/receipt/v1"}
    v1 = canonical_json({**body, "hmac_sha256": digest(body, KEY)})
    assert verify(v1, {}, hmac_key=KEY).ok
    assert verify(v1, {}, hmac_key=KEY).alg == "HMAC-SHA256"
    assert not verify(v1, {}, hmac_key=KEY + "x").ok
    assert HMAC_KEY_SETTING in verify(v1, {}).reason      # no key: says which setting
    d = digest(body, KEY)
    assert verify_digest(body, " ".join(d[i:i + 8] for i in range(0, 64, 8)).upper(), KEY)


def test_verify_rejects_what_is_not_a_receipt() -> None:
    assert verify(b"\xff").reason.startswith("not a JSON receipt")
    assert not verify(b"[]").ok
    assert not verify(b'{"refund_id":"RF1"}').ok
    assert not verify(b'{"a":NaN,"hmac_sha256":"00"}', hmac_key=KEY).ok


@pytest.mark.parametrize("key", [None, "", SecretStr(""), "short"])
def test_weak_hmac_key_names_the_setting(key: str | SecretStr | None) -> None:
    with pytest.raises(ConfigurationError) as info:
        key_bytes(key)
    assert HMAC_KEY_SETTING in info.value.message
    assert key_bytes(SecretStr(KEY)) == KEY.encode()


def test_every_route_has_a_label_table_with_both_languages() -> None:
    assert set(TABLES) == {"alipay", "wechatpay", "bankcard", "balance"}
    for route, table in TABLES.items():
        for name, label in table.items():
            assert label.zh and label.en and label.zh != name, (route, name)
            assert any("\u4e00" <= ch <= "\u9fff" for ch in label.zh), (route, name)
    channel = label_of("wechatpay", "channel")
    assert channel is not None and channel.kind is Kind.CODE
    assert channel.text("ORIGINAL") == "原路退款 back the way it came (ORIGINAL)"
    assert channel.text("SOMETHING_NEW") == "SOMETHING_NEW"
    assert label_of("wechatpay", "promotion_detail") is None    # not for print


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
