"""``refund-gateway reconcile`` with no ``--statement``: the statement is downloaded through
the route's adapter (``gateway.bootstrap.build_adapters``) from the running sandbox, with
the sandbox's statement faults planted (a line missing, a line twice, an amount drifted),
against refunds made through ``RefundGateway`` with the real adapter. Each fault must come
out in its class; the untouched refund is matched.

One run also covers a day of Alipay and WeChat bills written the way the channels write
them (CH §4.6, §5.7, addendum §7-§8): the Alipay ZIP's 业务明细 and 业务明细(汇总) under GBK
names without the UTF-8 flag, WeChat cells holding commas and refund rows giving the fee
back as a negative 手续费. The bills are checked for those quirks before the run reads
them, so the test cannot pass on a sandbox that stopped writing them."""

from __future__ import annotations

import io
import json
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

pytest.importorskip("sandbox.pytest_plugin", reason="sandbox plugin not landed yet")

from gateway import Money, Payment, Refund, RefundGateway, RefundRequest, RefundStatus, Route
from gateway.archives import UTF8_FLAG, entry_name
from gateway.bootstrap import build_gateway
from gateway.cli import main
from gateway.clock import to_beijing
from gateway.settings import load_settings
from tests.helpers import FakeClock

ROUTES = [pytest.param(r, id=r.value) for r in Route]


