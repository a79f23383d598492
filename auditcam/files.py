"""The files auditcam writes: every one atomically (a temporary name beside it, then a rename,
so a reader sees the old file or the whole new one, never a half-written file that looks
complete), and a result object's parts (fields, arrays, tables) as a few files a later version
can read back.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from auditcam.errors import InputError

TMP_SUFFIX = ".tmp"
ROWS = "rows"  # a part's main table, written as <stem>.parquet; any other table is <stem>-<name>.parquet
NOT_READABLE = "{path}: cannot read it ({reason}); write the audit again"


def temporary_name(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: ``.<name>.tmp`` beside it."""
    return path.with_name(f".{path.name}{TMP_SUFFIX}")


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield the temporary name to write ``path`` under; rename it into place when the block
    ends, or delete it when the block raises."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` (text: UTF-8) to ``path`` atomically."""
    with replacing(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def json_text(data: Any) -> str:
    """``data`` as the JSON auditcam writes: indented, no NaN, anything else as its ``str``."""
    return json.dumps(data, indent=2, allow_nan=False, default=str)


def write_parquet(path: str | Path, frame: pd.DataFrame) -> None:
    """``frame`` (its index left out) as a Parquet file, atomically."""
    with replacing(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Arrays by name as a compressed ``.npz`` (no pickled objects), atomically."""
    with replacing(path) as tmp, tmp.open("wb") as sink:  # a file object: np.savez adds no suffix
        np.savez_compressed(sink, **arrays)


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` written by :func:`write_npz`."""
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


@dataclass(frozen=True)
class Parts:
    """A result object taken apart for disk: JSON-ready ``fields``, numpy ``arrays`` and pandas
    ``tables`` (:data:`ROWS`: the main one)."""

    fields: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def records_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Records (one dict per row, as ``pyarrow.Table.to_pylist`` gives them) as a table that
    :func:`table_records` turns back into the same records: Arrow-typed columns, nulls kept."""
    return pa.Table.from_pylist(records).to_pandas(types_mapper=pd.ArrowDtype)


def table_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The records of a :func:`records_table`."""
    return pa.Table.from_pandas(frame, preserve_index=False).to_pylist()


def _table_path(folder: Path, stem: str, name: str) -> Path:
    return folder / (f"{stem}.parquet" if name == ROWS else f"{stem}-{name}.parquet")


def part_files(folder: Path, stem: str, parts: Parts) -> list[Path]:
    """The files :func:`write_parts` writes for ``parts``."""
    files = [folder / f"{stem}.json", *(_table_path(folder, stem, name) for name in parts.tables)]
    return [*files, folder / f"{stem}.npz"] if parts.arrays else files


def write_parts(folder: Path, stem: str, parts: Parts) -> list[Path]:
    """Write ``<stem>.json`` (the fields and what else there is), ``<stem>.npz`` (the arrays) and
    one Parquet file per table into ``folder``; return their paths."""
    files = part_files(folder, stem, parts)
    for name, frame in parts.tables.items():
        write_parquet(_table_path(folder, stem, name), frame)
    if parts.arrays:
        write_npz(folder / f"{stem}.npz", parts.arrays)
    contents = {"fields": parts.fields, "arrays": sorted(parts.arrays), "tables": list(parts.tables)}
    atomic_write(folder / f"{stem}.json", json_text(contents))  # last: it says the others are there
    return files


def read_parts(folder: Path, stem: str) -> Parts:
    """The parts :func:`write_parts` wrote; a missing or unreadable file is an InputError naming it."""
    index = folder / f"{stem}.json"
    contents = read_json(index)
    paths = {name: _table_path(folder, stem, name) for name in contents["tables"]}
    if contents["arrays"]:
        paths[""] = folder / f"{stem}.npz"
    for path in paths.values():
        if not path.is_file():
            raise InputError(f"{folder}: {path.name} is missing (listed in {index.name}); write the audit again")
    arrays = read_npz(paths.pop("")) if contents["arrays"] else {}
    tables = {name: _read_parquet(path) for name, path in paths.items()}
    return Parts(contents["fields"], {name: arrays[name] for name in contents["arrays"]}, tables)


def read_json(path: Path) -> Any:
    """A JSON file auditcam wrote; unreadable: an InputError naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(NOT_READABLE.format(path=path, reason=getattr(exc, "strerror", None) or exc)) from None


def _read_parquet(path: Path) -> pd.DataFrame:
    """A part's table; one of :func:`records_table` (every column Arrow-typed) comes back Arrow-typed
    from the file's own types, as pandas cannot restore a list column's dtype from its metadata."""
    try:
        schema = pq.read_schema(path)
        meta = json.loads((schema.metadata or {}).get(b"pandas", b"{}"))
        columns = [c for c in meta.get("columns", []) if c.get("name") is not None]
        if columns and all(str(c.get("numpy_type", "")).endswith("[pyarrow]") for c in columns):
            return pq.read_table(path).to_pandas(types_mapper=pd.ArrowDtype, ignore_metadata=True)
        return pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InputError(NOT_READABLE.format(path=path, reason=exc)) from None
