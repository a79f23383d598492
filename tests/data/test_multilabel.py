"""Multi-label datasets: the manifest's ``labels`` column (names, indices, empty cells), per-label
``mask:<class>`` columns or one shared mask, a user Dataset's ``labels``/``masks``, and bad cells
named by file, row and column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from auditcam.data import LabelledDataset, WrappedDataset, as_audit_dataset, collate, open_dataset, validate
from auditcam.data.problems import BAD_VALUE, NO_SAMPLES, UNKNOWN_LABEL
from auditcam.data.rows import parse_labels
from auditcam.errors import InputError
from auditcam.models import Preprocessing
from tests.data.conftest import write_manifest, write_pair

H, W = 24, 32
SAME_SIZE = Preprocessing(image_size=(H, W), resize=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
CLASSES = ("cat", "dog", "bird")


def _mask(folder: Path, name: str, box: tuple[int, int, int, int]) -> tuple[str, np.ndarray]:
    mask = np.zeros((H, W), bool)
    y0, x0, y1, x1 = box
    mask[y0:y1, x0:x1] = True
    Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / f"{name}.png")
    return f"masks/{name}.png", mask


@pytest.fixture
def per_label(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Four samples: cat+dog with a mask each, dog alone by index with its mask, none, bird without a mask."""
    tmp_path = tmp_path / "multilabel"
    tmp_path.mkdir()
    images = [write_pair(tmp_path, f"s{i}")[0] for i in range(4)]
    cat, cat_mask = _mask(tmp_path, "s0_cat", (2, 2, 10, 12))
    dog, dog_mask = _mask(tmp_path, "s0_dog", (12, 16, 20, 30))
    dog1, dog1_mask = _mask(tmp_path, "s1_dog", (0, 0, 5, 5))
    rows = [
        {"image": images[0], "labels": "cat;dog", "mask:cat": cat, "mask:dog": dog, "site": "A"},
        {"image": images[1], "labels": "1", "mask:cat": "", "mask:dog": dog1, "site": "B"},
        {"image": images[2], "labels": "", "mask:cat": "", "mask:dog": "", "site": "A"},
        {"image": images[3], "labels": "bird", "mask:cat": "", "mask:dog": "", "site": "B"},
    ]
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    return manifest, {"cat": cat_mask, "dog": dog_mask, "dog1": dog1_mask}


def test_a_labels_cell_takes_names_and_indices_and_may_be_empty():
    assert parse_labels("cat;dog", CLASSES) == (0, 1)
    assert parse_labels(" 2 ; cat ", CLASSES) == (2, 0)
    assert parse_labels("dog;dog", CLASSES) == (1,)  # a repeat is one label
    assert parse_labels("", CLASSES) == ()
    assert parse_labels("0;2", None) == (0, 2)
    with pytest.raises(ValueError, match="an empty label between ';'"):
        parse_labels("cat;;dog", CLASSES)


def test_per_label_masks_belong_to_their_labels(per_label):
    manifest, masks = per_label
    ds = open_dataset(manifest, classes=CLASSES, preprocessing=SAME_SIZE, task="multilabel")
    assert ds.multilabel and ds.notes == () and ds.attributes == ("site",)
    assert [row.labels for row in ds.rows] == [(0, 1), (1,), (), (2,)]
    first, second, empty, bird = (ds[i] for i in range(4))
    assert first["labels"] == [0, 1] and "label" not in first
    assert torch.equal(first["masks"][first["mask_of"][0]], torch.from_numpy(masks["cat"]))
    assert torch.equal(first["masks"][first["mask_of"][1]], torch.from_numpy(masks["dog"]))
    assert first["shared_mask"] == -1  # a predicted bird is no label of this sample: no subject
    assert first["shared_reason"] == "no subject: not one of the sample's labels"
    assert second["labels"] == [1] and torch.equal(
        second["masks"][second["mask_of"][0]], torch.from_numpy(masks["dog1"])
    )
    assert empty["labels"] == [] and len(empty["masks"]) == 0 and "status" not in empty
    assert bird["mask_of"] == [-1] and bird["subject_reasons"] == ["no subject"]
    # the batch carries the masks of each sample's own labels, not one per class of the model
    batch = collate([first, second, empty, bird])
    assert batch["labels"] == [[0, 1], [1], [], [2]] and batch["masks"].shape == (3, H, W)
    assert batch["mask_of"] == [[0, 1], [2], [], [-1]]
    assert torch.equal(batch["masks"][2], torch.from_numpy(masks["dog1"]))


def test_one_mask_column_is_the_subject_of_every_label(tmp_path):
    image, mask = write_pair(tmp_path, "s0")
    manifest = write_manifest(tmp_path / "m.csv", [{"image": image, "mask": mask, "labels": "cat;bird"}])
    item = open_dataset(manifest, classes=CLASSES, preprocessing=SAME_SIZE, task="multilabel")[0]
    expected = torch.from_numpy(np.asarray(Image.open(tmp_path / mask)) > 0)
    assert item["mask_of"] == [0, 0] and item["shared_mask"] == 0 and len(item["masks"]) == 1
    assert torch.equal(item["masks"][0], expected)


