"""The labelled dataset the audit iterates: decoded, jointly transformed image/mask pairs, and
a collate that carries failed samples through the batch instead of dropping them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from auditcam.data.io import SampleFault, read_image, read_mask
from auditcam.data.manifest import Row, read_manifest
from auditcam.models import IMAGENET, Preprocessing


class LabelledDataset(Dataset):
    """Images with class labels, subject masks and group attributes.

    Each item is a dict: ``index``, ``id``, ``image_path`` (as written in the manifest),
    ``label``, ``attributes``, and either ``image`` (3, H, W) normalised + ``mask`` (H, W) bool,
    or ``status``/``reason`` describing why the sample could not be read.
    """

    def __init__(
        self,
        rows: Sequence[Row],
        *,
        classes: Sequence[str] | None = None,
        attributes: Sequence[str] = (),
        preprocessing: Preprocessing = IMAGENET,
        source: str | None = None,
    ) -> None:
        self.rows = list(rows)
        self.classes = None if classes is None else tuple(classes)
        self.attributes = tuple(attributes)
        self.preprocessing = preprocessing
        self.source = source
        self._geometry = preprocessing.geometry()

    @classmethod
    def from_manifest(
        cls,
        path: str | Path,
        *,
        classes: Sequence[str] | None = None,
        preprocessing: Preprocessing = IMAGENET,
        allow_missing: bool = False,
    ) -> LabelledDataset:
        """Read a CSV manifest (see :func:`auditcam.data.manifest.read_manifest`)."""
        rows = read_manifest(path, classes, allow_missing=allow_missing)
        attributes = tuple(rows[0].attributes) if rows else ()
        return cls(rows, classes=classes, attributes=attributes, preprocessing=preprocessing, source=str(path))

    def with_preprocessing(self, preprocessing: Preprocessing) -> LabelledDataset:
        """The same samples, transformed for a model with other preprocessing."""
        return LabelledDataset(
            self.rows,
            classes=self.classes,
            attributes=self.attributes,
            preprocessing=preprocessing,
            source=self.source,
        )

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        item: dict[str, Any] = {
            "index": row.index,
            "id": row.id,
            "image_path": row.image,
            "label": row.label,
            "attributes": dict(row.attributes),
        }
        try:
            item["image"], item["mask"] = self._load(row)
        except SampleFault as fault:
            item["status"], item["reason"] = fault.status, fault.reason
        return item

    def _load(self, row: Row) -> tuple[torch.Tensor, torch.Tensor]:
        image = read_image(row.image_path)
        mask = read_mask(row.mask_path)
        if tuple(mask.shape) != tuple(image.shape[-2:]):
            raise SampleFault(
                "invalid",
                f"mask is {mask.shape[1]}x{mask.shape[0]} but image is {image.shape[2]}x{image.shape[1]} (WxH)",
            )
        image_tv, mask_tv = self._geometry(tv_tensors.Image(image), tv_tensors.Mask(mask.to(torch.uint8)))
        inputs = self.preprocessing.normalise(image_tv.as_subclass(torch.Tensor).float() / 255.0)
        return inputs, mask_tv.as_subclass(torch.Tensor).bool()


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack the readable samples; keep every sample's metadata and fault in order.

    ``ok`` (bool, N) marks which items have an image; ``image``/``mask`` hold only those, in order.
    """
    ok = [("image" in item) for item in items]
    readable = [item for item, good in zip(items, ok, strict=True) if good]
    batch: dict[str, Any] = {
        "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
        "id": [item["id"] for item in items],
        "image_path": [item["image_path"] for item in items],
        "label": torch.tensor([item["label"] for item in items], dtype=torch.long),
        "attributes": [item["attributes"] for item in items],
        "status": [item.get("status", "ok") for item in items],
        "reason": [item.get("reason", "") for item in items],
        "ok": torch.tensor(ok, dtype=torch.bool),
    }
    if readable:
        batch["image"] = torch.stack([item["image"] for item in readable])
        batch["mask"] = torch.stack([item["mask"] for item in readable])
    return batch
