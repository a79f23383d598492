"""The configuration printed in a report reads back to the same checks and options."""

from __future__ import annotations

import pytest

from auditcam.config import (
    AnalysisOptions,
    Checks,
    GroupGap,
    Threshold,
    WorstGroupAccuracy,
    load_config,
)
from auditcam.report.reproduce import config_toml, toml_value


def _round_trip(checks: Checks, options: AnalysisOptions, tmp_path) -> tuple[Checks, AnalysisOptions]:
    path = tmp_path / "audit.toml"
    path.write_text(config_toml(checks.to_dict(), options.to_dict()), encoding="utf-8")
    config = load_config({}, path, use_pyproject=False)
    return config.checks, config.analysis


@pytest.mark.parametrize(
    ("checks", "options"),
    [
        (Checks(), AnalysisOptions()),
        (
            Checks(
                max_background_reliant_rate=None,
                min_subject_share=Threshold(0.4, "lower"),
                min_accuracy=0.75,
                max_error_rate=Threshold(0.01, "upper"),
                min_worst_group_accuracy=WorstGroupAccuracy(0.8, 'skin "tone"', "strict"),
                max_group_gap=(
                    GroupGap('skin "tone"', "subject_share_mean", 0.1),
                    GroupGap("site,lab\\room", "background_reliant_rate", 0.05, "upper"),
                ),
                decide_on="strict",
                insufficient_data="skip",
            ),
            AnalysisOptions(
                min_group_size=12, bootstrap=250, confidence=0.9, seed=7, intersections=(("site", "lab\\room"),)
            ),
        ),
    ],
)
def test_the_printed_configuration_reads_back_the_same(checks, options, tmp_path):
    assert _round_trip(checks, options, tmp_path) == (checks, options)


def test_every_key_is_spelt_out():
    text = config_toml(Checks().to_dict(), AnalysisOptions().to_dict())
    keys = [line.split(" = ")[0] for line in text.splitlines() if not line.startswith("#")]
    assert keys == [
        "max_background_reliant_rate",
        "min_subject_share",
        "min_accuracy",
        "max_error_rate",
        "min_worst_group_accuracy",
        "max_group_gap",
        "decide_on",
        "insufficient_data",
        "min_group_size",
        "bootstrap",
        "confidence",
        "seed",
        "intersections",
    ]
    assert "min_subject_share = false" in text and "max_background_reliant_rate = 0.2" in text


def test_toml_values():
    assert toml_value({"value": 0.5, "decide_on": None}) == "{value = 0.5}"
    assert toml_value(['a"b', "c\n"]) == '["a\\"b", "c\\n"]'
    assert toml_value({"odd key": 1}) == '{"odd key" = 1}'
    with pytest.raises(ValueError, match="TOML cannot hold nan"):
        toml_value(float("nan"))
