"""A run's classified rows, in report order: a frame in memory, or files on disk.

Why: a 10M x 10M run classifies into ~10M rows, ~1.3 GB as a polars frame (four
identifier columns of 15-23 characters). Holding them all in memory was most of that
run's peak RSS, while nothing that uses them needs them all at once: the counts come
from the summary, persisting reads the discrepancies (~1%), and the reports filter,
cap or stream. So a big run keeps its rows in Arrow IPC files (LZ4) that are already in
report order (``matching.classify_spilled`` writes them a key range at a time), and
readers take a lazy scan. A small run keeps its frame; both are read the same way.

The files live in a directory of their own, removed by ``close`` (or when the object is
collected, or at exit, whichever comes first).
"""

from __future__ import annotations

import shutil
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl


class RunRows:
    """The rows of one run. ``scan()`` is how to read them; ``frame()`` loads them all."""

    def __init__(self, frame: pl.DataFrame | None = None, *,
                 files: Sequence[Path] = (), directory: Path | None = None,
                 schema: pl.Schema | None = None) -> None:
        if frame is None and schema is None:
            raise ValueError("RunRows needs a frame, or files and their schema")
        self._frame = frame
        self._files = list(files)
        self._schema = frame.schema if frame is not None else schema
        self._cleanup = (weakref.finalize(self, shutil.rmtree, str(directory), True)
                         if directory is not None else None)

    @property
    def on_disk(self) -> bool:
        return self._frame is None

    @property
    def files(self) -> list[Path]:
        return list(self._files)

    def scan(self) -> pl.LazyFrame:
        """The rows, lazily, in report order (filters and column selections are pushed
        down to the files)."""
        if self._frame is not None:
            return self._frame.lazy()
        self._check_open()
        if not self._files:
            return pl.DataFrame(schema=self._schema).lazy()
        return pl.scan_ipc(self._files)

    def frame(self) -> pl.DataFrame:
        """Every row in memory (for small runs and tests; a big run's rows are large)."""
        if self._frame is not None:
            return self._frame
        return self.scan().collect()

    def pieces(self) -> Iterator[pl.DataFrame]:
        """The rows in report order, one file's worth at a time (an in-memory run: its
        frame). Always at least one frame, possibly empty, with the rows' schema."""
        if self._frame is not None:
            yield self._frame
            return
        self._check_open()
        if not self._files:
            yield pl.DataFrame(schema=self._schema)
        for path in self._files:
            yield pl.read_ipc(path)

    def _check_open(self) -> None:
        if self._cleanup is not None and not self._cleanup.alive:
            raise ValueError("the rows of this run were closed")

    def close(self) -> None:
        """Remove the files (an in-memory frame is left as it is)."""
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> RunRows:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
