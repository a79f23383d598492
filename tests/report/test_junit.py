"""junit.xml: the testsuites/testsuite/testcase shape CI systems read, one testcase per check."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from auditcam.config import AnalysisOptions, Checks, GroupGap
from auditcam.report import render_junit
from auditcam.stats.checks import NOT_APPLICABLE, CheckResult
from tests.records import audit_result, samples

COUNTS = ("tests", "failures", "errors", "skipped")


def assert_junit_shape(xml: str) -> ET.Element:
    """The structure of the JUnit XSD that Jenkins, GitLab and GitHub reporters read: counts on
    testsuites and testsuite that add up, named testcases, one failure/skipped at most each."""
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(xml.encode("utf-8"))
    assert root.tag == "testsuites"
    suites = list(root)
    assert suites and all(s.tag == "testsuite" for s in suites)
    totals = dict.fromkeys(COUNTS, 0)
    for suite in suites:
        assert suite.get("name") and float(suite.get("time")) >= 0
        cases = suite.findall("testcase")
        assert [c.tag for c in suite if c.tag not in ("properties", "system-out", "system-err")] == ["testcase"] * len(
            cases
        )
        kinds = [[child.tag for child in case if child.tag in ("failure", "error", "skipped")] for case in cases]
        assert all(len(k) <= 1 for k in kinds)
        counted = {
            "tests": len(cases),
            "failures": sum(k == ["failure"] for k in kinds),
            "errors": sum(k == ["error"] for k in kinds),
            "skipped": sum(k == ["skipped"] for k in kinds),
        }
        assert {c: int(suite.get(c)) for c in COUNTS} == counted
        for c in COUNTS:
            totals[c] += counted[c]
        for case in cases:
            assert case.get("name") and case.get("classname") and float(case.get("time")) >= 0
            for child in case.findall("failure"):
                assert child.get("message") and child.get("type")
    assert {c: int(root.get(c)) for c in COUNTS} == totals
    return root


def test_one_testcase_per_check_and_failures_state_value_ci_and_threshold():
    frame = samples({"light": 200, "dark": 200}, share={"dark": 0.2})
    checks = Checks(
        max_background_reliant_rate=0.9,
        min_subject_share=0.45,
        max_group_gap=(GroupGap("skin_tone", "subject_share_mean", 0.05),),
    )
    result = audit_result(frame, checks, AnalysisOptions(bootstrap=200))
    root = assert_junit_shape(render_junit(result.summary()))
    cases = root.findall("testsuite/testcase")
    assert [c.get("name") for c in cases] == [c.name for c in result.checks]
    failures = {c.get("name"): c.find("failure") for c in cases if c.find("failure") is not None}
    assert set(failures) == {"mean_subject_share", "group_gap:skin_tone:subject_share_mean"}
    gap = next(c for c in result.checks if c.name.startswith("group_gap"))
    message = failures[gap.name].get("message")
    assert message == gap.message
    assert f"= {gap.value:.3f} [95% CI {gap.ci[0]:.3f} to {gap.ci[1]:.3f}]" in message and "rule <= 0.05" in message
    assert failures[gap.name].get("type") == "CheckFailed"
    assert root.find("testsuite/properties/property[@name='passed']").get("value") == "false"


def test_insufficient_data_fails_or_is_skipped_as_configured():
    frame = samples({"light": 10, "dark": 10})
    for policy, tag in (("fail", "failure"), ("skip", "skipped")):
        result = audit_result(frame, Checks(insufficient_data=policy), AnalysisOptions(bootstrap=50))
        root = assert_junit_shape(render_junit(result.summary()))
        (case,) = root.findall("testsuite/testcase")
        (child,) = list(case)
        assert child.tag == tag and "insufficient data; n = 20 < min_group_size 30" in child.get("message")
        assert root.get("failures" if policy == "fail" else "skipped") == "1"


def test_a_check_that_is_not_applicable_is_skipped_and_never_blocks():
    frame = samples({"light": 200, "dark": 200})
    summary = audit_result(frame, Checks(), AnalysisOptions(bootstrap=50)).summary()
    (check,) = summary["checks"]
    check.update(outcome=NOT_APPLICABLE, value=None, ci=None, detail="the dataset has no subject masks")
    assert not CheckResult(**{k: v for k, v in check.items() if k != "blocking"}).blocking
    root = assert_junit_shape(render_junit(summary))
    (case,) = root.findall("testsuite/testcase")
    (child,) = list(case)
    assert child.tag == "skipped" and child.get("message").endswith("not applicable; the dataset has no subject masks")
    assert root.get("failures") == "0" and root.get("skipped") == "1"


def test_names_are_escaped_and_control_characters_replaced():
    frame = samples({"light": 40})
    result = audit_result(frame, Checks(), AnalysisOptions(bootstrap=50), name='<model & "x"\x00\x1b>')
    xml = render_junit(result.summary())
    root = assert_junit_shape(xml)
    assert root.find("testsuite").get("name") == 'auditcam audit: <model & "x"\ufffd\ufffd>'
    assert "\x00" not in xml and "<model" not in xml
