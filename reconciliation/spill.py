"""Both sides of a reconciliation run, collected as they are parsed: in memory while the
run is small, in hash buckets on disk once it is not.

Why: a 10M x 10M run holds ~20M input rows. Kept in memory until the join, they (and
the buckets cut from them) took 4.3 GiB, more than twice the budget. Here each part is
split by a hash of its refund number the moment it arrives and appended to its bucket's
buffer; the buffers are written to Arrow IPC files (LZ4) whenever they hold more than
``flush_rows`` rows, so memory holds one parsed chunk and the buffers, never the inputs.
Each bucket is then read back and classified on its own (every key lands in exactly one
bucket, so that is the whole classification in another row order).

Statement lines without a refund number (an id only) cannot be bucketed yet: they are
kept aside (normally none) and numbered from the platform side's id before bucketing.
The directory is removed by ``close`` whatever happened.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Final, Literal

import polars as pl

from reconciliation.statements.model import ENGINE_SCHEMA

Side = Literal["platform", "statement"]
SIDES: Final[tuple[Side, ...]] = ("platform", "statement")
_HASH_SEED: Final = 7


def bucket_of(n: int) -> pl.Expr:
    return (pl.col("channel_refund_no").hash(seed=_HASH_SEED) % n).cast(pl.Int32)


class RunParts:
    """Collects the parts of both sides; see the module docstring.

    ``spill_rows``: above this many rows in all, switch to buckets on disk (``None``:
    never). ``buckets``: how many. ``directory``: where the spill directory is made
    (default: the system's temporary directory).
    """

    def __init__(self, platform_schema: dict[str, pl.DataType], *, spill_rows: int | None,
                 buckets: int, routes: list[str] | None = None,
                 directory: Path | None = None, flush_rows: int = 1_000_000) -> None:
        self._schemas: dict[Side, dict[str, pl.DataType]] = {
            "platform": platform_schema, "statement": dict(ENGINE_SCHEMA)}
        self.spill_rows, self.buckets, self.routes = spill_rows, buckets, routes
        self.flush_rows = flush_rows
        self._parent = directory
        self._lock = threading.RLock()   # re-entered when the first spill splits
        self._memory: dict[Side, list[pl.DataFrame]] = {s: [] for s in SIDES}
        self._rows = 0
        self._dir: Path | None = None
        self._buffers: dict[tuple[Side, int], list[pl.DataFrame]] = {}
        self._buffered = 0
        self._files: dict[tuple[Side, int], list[Path]] = {}
        self._names = itertools.count()
        self.unnumbered: list[pl.DataFrame] = []

    @property
    def spilled(self) -> bool:
        return self._dir is not None

    # -- collecting -------------------------------------------------------------------
    def add(self, side: Side, part: pl.DataFrame) -> None:
        """Take one part (thread-safe: both sides arrive from different threads; the
        splitting and the file writes run outside the lock)."""
        if self.routes is not None and part.height:
            keep = part.select(pl.col("route").cast(pl.String).is_in(self.routes)).to_series()
            if not keep.all():   # no copy when every row is wanted (the usual case)
                part = part.filter(keep)
        if not part.height:
            return
        if self._dir is None:
            with self._lock:
                if self._dir is None:
                    self._memory[side].append(part)
                    self._rows += part.height
                    if self.spill_rows is None or self._rows <= self.spill_rows:
                        return
                    self._dir = Path(tempfile.mkdtemp(prefix="recon-spill-",
                                                      dir=self._parent))
                    held = [(s, p) for s in SIDES for p in self._memory[s]]
                    self._memory = {s: [] for s in SIDES}
                    for s, p in held:
                        self._stash(s, self._split(s, p))
                    self._write(self._full())
                    return
        self._stash(side, self._split(side, part))
        self._write(self._full())

    def _split(self, side: Side, part: pl.DataFrame) -> dict[int, pl.DataFrame]:
        if side == "statement":
            missing = part.get_column("channel_refund_no").is_null()
            if missing.any():
                with self._lock:
                    self.unnumbered.append(part.filter(missing))
                part = part.filter(~missing)
        if not part.height:
            return {}
        pieces = part.with_columns(bucket_of(self.buckets).alias("_bucket")).partition_by(
            "_bucket", as_dict=True, include_key=False)
        return {int(str(k)): piece for (k, *_), piece in pieces.items()}

    def _stash(self, side: Side, pieces: dict[int, pl.DataFrame]) -> None:
        with self._lock:
            for k, piece in pieces.items():
                self._buffers.setdefault((side, k), []).append(piece)
                self._buffered += piece.height

    def _full(self) -> dict[tuple[Side, int], list[pl.DataFrame]]:
        """The buffers to write when they hold more than ``flush_rows`` rows (or none)."""
        with self._lock:
            if self._buffered <= self.flush_rows:
                return {}
            full, self._buffers, self._buffered = self._buffers, {}, 0
            return full

    def _write(self, buffers: dict[tuple[Side, int], list[pl.DataFrame]]) -> None:
        if not buffers:
            return
        directory = self._dir
        assert directory is not None  # noqa: S101 - buffers exist only once spilled
        for key, pieces in buffers.items():
            path = directory / f"{key[0]}-{key[1]}-{next(self._names)}.arrow"
            pl.concat(pieces, how="vertical").write_ipc(path, compression="lz4")
            with self._lock:
                self._files.setdefault(key, []).append(path)

    def _drain(self) -> None:
        """Write whatever is buffered (reading back starts after the last ``add``)."""
        with self._lock:
            full, self._buffers, self._buffered = self._buffers, {}, 0
        self._write(full)

    # -- reading back -----------------------------------------------------------------
    def in_memory(self, side: Side) -> list[pl.DataFrame]:
        """The parts of a run that never spilled (consumed)."""
        parts, self._memory[side] = self._memory[side], []
        return parts

    def take(self, side: Side, k: int) -> pl.DataFrame:
        """Bucket ``k`` of ``side`` as one frame; its files are deleted once read."""
        self._drain()
        with self._lock:
            files = self._files.pop((side, k), [])
        frames = [pl.read_ipc(f) for f in files]
        for f in files:
            f.unlink()
        if not frames:
            return pl.DataFrame(schema=self._schemas[side])
        return pl.concat(frames, how="vertical")

    def scan(self, side: Side) -> pl.LazyFrame:
        """Every spilled row of ``side``, lazily (for a few columns of a few keys)."""
        self._drain()
        with self._lock:
            files = [f for (s, _), fs in self._files.items() if s == side for f in fs]
        if not files:
            return pl.DataFrame(schema=self._schemas[side]).lazy()
        return pl.scan_ipc(files)

    def statement_keys(self, numbers: list[str]) -> pl.DataFrame:
        """``route``, ``channel_refund_no`` of today's statement lines with these numbers."""
        wanted = pl.col("channel_refund_no").is_in(numbers)
        if self.spilled:
            return self.scan("statement").filter(wanted).select(
                "route", "channel_refund_no").collect()
        frames = [p.filter(wanted).select("route", "channel_refund_no")
                  for p in self._memory["statement"]]
        return pl.concat(frames) if frames else pl.DataFrame(
            schema={"route": pl.Categorical(), "channel_refund_no": pl.String()})

    def keep(self, frame: pl.DataFrame) -> Path:
        """Write a result piece next to the buckets; read back with ``pl.scan_ipc``."""
        directory = self._dir
        assert directory is not None  # noqa: S101 - results are kept only once spilled
        path = directory / f"result-{next(self._names)}.arrow"
        frame.write_ipc(path, compression="lz4")
        return path

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._buffers, self._files, self.unnumbered = {}, {}, []
        self._memory = {s: [] for s in SIDES}
