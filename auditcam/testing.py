"""Assertions for your own test suite: gate a model on its audit inside pytest (or unittest).

    from auditcam.testing import assert_audit_passes

    def test_model_does_not_rely_on_background(audit_result):
        assert_audit_passes(audit_result)        # or a path to summary.json

A failure lists each blocking check with its value, confidence interval and threshold.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from auditcam.result import AuditResult
from auditcam.stats.checks import check_message

FAILED_CHECKS = "auditcam: {n} of {total} check(s) did not pass for {name}:"


def _summary(result: AuditResult | Mapping[str, Any] | str | os.PathLike) -> Mapping[str, Any]:
    if isinstance(result, AuditResult):
        return result.summary()
    if isinstance(result, Mapping):
        return result
    path = Path(result)
    if path.is_dir():
        path = path / "summary.json"
    return json.loads(path.read_text(encoding="utf-8"))


def failing_checks(result: AuditResult | Mapping[str, Any] | str | os.PathLike) -> list[str]:
    """One line per check that stops the audit from passing (value, CI, threshold, outcome)."""
    return [check_message(check) for check in _summary(result)["checks"] if check["blocking"]]


def assert_audit_passes(result: AuditResult | Mapping[str, Any] | str | os.PathLike) -> None:
    """Raise ``AssertionError`` unless the audit passed. ``result``: an :class:`AuditResult`,
    a summary dict, or the path of a ``summary.json`` (or of the folder holding it)."""
    summary = _summary(result)
    lines = failing_checks(summary)
    if summary["passed"] and not lines:
        return
    name = summary.get("meta", {}).get("name", "the model")
    header = FAILED_CHECKS.format(n=len(lines), total=len(summary["checks"]), name=name)
    raise AssertionError("\n  ".join([header, *lines]))
