"""Aggregates with bootstrap CIs, disparities and checks, on synthetic records."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame

from auditcam.config import AnalysisOptions, Checks, GroupGap, WorstGroupAccuracy
from auditcam.errors import InputError
from auditcam.stats import analysis, checks
from auditcam.stats.analysis import analyse
from auditcam.stats.checks import FAIL, INSUFFICIENT, PASS, decide, evaluate_checks
from tests.records import samples

FAST = AnalysisOptions(bootstrap=400)


def test_intervals_cover_the_true_value_at_about_the_nominal_rate():
    """200 independent simulated groups of 60 samples: each 95% CI should hold the true value
    about 95% of the time (binomial sd of the rate over 200 groups: 1.5 points)."""
    frame = samples({f"g{i:03d}": 60 for i in range(200)}, attribute="trial", seed=11)
    result = analyse(frame, ["trial"], AnalysisOptions(bootstrap=500, seed=5))
    table = result.estimates
    trials = table[table["dimension"] == "trial"].set_index("statistic")
    truth = {
        "accuracy": 0.8,
        "subject_share_mean": 0.4,  # Uniform(0.2, 0.6): mean and median 0.4
        "subject_share_median": 0.4,
        "pointing_hit_rate": 0.4,  # P(u < share) = E[share]
    }
    for statistic, true_value in truth.items():
        rows = trials.loc[statistic]
        covered = ((rows["ci_low"] <= true_value) & (true_value <= rows["ci_high"])).mean()
        assert 0.90 <= covered <= 0.99, (statistic, covered)


def test_a_planted_gap_is_detected_and_a_zero_gap_is_not():
    planted = analyse(samples({"light": 400, "dark": 400}, share={"dark": 0.3, "light": 0.5}), ["skin_tone"], FAST)
    row = planted.disparities.set_index(["dimension", "statistic"]).loc[("skin_tone", "subject_share_mean")]
    assert row["worst_group"] == "dark" and row["min_group"] == "dark" and row["max_group"] == "light"
    assert row["difference"] == pytest.approx(0.2, abs=0.02)
    assert row["difference_ci_low"] > 0.15 and row["difference_ci_high"] < 0.25
    assert row["ratio"] == pytest.approx(0.6, abs=0.05)

    level = analyse(samples({"light": 400, "dark": 400}, seed=1), ["skin_tone"], FAST)
    flat = level.disparities.set_index(["dimension", "statistic"]).loc[("skin_tone", "subject_share_mean")]
    assert flat["difference_ci_low"] < 0 < flat["difference_ci_high"]  # no gap detected

    gap = Checks(max_background_reliant_rate=None, max_group_gap=(GroupGap("skin_tone", "subject_share_mean", 0.1),))
    assert [c.outcome for c in evaluate_checks(planted, gap)] == [FAIL]
    assert [c.outcome for c in evaluate_checks(level, gap)] == [PASS]


def test_point_estimates_agree_with_fairlearn_metricframe():
    frame = samples({"I": 150, "II": 120, "III": 90}, share={"III": 0.3}, accuracy={"II": 0.6}, invalid_rate=0.1)
    result = analyse(frame, ["skin_tone"], FAST)
    valid = frame[frame["status"] == "ok"]
    share = MetricFrame(
        metrics=lambda y_true, y_pred: float(np.mean(y_true)),
        y_true=valid["subject_share"].to_numpy(),
        y_pred=valid["subject_share"].to_numpy(),
        sensitive_features=valid["skin_tone"].to_numpy(),
    )
    accuracy = MetricFrame(
        metrics=lambda y_true, y_pred: float(np.mean(y_true == y_pred)),
        y_true=frame["label"].to_numpy(),
        y_pred=frame["pred"].to_numpy(dtype=int),
        sensitive_features=frame["skin_tone"].to_numpy(),
    )
    ours = result.by_group("skin_tone")
    for statistic, reference in (("subject_share_mean", share), ("accuracy", accuracy)):
        np.testing.assert_allclose(ours[statistic].sort_index(), reference.by_group.sort_index())
        assert result.overall.loc[statistic, "value"] == pytest.approx(reference.overall)
        assert result.difference("skin_tone")[statistic] == pytest.approx(reference.difference())
        assert result.ratio("skin_tone")[statistic] == pytest.approx(reference.ratio())
        assert result.group_min("skin_tone")[statistic] == pytest.approx(reference.group_min())
        assert result.group_max("skin_tone")[statistic] == pytest.approx(reference.group_max())


def test_small_groups_are_insufficient_data_never_worst_or_gap():
    frame = samples({"big1": 200, "big2": 200, "tiny": 10}, share={"tiny": 0.05, "big2": 0.45})
    result = analyse(frame, ["skin_tone"], FAST)
    row = result.disparities.set_index(["dimension", "statistic"]).loc[("skin_tone", "subject_share_mean")]
    assert row["insufficient_groups"] == ("tiny",) and row["n_groups"] == 2
    assert row["worst_group"] == "big1"  # tiny has the lowest value, but only 10 samples
    groups = result.to_dict()["by_group"]["skin_tone"]
    assert "subject_share_mean" in groups["tiny"]["insufficient"] and groups["big1"]["insufficient"] == []
    alone = analyse(frame[frame["skin_tone"] != "big2"], ["skin_tone"], FAST)
    check = evaluate_checks(
        alone,
        Checks(max_background_reliant_rate=None, max_group_gap=(GroupGap("skin_tone", "subject_share_mean", 0.1),)),
    )[0]
    assert check.outcome == INSUFFICIENT and check.value is None
    assert check.detail == "fewer than 2 groups with at least 30 samples; insufficient data: tiny"


def test_breakdowns_counts_and_intersections():
    frame = samples({"light": 100, "dark": 60}, invalid_rate=0.1, seed=3)
    result = analyse(
        frame, ["skin_tone", "site"], AnalysisOptions(bootstrap=50, intersections=(("skin_tone", "site"),))
    )
    assert result.dimensions == ("overall", "class", "skin_tone", "site", "skin_tone & site", "correctness")
    counts = result.counts.set_index(["dimension", "group"])
    crosstab = pd.crosstab(frame["skin_tone"], frame["site"])
    for (tone, site), n in crosstab.stack().items():
        assert counts.loc[("skin_tone & site", f"{tone} & {site}"), "n"] == n
    assert counts.loc[("overall", "all"), "n_invalid"] == (frame["status"] == "invalid").sum()
    assert counts.loc[("correctness", "correct"), "n"] == frame["correct"].sum()
    assert list(result.by_group("class").index) == ["circle", "square", "cross"]  # model output order
    error_rate = result.overall.loc["error_rate", "value"]
    assert error_rate == pytest.approx((frame["status"] != "ok").mean())


def test_same_seed_same_intervals_other_seed_other_intervals():
    frame = samples({"light": 100, "dark": 100})
    a, b = analyse(frame, ["skin_tone"], FAST), analyse(frame, ["skin_tone"], FAST)
    c = analyse(frame, ["skin_tone"], AnalysisOptions(bootstrap=400, seed=1))
    pd.testing.assert_frame_equal(a.estimates, b.estimates)
    assert not np.allclose(a.estimates["ci_low"], c.estimates["ci_low"], equal_nan=True)


def test_the_analysis_cannot_be_changed_through_its_accessors():
    result = analyse(samples({"light": 50, "dark": 50}), ["skin_tone"], AnalysisOptions(bootstrap=50))
    before = result.estimates
    estimates = result.estimates
    estimates["value"] = -1.0
    pd.testing.assert_frame_equal(result.estimates, before)
    with pytest.raises(AttributeError, match="immutable"):
        result.options = AnalysisOptions()
    with pytest.raises(ValueError, match="read-only"):
        result.replicates("skin_tone", "dark")[0, 0] = 1.0


def test_error_messages():
    frame = samples({"light": 40})
    with pytest.raises(ValueError) as missing:
        analyse(frame.drop(columns=["status", "focus_lift"]))
    assert str(missing.value) == analysis.MISSING_COLUMNS.format(columns="status, focus_lift")
    mixed = pd.concat([frame, frame.assign(method="gradcam++")])
    with pytest.raises(ValueError) as several:
        analyse(mixed)
    assert str(several.value) == analysis.SEVERAL_METHODS.format(methods="gradcam, gradcam++")
    with pytest.raises(KeyError) as unknown:
        analyse(frame, ["skin_tone"], AnalysisOptions(bootstrap=10)).by_group("sex")
    assert unknown.value.args[0] == analysis.UNKNOWN_DIMENSION.format(
        dimension="sex", dimensions="overall, class, skin_tone, correctness"
    )
    with pytest.raises(InputError) as clash:
        analyse(frame.rename(columns={"skin_tone": "class"}), ["class"])
    assert str(clash.value) == analysis.BUILT_IN_DIMENSION.format(attribute="class")
    with pytest.raises(InputError) as absent:
        evaluate_checks(
            analyse(frame, ["skin_tone"], AnalysisOptions(bootstrap=10)),
            Checks(min_worst_group_accuracy=WorstGroupAccuracy(0.5, attribute="sex")),
        )
    assert str(absent.value) == checks.UNKNOWN_ATTRIBUTE.format(
        what="min_worst_group_accuracy", attribute="sex", attributes="skin_tone"
    )


@pytest.mark.parametrize(
    ("value", "ci", "op", "decide_on", "outcome"),
    [
        (0.15, (0.10, 0.25), "<=", "point", PASS),
        (0.15, (0.10, 0.25), "<=", "upper", FAIL),
        (0.15, (0.10, 0.25), "<=", "strict", FAIL),
        (0.25, (0.18, 0.30), "<=", "lower", PASS),
        (0.25, (0.18, 0.30), ">=", "strict", FAIL),  # strict on a floor: the lower bound
        (0.25, (0.21, 0.30), ">=", "strict", PASS),
        (math.nan, None, "<=", "point", INSUFFICIENT),
        (0.1, None, "<=", "upper", INSUFFICIENT),  # no interval to decide on
    ],
)
def test_decide(value, ci, op, decide_on, outcome):
    assert decide(value, ci, op, 0.2, decide_on) == outcome


def test_checks_report_value_interval_and_threshold():
    frame = samples({"light": 300, "dark": 300}, accuracy={"dark": 0.6})
    result = analyse(frame, ["skin_tone", "site"], FAST)
    checks = evaluate_checks(
        result,
        Checks(
            max_background_reliant_rate=0.5,
            min_subject_share=0.3,
            min_accuracy=0.9,
            max_error_rate=0.01,
            min_worst_group_accuracy=0.7,
            decide_on="strict",
        ),
    )
    by_name = {c.name: c for c in checks}
    assert list(by_name) == [
        "background_reliant_rate",
        "mean_subject_share",
        "accuracy",
        "error_rate",
        "worst_group_accuracy:skin_tone",
        "worst_group_accuracy:site",
    ]
    worst = by_name["worst_group_accuracy:skin_tone"]
    assert worst.outcome == FAIL and worst.detail == "worst group: dark"
    assert worst.value == pytest.approx(frame[frame["skin_tone"] == "dark"]["correct"].mean())
    assert worst.ci[0] < worst.value < worst.ci[1] and worst.n == 300
    assert by_name["accuracy"].outcome == FAIL and by_name["error_rate"].outcome == PASS
    low, high = by_name["mean_subject_share"].ci
    assert by_name["mean_subject_share"].message == (
        f"mean_subject_share = {by_name['mean_subject_share'].value:.3f} [95% CI {low:.3f} to {high:.3f}] "
        "(600 samples); rule >= 0.3 decided on strict: pass"
    )
