"""Render an AuditResult as one self-contained HTML page (Jinja2, everything inlined).

The template does no maths: :func:`context` computes every number, chart and thumbnail. The
page's Content-Security-Policy allows exactly the inlined stylesheet and script by their sha256,
``data:`` images, and nothing else — no network fetch is possible even if data slipped through.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow.compute as pc
from markupsafe import Markup

from auditcam.report import figures, plots, sections
from auditcam.report.reproduce import config_toml
from auditcam.report.templates import environment, template_dir
from auditcam.run.gallery import Exemplar
from auditcam.scoring import REGISTRY, Metric, aggregates, scored_metrics
from auditcam.stats.analysis import task_statistics
from auditcam.stats.checks import OUTCOMES
from auditcam.version import __version__

if TYPE_CHECKING:
    from auditcam.result import AuditResult, Comparison, Trend

MAX_PROBLEMS_LISTED = 200
MAX_CHANGED_LISTED = 200
MAX_GALLERY_CARDS = 24  # per end of the gallery, whatever the audit kept
MAX_BAR_CHARTS = 6  # per-group bar charts: class, then attributes and intersections
MAX_CLASSES_NAMED = 30


def statistic_labels(registry: dict[str, Metric] | None = None) -> dict[str, tuple[str, str]]:
    """statistic -> (column heading, number style), from the metric registry."""
    return {name: (a.label, m.style) for name, (m, a) in aggregates(registry).items()}


def metric_help(registry: dict[str, Metric] | None = None) -> dict[str, str]:
    """Per-sample metric -> the help text the report shows, from the metric registry."""
    registry = REGISTRY if registry is None else registry
    return {name: registry[name].help for name in scored_metrics(registry)}


STATISTIC_LABELS = statistic_labels()


def task_labels(task: str) -> dict[str, tuple[str, str]]:
    """The column headings of the statistics an audit of ``task`` has (a multi-label audit's
    precision and recall beside accuracy), in report order."""
    return {name: STATISTIC_LABELS[name] for name in task_statistics(task)}


DECIDE_ON_HELP = {
    "point": "the estimate",
    "upper": "upper end of the CI",
    "lower": "lower end of the CI",
    "strict": "the CI end on the failing side",
}


# -- number formatting (template filters) ----------------------------------------------------


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers for tables: fixed digits; missing values as an em dash."""
    if _missing(value):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def pct(value: Any) -> str:
    """A rate as a percentage with one decimal."""
    if _missing(value):
        return "—"
    return f"{100 * value:.1f}%"


def ci(bounds: Any, style: str = "fmt", digits: int = 3) -> str:
    """A confidence interval ``[low, high]`` as ``low–high`` in the style of its value."""
    if not bounds:
        return ""
    if style == "pct":
        return f"{pct(bounds[0])[:-1]}–{pct(bounds[1])}"
    return f"{fmt(bounds[0], digits)}–{fmt(bounds[1], digits)}"


def sortkey(value: Any) -> str:
    """The number a sortable cell sorts by (``""``: missing, sorted last)."""
    if _missing(value) or isinstance(value, str):
        return ""
    return repr(float(value))


# -- page assets: stylesheet, script and the policy that allows exactly them ------------------


def sha256_source(text: str) -> str:
    """A CSP source expression for an inline element whose exact text is ``text``."""
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def page_assets(script: bool = True) -> dict[str, Any]:
    """The shared stylesheet, the report script (if wanted) and a CSP that allows exactly those
    two inline elements and data: images; no fetch, no other script, no form, no base URL."""
    folder = template_dir()
    css = (folder / "report.css").read_text(encoding="utf-8")
    js = (folder / "report.js").read_text(encoding="utf-8") if script else ""
    script_src = f"'{sha256_source(js)}'" if script else "'none'"
    return {
        "css": Markup(css),
        "script": Markup(js) if script else "",
        "csp": f"default-src 'none'; img-src data:; style-src '{sha256_source(css)}'; "
        f"script-src {script_src}; base-uri 'none'; form-action 'none'",
        "generator": __version__,
    }


def _environment():
    env = environment()
    env.filters["fmt"] = fmt
    env.filters["pct"] = pct
    env.filters["ci"] = ci
    env.filters["sortkey"] = sortkey
    return env


