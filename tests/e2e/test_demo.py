"""The README's first command, end to end: ``refund-gateway demo`` in a temporary
directory, then its outputs checked (report classes, the receipt verifies, the truth has
no duplicates) and every file and log line it produced scanned for secrets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from dotenv import dotenv_values

from reconciliation.matching import Klass
from tests.helpers import printed_summaries

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


# The demo's plan (reconciliation/demo.py ``run_demo``): every refund it makes, as
# (route, amount), and its one statement fault.
PLAN = [
    ("alipay", "100.00"),      # full refund (its idempotent repeat makes no second one)
    ("wechatpay", "50.00"),    # three partials of one 300.00 payment ...
    ("wechatpay", "70.00"),    # ... the second rate-limited, then resolved
    ("wechatpay", "30.00"),
    ("wechatpay", "80.00"),    # the channel commits, the answer times out
    ("bankcard", "120.00"),    # partial
    ("bankcard", "200.00"),    # abnormal (card cancelled): the card statement lists it failed
    ("balance", "50.00"),
    ("balance", "200.00"),     # the cancelled card's refund, rerouted to the balance
]
# "missing_from_statement" drops the first WeChat line of the day's bill: the 50.00
# partial. Inside its arrival window it is in transit; five working days on (a WeChat
# statement of that later day only), refunded but not received.
MISSING = ("wechatpay", "50.00")
# The cancelled card's refund moved no money (the card's file lists only what cleared):
# not refunded, never matched, no item; its balance refund carries the money, once.
REROUTED = ("bankcard", "200.00")


Expected = tuple[dict[str, int], dict[tuple[str, str], tuple[int, str]]]


def _expected(lines: list[tuple[str, str, str]], routes: list[str]) -> Expected:
    """A report's (counts by class, (class, route) -> (count, amount)) when it holds
    exactly ``lines`` as (class, route, amount) over ``routes``."""
    counts = {k.value: 0 for k in Klass}
    summary = {(k.value, r): (0, "0.00") for k in Klass for r in routes}
    for klass, route, amount in lines:
        counts[klass] += 1
        n, total = summary[(klass, route)]
        summary[(klass, route)] = (n + 1, f"{Decimal(total) + Decimal(amount):.2f}")
    return counts, summary


def _plan_today() -> Expected:
    return _expected([("matched", *x) for x in PLAN if x not in (MISSING, REROUTED)]
                     + [("in_transit", *MISSING), ("not_refunded", *REROUTED)],
                     sorted({route for route, _ in PLAN}))


def _plan_later() -> Expected:
    return _expected([("refunded_not_received", *MISSING)], [MISSING[0]])


def test_story_and_files(demo: tuple[Path, str, str]) -> None:
    out, stdout, _ = demo
    # the two reconciliations' printed class tables, count for count
    assert printed_summaries(stdout) == [_plan_today()[0], _plan_later()[0]], stdout
    truth = re.search(r"sandbox truth: (\d+) refunds executed, (\d+) executed twice", stdout)
    assert truth is not None, stdout
    assert (int(truth[1]), int(truth[2])) == (len(PLAN), 0)
    chains = re.findall(r"reroute chain (RF\w+) -> (RF\w+): one refund's money, counted once",
                        stdout)
    assert len(chains) == 1, stdout      # the cancelled card's refund and its balance one
    exits = re.findall(r"reconciliation of (\d{4}-\d{2}-\d{2})[^:]*: exit (\d+)", stdout)
    assert [code for _, code in exits] == ["0", "1"], stdout   # a discrepancy exits 1
    for day, _ in exits:
        names = sorted(p.name for p in (out / "reports" / day).iterdir())
        assert names == [f"reconciliation-{day}.{ext}" for ext in ("csv", "html", "json",
                                                                   "xlsx")]
    assert list(out.glob("receipts/*")), "no receipt"


def test_reports_classify_the_planted_faults(demo: tuple[Path, str, str]) -> None:
    out, _, _ = demo
    reports = sorted(out.glob("reports/*/*.json"))
    assert len(reports) == 2
    first, later = (json.loads(p.read_text(encoding="utf-8")) for p in reports)
    for doc, (counts, summary) in ((first, _plan_today()), (later, _plan_later())):
        assert doc["counts"] == counts
        assert {(s["class"], s["route"]): (s["count"], s["amount"])
                for s in doc["summary"]} == summary
        assert doc["bad_lines"] == []
    # the same refund, carried over from in transit to refunded-not-received
    (transit,) = [r for r in first["rows"] if r["class"] == "in_transit"]
    (rerouted,) = [r for r in first["rows"] if r["class"] == "not_refunded"]
    assert (rerouted["route"], rerouted["platform_amount"], rerouted["platform_status"],
            rerouted["statement_status"], rerouted["item_id"]) == (*REROUTED, "rerouted",
                                                                   None, None)
    (missing,) = later["rows"]
    for row, klass in ((transit, "in_transit"), (missing, "refunded_not_received")):
        assert (row["class"], row["route"], row["platform_amount"], row["statement_lines"],
                row["state"]) == (klass, *MISSING, 0, "open")
    assert (missing["refund_id"], missing["item_id"]) == (transit["refund_id"],
                                                          transit["item_id"])
    # the customer-service receipt is for that refund, in every format
    assert sorted(p.name for p in out.glob("receipts/*")) == [
        f"{transit['refund_id']}.{ext}" for ext in ("html", "json", "pdf")]


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
