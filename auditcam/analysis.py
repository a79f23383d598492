"""Aggregates of per-sample records (overall, per class, per group) and check outcomes.

Everything here is a function of the tidy ``samples`` frame (one row per sample and method);
nothing touches the model or the files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from auditcam.config import Checks

PASS, FAIL, INSUFFICIENT = "pass", "fail", "insufficient data"


def summarise(frame: pd.DataFrame) -> dict[str, Any]:
    """Headline numbers of one slice of the samples of a single method.

    Accuracy counts every sample that got a prediction; heatmap metrics use valid samples only.
    """
    valid = frame[frame["status"] == "ok"]
    predicted = frame[frame["pred"].notna()]

    def mean(series: pd.Series) -> float | None:
        return None if series.empty else float(series.mean())

    return {
        "n": len(frame),
        "n_valid": len(valid),
        "n_invalid": int((frame["status"] == "invalid").sum()),
        "n_error": int((frame["status"] == "error").sum()),
        "accuracy": mean(predicted["correct"].astype(float)),
        "subject_share_mean": mean(valid["subject_share"]),
        "subject_share_median": None if valid.empty else float(valid["subject_share"].median()),
        "subject_area_mean": mean(valid["subject_area"]),
        "focus_lift_mean": mean(valid["focus_lift"]),
        "background_reliant_rate": mean(valid["background_reliant"]),
        "pointing_hit_rate": mean(valid["pointing_hit"]),
    }


def aggregates(frame: pd.DataFrame, attributes: Sequence[str]) -> dict[str, Any]:
    """Summaries overall, per true class (by name where known) and per value of each attribute."""
    class_column = "label_name" if "label_name" in frame else "label"
    return {
        "overall": summarise(frame),
        "by_class": {str(k): summarise(g) for k, g in frame.groupby(class_column, sort=True)},
        "by_group": {
            attribute: {str(k): summarise(g) for k, g in frame.groupby(attribute, sort=True)}
            for attribute in attributes
        },
    }


@dataclass(frozen=True)
class CheckResult:
    """One gate: ``value op threshold`` decides ``outcome`` (pass, fail or insufficient data)."""

    name: str
    metric: str
    value: float | None
    op: str
    threshold: float
    outcome: str
    description: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _decide(value: float | None, op: str, threshold: float) -> str:
    if value is None or math.isnan(value):
        return INSUFFICIENT
    holds = value <= threshold if op == "<=" else value >= threshold
    return PASS if holds else FAIL


def evaluate_checks(frame: pd.DataFrame, checks: Checks) -> list[CheckResult]:
    """Apply every enabled check to the samples of the primary method."""
    overall = summarise(frame)
    results = []
    if checks.max_background_reliant_rate is not None:
        value = overall["background_reliant_rate"]
        results.append(
            CheckResult(
                name="background_reliant_rate",
                metric="background_reliant",
                value=value,
                op="<=",
                threshold=checks.max_background_reliant_rate,
                outcome=_decide(value, "<=", checks.max_background_reliant_rate),
                description="share of samples whose heatmap is drawn to the background (focus_lift < 1)",
            )
        )
    if checks.min_subject_share is not None:
        value = overall["subject_share_mean"]
        results.append(
            CheckResult(
                name="mean_subject_share",
                metric="subject_share",
                value=value,
                op=">=",
                threshold=checks.min_subject_share,
                outcome=_decide(value, ">=", checks.min_subject_share),
                description="mean share of heatmap energy on the subject",
            )
        )
    return results