# -- the pieces of the report ---------------------------------------------------------------


def _text(value: Any) -> str:
    return "(missing)" if _missing(value) else str(value)


def _card(exemplar: Exemplar, attributes: list[str]) -> dict[str, Any]:
    record = exemplar.record
    picture = figures.resized(exemplar.image)
    return {
        "record": record,
        "image": figures.webp_data_uri(picture),
        "overlay": figures.webp_data_uri(figures.overlay(exemplar.image, exemplar.heatmap, mask=exemplar.mask)),
        "outline": figures.webp_data_uri(figures.outline(exemplar.image, exemplar.mask)),
        "width": picture.shape[1],
        "height": picture.shape[0],
        "cls": _text(record.get("label_name")),
        "ok": "right" if record.get("correct") else "wrong",
        "groups": [(f"g{i}", _text(record.get(a))) for i, a in enumerate(attributes)],
        "attributes": [(a, _text(record.get(a))) for a in attributes],
    }


def _gallery(result: AuditResult, attributes: list[str]) -> dict[str, Any]:
    """Both ends of the gallery as cards, with the values their filters offer."""
    reliant = result.gallery.background_reliant
    focused = result.gallery.subject_focused
    kept = max(len(reliant), len(focused))
    reliant, focused = reliant[:MAX_GALLERY_CARDS], focused[:MAX_GALLERY_CARDS]
    cards = {"reliant": [_card(e, attributes) for e in reliant], "focused": [_card(e, attributes) for e in focused]}
    everyone = cards["reliant"] + cards["focused"]
    groups = [
        (f"g{i}", attribute, sorted({dict(c["groups"])[f"g{i}"] for c in everyone}))
        for i, attribute in enumerate(attributes)
    ]
    note = ""
    if kept > MAX_GALLERY_CARDS:
        note = f"The audit kept {kept} samples at each end; the first {MAX_GALLERY_CARDS} are shown."
    return {
        "blocks": [
            {
                "anchor": "gallery-reliant",
                "title": "Most background-reliant samples",
                "text": "Lowest subject_share first: where the heatmap lies least on the subject.",
                "cards": cards["reliant"],
            },
            {
                "anchor": "gallery-focused",
                "title": "Most subject-focused samples",
                "text": "Highest subject_share first: where the heatmap lies most on the subject.",
                "cards": cards["focused"],
            },
        ],
        "classes": sorted({c["cls"] for c in everyone}),
        "groups": groups,
        "scale": figures.png_data_uri(figures.colour_scale()),
        "note": note,
    }


# the per-sample columns the figures read
CHART_COLUMNS = ("status", "subject_share", "subject_area", "correct", "background_reliant", "pred", "label_name")


def _charts(frame: pd.DataFrame, agg: Mapping[str, Any], meta: Mapping[str, Any], worst: Mapping[str, Any]) -> dict:
    attributes = list(meta["dataset"]["attributes"])
    minimum, confidence = meta["analysis"]["min_group_size"], meta["analysis"]["confidence"]
    breakdowns = [("class", agg["by_class"])]
    breakdowns += list(agg["by_group"].items()) + list(agg["by_intersection"].items())
    bars = [
        plots.group_bars(name, groups, worst.get(name), minimum, confidence)
        for name, groups in breakdowns[:MAX_BAR_CHARTS]
    ]
    omitted = ""
    if len(breakdowns) > MAX_BAR_CHARTS:
        left = ", ".join(name for name, _ in breakdowns[MAX_BAR_CHARTS:])
        omitted = f"Bar charts are drawn for the first {MAX_BAR_CHARTS} breakdowns; {left} are in the tables only."
    return {
        "distribution": plots.share_distribution(frame, attributes),
        "bars": [b for b in bars if b is not None],
        "scatter": plots.share_vs_area(frame, float(meta.get("reliance_threshold", 1.0))),
        "accuracy": plots.accuracy_vs_share(frame),
        "omitted": omitted,
    }


