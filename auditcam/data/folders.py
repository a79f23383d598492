"""Folder layout: ``root/<class>/<file>`` with masks in a parallel tree
``masks/<class>/<stem>.png`` (default ``root/masks``, which is then not a class; without it the
samples have no subjects). The tree may be partial: an image without a mask file there is a
sample without a subject, kept and predicted like the others. Class names: the given class
list, else the class folders in sorted order (torchvision's ``ImageFolder`` convention). Files
in subfolders of a class folder belong to that class; their masks keep the same relative path.
A folder tree is single-label: read for a multi-label audit (``multilabel``), each sample has its
folder's class as its one label."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from auditcam.data.problems import UNKNOWN_LABEL, Problems
from auditcam.data.rows import SINGLE_LABEL_NOTE, Row
from auditcam.data.subjects import MaskFile, NoSubject
from auditcam.errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
MASKS_FOLDER = "masks"


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def folder_rows(
    root: str | Path,
    classes: Sequence[str] | None = None,
    *,
    masks: str | Path | None = None,
    problems: Problems | None = None,
    multilabel: bool = False,
    notes: list[str] | None = None,
) -> tuple[list[Row], list[str], tuple[str, ...]]:
    """Read a class-per-folder tree; return its rows, (no) attribute names and class names
    (``multilabel``: rows of one label each, said in ``notes``)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--data {root}: folder not found")
    problems = problems or Problems(str(root))
    mask_root = Path(masks) if masks is not None else root / MASKS_FOLDER
    if masks is not None and not mask_root.is_dir():
        raise InputError(
            f"--masks {mask_root}: masks folder not found; a folder dataset keeps masks in masks/<class>/<stem>.png "
            "(or leave --masks out to audit without subjects)"
        )
    with_masks = mask_root.is_dir()
    folders = sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and not _hidden(p.relative_to(root)) and p.resolve() != mask_root.resolve()
    )
    if not folders:
        raise InputError(f"--data {root}: no class folders (expected {root}/<class>/<image>)")
    class_names = tuple(classes) if classes is not None else tuple(p.name for p in folders)
    if multilabel and notes is not None:
        notes.append(SINGLE_LABEL_NOTE.format(why="a folder tree has one class per image"))
    rows: list[Row] = []

    def row(label: int, relative: str, path: Path, subject: MaskFile | NoSubject, place: str) -> Row:
        if multilabel:
            return Row(len(rows), relative, relative, path, -1, subject, {}, place, labels=(label,))
        return Row(len(rows), relative, relative, path, label, subject, {}, place)

    for folder in folders:
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not _hidden(p.relative_to(root))
        )
        if folder.name not in class_names:
            known = ", ".join(class_names[:10]) + (" ..." if len(class_names) > 10 else "")
            problems.report(
                f"folder {folder.name!r}", "", UNKNOWN_LABEL, f"{len(files)} images of unknown class; known: {known}"
            )
            continue
        label = class_names.index(folder.name)
        for path in files:
            relative = path.relative_to(root).as_posix()
            place = f"file {relative!r}"
            mask_path = mask_root / path.relative_to(root).with_suffix(".png")
            subject = MaskFile(mask_path) if with_masks and mask_path.is_file() else NoSubject()
            rows.append(row(label, relative, path, subject, place))
    return rows, [], class_names
