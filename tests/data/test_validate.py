"""``validate`` and ``auditcam validate``: every problem of a dataset in one table, exit 0/1/2."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from auditcam import cli
from auditcam.data import Problem, format_table, validate
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
    assert out[1].split() == ["where", "column", "problem", "detail"]
    assert out[2].split(None, 5)[:5] == ["row", "2", "(line", "3)", "image"]
    assert len(out) == 2 + len(EXPECTED) + 1 and out[-1].startswith("8 problem(s).")

    clean = write_manifest(
        tmp_path / "clean.csv", [{"image": "images/good.png", "mask": "masks/good.png", "label": "0"}]
    )
    assert cli.main(["validate", "--data", str(clean), "--no-progress"]) == cli.EXIT_PASS
    assert capsys.readouterr().out.splitlines() == [
        f"{clean} (csv): 1 samples checked, class indices",
        "OK: no problems found",
    ]

    assert cli.main(["validate", "--data", str(tmp_path / "nope.csv")]) == cli.EXIT_INPUT
    assert capsys.readouterr().err.strip() == f"auditcam: error: --data {tmp_path / 'nope.csv'}: manifest not found"
