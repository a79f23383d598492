"""Shards on disk: fixed batch grid, journals that survive a torn tail, scans that delete what
cannot be read, and a merge that streams the shards in order."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from auditcam.errors import InputError
from auditcam.run.records import POSITION, samples_schema
from auditcam.run.shards import (
    Journal,
    Layout,
    default_shard_size,
    finish_chunk,
    journal_path,
    merge,
    salvage,
    scan,
    shard_path,
)

SCHEMA = samples_schema(("site",), shard=True)


def _rows(positions, methods=("gradcam",)) -> pa.RecordBatch:
    """Shard rows for ``positions`` (one per method), subject_share = position / 100."""
    data = []
    for p in positions:
        for m in methods:
            row = dict.fromkeys(SCHEMA.names)
            row.update({POSITION: p, "id": f"s{p}", "method": m, "label": p % 3, "subject_share": p / 100})
            data.append(row)
    return pa.RecordBatch.from_pylist(data, schema=SCHEMA)


def test_batches_keep_their_place_on_the_grid():
    layout = Layout(n_samples=10, batch_size=2, shard_size=4)
    assert layout.n_shards == 3
    assert [list(b) for b in layout.batches(0)] == [[0, 1], [2, 3]]
    assert [list(b) for b in layout.batches(1, done=2)] == [[6, 7]]
    assert [list(b) for b in layout.batches(2)] == [[8, 9]]
    with pytest.raises(InputError, match="multiple of the batch size"):
        Layout(10, 4, 6)


def test_default_shard_size_is_a_bounded_multiple_of_the_batch():
    assert default_shard_size(12, 4) == 4
    assert default_shard_size(100_000, 32) == 32 * 49  # about 64 shards
    assert default_shard_size(10_000_000, 32) == 32 * 128  # at most 128 batches
    assert default_shard_size(0, 8) == 8


def test_a_torn_journal_keeps_every_whole_batch(tmp_path):
    path = tmp_path / "shard-000000.arrows"
    journal = Journal(path, SCHEMA)
    for start in (0, 2, 4):
        journal.append(_rows([start, start + 1]))
    journal.abort()  # killed: no end-of-stream marker
    assert [b.num_rows for b in salvage(path, SCHEMA)] == [2, 2, 2]
    data = path.read_bytes()
    path.write_bytes(data[:-40])  # the last batch half written
    kept = salvage(path, SCHEMA)
    assert [b.column(POSITION).to_pylist() for b in kept] == [[0, 1], [2, 3]]
    # continuing the journal rewrites the whole batches and appends after them
    journal = Journal(path, SCHEMA, kept)
    journal.append(_rows([4, 5]))
    journal.close()
    assert [p for b in salvage(path, SCHEMA) for p in b.column(POSITION).to_pylist()] == [0, 1, 2, 3, 4, 5]


def test_a_journal_of_another_schema_holds_nothing(tmp_path):
    path = tmp_path / "j.arrows"
    other = pa.schema([("x", pa.int64())])
    journal = Journal(path, other)
    journal.append(pa.record_batch([pa.array([1])], schema=other))
    journal.close()
    assert salvage(path, SCHEMA) == []


def test_scan_deletes_what_cannot_be_read_and_merge_streams_in_order(tmp_path):
    layout = Layout(n_samples=10, batch_size=2, shard_size=4)
    for c, positions in ((0, [0, 1, 2, 3]), (2, [8, 9])):
        journal = Journal(journal_path(tmp_path, c), SCHEMA)
        journal.append(_rows(positions))
        journal.close()
        finish_chunk(tmp_path, c, SCHEMA)
    Journal(journal_path(tmp_path, 1), SCHEMA, [_rows([4, 5])]).abort()  # chunk 1: one batch in
    shard_path(tmp_path, 1).write_bytes(b"PAR1 no footer")  # a partial shard from a crash
    (tmp_path / ".shard-000001.parquet.tmp").write_bytes(b"PAR1")
    progress = scan(tmp_path, layout, SCHEMA, n_methods=1)
    assert progress.done == {0, 2} and progress.journals == {1: 2}
    assert progress.dropped == ("shard-000001.parquet",)
    assert not shard_path(tmp_path, 1).exists() and not (tmp_path / ".shard-000001.parquet.tmp").exists()
    assert progress.work(layout) == [(1, 2)] and progress.samples_done(layout) == 8
    journal = Journal(journal_path(tmp_path, 1), SCHEMA, salvage(journal_path(tmp_path, 1), SCHEMA))
    journal.append(_rows([6, 7]))
    journal.close()
    finish_chunk(tmp_path, 1, SCHEMA)
    assert not journal_path(tmp_path, 1).exists()
    seen = []
    merge(tmp_path, layout, SCHEMA, tmp_path / "samples.parquet", on_table=lambda t: seen.append(t.num_rows))
    merged = pq.read_table(tmp_path / "samples.parquet")
    assert POSITION not in merged.column_names and seen == [4, 4, 2]
    assert merged.column("id").to_pylist() == [f"s{p}" for p in range(10)]


def test_a_journal_whose_only_batch_was_in_flight_is_deleted_without_a_report(tmp_path):
    """Killed while its first batch was written: nothing saved is lost, so resuming warns of nothing."""
    layout = Layout(n_samples=4, batch_size=2, shard_size=4)
    path = journal_path(tmp_path, 0)
    Journal(path, SCHEMA, [_rows([0, 1])]).close()
    path.write_bytes(path.read_bytes()[:-40])  # the batch torn
    assert salvage(path, SCHEMA) == []
    progress = scan(tmp_path, layout, SCHEMA, n_methods=1)
    assert progress.dropped == () and progress.journals == {} and not path.exists()
    assert progress.work(layout) == [(0, 0)]


def test_a_shard_with_missing_rows_is_not_done(tmp_path):
    layout = Layout(n_samples=4, batch_size=2, shard_size=4)
    pq.write_table(pa.Table.from_batches([_rows([0, 1])]), shard_path(tmp_path, 0))
    progress = scan(tmp_path, layout, SCHEMA, n_methods=1)
    assert progress.done == frozenset() and progress.dropped == ("shard-000000.parquet",)


def test_a_failed_write_is_one_clear_error_and_leaves_no_partial_file(tmp_path):
    Journal(journal_path(tmp_path, 0), SCHEMA, [_rows([0, 1])]).close()
    (tmp_path / "shard-000000.parquet").mkdir()  # the rename target cannot be replaced
    with pytest.raises(InputError, match=r"cannot write .*shard-000000.parquet .*rerun with `resume`"):
        finish_chunk(tmp_path, 0, SCHEMA)
    assert not list(tmp_path.glob(".*.tmp"))
    assert len(salvage(journal_path(tmp_path, 0), SCHEMA)) == 1  # the journal is intact
