"""Folder layout root/<class>/<file> with masks in masks/<class>/<stem>.png."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from auditcam.data import detect_format, open_dataset
from auditcam.errors import InputError
from auditcam.models import Preprocessing

SAME_SIZE = Preprocessing(image_size=(8, 8), resize=None)


def _sample(root, relative: str, rows: slice) -> np.ndarray:
    image_path = root / relative
    mask_path = (root / "masks" / relative).with_suffix(".png")
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((8, 8), np.uint8)
    mask[rows, 2:6] = 1
    Image.new("RGB", (8, 8), (10, 20, 30)).save(image_path)
    Image.fromarray(mask).save(mask_path)
    return mask.astype(bool)


@pytest.fixture
def tree(tmp_path):
    masks = {
        "cat/1.jpg": _sample(tmp_path, "cat/1.jpg", slice(0, 2)),
        "dog/a b/é.png": _sample(tmp_path, "dog/a b/é.png", slice(3, 7)),
    }
    (tmp_path / "cat" / "notes.txt").write_text("not an image", encoding="utf-8")
    (tmp_path / ".cache").mkdir()
    return tmp_path, masks


def test_classes_come_from_folders_and_masks_from_the_parallel_tree(tree):
    root, masks = tree
    assert detect_format(root) == "folder"
    ds = open_dataset(root, preprocessing=SAME_SIZE)
    assert ds.classes == ("cat", "dog")
    items = [ds[i] for i in range(len(ds))]
    assert [(i["id"], i["label"]) for i in items] == [("cat/1.jpg", 0), ("dog/a b/é.png", 1)]
    for item in items:
        assert torch.equal(item["mask"], torch.from_numpy(masks[item["id"]]))
    assert open_dataset(root, classes=("dog", "cat", "bird"), preprocessing=SAME_SIZE).rows[0].label == 1


def test_folder_errors_name_the_file_or_folder(tree):
    root, _ = tree
    with pytest.raises(InputError) as info:
        open_dataset(root, classes=("cat",))
    assert str(info.value) == f"{root} folder 'dog': 1 images of unknown class; known: cat"


def test_a_partial_masks_tree_gives_subjects_where_a_mask_exists_and_no_subject_elsewhere(tree):
    root, masks = tree
    (root / "masks" / "cat" / "1.png").unlink()  # only the dog keeps its mask
    ds = open_dataset(root, preprocessing=SAME_SIZE)
    cat, dog = ds[0], ds[1]
    assert len(ds) == 2 and "status" not in cat and cat["image"].shape == (3, 8, 8)  # kept and read
    assert not cat["has_subject"] and cat["reason"] == "no subject" and not cat["mask"].any()
    assert dog["has_subject"] and torch.equal(dog["mask"], torch.from_numpy(masks["dog/a b/é.png"]))


def test_a_tree_without_masks_has_samples_without_subjects(tree):
    root, _ = tree
    shutil.rmtree(root / "masks")
    ds = open_dataset(root, preprocessing=SAME_SIZE)
    assert ds.classes == ("cat", "dog") and len(ds) == 2
    for item in (ds[0], ds[1]):
        assert "status" not in item and item["image"].shape == (3, 8, 8)  # read and predicted
        assert not item["has_subject"] and item["reason"] == "no subject" and not item["mask"].any()
    with pytest.raises(InputError) as info:  # a masks folder asked for by name must exist
        open_dataset(root, masks=root / "segmentations")
    assert str(info.value).startswith(f"--masks {root / 'segmentations'}: masks folder not found")
