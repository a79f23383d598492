"""Subject masks from boxes: a detection box counts the background around the object as subject;
OpenCV's GrabCut, initialised from the box (outside: background, inside: probably the object),
keeps the pixels that look like the object. Seeded, so the same image and box give the same mask."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from auditcam.data.rows import Row
from auditcam.data.subjects import BOX_COLUMNS, NO_SUBJECT, NoSubjectFault, rasterise
from auditcam.errors import InputError

SUBJECT_FROM_BOXES = ("grabcut",)
GRABCUT_ITERATIONS = 5
GRABCUT_SEED = 0


def grabcut_mask(
    image: torch.Tensor, box: torch.Tensor, *, iterations: int = GRABCUT_ITERATIONS, seed: int = GRABCUT_SEED
) -> np.ndarray:
    """bool (H, W): GrabCut's foreground in ``box`` (bool (H, W), the box's pixels) of ``image``
    (uint8, 3 x H x W, RGB); never outside the box. Empty when it finds no foreground."""
    import cv2

    rows, cols = np.flatnonzero(box.any(dim=1).numpy()), np.flatnonzero(box.any(dim=0).numpy())
    if not len(rows):
        return np.zeros(box.shape, dtype=bool)
    x, y = int(cols[0]), int(rows[0])
    rect = (x, y, int(cols[-1]) - x + 1, int(rows[-1]) - y + 1)
    bgr = np.ascontiguousarray(image.permute(1, 2, 0).numpy()[:, :, ::-1])
    labels = np.zeros(bgr.shape[:2], np.uint8)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(seed)
    try:
        cv2.grabCut(bgr, labels, rect, background, foreground, iterations, cv2.GC_INIT_WITH_RECT)
    except cv2.error:  # e.g. a box covering the whole image leaves no background to model
        return np.zeros(box.shape, dtype=bool)
    return np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)) & box.numpy()


def refine_boxes(image: torch.Tensor, boxes: tv_tensors.BoundingBoxes) -> tv_tensors.Mask:
    """The subject mask GrabCut finds in the boxes of one image (uint8, 3 x H x W): the union of
    one GrabCut per box (each instance modelled from its own box); raises :class:`NoSubjectFault`
    when it finds no foreground in any of them."""
    corners = boxes.as_subclass(torch.Tensor)
    mask = np.zeros(boxes.canvas_size, dtype=bool)
    for k in range(len(corners)):
        mask |= grabcut_mask(image, rasterise(tv_tensors.wrap(corners[k : k + 1], like=boxes)))
    if not mask.any():
        shown = ", ".join("(" + ", ".join(f"{v:g}" for v in box) + ")" for box in corners.tolist())
        plural = "es" if len(corners) > 1 else ""
        raise NoSubjectFault(f"{NO_SUBJECT}: GrabCut found no foreground in the box{plural} {shown}", given=True)
    return tv_tensors.Mask(torch.from_numpy(mask).to(torch.uint8))


def check_subject_from_boxes(method: str | None, rows: Sequence[Row], source: str | Path) -> None:
    """``--subject-from-boxes`` must name a known method and the dataset must have boxes."""
    if method is None:
        return
    if method not in SUBJECT_FROM_BOXES:
        raise InputError(f"--subject-from-boxes {method!r}: choose from {', '.join(SUBJECT_FROM_BOXES)}")
    if not any(row.subject.gives_boxes for row in rows):
        raise InputError(
            f"--subject-from-boxes {method}: {source} has no boxes (manifest columns {', '.join(BOX_COLUMNS)}, "
            "or COCO annotations with a bbox and no segmentation); leave the flag out"
        )
