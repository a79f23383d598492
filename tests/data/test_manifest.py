"""CSV manifests: columns, labels, attributes, and one clear line for whole-input faults."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from auditcam.data import Box, read_classes, read_manifest
from auditcam.errors import InputError
from tests.data.conftest import write_manifest, write_pair, write_parquet


def test_rows_resolve_paths_labels_and_attributes(dataset_dir):
    rows = read_manifest(dataset_dir / "manifest.csv")
    assert [r.label for r in rows] == [0, 1, 1]
    assert rows[0].image_path == dataset_dir / "images" / "s0.png"
    assert rows[0].id == "images/s0.png"  # no id column: the image path is the id
    assert [r.attributes for r in rows] == [{"site": "A"}, {"site": "B"}, {"site": "unknown"}]


def test_class_names_need_a_class_list(tmp_path):
    image, mask = write_pair(tmp_path, "a")
    manifest = write_manifest(tmp_path / "m.csv", [{"image": image, "mask": mask, "label": "dog"}])
    assert read_manifest(manifest, ("cat", "dog"))[0].label == 1
    with pytest.raises(InputError, match=r"m.csv row 1 \(line 2\), column 'label': 'dog' is a class name .*--classes"):
        read_manifest(manifest)
    with pytest.raises(InputError, match=r"row 1 \(line 2\), column 'label': unknown class 'dog'; known: cat, cow"):
        read_manifest(manifest, ("cat", "cow"))


def test_a_missing_file_names_the_row_and_path(dataset_dir):
    write_manifest(
        dataset_dir / "manifest.csv",
        [
            {"image": "images/s0.png", "mask": "masks/s0.png", "label": "0"},
            {"image": "images/gone.png", "mask": "masks/s1.png", "label": "1"},
        ],
    )
    with pytest.raises(InputError) as info:
        read_manifest(dataset_dir / "manifest.csv")
    message = str(info.value)
    assert "manifest.csv row 2 (line 3), column 'image': file not found: images/gone.png" in message
    assert "\n" not in message
    rows = read_manifest(dataset_dir / "manifest.csv", allow_missing=True)
    assert len(rows) == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("image,label,x_min,y_min\na.png,0,1,2\n", "missing column 'x_max', 'y_max'"),
        ("image,mask,label,status\na.png,b.png,0,x\n", "column 'status' clashes with an output column"),
        ("image,mask,label\n", "the manifest has no rows"),
    ],
)
def test_bad_manifests_are_input_errors(tmp_path, content, message):
    (tmp_path / "m.csv").write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        read_manifest(tmp_path / "m.csv")


def test_missing_manifest(tmp_path):
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(tmp_path / "nope.csv")


def test_duplicate_ids_are_refused(tmp_path):
    image, mask = write_pair(tmp_path, "a")
    manifest = write_manifest(
        tmp_path / "m.csv",
        [
            {"id": "x", "image": image, "mask": mask, "label": "0"},
            {"id": "x", "image": image, "mask": mask, "label": "1"},
        ],
    )
    with pytest.raises(InputError, match=r"row 2 \(line 3\), column 'id': duplicate id 'x' \(also row 1\)"):
        read_manifest(manifest)


def test_out_of_range_label(tmp_path):
    image, mask = write_pair(tmp_path, "a")
    manifest = write_manifest(tmp_path / "m.csv", [{"image": image, "mask": mask, "label": "4"}])
    with pytest.raises(InputError, match="class index 4 is out of range"):
        read_manifest(manifest, ("a", "b"))


def test_classes_file(tmp_path):
    (tmp_path / "classes.txt").write_text("cat\n\ndog\n", encoding="utf-8")
    assert read_classes(tmp_path / "classes.txt") == ("cat", "dog")
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="no class names"):
        read_classes(tmp_path / "empty.txt")


def test_parquet_manifest_with_nulls_typed_labels_and_boxes(tmp_path):
    image, _ = write_pair(tmp_path, "a")
    manifest = write_parquet(
        tmp_path / "m.parquet",
        {
            "image": [image, image, image],
            "id": ["p", "q", "r"],
            "label": [0, 1, 1],
            "x_min": [4, 0.5, 2],
            "y_min": [8, 0, 2],
            "x_max": [12, 3.5, 4],
            "y_max": [20, 3, 6],
            "skin_tone": ["III", None, "V"],
            "age": [31.0, float("nan"), 40.0],
            "site": [1, 2, None],
        },
    )
    rows = read_manifest(manifest)
    assert [r.label for r in rows] == [0, 1, 1]
    assert rows[0].subject == Box(4, 8, 12, 20) and rows[1].subject == Box(0.5, 0, 3.5, 3)
    assert [r.attributes for r in rows] == [
        {"skin_tone": "III", "age": "31", "site": "1"},
        {"skin_tone": "unknown", "age": "unknown", "site": "2"},
        {"skin_tone": "V", "age": "40", "site": "unknown"},
    ]


def test_parquet_written_by_pandas_has_no_index_attribute(tmp_path):
    image, mask = write_pair(tmp_path, "a")
    frame = pd.DataFrame({"image": [image], "mask": [mask], "label": [0], "site": [np.nan]}, index=[7])
    frame.to_parquet(tmp_path / "m.parquet")
    [row] = read_manifest(tmp_path / "m.parquet")
    assert row.attributes == {"site": "unknown"}


def test_paths_with_spaces_and_non_ascii_characters(tmp_path):
    folder = tmp_path / "données brutes"
    folder.mkdir()
    image, mask = write_pair(folder, "çà et là 1")
    manifest = write_manifest(folder / "m.csv", [{"image": image, "mask": mask, "label": "0", "site": "Zürich"}])
    [row] = read_manifest(manifest)
    assert row.image == "images/çà et là 1.png" and row.id == row.image
    assert row.image_path == folder / "images" / "çà et là 1.png" and row.image_path.is_file()
    assert row.attributes == {"site": "Zürich"}


@pytest.mark.parametrize(
    ("cells", "line"),
    [
        ({"x_min": "a"}, "column 'x_min': 'a' is not a number"),
        ({"x_max": "3"}, "column 'x_max': 3 is less than x_min 4"),
        ({"y_max": ""}, "column 'y_max': empty box coordinate; give all four or none"),
        ({"mask": "masks/a.png"}, "column 'mask': both a mask and a box are given; keep one"),
    ],
)
def test_bad_boxes_name_the_row_and_column(tmp_path, cells, line):
    image, _ = write_pair(tmp_path, "a")
    row = {"image": image, "label": "0", "mask": "", "x_min": "4", "y_min": "8", "x_max": "12", "y_max": "20"}
    manifest = write_manifest(tmp_path / "m.csv", [row, {**row, **cells}])
    with pytest.raises(InputError) as info:
        read_manifest(manifest)
    assert str(info.value) == f"{manifest} row 2 (line 3), {line}"


def test_unknown_label_and_missing_file_lines_are_exact(tmp_path):
    image, mask = write_pair(tmp_path, "a")
    manifest = write_manifest(
        tmp_path / "m.csv",
        [
            {"id": "1", "image": image, "mask": mask, "label": "cat"},
            {"id": "2", "image": image, "mask": mask, "label": "dog"},
        ],
    )
    with pytest.raises(InputError) as info:
        read_manifest(manifest, ("cat", "cow"))
    assert str(info.value) == f"{manifest} row 2 (line 3), column 'label': unknown class 'dog'; known: cat, cow"
    write_manifest(manifest, [{"image": image, "mask": "masks/gone.png", "label": "0"}])
    with pytest.raises(InputError) as info:
        read_manifest(manifest)
    assert str(info.value) == (
        f"{manifest} row 1 (line 2), column 'mask': file not found: masks/gone.png (looked in {tmp_path / 'masks'}); "
        "fix the path or pass --allow-missing to record the sample as an error and go on"
    )


def test_subject_columns_are_optional_and_an_empty_cell_is_no_subject(tmp_path):
    from auditcam.data import open_dataset
    from auditcam.data.subjects import NoSubject
    from auditcam.models import Preprocessing

    rows = []
    for i in range(3):
        image, mask = write_pair(tmp_path, f"s{i}")
        rows.append({"image": image, "mask": mask if i != 1 else "", "label": "0"})
    partial = write_manifest(tmp_path / "partial.csv", rows)
    bare = write_manifest(tmp_path / "bare.csv", [{"image": r["image"], "label": r["label"]} for r in rows])
    assert all(isinstance(r.subject, NoSubject) for r in read_manifest(bare))
    read = read_manifest(partial)
    assert len(read) == 3 and [isinstance(r.subject, NoSubject) for r in read] == [False, True, False]
    ds = open_dataset(partial, preprocessing=Preprocessing(image_size=(24, 32), resize=None))
    items = [ds[i] for i in range(3)]
    assert [i["has_subject"] for i in items] == [True, False, True]
    assert items[1]["reason"] == "no subject" and "status" not in items[1] and not items[1]["mask"].any()
    assert items[0]["mask"].sum() == 8 * 12  # the others keep their masks
