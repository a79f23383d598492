"""Plug any ``torch.utils.data.Dataset`` into the audit: its items are checked and completed to
the dict :class:`~auditcam.data.LabelledDataset` yields, and an item that breaks the contract
becomes an ``error`` record with its reason instead of stopping the run.

An item is a dict with ``image`` (float, 3 x H x W, already model input), ``mask`` (H x W, any
dtype, nonzero = subject; or a ``tv_tensors.BoundingBoxes`` on the H x W canvas; absent or None
for a sample without a subject) and ``label``
(class index, or class name when ``classes`` is given); optionally ``id`` (default: the index),
``image_path`` and ``attributes`` (dict). Instead of ``image``/``mask`` an item may carry
``status`` and ``reason`` for a sample the user's loader could not read.

A multi-label item has ``labels`` (a list of class indices or names, possibly empty) instead of
``label``, and either ``masks`` (one per label: a (K, H, W) tensor, or a list of K masks, boxes or
None) or one ``mask`` that is the subject of every label.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from auditcam.data.dataset import NOT_ITS_LABEL, LabelledDataset
from auditcam.data.rows import RESERVED_COLUMNS, attribute_value, parse_label
from auditcam.data.subjects import NO_SUBJECT, rasterise
from auditcam.errors import InputError
from auditcam.models import IMAGENET, Preprocessing


class WrappedDataset(Dataset):
    """A user's dataset seen through the audit's item contract.

    ``preprocessing`` only tells the report how to turn model input back into a picture: the
    items are model input already. ``attributes`` defaults to the keys of the first item's.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        classes: Sequence[str] | None = None,
        attributes: Sequence[str] | None = None,
        preprocessing: Preprocessing = IMAGENET,
        source: str | None = None,
    ) -> None:
        self.dataset = dataset
        self.classes = None if classes is None else tuple(classes)
        if attributes is None:
            first = dataset[0] if len(dataset) else {}  # type: ignore[arg-type]
            attributes = tuple((first.get("attributes") or {}) if isinstance(first, dict) else ())
        clashes = [a for a in attributes if a in RESERVED_COLUMNS]
        if clashes:
            raise InputError(f"attribute {clashes[0]!r} clashes with an output column; rename it")
        self.attributes = tuple(attributes)
        self.preprocessing = preprocessing
        self.source = source or type(dataset).__name__

    def with_preprocessing(self, preprocessing: Preprocessing) -> WrappedDataset:
        """The same items, shown with another normalisation (they are not transformed again)."""
        return WrappedDataset(
            self.dataset,
            classes=self.classes,
            attributes=self.attributes,
            preprocessing=preprocessing,
            source=self.source,
        )

    @property
    def notes(self) -> tuple[str, ...]:
        """What was assumed in reading the data: nothing for a user's dataset."""
        return ()

    @property
    def multilabel(self) -> bool:
        """True when the items give ``labels`` (several per sample) rather than one ``label``."""
        first = self.dataset[0] if len(self) else {}  # type: ignore[index]
        return isinstance(first, dict) and "labels" in first

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _label(self, index: int, key: str, value: Any) -> int:
        try:
            return int(value) if not isinstance(value, str) else parse_label(value, self.classes)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{self.source} item {index}, {key!r}: {exc}") from None

    def __getitem__(self, index: int) -> dict[str, Any]:
        raw = self.dataset[index]
        if not isinstance(raw, dict):
            raise InputError(f"{self.source} item {index}: expected a dict, got {type(raw).__name__}")
        if "label" not in raw and "labels" not in raw:
            raise InputError(f"{self.source} item {index}: no 'label'")
        sample_id = str(raw.get("id", index))
        given = dict(raw.get("attributes") or {})
        item: dict[str, Any] = {
            "index": index,
            "id": sample_id,
            "image_path": str(raw.get("image_path", sample_id)),
            "attributes": {a: attribute_value(given.get(a)) for a in self.attributes},
            "note": str(raw.get("note", "")),
        }
        if "labels" in raw:
            if isinstance(raw["labels"], str) or not isinstance(raw["labels"], Sequence | torch.Tensor):
                raise InputError(f"{self.source} item {index}, 'labels': expected a list of classes")
            labels = list(dict.fromkeys(self._label(index, "labels", v) for v in list(raw["labels"])))
            item["labels"] = labels
        else:
            item["label"] = self._label(index, "label", raw["label"])
        if "status" in raw:
            item["status"], item["reason"] = str(raw["status"]), str(raw.get("reason", ""))
            return item
        if "labels" in raw:
            try:
                return {**item, **_multilabel_subjects(raw, given, self.attributes, len(item["labels"]))}
            except ValueError as exc:
                item["status"], item["reason"] = "error", f"dataset item {index}: {exc}"
                return item
        try:
            item["image"], mask = _checked(raw, given, self.attributes)
        except ValueError as exc:
            item["status"], item["reason"] = "error", f"dataset item {index}: {exc}"
            return item
        item["has_subject"] = mask is not None
        item["mask"] = torch.zeros(item["image"].shape[-2:], dtype=torch.bool) if mask is None else mask
        if mask is None:
            item["reason"] = NO_SUBJECT
        return item


