"""Plan a run: open (or resume) its folder, lay the dataset out in batches and chunks, and
hand every process the batches it still has to explain.

A run folder can be resumed after a crash (:mod:`auditcam.run.runfolder`); the plan is made on
rank 0 and shared with every process under torchrun (:mod:`auditcam.run.distributed`).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditcam.errors import InputError
from auditcam.run.records import samples_schema
from auditcam.run.runfolder import COMPLETE, RunFolder, new_manifest, open_run
from auditcam.run.shards import Layout, default_shard_size, scan

DEFAULT_BATCH_SIZE = 32
SAMPLES_MISSING = "`run_dir` {path}: the finished run's samples.parquet is missing; pass `overwrite` to start again"
SHARD_DELETED = "deleted {path}: unreadable or incomplete; its samples are explained again"


@contextlib.contextmanager
def run_folder(run_dir: str | Path | None) -> Iterator[tuple[RunFolder, Path | None]]:
    """The run folder, or a temporary one (deleted if the audit fails, else with its result)."""
    if run_dir is not None:
        yield RunFolder(Path(run_dir)), None
        return
    path = Path(tempfile.mkdtemp(prefix="auditcam-run-"))
    try:
        yield RunFolder(path), path
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


@dataclass(frozen=True)
class Run:
    """What rank 0 found in the run folder and every rank works from."""

    layout: Layout
    work: list[tuple[int, int]]  # (chunk, samples already in its journal) of each unfinished chunk
    complete: bool  # samples.parquet is merged: nothing to explain
    done: int  # samples explained before this run
    manifest: dict[str, Any]


def prepare(
    folder: RunFolder,
    dataset: Any,
    methods: Sequence[str],
    make_fingerprint: Callable[[int, int], dict[str, Any]],
    batch_size: int | None,
    shard_size: int | None,
    resume: bool,
    overwrite: bool,
    multilabel: bool = False,
) -> Run:
    """Open the run folder (rank 0): refuse, clear or resume it, then plan the remaining work
    (``multilabel``: the records of a multi-label run, a varying number of rows per sample)."""
    recorded = folder.manifest() if resume and folder.path.is_dir() else None
    then = (recorded or {}).get("layout", {})
    batch = batch_size or then.get("batch_size") or DEFAULT_BATCH_SIZE
    shard = shard_size or (then.get("shard_size") if batch == then.get("batch_size") else None)
    layout = Layout(len(dataset), batch, shard or default_shard_size(len(dataset), batch))
    found = make_fingerprint(layout.batch_size, layout.shard_size)
    manifest = open_run(folder, found, resume=resume, overwrite=overwrite)
    folder.create()
    if manifest is None:
        manifest = new_manifest(found, layout.to_dict())
        folder.write_manifest(manifest)
    if manifest.get("state") == COMPLETE:
        if not folder.samples.is_file():
            raise InputError(SAMPLES_MISSING.format(path=folder.path), "run_dir")
        return Run(layout, [], True, layout.n_samples, manifest)
    schema = samples_schema(dataset.attributes, shard=True, multilabel=multilabel)
    progress = scan(folder.shards, layout, schema, len(methods), fixed=not multilabel)
    for name in progress.dropped:
        warnings.warn(SHARD_DELETED.format(path=folder.shards / name), stacklevel=2)
    return Run(layout, progress.work(layout), False, progress.samples_done(layout), manifest)


class Batches:
    """The batch sampler of one rank: the remaining batches of its chunks, in order."""

    def __init__(self, layout: Layout, work: Sequence[tuple[int, int]]) -> None:
        self.layout, self.work = layout, list(work)
        self.n_samples = sum(len(layout.chunk(c)) - done for c, done in self.work)

    def __iter__(self) -> Iterator[list[int]]:
        for c, done in self.work:
            for positions in self.layout.batches(c, done):
                yield list(positions)

    def __len__(self) -> int:
        return sum(len(range(0, len(self.layout.chunk(c)) - done, self.layout.batch_size)) for c, done in self.work)
