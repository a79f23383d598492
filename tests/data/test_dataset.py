"""Decoding, joint preprocessing of image and mask, and per-sample faults carried through collate."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from auditcam.data import LabelledDataset, collate
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