def _control(base: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base.rstrip("/") + path, data=data,  # noqa: S310 - local
                                 method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - local sandbox
        return json.loads(resp.read() or b"null")


def _gateway(routes: Sequence[Route], settings: Mapping[str, str], sqlite_url: str,
             monkeypatch: pytest.MonkeyPatch) -> tuple[RefundGateway, FakeClock]:
    """A gateway whose adapters for ``routes`` talk to the sandbox (notifications off)."""
    for route in routes:
        prefix = f"REFUND_GATEWAY_{route.value.upper()}__"
        for key, value in settings.items():
            if key.startswith(prefix):
                monkeypatch.setenv(key, value)
        monkeypatch.delenv(prefix + "NOTIFY_URL", raising=False)
    monkeypatch.setenv("REFUND_GATEWAY_DATABASE_URL", sqlite_url)
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    return build_gateway(load_settings(), clock=clock, sleep=lambda _: None,
                         configure_logs=False), clock


def _payment(base: str, route: Route, user: str) -> Payment:
    doc = _control(base, "POST", "/_sandbox/payments",
                   {"route": route.value, "amount_fen": 10_000, "user_id": user})
    return Payment(route, doc["merchant_order_no"], doc["channel_trade_no"], Money(10_000),
                   user_id=doc.get("user_id", user))


def _succeeded(gw: RefundGateway, clock: FakeClock, ask: RefundRequest) -> Refund:
    rf = gw.refund(ask)
    for _ in range(20):
        if gw.get(rf.id).status.is_final:
            break
        clock.advance(seconds=40)
        gw.resolve_due()
    rf = gw.get(rf.id)
    assert rf.status is RefundStatus.SUCCEEDED, rf
    return rf


def _plant(base: str, route: Route, kinds: Sequence[str]) -> None:
    """Statement faults, taken by the refund lines in order."""
    for kind in kinds:
        _control(base, "POST", "/_sandbox/faults", {"route": route.value,
                                                    "operation": "statement", "kind": kind,
                                                    "count": 1, "drift": 7})


def _reconcile(day: str, routes: Sequence[Route], out: Path) -> tuple[Result, Any]:
    args = ["reconcile", "--date", day, "--out", str(out), "--format", "json"]
    for route in routes:
        args += ["--route", route.value]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, (result.output, repr(result.exception))
    return result, json.loads((out / f"reconciliation-{day}.json").read_text())


@pytest.mark.parametrize("route", ROUTES)
def test_reconcile_downloads_through_the_adapter(
        route: Route, refund_sandbox: Any, sandbox_settings: Mapping[str, str],
        sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = {Route.BANKCARD: "unionpay"}.get(route, route.value)
    pytest.importorskip(f"sandbox.{module}", reason=f"sandbox {module} not landed")
    gw, clock = _gateway([route], sandbox_settings, sqlite_url, monkeypatch)
    base = refund_sandbox.url
    refunds = []
    try:
        for i in range(4):
            payment = _payment(base, route, f"u-{i}")
            refunds.append(_succeeded(gw, clock, RefundRequest(f"k{i}", payment,
                                                               Money(1_000 + i), "sandbox")))
    finally:
        gw.close()
    # First line missing, second twice, third drifted; the fourth is exact.
    _plant(base, route, ("missing_from_statement", "duplicate_in_statement", "amount_drift"))
    day = to_beijing(refunds[0].created_at).date()
    assert all(to_beijing(r.succeeded_at).date() == day for r in refunds if r.succeeded_at)

    result, doc = _reconcile(day.isoformat(), [route], tmp_path / "out")
    got = {r["channel_refund_no"]: r["class"] for r in doc["rows"]}   # all but matched
    assert got == {refunds[0].channel_refund_no: "in_transit",
                   refunds[1].channel_refund_no: "duplicate",
                   refunds[2].channel_refund_no: "amount_mismatch"}, result.output
    assert doc["counts"]["matched"] == 1
    # stdout is the command's output; the run's log line goes to stderr.
    assert "reconciliation_run" not in result.stdout
    assert "reconciliation_run" in result.stderr
    drifted = next(r for r in doc["rows"] if r["channel_refund_no"] ==
                   refunds[2].channel_refund_no)
    assert (drifted["platform_amount"], drifted["statement_amount"]) == ("10.02", "10.09")
    assert doc["bad_lines"] == []


def _alipay_quirks(data: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
    assert all(not i.flag_bits & UTF8_FLAG for i in infos)       # GBK names, no flag
    assert sorted(entry_name(i).split("_", 2)[2] for i in infos) == [
        "业务明细(汇总).csv", "业务明细.csv"]


def _wechat_quirks(data: bytes) -> None:
    lines = data.decode("utf-8").lstrip("\ufeff").splitlines()
    header, rows = lines[0].split(","), [line[1:].split(",`") for line in lines[1:-2]]
    records = [dict(zip(header, row, strict=True)) for row in rows]
    assert records and all("," in r["商品名称"] and "," in r["商户数据包"] for r in records)
    assert all(r["手续费"].startswith("-") for r in records if r["交易状态"] == "REFUND")


def _unionpay_quirks(data: bytes) -> None:
    """The real settlement file (CHANNELS-ADDENDUM §1): a ZIP whose INN..ZM_<merId>
    member holds fixed-width GBK records, one per line, of one length in bytes."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        zm = [i for i in archive.infolist() if "ZM_" in i.filename]
        assert len(zm) == 1 and zm[0].filename.startswith("INN")
        records = archive.read(zm[0]).splitlines()
    assert records and len({len(r) for r in records}) == 1
    records[0].decode("gbk")


def test_one_day_of_channel_written_bills_classifies_every_refund(
        refund_sandbox: Any, sandbox_settings: Mapping[str, str], sqlite_url: str,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17's "done when": one day over a real-layout Alipay ZIP with its summary, a
    WeChat bill with commas inside cells and a real-layout UnionPay ZM file."""
    routes = (Route.ALIPAY, Route.WECHATPAY, Route.BANKCARD)
    gw, clock = _gateway(routes, sandbox_settings, sqlite_url, monkeypatch)
    base = refund_sandbox.url
    made: dict[Route, list[Refund]] = {r: [] for r in routes}
    try:
        for route in routes:
            # On Alipay two are partial refunds of one payment: they share 支付宝交易号 and
            # 商户订单号, and only 退款批次号/请求号 tells them apart.
            orders = [0, 0, 1, 2] if route is Route.ALIPAY else [0, 1, 2, 3]
            payments = {n: _payment(base, route, f"u-{route.value}-{n}") for n in set(orders)}
            for i, n in enumerate(orders):
                made[route].append(_succeeded(gw, clock, RefundRequest(
                    f"{route.value}-k{i}", payments[n], Money(1_000 + i), "sandbox")))
        day = to_beijing(made[Route.ALIPAY][0].created_at).date()
        assert all(to_beijing(r.created_at).date() == day for rs in made.values() for r in rs)
        # The bills as the run will read them (no fault planted yet).
        _alipay_quirks(gw.adapters[Route.ALIPAY].download_statement(day))
        _wechat_quirks(gw.adapters[Route.WECHATPAY].download_statement(day))
        _unionpay_quirks(gw.adapters[Route.BANKCARD].download_statement(day))
    finally:
        gw.close()
    for route in routes:
        _plant(base, route, ("missing_from_statement", "amount_drift"))

    _, doc = _reconcile(day.isoformat(), routes, tmp_path / "out")
    assert doc["bad_lines"] == []        # every row read, every bill total agreeing
    got = {r["channel_refund_no"]: r["class"] for r in doc["rows"]}     # all but matched
    assert got == {rf.channel_refund_no: klass for rs in made.values()
                   for rf, klass in zip(rs, ("in_transit", "amount_mismatch"), strict=False)}
    assert doc["counts"]["matched"] == 6
    drifted = {r["route"]: (r["platform_amount"], r["statement_amount"])
               for r in doc["rows"] if r["class"] == "amount_mismatch"}
    assert drifted == {"alipay": ("10.01", "10.08"), "wechatpay": ("10.01", "10.08"),
                       "bankcard": ("10.01", "10.08")}
