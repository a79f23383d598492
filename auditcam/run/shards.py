"""Per-sample records on disk while an audit runs: shards that survive a crash, and the stream
merge into ``samples.parquet``.

The dataset's positions are cut into fixed *chunks* of ``shard_size`` samples (a multiple of the
batch size), so every batch lies inside one chunk at the same place in every run, whatever the
number of processes or interruptions — the same batches give the same numbers. Chunk ``c`` is
written by one process:

- while it runs, to the journal ``shard-c.arrows``, an Arrow IPC stream flushed after every
  batch: a reader recovers every whole batch before a torn tail, so a killed run loses at most
  the batch in flight;
- when its last batch is in, to ``shard-c.parquet``, written to a temporary name and renamed
  into place (a Parquet file without its footer is unreadable, so none is ever half there);
  then the journal is deleted.

:func:`scan` tells a resumed run which chunks are done and how far each journal got, deleting
what cannot be read; :func:`merge` streams the shards, in chunk order, into one Parquet file.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from auditcam.errors import InputError
from auditcam.files import TMP_SUFFIX, replacing
from auditcam.run.records import POSITION

# a chunk holds about this many batches unless the dataset is small or huge (see default_shard_size)
SHARDS_PER_RUN = 64
MAX_BATCHES_PER_SHARD = 128
WRITE_FAILED = "cannot write {path} ({reason}); the finished shards are kept: fix the folder, then rerun with `resume`"
SHARD_NOT_A_MULTIPLE = "`shard_size` {shard} must be a positive multiple of the batch size {batch}"


def default_shard_size(n_samples: int, batch_size: int) -> int:
    """Samples per shard: about :data:`SHARDS_PER_RUN` shards (enough to share among processes),
    at least one batch and at most :data:`MAX_BATCHES_PER_SHARD` batches, a multiple of the batch."""
    batches = math.ceil(n_samples / (SHARDS_PER_RUN * batch_size)) if n_samples else 1
    return batch_size * min(max(batches, 1), MAX_BATCHES_PER_SHARD)


@dataclass(frozen=True)
class Layout:
    """How a run's positions fall into chunks and batches."""

    n_samples: int
    batch_size: int
    shard_size: int

    def __post_init__(self) -> None:
        if self.shard_size < 1 or self.shard_size % self.batch_size:
            raise InputError(SHARD_NOT_A_MULTIPLE.format(shard=self.shard_size, batch=self.batch_size), "shard_size")

    @property
    def n_shards(self) -> int:
        return math.ceil(self.n_samples / self.shard_size)

    def chunk(self, c: int) -> range:
        """The positions of chunk ``c``."""
        return range(c * self.shard_size, min((c + 1) * self.shard_size, self.n_samples))

    def batches(self, c: int, done: int = 0) -> Iterator[range]:
        """The batches of chunk ``c`` after its first ``done`` samples (a multiple of the batch)."""
        positions = self.chunk(c)
        for start in range(positions.start + done, positions.stop, self.batch_size):
            yield range(start, min(start + self.batch_size, positions.stop))

    def to_dict(self) -> dict[str, int]:
        return {"n_samples": self.n_samples, "batch_size": self.batch_size, "shard_size": self.shard_size}


def shard_path(folder: Path, c: int) -> Path:
    return folder / f"shard-{c:06d}.parquet"


def journal_path(folder: Path, c: int) -> Path:
    return folder / f"shard-{c:06d}.arrows"


def salvage(path: Path, schema: pa.Schema) -> list[pa.RecordBatch]:
    """The whole batches at the head of a journal; a torn tail (the batch in flight when the
    process died) and anything after it is dropped. A journal of another schema holds nothing."""
    batches: list[pa.RecordBatch] = []
    try:
        with pa.OSFile(str(path), "rb") as source, pa.ipc.open_stream(source) as reader:
            if not reader.schema.equals(schema, check_metadata=False):
                return []
            while True:
                batches.append(reader.read_next_batch())
    except (StopIteration, OSError, pa.ArrowException):
        pass
    return batches


class Journal:
    """The open journal of one chunk: batches are appended and flushed one at a time."""

    def __init__(self, path: Path, schema: pa.Schema, kept: Sequence[pa.RecordBatch] = ()) -> None:
        """Start the journal at ``path`` with the ``kept`` batches of an earlier run (rewritten
        under a temporary name and renamed over the old journal, torn tail and all)."""
        self.path = path
        try:
            with replacing(path) as tmp:  # the file stays open, under its new name, for appending
                self._sink = pa.OSFile(str(tmp), "wb")
                self._writer = pa.ipc.new_stream(self._sink, schema)
                for batch in kept:
                    self._writer.write_batch(batch)
                self._sink.flush()
        except OSError as exc:
            self.abort()
            raise InputError(WRITE_FAILED.format(path=path, reason=exc.strerror or exc), "run_dir") from None

    def append(self, batch: pa.RecordBatch) -> None:
        try:
            self._writer.write_batch(batch)
            self._sink.flush()
        except OSError as exc:
            self.abort()
            raise InputError(WRITE_FAILED.format(path=self.path, reason=exc.strerror or exc), "run_dir") from None

    def close(self) -> None:
        self._writer.close()
        self._sink.close()

    def abort(self) -> None:
        """Close without caring whether the stream ends cleanly (a resumed run salvages it)."""
        for closing in (getattr(self, "_writer", None), getattr(self, "_sink", None)):
            if closing is not None:
                with contextlib.suppress(Exception):
                    closing.close()


