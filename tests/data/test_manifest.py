"""CSV manifests: columns, labels, attributes, and one clear line for whole-input faults."""

from __future__ import annotations

import pytest

from auditcam.data import read_classes, read_manifest
from auditcam.errors import InputError
from tests.data.conftest import write_manifest, write_pair


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
        ("image,label\na.png,0\n", "missing column 'mask'"),
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
