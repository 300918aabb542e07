"""The archive checks shared by the Alipay adapter and the statement readers."""

from __future__ import annotations

import io
import zipfile

import pytest

from gateway.archives import (
    ArchiveLimits,
    check_entries,
    decode_name,
    entry_name,
    unsafe_entry_name,
)
from gateway.errors import StatementError


def infos(entries: dict[str, bytes]) -> list[zipfile.ZipInfo]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return zipfile.ZipFile(io.BytesIO(buf.getvalue())).infolist()


def test_gbk_names_are_decoded_and_directories_skipped() -> None:
    listed = infos({"bills/": b"", "bills/x.csv": b"x"})
    # What zipfile makes of Alipay's GBK name bytes without the UTF-8 flag (CH §4.6).
    listed[1].filename = "bills/业务明细.csv".encode("gbk").decode("cp437")
    listed[1].flag_bits &= ~0x800
    got = check_entries(listed, "a.zip", ArchiveLimits())
    assert [name for name, _ in got] == ["bills/业务明细.csv"]
    assert entry_name(got[0][1]) == "bills/业务明细.csv"


@pytest.mark.parametrize("name", ["", "/etc/passwd", "a/../../x", "C:\\x", "..\\x", "a\x00b"])
def test_unsafe_names(name: str) -> None:
    assert unsafe_entry_name(name)


def test_encrypted_entry_refused_with_the_callers_label() -> None:
    entries = infos({"a.csv": b"x"})
    entries[0].flag_bits |= 0x1
    with pytest.raises(StatementError, match=r"zip guard: encrypted entry 'a\.csv'"):
        check_entries(entries, "a.zip", ArchiveLimits(), label="zip guard")


def test_declared_total_and_ratio() -> None:
    with pytest.raises(StatementError, match="uncompressed size above 100 bytes"):
        check_entries(infos({"a": b"1" * 60, "b": b"2" * 60}), "a.zip",
                      ArchiveLimits(max_total_bytes=100))
    with pytest.raises(StatementError, match="compression ratio"):
        check_entries(infos({"a": b"0" * 300_000}), "a.zip", ArchiveLimits(max_ratio=10))


@pytest.mark.parametrize(("raw", "flags", "shown"), [
    ("2088_20240611_业务明细(汇总).csv".encode("gbk"), 0, "2088_20240611_业务明细(汇总).csv"),
    # Unzipped and zipped again by a tool that writes UTF-8 without setting the flag: the
    # GBK reading would be mojibake ("涓氬姟...") and the 汇总 file would pass as a detail.
    ("2088_20240611_业务明细(汇总).csv".encode(), 0, "2088_20240611_业务明细(汇总).csv"),
    ("账务明细.csv".encode(), 0x800, "账务明细.csv"),
    (b"\x81\x20.csv", 0, "\u00fc .csv"),           # neither UTF-8 nor GBK: cp437 stays
])
def test_names_decoded_for_people(raw: bytes, flags: int, shown: str) -> None:
    assert decode_name(raw, flags) == shown
