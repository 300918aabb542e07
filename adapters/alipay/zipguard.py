"""Limits on the downloaded Alipay bill ZIP (CH §4.6), checked before the adapter returns it.

Owns one pure function, ``check_zip``: entry count, entry names (no absolute paths, no
``..``, no drive letters; names are GBK without the UTF-8 flag), encryption, declared and
actually decompressed sizes, compression ratio, CRCs. Must not extract to disk, parse the
bill (reconciliation/statements does) or do I/O.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final

from gateway.errors import StatementError

_CHUNK: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class ZipLimits:
    max_entries: int = 16
    # A 10M-line Alipay detail file is ~2.1 GB uncompressed; keep room, refuse bombs.
    max_total_bytes: int = 8 * 1024**3
    max_ratio: int = 200          # real bills deflate ~5-15x; bombs 1000x and more
    # (the ratio is taken over max(compressed, 1 KiB), so tiny entries never trip it)


def entry_name(info: zipfile.ZipInfo) -> str:
    """The name as Alipay wrote it: GBK bytes that zipfile decoded as cp437 (no flag)."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("gbk")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return info.filename


def _unsafe(name: str) -> bool:
    posix = name.replace("\\", "/")
    path = PurePosixPath(posix)
    return (not name or posix.startswith("/") or ".." in path.parts
            or (len(name) > 1 and name[1] == ":") or "\x00" in name)


def check_zip(data: bytes, name: str = "alipay-bill.zip",
              limits: ZipLimits | None = None) -> None:
    """Raise ``StatementError`` unless ``data`` is a ZIP within ``limits``.

    Declared sizes are checked first (cheap), then every entry is decompressed in chunks
    and counted, because a header can lie; zipfile checks each entry's CRC at its end.
    """
    limits = limits or ZipLimits()
    if not data.startswith(b"PK"):
        raise StatementError("not a ZIP archive", file=name)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise StatementError(f"not a readable ZIP archive ({exc})", file=name) from None
    with archive:
        infos = archive.infolist()
        if not infos:
            raise StatementError("empty ZIP archive", file=name)
        if len(infos) > limits.max_entries:
            raise StatementError(f"zip guard: {len(infos)} entries (max "
                                 f"{limits.max_entries})", file=name)
        declared = 0
        for info in infos:
            entry = entry_name(info)
            if _unsafe(entry):
                raise StatementError(f"zip guard: unsafe entry name {entry!r}", file=name)
            if info.flag_bits & 0x1:
                raise StatementError(f"zip guard: encrypted entry {entry!r}", file=name)
            declared += info.file_size
            if declared > limits.max_total_bytes:
                raise StatementError("zip guard: uncompressed size above "
                                     f"{limits.max_total_bytes} bytes", file=name)
            if info.file_size > limits.max_ratio * max(info.compress_size, 1024):
                raise StatementError(f"zip guard: compression ratio of {entry!r} above "
                                     f"{limits.max_ratio}", file=name)
        actual = 0
        for info in infos:
            entry = entry_name(info)
            try:
                with archive.open(info) as stream:
                    while chunk := stream.read(_CHUNK):
                        actual += len(chunk)
                        if actual > declared:
                            raise StatementError("zip guard: entries larger than declared",
                                                 file=name)
            except StatementError:
                raise
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError,
                    EOFError, OSError) as exc:
                raise StatementError(f"zip guard: entry {entry!r} unreadable ({exc})",
                                     file=name) from None