def write_parquet(path: Path, tables: Callable[[pq.ParquetWriter], None], schema: pa.Schema) -> None:
    """Write a Parquet file through ``tables(writer)`` under a temporary name, then rename it into
    place: readers see the old file or the whole new one, never a file without its footer."""
    try:
        with replacing(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
            tables(writer)
    except OSError as exc:
        raise InputError(WRITE_FAILED.format(path=path, reason=exc.strerror or exc), "run_dir") from None


def finish_chunk(folder: Path, c: int, schema: pa.Schema) -> Path:
    """Turn chunk ``c``'s closed journal into its Parquet shard, then delete the journal."""
    journal, shard = journal_path(folder, c), shard_path(folder, c)
    table = pa.Table.from_batches(salvage(journal, schema), schema=schema)
    write_parquet(shard, lambda writer: writer.write_table(table), schema)
    journal.unlink(missing_ok=True)
    return shard


def _samples(rows: int, positions: Callable[[], pa.Array], n_methods: int, fixed: bool) -> int | None:
    """How many whole samples ``rows`` rows hold: ``n_methods`` rows each (``fixed``), else (a
    multi-label run: one row per explained label and method) the distinct ``positions()``; None
    when the rows do not make whole samples."""
    if rows % n_methods:
        return None
    if fixed:
        return rows // n_methods
    return len(pc.unique(positions())) if rows else 0


def _readable_shard(path: Path, schema: pa.Schema, size: int, n_methods: int, fixed: bool) -> bool:
    try:
        meta = pq.read_metadata(path)
        if not meta.schema.to_arrow_schema().equals(schema, check_metadata=False):
            return False
        positions = lambda: pq.read_table(path, columns=[POSITION]).column(POSITION)  # noqa: E731
        return _samples(meta.num_rows, positions, n_methods, fixed) == size
    except (OSError, pa.ArrowException):
        return False


@dataclass(frozen=True)
class Progress:
    """What a run folder holds: the finished chunks, and the samples done in each journal."""

    done: frozenset[int]
    journals: dict[int, int]
    dropped: tuple[str, ...]  # files that could not be read and were deleted

    def samples_done(self, layout: Layout) -> int:
        return sum(len(layout.chunk(c)) for c in self.done) + sum(self.journals.values())

    def work(self, layout: Layout) -> list[tuple[int, int]]:
        """(chunk, samples already done) of every unfinished chunk, in order."""
        return [(c, self.journals.get(c, 0)) for c in range(layout.n_shards) if c not in self.done]


def scan(folder: Path, layout: Layout, schema: pa.Schema, n_methods: int, *, fixed: bool = True) -> Progress:
    """Check every shard and journal in ``folder``: a shard that cannot be read or has the wrong
    rows, a journal with no whole batch and any temporary file are deleted; a journal whose
    chunk has its shard is stale and deleted too; a complete journal becomes its shard.
    ``fixed``: every sample has one row per method (not so in a multi-label run)."""
    done: set[int] = set()
    journals: dict[int, int] = {}
    dropped: list[str] = []
    for tmp in folder.glob(f".*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
    for c in range(layout.n_shards):
        size = len(layout.chunk(c))
        shard, journal = shard_path(folder, c), journal_path(folder, c)
        if shard.exists():
            if _readable_shard(shard, schema, size, n_methods, fixed):
                done.add(c)
                journal.unlink(missing_ok=True)
                continue
            dropped.append(shard.name)
            shard.unlink()
        if journal.exists():
            batches = salvage(journal, schema)
            rows = sum(batch.num_rows for batch in batches)
            samples = _samples(
                rows, lambda b=batches: pa.chunked_array([x.column(POSITION) for x in b]), n_methods, fixed
            )
            if samples == size:  # complete, killed before its shard was written
                finish_chunk(folder, c, schema)
                done.add(c)
            elif samples and samples % layout.batch_size == 0:
                journals[c] = samples
            else:  # a journal without one whole batch held nothing: no loss worth reporting
                dropped.extend([journal.name] if rows else [])
                journal.unlink()
    stray = {p.name for p in folder.glob("shard-*")} - {
        p.name for c in range(layout.n_shards) for p in (shard_path(folder, c), journal_path(folder, c))
    }
    for name in sorted(stray):
        dropped.append(name)
        (folder / name).unlink()
    return Progress(frozenset(done), journals, tuple(dropped))


def merge(
    folder: Path,
    layout: Layout,
    shard_schema: pa.Schema,
    out: Path,
    on_table: Callable[[pa.Table], None] | None = None,
    *,
    keep_position: bool = False,
) -> None:
    """Stream every shard, in chunk order, into the Parquet file ``out`` (without ``position``
    unless ``keep_position``, as a multi-label run keeps it): one shard in memory at a time.
    ``on_table`` sees each shard's table (with ``position``)."""
    schema = shard_schema if keep_position else shard_schema.remove(shard_schema.get_field_index(POSITION))

    def write(writer: pq.ParquetWriter) -> None:
        for c in range(layout.n_shards):
            table = pq.read_table(shard_path(folder, c), schema=shard_schema)
            if on_table is not None:
                on_table(table)
            kept = table if keep_position else table.drop_columns([POSITION])
            writer.write_table(kept.replace_schema_metadata(schema.metadata))

    write_parquet(out, write, schema)
