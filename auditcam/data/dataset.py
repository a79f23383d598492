"""The labelled dataset the audit iterates: decoded, jointly transformed image/subject pairs, a
collate that carries failed samples through the batch instead of dropping them, and the
DataLoader that runs decoding in worker processes.

A multi-label sample carries its true labels and the masks of its own labels only (never one
per class of the model): ``masks`` (M, H, W) with ``mask_of`` pointing each label to its mask."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from auditcam.data.formats import DataOptions, read_source
from auditcam.data.grabcut import check_subject_from_boxes, refine_boxes
from auditcam.data.io import SampleFault, decode, image_tensor
from auditcam.data.rows import TASKS, Row
from auditcam.data.subjects import (
    DEFAULT_MASKS,
    NO_SUBJECT,
    Geometry,
    MaskOptions,
    NoSubjectFault,
    Subject,
    rasterise,
)
from auditcam.errors import InputError
from auditcam.models import IMAGENET, Preprocessing

NOT_ITS_LABEL = f"{NO_SUBJECT}: not one of the sample's labels"


def _place(
    subject: Subject, image: torch.Tensor, orientation: int, options: MaskOptions
) -> tuple[Geometry | NoSubjectFault, list[str]]:
    try:
        placed, notes = subject.place(tuple(image.shape[-2:]), orientation, options)
        if options.subject_from_boxes == "grabcut" and isinstance(placed, tv_tensors.BoundingBoxes):
            placed = refine_boxes(image, placed)
    except NoSubjectFault as missing:
        return missing, []
    return placed, notes


def load_sample(row: Row, options: MaskOptions) -> tuple[torch.Tensor, Geometry | NoSubjectFault, list[str]]:
    """Decode a row's image (uint8, 3 x H x W, upright) and place its subject on it, in the
    image's frame (or the :class:`NoSubjectFault` saying why it has none); the notes say what
    was done (a resized mask, PIL's warnings)."""
    decoded = decode(row.image_path, "image")
    image = image_tensor(decoded)
    subject, notes = _place(row.subject, image, decoded.orientation, options)
    return image, subject, [*decoded.warnings, *notes]


def load_subjects(row: Row, options: MaskOptions) -> tuple[torch.Tensor, list[Geometry | NoSubjectFault], list[str]]:
    """A multi-label row's image and each of its subjects placed on it: one per label
    (``row.label_subjects``), or the one ``row.subject`` of every label."""
    decoded = decode(row.image_path, "image")
    image = image_tensor(decoded)
    placed, notes = [], list(decoded.warnings)
    for subject in row.label_subjects or (row.subject,):
        geometry, more = _place(subject, image, decoded.orientation, options)
        placed.append(geometry)
        notes += more
    return image, placed, notes


class LabelledDataset(Dataset):
    """Images with class labels, subject masks and group attributes.

    Each item is a dict: ``index``, ``id``, ``image_path`` (as written in the source), ``label``,
    ``attributes``, ``note`` ('' or what was done to read it), and either ``image`` (3, H, W)
    normalised + ``mask`` (H, W) bool + ``has_subject`` (False: the mask is empty because the
    sample has no subject, ``reason`` says why), or ``status``/``reason`` saying why it could not
    be read. A multi-label sample has ``labels`` (a list) instead of ``label``, and ``masks``
    (M, H, W) with ``mask_of``/``shared_mask`` instead of ``mask`` (see :meth:`_multilabel_item`).
    ``notes`` says what the reader assumed (one label per sample of a multi-label audit).
    """

    def __init__(
        self,
        rows: Sequence[Row],
        *,
        classes: Sequence[str] | None = None,
        attributes: Sequence[str] = (),
        preprocessing: Preprocessing = IMAGENET,
        source: str | None = None,
        masks: MaskOptions = DEFAULT_MASKS,
        notes: Sequence[str] = (),
    ) -> None:
        self.rows = list(rows)
        self.classes = None if classes is None else tuple(classes)
        self.attributes = tuple(attributes)
        self.preprocessing = preprocessing
        self.source = source
        self.masks = masks
        self.notes = tuple(notes)
        self._geometry = preprocessing.geometry()

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        format: str | None = None,
        classes: Sequence[str] | None = None,
        preprocessing: Preprocessing = IMAGENET,
        images: str | Path | None = None,
        labels: str | Path | None = None,
        masks: str | Path | None = None,
        allow_missing: bool = False,
        mask_value: int | None = None,
        resize_masks: bool = False,
        subject_from_boxes: str | None = None,
        task: str = "single",
    ) -> LabelledDataset:
        """Open a manifest (CSV/Parquet), a COCO instances JSON or a class-per-folder tree.

        ``format`` overrides the guess from the path (``csv``, ``parquet``, ``coco``, ``folder``);
        ``images``/``labels`` are COCO's images folder and labels CSV, ``masks`` the folder
        layout's mask tree; ``mask_value`` picks the subject id in instance-id masks;
        ``resize_masks`` resizes masks of the image's aspect ratio but another size;
        ``subject_from_boxes="grabcut"`` refines each box into a mask with GrabCut (the dataset
        must have boxes). Samples without subject labels are audited on everything mask-free.
        A missing file stops with an ``InputError`` naming the row unless ``allow_missing``.
        ``task="multilabel"`` reads several labels per sample (a manifest's ``labels`` column and
        ``mask:<class>`` columns, every category of a COCO image); :attr:`notes` says when the
        data has one label per sample.
        """
        if task not in TASKS:
            raise InputError(f"`task` {task!r}: choose from {', '.join(TASKS)}", "task")
        options = DataOptions(
            images=None if images is None else Path(images),
            labels=None if labels is None else Path(labels),
            masks=None if masks is None else Path(masks),
            allow_missing=allow_missing,
        )
        found = read_source(path, format=format, classes=classes, options=options, multilabel=task == "multilabel")
        check_subject_from_boxes(subject_from_boxes, found.rows, path)
        return cls(
            found.rows,
            classes=found.classes,
            attributes=found.attributes,
            preprocessing=preprocessing,
            source=str(path),
            masks=MaskOptions(subject_value=mask_value, resize=resize_masks, subject_from_boxes=subject_from_boxes),
            notes=found.notes,
        )

    @classmethod
    def from_manifest(
        cls,
        path: str | Path,
        *,
        classes: Sequence[str] | None = None,
        preprocessing: Preprocessing = IMAGENET,
        allow_missing: bool = False,
        mask_value: int | None = None,
        resize_masks: bool = False,
    ) -> LabelledDataset:
        """Read a CSV or Parquet manifest (see :mod:`auditcam.data.manifest`)."""
        fmt = "parquet" if Path(path).suffix.lower() in (".parquet", ".pq") else "csv"
        return cls.open(
            path,
            format=fmt,
            classes=classes,
            preprocessing=preprocessing,
            allow_missing=allow_missing,
            mask_value=mask_value,
            resize_masks=resize_masks,
        )

    def with_preprocessing(self, preprocessing: Preprocessing) -> LabelledDataset:
        """The same samples, transformed for a model with other preprocessing."""
        return LabelledDataset(
            self.rows,
            classes=self.classes,
            attributes=self.attributes,
            preprocessing=preprocessing,
            source=self.source,
            masks=self.masks,
            notes=self.notes,
        )

    @property
    def multilabel(self) -> bool:
        """True when the samples carry several labels each (items with ``labels`` and ``masks``)."""
        return any(row.labels is not None for row in self.rows[:1])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        if row.labels is not None:
            return self._multilabel_item(row)
        item = {**_item_head(row), "label": row.label}
        try:
            image, subject, notes = load_sample(row, self.masks)
        except SampleFault as fault:
            item["status"], item["reason"] = fault.status, fault.reason
            return item
        if isinstance(subject, NoSubjectFault):
            image_tv = self._geometry(tv_tensors.Image(image))
            item["mask"] = torch.zeros(image_tv.shape[-2:], dtype=torch.bool)
            item["has_subject"], item["reason"] = False, subject.reason
        else:
            image_tv, subject_tv = self._geometry(tv_tensors.Image(image), subject)
            item["mask"], item["has_subject"] = rasterise(subject_tv), True
        item["image"] = self.preprocessing.normalise(image_tv.as_subclass(torch.Tensor).float() / 255.0)
        item["note"] = "; ".join(notes)
        return item

    def _multilabel_item(self, row: Row) -> dict[str, Any]:
        """The item of a multi-label row: ``labels``, and for a readable sample ``masks`` (M, H, W)
        with ``mask_of`` (per label: its mask's index, -1 for none, ``subject_reasons`` says why)
        and ``shared_mask`` (the mask of any other label explained on it, -1: none, ``shared_reason``)."""
        labels = list(row.labels or ())
        item = {**_item_head(row), "labels": labels}
        try:
            image, placed, notes = load_subjects(row, self.masks)
        except SampleFault as fault:
            item["status"], item["reason"] = fault.status, fault.reason
            return item
        geometries = [g for g in placed if not isinstance(g, NoSubjectFault)]
        transformed = self._geometry(tv_tensors.Image(image), *geometries) if geometries else None
        image_tv = transformed[0] if geometries else self._geometry(tv_tensors.Image(image))
        masks = [rasterise(g) for g in (transformed[1:] if geometries else ())]
        index = iter(range(len(masks)))
        which = [-1 if isinstance(g, NoSubjectFault) else next(index) for g in placed]
        reasons = [g.reason if isinstance(g, NoSubjectFault) else "" for g in placed]
        item["masks"] = torch.stack(masks) if masks else torch.zeros(0, *image_tv.shape[-2:], dtype=torch.bool)
        if row.label_subjects:
            item["mask_of"], item["subject_reasons"] = which, reasons
            item["shared_mask"], item["shared_reason"] = -1, NOT_ITS_LABEL
        else:
            item["mask_of"], item["subject_reasons"] = which * len(labels), reasons * len(labels)
            item["shared_mask"], item["shared_reason"] = which[0], reasons[0]
        item["image"] = self.preprocessing.normalise(image_tv.as_subclass(torch.Tensor).float() / 255.0)
        item["note"] = "; ".join(notes)
        return item