def test_an_unknown_class_names_file_row_and_column(per_label):
    manifest, _ = per_label
    text = manifest.read_text(encoding="utf-8").replace("bird", "cow")
    manifest.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as error:
        open_dataset(manifest, classes=CLASSES, preprocessing=SAME_SIZE, task="multilabel")
    assert str(error.value) == f"{manifest} row 4 (line 5), column 'labels': unknown class 'cow'; known: cat, dog, bird"
    found = validate(manifest, classes=CLASSES, multilabel=True)
    assert [(p.where, p.column, p.kind) for p in found.problems] == [
        ("row 4 (line 5)", "labels", UNKNOWN_LABEL),
        ("class 'bird'", "", NO_SAMPLES),  # the row that had the only bird is unusable
    ]


def test_a_mask_for_a_class_the_row_lacks_is_a_problem(per_label):
    manifest, _ = per_label
    text = manifest.read_text(encoding="utf-8").replace("images/s1.png,1,", "images/s1.png,1,masks/s0_cat.png")
    manifest.write_text(text, encoding="utf-8")
    found = validate(manifest, classes=CLASSES, multilabel=True)
    assert [(p.where, p.column, p.kind) for p in found.problems] == [("row 2 (line 3)", "mask:cat", BAD_VALUE)]
    with pytest.raises(InputError, match=r"row 2 \(line 3\), column 'mask:cat': a mask for a class that is not one"):
        open_dataset(manifest, classes=CLASSES, preprocessing=SAME_SIZE, task="multilabel")


def test_a_labels_column_needs_the_multilabel_task_and_a_label_column_reads_as_one_label(dataset_dir, per_label):
    manifest, _ = per_label
    with pytest.raises(InputError, match="the 'labels' column holds several labels per sample: set `task`") as error:
        open_dataset(manifest, classes=CLASSES)
    assert error.value.parameter == "task"
    single = open_dataset(dataset_dir / "manifest.csv", task="multilabel", preprocessing=SAME_SIZE)
    assert [row.labels for row in single.rows] == [(0,), (1,), (1,)]
    assert single.notes == (
        "every sample has one label (manifest.csv has a 'label' column, not 'labels'): a multi-label audit of "
        "single-label data",
    )
    item = single[0]
    assert item["labels"] == [0] and item["mask_of"] == [0] and item["masks"][0].any()


def test_an_unknown_mask_column_class_is_a_whole_input_fault(per_label):
    manifest, _ = per_label
    manifest.write_text(manifest.read_text(encoding="utf-8").replace("mask:dog", "mask:cow"), encoding="utf-8")
    with pytest.raises(InputError, match=r"column 'mask:cow': unknown class 'cow'"):
        open_dataset(manifest, classes=CLASSES, task="multilabel")


def test_a_user_dataset_gives_labels_and_a_mask_per_label():
    class Labelled(Dataset):
        def __len__(self) -> int:
            return 3

        def __getitem__(self, index: int) -> dict:
            image = torch.zeros(3, 8, 8)
            if index == 0:
                masks = [torch.eye(8), None]
                return {"image": image, "labels": ["dog", 0], "masks": masks}
            if index == 1:
                return {"image": image, "labels": [], "mask": torch.ones(8, 8)}
            return {"image": image, "labels": [1], "masks": torch.ones(2, 8, 8)}  # two masks for one label

    ds = WrappedDataset(Labelled(), classes=CLASSES)
    assert ds.multilabel and as_audit_dataset(ds) is ds
    first, second, broken = ds[0], ds[1], ds[2]
    assert first["labels"] == [1, 0] and first["mask_of"] == [0, -1] and first["shared_mask"] == -1
    assert torch.equal(first["masks"][0], torch.eye(8, dtype=torch.bool))
    assert second["labels"] == [] and second["shared_mask"] == 0
    assert broken["status"] == "error"
    assert broken["reason"] == "dataset item 2: 'masks' has 2 masks for 1 labels; give one per label (None: none)"


def test_the_rows_say_the_labels_in_the_resume_fingerprint(per_label):
    from auditcam.run.runfolder import dataset_identity

    manifest, _ = per_label
    ds = LabelledDataset.open(manifest, classes=CLASSES, task="multilabel")
    changed = manifest.read_text(encoding="utf-8").replace("cat;dog", "dog;cat")
    manifest.write_text(changed, encoding="utf-8")
    again = LabelledDataset.open(manifest, classes=CLASSES, task="multilabel")
    assert dataset_identity(ds)["rows_sha256"] != dataset_identity(again)["rows_sha256"]
