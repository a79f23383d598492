"""Read a manifest (CSV or Parquet) into checked rows.

Columns: ``image`` (required), ``label`` (class index or class name), optionally the subject as
``mask`` (a path) or as box columns ``x_min, y_min, x_max, y_max`` (pixels), optional ``id``;
every other column is a group attribute. Paths resolve relative to the manifest's folder. A row
whose subject cells are empty (or a manifest without them) is a sample without a subject.

Multi-label (``multilabel=True``): ``labels`` instead of ``label``, class names or indices separated
by ``;`` (``cat;dog``; an empty cell is a sample with no label). The subject is the ``mask`` (or
box) of every label, or one mask per label in columns ``mask:<class>`` (``mask:cat``; a label
without its cell has no subject). A manifest with a ``label`` column reads as one label per sample.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from auditcam.data.problems import BAD_VALUE, Problems
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
    parse_label,
)
from auditcam.data.subjects import BOX_COLUMNS, BoxError, MaskFile, NoSubject, Subject, parse_box
from auditcam.errors import InputError

SUBJECT_COLUMNS = ("mask", *BOX_COLUMNS)
LABEL_MASK_PREFIX = "mask:"  # a multi-label manifest's per-label mask column, e.g. mask:cat
LABELS_NEED_MULTILABEL = (
    "{manifest}: missing column 'label'; the 'labels' column holds several labels per sample: set `task` to multilabel"
)
BOTH_LABEL_COLUMNS = (
    "{manifest}: columns 'label' and 'labels' both given; a multi-label manifest keeps its labels in 'labels'"
)
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


@dataclass(frozen=True)
class _Header:
    """What a manifest's header says: the label column, the per-label mask columns (column ->
    class index) and the group attribute columns."""

    label: str
    label_masks: dict[str, int]
    attributes: list[str]


def _columns(manifest: Path, columns: list[str], classes: Sequence[str] | None, multilabel: bool) -> _Header:
    """Check the header; return where the labels, per-label masks and attributes are."""
    has_boxes = any(c in columns for c in BOX_COLUMNS)
    label = "label"
    if multilabel and "labels" in columns:
        if "label" in columns:
            raise InputError(BOTH_LABEL_COLUMNS.format(manifest=manifest), "task")
        label = "labels"
    elif "label" not in columns and "labels" in columns:
        raise InputError(LABELS_NEED_MULTILABEL.format(manifest=manifest), "task")
    required = ["image", label]
    if has_boxes:
        required += [c for c in BOX_COLUMNS if c not in columns]
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(
            f"{manifest}: missing column {', '.join(map(repr, missing))}; a manifest needs columns image, {label} "
            f"and optionally mask or all box columns {', '.join(BOX_COLUMNS)} (found: {', '.join(columns)})"
        )
    label_masks: dict[str, int] = {}
    if multilabel:
        for column in columns:
            if column.startswith(LABEL_MASK_PREFIX):
                try:
                    label_masks[column] = parse_label(column[len(LABEL_MASK_PREFIX) :], classes)
                except ValueError as exc:
                    raise InputError(f"{manifest}: column {column!r}: {exc}") from None
    taken = ("image", label, "id", *SUBJECT_COLUMNS, *label_masks)
    attributes = [c for c in columns if c not in taken]
    reserved = RESERVED_COLUMNS | MULTILABEL_COLUMNS if multilabel else RESERVED_COLUMNS
    clashes = [c for c in attributes if c in reserved]
    if clashes:
        raise InputError(f"{manifest}: column {clashes[0]!r} clashes with an output column; rename it")
    return _Header(label, label_masks, attributes)


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


def _label_subjects(
    problems: Problems,
    place: str,
    record: dict[str, str],
    header: _Header,
    labels: tuple[int, ...],
    shared: Subject,
    root: Path,
    allow_missing: bool,
) -> tuple[Subject, ...] | None:
    """A multi-label row's subject per label from its ``mask:<class>`` cells (empty: ``shared``
    is every label's subject), or None after reporting what is wrong."""
    given = {c: record[column] for column, c in header.label_masks.items() if record.get(column)}
    if not given:
        return ()
    column = next(col for col, c in header.label_masks.items() if c in given)
    if not isinstance(shared, NoSubject):
        problems.report(place, column, BAD_VALUE, "both a shared subject (mask or box) and per-label masks; keep one")
        return None
    strangers = [col for col, c in header.label_masks.items() if c in given and c not in labels]
    if strangers:
        problems.report(place, strangers[0], BAD_VALUE, "a mask for a class that is not one of the row's labels")
        return None
    subjects: dict[int, Subject] = {}
    for column, c in header.label_masks.items():
        if c in given:
            path = root / given[c]
            if not check_file(problems, place, column, path, given[c], allow_missing=allow_missing):
                return None
            subjects[c] = MaskFile(path)
    return tuple(subjects.get(c, NoSubject()) for c in labels)


