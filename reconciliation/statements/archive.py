"""Safe opening of statement archives (Alipay ZIP, WeChat gzip): the only unpacking code.

Guards against hostile or broken archives before and while streaming: entry count, total
uncompressed size, compression ratio (declared *and* actually read, because headers can
lie), path traversal / absolute names. Nothing is extracted to disk; entries are streamed.
Alipay writes entry names in GBK without the UTF-8 flag (CH §4.6); they are re-decoded.
"""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING, Final, Protocol

from gateway.errors import StatementError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

GZIP_MAGIC: Final = b"\x1f\x8b"
ZIP_MAGIC: Final = b"PK\x03\x04"


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    max_entries: int = 16
    max_total_bytes: int = 8 * 1024**3     # a 10M-line Alipay detail file is ~2.1 GB
    max_ratio: int = 200                   # real bills deflate ~5-15x; bombs 1000x+


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


def entry_name(info: zipfile.ZipInfo) -> str:
    """The entry name as the channel wrote it (GBK names lack the UTF-8 flag bit)."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("gbk")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return info.filename


def _check_name(name: str, archive: str) -> None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (len(name) > 1 and name[1] == ":"):
        raise StatementError(f"archive guard: unsafe entry name {name!r}", file=archive)


class ZipReader:
    """A checked ZIP: ``entries`` lists (decoded name, info); ``open`` streams one entry."""

    def __init__(self, zf: zipfile.ZipFile, archive: str, limits: ArchiveLimits) -> None:
        self._zf, self.archive, self._limits = zf, archive, limits
        self.entries: list[tuple[str, zipfile.ZipInfo]] = []
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise StatementError(f"archive guard: {len(infos)} entries (max "
                                 f"{limits.max_entries})", file=archive)
        total = 0
        for info in infos:
            name = entry_name(info)
            _check_name(name, archive)
            if info.is_dir():
                continue
            total += info.file_size
            if total > limits.max_total_bytes:
                raise StatementError("archive guard: uncompressed size above "
                                     f"{limits.max_total_bytes} bytes", file=archive)
            if info.file_size > limits.max_ratio * max(info.compress_size, 1024):
                raise StatementError(f"archive guard: compression ratio of {name!r} above "
                                     f"{limits.max_ratio}", file=archive)
            self.entries.append((name, info))

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
