"""The HTML report of the planted-fault run, opened in headless Chromium (Debian's
``chromium``) with networking off: no console messages (the page has no script, so any
console line is an error: a CSP violation, a blocked load, a parse problem), every SVG
chart present in the rendered DOM with its bars, and a screenshot under the test's tmp dir.
A control page that logs to the console proves the console capture works."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import date
from pathlib import Path

import pytest

from gateway.models import Route
from reconciliation.job import reconcile
from reconciliation.platform import from_csv
from reconciliation.reports import write_html
from reconciliation.statements import Source

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
GOLDEN = Path(__file__).resolve().parents[2] / "golden"
STATEMENTS = ["statements/alipay_trade_20240611.zip", "statements/wechat_refund_20240611.csv.gz",
              "statements/wechat_fundflow_20240611.csv", "statements/balance_20240611.csv",
              "reconciliation/unionpay_duplicate_20240611.zip"]
CHART_CLASSES = ["count-class", "amount-class", "count-route", "amount-route", "ageing"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed")


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", "--disable-default-apps", "--disable-extensions",
           f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False,
                          stdin=subprocess.DEVNULL)


def _console(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln]


def _report(tmp: Path) -> Path:
    plat = from_csv(GOLDEN / "reconciliation/platform.csv")
    result = reconcile(run_date=date(2024, 6, 11), routes=list(Route),
                       statements=[Source.of(GOLDEN / s) for s in STATEMENTS],
                       platform=lambda _c: plat, platform_source="platform.csv", engine=None)
    return write_html(result, tmp / "report.html")


def test_console_capture_sees_errors(tmp_path: Path) -> None:
    page = tmp_path / "control.html"
    page.write_text('<!doctype html><p>x</p><script>console.error("control-42")</script>')
    run = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert any("control-42" in ln for ln in _console(run.stderr)), run.stderr[-2000:]


def test_html_report_renders_without_errors_with_charts(tmp_path: Path) -> None:
    html = _report(tmp_path)
    dom = _chromium(tmp_path, "--dump-dom", html.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console(dom.stderr) == []
    svgs = re.findall(r'<svg class="chart ([\w-]+)"(.*?)</svg>', dom.stdout, re.S)
    assert [cls for cls, _ in svgs] == CHART_CLASSES
    for cls, body in svgs:
        assert body.count("<rect") >= 1, cls
    assert "Refund reconciliation — 2024-06-11" in dom.stdout
    assert 'id="unknown_to_platform"' in dom.stdout   # a section per discrepancy class

    shot = tmp_path / "report.png"
    run = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,1800",
                    "--hide-scrollbars", html.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    assert _console(run.stderr) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