def manifest_rows(
    path: str | Path,
    classes: Sequence[str] | None = None,
    *,
    allow_missing: bool = False,
    problems: Problems | None = None,
    parquet: bool | None = None,
    multilabel: bool = False,
    notes: list[str] | None = None,
) -> tuple[list[Row], list[str]]:
    """Parse and check a CSV or Parquet manifest; return its rows and attribute columns.

    ``allow_missing`` keeps rows whose files are missing (they become per-sample error records)
    instead of refusing the whole input. ``problems`` collects row problems instead of raising.
    ``parquet`` picks the reader (default: by the file's suffix). ``multilabel`` reads multi-label
    rows (a ``labels`` column; a ``label`` column gives one label each, said in ``notes``).
    """
    manifest = Path(path)
    problems = problems or Problems(str(manifest))
    if not manifest.is_file():
        raise InputError(f"--data {manifest}: manifest not found")
    if parquet is None:
        parquet = manifest.suffix.lower() in PARQUET_SUFFIXES
    columns, records = _read_parquet(manifest) if parquet else _read_csv(manifest)
    header = _columns(manifest, columns, classes, multilabel)
    if not records:
        raise InputError(f"{manifest}: the manifest has no rows")
    if multilabel and header.label == "label" and notes is not None:
        notes.append(SINGLE_LABEL_NOTE.format(why=f"{manifest.name} has a 'label' column, not 'labels'"))

    root = manifest.parent
    rows: list[Row] = []
    seen: dict[str, str] = {}
    read = ("image", header.label, "id", *SUBJECT_COLUMNS, *header.label_masks)
    for index, raw in enumerate(records):
        record = {c: cell_text(raw[c]) for c in read if c in raw}
        place = _row_place(index, lines=not parquet)
        image = record["image"]
        if not image:
            problems.report(place, "image", BAD_VALUE, "empty path")
            continue
        image_ok = check_file(problems, place, "image", root / image, image, allow_missing=allow_missing)
        subject = _subject(problems, place, record, root, allow_missing)
        sample_id = record.get("id") or image
        unique = check_unique(problems, seen, sample_id, place, "id", f"row {index + 1}")
        raw_label = record[header.label]
        if header.label == "labels":
            labels = check_labels(problems, place, "labels", raw_label, classes)
        else:
            label = check_label(problems, place, "label", raw_label, classes)
            labels = None if label is None else (label,)
        if not (image_ok and subject and unique) or labels is None:
            continue
        label_subjects: tuple[Subject, ...] | None = ()
        if multilabel:
            label_subjects = _label_subjects(problems, place, record, header, labels, subject, root, allow_missing)
            if label_subjects is None:
                continue
        rows.append(
            Row(
                index=len(rows),
                id=sample_id,
                image=image,
                image_path=root / image,
                label=-1 if multilabel else labels[0],
                subject=subject,
                attributes={a: attribute_value(raw[a]) for a in header.attributes},
                where=place,
                labels=labels if multilabel else None,
                label_subjects=label_subjects,
            )
        )
    return rows, header.attributes
