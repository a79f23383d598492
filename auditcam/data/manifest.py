"""Read a CSV manifest into validated rows: ``image``, ``label``, ``mask`` (paths relative to the
manifest's folder), optional ``id``; every other column is a group attribute.

Whole-input faults (missing manifest or column, unknown label, missing file) raise
:class:`~auditcam.errors.InputError` with one line naming the file, row and column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from auditcam.errors import InputError

REQUIRED_COLUMNS = ("image", "label", "mask")
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
        "target",
        "subject_share",
        "subject_area",
        "focus_lift",
        "rank_accuracy",
        "pointing_hit",
        "iou",
        "background_reliant",
    }
)
UNKNOWN_GROUP = "unknown"


@dataclass(frozen=True)
class Row:
    """One sample of the manifest, resolved and checked."""

    index: int
    id: str
    image: str
    image_path: Path
    mask_path: Path
    label: int
    attributes: dict[str, str] = field(default_factory=dict)


def where(manifest: Path, index: int, column: str | None = None) -> str:
    """'manifest.csv row 3 (line 4), column 'image'' — how every row error starts."""
    text = f"{manifest} row {index + 1} (line {index + 2})"
    return f"{text}, column {column!r}" if column else text


def read_classes(path: str | Path) -> tuple[str, ...]:
    """A classes file: one class name per line, in the model's output order."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--classes {path}: file not found")
    names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if not names:
        raise InputError(f"--classes {path}: no class names (expected one per line)")
    return names


def _parse_label(raw: str, classes: Sequence[str] | None, manifest: Path, index: int) -> int:
    text = raw.strip()
    if classes is not None and text in classes:
        return list(classes).index(text)
    try:
        label = int(text)
    except ValueError:
        if classes is None:
            raise InputError(
                f"{where(manifest, index, 'label')}: {text!r} is a class name but no class list was "
                "given; pass --classes FILE (one name per line, in the model's output order)"
            ) from None
        raise InputError(
            f"{where(manifest, index, 'label')}: unknown class {text!r}; known: {', '.join(classes[:10])}"
            + (" ..." if len(classes) > 10 else "")
        ) from None
    if label < 0 or (classes is not None and label >= len(classes)):
        raise InputError(f"{where(manifest, index, 'label')}: class index {label} is out of range")
    return label


def read_manifest(path: str | Path, classes: Sequence[str] | None = None, *, allow_missing: bool = False) -> list[Row]:
    """Parse and check a CSV manifest. ``allow_missing`` keeps rows whose files are missing
    (they become per-sample error records) instead of refusing the whole input."""
    manifest = Path(path)
    if not manifest.is_file():
        raise InputError(f"--data {manifest}: manifest not found")
    try:
        frame = pd.read_csv(manifest, dtype=str, keep_default_na=False, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"--data {manifest}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(
            f"{manifest}: missing column {', '.join(map(repr, missing))}; a manifest needs "
            f"columns {', '.join(REQUIRED_COLUMNS)} (found: {', '.join(frame.columns)})"
        )
    attributes = [c for c in frame.columns if c not in (*REQUIRED_COLUMNS, "id")]
    clashes = [c for c in attributes if c in RESERVED_COLUMNS]
    if clashes:
        raise InputError(f"{manifest}: column {clashes[0]!r} clashes with an output column; rename it")
    if frame.empty:
        raise InputError(f"{manifest}: the manifest has no rows")

    root = manifest.parent
    rows: list[Row] = []
    seen: dict[str, int] = {}
    for index, record in enumerate(frame.to_dict("records")):
        paths = {}
        for column in ("image", "mask"):
            value = record[column].strip()
            if not value:
                raise InputError(f"{where(manifest, index, column)}: empty path")
            resolved = root / value
            if not allow_missing and not resolved.is_file():
                raise InputError(
                    f"{where(manifest, index, column)}: file not found: {value} (looked in {root}); "
                    "fix the path or pass --allow-missing to record the sample as an error and go on"
                )
            paths[column] = resolved
        sample_id = record.get("id", "").strip() or record["image"].strip()
        if sample_id in seen:
            raise InputError(
                f"{where(manifest, index, 'id')}: duplicate id {sample_id!r} (also row {seen[sample_id] + 1}); "
                "ids must be unique — add an id column"
            )
        seen[sample_id] = index
        rows.append(
            Row(
                index=index,
                id=sample_id,
                image=record["image"].strip(),
                image_path=paths["image"],
                mask_path=paths["mask"],
                label=_parse_label(record["label"], classes, manifest, index),
                attributes={a: (record[a].strip() or UNKNOWN_GROUP) for a in attributes},
            )
        )
    return rows
