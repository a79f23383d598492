"""One entry point for every on-disk format: pick the reader from the path (a folder, ``.json``,
``.parquet``, otherwise CSV) or an explicit ``format``, and return checked rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from auditcam.data.coco import coco_rows
from auditcam.data.folders import folder_rows
from auditcam.data.manifest import PARQUET_SUFFIXES, manifest_rows
from auditcam.data.problems import Problems
from auditcam.data.rows import Row
from auditcam.errors import InputError

FORMATS = ("csv", "parquet", "coco", "folder")


@dataclass(frozen=True)
class DataOptions:
    """Where a format finds its side files: COCO ``images`` folder and ``labels`` CSV, the
    folder layout's ``masks`` tree; ``allow_missing`` keeps rows whose files are missing."""

    images: Path | None = None
    labels: Path | None = None
    masks: Path | None = None
    allow_missing: bool = False


DEFAULT_OPTIONS = DataOptions()


@dataclass(frozen=True)
class Source:
    """The rows read from one dataset, with its attribute columns and class names (None when
    labels are indices and no class list was given); ``notes`` say what a reader assumed (e.g. one
    label per sample of a multi-label audit)."""

    path: Path
    format: str
    rows: list[Row]
    attributes: tuple[str, ...]
    classes: tuple[str, ...] | None
    notes: tuple[str, ...] = ()


def detect_format(path: str | Path) -> str:
    """The format a path looks like: a folder, COCO ``.json``, Parquet, else CSV."""
    path = Path(path)
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "coco"
    return "parquet" if suffix in PARQUET_SUFFIXES else "csv"


def read_source(
    path: str | Path,
    *,
    format: str | None = None,
    classes: Sequence[str] | None = None,
    options: DataOptions = DEFAULT_OPTIONS,
    problems: Problems | None = None,
    multilabel: bool = False,
) -> Source:
    """Read and check a dataset's index. Row problems raise ``InputError`` unless ``problems``
    collects them (``auditcam validate``). ``multilabel``: read several labels per sample (a
    manifest's ``labels`` column, every category of a COCO image)."""
    path = Path(path)
    fmt = format or detect_format(path)
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    problems = problems if problems is not None else Problems(str(path))
    classes = None if classes is None else tuple(classes)
    notes: list[str] = []
    if fmt in ("csv", "parquet"):
        if path.is_dir():
            raise InputError(f"--data {path}: is a folder, not a {fmt} manifest (use --format folder)")
        rows, attributes = manifest_rows(
            path,
            classes,
            allow_missing=options.allow_missing,
            problems=problems,
            parquet=fmt == "parquet",
            multilabel=multilabel,
            notes=notes,
        )
    elif fmt == "coco":
        rows, attributes, classes = coco_rows(
            path,
            classes,
            images=options.images,
            labels=options.labels,
            allow_missing=options.allow_missing,
            problems=problems,
            multilabel=multilabel,
            notes=notes,
        )
    else:
        # every image of a tree exists, and an image without a mask file has no subject
        rows, attributes, classes = folder_rows(
            path, classes, masks=options.masks, problems=problems, multilabel=multilabel, notes=notes
        )
    return Source(path, fmt, rows, tuple(attributes), classes, tuple(notes))
