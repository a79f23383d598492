"""GrabCut subject masks from boxes: inside their box, closer to the subject than the box itself,
reproducible, and a per-sample 'no subject' when GrabCut finds nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from auditcam import cli
from auditcam.data import open_dataset
from auditcam.data.grabcut import grabcut_mask, refine_boxes
from auditcam.data.subjects import NoSubjectFault, rasterise
from auditcam.demo import MODEL_SPEC
from auditcam.errors import InputError
from auditcam.models import Preprocessing

H, W = 48, 64
BOX = (14.0, 8.0, 50.0, 40.0)  # x_min, y_min, x_max, y_max around the disc, with background corners


def _disc_image(seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """A red disc on a noisy blue-grey background (uint8, 3 x H x W) and the disc's mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    disc = (yy - 24) ** 2 + (xx - 32) ** 2 <= 14**2
    pixels = np.clip(rng.normal((90, 110, 140), 12, (H, W, 3)), 0, 255)
    pixels[disc] = np.clip(rng.normal((220, 40, 30), 12, (int(disc.sum()), 3)), 0, 255)
    return torch.from_numpy(pixels.astype(np.uint8)).permute(2, 0, 1).contiguous(), disc


def _boxes(box=BOX) -> tv_tensors.BoundingBoxes:
    return tv_tensors.BoundingBoxes([list(box)], format="XYXY", canvas_size=(H, W))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_grabcut_stays_in_its_box_and_finds_the_subject_better_than_the_box():
    image, disc = _disc_image()
    box = rasterise(_boxes()).numpy()
    mask = refine_boxes(image, _boxes()).as_subclass(torch.Tensor).numpy().astype(bool)
    assert mask.any() and not (mask & ~box).any()  # never outside its box
    assert _iou(box, disc) < 0.6 and _iou(mask, disc) > 0.9  # the box counts its corners as subject
    again = grabcut_mask(image, rasterise(_boxes()))
    assert np.array_equal(again, mask)  # seeded: the same mask every time


def test_grabcut_without_foreground_is_no_subject():
    image, _ = _disc_image()
    with pytest.raises(NoSubjectFault, match=r"no subject: GrabCut found no foreground in the box \(0, 0, 64, 48\)"):
        refine_boxes(image, _boxes((0.0, 0.0, float(W), float(H))))  # no background left to model


@pytest.fixture
def boxes_manifest(tmp_path):
    image, _ = _disc_image()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / "disc.png")
    rows = [
        {"image": "disc.png", "label": "0", "x_min": "14", "y_min": "8", "x_max": "50", "y_max": "40"},
        {"image": "disc.png", "label": "0", "x_min": "0", "y_min": "0", "x_max": "64", "y_max": "48", "id": "all"},
        {"image": "disc.png", "label": "0", "x_min": "", "y_min": "", "x_max": "", "y_max": "", "id": "none"},
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "boxes.csv", index=False)
    return tmp_path / "boxes.csv"


def test_a_dataset_refines_its_boxes(boxes_manifest):
    same = Preprocessing(image_size=(H, W), resize=None)
    ds = open_dataset(boxes_manifest, preprocessing=same, subject_from_boxes="grabcut")
    raw = open_dataset(boxes_manifest, preprocessing=same)
    refined, whole, bare = ds[0], ds[1], ds[2]
    assert refined["has_subject"] and refined["mask"].sum() < raw[0]["mask"].sum()
    assert not whole["has_subject"] and whole["reason"].startswith("no subject: GrabCut found no foreground")
    assert "status" not in whole  # still predicted
    assert not bare["has_subject"] and bare["reason"] == "no subject"


def test_subject_from_boxes_needs_boxes(small_dataset, tmp_path, capsys):
    manifest, classes = small_dataset
    with pytest.raises(InputError, match="has no boxes"):
        open_dataset(manifest, classes=classes, subject_from_boxes="grabcut")
    argv = ["audit", "--model", MODEL_SPEC, "--data", str(manifest), "--out", str(tmp_path / "out")]
    argv += ["--classes", str(manifest.parent / "classes.txt")]
    assert cli.main([*argv, "--subject-from-boxes", "grabcut", "--no-progress"]) == cli.EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--subject-from-boxes grabcut: {manifest} has no boxes" in err
