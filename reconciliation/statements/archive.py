"""Safe opening of statement archives (Alipay ZIP, WeChat gzip): the only unpacking code.

Guards against hostile or broken archives before and while streaming: the directory
checks shared with the Alipay adapter (``gateway.archives``: entry count, names, total
declared size, ratio), then what actually comes out, because headers can lie. Nothing is
extracted to disk; entries are streamed.
"""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Final, Protocol

from gateway.archives import ArchiveLimits, check_entries, entry_name
from gateway.errors import StatementError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["GZIP_MAGIC", "ZIP_MAGIC", "ArchiveLimits", "ZipReader", "open_gzip", "open_zip"]

GZIP_MAGIC: Final = b"\x1f\x8b"
ZIP_MAGIC: Final = b"PK\x03\x04"


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _Guarded(io.RawIOBase):
    """A read-only stream that fails once more than ``limit`` bytes come out of it."""

    def __init__(self, inner: _Readable, limit: int, name: str, why: str) -> None:
        self._inner, self._limit, self._name, self._why = inner, limit, name, why
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._inner.read(len(view))
        except (EOFError, OSError, zlib.error, zipfile.BadZipFile) as exc:
            # A truncated or corrupt stream (found by fuzzing: a bare gzip header).
            raise StatementError(f"corrupt or truncated archive: {exc}",
                                 file=self._name) from exc
        self.count += len(data)
        if self.count > self._limit:
            raise StatementError(f"archive guard: {self._why}", file=self._name)
        n = len(data)
        view[:n] = data
        return n


class ZipReader:
    """A checked ZIP: ``entries`` lists (decoded name, info); ``open`` streams one entry."""

    def __init__(self, zf: zipfile.ZipFile, archive: str, limits: ArchiveLimits) -> None:
        self._zf, self.archive, self._limits = zf, archive, limits
        self.entries: list[tuple[str, zipfile.ZipInfo]] = check_entries(
            zf.infolist(), archive, limits)

    def open(self, info: zipfile.ZipInfo) -> IO[bytes]:
        """Stream one entry; reading past its declared size (a lying header) fails."""
        limit = min(info.file_size, self._limits.max_total_bytes)
        raw = self._zf.open(info)
        return io.BufferedReader(_Guarded(raw, limit, f"{self.archive}!{entry_name(info)}",
                                          "entry larger than declared"), 1 << 20)


@contextmanager
def open_zip(stream: IO[bytes], archive: str,
             limits: ArchiveLimits | None = None) -> Iterator[ZipReader]:
    try:
        zf = zipfile.ZipFile(stream)
    except zipfile.BadZipFile as exc:
        raise StatementError(f"not a readable ZIP archive ({exc})", file=archive) from exc
    with zf:
        yield ZipReader(zf, archive, limits or ArchiveLimits())


def open_gzip(stream: IO[bytes], archive: str, compressed_size: int | None,
              limits: ArchiveLimits | None = None) -> IO[bytes]:
    """Stream a gzip member with a size cap derived from the compressed size and ratio."""
    limits = limits or ArchiveLimits()
    cap = limits.max_total_bytes
    if compressed_size is not None:
        cap = min(cap, limits.max_ratio * max(compressed_size, 1024))
    inner = gzip.GzipFile(fileobj=stream, mode="rb")
    return io.BufferedReader(_Guarded(inner, cap, archive,
                                      "gzip expands past size/ratio limits"), 1 << 20)
