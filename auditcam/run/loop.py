"""The explain loop: explain -> score -> record, batch by batch, into each chunk's shard.

A sample that cannot be read, or whose mask/heatmap makes the metrics meaningless, still gets
its rows, with ``status`` (``error`` / ``invalid``) and ``reason``: nothing is dropped. Records
never pile up in memory: each batch's rows go to the journal of its chunk
(:mod:`auditcam.run.shards`), finished chunks become Parquet shards, and the shards are streamed
into ``samples.parquet``.
"""

from __future__ import annotations

import functools
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
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
from auditcam.run.records import (
    ANALYSIS_COLUMNS,
    MULTILABEL_ANALYSIS_COLUMNS,
    ScoredLabels,
    batch_records,
    multilabel_records,
    samples_schema,
    score_explanation,
    score_labels,
)
from auditcam.run.runfolder import COMPLETE, RunFolder
from auditcam.run.shards import Journal, finish_chunk, journal_path, merge, salvage, scan

CLASSES_MISMATCH = (
    "the model has {outputs} outputs but the class list has {names} names; check `num_classes` and `classes`"
)
LABEL_BEYOND_OUTPUTS = "a label is {label} but the model has only {outputs} outputs; check `num_classes` and the labels"
TARGET_BEYOND_OUTPUTS = "{error}; check `num_classes` and the labels"
NO_TRUE_LABEL = "no true label to explain"
NONE_PREDICTED = "no label predicted at probability >= {threshold:g}"

if TYPE_CHECKING:
    pass


def check_outputs(logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str] | None) -> None:
    """The model's outputs match the class list and cover every label (``InputError`` naming
    ``classes`` or ``num_classes`` otherwise)."""
    n_outputs = logits.shape[1]
    if classes is not None and len(classes) != n_outputs:
        raise InputError(CLASSES_MISMATCH.format(outputs=n_outputs, names=len(classes)), "classes")
    if labels.numel() and int(labels.max()) >= n_outputs:
        raise InputError(LABEL_BEYOND_OUTPUTS.format(label=int(labels.max()), outputs=n_outputs), "num_classes")


def _explain(explainer: Explainer, images: torch.Tensor, targets: torch.Tensor | None = None, **how: Any) -> Any:
    """``explainer(images, targets, ...)``; a true label beyond the model's outputs is an
    ``InputError`` naming ``num_classes``."""
    try:
        return explainer(images, targets, **how)
    except InputError as exc:
        if exc.parameter != "targets":
            raise
        raise InputError(TARGET_BEYOND_OUTPUTS.format(error=exc), "num_classes") from None


def padded_labels(labels: Sequence[Sequence[int]]) -> torch.Tensor:
    """(N, k) targets of samples' label lists, -1 after each sample's last (k >= 1)."""
    k = max([1, *(len(row) for row in labels)])
    return torch.tensor([[*row, *[-1] * (k - len(row))] for row in labels], dtype=torch.long).reshape(len(labels), k)


def _sample_pictures(batch: dict[str, Any], heatmaps: torch.Tensor) -> Callable[[int], tuple]:
    """Sample ``u``'s model input, [0, 1] heatmap and mask (u counts every sample of the batch)."""
    readable = np.cumsum(batch["ok"].numpy()) - 1
    return lambda u: (batch["image"][readable[u]], heatmaps[readable[u]], batch["mask"][readable[u]])


