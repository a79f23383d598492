"""The per-sample records of an audit as Arrow columns: one row per (sample, method), built a
whole batch at a time (no Python loop over rows), in the documented column order of
``samples.parquet``.

Each row also keeps its heatmap average-pooled to a ``GRID`` x ``GRID`` grid
(``heatmap_grid``, float32, row-major; null where there is no heatmap): the strategy discovery
(:mod:`auditcam.stats.strategies`) clusters these without a second pass over the images, in
256 bytes a row. ``strategy`` is filled in after the run (null until then, or when not measured).

Shards carry one more column, ``position`` (the sample's index in the dataset): it orders the
merge and names the samples a resumed run has already done; ``samples.parquet`` drops it.
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
ANALYSIS_COLUMNS = analysis_columns()
_ARROW = {
    "string": pa.string(),
    "int64": pa.int64(),
    "Int64": pa.int64(),
    "boolean": pa.bool_(),
    "float64": pa.float64(),
    "object": pa.list_(pa.float32()),
}


def columns(attributes: Sequence[str]) -> list[str]:
    """Column order of ``samples.parquet``."""
    return [*DTYPES, *attributes]


def samples_schema(attributes: Sequence[str], *, shard: bool = False) -> pa.Schema:
    """The Arrow schema of ``samples.parquet`` (``shard``: with the leading ``position``), with
    pandas metadata so ``pd.read_parquet`` restores the nullable dtypes (Int64, boolean, string)."""
    return _schema(tuple(attributes), shard)


@functools.lru_cache(maxsize=16)
def _schema(attributes: tuple[str, ...], shard: bool) -> pa.Schema:
    dtypes = {**DTYPES, **dict.fromkeys(attributes, "string")}
    empty = pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in dtypes.items()})
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
    per_method = []
    for method in methods:
        maps = explanation.maps[method]
        scores = score(maps, masks, reliance_threshold=reliance_threshold, subjects=subjects)
        grid = F.adaptive_avg_pool2d(maps.float().unsqueeze(1), GRID).flatten(1)
        metrics = torch.stack([*(scores[name] for name in METRICS), scores["invalid"].float()], dim=1)
        per_method.append(torch.cat([metrics, grid], dim=1))
    head = torch.stack([pred.float(), confidence, explanation.targets.float()], dim=1)
    host = torch.cat([head, *per_method], dim=1).cpu().numpy()  # (K, 3 + methods * (metrics + 1 + grid))
    width = len(METRICS) + 1 + GRID * GRID
    blocks = host[:, 3:].reshape(len(host), len(methods), width).transpose(1, 0, 2)
    return Scored(
        pred=host[:, 0].astype(np.int64),
        confidence=host[:, 1],
        target=host[:, 2].astype(np.int64),
        metrics=blocks[:, :, : len(METRICS)],
        codes=blocks[:, :, len(METRICS)].astype(np.int64),
        grids=np.ascontiguousarray(blocks[:, :, len(METRICS) + 1 :], dtype=np.float32),
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
    rows = np.repeat(np.arange(n), m)
    repeated = {name: array.take(rows) for name, array in sample.items()}
    status = np.repeat(np.asarray(batch["status"], dtype=object), m)
    reason = np.repeat(np.asarray(batch["reason"], dtype=object), m)
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
    schema = samples_schema(attributes, shard=True)
    return pa.record_batch([data[name] for name in schema.names], schema=schema)
