"""Views over an audit bundle: the HTML report and junit.xml of an audit, the comparison page
and junit.xml of a comparison, the trend page and junit.xml of a trend. Importing this package registers them with
:func:`auditcam.result.register_view`, so :meth:`AuditResult.write` renders them from the
bundle it wrote (and ``auditcam report`` renders them again from any bundle on disk).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from auditcam.report.html import render_comparison, render_html, render_index, render_trend
from auditcam.report.junit import render_junit
from auditcam.result import AUDIT, COMPARISON, TREND, View, register_view

if TYPE_CHECKING:
    from auditcam.result import AuditResult, Comparison, Trend

__all__ = [
    "SUMMARY_SCHEMA",
    "render_comparison",
    "render_html",
    "render_index",
    "render_junit",
    "render_trend",
    "summary_schema",
]

# JSON Schema of summary.json, shipped inside the package
SUMMARY_SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "summary.schema.json"


def summary_schema() -> dict:
    """The JSON Schema (draft 2020-12) that every summary.json of this version satisfies."""
    return json.loads(SUMMARY_SCHEMA.read_text(encoding="utf-8"))


def _audit_junit(result: AuditResult) -> str:
    return render_junit(result.summary())


def _comparison_junit(comparison: Comparison) -> str:
    return render_junit(comparison.b.summary())  # the verdict of a comparison is B's


def _trend_junit(trend: Trend) -> str:
    return render_junit(trend.results[-1].summary())  # the checks of a trend are its last checkpoint's


register_view(AUDIT, View("html", "report.html", render_html))
register_view(AUDIT, View("junit", "junit.xml", _audit_junit))
register_view(COMPARISON, View("html", "comparison.html", render_comparison))
register_view(COMPARISON, View("junit", "junit.xml", _comparison_junit))
register_view(TREND, View("html", "trend.html", render_trend))
register_view(TREND, View("junit", "junit.xml", _trend_junit))
