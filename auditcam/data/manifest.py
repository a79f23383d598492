"""Read a manifest (CSV or Parquet) into checked rows.

Columns: ``image`` (required), ``label`` (class index or class name), optionally the subject as
``mask`` (a path) or as box columns ``x_min, y_min, x_max, y_max`` (pixels), optional ``id``;
every other column is a group attribute. Paths resolve relative to the manifest's folder. A row
whose subject cells are empty (or a manifest without them) is a sample without a subject.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from auditcam.data.problems import BAD_VALUE, Problems
from auditcam.data.rows import (
    RESERVED_COLUMNS,
    Row,
    attribute_value,
    cell_text,
    check_file,
    check_label,
    check_unique,
)
from auditcam.data.subjects import BOX_COLUMNS, BoxError, MaskFile, NoSubject, Subject, parse_box
from auditcam.errors import InputError

SUBJECT_COLUMNS = ("mask", *BOX_COLUMNS)
PARQUET_SUFFIXES = (".parquet", ".pq")
_PANDAS_INDEX = re.compile(r"__index_level_\d+__")


def _row_place(index: int, *, lines: bool) -> str:
    return f"row {index + 1} (line {index + 2})" if lines else f"row {index + 1}"


def _read_csv(manifest: Path) -> tuple[list[str], list[dict[str, Any]]]:
    try:
        frame = pd.read_csv(manifest, dtype=str, keep_default_na=False, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"--data {manifest}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    columns = [str(c).strip() for c in frame.columns]
    frame.columns = columns
    return columns, frame.to_dict("records")


def _read_parquet(manifest: Path) -> tuple[list[str], list[dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(manifest)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"--data {manifest}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    table = table.drop_columns([c for c in table.column_names if _PANDAS_INDEX.fullmatch(c)])
    table = table.rename_columns([str(c).strip() for c in table.column_names])
    return table.column_names, table.to_pylist()


def _columns(manifest: Path, columns: list[str]) -> list[str]:
    """Check the header; return the attribute columns."""
    has_boxes = any(c in columns for c in BOX_COLUMNS)
    required = ["image", "label"]
    if has_boxes:
        required += [c for c in BOX_COLUMNS if c not in columns]
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(
            f"{manifest}: missing column {', '.join(map(repr, missing))}; a manifest needs columns image, label "
            f"and optionally mask or all box columns {', '.join(BOX_COLUMNS)} (found: {', '.join(columns)})"
        )
    attributes = [c for c in columns if c not in ("image", "label", "id", *SUBJECT_COLUMNS)]
    clashes = [c for c in attributes if c in RESERVED_COLUMNS]
    if clashes:
        raise InputError(f"{manifest}: column {clashes[0]!r} clashes with an output column; rename it")
    return attributes


def _subject(problems: Problems, place: str, record: dict[str, str], root: Path, allow_missing: bool) -> Subject | None:
    """The row's mask file or box (:class:`NoSubject` when its subject cells are all empty), or
    None after reporting what is wrong."""
    mask = record.get("mask", "")
    box_cells = [record.get(c, "") for c in BOX_COLUMNS]
    if mask and any(box_cells):
        problems.report(place, "mask", BAD_VALUE, "both a mask and a box are given; keep one")
        return None
    if mask:
        path = root / mask
        return MaskFile(path) if check_file(problems, place, "mask", path, mask, allow_missing=allow_missing) else None
    if all(box_cells):
        try:
            return parse_box({c: record[c] for c in BOX_COLUMNS})
        except BoxError as exc:
            problems.report(place, exc.column, BAD_VALUE, exc.detail)
            return None
    if not any(box_cells):
        return NoSubject()
    column = BOX_COLUMNS[[bool(c) for c in box_cells].index(False)]
    problems.report(place, column, BAD_VALUE, "empty box coordinate; give all four or none")
    return None


def read_manifest(path: str | Path, classes: Sequence[str] | None = None, *, allow_missing: bool = False) -> list[Row]:
    """Parse and check a CSV or Parquet manifest (see :func:`manifest_rows`)."""
    return manifest_rows(path, classes, allow_missing=allow_missing)[0]


def manifest_rows(
    path: str | Path,
    classes: Sequence[str] | None = None,
    *,
    allow_missing: bool = False,
    problems: Problems | None = None,
    parquet: bool | None = None,
) -> tuple[list[Row], list[str]]:
    """Parse and check a CSV or Parquet manifest; return its rows and attribute columns.

    ``allow_missing`` keeps rows whose files are missing (they become per-sample error records)
    instead of refusing the whole input. ``problems`` collects row problems instead of raising.
    ``parquet`` picks the reader (default: by the file's suffix).
    """
    manifest = Path(path)
    problems = problems or Problems(str(manifest))
    if not manifest.is_file():
        raise InputError(f"--data {manifest}: manifest not found")
    if parquet is None:
        parquet = manifest.suffix.lower() in PARQUET_SUFFIXES
    columns, records = _read_parquet(manifest) if parquet else _read_csv(manifest)
    attributes = _columns(manifest, columns)
    if not records:
        raise InputError(f"{manifest}: the manifest has no rows")

    root = manifest.parent
    rows: list[Row] = []
    seen: dict[str, str] = {}
    for index, raw in enumerate(records):
        record = {c: cell_text(raw[c]) for c in ("image", "label", "id", *SUBJECT_COLUMNS) if c in raw}
        place = _row_place(index, lines=not parquet)
        image = record["image"]
        if not image:
            problems.report(place, "image", BAD_VALUE, "empty path")
            continue
        image_ok = check_file(problems, place, "image", root / image, image, allow_missing=allow_missing)
        subject = _subject(problems, place, record, root, allow_missing)
        sample_id = record.get("id") or image
        unique = check_unique(problems, seen, sample_id, place, "id", f"row {index + 1}")
        label = check_label(problems, place, "label", record["label"], classes)
        if not (image_ok and subject and unique) or label is None:
            continue
        rows.append(
            Row(
                index=len(rows),
                id=sample_id,
                image=image,
                image_path=root / image,
                label=label,
                subject=subject,
                attributes={a: attribute_value(raw[a]) for a in attributes},
                where=place,
            )
        )
    return rows, attributes
