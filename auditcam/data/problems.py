"""Row-level problems found while reading a dataset's index (manifest, COCO JSON, folders).

One policy for every format: when a dataset is opened for an audit the first problem stops it
with one line (``InputError``: file, row, column, what to do) before any long run starts; when it
is opened by ``auditcam validate`` every problem is collected into a table instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from auditcam.errors import InputError

# Problem kinds, as the validate table shows them.
MISSING_FILE = "missing file"
UNREADABLE = "unreadable"
SIZE_MISMATCH = "size mismatch"
EMPTY_MASK = "empty mask"
FULL_MASK = "full mask"
UNKNOWN_LABEL = "unknown label"
DUPLICATE_ID = "duplicate id"
BAD_VALUE = "bad value"
NO_SAMPLES = "no samples"


@dataclass(frozen=True)
class Problem:
    """One problem: where (``row 3 (line 4)``, ``image 'a.jpg' (id 7)``), the column or field,
    its kind and the detail."""

    where: str
    column: str
    kind: str
    detail: str


@dataclass
class Problems:
    """Raise on the first problem (``collect=False``) or gather them all (``collect=True``)."""

    source: str
    collect: bool = False
    found: list[Problem] = field(default_factory=list)

    def report(self, where: str, column: str, kind: str, detail: str, hint: str = "") -> None:
        """Record a problem, or stop with one line naming the file, row and column."""
        if not self.collect:
            place = f"{self.source} {where}" + (f", column {column!r}" if column else "")
            raise InputError(f"{place}: {detail}" + (f"; {hint}" if hint else ""))
        self.found.append(Problem(where, column, kind, detail))
