"""What marks the subject of a sample: a mask file or a box in pixels (COCO shapes live in
``coco.py``). Each becomes a ``tv_tensors.Mask`` or ``tv_tensors.BoundingBoxes`` in the image's
frame, so the joint transform moves it with its image; boxes are rasterised afterwards."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torchvision import tv_tensors

from auditcam.data.io import decode, fit_mask, mask_tensor


@dataclass(frozen=True)
class MaskOptions:
    """How masks are read: ``subject_value`` picks one id of an instance map (None: any pixel
    > 0 is subject); ``resize`` resizes a mask of the image's aspect ratio but another size;
    ``subject_from_boxes`` (``"grabcut"``) refines each box into a mask (None: the box is the subject)."""

    subject_value: int | None = None
    resize: bool = False
    subject_from_boxes: str | None = None


DEFAULT_MASKS = MaskOptions()
Geometry = tv_tensors.Mask | tv_tensors.BoundingBoxes
BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")
NO_SUBJECT = "no subject"


class NoSubjectFault(Exception):
    """A sample that has no usable subject (none given, a box off the image): it is still
    predicted and scored on everything mask-free; ``reason`` says why it has no subject;
    ``given``: a subject was given but is unusable (``validate`` lists it as a problem)."""

    def __init__(self, reason: str = NO_SUBJECT, *, given: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.given = reason, given


class Subject(Protocol):
    """The subject of one sample, placed on its image; ``gives_boxes``: it is placed as
    ``BoundingBoxes`` (what ``subject_from_boxes`` refines), not as a mask."""

    gives_boxes: bool

    def place(self, image_hw: tuple[int, int], orientation: int, options: MaskOptions) -> tuple[Geometry, list[str]]:
        """A Mask (H, W) or BoundingBoxes in the image's frame, and notes on what was done."""
        ...


@dataclass(frozen=True)
class NoSubject:
    """A sample without subject labels (no mask or box given)."""

    reason: str = NO_SUBJECT
    gives_boxes = False

    def place(self, image_hw: tuple[int, int], orientation: int, options: MaskOptions) -> tuple[Geometry, list[str]]:
        raise NoSubjectFault(self.reason)


@dataclass(frozen=True)
class MaskFile:
    """A mask image: binary (0/1, 0/255), palette, or an instance-id map."""

    path: Path
    gives_boxes = False

    def place(self, image_hw: tuple[int, int], orientation: int, options: MaskOptions) -> tuple[Geometry, list[str]]:
        decoded = decode(self.path, "mask")
        mask = mask_tensor(decoded, options.subject_value)
        mask, note = fit_mask(mask, image_hw, resize=options.resize, orientation=orientation)
        notes = [*decoded.warnings, note] if note else list(decoded.warnings)
        return tv_tensors.Mask(mask.to(torch.uint8)), notes


@dataclass(frozen=True)
class Box:
    """A box in pixel coordinates of the upright image: pixels whose centre lies inside are the
    subject, so integer corners cover exactly ``[y_min:y_max, x_min:x_max]``."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float
    gives_boxes = True

    def place(self, image_hw: tuple[int, int], orientation: int, options: MaskOptions) -> tuple[Geometry, list[str]]:
        h, w = image_hw
        if self.x_max <= 0 or self.y_max <= 0 or self.x_min >= w or self.y_min >= h:
            raise NoSubjectFault(f"{NO_SUBJECT}: box {self.text()} lies outside the {w}x{h} image (WxH)", given=True)
        if self.x_min >= self.x_max or self.y_min >= self.y_max:
            raise NoSubjectFault(f"{NO_SUBJECT}: box {self.text()} has zero area", given=True)
        boxes = tv_tensors.BoundingBoxes(
            [[self.x_min, self.y_min, self.x_max, self.y_max]], format="XYXY", canvas_size=(h, w), dtype=torch.float32
        )
        return boxes, []

    def text(self) -> str:
        return "(" + ", ".join(f"{v:g}" for v in (self.x_min, self.y_min, self.x_max, self.y_max)) + ")"

    def polygon(self) -> list[list[float]]:
        """The box as a COCO polygon segmentation (its four corners)."""
        x0, y0, x1, y1 = self.x_min, self.y_min, self.x_max, self.y_max
        return [[x0, y0, x1, y0, x1, y1, x0, y1]]


class BoxError(ValueError):
    """A box cell that is not usable: which column, and why."""

    def __init__(self, column: str, detail: str) -> None:
        super().__init__(f"column {column!r}: {detail}")
        self.column, self.detail = column, detail


def parse_box(values: dict[str, str]) -> Box:
    """Box columns (strings) -> Box; :class:`BoxError` names the column and what is wrong."""
    numbers = {}
    for column in BOX_COLUMNS:
        text = values[column].strip()
        try:
            numbers[column] = float(text)
        except ValueError:
            raise BoxError(column, f"{text!r} is not a number") from None
        if not math.isfinite(numbers[column]):
            raise BoxError(column, f"{text!r} is not a finite number")
    # a zero-area box is a sample without a subject (recorded per sample); an inverted one is a typo
    if numbers["x_min"] > numbers["x_max"]:
        raise BoxError("x_max", f"{numbers['x_max']:g} is less than x_min {numbers['x_min']:g}")
    if numbers["y_min"] > numbers["y_max"]:
        raise BoxError("y_max", f"{numbers['y_max']:g} is less than y_min {numbers['y_min']:g}")
    return Box(**numbers)


def rasterise(geometry: Geometry) -> torch.Tensor:
    """bool (H, W) subject mask from a transformed Mask or BoundingBoxes (union of the boxes)."""
    if isinstance(geometry, tv_tensors.BoundingBoxes):
        h, w = geometry.canvas_size
        boxes = geometry.as_subclass(torch.Tensor).float()
        cols = torch.arange(w, dtype=torch.float32) + 0.5
        rows = torch.arange(h, dtype=torch.float32) + 0.5
        mask = torch.zeros(h, w, dtype=torch.bool)
        for x0, y0, x1, y1 in boxes.tolist():
            inside_x = (cols >= x0) & (cols < x1)
            inside_y = (rows >= y0) & (rows < y1)
            mask |= inside_y[:, None] & inside_x[None, :]
        return mask
    return geometry.as_subclass(torch.Tensor).bool()
