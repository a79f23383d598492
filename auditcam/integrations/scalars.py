"""Flatten an audit summary into tracker metrics and parameters (pure: dicts in, dicts out).

Metric names are ``/``-separated paths that every tracker accepts (MLflow allows letters,
digits, ``_ - . / :`` and spaces): ``check/<name>/value``, ``check/<name>/ci_low``, ...,
``overall/<statistic>``, ``class/<class>/<statistic>``, ``group/<attribute>/<group>/<statistic>``.
A value the data cannot give (None: not measured) is left out, never logged as 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

# the statistics logged per class and per group (every statistic is logged overall)
KEY_STATISTICS = ("accuracy", "subject_share_mean", "focus_lift_mean", "background_reliant_rate")
MAX_PARAM_LENGTH = 500  # MLflow's limit on a parameter value in older stores
_UNSAFE = re.compile(r"[^\w.\- /:]")


def metric_name(*parts: str) -> str:
    """``parts`` joined by ``/``, characters a tracker refuses (``&``, ``,``, ...) as ``_``."""
    return "/".join(_UNSAFE.sub("_", str(part)).strip() or "_" for part in parts)


def _estimates(prefix: tuple[str, ...], slice_: Mapping[str, Any], statistics: Any) -> Iterator[tuple[str, float]]:
    """A slice's statistics with their CI ends (``<statistic>``, ``<statistic>/ci_low|ci_high``)."""
    intervals = slice_.get("ci") or {}
    for statistic in statistics:
        value = slice_.get(statistic)
        if value is None:
            continue
        yield metric_name(*prefix, statistic), float(value)
        bounds = intervals.get(statistic)
        if bounds is not None:
            yield metric_name(*prefix, statistic, "ci_low"), float(bounds[0])
            yield metric_name(*prefix, statistic, "ci_high"), float(bounds[1])


def check_scalars(checks: Any) -> dict[str, float]:
    """Every check's value, CI ends, threshold and whether it passed (1/0; absent when it was
    not decided: insufficient data, not applicable)."""
    out: dict[str, float] = {}
    for check in checks:
        name = check["name"]
        if check.get("value") is not None:
            out[metric_name("check", name, "value")] = float(check["value"])
        if check.get("ci") is not None:
            out[metric_name("check", name, "ci_low")] = float(check["ci"][0])
            out[metric_name("check", name, "ci_high")] = float(check["ci"][1])
        out[metric_name("check", name, "threshold")] = float(check["threshold"])
        if check["outcome"] in ("pass", "fail"):
            out[metric_name("check", name, "passed")] = float(check["outcome"] == "pass")
    return out


def summary_scalars(summary: Mapping[str, Any]) -> dict[str, float]:
    """Metrics of a ``summary.json`` dict: the checks, every overall statistic with its CI, and
    the key statistics per class, per group and per intersection, of the primary method."""
    out = check_scalars(summary["checks"])
    out["passed"] = float(bool(summary["passed"]))
    methods = summary.get("meta", {}).get("methods") or list(summary["aggregates"])
    aggregates = summary["aggregates"][methods[0]]
    overall = aggregates["overall"]
    out.update(_estimates(("overall",), overall, [k for k in overall.get("ci") or {}]))
    for cls, slice_ in aggregates["by_class"].items():
        out.update(_estimates(("class", cls), slice_, KEY_STATISTICS))
    for kind in ("by_group", "by_intersection"):
        for dimension, groups in aggregates.get(kind, {}).items():
            for group, slice_ in groups.items():
                out.update(_estimates(("group", dimension, group), slice_, KEY_STATISTICS))
    if summary.get("bg_gap") is not None:
        out["bg_gap"] = float(summary["bg_gap"])
    return out


def _flat(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _flat(f"{prefix}.{key}" if prefix else str(key), item)
    else:
        yield prefix, value


def summary_params(summary: Mapping[str, Any]) -> dict[str, str]:
    """The audit's settings as flat ``section.key`` text parameters: model, dataset, methods,
    layer, target, reliance threshold, preprocessing, checks and analysis options."""
    meta = summary.get("meta", {})
    settings = {
        key: meta.get(key)
        for key in ("name", "model", "methods", "layer", "target", "reliance_threshold", "upsampling", "preprocessing")
    }
    settings["dataset"] = {k: v for k, v in (meta.get("dataset") or {}).items() if k != "attributes"}
    settings["checks"], settings["analysis"] = meta.get("checks", {}), meta.get("analysis", {})
    return {
        key: ("" if value is None else str(value))[:MAX_PARAM_LENGTH]
        for key, value in _flat("", settings)
        if value is not None
    }
