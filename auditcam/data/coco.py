"""COCO instances JSON (+ images folder) as labelled samples.

Each image is one sample. Its label is a category: from an explicit labels file (CSV ``image``
= the COCO ``file_name``, ``label`` = class name or index; other columns are group attributes;
the samples are exactly that file's rows), or else the category whose instances cover the
largest total area (the annotations' ``area``; ties go to the lower category id). The subject is
the union of the instance masks of that category (polygons or RLE), rasterised by pycocotools at
the image size the JSON declares. Where none of those instances has a segmentation, only a
``bbox``, the subject is their boxes (which ``subject_from_boxes="grabcut"`` refines into a
mask, as it does a manifest's); where some have one, a bbox-only instance joins the mask as its
filled box.

Class names: the given class list, else the categories ordered by id. Extra scalar keys of an
image entry (beyond the standard COCO ones) are group attributes.

Multi-label (``multilabel=True``): every category with an instance in the image is a label (an
image without annotations is a sample with no label), and the subject of each label is the union
of that category's instances; a labels file gives them in a ``labels`` column (``cat;dog``).
"""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torchvision import tv_tensors

from auditcam.data.io import SampleFault, fit_mask, fits
from auditcam.data.problems import BAD_VALUE, SIZE_MISMATCH, UNKNOWN_LABEL, Problems
from auditcam.data.rows import (
    MULTILABEL_COLUMNS,
    RESERVED_COLUMNS,
    SINGLE_LABEL_NOTE,
    Row,
    attribute_value,
    cell_text,
    check_file,
    check_label,
    check_labels,
    check_unique,
)
from auditcam.data.subjects import NO_SUBJECT, Box, Geometry, MaskOptions, NoSubject, NoSubjectFault
from auditcam.errors import InputError

STANDARD_IMAGE_KEYS = frozenset(
    {"id", "file_name", "width", "height", "license", "flickr_url", "coco_url", "date_captured"}
)


@dataclass(frozen=True)
class CocoShapes:
    """The instances of the labelled category in one image: COCO segmentations, and a
    :class:`Box` (pixels, XYXY) for each instance that has only a ``bbox``; ``height`` and
    ``width`` are the image entry's."""

    category: str
    shapes: tuple[Any, ...]
    height: int
    width: int

    @property
    def gives_boxes(self) -> bool:
        """Every instance is a box: the subject is placed as boxes, not as a mask."""
        return bool(self.shapes) and all(isinstance(shape, Box) for shape in self.shapes)

    def place(self, image_hw: tuple[int, int], orientation: int, options: MaskOptions) -> tuple[Geometry, list[str]]:
        if not self.shapes:
            raise NoSubjectFault(f"{NO_SUBJECT}: no {self.category!r} annotation for this image")
        if self.gives_boxes:
            return self._boxes(image_hw, orientation, options)
        segmentations = [shape.polygon() if isinstance(shape, Box) else shape for shape in self.shapes]
        mask = torch.from_numpy(coco_mask(segmentations, self.height, self.width))
        mask, note = fit_mask(mask, image_hw, resize=options.resize, what="annotation", orientation=orientation)
        return tv_tensors.Mask(mask.to(torch.uint8)), [note] if note else []

    def _boxes(self, image_hw: tuple[int, int], orientation: int, options: MaskOptions) -> tuple[Geometry, list[str]]:
        """The boxes on the image (scaled with ``resize`` when the entry declares another size of
        the same aspect ratio); one off the image or of zero area is left out, and when that
        leaves none the sample has no subject, with the first box's reason."""
        notes, placed, faults = [], [], []
        h, w = image_hw
        boxes = list(self.shapes)
        if not fits(
            (self.height, self.width), image_hw, resize=options.resize, what="annotation", orientation=orientation
        ):
            sx, sy = w / self.width, h / self.height
            boxes = [Box(b.x_min * sx, b.y_min * sy, b.x_max * sx, b.y_max * sy) for b in boxes]
            notes.append(f"annotation boxes scaled from {self.width}x{self.height} to {w}x{h} (WxH)")
        for box in boxes:
            try:
                placed.append(box.place(image_hw, orientation, options)[0])
            except NoSubjectFault as fault:
                faults.append(fault)
        if not placed:
            raise faults[0]
        if faults:
            notes.append(
                f"{len(faults)} of {len(boxes)} boxes left out ({faults[0].reason.removeprefix(NO_SUBJECT + ': ')})"
            )
        corners = torch.cat([b.as_subclass(torch.Tensor) for b in placed])
        return tv_tensors.BoundingBoxes(corners, format="XYXY", canvas_size=(h, w)), notes


