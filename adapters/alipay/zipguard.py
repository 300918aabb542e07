"""Limits on the downloaded Alipay bill ZIP (CH §4.6), checked before the adapter returns it.

Owns one pure function, ``check_zip``: entry count, entry names (no absolute paths, no
``..``, no drive letters; names are GBK without the UTF-8 flag), encryption, declared and
actually decompressed sizes, compression ratio, CRCs. Must not extract to disk, parse the
bill (reconciliation/statements does) or do I/O.
"""

from __future__ import annotations

import io
import zipfile
from typing import Final

from gateway.archives import ArchiveLimits, check_entries
from gateway.errors import StatementError

_CHUNK: Final = 1 << 20


# The shared limits (gateway.archives); the old name stays for callers.
ZipLimits = ArchiveLimits


def check_zip(data: bytes, name: str = "alipay-bill.zip",
              limits: ArchiveLimits | None = None) -> None:
    """Raise ``StatementError`` unless ``data`` is a ZIP within ``limits``.

    Declared sizes are checked first (cheap), then every entry is decompressed in chunks
    and counted, because a header can lie; zipfile checks each entry's CRC at its end.
    """
    limits = limits or ArchiveLimits()
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
        entries = check_entries(infos, name, limits, label="zip guard")
        declared = sum(info.file_size for _, info in entries)
        actual = 0
        for entry, info in entries:
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
