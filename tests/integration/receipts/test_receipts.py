"""Receipts for the four situations, field by field, in all three formats; masking in
every format (PDF text included); tamper evidence (Ed25519 over the canonical form,
checked with the public key alone); the PDF read back with pdftotext and page 1 drawn
with pdftoppm for a person to look at (a sample is copied to tests/output/receipts/)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway.models import ChannelResult, ChannelStatus, Route
from reconciliation.receipts import Receipt, build_receipt, key_ring, render, verify
from reconciliation.receipts.signing import generate_private_pem, ring_from_text
from tests.integration.receipts.conftest import (
    ALIPAY_REFUND_ID,
    FULL_CARD,
    KEY,
    KEY_ID,
    SIGNING_PEM,
    STATEMENT_FILE,
    STATEMENT_LINE,
    UNIONPAY_QUERY_ID,
    WECHAT_ABNORMAL_ID,
    WECHAT_TRANSIT_ID,
    World,
)

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "output" / "receipts"


def _receipt(world: World, refund_id: str, **kw: object) -> Receipt:
    return build_receipt(world.gw, refund_id, settings=world.settings, now=world.issued_at,
                         **kw)  # type: ignore[arg-type]


def _pdf_text(pdf: bytes, tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(pdf)
    out = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], check=True,
                         capture_output=True, timeout=60)
    return out.stdout.decode("utf-8")


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_succeeded_alipay_receipt(world: World) -> None:
    r = world.succeeded
    receipt = _receipt(world, r.id, reconciliation=world.matched_line)
    f = receipt.fields()
    assert f["refund_id"] == r.id and f["merchant_order_no"] == "ORD-ALI-1"
    assert f["amount"] == {"minor": 1230, "currency": "CNY", "text": "12.30 CNY"}
    assert f["route"] == "alipay" and f["route_label"] == "支付宝 Alipay"
    assert f["status"] == "succeeded"
    assert f["status_at"] == f["channel_success_time"] == "2026-11-20T10:00:05+08:00"
    assert f["channel_refund_no"] == r.id          # derived from the refund id
    assert f["channel_refund_id"] == ALIPAY_REFUND_ID
    assert f["received_account"] == "159****5620"    # Alipay's own masking, kept
    assert f["received_account_source"] == "buyer_logon_id"
    fields = {c["name"]: (c["label_zh"], c["label_en"], c["value"], c["text"])
              for c in f["channel_fields"]}
    assert fields == {
        "dback_status": ("银行卡冲退状态", "Bank card leg", "S", "成功 succeeded (S)"),
        "dback_amount": ("银行卡冲退金额", "Bank card leg amount", "12.30", "12.30 CNY"),
        "bank_ack_time": ("银行受理时间", "Bank acknowledged at", "2026-11-20 10:00:07",
                          "2026-11-20 10:00:07"),
        "est_bank_receipt_time": ("银行预计到账时间", "Bank's estimated arrival",
                                  "2026-11-23 10:00:00", "2026-11-23 10:00:00")}
    assert f["evidence"] == {}
    # Friday 2026-11-20 + 0-3 Chinese working days.
    assert f["expected_arrival"] == {"earliest": "2026-11-20", "latest": "2026-11-25",
                                     "working_days": "0-3"}
    assert f["reconciliation"]["class"] == "matched"
    assert f["reconciliation"]["statement_file"] == STATEMENT_FILE
    assert f["reconciliation"]["statement_line"] == STATEMENT_LINE
    assert f["reconciliation"]["statement_amount"] == {"minor": 1230, "currency": "CNY"}
    assert f["reconciliation"]["statement_time"] == "2026-11-20T10:00:05+08:00"
    assert [(e["kind"], e["from"], e["to"]) for e in f["events"]] == [
        ("requested", None, "pending"), ("attempt", None, None),
        ("status_changed", "pending", "succeeded")]
    assert all(set(e) == {"at", "kind", "from", "to"} for e in f["events"])   # no payloads
    assert f["guidance"]["situation"] == "succeeded"
    assert "请携带本回执及以下凭证联系支付宝客服（95188）查询" in f["guidance"]["zh"]
    assert ALIPAY_REFUND_ID in f["guidance"]["zh"] and "2026-11-20 10:00:07" in \
        f["guidance"]["zh"]
    assert "contact Alipay customer service (95188)" in f["guidance"]["en"]
    assert f["linked_refunds"] == [] and f["failure_code"] is None
    assert f["issued_at"] == "2026-11-20T11:41:40+08:00"
    assert f["platform"] == "卡盟示例平台 Example Card Platform"
    assert f["version"] == 1 and f["previous"] is None
    assert verify(render(receipt, "json"), key_ring(world.settings)).ok


def test_in_transit_wechat_receipt(world: World) -> None:
    r = world.in_transit
    f = _receipt(world, r.id).fields()
    assert (f["status"], f["route"], f["amount"]["minor"]) == ("processing", "wechatpay", 2500)
    assert f["channel_refund_id"] == WECHAT_TRANSIT_ID
    assert f["channel_success_time"] is None and f["received_account"] is None
    assert f["status_at"] == "2026-11-20T10:03:00+08:00"
    assert f["expected_arrival"]["latest"] == "2026-11-25"
    assert f["reconciliation"] is None
    g = f["guidance"]
    assert g["situation"] == "in_transit"
    assert "目前处理中（资金在途）" in g["zh"] and "微信支付客服（95017）" in g["zh"]
    assert "is on its way" in g["en"] and WECHAT_TRANSIT_ID in g["en"]


def test_abnormal_then_rerouted_points_to_the_balance_refund(world: World) -> None:
    original, linked = world.abnormal, world.linked
    f = _receipt(world, original.id).fields()
    assert f["status"] == "rerouted" and f["failure_code"] == "ABNORMAL"
    assert f["channel_refund_id"] == WECHAT_ABNORMAL_ID
    assert f["received_account"] == "招商银行信用卡0403"
    assert f["received_account_source"] == "user_received_account"
    assert f["linked_refunds"] == [{
        "relation": "rerouted_to", "refund_id": linked.id, "route": "balance",
        "status": "succeeded", "amount_text": "88.00 CNY",
        "channel_refund_no": linked.channel_refund_no,
        "status_at": "2026-11-20T10:36:01+08:00"}]
    assert [e["to"] for e in f["events"] if e["to"]] == ["pending", "abnormal", "rerouted"]
    g = f["guidance"]
    assert g["situation"] == "rerouted"
    assert f"改为退至平台余额，关联退款单号 {linked.id}（状态：退款成功）" in g["zh"]
    assert f"linked refund {linked.id}" in g["en"]

    lf = _receipt(world, linked.id).fields()
    assert lf["route"] == "balance" and lf["status"] == "succeeded"
    assert lf["linked_refunds"][0]["relation"] == "rerouted_from"
    assert lf["linked_refunds"][0]["refund_id"] == original.id
    assert f"本笔退款替代原退款 {original.id}" in lf["guidance"]["zh"]
    assert "退回至您的平台余额" in lf["guidance"]["zh"]


def test_refunded_not_received_bankcard_receipt(world: World) -> None:
    r = world.not_received
    f = _receipt(world, r.id).fields()
    assert f["status"] == "succeeded" and f["route"] == "bankcard"
    assert f["amount"] == {"minor": 19900, "currency": "CNY", "text": "199.00 CNY"}
    assert f["received_account"] == "****0123"
    assert {c["name"]: c["value"] for c in f["channel_fields"]}["queryId"] == \
        UNIONPAY_QUERY_ID
    assert f["expected_arrival"] == {"earliest": "2026-11-23", "latest": "2026-11-27",
                                     "working_days": "1-5"}
    rec = f["reconciliation"]
    assert (rec["class"], rec["state"], rec["run_id"], rec["run_date"]) == (
        "refunded_not_received", "open", 2, "2026-12-01")
    g = f["guidance"]
    assert g["situation"] == "not_received"
    assert "显示已退款但未到账" in g["zh"]
    assert "请携带本回执及以下凭证联系您的发卡银行客服（或银联 95516）查询资金去向" in g["zh"]
    assert f"银联交易查询流水号 {UNIONPAY_QUERY_ID}" in g["zh"]
    assert f"UnionPay query ID {UNIONPAY_QUERY_ID}" in g["en"]
    assert "refunded but not received" in g["en"]


def test_every_format_masks_and_carries_the_digest(world: World, tmp_path: Path) -> None:
    refunds = [world.succeeded, world.in_transit, world.abnormal, world.linked,
               world.not_received]
    private_body = "".join(SIGNING_PEM.splitlines()[1:-1])
    for r in refunds:
        receipt = _receipt(world, r.id)
        assert receipt.digest and re.fullmatch(r"[0-9a-f]{64}", receipt.digest)
        assert receipt.signature is not None and receipt.signature.key_id == KEY_ID
        grouped = " ".join(receipt.digest[i:i + 8] for i in range(0, 64, 8))
        blob = render(receipt, "json")
        html = render(receipt, "html").decode("utf-8")
        text = _pdf_text(render(receipt, "pdf"), tmp_path, r.id)
        assert json.loads(blob)["signature"] == {
            "alg": "Ed25519", "key_id": KEY_ID, "sha256": receipt.digest,
            "value": receipt.signature.value}
        assert hashlib.sha256(json.dumps(
            receipt.fields(), sort_keys=True, separators=(",", ":"),
            ensure_ascii=False).encode()).hexdigest() == receipt.digest
        assert grouped in html and grouped in text
        assert receipt.signature.value in html
        assert receipt.signature.value in _squash(text)
        for shown in (blob.decode("utf-8"), html, text):
            digits = re.sub(r"\D", "", shown)
            assert FULL_CARD not in digits.replace(UNIONPAY_QUERY_ID, "")
            assert FULL_CARD[:12] not in shown and KEY not in shown
            assert private_body not in shown
            assert "raw" not in json.loads(blob)["events"][0]


def test_html_is_one_self_contained_a4_page(world: World) -> None:
    html = render(_receipt(world, world.not_received.id), "html").decode("utf-8")
    assert "@page { size: A4; margin: 12mm }" in html
    assert not re.search(r"(?:src|href)\s*=|@import|url\(", html)   # no external resources
    assert "请携带本回执及以下凭证" in html and "****0123" in html


def test_verification_fails_after_any_one_character_changes(world: World) -> None:
    receipt = _receipt(world, world.not_received.id)
    blob = render(receipt, "json")
    # Only the public key: the published form (base64) or PEM, nothing secret.
    public = key_ring(world.settings)[KEY_ID]
    ring = ring_from_text(public.raw_b64, key_id=KEY_ID)
    assert "PRIVATE" not in public.pem
    assert verify(blob, ring).ok
    assert verify(blob, ring_from_text(public.pem, key_id=KEY_ID)).ok
    assert verify(blob + b"\n", ring).ok                 # a trailing newline from an editor
    other = ring_from_text(key_ring(world.settings.model_copy(update={
        "receipts": world.settings.receipts.model_copy(update={
            "signing_key": SecretStr(generate_private_pem())})}))[KEY_ID].raw_b64,
        key_id=KEY_ID)
    assert verify(blob, other).reason.startswith("signature does not match")
    assert "no public key" in verify(blob, {}).reason
    text = blob.decode("utf-8")
    for i, ch in enumerate(text):                        # every position, one change each
        swap = "0" if ch != "0" else "1"
        tampered = (text[:i] + swap + text[i + 1:]).encode("utf-8")
        assert not verify(tampered, ring).ok, f"position {i} ({ch!r}) changed yet verified"
    # Another base64 spelling of the same signature bytes (the 4 unread bits of the
    # last character before "==") is an edit too: this used to verify, now and then.
    value = json.loads(blob)["signature"]["value"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    assert value.endswith("==")
    index = alphabet.index(value[-3])
    respelt = value[:-3] + alphabet[(index & 0b110000) | ((index + 1) & 0b1111)] + "=="
    assert base64.b64decode(respelt) == base64.b64decode(value)
    assert not verify(blob.replace(value.encode(), respelt.encode()), ring).ok
    doc = json.loads(blob)
    doc["amount"]["minor"] = 19901
    edited = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert verify(edited.encode(), ring).reason.startswith("digest")
    # Digest recomputed by the forger: the signature still gives it away.
    fields = {k: v for k, v in doc.items() if k != "signature"}
    doc["signature"]["sha256"] = hashlib.sha256(json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()
    forged = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert verify(forged.encode(), ring).reason.startswith("signature does not match")


def test_pdf_text_has_the_chinese_paragraph_and_page_one_is_drawn(world: World,
                                                                   tmp_path: Path) -> None:
    receipt = _receipt(world, world.not_received.id)
    pdf = render(receipt, "pdf")
    assert pdf.startswith(b"%PDF-")
    text = _pdf_text(pdf, tmp_path, "receipt")
    assert _squash(receipt.guidance.zh) in _squash(text)
    assert "转账回执" in text and world.not_received.id in text
    info = subprocess.run(["pdfinfo", str(tmp_path / "receipt.pdf")], check=True,
                          capture_output=True, text=True, timeout=60).stdout
    assert re.search(r"Pages:\s+1\b", info) and "(A4)" in info   # one A4 page
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1",
                    str(tmp_path / "receipt.pdf"), str(tmp_path / "receipt")],
                   check=True, timeout=60)
    png = next(tmp_path.glob("receipt*.png"))
    assert png.read_bytes().startswith(b"\x89PNG")
    # A sample for a person to look at (tests/output/ is not committed).
    SAMPLE_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "receipt.pdf", SAMPLE_DIR / "refunded-not-received.pdf")
    shutil.copy(png, SAMPLE_DIR / "refunded-not-received.png")
    (SAMPLE_DIR / "refunded-not-received.html").write_bytes(render(receipt, "html"))
    (SAMPLE_DIR / "refunded-not-received.json").write_bytes(render(receipt, "json"))
    print(f"\nsample receipt: {SAMPLE_DIR}/refunded-not-received.{{pdf,png,html,json}}")


@pytest.mark.parametrize("name", ["succeeded", "abnormal"])
def test_each_situation_renders_on_one_page(world: World, tmp_path: Path, name: str) -> None:
    refund = getattr(world, name)
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(render(_receipt(world, refund.id), "pdf"))
    info = subprocess.run(["pdfinfo", str(path)], check=True, capture_output=True,
                          text=True, timeout=60).stdout
    assert re.search(r"Pages:\s+1\b", info)


def test_a_long_history_still_prints_on_one_a4_page(world: World, tmp_path: Path) -> None:
    """Thirty channel queries of an in-transit refund fold into one history line; the HTML
    printed by headless Chromium and the PDF are one A4 page each."""
    world.channels[Route.WECHATPAY].answers.append(lambda r: ChannelResult(
        ChannelStatus.PROCESSING, r.channel_refund_no, channel_refund_id=WECHAT_TRANSIT_ID))
    for _ in range(30):
        world.clock.advance(minutes=5)
        world.gw.sync(world.in_transit.id)
    receipt = build_receipt(world.gw, world.in_transit.id, settings=world.settings,
                            now=world.clock.now)
    assert len(receipt.events) > 30 and receipt.status == "processing"
    html = tmp_path / "long.html"
    html.write_bytes(render(receipt, "html"))
    assert "渠道调用 channel call ×" in html.read_text(encoding="utf-8")
    printed = tmp_path / "long-html.pdf"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    f"--print-to-pdf={printed}", "--no-pdf-header-footer",
                    html.as_uri()], check=True, capture_output=True, timeout=120)
    (tmp_path / "long.pdf").write_bytes(render(receipt, "pdf"))
    for pdf in (printed, tmp_path / "long.pdf"):
        info = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True,
                              text=True, timeout=60).stdout
        assert re.search(r"Pages:\s+1\b", info) and "(A4)" in info, pdf.name
