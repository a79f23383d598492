"""Render the checks of a summary as JUnit XML, the test-report format CI systems display.

The shape is the one Jenkins, GitLab, GitHub Actions test reporters and Azure read:
``testsuites > testsuite > testcase`` with ``failure`` or ``skipped`` children and the counts
``tests``, ``failures``, ``errors``, ``skipped`` on both levels. One testcase per check; a
failure's message states value, CI and threshold. A check without enough data is a failure
when it blocks the verdict (``insufficient_data = "fail"``), else skipped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from auditcam.stats.checks import FAIL, INSUFFICIENT, NOT_APPLICABLE, check_message

CLASSNAME = "auditcam.stats.checks"
# characters XML 1.0 cannot carry, even escaped
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: Any) -> str:
    return _NOT_XML.sub("\ufffd", str(value))


def _testcase(check: Mapping[str, Any]) -> tuple[ET.Element, str]:
    """One testcase and its kind: passed, failure or skipped."""
    case = ET.Element("testcase", {"classname": CLASSNAME, "name": _text(check["name"]), "time": "0"})
    message = _text(check_message(check))
    body = _text(f"{message}\n{check['description']}")
    if check["outcome"] == FAIL or (check["outcome"] == INSUFFICIENT and check.get("blocking", True)):
        kind = "CheckFailed" if check["outcome"] == FAIL else "InsufficientData"
        ET.SubElement(case, "failure", {"message": message, "type": kind}).text = body
        return case, "failure"
    if check["outcome"] in (INSUFFICIENT, NOT_APPLICABLE):
        ET.SubElement(case, "skipped", {"message": message})
        return case, "skipped"
    ET.SubElement(case, "system-out").text = body
    return case, "passed"


def render_junit(summary: Mapping[str, Any]) -> str:
    """JUnit XML for the checks of ``summary`` (the dict of ``summary.json``)."""
    meta = summary.get("meta", {})
    cases = [_testcase(check) for check in summary["checks"]]
    counts = {
        "tests": str(len(cases)),
        "failures": str(sum(kind == "failure" for _, kind in cases)),
        "errors": "0",
        "skipped": str(sum(kind == "skipped" for _, kind in cases)),
        "time": "0",
    }
    root = ET.Element("testsuites", {"name": "auditcam", **counts})
    suite_attributes = {"name": _text(f"auditcam audit: {meta.get('name', 'model')}"), **counts}
    if meta.get("created"):
        suite_attributes["timestamp"] = _text(meta["created"])[:19]  # ISO 8601 without zone, as the XSD wants
    suite = ET.SubElement(root, "testsuite", suite_attributes)
    properties = ET.SubElement(suite, "properties")
    model = meta.get("model") or {}
    for name, value in (
        ("passed", str(summary["passed"]).lower()),
        ("schema_version", summary.get("schema_version")),
        ("model", model.get("spec")),
        ("weights_sha256", model.get("weights_sha256")),
        ("dataset", (meta.get("dataset") or {}).get("source")),
        ("auditcam", (meta.get("versions") or {}).get("auditcam")),
    ):
        if value is not None:
            ET.SubElement(properties, "property", {"name": name, "value": _text(value)})
    suite.extend(case for case, _ in cases)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
