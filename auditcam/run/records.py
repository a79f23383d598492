"""The per-sample records of an audit as Arrow columns: one row per (sample, method), built a
whole batch at a time (no Python loop over rows), in the documented column order of
``samples.parquet``.

Each row also keeps its heatmap average-pooled to a ``GRID`` x ``GRID`` grid
(``heatmap_grid``, float32, row-major; null where there is no heatmap): the strategy discovery
(:mod:`auditcam.stats.strategies`) clusters these without a second pass over the images, in
256 bytes a row. ``strategy`` is filled in after the run (null until then, or when not measured).

Shards carry one more column, ``position`` (the sample's index in the dataset): it orders the
merge and names the samples a resumed run has already done; ``samples.parquet`` drops it.

A multi-label audit writes one row per (sample, explained label, method): ``label`` is that label
(null on a row that explains nothing), ``confidence`` its sigmoid probability, ``pred`` the label
when it is predicted (probability >= the threshold, else null) and ``correct`` whether that
decision is right. Every row also lists the sample's ``true_labels`` and ``pred_labels`` (class
indices), so precision and recall count labels that were never explained, and keeps
``position``, which ties a sample's rows together. A sample with nothing to explain (no true
label, or none predicted) gets one row per method with status :data:`SKIPPED` and the reason.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
import torch.nn.functional as F

from auditcam.scoring import INVALID_REASONS, METRICS, REGISTRY, Metric, score, scored_metrics

POSITION = "position"
GRID = 8  # side of the pooled heatmap grid kept per row
HEATMAP_GRID = "heatmap_grid"
STRATEGY = "strategy"
TEXT = ("id", "image", "method", "label_name", "pred_name", "status", "reason", "note")
SKIPPED = "skipped"  # a multi-label sample with no label to explain
LABEL_LISTS = ("true_labels", "pred_labels")
RECORD_DTYPES: dict[str, str] = {
    "id": "string",
    "image": "string",
    "method": "string",
    "label": "int64",
    "label_name": "string",
    "pred": "Int64",
    "pred_name": "string",
    "correct": "boolean",
    "confidence": "float64",
    "target": "Int64",
    "status": "string",
    "reason": "string",
    "note": "string",
    "has_subject": "boolean",
}
# after the metric columns: the row's strategy (filled by strategy discovery) and its pooled heatmap
STRATEGY_DTYPES: dict[str, str] = {STRATEGY: "string", HEATMAP_GRID: "object"}
# what the analysis reads besides the metric columns and the attributes
_ANALYSED_RECORD_COLUMNS = ("id", "label", "label_name", "pred", "correct", "status", "has_subject")


def dtypes(registry: dict[str, Metric] | None = None) -> dict[str, str]:
    """The pandas dtypes AuditResult.samples has (restored from the Parquet schema's pandas
    metadata): the record columns, one float64 column per scored metric of the registry, then
    the strategy columns."""
    return {**RECORD_DTYPES, **dict.fromkeys(scored_metrics(registry), "float64"), **STRATEGY_DTYPES}


def analysis_columns(registry: dict[str, Metric] | None = None) -> tuple[str, ...]:
    """The columns the analysis reads back, besides the attributes: the record columns it
    needs and every scored metric column the registry aggregates."""
    registry = REGISTRY if registry is None else registry
    return (*_ANALYSED_RECORD_COLUMNS, *(m.column for m in registry.values() if m.scored and m.aggregates))


DTYPES = dtypes()
# a multi-label audit's columns: the explained label may be null, and each row lists the sample's labels
MULTILABEL_DTYPES: dict[str, str] = {
    **{name: "Int64" if name == "label" else dtype for name, dtype in RECORD_DTYPES.items()},
    **dict.fromkeys(LABEL_LISTS, "labels"),
    **{name: dtype for name, dtype in DTYPES.items() if name not in RECORD_DTYPES},
}
ANALYSIS_COLUMNS = analysis_columns()
# what a multi-label analysis reads besides: which rows are one sample, and its true and predicted labels
MULTILABEL_ANALYSIS_COLUMNS = (POSITION, *LABEL_LISTS)
_ARROW = {
    "string": pa.string(),
    "int64": pa.int64(),
    "Int64": pa.int64(),
    "boolean": pa.bool_(),
    "float64": pa.float64(),
    "object": pa.list_(pa.float32()),
    "labels": pa.list_(pa.int64()),
}


def columns(attributes: Sequence[str], *, multilabel: bool = False) -> list[str]:
    """Column order of ``samples.parquet``."""
    return [POSITION, *MULTILABEL_DTYPES, *attributes] if multilabel else [*DTYPES, *attributes]


def samples_schema(attributes: Sequence[str], *, shard: bool = False, multilabel: bool = False) -> pa.Schema:
    """The Arrow schema of ``samples.parquet`` (``shard``: with the leading ``position``, which a
    multi-label audit's samples.parquet keeps), with pandas metadata so ``pd.read_parquet``
    restores the nullable dtypes (Int64, boolean, string)."""
    return _schema(tuple(attributes), shard or multilabel, multilabel)


@functools.lru_cache(maxsize=16)
def _schema(attributes: tuple[str, ...], shard: bool, multilabel: bool = False) -> pa.Schema:
    dtypes = {**(MULTILABEL_DTYPES if multilabel else DTYPES), **dict.fromkeys(attributes, "string")}
    empty = pd.DataFrame(
        {name: pd.Series([], dtype="object" if dtype == "labels" else dtype) for name, dtype in dtypes.items()}
    )
    pandas_meta = pa.Schema.from_pandas(empty, preserve_index=False).metadata
    fields = [pa.field(name, _ARROW[dtype]) for name, dtype in dtypes.items()]
    if shard:
        fields.insert(0, pa.field(POSITION, pa.int64(), nullable=False))
        meta = json.loads(pandas_meta[b"pandas"])
        meta["columns"].insert(
            0,
            {"name": POSITION, "field_name": POSITION, "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
        )
        pandas_meta = {b"pandas": json.dumps(meta).encode()}
    return pa.schema(fields, metadata=pandas_meta)


@dataclass(frozen=True)
class Scored:
    """What the model said about the readable samples of a batch, on the host: predictions
    (K,), and per method a (K, len(METRICS)) block of metrics plus invalid codes (K,)."""

    pred: np.ndarray
    confidence: np.ndarray
    target: np.ndarray
    metrics: np.ndarray  # (methods, K, len(METRICS)) float32
    codes: np.ndarray  # (methods, K) int
    grids: np.ndarray  # (methods, K, GRID * GRID) float32


def score_explanation(
    explanation: Any,
    masks: torch.Tensor,
    methods: Sequence[str],
    reliance_threshold: float,
    subjects: torch.Tensor | None = None,
) -> Scored:
    """Predictions and metrics of every method for one explained batch, copied to the host in
    one transfer (one synchronisation per batch on a GPU); ``subjects`` marks the samples with a
    subject (default: all)."""
    confidence, pred = explanation.logits.float().softmax(dim=1).max(dim=1)
    head = torch.stack([pred.float(), confidence, explanation.targets.float()], dim=1)
    maps = [explanation.maps[method] for method in methods]
    host, metrics, codes, grids = _on_host(head, maps, masks, reliance_threshold, subjects)
    return Scored(
        pred=host[:, 0].astype(np.int64),
        confidence=host[:, 1],
        target=host[:, 2].astype(np.int64),
        metrics=metrics,
        codes=codes,
        grids=grids,
    )


def _on_host(
    head: torch.Tensor,
    maps: Sequence[torch.Tensor],
    masks: torch.Tensor,
    reliance_threshold: float,
    subjects: torch.Tensor | None,
) -> tuple[np.ndarray, ...]:
    """Score each method's (K, H, W) ``maps`` against ``masks`` and pool them to the grid, then
    copy everything with the (K, h) ``head`` columns to the host in one transfer (one
    synchronisation per batch on a GPU): the head (K, h) and, per method, the metrics
    (methods, K, metrics), invalid codes (methods, K) and pooled grids (methods, K, GRID * GRID)."""
    per_method = []
    for method_maps in maps if len(head) else ():
        scores = score(method_maps, masks, reliance_threshold=reliance_threshold, subjects=subjects)
        grid = F.adaptive_avg_pool2d(method_maps.float().unsqueeze(1), GRID).flatten(1)
        metrics = torch.stack([*(scores[name] for name in METRICS), scores["invalid"].float()], dim=1)
        per_method.append(torch.cat([metrics, grid], dim=1))
    host = torch.cat([head, *per_method], dim=1).cpu().numpy()  # (K, h + methods * (metrics + 1 + grid))
    width, columns = len(METRICS) + 1 + GRID * GRID, head.shape[1]
    blocks = host[:, columns:].reshape(len(host), len(maps), width).transpose(1, 0, 2)
    return (
        host[:, :columns],
        blocks[:, :, : len(METRICS)],
        blocks[:, :, len(METRICS)].astype(np.int64),
        np.ascontiguousarray(blocks[:, :, len(METRICS) + 1 :], dtype=np.float32),
    )


def _names(indices: np.ndarray, classes: Sequence[str] | None, absent: np.ndarray | None = None) -> pa.Array:
    """Class names of class indices (the index as text without a class list); null where absent."""
    names = indices.astype(str).astype(object) if classes is None else np.asarray(classes, dtype=object)[indices]
    if absent is not None:
        names[absent] = None
    return pa.array(names.tolist(), type=pa.string())


def _flags(batch: Mapping[str, Any], key: str, default: np.ndarray) -> np.ndarray:
    """A per-item bool column of the batch as numpy (``default`` where the batch has none)."""
    value = batch.get(key)
    if value is None:
        return default
    return value.numpy() if torch.is_tensor(value) else np.asarray(value, dtype=bool)


def batch_records(
    batch: Mapping[str, Any],
    positions: Sequence[int],
    methods: Sequence[str],
    classes: Sequence[str] | None,
    attributes: Sequence[str],
    scored: Scored | None,
) -> pa.RecordBatch:
    """The shard rows of one batch: sample-major, one row per method, in :func:`samples_schema`
    order with ``position`` first. Unreadable samples get NaN metrics and no prediction; a
    readable sample whose metrics are invalid for a method gets status ``invalid`` and the reason;
    one without a subject keeps status ``ok``, ``has_subject`` false and its reason ("no subject")."""
    n, m = len(positions), len(methods)
    ok = batch["ok"].numpy() if torch.is_tensor(batch["ok"]) else np.asarray(batch["ok"], dtype=bool)
    labels = batch["label"].numpy().astype(np.int64)
    pred = np.zeros(n, dtype=np.int64)
    confidence = np.full(n, np.nan)
    target = np.zeros(n, dtype=np.int64)
    metrics = np.full((n, m, len(METRICS)), np.nan)
    codes = np.zeros((n, m), dtype=np.int64)
    grids = np.zeros((n, m, GRID * GRID), dtype=np.float32)
    if scored is not None:
        pred[ok], confidence[ok], target[ok] = scored.pred, scored.confidence, scored.target
        metrics[ok] = scored.metrics.transpose(1, 0, 2)
        codes[ok] = scored.codes.T
        grids[ok] = scored.grids.transpose(1, 0, 2)
    absent = ~ok
    sample = {
        POSITION: pa.array(np.asarray(positions, dtype=np.int64)),
        "id": pa.array(batch["id"], type=pa.string()),
        "image": pa.array(batch["image_path"], type=pa.string()),
        "label": pa.array(labels),
        "label_name": _names(labels, classes),
        "pred": pa.array(pred, mask=absent),
        "pred_name": _names(pred, classes, absent),
        "correct": pa.array(pred == labels, mask=absent),
        "confidence": pa.array(confidence),
        "target": pa.array(target, mask=absent),
        "note": pa.array(batch["note"], type=pa.string()),
        "has_subject": pa.array(_flags(batch, "has_subject", ok)),
        **{a: pa.array([row.get(a) for row in batch["attributes"]], type=pa.string()) for a in attributes},
    }
    status = np.asarray(batch["status"], dtype=object)
    reason = np.asarray(batch["reason"], dtype=object)
    return _assemble(
        sample, status, reason, metrics, codes, grids, absent, methods, samples_schema(attributes, shard=True)
    )


def _assemble(
    units: Mapping[str, pa.Array],
    status: np.ndarray,
    reason: np.ndarray,
    metrics: np.ndarray,
    codes: np.ndarray,
    grids: np.ndarray,
    absent: np.ndarray,
    methods: Sequence[str],
    schema: pa.Schema,
) -> pa.RecordBatch:
    """The rows of ``n`` units (a sample, or a multi-label sample's explained label), each
    repeated once per method: ``units`` holds their per-unit columns; ``metrics`` (n, methods,
    metrics), ``codes`` (n, methods) and ``grids`` (n, methods, GRID * GRID) their scores; a
    nonzero code makes that row ``invalid`` with its reason; ``absent`` units have no heatmap."""
    n, m = len(status), len(methods)
    rows = np.repeat(np.arange(n), m)
    repeated = {name: array.take(rows) for name, array in units.items()}
    status = np.repeat(status, m)
    reason = np.repeat(reason, m)
    flat_codes = codes.ravel()
    invalid = flat_codes != 0
    if invalid.any():
        status[invalid] = "invalid"
        reason[invalid] = [INVALID_REASONS[int(c)] for c in flat_codes[invalid]]
    flat = metrics.reshape(n * m, len(METRICS))
    data = {
        **repeated,
        "method": pa.array(list(methods) * n, type=pa.string()),
        "status": pa.array(status.tolist(), type=pa.string()),
        "reason": pa.array(reason.tolist(), type=pa.string()),
        **{name: pa.array(flat[:, k]) for k, name in enumerate(METRICS)},
        STRATEGY: pa.nulls(n * m, type=pa.string()),
        HEATMAP_GRID: pa.ListArray.from_arrays(
            np.arange(0, n * m * GRID * GRID + 1, GRID * GRID, dtype=np.int32),
            pa.array(grids.ravel()),
            mask=pa.array(np.repeat(absent, m)),
        ),
    }
    return pa.record_batch([data[name] for name in schema.names], schema=schema)


@dataclass(frozen=True)
class ScoredLabels:
    """What a multi-label model said about the readable samples of a batch, on the host: the
    explained (sample, label) pairs — ``sample`` (the readable sample's index) and ``slot`` (the
    target's column in the explanation), in sample order — with the label, its sigmoid
    probability, its subject's index in the batch's ``masks`` (-1: none, ``reason`` says why),
    every method's metrics (methods, pairs, ...), and ``positive`` (readable samples, classes):
    the labels predicted at the threshold."""

    sample: np.ndarray
    slot: np.ndarray
    target: np.ndarray
    confidence: np.ndarray
    mask_index: np.ndarray
    reason: list[str]
    metrics: np.ndarray
    codes: np.ndarray
    grids: np.ndarray
    positive: np.ndarray


def pair_subjects(batch: Mapping[str, Any], sample: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """For each explained (readable sample, label) pair: the index of its subject mask in
    ``batch["masks"]`` (-1: none) and why it has none ('' when it has one). A label of the sample
    has its own mask (or none); another label (a predicted one the sample lacks) has the shared
    mask, if any."""
    labels = [lab for lab, good in zip(batch["labels"], _flags(batch, "ok", np.array([])), strict=True) if good]
    index, reasons = np.full(len(sample), -1, dtype=np.int64), []
    for p, (j, c) in enumerate(zip(sample.tolist(), target.tolist(), strict=True)):
        if c in labels[j]:
            k = labels[j].index(c)
            index[p], reason = batch["mask_of"][j][k], batch["subject_reasons"][j][k]
        else:
            index[p], reason = batch["shared_mask"][j], batch["shared_reason"][j]
        reasons.append("" if index[p] >= 0 else reason)
    return index, reasons


def score_labels(
    explanation: Any,
    batch: Mapping[str, Any],
    methods: Sequence[str],
    reliance_threshold: float,
    threshold: float,
) -> ScoredLabels:
    """The explained (sample, label) pairs of a multi-label batch (``explanation.targets``
    (K, k), -1 padding) scored against each label's subject, and every readable sample's
    predicted labels (sigmoid probability >= ``threshold``)."""
    targets = explanation.targets.cpu().numpy()
    sample, slot = np.nonzero(targets >= 0)
    target = targets[sample, slot]
    mask_index, reasons = pair_subjects(batch, sample, target)
    probabilities = explanation.logits.float().sigmoid()
    device = probabilities.device
    rows = torch.as_tensor(sample, device=device)
    has_subject = torch.as_tensor(mask_index >= 0, device=device)
    all_masks = batch["masks"]
    if len(all_masks):
        masks = all_masks[torch.as_tensor(mask_index.clip(min=0), device=all_masks.device)].to(device)
        masks = masks & has_subject[:, None, None]
    else:
        size = explanation.maps[methods[0]].shape[-2:]
        masks = torch.zeros(len(sample), *size, dtype=torch.bool, device=device)
    columns = torch.as_tensor(slot, device=device)
    maps = [explanation.maps[method][rows, columns] for method in methods]
    confidence = probabilities[rows, torch.as_tensor(target, device=device)]
    host, metrics, codes, grids = _on_host(confidence[:, None], maps, masks, reliance_threshold, has_subject)
    return ScoredLabels(
        sample=sample,
        slot=slot,
        target=target.astype(np.int64),
        confidence=host[:, 0].astype(np.float64),
        mask_index=mask_index,
        reason=reasons,
        metrics=metrics,
        codes=codes,
        grids=grids,
        positive=(probabilities >= threshold).cpu().numpy(),
    )


def _label_lists(lists: Sequence[Sequence[int] | None]) -> pa.Array:
    return pa.array([None if v is None else [int(c) for c in v] for v in lists], type=pa.list_(pa.int64()))


def multilabel_records(
    batch: Mapping[str, Any],
    positions: Sequence[int],
    methods: Sequence[str],
    classes: Sequence[str] | None,
    attributes: Sequence[str],
    scored: ScoredLabels | None,
    skipped: str,
) -> pa.RecordBatch:
    """The shard rows of one multi-label batch: per sample, one row per (explained label,
    method), in sample order; a readable sample with no pair gets one row per method with status
    :data:`SKIPPED` and the reason ``skipped``, an unreadable one one row per method with its
    fault. Every row lists the sample's true and predicted labels."""
    n, m = len(positions), len(methods)
    ok = _flags(batch, "ok", np.zeros(n, dtype=bool))
    readable = np.cumsum(ok) - 1
    count = np.zeros(n, dtype=np.int64)
    if scored is not None:
        count[ok] = np.bincount(scored.sample, minlength=int(ok.sum()))
    units = np.maximum(count, 1)
    unit_sample = np.repeat(np.arange(n), units)
    within = np.arange(len(unit_sample)) - np.repeat(np.cumsum(units) - units, units)
    pair = np.where(count[unit_sample] > 0, (np.cumsum(count) - count)[unit_sample] + within, -1)
    paired = pair >= 0
    u = len(unit_sample)
    label = np.zeros(u, dtype=np.int64)
    positive = np.zeros(u, dtype=bool)
    truly = np.zeros(u, dtype=bool)
    confidence = np.full(u, np.nan)
    has_subject = np.zeros(u, dtype=bool)
    metrics = np.full((u, m, len(METRICS)), np.nan)
    codes = np.zeros((u, m), dtype=np.int64)
    grids = np.zeros((u, m, GRID * GRID), dtype=np.float32)
    status = np.asarray(batch["status"], dtype=object)[unit_sample]
    reason = np.asarray(batch["reason"], dtype=object)[unit_sample]
    predicted: list[list[int] | None] = [None] * n
    if scored is not None:
        for i in np.flatnonzero(ok):
            predicted[i] = np.flatnonzero(scored.positive[readable[i]]).tolist()
        p = pair[paired]
        label[paired] = scored.target[p]
        positive[paired] = scored.positive[scored.sample[p], scored.target[p]]
        truly[paired] = [c in batch["labels"][i] for i, c in zip(unit_sample[paired], label[paired], strict=True)]
        confidence[paired] = scored.confidence[p]
        has_subject[paired] = scored.mask_index[p] >= 0
        metrics[paired] = scored.metrics[:, p].transpose(1, 0, 2)
        codes[paired] = scored.codes[:, p].T
        grids[paired] = scored.grids[:, p].transpose(1, 0, 2)
        reason[paired] = [scored.reason[k] for k in p]
    skip = ok[unit_sample] & ~paired
    status[skip], reason[skip] = SKIPPED, skipped
    names = _names(label, classes, ~paired)
    units_columns = {
        POSITION: pa.array(np.asarray(positions, dtype=np.int64)[unit_sample]),
        "id": pa.array(batch["id"], type=pa.string()).take(unit_sample),
        "image": pa.array(batch["image_path"], type=pa.string()).take(unit_sample),
        "label": pa.array(label, mask=~paired),
        "label_name": names,
        "pred": pa.array(label, mask=~(paired & positive)),
        "pred_name": _names(label, classes, ~(paired & positive)),
        "correct": pa.array(positive == truly, mask=~paired),
        "confidence": pa.array(confidence),
        "target": pa.array(label, mask=~paired),
        "note": pa.array(batch["note"], type=pa.string()).take(unit_sample),
        "has_subject": pa.array(has_subject),
        "true_labels": _label_lists(batch["labels"]).take(unit_sample),
        "pred_labels": _label_lists(predicted).take(unit_sample),
        **{
            a: pa.array([row.get(a) for row in batch["attributes"]], type=pa.string()).take(unit_sample)
            for a in attributes
        },
    }
    schema = samples_schema(attributes, shard=True, multilabel=True)
    return _assemble(units_columns, status, reason, metrics, codes, grids, ~paired, methods, schema)
