"""COCO instances files: polygons and RLE to exact mask pixels, the image-level label rule, the
labels file, attributes from image entries, and one-line errors."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from auditcam.data import LabelledDataset, open_dataset
from auditcam.data.coco import coco_mask
from auditcam.errors import InputError
from auditcam.models import Preprocessing

H, W = 10, 12
SAME_SIZE = Preprocessing(image_size=(H, W), resize=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _box(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[rows, cols] = True
    return mask


def _compressed(mask: np.ndarray) -> dict:
    with warnings.catch_warnings():  # pycocotools vs numpy 2
        warnings.simplefilter("ignore", DeprecationWarning)
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


@pytest.fixture
def coco(tmp_path):
    """Three annotated images and one without annotations; 'a' has cats (polygon + uncompressed
    RLE) covering more area than its dog (compressed RLE)."""
    for name in ("a.png", "b b.png", "ü.png", "empty.png"):
        Image.new("RGB", (W, H), (90, 90, 90)).save(tmp_path / name)
    images = [
        {"id": 1, "file_name": "a.png", "width": W, "height": H, "site": "A", "license": 1},
        {"id": 2, "file_name": "b b.png", "width": W, "height": H, "site": None},
        {"id": 5, "file_name": "ü.png", "width": W, "height": H},
        {"id": 9, "file_name": "empty.png", "width": W, "height": H},
    ]
    annotations = [
        # polygon: the rectangle x 3..7, y 2..5 covers rows 2:5, cols 3:7 (12 pixels)
        {"id": 10, "image_id": 1, "category_id": 1, "segmentation": [[3, 2, 7, 2, 7, 5, 3, 5]], "area": 12},
        # uncompressed RLE, column-major runs: pixels (row 0, col 10) and (row 0, col 11)
        {
            "id": 11,
            "image_id": 1,
            "category_id": 1,
            "segmentation": {"size": [H, W], "counts": [100, 1, 9, 1, 9]},
            "area": 2,
            "iscrowd": 1,
        },
        {
            "id": 12,
            "image_id": 1,
            "category_id": 3,
            "segmentation": _compressed(_box(slice(6, 9), slice(0, 3))),
            "area": 9,
        },
        {
            "id": 13,
            "image_id": 2,
            "category_id": 3,
            "segmentation": _compressed(_box(slice(1, 4), slice(1, 11))),
            "area": 30,
        },
        {"id": 14, "image_id": 5, "category_id": 1, "segmentation": [], "bbox": [2, 3, 4, 5], "area": 20},
    ]
    categories = [{"id": 3, "name": "dog"}, {"id": 1, "name": "cat"}]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}), "utf-8")
    return path


def test_polygon_and_rle_round_trip_to_the_expected_pixels():
    polygon = coco_mask([[[3, 2, 7, 2, 7, 5, 3, 5]]], H, W)
    assert np.array_equal(polygon, _box(slice(2, 5), slice(3, 7)))
    uncompressed = coco_mask([{"size": [H, W], "counts": [100, 1, 9, 1, 9]}], H, W)
    assert np.array_equal(uncompressed, _box(slice(0, 1), slice(10, 12)))
    rng = np.random.default_rng(0)
    blob = rng.random((H, W)) > 0.6
    assert np.array_equal(coco_mask([_compressed(blob)], H, W), blob)


def _without_empty(coco):
    data = json.loads(coco.read_text("utf-8"))
    data["images"] = [i for i in data["images"] if i["file_name"] != "empty.png"]
    coco.write_text(json.dumps(data), "utf-8")
    return coco


def test_largest_category_labels_the_image_and_its_instances_are_the_subject(coco):
    ds = LabelledDataset.open(_without_empty(coco), preprocessing=SAME_SIZE)
    assert ds.classes == ("cat", "dog")  # categories in id order
    assert ds.attributes == ("site",)
    items = [ds[i] for i in range(len(ds))]
    assert [(i["id"], i["image_path"], i["label"]) for i in items] == [
        ("1", "a.png", 0),
        ("2", "b b.png", 1),
        ("5", "ü.png", 0),
    ]
    cats = _box(slice(2, 5), slice(3, 7)) | _box(slice(0, 1), slice(10, 12))  # the dog is not the subject
    assert torch.equal(items[0]["mask"], torch.from_numpy(cats))
    assert torch.equal(items[1]["mask"], torch.from_numpy(_box(slice(1, 4), slice(1, 11))))
    assert torch.equal(items[2]["mask"], torch.from_numpy(_box(slice(3, 8), slice(2, 6))))  # bbox, no segmentation
    assert [i["attributes"] for i in items] == [{"site": "A"}, {"site": "unknown"}, {"site": "unknown"}]


def test_labels_file_picks_samples_labels_and_attributes(coco, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label,skin_tone\na.png,dog,II\nb b.png,cat,\n", encoding="utf-8")
    ds = open_dataset(coco, labels=labels, classes=("dog", "cat"), preprocessing=SAME_SIZE)
    assert len(ds) == 2 and ds.attributes == ("site", "skin_tone")
    first, second = ds[0], ds[1]
    assert first["label"] == 0 and torch.equal(first["mask"], torch.from_numpy(_box(slice(6, 9), slice(0, 3))))
    assert first["attributes"] == {"site": "A", "skin_tone": "II"}
    assert "status" not in second and not second["has_subject"] and not second["mask"].any()
    assert second["reason"] == "no subject: no 'cat' annotation for this image"  # still predicted, no subject
    assert second["attributes"] == {"site": "unknown", "skin_tone": "unknown"}


def test_coco_input_errors_are_one_line(coco, tmp_path):
    with pytest.raises(InputError) as info:
        open_dataset(coco)
    assert str(info.value) == (
        f"{coco} image 'empty.png' (id 9): no annotations, so no label; give it one with --coco-labels or remove it"
    )
    with pytest.raises(InputError) as info:
        open_dataset(_without_empty(coco), classes=("dog", "bird"))
    assert (
        str(info.value) == f"{coco} image 'a.png' (id 1), column 'category_id': category 'cat' is not in the class list"
    )
    (tmp_path / "a.png").unlink()
    with pytest.raises(InputError, match=r"image 'a.png' \(id 1\), column 'file_name': file not found: a.png"):
        open_dataset(coco)
    (tmp_path / "bad.json").write_text('{"images": []}', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.json: not a COCO instances file: no 'annotations' list$"):
        open_dataset(tmp_path / "bad.json")


def test_multilabel_every_category_is_a_label_with_the_union_of_its_instances(coco):
    ds = LabelledDataset.open(coco, preprocessing=SAME_SIZE, task="multilabel")
    assert ds.multilabel and ds.classes == ("cat", "dog")
    items = {item["image_path"]: item for item in (ds[i] for i in range(len(ds)))}
    a = items["a.png"]
    assert a["labels"] == [0, 1]  # both categories, in class order
    # hand-built: the cat polygon (rows 2:5, cols 3:7) and the cat RLE (row 0, cols 10:12); the dog RLE box
    cats = np.zeros((H, W), bool)
    cats[2:5, 3:7] = True
    cats[0, 10:12] = True
    dog = np.zeros((H, W), bool)
    dog[6:9, 0:3] = True
    assert torch.equal(a["masks"][a["mask_of"][0]], torch.from_numpy(cats))
    assert torch.equal(a["masks"][a["mask_of"][1]], torch.from_numpy(dog))
    boxed = items["ü.png"]  # no segmentation: the bbox x 2..6, y 3..8 is rasterised
    assert boxed["labels"] == [0] and torch.equal(boxed["masks"][0], torch.from_numpy(_box(slice(3, 8), slice(2, 6))))
    empty = items["empty.png"]  # no annotation: a sample with no label, not an error
    assert empty["labels"] == [] and "status" not in empty and empty["shared_mask"] == -1


def _instances(tmp_path, annotations, width=W, height=H):
    Image.new("RGB", (W, H), (90, 90, 90)).save(tmp_path / "one.png")
    images = [{"id": 1, "file_name": "one.png", "width": width, "height": height}]
    path = tmp_path / "boxes.json"
    data = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "cat"}]}
    path.write_text(json.dumps(data), "utf-8")
    return path


def test_bbox_only_instances_are_boxes_and_join_a_mask_when_mixed_with_segmentations(tmp_path):
    boxes = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 2], "area": 6},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [6, 5, 4, 3], "area": 12},
    ]
    ds = open_dataset(_instances(tmp_path, boxes), preprocessing=SAME_SIZE)
    assert ds.rows[0].subject.gives_boxes  # every instance a box: a box subject (GrabCut may refine it)
    assert torch.equal(
        ds[0]["mask"], torch.from_numpy(_box(slice(1, 3), slice(1, 4)) | _box(slice(5, 8), slice(6, 10)))
    )
    polygon = {"id": 3, "image_id": 1, "category_id": 1, "segmentation": [[3, 2, 7, 2, 7, 5, 3, 5]], "area": 12}
    mixed = open_dataset(_instances(tmp_path, [boxes[0], polygon]), preprocessing=SAME_SIZE)
    assert not mixed.rows[0].subject.gives_boxes  # a mask: the polygon with the filled box
    assert torch.equal(
        mixed[0]["mask"], torch.from_numpy(_box(slice(1, 3), slice(1, 4)) | _box(slice(2, 5), slice(3, 7)))
    )


def test_coco_boxes_of_another_declared_size_are_invalid_or_scaled_with_resize_masks(tmp_path):
    box = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 4, 6], "area": 24}]
    path = _instances(tmp_path, box, width=2 * W, height=2 * H)  # the entry says twice the image's size
    item = open_dataset(path, preprocessing=SAME_SIZE)[0]
    assert (item["status"], item["reason"]) == (
        "invalid",
        f"annotation is {2 * W}x{2 * H} but image is {W}x{H} (WxH); same aspect ratio, --resize-masks would resize it",
    )
    item = open_dataset(path, preprocessing=SAME_SIZE, resize_masks=True)[0]
    assert torch.equal(item["mask"], torch.from_numpy(_box(slice(1, 4), slice(1, 3))))
    assert item["note"] == f"annotation boxes scaled from {2 * W}x{2 * H} to {W}x{H} (WxH)"


def test_a_bbox_with_a_negative_side_is_a_one_line_error(tmp_path):
    box = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, -4, 6], "area": 24}]
    with pytest.raises(InputError) as info:
        open_dataset(_instances(tmp_path, box))
    assert str(info.value) == (
        f"{tmp_path / 'boxes.json'} annotations[0]: an annotation needs 'image_id', 'category_id' and "
        "a bbox is [x, y, width, height]: four finite numbers, width and height not negative"
    )
