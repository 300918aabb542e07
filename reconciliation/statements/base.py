"""Shared machinery of the statement parsers: sources, chunked streaming, bad-line log,
and the vectorised cell converters (amounts, Beijing times) used on the hot path.

Files are read in chunks cut at line ends and parsed by polars a chunk at a time, so a
10M-line bill never sits in memory as text or as Python objects. A line that cannot be
read becomes a ``StatementError`` (file, line) in the ``BadLines`` log; the run fails only
when the log passes its threshold, and then every bad line seen is reported. This module
knows no channel; the per-format modules do.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

import polars as pl

from gateway.errors import StatementError
from reconciliation.statements.model import LineKind

# 16 MiB of text per polars parse: large enough that per-chunk overhead is noise (~60k
# lines), small enough that the transient copies of a chunk stay far below the budget.
CHUNK_BYTES: Final = 16 * 1024 * 1024
# Full-width brackets in headers (CH §4.6, §5.7: "（元）" in real files, "(元)" in copies).
_HEADER_FOLD: Final = str.maketrans({"（": "(", "）": ")", "\ufeff": None, "`": None})


class TooManyBadLines(StatementError):
    """More bad lines than the run accepts; ``errors`` lists every one seen."""

    def __init__(self, errors: Sequence[StatementError], limit: int) -> None:
        super().__init__(f"{len(errors)} bad statement lines (limit {limit})",
                         file=errors[0].file if errors else None)
        self.errors = list(errors)


@dataclass
class BadLines:
    """Collects bad lines; raises ``TooManyBadLines`` once more than ``limit`` are seen."""

    limit: int = 100
    errors: list[StatementError] = field(default_factory=list)
    # Sources are parsed in parallel threads (``job.load_statements``) into one log.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, error: StatementError) -> None:
        with self._lock:
            self.errors.append(error)
            if len(self.errors) > self.limit:
                self.sort()
                raise TooManyBadLines(self.errors, self.limit)

    def sort(self) -> None:
        """File then line order, whatever order parallel parsers reported in."""
        self.errors.sort(key=lambda e: (e.file or "", e.line or 0))

    def drop_bad(self, df: pl.DataFrame, problem: pl.Expr, source: str) -> pl.DataFrame:
        """Rows of ``df`` for which ``problem`` (a string expression, null when the row is
        fine) is null; each other row is logged with its reason and line number."""
        df = df.with_columns(problem.alias("_problem"))
        broken = df.filter(pl.col("_problem").is_not_null())
        if not broken.height:
            return df.drop("_problem")
        # Only as many as it takes to pass the threshold are turned into objects.
        room = max(self.limit + 1 - len(self.errors), 0) + 1
        for line, why in broken.select("line", "_problem").head(room).iter_rows():
            self.add(StatementError(str(why), file=source, line=int(line)))
        return df.filter(pl.col("_problem").is_null()).drop("_problem")


@dataclass(frozen=True, slots=True)
class Source:
    """A named statement input: a file on disk or bytes (an adapter's download)."""

    name: str
    path: Path | None = None
    data: bytes | None = None

    @classmethod
    def of(cls, value: str | Path | bytes, name: str | None = None) -> Source:
        if isinstance(value, bytes):
            return cls(name or "<download>", data=value)
        p = Path(value)
        return cls(name or p.name, path=p)

    def open(self) -> IO[bytes]:
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None  # noqa: S101 - constructed by ``of``
        try:
            return self.path.open("rb")
        except OSError as exc:
            raise StatementError(f"cannot open ({exc.strerror})", file=self.name) from exc

    def size(self) -> int | None:
        if self.data is not None:
            return len(self.data)
        return self.path.stat().st_size if self.path and self.path.exists() else None

    def head(self, n: int = 4096) -> bytes:
        with self.open() as fh:
            return fh.read(n)


def iter_chunks(stream: IO[bytes], size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Chunks of ``stream`` that end at a line end (except possibly the last)."""
    carry = b""
    while True:
        block = stream.read(size)
        if not block:
            if carry:
                yield carry
            return
        block = carry + block
        cut = block.rfind(b"\n")
        if cut < 0:
            carry = block
            continue
        carry = block[cut + 1:]
        yield block[:cut + 1]


def fold_header(cell: str) -> str:
    return cell.translate(_HEADER_FOLD).strip()


def split_csv_line(text: str, separator: str = ",") -> list[str]:
    """Cells of one unquoted delimited line. With QUOTE_NONE the csv module only splits
    on the separator, but it raises on a stray carriage return inside a line (found by
    fuzzing): a plain split keeps such a cell, and the cell checks report the line."""
    return text.rstrip("\r\n").split(separator) if text else []


@dataclass
class Table:
    """Where a delimited bill's columns are: the header (folded) -> index."""

    header: list[str]
    header_line: int

    def index(self, name: str, source: str) -> int:
        try:
            return self.header.index(name)
        except ValueError:
            raise StatementError(f"column {name!r} missing from header",
                                 file=source, line=self.header_line) from None


@dataclass
class Sections:
    """A bill cut into preamble lines, the table header, row chunks and trailer lines."""

    preamble: list[tuple[int, str]] = field(default_factory=list)
    trailer: list[tuple[int, str]] = field(default_factory=list)


def stream_sections(
    stream: IO[bytes], source: str, *, encoding: str,
    is_header: Callable[[str], bool], end_markers: Sequence[bytes],
    sections: Sections, chunk_bytes: int = CHUNK_BYTES, separator: str = ",",
) -> Iterator[tuple[Table, int, bytes]]:
    """Yield (table, first line number, raw row bytes) for the data rows of a bill.

    Lines before the header go to ``sections.preamble``; from the first line starting
    with one of ``end_markers`` on, lines go to ``sections.trailer`` (decoded).
    """
    table: Table | None = None
    line_no = 0            # lines consumed so far
    in_trailer = False
    for chunk in iter_chunks(stream, chunk_bytes):
        pos = 0
        while table is None and pos < len(chunk):
            nl = chunk.find(b"\n", pos)
            end = len(chunk) if nl < 0 else nl + 1
            line_no += 1
            text = chunk[pos:end].decode(encoding, errors="replace").rstrip("\r\n")
            pos = end
            if is_header(text):
                table = Table([fold_header(c) for c in
                               split_csv_line(fold_header(text), separator)], line_no)
            else:
                sections.preamble.append((line_no, text))
        if table is None:
            continue
        if not in_trailer and pos < len(chunk):
            data = chunk[pos:]
            cut = _find_marker(data, end_markers)
            rows = data if cut < 0 else data[:cut]
            if rows:
                yield table, line_no + 1, rows
                line_no += rows.count(b"\n") + (0 if rows.endswith(b"\n") else 1)
            if cut < 0:
                continue
            in_trailer = True
            pos += cut
        if in_trailer:
            for raw in chunk[pos:].splitlines():
                line_no += 1
                sections.trailer.append((line_no, raw.decode(encoding, errors="replace")))
    if table is None:
        raise StatementError("no table header found (not this format, or empty)",
                             file=source)


def _find_marker(data: bytes, markers: Sequence[bytes]) -> int:
    best = -1
    for m in markers:
        if data.startswith(m):
            return 0
        i = data.find(b"\n" + m)
        if i >= 0 and (best < 0 or i + 1 < best):
            best = i + 1
    return best


def read_rows(data: bytes, first_line: int, ncols: int, wanted: dict[str, int], *,
              source: str, bad: BadLines, encoding: str = "utf8",
              replacements: Sequence[tuple[bytes, bytes]] = (),
              separator: str = ",") -> pl.DataFrame:
    """Parse raw row bytes into string columns ``wanted`` (name -> index) plus ``line``.

    Fast path: polars over the bytes (GBK files: key columns are ASCII by the channels'
    rules, so they are read as lossy UTF-8 after ``replacements`` rewrite the few Chinese
    cell values we test; any U+FFFD left in a wanted column sends the chunk to the exact
    path). Exact path (a line with the wrong number of cells, or non-ASCII keys): decode
    properly, check each line, report the bad ones, parse the rest.
    """
    names = list(wanted)
    idx = [wanted[n] for n in names]
    df: pl.DataFrame | None = None
    if encoding == "utf8" or replacements or encoding == "gbk":
        fast = data
        for old, new in replacements:
            fast = fast.replace(old, new)
        # polars tolerates surplus cells when columns are selected: a line with the wrong
        # cell count shows in the chunk's separator total (C-speed count), and sends the
        # chunk to the exact path, which names each bad line.
        n_lines = fast.count(b"\n") + (0 if fast.endswith(b"\n") else 1)
        if fast.count(separator.encode()) != (ncols - 1) * n_lines:
            fast = b""
        try:
            if not fast:
                raise pl.exceptions.ComputeError("cell count")
            df = pl.read_csv(fast, has_header=False, separator=separator, quote_char=None,
                             infer_schema=False, empty_string_is_null=False,
                             encoding="utf8-lossy", columns=idx,
                             new_columns=[f"c{i}" for i in range(ncols)],
                             truncate_ragged_lines=False)
        except pl.exceptions.PolarsError:
            df = None
        if df is not None:
            df = df.rename({f"c{i}": n for n, i in zip(names, idx, strict=True)}).select(names)
            if encoding != "utf8" and df.select(
                    pl.any_horizontal(pl.col(names).str.contains("\ufffd", literal=True))
                    .any()).item():
                df = None
    if df is None:
        df = _exact_rows(data, first_line, ncols, names, idx, source=source, bad=bad,
                         encoding=encoding, replacements=replacements, separator=separator)
    else:
        df = df.with_row_index("line", offset=first_line).with_columns(
            pl.col("line").cast(pl.Int64))
    # Blank lines: only rows whose first cell is tiny can be blank, so the full check
    # (a stripped copy of every cell) runs only when there is such a row.
    if not df.select((pl.col(names[0]).str.len_bytes() < 4).any()).item():
        return df
    blank = pl.all_horizontal(pl.col(names).str.strip_chars() == "")
    return df.filter(~blank)


def _exact_rows(data: bytes, first_line: int, ncols: int, names: list[str], idx: list[int],
                *, source: str, bad: BadLines, encoding: str,
                replacements: Sequence[tuple[bytes, bytes]], separator: str) -> pl.DataFrame:
    enc = "gbk" if encoding == "gbk" else "utf-8"
    cols: dict[str, list[str]] = {n: [] for n in names}
    lines: list[int] = []
    last = data.count(b"\n")
    for offset, raw in enumerate(data.split(b"\n")):
        line = first_line + offset
        if offset == last and not raw:
            break
        cooked = raw
        for old, new in replacements:
            cooked = cooked.replace(old, new)
        try:
            text = cooked.decode(enc).rstrip("\r")
        except UnicodeDecodeError:
            bad.add(StatementError(f"not valid {enc} text", file=source, line=line))
            continue
        if not text.strip():
            continue
        cells = split_csv_line(text, separator)
        if len(cells) != ncols:
            bad.add(StatementError(f"{len(cells)} cells, expected {ncols}", file=source,
                                   line=line))
            continue
        for n, i in zip(names, idx, strict=True):
            cols[n].append(cells[i])
        lines.append(line)
    return pl.DataFrame({**cols, "line": lines},
                        schema={**dict.fromkeys(names, pl.String()), "line": pl.Int64()})


# --- vectorised cell converters -------------------------------------------------------

AMOUNT_RE: Final = r"^[+-]?\d{1,13}(\.\d{1,2})?$"
_DECIMAL: Final = re.compile(r"([+-]?)(\d{1,18})(?:\.(\d+))?")


def clean(col: str, *, backtick: bool = False) -> pl.Expr:
    """Trim a cell: tabs/spaces padding (Alipay), and the leading backtick (WeChat)."""
    e = pl.col(col).str.strip_chars()
    if backtick:
        e = e.str.strip_chars_start("`").str.strip_chars()
    return e


def amount_minor(col: str | pl.Expr) -> pl.Expr:
    """A cleaned yuan string ("-12.30") -> signed fen (Int64); null when malformed."""
    return decimal_units(col, 2)


def decimal_units(col: str | pl.Expr, places: int) -> pl.Expr:
    """A cleaned decimal string with at most ``places`` decimals -> signed integer count of
    10^-places units (Int64), by string arithmetic (no floats); null when malformed. WeChat
    writes 手续费 with 5 decimals (``-0.27000``, addendum §8): ``decimal_units(c, 5)``."""
    s = pl.col(col) if isinstance(col, str) else col
    valid = s.str.contains(rf"^[+-]?\d{{1,13}}(\.\d{{1,{places}}})?$")
    body = s.str.strip_chars_start("+-")
    parts = body.str.split_exact(".", 1)
    whole = parts.struct.field("field_0").cast(pl.Int64, strict=False)
    frac = parts.struct.field("field_1").fill_null("").str.pad_end(places, "0").cast(
        pl.Int64, strict=False)
    value = whole * 10**places + frac
    return pl.when(~valid).then(None).when(s.str.starts_with("-")).then(-value).otherwise(value)


def parse_units(text: str, places: int) -> int:
    """A decimal string (a summary or footer figure) -> integer 10^-places units, exactly,
    by string arithmetic; ``ValueError`` unless it is a plain decimal with at most
    ``places`` decimals."""
    m = _DECIMAL.fullmatch(text.strip())
    if m is None or len(m.group(3) or "") > places:
        raise ValueError(f"not a decimal with at most {places} places: {text!r}")
    scale: int = 10**places
    units = int(m.group(2)) * scale + int((m.group(3) or "").ljust(places, "0") or 0)
    return -units if m.group(1) == "-" else units


def format_units(units: int, places: int) -> str:
    """Integer 10^-places units -> the decimal string a channel would print."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**places)
    return f"{sign}{whole}.{frac:0{places}d}" if places else f"{sign}{whole}"


def beijing_time(col: str | pl.Expr, fmt: str = "%Y-%m-%d %H:%M:%S") -> pl.Expr:
    """A Beijing wall-clock cell -> aware UTC (same rule as gateway.clock.from_beijing:
    fixed UTC+8, China has no DST)."""
    cell = pl.col(col) if isinstance(col, str) else col
    return (cell.str.strptime(pl.Datetime("us"), fmt, strict=False)
            .dt.offset_by("-8h").dt.replace_time_zone("UTC"))


def to_batch(df: pl.DataFrame, *, route: str, source: str, kind: pl.Expr,
             refund_no: pl.Expr, refund_id: pl.Expr, order_no: pl.Expr, trade_no: pl.Expr,
             amount: pl.Expr, status: pl.Expr, time: pl.Expr,
             extra: Mapping[str, pl.Expr] | None = None) -> pl.DataFrame:
    """The ``BATCH_SCHEMA`` frame of a parsed chunk: the one place the columns are named.
    Refund keys are kept on refund lines only (a payment's order number is not a key)."""
    refund = kind == LineKind.REFUND.value
    return df.select(
        pl.lit(route).alias("route"), kind.alias("kind"),
        pl.when(refund).then(refund_no).otherwise(None).alias("channel_refund_no"),
        pl.when(refund).then(refund_id).otherwise(None).alias("channel_refund_id"),
        order_no.alias("merchant_order_no"), trade_no.alias("channel_trade_no"),
        amount.abs().alias("amount_minor"), pl.lit("CNY").alias("currency"),
        status.alias("status"), time.alias("time"), pl.lit(source).alias("source"),
        pl.col("line"), *[e.alias(n) for n, e in (extra or {}).items()])


def none() -> pl.Expr:
    """A null string column (a key the format does not carry)."""
    return pl.lit(None, pl.String())


ISO_FORMAT: Final = "%Y-%m-%dT%H:%M:%S%.f%:z"


def iso_time_fast(col: str) -> pl.Expr:
    """``YYYY-MM-DDTHH:MM:SS+hh:mm`` (refund service export, wallet ledger) -> UTC, by slicing:
    a fixed-format naive parse minus the offset. Null for any other shape."""
    s = pl.col(col)
    offset = (s.str.slice(20, 2).cast(pl.Int64, strict=False) * 60
              + s.str.slice(23, 2).cast(pl.Int64, strict=False))
    sign = pl.when(s.str.slice(19, 1) == "-").then(-1).otherwise(1)
    naive = s.str.slice(0, 19).str.strptime(pl.Datetime("us"), "%Y-%m-%dT%H:%M:%S",
                                            strict=False)
    moment = naive - pl.duration(minutes=sign * offset)
    return (pl.when((s.str.len_bytes() == 25) & (s.str.slice(22, 1) == ":"))
            .then(moment).otherwise(None).dt.replace_time_zone("UTC"))


def iso_time(col: str) -> pl.Expr:
    """Any ISO 8601 time with an offset (``Z``, fractions, space separator) -> UTC."""
    s = pl.col(col).str.replace(r"Z$", "+00:00").str.replace(" ", "T")
    return s.str.to_datetime(ISO_FORMAT, strict=False, time_zone="UTC", time_unit="us")
