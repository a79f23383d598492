"""The result of an audit: the per-sample table, the analysis per method, the checks, the
gallery and the run's description, with the probes' results when they ran.

``samples`` stays on disk (``samples.parquet``) until it is used; :meth:`AuditResult.read_samples`
reads a filtered part without loading the whole table.
"""

from __future__ import annotations

import math
import os
import shutil
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from auditcam.run.gallery import Gallery
from auditcam.stats.analysis import Analysis, json_number
from auditcam.stats.checks import (
    OUTCOMES,
    CheckResult,
    passed,
)
from auditcam.stats.comparison import (
    OTHER_METHOD,
    TRANSITIONS,
    focus_transitions,
    paired_deltas,
)
from auditcam.stats.comparison import (
    SCHEMA_VERSION as COMPARISON_SCHEMA_VERSION,
)

if TYPE_CHECKING:
    from auditcam.probes.counterfactual import CounterfactualResult
    from auditcam.probes.featuremaps import ExemplarGrid
    from auditcam.probes.occlusion import StrategiesResult
    from auditcam.probes.sanity import SanityResult


SCHEMA_VERSION = 1  # of summary.json; see auditcam/schemas/summary.schema.json


class AuditResult:
    """Everything an audit found: the tidy per-sample table, the analysis per method, check
    outcomes (decided on the first method), the gallery exemplars and the run's metadata; the
    counterfactual background test and the sanity check when they ran, and the feature-map
    grids of the exemplars.

    ``samples`` may live on disk (a ``samples.parquet``; read into memory only when
    :attr:`samples` is used) or be a DataFrame. :meth:`read_samples` reads a filtered part.
    """

    def __init__(
        self,
        samples: pd.DataFrame | str | Path,
        checks: Sequence[CheckResult],
        analyses: dict[str, Analysis],
        gallery: Gallery,
        meta: dict[str, Any] | None = None,
        *,
        counterfactual: CounterfactualResult | None = None,
        sanity: SanityResult | None = None,
        featuremaps: Sequence[ExemplarGrid] = (),
        strategies: StrategiesResult | None = None,
        temporary: Path | None = None,
    ) -> None:
        in_memory = isinstance(samples, pd.DataFrame)
        self._frame: pd.DataFrame | None = samples if in_memory else None
        self.samples_path: Path | None = None if in_memory else Path(samples)
        self.checks = tuple(checks)
        self.analyses = analyses
        self.gallery = gallery
        self.meta = {} if meta is None else meta
        self.counterfactual = counterfactual
        self.sanity = sanity
        self.featuremaps = tuple(featuremaps)
        self.strategies = strategies
        if temporary is not None:  # the folder that holds samples_path goes with the result
            weakref.finalize(self, shutil.rmtree, str(temporary), True)

    @property
    def samples(self) -> pd.DataFrame:
        """One row per (sample, method), in dataset order (read from disk on first use)."""
        if self._frame is None:
            self._frame = pd.read_parquet(self.samples_path)
        return self._frame

    def _dataset(self) -> ds.Dataset:
        if self.samples_path is not None:
            return ds.dataset(self.samples_path, format="parquet")
        return ds.dataset(pa.Table.from_pandas(self._frame, preserve_index=False))

    def read_samples(
        self,
        method: str | None = None,
        *,
        columns: Sequence[str] | None = None,
        where: pc.Expression | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Rows of ``method`` (all methods: None) matching the pyarrow expression ``where``, at
        most ``limit`` of them, only ``columns``: read without loading the whole table."""
        scanner = self._dataset().scanner(
            columns=None if columns is None else list(columns), filter=_where(method, where)
        )
        table = scanner.head(limit) if limit is not None else scanner.to_table()
        return table.to_pandas()

    def count_samples(self, method: str | None = None, *, where: pc.Expression | None = None) -> int:
        """How many rows of ``method`` match ``where``."""
        return self._dataset().count_rows(filter=_where(method, where))

    def write_samples(self, path: str | Path) -> None:
        """Write ``samples.parquet`` to ``path`` (temporary name, then rename); a table already
        on disk is copied as a file, never loaded."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        if self.samples_path is None:
            self._frame.to_parquet(tmp, index=False)
        elif path.resolve() == self.samples_path.resolve():
            return
        else:
            shutil.copyfile(self.samples_path, tmp)
        os.replace(tmp, path)

    @property
    def passed(self) -> bool:
        """True when no check blocks: none failed, and none lacks data unless the checks say
        ``insufficient_data = "skip"``."""
        return passed(self.checks)

    @property
    def failed_checks(self) -> list[CheckResult]:
        """The checks that stop the audit from passing."""
        return [check for check in self.checks if check.blocking]

    @cached_property
    def aggregates(self) -> dict[str, Any]:
        """JSON-ready aggregates with CIs and disparities, per method."""
        return {method: analysis.to_dict() for method, analysis in self.analyses.items()}

    def summary(self) -> dict[str, Any]:
        """The JSON-ready summary written to ``summary.json`` (schema: ``auditcam/schemas``)."""
        n_samples = self.meta.get("dataset", {}).get("n_samples")
        return {
            "schema_version": SCHEMA_VERSION,
            "passed": self.passed,
            "n_samples": int(self.samples["id"].nunique() if n_samples is None else n_samples),
            "outcomes": {o: sum(c.outcome == o for c in self.checks) for o in OUTCOMES},
            "checks": [check.to_dict() for check in self.checks],
            "aggregates": self.aggregates,
            "meta": self.meta,
            **self._beyond_summary(),
        }

    def _beyond_summary(self) -> dict[str, Any]:
        """``bg_gap`` (headline) and ``counterfactual`` (detail), ``sanity``, ``strategies``: present when run."""
        out: dict[str, Any] = {}
        if self.counterfactual is not None:
            out["bg_gap"] = self.counterfactual.bg_gap
            out["counterfactual"] = self.counterfactual.to_dict()
        if self.strategies is not None:
            out["strategies"] = self.strategies.to_dict()
        if self.sanity is not None:
            out["sanity"] = {**self.sanity.to_dict(), "check": _check_named(self.checks, "sanity:")}
        return out

    def write(self, out: str | Path) -> dict[str, Path]:
        """Write report.html, summary.json, junit.xml and samples.parquet into ``out``; return their paths."""
        from auditcam.report import write_bundle  # the report is a view over this result

        return write_bundle(self, out)


def _where(method: str | None, where: pc.Expression | None) -> pc.Expression | None:
    if method is None:
        return where
    chosen = pc.field("method") == method
    return chosen if where is None else chosen & where


def _check_named(checks: Sequence[CheckResult], prefix: str) -> dict[str, Any] | None:
    return next((c.to_dict() for c in checks if c.name.startswith(prefix)), None)


@dataclass(frozen=True)
class Comparison:
    """Model A (before) against model B (after) on the same samples."""

    a: AuditResult
    b: AuditResult
    deltas: pd.DataFrame
    transitions: pd.DataFrame

    @property
    def names(self) -> tuple[str, str]:
        """The two models' display names, A's first."""
        return self.a.meta.get("name", "A"), self.b.meta.get("name", "B")

    @property
    def passed(self) -> bool:
        """The verdict of a comparison is B's: does the new model pass its checks?"""
        return self.b.passed

    @property
    def focus_counts(self) -> dict[str, int]:
        """How many samples kept or changed their focus (subject/background), and how many could not be compared."""
        counts = self.transitions["transition"].value_counts()
        out = {t: int(counts.get(t, 0)) for t in TRANSITIONS}
        out["not_comparable"] = int(self.transitions["transition"].isna().sum())
        return out

    @property
    def changed(self) -> pd.DataFrame:
        """Samples whose focus moved between subject and background, largest subject_share change first."""
        moved = self.transitions[
            self.transitions["transition"].isin(["subject_to_background", "background_to_subject"])
        ]
        order = (moved["b_subject_share"] - moved["a_subject_share"]).abs().sort_values(ascending=False).index
        return moved.loc[order]

    @property
    def correctness_counts(self) -> dict[str, int]:
        """How many samples both models got right, B fixed, B broke, or both got wrong."""
        a = self.transitions["a_correct"].astype("boolean")
        b = self.transitions["b_correct"].astype("boolean")
        return {
            "both_correct": int((a & b).sum()),
            "fixed": int((~a & b).sum()),
            "broken": int((a & ~b).sum()),
            "both_wrong": int((~a & ~b).sum()),
        }

    def to_dict(self, max_changed: int | None = None) -> dict[str, Any]:
        """JSON-ready comparison (``comparison.json``); ``max_changed`` caps the listed samples."""

        def side(result: AuditResult) -> dict[str, Any]:
            return {
                "name": result.meta.get("name"),
                "passed": result.passed,
                "model": result.meta.get("model"),
                "checks": [check.to_dict() for check in result.checks],
            }

        def ci(row: Any, prefix: str) -> list[float] | None:
            low, high = getattr(row, f"{prefix}_ci_low"), getattr(row, f"{prefix}_ci_high")
            return None if math.isnan(low) else [float(low), float(high)]

        changed = self.changed if max_changed is None else self.changed.head(max_changed)
        return {
            "schema_version": COMPARISON_SCHEMA_VERSION,
            "passed": self.passed,
            "a": side(self.a),
            "b": side(self.b),
            "method": self.a.meta["methods"][0],
            "n_samples": len(self.transitions),
            "deltas": [
                {
                    "dimension": r.dimension,
                    "group": r.group,
                    "statistic": r.statistic,
                    "a": json_number(r.a),
                    "a_ci": ci(r, "a"),
                    "b": json_number(r.b),
                    "b_ci": ci(r, "b"),
                    "delta": json_number(r.delta),
                    "delta_ci": ci(r, "delta"),
                    "n_a": r.n_a,
                    "n_b": r.n_b,
                    "change": r.change,
                }
                for r in self.deltas.itertuples()
            ],
            "focus": {
                "counts": self.focus_counts,
                "changed": [
                    {
                        "id": r.id,
                        "image": r.image,
                        "label_name": r.label_name,
                        "transition": r.transition,
                        "a_pred_name": r.a_pred_name,
                        "b_pred_name": r.b_pred_name,
                        "a_subject_share": json_number(r.a_subject_share),
                        "b_subject_share": json_number(r.b_subject_share),
                        "a_focus_lift": json_number(r.a_focus_lift),
                        "b_focus_lift": json_number(r.b_focus_lift),
                    }
                    for r in changed.itertuples()
                ],
            },
            "correctness": self.correctness_counts,
        }


def compare(a: AuditResult, b: AuditResult) -> Comparison:
    """Paired comparison of two audits of the same samples, on each audit's primary method."""
    method_a, method_b = a.meta["methods"][0], b.meta["methods"][0]
    if method_a != method_b:
        raise ValueError(OTHER_METHOD.format(a=method_a, b=method_b))
    frame_a = a.samples[a.samples["method"] == method_a].reset_index(drop=True)
    frame_b = b.samples[b.samples["method"] == method_b].reset_index(drop=True)
    return Comparison(
        a=a,
        b=b,
        deltas=paired_deltas(a.analyses[method_a], b.analyses[method_b]),
        transitions=focus_transitions(frame_a, frame_b),
    )
