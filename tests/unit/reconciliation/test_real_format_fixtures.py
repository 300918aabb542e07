"""Golden tests over bills written to the channels' published layouts from public samples
(``tests/fixtures/statements/{alipay,wechatpay}``, sources in each folder's README.md).

Each input parses to exactly the lines in the ``<input>.expected.json`` beside it, which
was typed by hand from the sample, not produced by the parser; a refused bill expects its
refusal. A missing expected file fails (a test never writes one), and so does an input the
README does not cite. The same answer comes out when the file is read in tiny chunks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import StatementError
from reconciliation.statements import BadLines, detect, read_lines
from reconciliation.statements.base import Source

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "statements"
FOLDERS = ("alipay", "wechatpay")
_NOT_INPUTS = (".expected.json", ".md", ".py")
INPUTS = sorted(p for folder in FOLDERS for p in (FIXTURES / folder).iterdir()
                if p.is_file() and not p.name.endswith(_NOT_INPUTS))


def _expected(path: Path) -> Any:
    expected = path.with_name(path.name + ".expected.json")
    if not expected.exists():
        pytest.fail(f"{expected.relative_to(FIXTURES)} is missing: write it by hand from the "
                    "sample the README cites (a test never writes one)", pytrace=False)
    return json.loads(expected.read_text(encoding="utf-8"))


def _parsed(path: Path, chunk_bytes: int = 1 << 20) -> dict[str, Any]:
    bad = BadLines()
    lines = [ln.to_json() for ln in read_lines(path, bad, chunk_bytes=chunk_bytes)]
    return {"format": detect(Source.of(path)).name, "lines": lines,
            "bad_lines": [str(e) for e in bad.errors]}


def test_there_are_fixtures_for_both_channels() -> None:
    assert {p.parent.name for p in INPUTS} == set(FOLDERS)
    assert sum(1 for p in INPUTS if p.parent.name == "wechatpay") >= 3


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.name)
def test_parses_to_the_hand_checked_lines(path: Path) -> None:
    expected = _expected(path)
    if "refused" in expected:
        assert detect(Source.of(path)).name == expected["format"]
        with pytest.raises(StatementError) as err:
            _parsed(path)
        assert str(err.value) == expected["refused"]
        return
    got = _parsed(path)
    assert got == expected
    assert any(line["kind"] == "refund" for line in got["lines"])


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.name)
def test_tiny_chunks_same_answer(path: Path) -> None:
    if "refused" in _expected(path):
        with pytest.raises(StatementError, match="bill_type=trade"):
            _parsed(path, chunk_bytes=64)
        return
    assert _parsed(path, chunk_bytes=64) == _parsed(path)


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.name)
def test_readme_cites_each_fixture(path: Path) -> None:
    readme = path.parent / "README.md"
    assert readme.exists(), f"{path.parent.name}/README.md is missing"
    assert f"`{path.name}`" in readme.read_text(encoding="utf-8"), (
        f"{path.name} is not described in {path.parent.name}/README.md")
