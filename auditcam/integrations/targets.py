"""``--log`` targets: parse ``mlflow[:URI]`` / ``tensorboard[:DIR]`` before any work, check the
extra is installed, and send a written audit to each; a tracker that fails never loses the
audit (the bundle is on disk first) and costs one warning line naming where it went.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from auditcam.errors import InputError
from auditcam.integrations.scalars import summary_scalars
from auditcam.run.gallery import Exemplar

if TYPE_CHECKING:
    from auditcam.result import AuditResult, Comparison, Trend

MLFLOW, TENSORBOARD = "mlflow", "tensorboard"
KINDS = (MLFLOW, TENSORBOARD)
# the module each target needs, and the extra that installs it
EXTRAS = {MLFLOW: ("mlflow", "mlflow"), TENSORBOARD: ("tensorboard", "tensorboard")}
DEFAULT_MLFLOW_URI = "sqlite:///mlflow.db"  # MLflow 3's own default without MLFLOW_TRACKING_URI
DEFAULT_TENSORBOARD_DIR = "runs"
MISSING_EXTRA = "--log {kind} needs the {module} package: pip install 'auditcam[{extra}]'"
UNKNOWN_TARGET = "--log {text!r}: unknown target; use mlflow[:URI] or tensorboard[:DIR]"
BAD_URI = (
    "--log mlflow:{uri}: not a tracking URI; give one like sqlite:///mlflow.db, file:///path/mlruns, "
    "http://host:5000 or databricks"
)
ARTIFACTS = ("report.html", "summary.json", "junit.xml")
COMPARISON_ARTIFACTS = ("comparison.html", "comparison.json", "junit.xml")
TREND_ARTIFACTS = ("trend.html", "summary.json", "junit.xml")
FAILED = "auditcam: warning: could not log to {kind} at {where} ({reason}); the audit is in {out}"


@dataclass(frozen=True)
class LogTarget:
    """Where to log an audit: ``kind`` (mlflow, tensorboard) and its URI or folder."""

    kind: str
    where: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.where}"


def _check_uri(uri: str) -> str:
    """A tracking URI MLflow can open: ``scheme://...`` (http/https need a host), ``file:``,
    ``databricks`` (optionally ``databricks://profile``) or ``sqlite:///path``."""
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    if uri == "databricks" or (scheme and "://" in uri and scheme.replace("+", "").isalnum()):
        if scheme in ("http", "https") and not parsed.netloc:
            raise InputError(BAD_URI.format(uri=uri))
        if scheme == "sqlite" and not parsed.path.strip("/"):
            raise InputError(BAD_URI.format(uri=uri))
        return uri
    if scheme == "file" and parsed.path:
        return uri
    raise InputError(BAD_URI.format(uri=uri))


def parse_log_target(text: str) -> LogTarget:
    """``mlflow``, ``mlflow:URI``, ``tensorboard`` or ``tensorboard:DIR``; an unknown target, a
    malformed URI or a missing extra is an :class:`InputError` (one line, before any work)."""
    kind, _, where = text.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise InputError(UNKNOWN_TARGET.format(text=text))
    module, extra = EXTRAS[kind]
    if importlib.util.find_spec(module) is None:
        raise InputError(MISSING_EXTRA.format(kind=kind, module=module, extra=extra))
    if kind == MLFLOW:
        where = _check_uri(where) if where else os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_MLFLOW_URI
    else:
        where = where or DEFAULT_TENSORBOARD_DIR
    return LogTarget(kind, where)


def as_targets(targets: str | LogTarget | Sequence[str | LogTarget] | None) -> tuple[LogTarget, ...]:
    """Targets given as text or :class:`LogTarget`, one or several, parsed."""
    if targets is None:
        return ()
    if isinstance(targets, str | LogTarget):
        targets = [targets]
    return tuple(t if isinstance(t, LogTarget) else parse_log_target(t) for t in targets)


@dataclass(frozen=True)
class Logged:
    """What a tracker receives of one audit: its summary dict, the files to attach, the
    gallery exemplars and the per-class mean heatmaps to show (TensorBoard), and the step.
    Of a trend, ``summary`` is the trend's (name, verdict, settings) and ``series`` each
    checkpoint's step and audit summary, whose metrics are logged at that step."""

    summary: dict[str, Any]
    artifacts: tuple[Path, ...] = ()
    exemplars: dict[str, tuple[Exemplar, ...]] = field(default_factory=dict)
    class_heatmaps: dict[str, np.ndarray] = field(default_factory=dict)
    step: int | None = None
    series: tuple[tuple[int, dict[str, Any]], ...] = ()

    def scalars(self) -> list[tuple[int, dict[str, float]]]:
        """The metrics to log, by step: each checkpoint's of a trend, else the audit's at its
        step (0 when it has none)."""
        if self.series:
            return [(step, summary_scalars(summary)) for step, summary in self.series]
        return [(self.step or 0, summary_scalars(self.summary))]


def _sender(kind: str) -> Callable[[Logged, str], None]:
    if kind == MLFLOW:
        from auditcam.integrations.mlflow import log_audit

        return log_audit
    from auditcam.integrations.tensorboard import log_audit

    return log_audit


def send(
    logged: Logged,
    targets: str | LogTarget | Sequence[str | LogTarget] | None,
    *,
    where: str | Path = "",
    warn: Callable[[str], Any] | None = None,
) -> list[str]:
    """Send one audit to every target; return the warning lines of the targets that failed
    (also passed to ``warn``, default: printed to stderr). ``where`` names the kept bundle."""
    warn = warn or (lambda line: print(line, file=sys.stderr))
    failures = []
    for target in as_targets(targets):
        try:
            _sender(target.kind)(logged, target.where)
        except Exception as exc:  # a tracker's fault never costs the audit
            text = str(exc).strip()
            reason = text.splitlines()[0][:300] if text else type(exc).__name__
            line = FAILED.format(kind=target.kind, where=target.where, reason=reason, out=where or "memory")
            failures.append(line)
            warn(line)
    return failures


def gallery_exemplars(result: AuditResult) -> dict[str, tuple[Exemplar, ...]]:
    """The gallery's two ends, as TensorBoard shows them."""
    return {
        "background_reliant": tuple(result.gallery.background_reliant),
        "subject_focused": tuple(result.gallery.subject_focused),
    }


def log_result(
    result: AuditResult,
    out: str | Path,
    targets: str | LogTarget | Sequence[str | LogTarget] | None,
    *,
    step: int | None = None,
    warn: Callable[[str], Any] | None = None,
) -> list[str]:
    """Log an audit whose bundle was written to ``out`` (report.html, summary.json, junit.xml
    attached) to every target; return the warning lines of the targets that failed."""
    out = Path(out)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    logged = Logged(
        summary=summary,
        artifacts=tuple(out / name for name in ARTIFACTS if (out / name).is_file()),
        exemplars=gallery_exemplars(result),
        step=step,
    )
    return send(logged, targets, where=out, warn=warn)


def log_comparison(
    comparison: Comparison,
    out: str | Path,
    targets: str | LogTarget | Sequence[str | LogTarget] | None,
    *,
    warn: Callable[[str], Any] | None = None,
) -> list[str]:
    """Log both audits of a comparison written to ``out``, one run each (A, then B); B's run
    carries comparison.html, comparison.json and junit.xml. Return the failures' warning lines."""
    out = Path(out)
    files = tuple(out / name for name in COMPARISON_ARTIFACTS if (out / name).is_file())
    failures = []
    for result, artifacts in ((comparison.a, ()), (comparison.b, files)):
        logged = Logged(summary=result.summary(), artifacts=artifacts, exemplars=gallery_exemplars(result))
        failures += send(logged, targets, where=out, warn=warn)
    return failures


def log_trend(
    trend: Trend,
    out: str | Path,
    targets: str | LogTarget | Sequence[str | LogTarget] | None,
    *,
    warn: Callable[[str], Any] | None = None,
) -> list[str]:
    """Log a trend written to ``out`` as one run per target: every checkpoint's metrics at its
    step (so the tracker draws each statistic's curve), the settings and the verdict (the last
    checkpoint's), with trend.html, summary.json and junit.xml attached. Return the failures'
    warning lines."""
    out = Path(out)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    logged = Logged(
        summary=summary,
        artifacts=tuple(out / name for name in TREND_ARTIFACTS if (out / name).is_file()),
        series=tuple((c.step, r.summary()) for c, r in zip(trend.checkpoints, trend.results, strict=True)),
    )
    return send(logged, targets, where=out, warn=warn)
