"""Checks: decide each gate of :class:`~auditcam.config.Checks` on an
:class:`~auditcam.stats.analysis.Analysis`, with its value, CI, threshold and outcome.

An outcome is ``pass``, ``fail``, ``insufficient data`` (the value rests on fewer than
``min_group_size`` samples, or a gap on fewer than two such groups) or ``not applicable`` (the
dataset does not carry what the check needs, e.g. subjects or groups; its ``detail`` says why).
A check *blocks* the verdict when it failed, or lacks data while ``insufficient_data = "fail"``;
a check that is not applicable never blocks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from auditcam.config import AnalysisOptions, Checks, GroupGap, Threshold, WorstGroupAccuracy
from auditcam.errors import InputError
from auditcam.stats.analysis import ALL, OVERALL, UNKNOWN_ATTRIBUTE, Analysis, intersection_name
from auditcam.stats.estimates import Estimate

PASS, FAIL, INSUFFICIENT, NOT_APPLICABLE = "pass", "fail", "insufficient data", "not applicable"
OUTCOMES = (PASS, FAIL, INSUFFICIENT, NOT_APPLICABLE)
MISSING_BREAKDOWN = "max_group_gap: the analysis has no breakdown {dimension!r}; add it to the intersections"
MULTILABEL_ONLY = "not applicable: {statistic} is measured in multi-label audits only"


def _dimension_of(attribute: str) -> str:
    """A check's ``attribute`` (``"a"`` or ``"a,b"``) as a breakdown name."""
    return intersection_name(attribute.split(",")) if "," in attribute else attribute