def as_multilabel(item: dict[str, Any]) -> dict[str, Any]:
    """A single-label item as a multi-label one: its label is its one label, its mask that
    label's subject (and the subject of any other label explained on it)."""
    if "labels" in item:
        return item
    out = {k: v for k, v in item.items() if k not in ("label", "mask", "has_subject")}
    out["labels"] = [int(item["label"])]
    if "image" in item:
        has = bool(item.get("has_subject", True))
        reason = "" if has else str(item.get("reason", NO_SUBJECT))
        out["masks"] = item["mask"][None] if has else item["mask"][:0]
        out["mask_of"], out["subject_reasons"] = [0 if has else -1], [reason]
        out["shared_mask"], out["shared_reason"] = (0 if has else -1), reason
        if not has:
            out.pop("reason", None)
    return out


def _item_head(row: Row) -> dict[str, Any]:
    """The part of an item every row has, readable or not: where it is and its attributes."""
    return {"index": row.index, "id": row.id, "image_path": row.image, "attributes": dict(row.attributes), "note": ""}


def collate(items: Sequence[dict[str, Any]], *, multilabel: bool = False) -> dict[str, Any]:
    """Stack the readable samples; keep every sample's metadata and fault in order.

    ``ok`` (bool, N) marks which items have an image; ``image``/``mask`` hold only those, in order;
    ``has_subject`` (bool, N) marks the readable items with a subject (an item without the key has one).
    Multi-label items (with ``labels``) give ``labels`` (a list per item) and, for the readable
    ones, ``masks`` (all their masks, concatenated) with ``mask_of``/``shared_mask`` as indices
    into it (see :class:`LabelledDataset`), instead of ``label``, ``mask`` and ``has_subject``;
    ``multilabel`` makes such a batch of single-label items too (each label its sample's one).
    """
    ok = [("image" in item) for item in items]
    readable = [item for item, good in zip(items, ok, strict=True) if good]
    batch: dict[str, Any] = {
        "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
        "id": [item["id"] for item in items],
        "image_path": [item["image_path"] for item in items],
        "attributes": [item["attributes"] for item in items],
        "status": [item.get("status", "ok") for item in items],
        "reason": [item.get("reason", "") for item in items],
        "note": [item.get("note", "") for item in items],
        "ok": torch.tensor(ok, dtype=torch.bool),
    }
    if multilabel or any("labels" in item for item in items):
        return _collate_multilabel(batch, [as_multilabel(item) for item in items], readable)
    batch["label"] = torch.tensor([item["label"] for item in items], dtype=torch.long)
    batch["has_subject"] = torch.tensor(
        [good and bool(item.get("has_subject", True)) for item, good in zip(items, ok, strict=True)],
        dtype=torch.bool,
    )
    if readable:
        batch["image"] = torch.stack([item["image"] for item in readable])
        batch["mask"] = torch.stack([item["mask"] for item in readable])
    return batch


