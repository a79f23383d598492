"""Decoding, joint preprocessing of image and mask, and per-sample faults carried through collate."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from auditcam.data import LabelledDataset, collate, default_workers, loader
from auditcam.models import Preprocessing
from tests.data.conftest import write_manifest, write_pair


def test_resize_and_centre_crop_keep_the_mask_on_the_subject(tmp_path):
    # 100x200 image, subject rows 20:60, cols 120:160. Shorter side -> 50 halves everything
    # (rows 10:30, cols 60:80); the centre crop keeps cols 25:75, so the subject is cols 35:50.
    image, mask = write_pair(tmp_path, "wide", size=(100, 200), box=(20, 120, 60, 160))
    write_manifest(tmp_path / "m.csv", [{"image": image, "mask": mask, "label": "0"}])
    pre = Preprocessing(image_size=(50, 50), resize=50, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    item = LabelledDataset.from_manifest(tmp_path / "m.csv", preprocessing=pre)[0]
    expected = torch.zeros(50, 50, dtype=torch.bool)
    expected[10:30, 35:50] = True
    assert torch.equal(item["mask"], expected)
    red = (item["image"][0] > 0.9) & (item["image"][1] < 0.1)
    inner = expected.clone()
    inner[[10, 29], :] = False
    inner[:, 35] = False
    assert red[inner].all()  # the mask's interior is the red subject in the transformed image
    assert not red[~expected].any()


def test_items_are_normalised_for_the_model(dataset_dir):
    pre = Preprocessing(image_size=(24, 32), resize=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    item = LabelledDataset.from_manifest(dataset_dir / "manifest.csv", preprocessing=pre)[0]
    assert item["image"].shape == (3, 24, 32)
    torch.testing.assert_close(item["image"][:, 0, 0], torch.full((3,), (128 / 255 - 0.5) / 0.5))
    assert item["attributes"] == {"site": "A"}


def test_corrupt_files_and_size_mismatch_become_faults(tmp_path):
    good = write_pair(tmp_path, "good")
    (tmp_path / "images" / "text.png").write_text("not an image", encoding="utf-8")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "masks" / "small.png")
    write_manifest(
        tmp_path / "m.csv",
        [
            {"id": "a", "image": good[0], "mask": good[1], "label": "0"},
            {"id": "b", "image": "images/text.png", "mask": good[1], "label": "0"},
            {"id": "c", "image": good[0], "mask": "masks/small.png", "label": "1"},
        ],
    )
    pre = Preprocessing(image_size=(24, 32), resize=None)
    dataset = LabelledDataset.from_manifest(tmp_path / "m.csv", preprocessing=pre)
    batch = collate([dataset[i] for i in range(3)])
    assert batch["ok"].tolist() == [True, False, False]
    assert batch["status"] == ["ok", "error", "invalid"]
    assert "not an image file PIL can read" in batch["reason"][1]
    assert batch["reason"][2] == "mask is 10x10 but image is 32x24 (WxH)"
    assert batch["image"].shape == (1, 3, 24, 32)
    assert batch["label"].tolist() == [0, 0, 1]


def test_a_box_moves_with_its_image_exactly_like_the_same_mask(tmp_path):
    # the same subject as a box and as a mask: both land on rows 10:30, cols 35:50 after resize + crop
    image, mask = write_pair(tmp_path, "wide", size=(100, 200), box=(20, 120, 60, 160))
    box = {"x_min": "120", "y_min": "20", "x_max": "160", "y_max": "60", "mask": ""}
    odd = {"x_min": "121", "y_min": "21", "x_max": "161", "y_max": "61", "mask": ""}  # half-pixel after halving
    write_manifest(
        tmp_path / "m.csv",
        [
            {"id": "mask", "image": image, "label": "0", **dict.fromkeys(box, ""), "mask": mask},
            {"id": "box", "image": image, "label": "0", **box},
            {"id": "odd", "image": image, "label": "0", **odd},
        ],
    )
    pre = Preprocessing(image_size=(50, 50), resize=50, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    dataset = LabelledDataset.from_manifest(tmp_path / "m.csv", preprocessing=pre)
    expected = torch.zeros(50, 50, dtype=torch.bool)
    expected[10:30, 35:50] = True
    assert torch.equal(dataset[0]["mask"], expected)
    assert torch.equal(dataset[1]["mask"], expected)
    # corners 60.5..80.5 -> 35.5..55.5 after the crop: pixel centres 35.5 ... 54.5 are inside
    shifted = torch.zeros(50, 50, dtype=torch.bool)
    shifted[10:30, 35:55] = True
    assert torch.equal(dataset[2]["mask"], shifted)


def test_resized_masks_carry_a_note(tmp_path):
    image, _ = write_pair(tmp_path, "a", size=(24, 32))
    half = np.zeros((12, 16), np.uint8)
    half[2:5, 4:8] = 255
    Image.fromarray(half).save(tmp_path / "masks" / "half.png")
    write_manifest(tmp_path / "m.csv", [{"image": image, "mask": "masks/half.png", "label": "0"}])
    pre = Preprocessing(image_size=(24, 32), resize=None)
    strict = LabelledDataset.from_manifest(tmp_path / "m.csv", preprocessing=pre)[0]
    assert (strict["status"], strict["reason"]) == (
        "invalid",
        "mask is 16x12 but image is 32x24 (WxH); same aspect ratio, --resize-masks would resize it",
    )
    item = LabelledDataset.from_manifest(tmp_path / "m.csv", preprocessing=pre, resize_masks=True)[0]
    assert "status" not in item and item["note"] == "mask resized from 16x12 to 32x24 (WxH, nearest)"
    expected = torch.zeros(24, 32, dtype=torch.bool)
    expected[4:10, 8:16] = True
    assert torch.equal(item["mask"], expected)


def test_two_workers_carry_every_sample_and_fault_in_order(tmp_path):
    rows = []
    for i in range(5):
        image, mask = write_pair(tmp_path, f"s{i}")
        rows.append({"id": f"s{i}", "image": image, "mask": mask, "label": str(i % 2)})
    (tmp_path / "images" / "s1.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    rows[3]["mask"] = "masks/gone.png"
    write_manifest(tmp_path / "m.csv", rows)
    pre = Preprocessing(image_size=(24, 32), resize=None)
    dataset = LabelledDataset.from_manifest(tmp_path / "m.csv", preprocessing=pre, allow_missing=True)
    serial = list(loader(dataset, batch_size=2, num_workers=0))
    parallel = list(loader(dataset, batch_size=2, num_workers=2))
    assert [b["id"] for b in parallel] == [["s0", "s1"], ["s2", "s3"], ["s4"]]
    statuses = [s for b in parallel for s in b["status"]]
    assert statuses == ["ok", "error", "ok", "error", "ok"]
    reasons = [r for b in parallel for r in b["reason"]]
    assert reasons[1] == f"image is not an image file PIL can read: {tmp_path / 'images' / 's1.png'}"
    assert reasons[3] == f"mask file not found: {tmp_path / 'masks' / 'gone.png'}"
    for a, b in zip(serial, parallel, strict=True):
        assert a["status"] == b["status"] and a["reason"] == b["reason"]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])


def test_default_workers():
    assert default_workers(64, 32) == 0  # two batches: starting processes costs more than it saves
    assert 1 <= default_workers(65, 32) <= 4