@dataclass(frozen=True)
class CheckResult:
    """One gate: the estimate picked by ``decide_on`` (point, or a CI bound) ``op threshold``
    decides ``outcome``: pass, fail, insufficient data (fewer than the minimum samples or
    groups) or not applicable (the data lacks what the check needs; ``detail`` says what).
    ``blocking``: whether this outcome stops the audit from passing."""

    name: str
    metric: str
    scope: str
    value: float | None
    ci: tuple[float, float] | None
    confidence: float
    op: str
    threshold: float
    decide_on: str
    outcome: str
    n: int
    description: str
    detail: str = ""
    insufficient_data: str = "fail"
    n_of: str = "samples"  # what n counts: samples, or groups (for a group gap)

    @property
    def blocking(self) -> bool:
        return self.outcome == FAIL or (self.outcome == INSUFFICIENT and self.insufficient_data == "fail")

    @property
    def message(self) -> str:
        return check_message(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = None if self.ci is None else list(self.ci)
        out["blocking"] = self.blocking
        return out


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def check_message(check: Mapping[str, Any]) -> str:
    """One line: value, CI, threshold, how it was decided, outcome (from a check's dict form)."""
    ci = check.get("ci")
    interval = f" [{100 * check['confidence']:g}% CI {_num(ci[0])} to {_num(ci[1])}]" if ci else ""
    text = (
        f"{check['name']} = {_num(check['value'])}{interval} ({check['n']} {check.get('n_of', 'samples')}); "
        f"rule {check['op']} {check['threshold']:g} decided on {check['decide_on']}: {check['outcome']}"
    )
    return f"{text}; {check['detail']}" if check.get("detail") else text


def _decided_value(value: float, ci: tuple[float, float] | None, op: str, decide_on: str) -> float:
    if decide_on == "point":
        return value
    if ci is None:
        return math.nan
    if decide_on == "strict":
        decide_on = "upper" if op == "<=" else "lower"
    return ci[1] if decide_on == "upper" else ci[0]


def decide(value: float | None, ci: tuple[float, float] | None, op: str, threshold: float, decide_on: str) -> str:
    """pass/fail of ``decided value op threshold``; insufficient data when there is no value."""
    if value is None or math.isnan(value):
        return INSUFFICIENT
    picked = _decided_value(value, ci, op, decide_on)
    if math.isnan(picked):
        return INSUFFICIENT
    return PASS if (picked <= threshold if op == "<=" else picked >= threshold) else FAIL


def _overall_check(
    analysis: Analysis, checks: Checks, name: str, statistic: str, op: str, threshold: Threshold
) -> CheckResult:
    estimate = analysis.estimate(OVERALL, ALL, statistic)
    decide_on = threshold.decide_on or checks.decide_on
    n, minimum = estimate.n, analysis.options.min_group_size
    outcome = INSUFFICIENT if n < minimum else decide(estimate.value, estimate.ci, op, threshold.value, decide_on)
    detail = f"n = {n} < min_group_size {minimum}" if n < minimum else ""
    if statistic in analysis.not_measured():
        outcome, detail = NOT_APPLICABLE, analysis.not_measured()[statistic]
    return CheckResult(
        name=name,
        metric=statistic,
        scope=OVERALL,
        value=estimate.value,
        ci=estimate.ci,
        confidence=analysis.options.confidence,
        op=op,
        threshold=threshold.value,
        decide_on=decide_on,
        outcome=outcome,
        n=n,
        description=analysis.statistics[statistic].description,
        detail=detail,
        insufficient_data=checks.insufficient_data,
    )


def _left_out(row: Mapping[str, Any]) -> str:
    return f"; insufficient data: {', '.join(row['insufficient_groups'])}" if row["insufficient_groups"] else ""


def _worst_group_check(analysis: Analysis, checks: Checks, spec: WorstGroupAccuracy, attribute: str) -> CheckResult:
    row = analysis.disparity(attribute, "accuracy")
    decide_on = spec.decide_on or checks.decide_on
    if row["min_group"] is not None:
        estimate = analysis.estimate(attribute, row["min_group"], "accuracy")
        detail = f"worst group: {row['min_group']}"
    else:
        estimate = Estimate("accuracy", None, None, 0, analysis.options.confidence, sufficient=False)
        detail = f"no group with at least {analysis.options.min_group_size} samples"
    return CheckResult(
        name=f"worst_group_accuracy:{attribute}",
        metric="accuracy",
        scope=attribute,
        value=estimate.value,
        ci=estimate.ci,
        confidence=analysis.options.confidence,
        op=">=",
        threshold=spec.value,
        decide_on=decide_on,
        outcome=decide(estimate.value, estimate.ci, ">=", spec.value, decide_on),
        n=estimate.n,
        description=f"accuracy of the least accurate {attribute} group",
        detail=detail + _left_out(row),
        insufficient_data=checks.insufficient_data,
    )


def _gap_check(analysis: Analysis, checks: Checks, gap: GroupGap) -> CheckResult:
    dimension = _dimension_of(gap.attribute)
    if dimension not in analysis.dimensions:
        raise InputError(MISSING_BREAKDOWN.format(dimension=dimension))
    decide_on = gap.decide_on or checks.decide_on
    value = ci = None
    n_groups, left_out = 0, ""
    if gap.metric not in analysis.statistics:  # precision/recall of a single-label audit
        outcome, detail = NOT_APPLICABLE, MULTILABEL_ONLY.format(statistic=gap.metric)
    elif gap.metric in analysis.not_measured():
        outcome, detail = NOT_APPLICABLE, analysis.not_measured()[gap.metric]
        n_groups = int(analysis.disparity(dimension, gap.metric)["n_groups"])
    else:
        row = analysis.disparity(dimension, gap.metric)
        n_groups, left_out = int(row["n_groups"]), _left_out(row)
        if n_groups >= 2:
            value, ci = row["difference"], (row["difference_ci_low"], row["difference_ci_high"])
            detail = f"{row['max_group']} {_num(row['group_max'])} vs {row['min_group']} {_num(row['group_min'])}"
        else:
            detail = f"fewer than 2 groups with at least {analysis.options.min_group_size} samples"
        outcome = decide(value, ci, "<=", gap.value, decide_on)
    return CheckResult(
        name=f"group_gap:{dimension}:{gap.metric}",
        metric=gap.metric,
        scope=dimension,
        value=value,
        ci=ci,
        confidence=analysis.options.confidence,
        op="<=",
        threshold=gap.value,
        decide_on=decide_on,
        outcome=outcome,
        n=n_groups,
        description=f"difference of {gap.metric} between the best and the worst {dimension} group",
        detail=detail + left_out,
        insufficient_data=checks.insufficient_data,
        n_of="groups",
    )


def estimate_check(
    estimate: Estimate,
    checks: Checks,
    options: AnalysisOptions,
    *,
    name: str,
    metric: str,
    threshold: Threshold,
    description: str,
    detail: str = "",
) -> CheckResult:
    """A ``<=`` gate on one estimate computed outside the heatmap analysis (BG-gap, the sanity
    correlation); fewer than ``min_group_size`` samples lack data."""
    decide_on = threshold.decide_on or checks.decide_on
    n, minimum, ci = estimate.n, options.min_group_size, estimate.ci
    outcome = INSUFFICIENT if n < minimum else decide(estimate.value, ci, "<=", threshold.value, decide_on)
    scarce = f"n = {n} < min_group_size {minimum}" if n < minimum else ""
    return CheckResult(
        name=name,
        metric=metric,
        scope=OVERALL,
        value=estimate.value,
        ci=ci,
        confidence=options.confidence,
        op="<=",
        threshold=threshold.value,
        decide_on=decide_on,
        outcome=outcome,
        n=n,
        description=description,
        detail="; ".join(t for t in (detail, scarce) if t),
        insufficient_data=checks.insufficient_data,
    )


def not_applicable(check: CheckResult, detail: str) -> CheckResult:
    """``check`` marked not applicable (the data lacks what it needs), with ``detail`` saying why."""
    return dataclasses.replace(check, outcome=NOT_APPLICABLE, detail=detail, value=None, ci=None)


def bg_gap_check(
    estimate: Estimate,
    checks: Checks,
    options: AnalysisOptions,
    detail: str = "",
    not_informative: str = "",
) -> CheckResult | None:
    """``max_bg_gap`` on the overall BG-gap of the counterfactual test (None: check off); not
    applicable, with ``not_informative`` as the reason, when the donors' backgrounds carry no
    class information (BG-gap is then ~0 for any model and cannot show reliance)."""
    if checks.max_bg_gap is None:
        return None
    result = estimate_check(
        estimate,
        checks,
        options,
        name="bg_gap",
        metric="bg_gap",
        threshold=checks.max_bg_gap,
        description="accuracy on same-class backgrounds minus accuracy on other classes' backgrounds",
        detail=detail,
    )
    return not_applicable(result, not_informative) if not_informative else result


def background_following_check(
    estimate: Estimate, checks: Checks, options: AnalysisOptions, detail: str = ""
) -> CheckResult | None:
    """``max_background_following`` on the counterfactual test's overall background-following
    rate (None: check off); valid for donors from any split, balanced or not."""
    if checks.max_background_following is None:
        return None
    return estimate_check(
        estimate,
        checks,
        options,
        name="background_following",
        metric="background_following_rate",
        threshold=checks.max_background_following,
        description="share of swaps onto another class's background whose prediction moves to the donor image's",
        detail=detail,
    )


def sanity_check(estimate: Estimate, checks: Checks, options: AnalysisOptions, detail: str = "") -> CheckResult | None:
    """``max_sanity_correlation`` on the fully randomised model's mean rank correlation."""
    if checks.max_sanity_correlation is None:
        return None
    return estimate_check(
        estimate,
        checks,
        options,
        name="sanity:model_randomisation",
        metric="sanity_spearman",
        threshold=checks.max_sanity_correlation,
        description="rank correlation of the heatmaps with those of the fully randomised model "
        "(high: the maps do not depend on what the model learned)",
        detail=detail,
    )


def required_intersections(checks: Checks, options: AnalysisOptions) -> AnalysisOptions:
    """``options`` plus every intersection a gap check refers to."""
    wanted = dict.fromkeys(options.intersections)
    for gap in checks.max_group_gap:
        if "," in gap.attribute:
            wanted.setdefault(tuple(gap.attribute.split(",")))
    return AnalysisOptions(**{**asdict(options), "intersections": tuple(wanted)})


def validate_checks(checks: Checks, options: AnalysisOptions, attributes: Sequence[str]) -> None:
    """Every attribute a check or breakdown names must be a group attribute of the data."""
    named = [("intersections", a) for names in options.intersections for a in names]
    named += [("max_group_gap", a) for gap in checks.max_group_gap for a in gap.attribute.split(",")]
    worst = checks.min_worst_group_accuracy
    if worst is not None and worst.attribute is not None:
        named.append(("min_worst_group_accuracy", worst.attribute))
    for what, attribute in named:
        if attribute not in attributes:
            raise InputError(
                UNKNOWN_ATTRIBUTE.format(what=what, attribute=attribute, attributes=", ".join(attributes) or "(none)")
            )


def evaluate_checks(analysis: Analysis, checks: Checks) -> list[CheckResult]:
    """Apply every enabled check to an analysis (of the primary method's samples). A check of a
    subject statistic is not applicable when no sample has a subject (the verdict then rests on
    the mask-free checks); with only some, it is decided on those, with their n."""
    validate_checks(checks, analysis.options, analysis.attributes)
    results = []
    overall = (
        ("background_reliant_rate", "background_reliant_rate", "<=", checks.max_background_reliant_rate),
        ("mean_subject_share", "subject_share_mean", ">=", checks.min_subject_share),
        ("accuracy", "accuracy", ">=", checks.min_accuracy),
        ("error_rate", "error_rate", "<=", checks.max_error_rate),
    )
    for name, statistic, op, threshold in overall:
        if threshold is not None:
            results.append(_overall_check(analysis, checks, name, statistic, op, threshold))
    worst = checks.min_worst_group_accuracy
    if worst is not None:
        for attribute in [worst.attribute] if worst.attribute else analysis.attributes:
            results.append(_worst_group_check(analysis, checks, worst, attribute))
        if worst.attribute is None and not analysis.attributes:
            results.append(
                CheckResult(
                    name="worst_group_accuracy",
                    metric="accuracy",
                    scope="(no attributes)",
                    value=None,
                    ci=None,
                    confidence=analysis.options.confidence,
                    op=">=",
                    threshold=worst.value,
                    decide_on=worst.decide_on or checks.decide_on,
                    outcome=NOT_APPLICABLE,
                    n=0,
                    description="accuracy of the least accurate group",
                    detail="the data has no group attributes",
                    insufficient_data=checks.insufficient_data,
                )
            )
    results.extend(_gap_check(analysis, checks, gap) for gap in checks.max_group_gap)
    return results


def passed(checks: Sequence[CheckResult]) -> bool:
    """The verdict: no check blocks (failed, or lacks data under ``insufficient_data = "fail"``)."""
    return not any(check.blocking for check in checks)


def location_shortcut_check(
    measured: Sequence[Mapping[str, Any]], checks: Checks, options: AnalysisOptions, reason: str = ""
) -> CheckResult | None:
    """``max_location_shortcut`` on the strategies whose spot was occluded and lies off the
    subject (``measured``: their ``occlusion`` dicts with ``n``, ``difference`` and ``strategy``):
    the largest flip-rate difference among those with at least ``min_group_size`` members;
    not applicable, with ``reason``, when no strategy had such a spot (None: check off)."""
    threshold = checks.max_location_shortcut
    if threshold is None:
        return None
    description = "largest flip-rate difference, occluding a strategy's hot spot minus an equally large control region"
    if not measured:
        return CheckResult(
            name="location_shortcut",
            metric="flip_rate_difference",
            scope="strategies",
            value=None,
            ci=None,
            confidence=options.confidence,
            op="<=",
            threshold=threshold.value,
            decide_on=threshold.decide_on or checks.decide_on,
            outcome=NOT_APPLICABLE,
            n=0,
            description=description,
            detail=reason,
            insufficient_data=checks.insufficient_data,
        )
    enough = [m for m in measured if m["n"] >= options.min_group_size]
    worst = max(enough or measured, key=lambda m: m["difference"]["value"])
    return estimate_check(
        Estimate.from_dict("flip_rate_difference", {**worst["difference"], "n": worst["n"]}, options.confidence),
        checks,
        options,
        name="location_shortcut",
        metric="flip_rate_difference",
        threshold=threshold,
        description=description,
        detail=f"largest in strategy {worst['strategy']}",
    )
