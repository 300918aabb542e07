"""The checks every channel archive passes before a byte of it is unpacked.

Shared by the Alipay adapter (its bill download, ``adapters.alipay.zipguard``) and the
statement readers (``reconciliation.statements.archive``), so a hostile archive meets one
set of rules wherever it arrives: entry count, entry names (no absolute paths, no
``..``, no drive letters, no NUL; Alipay writes GBK names without the UTF-8 flag, CH
§4.6), no encrypted entries, declared total size, and compression ratio. Declared sizes
can lie: callers also count what actually comes out while they decompress.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from gateway.errors import StatementError


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    max_entries: int = 16
    # A 10M-line Alipay detail file is ~2.1 GB uncompressed; keep room, refuse bombs.
    max_total_bytes: int = 8 * 1024**3
    # Real bills deflate ~5-15x; bombs 1000x and more. Taken over max(compressed, 1 KiB),
    # so tiny entries never trip it.
    max_ratio: int = 200


UTF8_FLAG = 0x800   # general-purpose flag bit 11: the name is UTF-8 (APPNOTE 4.4.4)


def decode_name(raw: bytes, flags: int) -> str:
    """An entry name's bytes as a person should read them.

    With the UTF-8 flag set, UTF-8. Without it, UTF-8 when the bytes are valid UTF-8 (a
    bill unzipped and zipped again by a tool that writes UTF-8 without the flag), else
    GBK, which is what Alipay writes (CH §4.6; QuantumNous/new-api's
    ``decodeZipEntryName`` reads the Alipay ZIP the same way). GBK Chinese is almost never
    valid UTF-8 (the bill names' bytes are not), so the order is safe; cp437, the ZIP
    default, when neither reads.
    """
    if flags & UTF8_FLAG:
        return raw.decode("utf-8", errors="replace")
    for encoding in ("utf-8", "gbk"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("cp437")


def entry_name(info: zipfile.ZipInfo) -> str:
    """``decode_name`` of an entry zipfile has read: without the UTF-8 flag zipfile decoded
    the raw bytes as cp437, so encoding back to cp437 recovers them."""
    if info.flag_bits & UTF8_FLAG:
        return info.filename
    try:
        raw = info.filename.encode("cp437")
    except UnicodeEncodeError:      # a name set by hand, not read from an archive
        return info.filename
    return decode_name(raw, info.flag_bits)


def unsafe_entry_name(name: str) -> bool:
    posix = name.replace("\\", "/")
    return (not name or posix.startswith("/") or ".." in PurePosixPath(posix).parts
            or (len(name) > 1 and name[1] == ":") or "\x00" in name)


def check_entries(infos: Sequence[zipfile.ZipInfo], archive: str, limits: ArchiveLimits,
                  *, label: str = "archive guard") -> list[tuple[str, zipfile.ZipInfo]]:
    """(name, info) of each file entry, or ``StatementError`` (``label: why``) for the
    first rule the archive's directory breaks. Directory entries are skipped."""
    if len(infos) > limits.max_entries:
        raise StatementError(f"{label}: {len(infos)} entries (max {limits.max_entries})",
                             file=archive)
    entries: list[tuple[str, zipfile.ZipInfo]] = []
    declared = 0
    for info in infos:
        name = entry_name(info)
        if unsafe_entry_name(name):
            raise StatementError(f"{label}: unsafe entry name {name!r}", file=archive)
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            raise StatementError(f"{label}: encrypted entry {name!r}", file=archive)
        declared += info.file_size
        if declared > limits.max_total_bytes:
            raise StatementError(f"{label}: uncompressed size above "
                                 f"{limits.max_total_bytes} bytes", file=archive)
        if info.file_size > limits.max_ratio * max(info.compress_size, 1024):
            raise StatementError(f"{label}: compression ratio of {name!r} above "
                                 f"{limits.max_ratio}", file=archive)
        entries.append((name, info))
    return entries
