"""What a reader needs to rerun an audit: the effective configuration as a TOML file that
``auditcam audit --config FILE --isolated`` reads back to the same checks and options."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

THRESHOLD_KEYS = ("max_background_reliant_rate", "min_subject_share", "min_accuracy", "max_error_rate")
ANALYSIS_KEYS = ("min_group_size", "bootstrap", "confidence", "seed", "intersections")


def toml_value(value: Any) -> str:
    """One TOML value: strings through JSON's escaping (a subset of TOML's basic strings),
    numbers as written, lists inline, tables as inline tables; ``None`` keys are dropped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML cannot hold {value!r}")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = [f"{_key(k)} = {toml_value(v)}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _key(name: str) -> str:
    bare = name.replace("_", "").replace("-", "").isalnum() and name.isascii()
    return name if bare else json.dumps(name)


def _threshold(entry: Mapping[str, Any] | None) -> Any:
    """A threshold table as the config reads it: ``false`` when off, a number when only a value."""
    if entry is None:
        return False
    compact = {k: v for k, v in entry.items() if v is not None}
    return compact["value"] if set(compact) == {"value"} else compact


def config_toml(checks: Mapping[str, Any], analysis: Mapping[str, Any]) -> str:
    """The effective configuration (``Checks.to_dict()`` and ``AnalysisOptions.to_dict()``, as
    kept in an audit's ``meta``) as a complete TOML file: every key spelt out, none left to defaults."""
    lines = ["# checks"]
    for key in THRESHOLD_KEYS:
        lines.append(f"{key} = {toml_value(_threshold(checks.get(key)))}")
    lines.append(f"min_worst_group_accuracy = {toml_value(_threshold(checks.get('min_worst_group_accuracy')))}")
    gaps = [{k: v for k, v in gap.items() if v is not None} for gap in checks.get("max_group_gap") or ()]
    lines.append(f"max_group_gap = {toml_value(gaps) if gaps else 'false'}")
    lines.append(f"decide_on = {toml_value(checks.get('decide_on', 'point'))}")
    lines.append(f"insufficient_data = {toml_value(checks.get('insufficient_data', 'fail'))}")
    lines.append("# analysis")
    for key in ANALYSIS_KEYS:
        value = analysis.get(key)
        if key == "intersections":
            value = [",".join(names) for names in value or ()]
        lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"