def _collate_multilabel(
    batch: dict[str, Any], items: Sequence[dict[str, Any]], readable: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    batch["labels"] = [list(item["labels"]) for item in items]
    if not readable:
        return batch
    readable = [item for item in items if "image" in item]
    offsets = [0, *itertools.accumulate(len(item["masks"]) for item in readable)]

    def moved(index: int, offset: int) -> int:
        return -1 if index < 0 else index + offset

    batch["image"] = torch.stack([item["image"] for item in readable])
    batch["masks"] = torch.cat([item["masks"] for item in readable])
    batch["mask_of"] = [[moved(i, o) for i in item["mask_of"]] for item, o in zip(readable, offsets, strict=False)]
    batch["shared_mask"] = [moved(item["shared_mask"], o) for item, o in zip(readable, offsets, strict=False)]
    batch["subject_reasons"] = [list(item["subject_reasons"]) for item in readable]
    batch["shared_reason"] = [item["shared_reason"] for item in readable]
    return batch


def default_workers(n_samples: int, batch_size: int, processes: int = 1) -> int:
    """Worker processes for decoding: none for a run of at most two batches (starting processes
    would cost more than it saves), else half the usable CPU cores, at most 4 — the other half
    runs the model. ``processes`` audit processes on this machine (torchrun) share the cores."""
    if n_samples <= 2 * batch_size:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores // (2 * max(processes, 1))))


def loader(dataset: Dataset, batch_size: int, num_workers: int | None = 0, *, pin_memory: bool = False) -> DataLoader:
    """Batches in dataset order with the fault-carrying collate; ``num_workers=None`` picks
    :func:`default_workers`; ``pin_memory`` for batches bound for a GPU."""
    if num_workers is None:
        num_workers = default_workers(len(dataset), batch_size)  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
    )
