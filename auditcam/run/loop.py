"""The explain loop: explain -> score -> record, batch by batch, into each chunk's shard.

A sample that cannot be read, or whose mask/heatmap makes the metrics meaningless, still gets
its rows, with ``status`` (``error`` / ``invalid``) and ``reason``: nothing is dropped. Records
never pile up in memory: each batch's rows go to the journal of its chunk
(:mod:`auditcam.run.shards`), finished chunks become Parquet shards, and the shards are streamed
into ``samples.parquet``.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from auditcam.cam import Explainer
from auditcam.data import collate, default_workers
from auditcam.errors import InputError, Interrupted
from auditcam.run import distributed
from auditcam.run.device import pin_memory, to_device
from auditcam.run.gallery import Gallery, offer
from auditcam.run.memory import release_memory
from auditcam.run.plan import Batches, Run
from auditcam.run.records import ANALYSIS_COLUMNS, batch_records, samples_schema, score_explanation
from auditcam.run.runfolder import COMPLETE, RunFolder
from auditcam.run.shards import Journal, finish_chunk, journal_path, merge, salvage, scan

CLASSES_MISMATCH = (
    "the model has {outputs} outputs but the class list has {names} names; check `num_classes` and `classes`"
)
LABEL_BEYOND_OUTPUTS = "a label is {label} but the model has only {outputs} outputs; check `num_classes` and the labels"

if TYPE_CHECKING:
    pass


def check_outputs(logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str] | None) -> None:
    n_outputs = logits.shape[1]
    if classes is not None and len(classes) != n_outputs:
        raise InputError(CLASSES_MISMATCH.format(outputs=n_outputs, names=len(classes)), "classes")
    if labels.numel() and int(labels.max()) >= n_outputs:
        raise InputError(LABEL_BEYOND_OUTPUTS.format(label=int(labels.max()), outputs=n_outputs), "num_classes")


def explain_share(
    explainer: Explainer,
    dataset: Any,
    run: Run,
    group: distributed.Group,
    folder: RunFolder,
    methods: Sequence[str],
    classes: Sequence[str] | None,
    target: str,
    reliance_threshold: float,
    device: torch.device,
    num_workers: int | None,
    progress: bool,
    shown: Gallery,
) -> None:
    """Explain this rank's chunks batch by batch into their journals; a finished chunk becomes
    its Parquet shard; ``shown`` keeps this rank's gallery candidates as (position, Exemplar).
    Ctrl-C keeps every finished batch and raises :class:`Interrupted`."""
    layout = run.layout
    mine = run.work[group.rank :: group.world]
    batches = Batches(layout, mine)
    if not batches.n_samples:
        return
    kept = dict(mine)
    schema = samples_schema(dataset.attributes, shard=True)
    if num_workers is None:
        num_workers = default_workers(batches.n_samples, layout.batch_size, group.local_world)
    loader = DataLoader(
        dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate, pin_memory=pin_memory(device)
    )
    journal: Journal | None = None
    chunk, done, checked = -1, 0, False
    bar = tqdm(
        total=batches.n_samples, unit="img", desc="auditing", disable=not (progress and group.leader), file=sys.stderr
    )
    try:
        for positions, batch in zip(batches, loader, strict=True):
            if positions[0] // layout.shard_size != chunk:
                if journal is not None:
                    journal.close()
                    finish_chunk(folder.shards, chunk, schema)
                chunk = positions[0] // layout.shard_size
                path = journal_path(folder.shards, chunk)
                journal = Journal(path, schema, salvage(path, schema) if kept[chunk] else ())
            scored = explanation = None
            ok = batch["ok"]
            if ok.any():
                on_device_batch = to_device(batch, device)
                labels = batch["label"][ok]
                explanation = explainer(on_device_batch["image"], labels.to(device) if target == "label" else None)
                if not checked:
                    check_outputs(explanation.logits, batch["label"], classes)
                    checked = True
                subjects = batch["has_subject"][ok] if "has_subject" in batch else None
                scored = score_explanation(explanation, on_device_batch["mask"], methods, reliance_threshold, subjects)
            records = batch_records(batch, positions, methods, classes, dataset.attributes, scored)
            journal.append(records)
            if explanation is not None:
                offer(shown, records, batch, explanation, methods, dataset.preprocessing)
            done += len(positions)
            bar.update(len(positions))
        if journal is not None:
            journal.close()
            finish_chunk(folder.shards, chunk, schema)
            journal = None
    except KeyboardInterrupt:
        raise Interrupted(run.done + done, layout.n_samples, folder.path) from None
    finally:
        if journal is not None:
            journal.abort()
        bar.close()


def merge_shards(folder: RunFolder, run: Run, attributes: Sequence[str], n_methods: int) -> None:
    """Stream every shard into samples.parquet, mark the run complete, delete the shards."""
    schema = samples_schema(attributes, shard=True)
    missing = scan(folder.shards, run.layout, schema, n_methods).work(run.layout)
    if missing:
        raise RuntimeError(f"shards of chunks {[c for c, _ in missing][:5]} are missing after every process finished")
    merge(folder.shards, run.layout, schema, folder.samples)
    folder.write_manifest({**run.manifest, "state": COMPLETE})
    shutil.rmtree(folder.shards, ignore_errors=True)


def analysis_frame(path: Path, method: str, attributes: Sequence[str]) -> pd.DataFrame:
    """One method's rows with only the columns the analysis reads; repeated text (class names,
    status, group attributes) as categoricals."""
    table = pq.read_table(
        path,
        columns=[*ANALYSIS_COLUMNS, *attributes],
        filters=[("method", "==", method)],
        read_dictionary=["label_name", "status", *attributes],
    )
    frame = table.to_pandas()
    del table
    release_memory()
    return frame


def find_layer(explainer: Explainer, dataset: Any, device: torch.device) -> None:
    """Let the explainer find its layer on the first readable sample (when this process
    explained nothing, e.g. a resumed finished run with no gallery)."""
    for position in range(min(len(dataset), 64)):
        item = dataset[position]
        if "image" in item:
            explainer(item["image"][None].to(device))
            return
