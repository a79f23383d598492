"""Check a dataset before a long audit: every row's index entry (files, labels, ids) and every
sample's files (decodable, mask the image's size, subject neither empty nor the whole image),
plus classes without samples; all problems are collected into one table. It also counts the
readable samples with a subject and without one (those an audit measures mask-free only)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from auditcam.data.dataset import default_workers, load_sample, load_subjects
from auditcam.data.formats import DEFAULT_OPTIONS, DataOptions, Source, read_source
from auditcam.data.grabcut import check_subject_from_boxes
from auditcam.data.io import SampleFault
from auditcam.data.problems import EMPTY_MASK, FULL_MASK, NO_SAMPLES, Problem, Problems
from auditcam.data.rows import Row
from auditcam.data.subjects import DEFAULT_MASKS, NO_SUBJECT, Geometry, MaskOptions, NoSubjectFault, rasterise

EMPTY_REASON = "empty subject mask"
CHECK_BATCH = 16
FULL_REASON = "subject mask covers the whole image, so there is no background to compare"


@dataclass(frozen=True)
class Validation:
    """What ``validate`` found: the rows it could read, every problem in source order, and how
    many of the decodable samples have a subject (``with_subject``) and how many do not
    (``without_subject``: none given, or a box off the image, of zero area, or empty after GrabCut)."""

    source: Source
    problems: tuple[Problem, ...]
    with_subject: int = 0
    without_subject: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class RowCheck:
    """One sample's problems, and whether it has a subject (None: it could not be read)."""

    problems: list[Problem]
    has_subject: bool | None


def check_row(row: Row, masks: MaskOptions) -> RowCheck:
    """The problems of one sample's files (none when it decodes and its subjects are usable); a
    multi-label sample has a subject when one of its labels has."""
    try:
        if row.labels is not None:
            _image, subjects, _notes = load_subjects(row, masks)
        else:
            _image, subject, _notes = load_sample(row, masks)
            subjects = [subject]
    except SampleFault as fault:
        return RowCheck([Problem(row.where, "", fault.kind, fault.reason)], None)
    checks = [_subject_check(row, subject) for subject in subjects]
    return RowCheck([p for check in checks for p in check.problems], any(check.has_subject for check in checks))


def _subject_check(row: Row, subject: Geometry | NoSubjectFault) -> RowCheck:
    if isinstance(subject, NoSubjectFault):  # none given is fine; one given but unusable is a problem
        detail = subject.reason.removeprefix(NO_SUBJECT).removeprefix(": ")
        return RowCheck([Problem(row.where, "", EMPTY_MASK, detail)] if subject.given else [], False)
    mask = rasterise(subject)
    if not mask.any():
        return RowCheck([Problem(row.where, "", EMPTY_MASK, EMPTY_REASON)], True)
    if mask.all():
        return RowCheck([Problem(row.where, "", FULL_MASK, FULL_REASON)], True)
    return RowCheck([], True)


class _RowChecks(Dataset):
    """The per-row checks as a dataset, so a DataLoader can run them in worker processes."""

    def __init__(self, rows: Sequence[Row], masks: MaskOptions) -> None:
        self.rows, self.masks = list(rows), masks

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> RowCheck:
        return check_row(self.rows[index], self.masks)


def _as_list(checks: Sequence[RowCheck]) -> list[RowCheck]:
    return list(checks)


def validate(
    path: str | Path,
    *,
    format: str | None = None,
    classes: Sequence[str] | None = None,
    options: DataOptions = DEFAULT_OPTIONS,
    masks: MaskOptions = DEFAULT_MASKS,
    workers: int | None = 0,
    progress: bool = False,
    multilabel: bool = False,
) -> Validation:
    """Check a dataset; whole-input faults (no manifest, a required column absent) still raise
    ``InputError``, everything row-level is collected. ``workers=None`` picks
    :func:`~auditcam.data.default_workers`; ``multilabel`` reads several labels per sample."""
    problems = Problems(str(path), collect=True)
    source = read_source(
        path, format=format, classes=classes, options=options, problems=problems, multilabel=multilabel
    )
    check_subject_from_boxes(masks.subject_from_boxes, source.rows, path)
    found = list(problems.found)
    if workers is None:
        workers = default_workers(len(source.rows), CHECK_BATCH)
    checks = DataLoader(
        _RowChecks(source.rows, masks), batch_size=CHECK_BATCH, num_workers=workers, collate_fn=_as_list, shuffle=False
    )
    subjects: Counter[bool | None] = Counter()
    with tqdm(total=len(source.rows), unit="img", desc="checking", disable=not progress, file=sys.stderr) as bar:
        for batch in checks:
            for check in batch:
                found.extend(check.problems)
                subjects[check.has_subject] += 1
            bar.update(min(CHECK_BATCH, bar.total - bar.n))
    if source.classes is not None:
        counts = Counter(label for row in source.rows for label in row.classes_of)
        found += [
            Problem(f"class {name!r}", "", NO_SAMPLES, "no samples of this class")
            for label, name in enumerate(source.classes)
            if not counts[label]
        ]
    return Validation(source, tuple(found), with_subject=subjects[True], without_subject=subjects[False])


def format_table(found: Sequence[Problem]) -> str:
    """The problems as an aligned text table: where, column, problem, detail."""
    header = ("where", "column", "problem", "detail")
    cells = [header, *((p.where, p.column, p.kind, p.detail) for p in found)]
    widths = [max(len(row[i]) for row in cells) for i in range(3)]
    return "\n".join(
        "  ".join(text.ljust(width) for text, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in cells
    )
