"""The downloaded WeChat bill (CH §5.7): un-gzip within limits and check ``hash_value``.

Owns one pure function, ``open_bill``: gzip magic, decompressed size and ratio limits (a
bomb is refused before it fills memory), and the SHA1 of the *un-gzipped* file against
the ``hash_value`` WeChat announced (the SDK does not check it, CH §2.1). Must not do I/O
or parse the CSV (reconciliation/statements does).
"""

from __future__ import annotations

import hashlib
import hmac
import zlib
from dataclasses import dataclass
from typing import Final

from gateway.errors import StatementError

GZIP_MAGIC: Final = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class GzipLimits:
    # A 1M-line trade bill is ~300 MB of CSV; keep room, refuse bombs.
    max_bytes: int = 4 * 1024**3
    max_ratio: int = 200          # CSV gzips ~5-15x; bombs 1000x and more
    # (the ratio is taken over max(compressed, 64 KiB), so tiny bills never trip it)


def open_bill(data: bytes, *, hash_type: str, hash_value: str, name: str,
              limits: GzipLimits | None = None) -> bytes:
    """The bill's bytes, un-gzipped and checked; ``StatementError`` otherwise.

    We ask for ``tar_type=GZIP``; an answer that is not gzip is accepted as the plain
    file only if its SHA1 matches (the hash is over the original file either way).
    """
    limits = limits or GzipLimits()
    if hash_type.upper() != "SHA1":
        raise StatementError(f"unsupported hash_type {hash_type[:16]!r}", file=name)
    if not hash_value:
        raise StatementError("the bill answer has no hash_value", file=name)
    plain = _gunzip(data, name, limits) if data.startswith(GZIP_MAGIC) else data
    digest = hashlib.sha1(plain, usedforsecurity=False).hexdigest()
    if not hmac.compare_digest(digest, hash_value.strip().lower()):
        raise StatementError("SHA1 of the bill does not match hash_value "
                             "(truncated or altered download)", file=name)
    return plain


def _gunzip(data: bytes, name: str, limits: GzipLimits) -> bytes:
    cap = min(limits.max_bytes, limits.max_ratio * max(len(data), 64 * 1024))
    out = bytearray()
    rest = data
    # wbits 16+MAX_WBITS: the gzip container; members may be concatenated (RFC 1952).
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = rest
        try:
            while pending and not inflater.eof:
                # max_length >= 1 always (we stop past cap), so output stays bounded
                out += inflater.decompress(pending, cap + 1 - len(out))
                if len(out) > cap:
                    raise StatementError(f"gzip guard: more than {cap} bytes uncompressed "
                                         "(size/ratio limit)", file=name)
                pending = inflater.unconsumed_tail
        except zlib.error as exc:
            raise StatementError(f"not a readable gzip file ({exc})", file=name) from None
        if not inflater.eof:
            raise StatementError("gzip stream truncated", file=name)
        rest = inflater.unused_data
        if not rest.strip(b"\x00"):
            return bytes(out)   # done (trailing NUL padding tolerated)
        if not rest.startswith(GZIP_MAGIC):
            raise StatementError("garbage after the gzip stream", file=name)
