"""Views over an audit result: the HTML report, summary.json, junit.xml and samples.parquet.

Every file is written to a temporary name and renamed into place, so a crash never leaves a
half-written report that looks complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from auditcam.errors import InputError
from auditcam.report.html import render_comparison, render_html, render_index
from auditcam.report.junit import render_junit

if TYPE_CHECKING:
    import pandas as pd

    from auditcam.result import AuditResult, Comparison

__all__ = [
    "SUMMARY_SCHEMA",
    "atomic_write",
    "render_comparison",
    "render_html",
    "render_index",
    "render_junit",
    "summary_schema",
    "write_bundle",
    "write_comparison",
]

# JSON Schema of summary.json, shipped inside the package
SUMMARY_SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "summary.schema.json"


def summary_schema() -> dict:
    """The JSON Schema (draft 2020-12) that every summary.json of this version satisfies."""
    return json.loads(SUMMARY_SCHEMA.read_text(encoding="utf-8"))


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _json(data: dict) -> bytes:
    return json.dumps(data, indent=2, allow_nan=False, default=str).encode("utf-8")


def write_bundle(result: AuditResult, out: str | Path) -> dict[str, Path]:
    """Write report.html, summary.json, junit.xml and samples.parquet (and counterfactual.parquet
    when that test ran) into ``out`` (created if needed)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = {name: out / name for name in ("report.html", "summary.json", "junit.xml", "samples.parquet")}
        result.write_samples(paths["samples.parquet"])
        summary = result.summary()
        atomic_write(paths["summary.json"], _json(summary))
        atomic_write(paths["junit.xml"], render_junit(summary).encode("utf-8"))
        atomic_write(paths["report.html"], render_html(result).encode("utf-8"))
        if result.counterfactual is not None:  # one row per (sample, background variant)
            paths["counterfactual.parquet"] = out / "counterfactual.parquet"
            _write_parquet(result.counterfactual.samples, paths["counterfactual.parquet"])
    except OSError as exc:
        raise InputError(f"--out {out}: cannot write there ({exc.strerror or exc}); choose a writable folder") from None
    return paths


def write_comparison(comparison: Comparison, out: str | Path) -> dict[str, Path]:
    """Write comparison.html, comparison.json, junit.xml (B's checks) and both samples tables
    (samples_a.parquet, samples_b.parquet) into ``out``."""
    out = Path(out)
    names = ("comparison.html", "comparison.json", "junit.xml", "samples_a.parquet", "samples_b.parquet")
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = {name: out / name for name in names}
        comparison.a.write_samples(paths["samples_a.parquet"])
        comparison.b.write_samples(paths["samples_b.parquet"])
        atomic_write(paths["comparison.json"], _json(comparison.to_dict()))
        atomic_write(paths["junit.xml"], render_junit(comparison.b.summary()).encode("utf-8"))
        atomic_write(paths["comparison.html"], render_comparison(comparison).encode("utf-8"))
    except OSError as exc:
        raise InputError(f"--out {out}: cannot write there ({exc.strerror or exc}); choose a writable folder") from None
    return paths
