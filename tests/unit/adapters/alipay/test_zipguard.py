"""Bill archive guards: bombs, traversal, too many entries, lies, garbage."""

from __future__ import annotations

import io
import os
import struct
import zipfile

import pytest

from adapters.alipay.zipguard import ZipLimits, check_zip
from gateway.errors import StatementError


def make_zip(entries: dict[str, bytes], *, gbk: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if gbk:   # Alipay: GBK names without the UTF-8 flag (CH §4.6)
                info.filename = name.encode("gbk").decode("cp437")
            zf.writestr(info, data)
    return buf.getvalue()


def test_real_shaped_bill_passes() -> None:
    detail = ("#支付宝业务明细查询\r\n" + "2020,4117,退款,x,1.00\r\n" * 50).encode("gbk")
    check_zip(make_zip({"2088_20240611_业务明细.csv": detail,
                        "2088_20240611_业务明细(汇总).csv": b"#summary\r\n"}, gbk=True))


def test_zip_bomb_ratio() -> None:
    with pytest.raises(StatementError, match="ratio"):
        check_zip(make_zip({"a.csv": b"0" * (20 * 1024 * 1024)}))


def test_total_size_limit() -> None:
    data = make_zip({"a.csv": os.urandom(800_000), "b.csv": os.urandom(800_000)})
    with pytest.raises(StatementError, match="uncompressed size"):
        check_zip(data, limits=ZipLimits(max_total_bytes=1_500_000))


@pytest.mark.parametrize("name", ["../evil.csv", "a/../../evil.csv", "/etc/passwd",
                                  "C:\\x.csv", "..\\..\\x.csv"])
def test_traversal(name: str) -> None:
    with pytest.raises(StatementError, match="unsafe"):
        check_zip(make_zip({name: b"x"}))


def test_too_many_entries() -> None:
    with pytest.raises(StatementError, match="17 entries"):
        check_zip(make_zip({f"{i}.csv": b"x" for i in range(17)}))
    check_zip(make_zip({f"{i}.csv": b"x" for i in range(16)}))


@pytest.mark.parametrize("data", [b"", b"not a zip", b"PK\x03\x04garbage",
                                  make_zip({})])
def test_garbage(data: bytes) -> None:
    with pytest.raises(StatementError):
        check_zip(data)


def test_lying_header_is_caught() -> None:
    """Declared size patched down: the decompressed data no longer matches (CRC/size)."""
    real = make_zip({"a.csv": bytes(range(256)) * 64})
    buf = bytearray(real)
    # Patch the uncompressed size in the central directory entry (offset 24 in it).
    cd = buf.rfind(b"PK\x01\x02")
    struct.pack_into("<I", buf, cd + 24, 100)
    lh = buf.find(b"PK\x03\x04")
    struct.pack_into("<I", buf, lh + 22, 100)
    with pytest.raises(StatementError):
        check_zip(bytes(buf))
