"""Statement parsers, one module per format, behind one entry point.

``read_batches(source)`` detects the format and yields polars batches (``BATCH_SCHEMA``)
for the matching engine; ``read_lines(source)`` yields ``StatementLine`` objects for small
files and golden tests. Bad lines go to a ``BadLines`` log (threshold -> ``TooManyBadLines``).
This package parses; it never matches or touches the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from gateway.errors import StatementError
from gateway.models import Route
from reconciliation.statements import alipay, balance, unionpay, wechat
from reconciliation.statements.archive import ArchiveLimits
from reconciliation.statements.base import CHUNK_BYTES, BadLines, Source, TooManyBadLines
from reconciliation.statements.model import (
    BATCH_SCHEMA,
    COLUMNS,
    LineKind,
    StatementLine,
    empty_batch,
    lines_of,
)

__all__ = [
    "BATCH_SCHEMA", "COLUMNS", "FORMATS", "BadLines", "Format", "LineKind", "Source",
    "StatementLine", "TooManyBadLines", "detect", "empty_batch", "read_batches", "read_lines",
]

Parser = Callable[..., Iterator[pl.DataFrame]]


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    route: Route
    sniff: Callable[[bytes, Source], bool]
    parse: Parser


FORMATS: tuple[Format, ...] = (
    Format(alipay.FORMAT, Route.ALIPAY, lambda h, s: alipay.sniff(h, s.name),
           alipay.parse_batches),
    Format(wechat.FORMAT_TRADE, Route.WECHATPAY, wechat.sniff_trade,
           wechat.parse_trade_batches),
    Format(wechat.FORMAT_FUNDFLOW, Route.WECHATPAY, wechat.sniff_fundflow,
           wechat.parse_fundflow_batches),
    Format(unionpay.FORMAT, Route.BANKCARD, unionpay.sniff, unionpay.parse_batches),
    Format(balance.FORMAT, Route.BALANCE, balance.sniff, balance.parse_batches),
)


def detect(source: Source, route: Route | None = None) -> Format:
    head = source.head(4096)
    for fmt in FORMATS:
        if route is not None and fmt.route != route:
            continue
        if fmt.sniff(head, source):
            return fmt
    hint = f" for route {route.value}" if route else ""
    raise StatementError(f"unrecognised statement format{hint}", file=source.name)


def read_batches(source: Source | str | Path | bytes, bad: BadLines | None = None, *,
                 route: Route | None = None, chunk_bytes: int = CHUNK_BYTES,
                 limits: ArchiveLimits | None = None) -> Iterator[pl.DataFrame]:
    src = source if isinstance(source, Source) else Source.of(source)
    fmt = detect(src, route)
    yield from fmt.parse(src, bad if bad is not None else BadLines(),
                         chunk_bytes=chunk_bytes, limits=limits)


def read_lines(source: Source | str | Path | bytes, bad: BadLines | None = None, *,
               route: Route | None = None, chunk_bytes: int = CHUNK_BYTES
               ) -> Iterator[StatementLine]:
    for batch in read_batches(source, bad, route=route, chunk_bytes=chunk_bytes):
        yield from lines_of(batch)
