"""``validate`` and ``auditcam validate``: every problem of a dataset in one table, exit 0/1/2."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from auditcam import cli
from auditcam.data import DataOptions, Problem, format_table, validate
from tests.data.conftest import write_manifest, write_pair


@pytest.fixture
def messy(tmp_path):
    """One good row and one row for each kind of problem; classes cat, cow, bird (bird unused)."""
    good = write_pair(tmp_path, "good")
    write_pair(tmp_path, "empty")
    Image.new("L", (32, 24), 0).save(tmp_path / "masks" / "empty.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "masks" / "small.png")
    (tmp_path / "images" / "text.jpg").write_text("not a photo", encoding="utf-8")
    box = dict.fromkeys(("x_min", "y_min", "x_max", "y_max"), "")
    rows = [
        {"id": "a", "image": good[0], "mask": good[1], "label": "cat", **box},
        {"id": "b", "image": "images/gone.png", "mask": good[1], "label": "cat", **box},
        {"id": "c", "image": "images/text.jpg", "mask": good[1], "label": "cat", **box},
        {"id": "d", "image": good[0], "mask": "masks/small.png", "label": "cow", **box},
        {"id": "e", "image": "images/empty.png", "mask": "masks/empty.png", "label": "cat", **box},
        {"id": "f", "image": good[0], "mask": good[1], "label": "dog", **box},
        {"id": "a", "image": good[0], "mask": good[1], "label": "cat", **box},
        {
            "id": "h",
            "image": good[0],
            "mask": "",
            "label": "cat",
            "x_min": "40",
            "y_min": "0",
            "x_max": "50",
            "y_max": "5",
        },
    ]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    (tmp_path / "classes.txt").write_text("cat\ncow\nbird\n", encoding="utf-8")
    return manifest


CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
MASK_FREE_ONLY = "audited on everything mask-free; their subject metrics are not measured"
EXPECTED = [
    ("row 2 (line 3)", "image", "missing file", "file not found: images/gone.png (looked in {root}/images)"),
    ("row 6 (line 7)", "label", "unknown label", "unknown class 'dog'; known: cat, cow, bird"),
    ("row 7 (line 8)", "id", "duplicate id", "duplicate id 'a' (also row 1)"),
    ("row 3 (line 4)", "", "unreadable", "image is not an image file PIL can read: {root}/images/text.jpg"),
    ("row 4 (line 5)", "", "size mismatch", "mask is 10x10 but image is 32x24 (WxH)"),
    ("row 5 (line 6)", "", "empty mask", "empty subject mask"),
    ("row 8 (line 9)", "", "empty mask", "box (40, 0, 50, 5) lies outside the 32x24 image (WxH)"),
    ("class 'bird'", "", "no samples", "no samples of this class"),
]


def test_validate_lists_every_problem_with_its_row(messy):
    result = validate(messy, classes=("cat", "cow", "bird"))
    root = messy.parent
    assert not result.ok and len(result.source.rows) == 5
    assert [tuple(p.__dict__.values()) for p in result.problems] == [
        tuple(text.format(root=root) for text in row) for row in EXPECTED
    ]


def test_format_table_aligns_columns():
    table = format_table(
        [Problem("row 1 (line 2)", "image", "missing file", "x"), Problem("class 'b'", "", "no samples", "y")]
    )
    assert table.splitlines() == [
        "where           column  problem       detail",
        "row 1 (line 2)  image   missing file  x",
        "class 'b'               no samples    y",
    ]


def test_cli_exit_codes_and_table(messy, tmp_path, capsys):
    argv = ["validate", "--data", str(messy), "--classes", str(tmp_path / "classes.txt"), "--no-progress"]
    assert cli.main([*argv, "--workers", "2"]) == cli.EXIT_FAIL
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{messy} (csv): 5 samples checked, 3 classes"
    # read: a and e (empty mask) have a subject, h (box off the image) has none; c and d are unreadable
    assert out[1] == f"subjects: 2 samples with a subject, 1 without ({MASK_FREE_ONLY})"
    assert out[2].split() == ["where", "column", "problem", "detail"]
    assert out[3].split(None, 5)[:5] == ["row", "2", "(line", "3)", "image"]
    assert len(out) == 3 + len(EXPECTED) + 1 and out[-1].startswith("8 problem(s).")

    clean = write_manifest(
        tmp_path / "clean.csv", [{"image": "images/good.png", "mask": "masks/good.png", "label": "0"}]
    )
    assert cli.main(["validate", "--data", str(clean), "--no-progress"]) == cli.EXIT_PASS
    assert capsys.readouterr().out.splitlines() == [
        f"{clean} (csv): 1 samples checked, class indices",
        f"subjects: 1 samples with a subject, 0 without ({MASK_FREE_ONLY})",
        "OK: no problems found",
    ]

    assert cli.main(["validate", "--data", str(tmp_path / "nope.csv")]) == cli.EXIT_INPUT
    assert capsys.readouterr().err.strip() == f"auditcam: error: --data {tmp_path / 'nope.csv'}: manifest not found"


def test_validate_counts_the_samples_with_and_without_a_subject_in_every_format(tmp_path, capsys):
    pairs = [write_pair(tmp_path, name) for name in ("a", "b", "c")]
    # a manifest: a mask, an empty mask cell, a box
    no_box = dict.fromkeys(("x_min", "y_min", "x_max", "y_max"), "")
    rows = [
        {"id": "a", "image": pairs[0][0], "mask": pairs[0][1], "label": "0", **no_box},
        {"id": "b", "image": pairs[1][0], "mask": "", "label": "0", **no_box},
        {"id": "c", "image": pairs[2][0], "mask": "", "label": "1", **dict(zip(no_box, "2299", strict=True))},
    ]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    # COCO: a polygon, a bbox-only instance, and an image labelled a class it has no annotation of
    images = [{"id": i, "file_name": image, "width": 32, "height": 24} for i, (image, _) in enumerate(pairs)]
    annotations = [
        {"id": 1, "image_id": 0, "category_id": 1, "segmentation": [[8, 4, 20, 4, 20, 12, 8, 12]], "area": 96},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [8, 4, 12, 8], "area": 96},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [8, 4, 12, 8], "area": 96},
    ]
    coco = tmp_path / "instances.json"
    coco.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}), "utf-8")
    labels = tmp_path / "labels.csv"
    labels.write_text(f"image,label\n{pairs[0][0]},cat\n{pairs[1][0]},cat\n{pairs[2][0]},dog\n", "utf-8")
    # a folder tree whose masks/ has a mask for one image of three
    tree = tmp_path / "tree"
    for name, (image, _) in zip("abc", pairs, strict=True):
        (tree / "cat").mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / image, tree / "cat" / f"{name}.png")
    (tree / "masks" / "cat").mkdir(parents=True)
    shutil.copy(tmp_path / pairs[0][1], tree / "masks" / "cat" / "a.png")

    counts = {
        "csv": validate(manifest),
        "coco": validate(coco, options=DataOptions(labels=labels)),
        "folder": validate(tree),
    }
    assert {k: (v.with_subject, v.without_subject) for k, v in counts.items()} == {
        "csv": (2, 1),
        "coco": (2, 1),
        "folder": (1, 2),
    }
    assert [v.problems for v in counts.values()] == [(), (), ()]  # a sample without a subject is no problem
    assert cli.main(["validate", "--data", str(tree), "--no-progress"]) == cli.EXIT_PASS
    line = capsys.readouterr().out.splitlines()[1]
    assert line == f"subjects: 1 samples with a subject, 2 without ({MASK_FREE_ONLY})"
