"""The demo never says "Done" after a step failed (issue 22): a step whose command exits
otherwise than planned, or that raises, is named and the demo exits 1; a PDF receipt
without a CJK font is done another way (HTML and JSON) and said so."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gateway import ConfigurationError
from reconciliation import demo
from reconciliation.cli import reconcile_command


def _no_font() -> Any:
    raise ConfigurationError("no CJK font for PDF receipts: install the Debian package "
                             "fonts-noto-cjk", setting="fonts")


def test_a_step_that_exits_otherwise_is_named(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconcile_command, "callback", lambda **_: sys.exit(2))
    printed: list[str] = []
    result = demo.run_demo(tmp_path / "out", echo=printed.append)
    assert [f.split(":")[0] for f in result["failed"]] == [
        "3. Statements and reconciliation"] * 2
    assert "reconcile (today) exited 2, expected 0" in result["failed"][0]
    assert any(line.startswith("\nFailed after") for line in printed), printed
    assert not any(line.startswith("\nDone") for line in printed)


def test_without_a_cjk_font_the_receipt_is_done_another_way_and_said(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "find_cjk_font", _no_font)
    printed: list[str] = []
    result = demo.run_demo(tmp_path / "out", echo=printed.append)
    assert result["failed"] == []
    assert "fonts-noto-cjk" in result["another_way"][0]
    assert sorted(p.suffix for p in (tmp_path / "out" / "receipts").iterdir()) == [
        ".html", ".json"]
    (closing,) = [line for line in printed if line.startswith("\nDone")]
    assert "done another way: the PDF receipt was skipped" in closing


def test_a_step_that_raises_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                     ) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("calendar exploded")

    monkeypatch.setattr(demo, "add_working_days", broken)
    printed: list[str] = []
    with pytest.raises(demo.DemoFailed) as failed:
        demo.run_demo(tmp_path / "out", echo=printed.append)
    assert "step '3. Statements and reconciliation'" in failed.value.message
    assert "calendar exploded" in failed.value.message
    assert failed.value.exit_code == 1
    assert not any(line.startswith("\nDone") for line in printed)


@pytest.mark.parametrize(("failed", "code"), [([], 0), (["3. x: reconcile exited 2"], 1)])
def test_the_command_exits_1_after_a_failed_step(monkeypatch: pytest.MonkeyPatch,
                                                 failed: list[str], code: int) -> None:
    monkeypatch.setattr(demo, "run_demo", lambda out: {"duplicates": 0, "failed": failed})
    assert CliRunner().invoke(demo.demo_command, []).exit_code == code
