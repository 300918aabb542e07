"""Hostile statement files: fuzzed lines and archives must only ever raise
``StatementError`` (with a line number where there is a line), never another exception;
ZIP bombs, traversal entries, truncated gzip and a wrong encoding are refused quickly.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import time
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import StatementError
from reconciliation.statements import BadLines, TooManyBadLines, read_batches

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "statements"
FILES = sorted(p for p in GOLDEN.iterdir() if not p.name.endswith(".json"))
UNIONPAY = Path(__file__).resolve().parents[1] / "fixtures" / "statements" / "unionpay"
ZM_MEMBER = "INN24061188ZM_777290058110048"


def parse_all(data: bytes, name: str) -> int:
    from reconciliation.statements import Source

    bad = BadLines(limit=10_000)
    rows = 0
    for batch in read_batches(Source.of(data, name), bad):
        rows += batch.height
    for error in bad.errors:
        assert isinstance(error, StatementError)
        assert error.line is None or error.line >= 1   # None: a file-level problem
    return rows


def plain(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


@pytest.mark.parametrize("path", [p for p in FILES if p.suffix != ".zip"], ids=lambda p: p.name)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_text_statements_raise_only_statement_errors(path: Path,
                                                            data: st.DataObject) -> None:
    original = plain(path)
    lines = original.split(b"\n")
    i = data.draw(st.integers(0, len(lines) - 1))
    mutation = data.draw(st.sampled_from(["garbage", "truncate", "cells", "bytes"]))
    if mutation == "garbage":
        lines[i] = data.draw(st.binary(max_size=200))
    elif mutation == "truncate":
        lines = lines[: i + 1]
        lines[-1] = lines[-1][: data.draw(st.integers(0, len(lines[-1])))]
    elif mutation == "cells":
        cells = lines[i].split(b",")
        j = data.draw(st.integers(0, len(cells) - 1))
        cells[j] = data.draw(st.sampled_from([b"", b"`abc", b"1e9", b"-", b"\xff\xfe",
                                              b"99999999999999999999.99", b"\"", b"`"]))
        lines[i] = b",".join(cells)
    else:
        blob = bytearray(b"\n".join(lines))
        for _ in range(data.draw(st.integers(1, 8))):
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
        lines = bytes(blob).split(b"\n")
    with contextlib.suppress(StatementError, TooManyBadLines):
        parse_all(b"\n".join(lines), path.name.removesuffix(".gz"))


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_fuzzed_unionpay_zm_records_raise_only_statement_errors(data: st.DataObject) -> None:
    """UnionPay's fixed-width GBK records (CHANNELS-ADDENDUM §1), bare and zipped: bytes
    flipped (GBK lead bytes, CR/LF, NUL among them), records cut or doubled."""
    blob = bytearray((UNIONPAY / ZM_MEMBER).read_bytes())
    for _ in range(data.draw(st.integers(1, 12))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.sampled_from(
            [0x00, 0x0A, 0x0D, 0x20, 0x81, 0xB2, 0xFE, 0xFF, ord("x"), ord("9")]))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    with contextlib.suppress(StatementError, TooManyBadLines):
        parse_all(bytes(blob), ZM_MEMBER)
    zipped = _zip({ZM_MEMBER: bytes(blob)})
    with contextlib.suppress(StatementError, TooManyBadLines):
        parse_all(zipped, "777290058110048_20240611.zip")


@settings(max_examples=40, deadline=None)
@given(noise=st.binary(min_size=0, max_size=4096))
def test_random_bytes_are_refused_cleanly(noise: bytes) -> None:
    for name in ("x.csv", "x.zip", "x.csv.gz", ZM_MEMBER, "777290058110048_20240611.zip"):
        with contextlib.suppress(StatementError, TooManyBadLines):
            parse_all(noise, name)


def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _refused_quickly(data: bytes, name: str, needle: str) -> None:
    started = time.monotonic()
    with pytest.raises((StatementError, TooManyBadLines)) as err:
        parse_all(data, name)
    assert time.monotonic() - started < 5
    assert needle in str(err.value).lower(), str(err.value)


def test_zip_bomb_refused() -> None:
    bomb = _zip({"2088_20240611_业务明细.csv": b"0" * (300 * 1024 * 1024)})
    _refused_quickly(bomb, "alipay_20240611.zip", "compression ratio")


def test_path_traversal_refused() -> None:
    _refused_quickly(_zip({"../../etc/passwd": b"x", "a.csv": b"x"}),
                     "alipay_20240611.zip", "unsafe entry name")


def test_truncated_gzip_refused() -> None:
    data = (GOLDEN / "wechat_refund_20240611.csv.gz").read_bytes()
    _refused_quickly(data[: len(data) // 2], "wechat_refund.csv.gz", "truncated")


def test_wrong_encoding_refused() -> None:
    text = plain(GOLDEN / "wechat_refund_20240611.csv.gz").decode("utf-8")
    with pytest.raises((StatementError, TooManyBadLines)):
        parse_all(text.encode("utf-16"), "wechat_refund.csv")
