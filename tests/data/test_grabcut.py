"""GrabCut subject masks from boxes: inside their box, closer to the subject than the box itself,
reproducible, and a per-sample 'no subject' when GrabCut finds nothing."""

from __future__ import annotations

import json

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


@pytest.fixture
def boxes_coco(tmp_path):
    """COCO instances with a bbox and no segmentation: around the disc, around the whole image,
    off the image; and a file where the disc has a polygon instead."""
    image, _ = _disc_image()
    for i in range(3):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / f"disc{i}.png")
    images = [{"id": i, "file_name": f"disc{i}.png", "width": W, "height": H} for i in range(3)]
    x0, y0, x1, y1 = BOX
    annotations = [
        {"id": 1, "image_id": 0, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "area": 1},
        {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [], "bbox": [0, 0, W, H], "area": 1},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [W + 5, 0, 10, 10], "area": 1},
    ]
    categories = [{"id": 1, "name": "disc"}]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}), "utf-8")
    polygon = {**annotations[0], "bbox": None, "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]}
    masks_only = tmp_path / "polygons.json"
    masks_only.write_text(json.dumps({"images": images[:1], "annotations": [polygon], "categories": categories}))
    return path, masks_only


def test_coco_bbox_only_annotations_are_refined_by_grabcut_inside_their_boxes(boxes_coco):
    path, masks_only = boxes_coco
    same = Preprocessing(image_size=(H, W), resize=None)
    raw = open_dataset(path, preprocessing=same)
    assert raw.rows[0].subject.gives_boxes and torch.equal(raw[0]["mask"], rasterise(_boxes()))  # the box itself
    ds = open_dataset(path, preprocessing=same, subject_from_boxes="grabcut")
    refined, whole, off = ds[0], ds[1], ds[2]
    _, disc = _disc_image()
    mask, box = refined["mask"].numpy(), rasterise(_boxes()).numpy()
    assert refined["has_subject"] and mask.any() and not (mask & ~box).any()  # inside its box
    assert _iou(mask, disc) > 0.9 and np.array_equal(mask, ds[0]["mask"].numpy())  # the subject, reproducibly
    assert "status" not in whole and not whole["has_subject"]  # still predicted, no subject
    assert whole["reason"] == f"no subject: GrabCut found no foreground in the box (0, 0, {W}, {H})"
    assert (
        "status" not in off
        and off["reason"] == f"no subject: box ({W + 5}, 0, {W + 15}, 10) lies outside the 64x48 image (WxH)"
    )
    with pytest.raises(InputError, match="has no boxes"):  # polygons are masks: nothing to refine
        open_dataset(masks_only, subject_from_boxes="grabcut")


def test_grabcut_refines_each_box_of_an_image_on_its_own():
    image, _ = _disc_image()
    corner = (0.0, 0.0, 10.0, 10.0)
    both = tv_tensors.BoundingBoxes([list(BOX), list(corner)], format="XYXY", canvas_size=(H, W))
    mask = refine_boxes(image, both).as_subclass(torch.Tensor).numpy().astype(bool)
    assert not (mask & ~rasterise(both).numpy()).any()  # never outside the boxes
    single = refine_boxes(image, _boxes()).as_subclass(torch.Tensor).numpy().astype(bool)
    elsewhere = ~rasterise(_boxes(corner)).numpy()
    assert np.array_equal(mask & elsewhere, single & elsewhere)  # the disc's box is cut as if alone
