"""The sample rows every format reads into, and the per-row checks they share: class labels
(one per sample, or a ``;``-separated list for a multi-label sample), file existence, unique ids,
group attribute values."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditcam.data.problems import DUPLICATE_ID, MISSING_FILE, UNKNOWN_LABEL, Problems
from auditcam.data.subjects import Subject
from auditcam.errors import InputError

UNKNOWN_GROUP = "unknown"
# Columns of samples.parquet: an attribute with one of these names would be overwritten.
RESERVED_COLUMNS = frozenset(
    {
        "index",
        "id",
        "image",
        "mask",
        "method",
        "label",
        "label_name",
        "pred",
        "pred_name",
        "correct",
        "confidence",
        "status",
        "reason",
        "note",
        "target",
        "subject_share",
        "subject_area",
        "focus_lift",
        "rank_accuracy",
        "pointing_hit",
        "iou",
        "background_reliant",
        "border_share",
        "has_subject",
    }
)
# samples.parquet's extra columns of a multi-label audit, and the manifest's labels column
MULTILABEL_COLUMNS = frozenset({"labels", "position", "true_labels", "pred_labels"})
LABEL_SEPARATOR = ";"
TASKS = ("single", "multilabel")  # one class per image (softmax), several labels per image (sigmoid)
SINGLE_LABEL_NOTE = "every sample has one label ({why}): a multi-label audit of single-label data"
ID_HINT = "ids must be unique — add or fix the id column"
MISSING_HINT = "fix the path or pass --allow-missing to record the sample as an error and go on"


@dataclass(frozen=True)
class Row:
    """One sample, resolved and checked: where it came from, its files, label and attributes.

    A multi-label row has ``labels`` (its true classes, possibly none; ``label`` is then -1) and
    either one subject per label (``label_subjects``, aligned with ``labels``) or ``subject`` as
    the subject of every label explained on it."""

    index: int
    id: str
    image: str
    image_path: Path
    label: int
    subject: Subject
    attributes: dict[str, str] = field(default_factory=dict)
    where: str = ""
    labels: tuple[int, ...] | None = None
    label_subjects: tuple[Subject, ...] = ()

    @property
    def classes_of(self) -> tuple[int, ...]:
        """The sample's true classes: its one label, or its labels."""
        return (self.label,) if self.labels is None else self.labels


def read_classes(path: str | Path) -> tuple[str, ...]:
    """A classes file: one class name per line, in the model's output order."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--classes {path}: file not found")
    names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if not names:
        raise InputError(f"--classes {path}: no class names (expected one per line)")
    return names


def parse_label(raw: str, classes: Sequence[str] | None) -> int:
    """A class name (known to ``classes``) or a class index -> index; ValueError says why not."""
    text = raw.strip()
    if classes is not None and text in classes:
        return list(classes).index(text)
    try:
        label = int(text)
    except ValueError:
        if not text:
            raise ValueError("empty label") from None
        if classes is None:
            raise ValueError(
                f"{text!r} is a class name but no class list was given; "
                "pass --classes FILE (one name per line, in the model's output order)"
            ) from None
        known = ", ".join(classes[:10]) + (" ..." if len(classes) > 10 else "")
        raise ValueError(f"unknown class {text!r}; known: {known}") from None
    if label < 0 or (classes is not None and label >= len(classes)):
        raise ValueError(f"class index {label} is out of range")
    return label


def parse_labels(raw: str, classes: Sequence[str] | None) -> tuple[int, ...]:
    """A multi-label cell (``cat;dog``: class names or indices separated by ``;``) -> class
    indices in the given order without repeats; an empty cell is a sample with no label.
    ValueError (from :func:`parse_label`) says which part is unusable."""
    text = raw.strip()
    if not text:
        return ()
    parts = text.split(LABEL_SEPARATOR)
    if any(not part.strip() for part in parts):
        raise ValueError(f"an empty label between {LABEL_SEPARATOR!r} in {text!r}")
    return tuple(dict.fromkeys(parse_label(part, classes) for part in parts))


def check_labels(
    problems: Problems, where: str, column: str, raw: str, classes: Sequence[str] | None
) -> tuple[int, ...] | None:
    """The labels' indices, or None after reporting why they are unusable."""
    try:
        return parse_labels(raw, classes)
    except ValueError as exc:
        problems.report(where, column, UNKNOWN_LABEL, str(exc))
        return None


def check_label(problems: Problems, where: str, column: str, raw: str, classes: Sequence[str] | None) -> int | None:
    """The label's index, or None after reporting why it is unusable."""
    try:
        return parse_label(raw, classes)
    except ValueError as exc:
        problems.report(where, column, UNKNOWN_LABEL, str(exc))
        return None


def check_file(problems: Problems, where: str, column: str, path: Path, shown: str, *, allow_missing: bool) -> bool:
    """False when the file is missing and that was reported (``allow_missing`` keeps the row for
    a per-sample error record, except when collecting problems for ``validate``)."""
    if path.is_file() or (allow_missing and not problems.collect):
        return True
    problems.report(where, column, MISSING_FILE, f"file not found: {shown} (looked in {path.parent})", MISSING_HINT)
    return False


def check_unique(problems: Problems, seen: dict[str, str], sample_id: str, where: str, column: str, cite: str) -> bool:
    """False when ``sample_id`` was seen before (reported citing the first place, e.g. 'row 1')."""
    if sample_id in seen:
        problems.report(where, column, DUPLICATE_ID, f"duplicate id {sample_id!r} (also {seen[sample_id]})", ID_HINT)
        return False
    seen[sample_id] = cite
    return True


def cell_text(value: Any) -> str:
    """A table cell as text: null and NaN are empty, integral floats lose their '.0' (Parquet
    stores an integer column with nulls as floats)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def attribute_value(value: Any) -> str:
    """A group attribute cell -> its group name; empty, null and NaN become ``unknown``."""
    return cell_text(value) or UNKNOWN_GROUP
