"""auditcam.testing: the assertion users put in their own test suites."""

from __future__ import annotations

import json

import pytest

from auditcam.config import AnalysisOptions, Checks
from auditcam.testing import FAILED_CHECKS, assert_audit_passes, failing_checks
from tests.records import audit_result, samples

OPTIONS = AnalysisOptions(bootstrap=200)


def test_a_passing_audit_passes_quietly(tmp_path):
    result = audit_result(samples({"light": 100}), Checks(max_background_reliant_rate=0.9), OPTIONS)
    assert result.passed
    assert_audit_passes(result)
    (tmp_path / "summary.json").write_text(json.dumps(result.summary()), encoding="utf-8")
    assert_audit_passes(tmp_path)  # the folder of a written audit
    assert_audit_passes(tmp_path / "summary.json")


def test_the_failure_lists_each_blocking_check_with_value_interval_and_threshold(tmp_path):
    checks = Checks(max_background_reliant_rate=0.9, min_subject_share=0.6, min_accuracy=0.95)
    result = audit_result(samples({"light": 100}), checks, OPTIONS, name="my model")
    with pytest.raises(AssertionError) as error:
        assert_audit_passes(result)
    lines = str(error.value).splitlines()
    assert lines[0] == FAILED_CHECKS.format(n=2, total=3, name="my model")
    share = next(c for c in result.checks if c.name == "mean_subject_share")
    assert lines[1].strip() == share.message
    assert f"[95% CI {share.ci[0]:.3f} to {share.ci[1]:.3f}]" in lines[1] and "rule >= 0.6" in lines[1]
    assert lines[2].strip().startswith("accuracy = ") and "rule >= 0.95" in lines[2]
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(result.summary()), encoding="utf-8")
    assert failing_checks(path) == [line.strip() for line in lines[1:]]


def test_insufficient_data_fails_unless_skipped():
    small = samples({"light": 12})
    with pytest.raises(AssertionError, match="insufficient data; n = 12 < min_group_size 30"):
        assert_audit_passes(audit_result(small, Checks(), OPTIONS))
    assert_audit_passes(audit_result(small, Checks(insufficient_data="skip"), OPTIONS))
