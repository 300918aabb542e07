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


def entry_name(info: zipfile.ZipInfo) -> str:
    """The name as the channel wrote it: GBK bytes that zipfile decoded as cp437 when
    the UTF-8 flag is missing."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("gbk")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return info.filename


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
