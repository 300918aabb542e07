"""The README's first command, end to end: ``refund-gateway demo`` in a temporary
directory, then its outputs checked (report classes, the receipt verifies, the truth has
no duplicates) and every file and log line it produced scanned for secrets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dotenv import dotenv_values

CLI = [sys.executable, "-c", "from gateway.cli import main; main()"]
# A card-length digit run standing alone (identifiers like ORD2026... are not cards).
CARD = re.compile(rb"(?<![\w])\d{16,19}(?![\w])")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    cwd = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUND_GATEWAY_")}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    done = subprocess.run([*CLI, "demo"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return cwd / "demo-output", done.stdout, done.stderr


def test_story_and_files(demo: tuple[Path, str, str]) -> None:
    out, stdout, _ = demo
    assert "0 executed twice" in stdout
    assert "refunded, not received" in stdout
    for pattern in ("reports/*/*.html", "reports/*/*.xlsx", "reports/*/*.csv",
                    "reports/*/*.json", "receipts/*"):
        assert list(out.glob(pattern)), f"no {pattern}"


def test_reports_classify_the_planted_faults(demo: tuple[Path, str, str]) -> None:
    out, _, _ = demo
    reports = sorted(out.glob("reports/*/*.json"))
    later = json.loads(reports[-1].read_text(encoding="utf-8"))
    text = json.dumps(later)
    assert "refunded_not_received" in text
    first = json.loads(reports[0].read_text(encoding="utf-8"))
    assert "in_transit" in json.dumps(first) and "matched" in json.dumps(first)


def test_receipt_verifies(demo: tuple[Path, str, str]) -> None:
    out, _, _ = demo
    receipts = sorted(out.glob("receipts/*.json"))
    assert receipts
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUND_GATEWAY_")}
    ok = subprocess.run([*CLI, "--env-file", str(out / "sandbox.env"), "receipt", "verify",
                         str(receipts[0])], env=env, capture_output=True, text=True,
                        timeout=60, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    tampered = out / "tampered.json"
    data = receipts[0].read_bytes()
    tampered.write_bytes(data.replace(b'"', b"'", 1) if data.count(b"1") == 0
                         else data.replace(b"1", b"2", 1))
    bad = subprocess.run([*CLI, "--env-file", str(out / "sandbox.env"), "receipt", "verify",
                          str(tampered)], env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert bad.returncode != 0


def test_no_secret_in_any_output_or_log(demo: tuple[Path, str, str]) -> None:
    out, stdout, stderr = demo
    settings = dotenv_values(out / "sandbox.env")
    secrets: list[bytes] = []
    for key, value in settings.items():
        if value and any(word in key for word in ("KEY", "HMAC")) and "ID" not in key:
            text = value.replace("\\n", "\n")
            body = "".join(line for line in text.splitlines() if "-----" not in line)
            secrets += [body[i:i + 40].encode() for i in range(0, max(len(body) - 40, 1), 200)]
    assert secrets
    files = [p for p in out.rglob("*") if p.is_file() and p.name != "sandbox.env"]
    blobs = [(p.name, p.read_bytes()) for p in files]
    blobs += [("stdout", stdout.encode()), ("stderr", stderr.encode())]
    for name, blob in blobs:
        for secret in secrets:
            assert secret not in blob, f"key material in {name}"
        assert b"WECHATPAY2-SHA256-RSA2048 mchid" not in blob, f"Authorization in {name}"
        assert b"BEGIN PRIVATE KEY" not in blob and b"BEGIN RSA PRIVATE" not in blob
        if not name.endswith((".db", ".xlsx", ".pdf", ".png", ".zip", ".gz")):
            assert CARD.search(blob) is None, f"a card-length number in {name}"
