"""The HTML report of the planted-fault run, opened in headless Chromium (Debian's
``chromium``) with networking off: no console messages (the page has no script, so any
console line is an error: a CSP violation, a blocked load, a parse problem), every SVG
chart present in the rendered DOM with its bars; at 1,400 px wide the page needs no
horizontal scrolling (measured on a copy with a measuring script, since the report allows
none); and a screenshot kept under tests/output/reports/ for a person to look at. A
control page that logs to the console proves the console capture works."""

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
SAMPLE_DIR = Path(__file__).resolve().parents[2] / "output" / "reports"
WIDTH = 1400

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
    assert "退款对账报告 Refund reconciliation — 2024-06-11" in dom.stdout
    assert 'id="unknown_to_platform"' in dom.stdout   # a section per discrepancy class
    assert 'id="by-reason"' in dom.stdout and 'id="by-route"' in dom.stdout

    shot = tmp_path / "report.png"
    run = _chromium(tmp_path, f"--screenshot={shot}", f"--window-size={WIDTH},2400",
                    "--hide-scrollbars", html.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    assert _console(run.stderr) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    SAMPLE_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SAMPLE_DIR / "reconciliation-2024-06-11.png")
    shutil.copy(html, SAMPLE_DIR / "reconciliation-2024-06-11.html")
    print(f"\nsample report: {SAMPLE_DIR}/reconciliation-2024-06-11.{{png,html}}")


def test_detail_tables_fit_1400_px(tmp_path: Path) -> None:
    """Every table, the widest detail table included, fits a 1,400 px window: the page's
    scroll width is the window's."""
    page = _report(tmp_path).read_text(encoding="utf-8")
    page = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)
    probe = ("<script>window.addEventListener('load',()=>{document.body.dataset.w="
             "document.documentElement.scrollWidth;document.body.dataset.t=Math.max(...["
             "...document.querySelectorAll('table')].map(t=>t.getBoundingClientRect()"
             ".right))})</script>")
    measured = tmp_path / "measured.html"
    measured.write_text(page.replace("</body>", probe + "</body>"), encoding="utf-8")
    dom = _chromium(tmp_path, "--dump-dom", f"--window-size={WIDTH},900",
                    "--virtual-time-budget=2000", measured.as_uri())
    found = re.search(r'data-w="(\d+)" data-t="([\d.]+)"', dom.stdout)
    assert found is not None, dom.stdout[:500]
    assert int(found[1]) <= WIDTH and float(found[2]) <= WIDTH, found.groups()