def _key_numbers(agg: Mapping[str, Any], meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The headline estimates, each with one sentence on how to read it; one the data cannot
    give carries ``not_measured`` (why) instead of a value."""
    cards = _key_cards(agg["overall"], meta)
    missing = agg.get("not_measured", {})
    return [{**card, "not_measured": missing.get(card["statistic"], "")} for card in cards]


def _label_cards(overall: Mapping[str, Any], meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A multi-label audit's accuracy, precision and recall cards (in place of the accuracy card)."""
    c = overall["ci"]
    skipped = overall.get("n_skipped", 0)
    texts = {
        "accuracy": "Samples whose predicted labels are exactly their true labels (exact match), among the samples "
        "the model saw; per label, the share of samples whose decision on it is right.",
        "precision": f"Predicted labels (probability ≥ {meta.get('threshold', 0.5):g}) that are true labels of their "
        "sample, over every label: lowered by false positives, also those never explained.",
        "recall": "True labels that the model predicts, over every label: lowered by missed labels"
        + (f". {skipped} rows explain nothing (no label to explain)." if skipped else "."),
    }
    return [
        {
            "label": STATISTIC_LABELS[name][0],
            "statistic": name,
            "value": overall.get(name),
            "ci": c.get(name),
            "style": STATISTIC_LABELS[name][1],
            "digits": 3,
            "text": texts[name],
        }
        for name in ("accuracy", "precision", "recall")
    ]


def _key_cards(overall: Mapping[str, Any], meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    c = overall["ci"]
    area = overall.get("subject_area_mean")
    area_text = ""
    if not _missing(area):
        area_text = (
            f" The subject covers {pct(area)} of the image on average: a heatmap spread evenly would score {fmt(area)}."
        )
    threshold = meta.get("reliance_threshold", 1.0)
    cards = [
        {
            "label": STATISTIC_LABELS["subject_share_mean"][0],
            "statistic": "subject_share_mean",
            "value": overall["subject_share_mean"],
            "ci": c["subject_share_mean"],
            "style": STATISTIC_LABELS["subject_share_mean"][1],
            "digits": 3,
            "text": "The share of each heatmap's energy that lies on the subject, averaged." + area_text,
        },
        {
            "label": STATISTIC_LABELS["focus_lift_mean"][0],
            "statistic": "focus_lift_mean",
            "value": overall["focus_lift_mean"],
            "ci": c["focus_lift_mean"],
            "style": STATISTIC_LABELS["focus_lift_mean"][1],
            "digits": 2,
            "text": "subject_share over subject_area: 1 is no better than a uniform heatmap, above 1 the heatmap "
            "concentrates on the subject, below 1 it is drawn to the background.",
        },
        {
            "label": STATISTIC_LABELS["background_reliant_rate"][0],
            "statistic": "background_reliant_rate",
            "value": overall["background_reliant_rate"],
            "ci": c["background_reliant_rate"],
            "style": STATISTIC_LABELS["background_reliant_rate"][1],
            "digits": 3,
            "text": f"The share of valid samples with focus_lift below {threshold:g}: "
            "their heatmap favours the background.",
        },
        {
            "label": STATISTIC_LABELS["accuracy"][0],
            "statistic": "accuracy",
            "value": overall["accuracy"],
            "ci": c["accuracy"],
            "style": STATISTIC_LABELS["accuracy"][1],
            "digits": 3,
            "text": f"Correct predictions among the {overall['n_predicted']} samples the model saw "
            f"({overall['n']} in all: {overall['n_valid']} scored, {overall['n_invalid']} invalid, "
            f"{overall['n_error']} unreadable).",
        },
        {
            "label": STATISTIC_LABELS["pointing_hit_rate"][0],
            "statistic": "pointing_hit_rate",
            "value": overall["pointing_hit_rate"],
            "ci": c["pointing_hit_rate"],
            "style": STATISTIC_LABELS["pointing_hit_rate"][1],
            "digits": 3,
            "text": "The share of valid samples whose hottest heatmap pixel (any of those tied at the peak) "
            "lies on the subject.",
        },
        {
            "label": STATISTIC_LABELS["border_share_mean"][0],
            "statistic": "border_share_mean",
            "value": overall.get("border_share_mean"),
            "ci": c.get("border_share_mean"),
            "style": STATISTIC_LABELS["border_share_mean"][1],
            "digits": 2,
            "text": "The heatmap's share in the image's outer band over the band's share of the image: 1 is no "
            "preference, above 1 drawn to the edges (tags, rulers, scanner borders). Needs no subject.",
        },
    ]
    if meta.get("task") == "multilabel":
        at = next(i for i, card in enumerate(cards) if card["statistic"] == "accuracy")
        cards[at : at + 1] = _label_cards(overall, meta)
    return cards


def _subjects_text(agg: Mapping[str, Any]) -> str:
    """One sentence on how many samples have a subject label and what that leaves unmeasured (of
    a multi-label audit: how many explained labels have their own subject)."""
    overall = agg["overall"]
    n, with_subject = overall["n"], agg.get("n_with_subject", overall["n"])
    if "n_skipped" in overall and not agg.get("not_measured"):  # multi-label: a skipped row explains nothing
        explained = n - overall["n_skipped"]
        if with_subject == explained:
            return ""
        return (
            f"{with_subject} of {explained} explained labels have a subject mask: the subject statistics rest on "
            "those alone; accuracy, precision, recall and border_share on every sample."
        )
    if with_subject == n:
        return ""
    missing = agg.get("not_measured", {})
    if missing:
        names = ", ".join(STATISTIC_LABELS[s][0] for s in missing)
        return f"No sample has a subject label: {names} are {next(iter(missing.values()))}. Accuracy, " + (
            "confidence, the group breakdowns and border_share are measured on every sample."
        )
    return (
        f"{with_subject} of {n} samples have a subject label: the subject statistics rest on those alone; "
        "accuracy and border_share on every sample."
    )


def _preprocessing_text(preprocessing: Mapping[str, Any]) -> str:
    parts = []
    for key, value in preprocessing.items():
        if isinstance(value, (list, tuple)):
            value = (
                "×".join(map(str, value))
                if key == "image_size"
                else ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
            )
        parts.append(f"{key.replace('_', ' ')} {value if value is not None else 'none'}")
    return "; ".join(parts)


def _run_facts(meta: Mapping[str, Any], overall: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(label, text, monospace) rows: what a reviewer needs to identify and rerun the audit."""
    model = meta.get("model") or {}
    dataset = meta["dataset"]
    versions = meta.get("versions", {})
    classes = meta.get("classes")
    rows: list[tuple[str, str, bool]] = [("model", model.get("spec") or meta.get("name", "model"), True)]
    if model.get("weights"):
        rows.append(("weights", str(model["weights"]), True))
    if model.get("weights_sha256"):
        rows.append(("weights sha256", model["weights_sha256"], True))
    rows.append(("dataset", str(dataset["source"]), True))
    if dataset.get("sha256"):
        rows.append(("dataset sha256", dataset["sha256"], True))
    multilabel = meta.get("task") == "multilabel"
    counted = f"{overall['n_valid']} scored, {overall['n_invalid']} invalid, {overall['n_error']} unreadable"
    if multilabel:
        counted = f"rows of (sample, label): {counted}, {overall.get('n_skipped', 0)} with no label to explain"
    rows.append(("samples", f"{dataset['n_samples']} ({counted})", False))
    if multilabel:
        threshold = meta.get("threshold", 0.5)
        rows.append(
            ("task", f"multi-label: sigmoid outputs, a label is predicted at probability ≥ {threshold:g}", False)
        )
    rows += [("note", note, False) for note in dataset.get("notes", [])]
    if classes:
        named = ", ".join(map(str, classes[:MAX_CLASSES_NAMED]))
        more = f" … and {len(classes) - MAX_CLASSES_NAMED} more" if len(classes) > MAX_CLASSES_NAMED else ""
        rows.append(("classes", f"{len(classes)}: {named}{more}", False))
    rows.append(("group attributes", ", ".join(dataset.get("attributes") or []) or "none", False))
    if multilabel:
        what = "every predicted label" if meta.get("target") == "pred" else "every true label"
    else:
        what = f"{'predicted' if meta.get('target') == 'pred' else 'true'} class"
    rows.append(("explained", f"{', '.join(meta['methods'])} on layer {meta['layer']}, {what}", False))
    rows.append(("reliance threshold", f"focus_lift < {meta.get('reliance_threshold', 1.0):g}", False))
    if meta.get("preprocessing"):
        rows.append(("preprocessing", _preprocessing_text(meta["preprocessing"]), False))
    rows.append(("date", str(meta.get("created", "")), False))
    rows.append(("versions", " · ".join(f"{k} {v}" for k, v in versions.items()), False))
    return rows


def _nav(extra: Mapping[str, Any], has_groups: bool, multilabel: bool = False) -> list[tuple[str, str]]:
    classes = ("classes", "Per label" if multilabel else "Per class")
    items = [("verdict", "Verdict"), ("numbers", "Key numbers"), ("run", "How it was run"), classes]
    if has_groups:
        items.append(("groups", "Per group"))
    items += [("disparities", "Disparities"), ("figures", "Figures"), ("gallery", "Gallery")]
    titles = {"counterfactual": "Counterfactual backgrounds", "sanity": "Sanity checks", "featuremaps": "Feature maps"}
    items += [(key, title) for key, title in titles.items() if extra.get(key)]
    items += [("invalid", "Invalid samples"), ("methodology", "Methodology")]
    return items


def _reason_counts(problems: pd.DataFrame) -> list[dict[str, Any]]:
    if problems.empty:
        return []
    counts = problems.groupby(["status", "reason"], dropna=False).size().sort_values(ascending=False)
    return [{"status": _text(s), "reason": _text(r), "count": int(n)} for (s, r), n in counts.items()]


def context(result: AuditResult) -> dict[str, Any]:
    """Everything the template shows, computed from the result (the template does no maths):
    its numbers from the summary as written to summary.json, so a result read back from its
    bundle renders the same page."""
    summary = result.summary()
    meta = summary["meta"]
    primary = meta["methods"][0]
    agg = summary["aggregates"][primary]
    attributes = list(meta["dataset"]["attributes"])
    # read only the columns and rows shown (the samples table may be far larger than memory allows)
    frame = result.read_samples(primary, columns=[*CHART_COLUMNS, *attributes])
    problem = pc.field("status") != "ok"
    noted = pc.field("note") != ""  # e.g. masks resized with --resize-masks
    disparities: dict[str, list[dict[str, Any]]] = {}
    for row in agg["disparities"]:
        disparities.setdefault(row["dimension"], []).append(row)
    # the group each breakdown's table highlights: lowest mean subject_share among groups with enough data
    worst_groups = {
        row["dimension"]: row["worst_group"] for row in agg["disparities"] if row["statistic"] == "subject_share_mean"
    }
    checks = summary["checks"]
    extra = {
        "strategies": None,
        "counterfactual": None,
        "sanity": None,
        "featuremaps": None,
        **extra_sections(result, summary),
    }
    return {
        **page_assets(script=True),
        "meta": meta,
        "model_name": meta["name"],
        "passed": summary["passed"],
        "checks": checks,
        "outcome_counts": {o: sum(c["outcome"] == o for c in checks) for o in OUTCOMES},
        "decide_on_help": DECIDE_ON_HELP,
        "analysis": meta["analysis"],
        "primary": primary,
        "overall": agg["overall"],
        "key_numbers": _key_numbers(agg, meta),
        "subjects_text": _subjects_text(agg),
        "by_class": agg["by_class"],
        "by_group": agg["by_group"],
        "by_intersection": agg["by_intersection"],
        "by_correctness": agg["by_correctness"],
        "disparities": disparities,
        "statistic_labels": task_labels(meta.get("task", "single")),
        "multilabel": meta.get("task") == "multilabel",
        "worst_groups": worst_groups,
        "attributes": attributes,
        "run_facts": _run_facts(meta, agg["overall"]),
        "config_toml": config_toml(meta.get("checks", {}), meta["analysis"]),
        "preprocessing_text": _preprocessing_text(meta.get("preprocessing") or {}),
        "charts": _charts(frame, agg, meta, worst_groups),
        "gallery": _gallery(result, attributes),
        "problems": result.read_samples(primary, where=problem, limit=MAX_PROBLEMS_LISTED).to_dict("records"),
        "problem_reasons": _reason_counts(result.read_samples(primary, columns=["status", "reason"], where=problem)),
        "n_problems": result.count_samples(primary, where=problem),
        "noted": result.read_samples(primary, where=noted, limit=MAX_PROBLEMS_LISTED).to_dict("records"),
        "n_noted": result.count_samples(primary, where=noted),
        "metric_help": metric_help(),
        "metric_definitions": [(name, REGISTRY[name].formula, text) for name, text in metric_help().items()],
        "nav": _nav(extra, bool(agg["by_group"] or agg["by_intersection"]), meta.get("task") == "multilabel"),
        **extra,
    }


def extra_sections(result: AuditResult, summary: Mapping[str, Any]) -> dict[str, Any]:
    """Context of the optional sections ``counterfactual``, ``sanity`` and ``featuremaps``
    (the template includes ``sections/<key>.html.j2`` when the value is truthy)."""
    return sections.sections(result, summary)


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
            "failed": [check.name for check in result.failed_checks],
            "href": href,
        }
        for name, (result, href) in reports.items()
    ]
    return (
        _environment()
        .get_template("index.html.j2")
        .render(
            title=title, intro=intro, entries=entries, statistic_labels=STATISTIC_LABELS, **page_assets(script=True)
        )
    )


# -- comparison -------------------------------------------------------------------------------


def _check_series(summaries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each check by name, with its rule and its result in each summary (``at``, in order; None
    where that audit did not run it): the check tables of the comparison and trend pages."""
    rows: dict[str, dict[str, Any]] = {}
    for i, summary in enumerate(summaries):
        for check in summary["checks"]:
            rule = f"{check['op']} {fmt(check['threshold'])}"
            row = rows.setdefault(check["name"], {"name": check["name"], "rule": rule, "at": [None] * len(summaries)})
            row["at"][i] = check
    return list(rows.values())


def _check_rows(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Checks of the summaries A and B side by side, matched by name (None where one lacks it)."""
    return [{**row, "a": row["at"][0], "b": row["at"][1]} for row in _check_series([a, b])]


def _side_facts(summary: Mapping[str, Any]) -> dict[str, Any]:
    meta = summary["meta"]
    model = meta.get("model") or {}
    return {
        "name": meta.get("name"),
        "passed": summary["passed"],
        "spec": model.get("spec") or meta.get("name"),
        "weights": model.get("weights"),
        "sha256": model.get("weights_sha256"),
        "layer": meta.get("layer"),
    }


def _unique(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _shared_facts(meta: Mapping[str, Any], n_samples: int, method: str) -> list[tuple[str, str, bool]]:
    """(label, text, monospace) of what several audits of the same samples share: the data, the
    method, the date and the versions."""
    dataset = meta["dataset"]
    facts = [("dataset", str(dataset["source"]), True)]
    if dataset.get("sha256"):
        facts.append(("dataset sha256", dataset["sha256"], True))
    return [
        *facts,
        ("samples", str(n_samples), False),
        ("method", f"{method} ({'predicted' if meta.get('target') == 'pred' else 'true'} class)", False),
        ("date", str(meta.get("created", "")), False),
        ("versions", " · ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items()), False),
    ]


def comparison_context(comparison: Comparison) -> dict[str, Any]:
    """Everything the comparison page shows."""
    data = comparison.to_dict(max_changed=MAX_CHANGED_LISTED)
    deltas: dict[str, list[dict[str, Any]]] = {}
    for row in data["deltas"]:
        deltas.setdefault(row["dimension"], []).append(row)
    summaries = comparison.a.summary(), comparison.b.summary()  # as written to disk
    meta = summaries[1]["meta"]
    method = data["method"]
    frames = {
        name: result.read_samples(method)
        for name, result in zip(comparison.names, (comparison.a, comparison.b), strict=True)
    }
    dataset = meta["dataset"]
    facts = _shared_facts(meta, data["n_samples"], method)
    return {
        **page_assets(script=True),
        "names": comparison.names,
        "sides": [_side_facts(summary) for summary in summaries],
        "passed": comparison.passed,
        "n_samples": data["n_samples"],
        "dataset": dataset["source"],
        "facts": facts,
        "method": method,
        "analysis": meta["analysis"],
        "check_rows": _check_rows(*summaries),
        "focus": data["focus"]["counts"],
        "correctness": data["correctness"],
        "overall_deltas": deltas.get("overall", []),
        "deltas": {k: v for k, v in deltas.items() if k != "overall"},
        "changed": data["focus"]["changed"],
        "n_changed": len(comparison.changed),
        "statistic_labels": STATISTIC_LABELS,
        "charts": {
            "forest": plots.delta_forest(data["deltas"], meta["analysis"]["confidence"]),
            "distributions": plots.share_distributions(frames),
        },
        "command": meta.get("command", "(run through the Python API)"),
        "commands": _unique(x["meta"]["command"] for x in summaries if x["meta"].get("command")),
        "config_toml": config_toml(meta.get("checks", {}), meta["analysis"]),
    }


def render_comparison(comparison: Comparison) -> str:
    """The comparison page of two audits as a string."""
    return _environment().get_template("compare.html.j2").render(**comparison_context(comparison))


# -- trend ------------------------------------------------------------------------------------

TREND_GROUP_STATISTICS = ("accuracy", "background_reliant_rate", "subject_share_mean", "border_share_mean")


def _statistic_rows(
    checkpoints: Sequence[Mapping[str, Any]],
    spans: Mapping[tuple[str, str, str], Mapping[str, Any]],
    dimension: str,
    group: str,
    statistics: Iterable[str],
) -> list[dict[str, Any]]:
    """One row per statistic of a slice: its estimate at every checkpoint, and its change from
    the first to the last checkpoint (None where none was taken)."""
    rows = []
    for statistic in statistics:
        at = [c["statistics"].get(dimension, {}).get(group, {}).get(statistic) for c in checkpoints]
        if all(e is None or e["value"] is None for e in at):
            continue
        rows.append(
            {"group": group, "statistic": statistic, "at": at, "span": spans.get((dimension, group, statistic))}
        )
    return rows


def trend_context(trend: Trend) -> dict[str, Any]:
    """Everything the trend page shows, from the trend's summary as written."""
    from auditcam.stats.analysis import CORRECTNESS, STATISTICS

    data = trend.to_dict()
    checkpoints, meta = data["checkpoints"], data["meta"]
    last = len(checkpoints) - 1
    spans = {
        (c["dimension"], c["group"], c["statistic"]): c for c in data["changes"] if (c["from"], c["to"]) == (0, last)
    }
    steps = [c for c in data["changes"] if c["to"] == c["from"] + 1 and c["dimension"] == "overall"]
    dimensions = {
        dimension: [
            row
            for group in groups
            for row in _statistic_rows(checkpoints, spans, dimension, group, TREND_GROUP_STATISTICS)
        ]
        for dimension, groups in checkpoints[-1]["statistics"].items()
        if dimension not in ("overall", CORRECTNESS)
    }
    facts = [("model", str(meta["model"]["spec"]), True), *_shared_facts(meta, data["n_samples"], data["method"])]
    return {
        **page_assets(script=True),
        "name": meta["name"],
        "passed": data["passed"],
        "decided_on": data["decided_on"],
        "checkpoints": checkpoints,
        "n_samples": data["n_samples"],
        "dataset": meta["dataset"]["source"],
        "method": data["method"],
        "analysis": meta["analysis"],
        "facts": facts,
        "check_rows": _check_series(checkpoints),
        "overall": _statistic_rows(checkpoints, spans, "overall", "all", STATISTICS),
        "steps": steps,
        "dimensions": {k: v for k, v in dimensions.items() if v},
        "statistic_labels": STATISTIC_LABELS,
        "chart": plots.trend_lines(
            [c["statistics"]["overall"]["all"] for c in checkpoints],
            [c["step"] for c in checkpoints],
            meta["analysis"]["confidence"],
        ),
        "command": meta.get("command") or "(run through the Python API)",
        "config_toml": config_toml(meta.get("checks", {}), meta["analysis"]),
    }


def render_trend(trend: Trend) -> str:
    """The trend page of a model's checkpoints as a string."""
    return _environment().get_template("trend.html.j2").render(**trend_context(trend))