def _checked(raw: dict[str, Any], given: dict[str, Any], attributes: Sequence[str]) -> tuple[torch.Tensor, ...]:
    """The item's image and bool mask (None: no subject), or ValueError saying which part of the
    contract broke."""
    undeclared = [a for a in given if a not in attributes]
    if undeclared:
        raise ValueError(f"attribute {undeclared[0]!r} is not one of the dataset's attributes {list(attributes)}")
    image, mask = raw.get("image"), raw.get("mask")
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError("'image' must be a tensor of shape (3, H, W)")
    if mask is None:  # a sample without a subject: everything mask-free is still measured
        return image.as_subclass(torch.Tensor).float(), None
    if isinstance(mask, tv_tensors.BoundingBoxes):
        mask = rasterise(mask)
    if not isinstance(mask, torch.Tensor):
        raise ValueError("'mask' must be a tensor of shape (H, W)")
    mask = mask.squeeze(0) if mask.ndim == 3 and mask.shape[0] == 1 else mask
    if tuple(mask.shape) != tuple(image.shape[-2:]):
        raise ValueError(f"'mask' has shape {tuple(mask.shape)} but the image is {tuple(image.shape[-2:])} (H, W)")
    return image.as_subclass(torch.Tensor).float(), mask.as_subclass(torch.Tensor) != 0


def _multilabel_subjects(
    raw: dict[str, Any], given: dict[str, Any], attributes: Sequence[str], n_labels: int
) -> dict[str, Any]:
    """The image and per-label masks of a multi-label item in :class:`LabelledDataset`'s form
    (``masks``, ``mask_of``, ``shared_mask`` and the reasons), or ValueError saying which part of
    the contract broke."""
    if "masks" not in raw:
        image, mask = _checked(raw, given, attributes)
        shared = -1 if mask is None else 0
        reason = NO_SUBJECT if mask is None else ""
        masks = torch.zeros(0, *image.shape[-2:], dtype=torch.bool) if mask is None else mask[None]
        return {
            "image": image,
            "masks": masks,
            "mask_of": [shared] * n_labels,
            "subject_reasons": [reason] * n_labels,
            "shared_mask": shared,
            "shared_reason": reason,
        }
    given_masks = raw["masks"]
    listed = list(given_masks.unbind(0)) if torch.is_tensor(given_masks) else list(given_masks or [])
    if len(listed) != n_labels:
        raise ValueError(f"'masks' has {len(listed)} masks for {n_labels} labels; give one per label (None: none)")
    image, _ = _checked({**raw, "mask": None}, given, attributes)
    checked = [_checked({**raw, "mask": mask}, given, attributes)[1] for mask in listed]
    kept = [mask for mask in checked if mask is not None]
    mask_of = list(itertools.accumulate((mask is not None for mask in checked), initial=0))
    return {
        "image": image,
        "masks": torch.stack(kept) if kept else torch.zeros(0, *image.shape[-2:], dtype=torch.bool),
        "mask_of": [-1 if mask is None else i for mask, i in zip(checked, mask_of, strict=False)],
        "subject_reasons": [NO_SUBJECT if mask is None else "" for mask in checked],
        "shared_mask": -1,
        "shared_reason": NOT_ITS_LABEL,
    }


def as_audit_dataset(dataset: Dataset) -> LabelledDataset | WrappedDataset:
    """The dataset itself when it already speaks the audit's item contract, else wrapped."""
    if isinstance(dataset, LabelledDataset | WrappedDataset):
        return dataset
    return WrappedDataset(dataset)