def coco_mask(segmentations: Sequence[Any], height: int, width: int) -> np.ndarray:
    """bool (height, width): union of COCO segmentations (polygon lists, RLE dicts with list or
    compressed counts)."""
    from pycocotools import mask as mask_utils

    union = np.zeros((height, width), dtype=bool)
    for segmentation in segmentations:
        try:
            with warnings.catch_warnings():  # pycocotools' Cython trips numpy 2's __array__ deprecation
                warnings.simplefilter("ignore", DeprecationWarning)
                if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str | bytes):
                    rle = segmentation
                else:
                    rles = mask_utils.frPyObjects(segmentation, height, width)
                    rle = mask_utils.merge(rles) if isinstance(rles, list) else rles
                decoded = mask_utils.decode(rle)
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise SampleFault("invalid", f"unreadable COCO segmentation ({exc})", BAD_VALUE) from None
        if decoded.shape[:2] != (height, width):
            raise SampleFault(
                "invalid",
                f"an RLE is {decoded.shape[1]}x{decoded.shape[0]} but the image entry says {width}x{height} (WxH)",
                SIZE_MISMATCH,
            )
        union |= decoded.astype(bool).reshape(height, width)
    return union


def _shape(annotation: dict[str, Any]) -> Any:
    """An annotation's segmentation, or its ``bbox`` ``[x, y, width, height]`` as a :class:`Box`
    when it has none; ValueError when that bbox is not four finite numbers with no negative side."""
    segmentation = annotation.get("segmentation")
    if segmentation:
        return segmentation
    x, y, w, h = (float(v) for v in annotation["bbox"])
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
        raise ValueError("a bbox is [x, y, width, height]: four finite numbers, width and height not negative")
    return Box(x, y, x + w, y + h)


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"--data {path}: COCO file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"--data {path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"--data {path}: not a COCO instances file (expected a JSON object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(f"--data {path}: not a COCO instances file: no {key!r} list")
    if not data["images"]:
        raise InputError(f"--data {path}: the COCO file has no images")
    return data


def _categories(path: Path, data: dict[str, Any]) -> dict[int, str]:
    try:
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    except (KeyError, TypeError, ValueError):
        raise InputError(f"--data {path}: every category needs an integer 'id' and a 'name'") from None
    if not categories:
        raise InputError(f"--data {path}: the COCO file has no categories")
    return categories


def _image_entries(problems: Problems, data: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    """Image id -> entry, for the entries that have what a sample needs."""
    entries = {}
    for i, entry in enumerate(data["images"]):
        if not isinstance(entry, dict) or any(k not in entry for k in ("id", "file_name", "width", "height")):
            problems.report(f"images[{i}]", "", BAD_VALUE, "an image needs 'id', 'file_name', 'width' and 'height'")
            continue
        entries[entry["id"]] = entry
    return entries


def _shapes_by_image(problems: Problems, data: dict[str, Any], images: dict, categories: dict) -> dict:
    """(image id, category id) -> segmentations, and the total area per (image, category)."""
    shapes: dict[Any, dict[int, list[Any]]] = defaultdict(lambda: defaultdict(list))
    areas: dict[Any, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for i, ann in enumerate(data["annotations"]):
        place = f"annotations[{i}]"
        try:
            image_id, category = ann["image_id"], int(ann["category_id"])
            shape = _shape(ann)
        except (KeyError, TypeError, ValueError) as exc:
            detail = str(exc) if str(exc).startswith("a bbox is") else "a segmentation or a bbox"
            problems.report(place, "", BAD_VALUE, f"an annotation needs 'image_id', 'category_id' and {detail}")
            continue
        if image_id not in images or category not in categories:
            missing = f"image_id {image_id!r}" if image_id not in images else f"category_id {category}"
            problems.report(place, "", BAD_VALUE, f"{missing} is not in the file")
            continue
        shapes[image_id][category].append(shape)
        bbox = ann.get("bbox") or (0, 0, 0, 0)
        areas[image_id][category] += float(ann.get("area", bbox[2] * bbox[3]))
    return {"shapes": shapes, "areas": areas}


def _attributes(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in entry.items()
        if k not in STANDARD_IMAGE_KEYS and (v is None or isinstance(v, str | int | float | bool))
    }


def _read_labels_file(path: Path, multilabel: bool) -> tuple[pd.DataFrame, str]:
    """The labels file and its label column (``labels`` of a multi-label file, else ``label``)."""
    if not path.is_file():
        raise InputError(f"--coco-labels {path}: file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"--coco-labels {path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    label = "labels" if multilabel and "labels" in frame.columns and "label" not in frame.columns else "label"
    missing = [c for c in ("image", label) if c not in frame.columns]
    if missing:
        raise InputError(f"--coco-labels {path}: missing column {missing[0]!r}; it needs columns image, {label}")
    return frame, label


def coco_rows(
    path: str | Path,
    classes: Sequence[str] | None = None,
    *,
    images: str | Path | None = None,
    labels: str | Path | None = None,
    allow_missing: bool = False,
    problems: Problems | None = None,
    multilabel: bool = False,
    notes: list[str] | None = None,
) -> tuple[list[Row], list[str], tuple[str, ...]]:
    """Read a COCO instances file; return its rows, attribute names and class names
    (``multilabel``: every category of an image is a label; see the module's docstring)."""
    path = Path(path)
    problems = problems or Problems(str(path))
    data = _load_json(path)
    categories = _categories(path, data)
    class_names = tuple(classes) if classes is not None else tuple(categories[c] for c in sorted(categories))
    category_of_name = {name: cid for cid, name in sorted(categories.items(), reverse=True)}
    root = Path(images) if images is not None else path.parent
    entries = _image_entries(problems, data)
    found = _shapes_by_image(problems, data, entries, categories)
    by_file = {str(e["file_name"]): e for e in entries.values()}

    label_column = "label"
    if labels is not None:
        table, label_column = _read_labels_file(Path(labels), multilabel)
        wanted = [
            (f"labels file row {i + 1} (line {i + 2})", {c: cell_text(v) for c, v in record.items()})
            for i, record in enumerate(table.to_dict("records"))
        ]
        extra = [c for c in table.columns if c not in ("image", label_column)]
        if multilabel and label_column == "label" and notes is not None:
            notes.append(SINGLE_LABEL_NOTE.format(why=f"{Path(labels).name} has a 'label' column, not 'labels'"))
    else:
        wanted = [(None, {"image": str(e["file_name"])}) for e in entries.values()]
        extra = []
    attributes = list(dict.fromkeys([*(k for e in entries.values() for k in _attributes(e)), *extra]))
    reserved = RESERVED_COLUMNS | MULTILABEL_COLUMNS if multilabel else RESERVED_COLUMNS
    clashes = [a for a in attributes if a in reserved]
    if clashes:
        raise InputError(f"{path}: image field {clashes[0]!r} clashes with an output column; rename it")

    rows: list[Row] = []
    seen: dict[str, str] = {}
    for place, record in wanted:
        entry = by_file.get(record["image"])
        if entry is None:
            problems.report(place or "", "image", BAD_VALUE, f"{record['image']!r} is not an image of {path.name}")
            continue
        place = place or f"image {entry['file_name']!r} (id {entry['id']})"
        areas = found["areas"].get(entry["id"], {})
        if multilabel:
            found_labels = _labels(problems, place, record, label_column, areas, categories, class_names)
        else:
            label = _label(problems, place, record, areas, categories, class_names)
            found_labels = None if label is None else (label,)
        if found_labels is None:
            continue
        shapes_of = found["shapes"].get(entry["id"], {})

        def shapes(label: int, entry: dict[str, Any] = entry, shapes_of: dict = shapes_of) -> CocoShapes:
            category = category_of_name.get(class_names[label])
            instances = shapes_of.get(category, []) if category is not None else []
            return CocoShapes(class_names[label], tuple(instances), int(entry["height"]), int(entry["width"]))

        file_name = str(entry["file_name"])
        if not check_file(problems, place, "file_name", root / file_name, file_name, allow_missing=allow_missing):
            continue
        if not check_unique(problems, seen, str(entry["id"]), place, "id", place):
            continue
        values = {**_attributes(entry), **{c: record.get(c) for c in extra}}
        rows.append(
            Row(
                index=len(rows),
                id=str(entry["id"]),
                image=file_name,
                image_path=root / file_name,
                label=-1 if multilabel else found_labels[0],
                subject=NoSubject() if multilabel else shapes(found_labels[0]),
                attributes={a: attribute_value(values.get(a)) for a in attributes},
                where=place,
                labels=found_labels if multilabel else None,
                label_subjects=tuple(shapes(c) for c in found_labels) if multilabel else (),
            )
        )
    return rows, attributes, class_names


def _known_category(
    problems: Problems, place: str, column: str, label: int, categories: dict[int, str], class_names: Sequence[str]
) -> bool:
    """False after reporting a labels-file class that is not a COCO category."""
    if class_names[label] in categories.values():
        return True
    problems.report(place, column, UNKNOWN_LABEL, f"class {class_names[label]!r} is not a COCO category")
    return False


def _label(
    problems: Problems,
    place: str,
    record: dict[str, str],
    areas: dict[int, float],
    categories: dict[int, str],
    class_names: Sequence[str],
) -> int | None:
    """The image's class index: from the labels file, else the category of largest area."""
    if "label" in record:
        label = check_label(problems, place, "label", record["label"], class_names)
        if label is not None and not _known_category(problems, place, "label", label, categories, class_names):
            return None
        return label
    if not areas:
        problems.report(
            place, "", UNKNOWN_LABEL, "no annotations, so no label; give it one with --coco-labels or remove it"
        )
        return None
    category = min(areas, key=lambda c: (-areas[c], c))
    name = categories[category]
    if name not in class_names:
        problems.report(place, "category_id", UNKNOWN_LABEL, f"category {name!r} is not in the class list")
        return None
    return list(class_names).index(name)


def _labels(
    problems: Problems,
    place: str,
    record: dict[str, str],
    column: str,
    areas: dict[int, float],
    categories: dict[int, str],
    class_names: Sequence[str],
) -> tuple[int, ...] | None:
    """A multi-label image's class indices, in class order: from the labels file (``labels``, or
    one ``label``), else every category with an instance in the image (none: no label)."""
    if column in record:
        if column == "labels":
            labels = check_labels(problems, place, column, record[column], class_names)
        else:
            label = check_label(problems, place, column, record[column], class_names)
            labels = None if label is None else (label,)
        if labels is None or not all(
            _known_category(problems, place, column, c, categories, class_names) for c in labels
        ):
            return None
        return labels
    unknown = sorted(categories[c] for c in areas if categories[c] not in class_names)
    if unknown:
        problems.report(place, "category_id", UNKNOWN_LABEL, f"category {unknown[0]!r} is not in the class list")
        return None
    return tuple(sorted(list(class_names).index(categories[c]) for c in areas))
