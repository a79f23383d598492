"""Render an AuditResult as one self-contained HTML page (Jinja2, everything inlined)."""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc
from markupsafe import Markup

from auditcam.gallery import Exemplar
from auditcam.report import figures
from auditcam.report.templates import environment, template_dir

if TYPE_CHECKING:
    from auditcam.audit import AuditResult
    from auditcam.comparison import Comparison

MAX_PROBLEMS_LISTED = 200

# statistic -> (column heading, number style)
STATISTIC_LABELS = {
    "accuracy": ("accuracy", "pct"),
    "subject_share_mean": ("mean subject_share", "fmt"),
    "subject_share_median": ("median subject_share", "fmt"),
    "focus_lift_mean": ("mean focus_lift", "fmt"),
    "background_reliant_rate": ("background-reliant", "pct"),
    "pointing_hit_rate": ("pointing hits", "pct"),
    "error_rate": ("not scored", "pct"),
}

METRIC_HELP = {
    "subject_share": "Share of the heatmap's energy that falls on the labelled subject (0 to 1).",
    "subject_area": "Share of the image the subject covers: what subject_share would be for a uniform heatmap.",
    "focus_lift": "subject_share divided by subject_area: 1 means no better than a uniform heatmap, "
    "above 1 focused on the subject, below 1 drawn to the background.",
    "rank_accuracy": "Share of the K hottest pixels that lie on the subject, K = subject size in pixels.",
    "pointing_hit": "Whether the single hottest pixel lies on the subject (pointing game).",
    "iou": "Overlap (intersection over union) of the pixels at or above half the peak heat with the subject.",
    "background_reliant": "A sample counts as background-reliant when its focus_lift is below the reliance threshold.",
}


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers for tables: fixed digits; missing values as an em dash."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def pct(value: Any) -> str:
    """A rate as a percentage with one decimal."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    return f"{100 * value:.1f}%"


def ci(bounds: Any, style: str = "fmt", digits: int = 3) -> str:
    """A confidence interval ``[low, high]`` as ``low–high`` in the style of its value."""
    if not bounds:
        return ""
    if style == "pct":
        return f"{pct(bounds[0])[:-1]}–{pct(bounds[1])}"
    return f"{fmt(bounds[0], digits)}–{fmt(bounds[1], digits)}"


def _card(exemplar: Exemplar) -> dict[str, Any]:
    record = exemplar.record
    return {
        "record": record,
        "image": figures.png_data_uri(figures.resized(exemplar.image)),
        "overlay": figures.png_data_uri(figures.overlay(exemplar.image, exemplar.heatmap)),
        "outline": figures.png_data_uri(figures.outline(exemplar.image, exemplar.mask)),
    }


def _sha256_source(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def _page_style() -> dict[str, Any]:
    """The shared stylesheet and a CSP that allows exactly it, no script and data: images only."""
    css = (template_dir() / "report.css").read_text(encoding="utf-8")
    return {
        "css": Markup(css),
        "csp": f"default-src 'none'; img-src data:; style-src '{_sha256_source(css)}'; "
        "script-src 'none'; base-uri 'none'; form-action 'none'",
    }


def _environment():
    env = environment()
    env.filters["fmt"] = fmt
    env.filters["pct"] = pct
    env.filters["ci"] = ci
    return env


def context(result: AuditResult) -> dict[str, Any]:
    """Everything the template shows, computed from the result (the template does no maths)."""
    meta = result.meta
    primary = meta["methods"][0]
    agg = result.aggregates[primary]
    # read only the rows listed (the samples table may be far larger than memory allows)
    problem = pc.field("status") != "ok"
    noted = pc.field("note") != ""  # e.g. masks resized with --resize-masks
    attributes = meta["dataset"]["attributes"]
    disparities: dict[str, list[dict[str, Any]]] = {}
    for row in agg["disparities"]:
        disparities.setdefault(row["dimension"], []).append(row)
    # the group each breakdown's table highlights: lowest mean subject_share among groups with enough data
    worst_groups = {
        row["dimension"]: row["worst_group"] for row in agg["disparities"] if row["statistic"] == "subject_share_mean"
    }
    return {
        **_page_style(),
        "meta": meta,
        "model_name": meta["name"],
        "passed": result.passed,
        "checks": [check.to_dict() for check in result.checks],
        "analysis": meta["analysis"],
        "primary": primary,
        "overall": agg["overall"],
        "by_class": agg["by_class"],
        "by_group": agg["by_group"],
        "by_intersection": agg["by_intersection"],
        "by_correctness": agg["by_correctness"],
        "disparities": disparities,
        "statistic_labels": STATISTIC_LABELS,
        "worst_groups": worst_groups,
        "attributes": attributes,
        "reliant": [_card(e) for e in result.gallery.background_reliant],
        "focused": [_card(e) for e in result.gallery.subject_focused],
        "problems": result.read_samples(primary, where=problem, limit=MAX_PROBLEMS_LISTED).to_dict("records"),
        "n_problems": result.count_samples(primary, where=problem),
        "noted": result.read_samples(primary, where=noted, limit=MAX_PROBLEMS_LISTED).to_dict("records"),
        "n_noted": result.count_samples(primary, where=noted),
        "metric_help": METRIC_HELP,
    }


def render_html(result: AuditResult) -> str:
    """The report page as a string."""
    return _environment().get_template("report.html.j2").render(**context(result))


def render_index(title: str, intro: str, reports: dict[str, tuple[AuditResult, str]]) -> str:
    """A page listing several audits side by side, each linking to its report (relative href)."""
    entries = [
        {
            "name": name,
            "passed": result.passed,
            "overall": result.aggregates[result.meta["methods"][0]]["overall"],
            "href": href,
        }
        for name, (result, href) in reports.items()
    ]
    return (
        _environment().get_template("index.html.j2").render(title=title, intro=intro, entries=entries, **_page_style())
    )


MAX_CHANGED_LISTED = 200


def _check_rows(a: AuditResult, b: AuditResult) -> list[dict[str, Any]]:
    """Checks of A and B side by side, matched by name."""
    rows: dict[str, dict[str, Any]] = {}
    for side, result in (("a", a), ("b", b)):
        for check in result.checks:
            row = rows.setdefault(check.name, {"name": check.name, "rule": f"{check.op} {fmt(check.threshold)}"})
            row[side] = check.to_dict()
    return [{"a": None, "b": None, **row} for row in rows.values()]


def render_comparison(comparison: Comparison) -> str:
    """The comparison page of two audits as a string."""
    data = comparison.to_dict(max_changed=MAX_CHANGED_LISTED)
    deltas: dict[str, list[dict[str, Any]]] = {}
    for row in data["deltas"]:
        deltas.setdefault(row["dimension"], []).append(row)
    meta = comparison.b.meta
    return (
        _environment()
        .get_template("compare.html.j2")
        .render(
            **_page_style(),
            names=comparison.names,
            passed=comparison.passed,
            n_samples=data["n_samples"],
            dataset=meta["dataset"]["source"],
            method=data["method"],
            analysis=meta["analysis"],
            check_rows=_check_rows(comparison.a, comparison.b),
            focus=data["focus"]["counts"],
            correctness=data["correctness"],
            deltas=deltas,
            changed=data["focus"]["changed"],
            n_changed=len(comparison.changed),
            statistic_labels=STATISTIC_LABELS,
            command=meta.get("command", "(run through the Python API)"),
        )
    )
