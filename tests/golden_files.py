"""Golden files: how their expected output is made, read by the tests, written only by hand.

A test reads an expected file and never writes one (STYLE.md "Fixtures from the outside
world"): a missing expected file is a failure. When a parser or report changes on purpose,
regenerate deliberately, then review the diff like code and commit it::

    .venv/bin/python -m tests.golden_files          # rewrite every expected file
    .venv/bin/python -m tests.golden_files --check  # list missing or stale ones, exit 1

Expected files: ``golden/statements/<input>.expected.json`` (the parsed lines of each
statement beside it) and ``golden/reconciliation/expected_report.json`` (the JSON report of
the planted-fault run through ``refund-gateway reconcile``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main as cli
from reconciliation.statements import BadLines, detect, read_lines
from reconciliation.statements.base import Source

GOLDEN = Path(__file__).resolve().parent / "golden"
STATEMENTS = GOLDEN / "statements"
REPORT = GOLDEN / "reconciliation" / "expected_report.json"
REGENERATE = ".venv/bin/python -m tests.golden_files"
# The planted-fault run: every class of DESIGN.md that a statement can show, one statement
# per route (UnionPay's with a duplicate line) against reconciliation/platform.csv. ("paid
# twice" comes from the store's paid-after-release alarms; its golden count is zero.)
PLANTED_STATEMENTS = ["statements/alipay_trade_20240611.zip",
                      "statements/wechat_refund_20240611.csv.gz",
                      "statements/wechat_fundflow_20240611.csv",
                      "statements/balance_20240611.csv",
                      "reconciliation/unionpay_duplicate_20240611.zip"]
PLANTED_DATE = "2024-06-11"


def statement_inputs() -> list[Path]:
    return sorted(p for p in STATEMENTS.iterdir() if not p.name.endswith(".expected.json"))


def expected_for(statement: Path) -> Path:
    return statement.with_name(statement.name + ".expected.json")


def parsed_statement(path: Path, chunk_bytes: int = 1 << 20) -> dict[str, Any]:
    """What the parsers make of one statement file: its format, lines and bad lines."""
    bad = BadLines()
    lines = [ln.to_json() for ln in read_lines(path, bad, chunk_bytes=chunk_bytes)]
    return {"format": detect(Source.of(path)).name, "lines": lines,
            "bad_lines": [str(e) for e in bad.errors]}


def planted_run(workdir: Path, *extra: str) -> Result:
    """``refund-gateway reconcile`` of the planted faults into ``workdir/out`` on a fresh
    SQLite file."""
    args = ["reconcile", "--date", PLANTED_DATE, "--platform-csv",
            str(GOLDEN / "reconciliation/platform.csv"), "--out", str(workdir / "out"), *extra]
    for s in PLANTED_STATEMENTS:
        args += ["--statement", str(GOLDEN / s)]
    env = {"REFUND_GATEWAY_DATABASE_URL": f"sqlite:///{workdir / 'golden.db'}"}
    return CliRunner().invoke(cli, args, env=env)


def planted_report(workdir: Path) -> Any:
    """The JSON report the planted-fault run writes."""
    planted_run(workdir)
    path = workdir / "out" / f"reconciliation-{PLANTED_DATE}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def read_expected(path: Path) -> Any:
    """The reviewed expected content of ``path``; a missing file fails the test."""
    if not path.exists():
        pytest.fail(f"golden file {path.relative_to(GOLDEN.parent.parent)} is missing; a test "
                    f"never writes one. Generate it deliberately with `{REGENERATE}`, review "
                    "it and commit it.", pytrace=False)
    return json.loads(path.read_text(encoding="utf-8"))


def render(doc: Any) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=1) + "\n"


def _all_expected() -> dict[Path, str]:
    files = {expected_for(p): render(parsed_statement(p)) for p in statement_inputs()}
    with tempfile.TemporaryDirectory() as tmp:
        files[REPORT] = render(planted_report(Path(tmp)))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.golden_files",
                                     description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; list missing or stale files and exit 1 if any")
    args = parser.parse_args(argv)
    stale = 0
    for path, text in _all_expected().items():
        old = path.read_text(encoding="utf-8") if path.exists() else None
        state = "missing" if old is None else "unchanged" if old == text else "changed"
        stale += state != "unchanged"
        if not args.check and state != "unchanged":
            path.write_text(text, encoding="utf-8")
            state = {"missing": "written", "changed": "rewritten"}[state]
        print(f"{state:<10} {path.relative_to(GOLDEN)}")
    if args.check:
        return 1 if stale else 0
    if stale:
        print("review the diff (git diff tests/golden) before committing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
