"""Views over an audit result: the HTML report, summary.json and samples.parquet.

Every file is written to a temporary name and renamed into place, so a crash never leaves a
half-written report that looks complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from auditcam.errors import InputError
from auditcam.report.html import render_html, render_index

if TYPE_CHECKING:
    from auditcam.audit import AuditResult

__all__ = ["atomic_write", "render_html", "render_index", "write_bundle"]


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_bundle(result: AuditResult, out: str | Path) -> dict[str, Path]:
    """Write report.html, summary.json and samples.parquet into ``out`` (created if needed)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = {name: out / name for name in ("report.html", "summary.json", "samples.parquet")}
        tmp_parquet = out / ".samples.parquet.tmp"
        result.samples.to_parquet(tmp_parquet, index=False)
        os.replace(tmp_parquet, paths["samples.parquet"])
        summary = json.dumps(result.summary(), indent=2, allow_nan=False, default=str)
        atomic_write(paths["summary.json"], summary.encode("utf-8"))
        atomic_write(paths["report.html"], render_html(result).encode("utf-8"))
    except PermissionError as exc:
        raise InputError(f"--out {out}: cannot write there ({exc.strerror}); choose a writable folder") from None
    return paths