def _labelled(
    batch: dict[str, Any], explainer: Explainer, on_device: dict[str, Any], how: dict[str, Any]
) -> tuple[ScoredLabels, Callable[[int], tuple]]:
    """Explain and score a multi-label batch's readable samples, every target from one forward
    pass: the scored (sample, label) pairs and pair ``p``'s model input, [0, 1] heatmap and mask."""
    ok = batch["ok"].tolist()
    true = [labels for labels, good in zip(batch["labels"], ok, strict=True) if good]
    images = on_device["image"]
    if how["target"] == "label":
        explanation = _explain(explainer, images, padded_labels(true).to(images.device))
    else:
        explanation = explainer(images, threshold=how["threshold"])
    flat = torch.tensor([c for labels in batch["labels"] for c in labels], dtype=torch.long)
    check_outputs(explanation.logits, flat, how["classes"])
    scored = score_labels(explanation, on_device, how["methods"], how["reliance_threshold"], how["threshold"])
    heatmaps = explanation.normalised(how["methods"][0])
    blank = torch.zeros(batch["image"].shape[-2:], dtype=torch.bool)

    def pictures(p: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        j, index = int(scored.sample[p]), int(scored.mask_index[p])
        mask = batch["masks"][index] if index >= 0 else blank
        return batch["image"][j], heatmaps[j, int(scored.slot[p])], mask

    return scored, pictures


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
    threshold: float | None = None,
) -> None:
    """Explain this rank's chunks batch by batch into their journals; a finished chunk becomes
    its Parquet shard; ``shown`` keeps this rank's gallery candidates as ((position, class),
    Exemplar). ``threshold``: a multi-label run (sigmoid outputs, labels predicted at it; None:
    single-label). Ctrl-C keeps every finished batch and raises :class:`Interrupted`."""
    layout = run.layout
    mine = run.work[group.rank :: group.world]
    batches = Batches(layout, mine)
    if not batches.n_samples:
        return
    kept = dict(mine)
    multilabel = threshold is not None
    schema = samples_schema(dataset.attributes, shard=True, multilabel=multilabel)
    how = {
        "target": target,
        "threshold": threshold,
        "classes": classes,
        "methods": methods,
        "reliance_threshold": reliance_threshold,
    }
    skipped = NO_TRUE_LABEL if target == "label" or threshold is None else NONE_PREDICTED.format(threshold=threshold)
    if num_workers is None:
        num_workers = default_workers(batches.n_samples, layout.batch_size, group.local_world)
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=functools.partial(collate, multilabel=multilabel),
        pin_memory=pin_memory(device),
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
            ok = batch["ok"]
            scored = pictures = None
            if multilabel:
                if ok.any():
                    scored, pair_pictures = _labelled(batch, explainer, to_device(batch, device), how)
                records = multilabel_records(batch, positions, methods, classes, dataset.attributes, scored, skipped)
                if scored is not None:
                    paired = records.column("label").is_valid().to_numpy(zero_copy_only=False)[:: len(methods)]
                    pair_of = np.cumsum(paired) - 1
                    pictures = lambda u, p=pair_of, f=pair_pictures: f(int(p[u]))  # noqa: E731
            else:
                if ok.any():
                    on_device_batch = to_device(batch, device)
                    labels = batch["label"][ok]
                    explanation = _explain(
                        explainer, on_device_batch["image"], labels.to(device) if target == "label" else None
                    )
                    if not checked:
                        check_outputs(explanation.logits, batch["label"], classes)
                        checked = True
                    subjects = batch["has_subject"][ok] if "has_subject" in batch else None
                    scored = score_explanation(
                        explanation, on_device_batch["mask"], methods, reliance_threshold, subjects
                    )
                    pictures = _sample_pictures(batch, explanation.normalised(methods[0]))
                records = batch_records(batch, positions, methods, classes, dataset.attributes, scored)
            journal.append(records)
            if pictures is not None:
                offer(shown, records, pictures, len(methods), dataset.preprocessing)
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


def merge_shards(
    folder: RunFolder, run: Run, attributes: Sequence[str], n_methods: int, *, multilabel: bool = False
) -> None:
    """Stream every shard into samples.parquet (a multi-label run's keeps ``position``), mark the
    run complete, delete the shards."""
    schema = samples_schema(attributes, shard=True, multilabel=multilabel)
    missing = scan(folder.shards, run.layout, schema, n_methods, fixed=not multilabel).work(run.layout)
    if missing:
        raise RuntimeError(f"shards of chunks {[c for c, _ in missing][:5]} are missing after every process finished")
    merge(folder.shards, run.layout, schema, folder.samples, keep_position=multilabel)
    folder.write_manifest({**run.manifest, "state": COMPLETE})
    shutil.rmtree(folder.shards, ignore_errors=True)


def analysis_frame(path: Path, method: str, attributes: Sequence[str], *, multilabel: bool = False) -> pd.DataFrame:
    """One method's rows with only the columns the analysis reads (of a multi-label run also
    each row's sample and its true and predicted labels); repeated text (class names, status,
    group attributes) as categoricals."""
    extra = MULTILABEL_ANALYSIS_COLUMNS if multilabel else ()
    table = pq.read_table(
        path,
        columns=[*ANALYSIS_COLUMNS, *extra, *attributes],
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
