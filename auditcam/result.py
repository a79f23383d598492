"""The result of an audit: the per-sample table, the analysis per method, the checks, the
gallery and the run's description, with the probes' results when they ran.

``samples`` stays on disk (``samples.parquet``) until it is used; :meth:`AuditResult.read_samples`
reads a filtered part without loading the whole table.

The bundle is the result: :meth:`AuditResult.write` writes ``summary.json``, ``samples.parquet``,
the gallery's and each probe's files, reads them back with :meth:`AuditResult.read` and renders
the views (``report.html``, ``junit.xml``: :data:`VIEWS`, registered by :mod:`auditcam.report`)
from what is on disk, so a written audit renders again, the same, after an upgrade.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from auditcam.config import AnalysisOptions
from auditcam.errors import InputError
from auditcam.files import Parts, atomic_write, json_text, read_json, read_parts, replacing, write_parquet, write_parts
from auditcam.run.gallery import Gallery
from auditcam.run.loop import analysis_frame
from auditcam.run.runfolder import COUNTERFACTUAL, FEATUREMAPS, GALLERY, SAMPLES, SANITY, STRATEGIES
from auditcam.stats.analysis import Analysis, analyse, json_number
from auditcam.stats.checks import (
    OUTCOMES,
    CheckResult,
    passed,
)
from auditcam.stats.comparison import (
    OTHER_METHOD,
    TRANSITIONS,
    check_pairable,
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
SUMMARY = "summary.json"
AUDIT, COMPARISON, TREND = "audit", "comparison", "trend"
# the comparison bundle: comparison.json, each side's summary and samples, the paired tables
COMPARISON_JSON, DELTAS, FOCUS = "comparison.json", "deltas.parquet", "transitions.parquet"
SIDES = ("a", "b")
# the trend bundle: summary.json (kind "trend"), the estimates per checkpoint, the changes, and
# each checkpoint's audit bundle (also its run folder) in checkpoints/<name>/
TREND_SCHEMA_VERSION = 1
ESTIMATES, CHANGES, CHECKPOINTS = "estimates.parquet", "changes.parquet", "checkpoints"
NOT_A_TREND = "{path}: not a trend's summary.json; give the --out folder of auditcam trend"
NOT_A_BUNDLE = "{folder}: not {a} {kind} bundle, {name} is missing; give the --out folder of auditcam {kind}"
OTHER_SCHEMA = "{path}: schema_version {found!r}, but this auditcam reads {known}; {hint}"
UNKNOWN_FORMAT = "--format {name!r}: choose from {names}"
NOT_WRITABLE = "--out {out}: cannot write there ({reason}); choose a writable folder"


@dataclass(frozen=True)
class View:
    """A file rendered from a bundle read from disk: its ``--format`` ``name``, the ``filename``
    it is written to, and ``render`` (the result, comparison or trend -> the file's text)."""

    name: str
    filename: str
    render: Callable[[Any], str]


# views by kind (audit, comparison, trend) and name; auditcam.report registers html and junit
VIEWS: dict[str, dict[str, View]] = {AUDIT: {}, COMPARISON: {}, TREND: {}}


def register_view(kind: str, view: View) -> None:
    """Render ``view`` whenever a bundle of ``kind`` (``"audit"``, ``"comparison"`` or
    ``"trend"``) is written or rendered again; a view of the same name is replaced."""
    VIEWS[kind][view.name] = view


def _views(kind: str, formats: Sequence[str] | None) -> list[View]:
    known = VIEWS[kind]
    for name in formats or ():
        if name not in known:
            raise InputError(UNKNOWN_FORMAT.format(name=name, names=", ".join(known) or "(none registered)"))
    return list(known.values()) if formats is None else [known[name] for name in formats]


def render_views(
    subject: AuditResult | Comparison | Trend, out: str | Path, formats: Sequence[str] | None = None
) -> dict[str, Path]:
    """Render the views ``formats`` (default: every registered one) of a result, comparison or
    trend read from a bundle into ``out``; return their paths by file name."""
    kind = COMPARISON if isinstance(subject, Comparison) else TREND if isinstance(subject, Trend) else AUDIT
    out = Path(out)
    paths = {}
    for view in _views(kind, formats):
        paths[view.filename] = out / view.filename
        try:
            atomic_write(paths[view.filename], view.render(subject))
        except OSError as exc:
            raise InputError(NOT_WRITABLE.format(out=out, reason=exc.strerror or exc)) from None
    return paths


def _json_ready(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` as it reads back from its JSON file (tuples as lists, paths as text)."""
    return json.loads(json_text(data))


def _require(folder: Path, names: Sequence[str], kind: str) -> None:
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; give the --out folder of auditcam {kind}")
    for name in names:
        if not (folder / name).is_file():
            article = "an" if kind[0] in "aeiou" else "a"
            raise InputError(NOT_A_BUNDLE.format(folder=folder, a=article, kind=kind, name=name))


def _read_summary(path: Path, known: int = SCHEMA_VERSION) -> dict[str, Any]:
    """A summary.json (or comparison.json) of a schema version this auditcam reads."""
    data = read_json(path)
    found = data.get("schema_version") if isinstance(data, dict) else None
    if found != known:
        newer = isinstance(found, int) and not isinstance(found, bool) and found > known
        hint = "upgrade auditcam to read it" if newer else "it was not written by auditcam"
        raise InputError(OTHER_SCHEMA.format(path=path, found=found, known=known, hint=hint))
    return data


def _check_from_dict(data: dict[str, Any]) -> CheckResult:
    names = {f.name for f in dataclasses.fields(CheckResult)}
    fields = {k: v for k, v in data.items() if k in names}
    return CheckResult(**{**fields, "ci": None if data["ci"] is None else tuple(data["ci"])})


class AuditResult:
    """Everything an audit found: the tidy per-sample table, the analysis per method, check
    outcomes (decided on the first method), the gallery exemplars and the run's metadata; the
    counterfactual background test and the sanity check when they ran, and the feature-map
    grids of the exemplars.

    ``samples`` may live on disk (a ``samples.parquet``; read into memory only when
    :attr:`samples` is used) or be a DataFrame. :meth:`read_samples` reads a filtered part.
    ``analyses`` None: estimated again from the samples when used (see :attr:`analyses`).
    :meth:`write` writes the bundle and its views, :meth:`read` reads a bundle back.
    """

    def __init__(
        self,
        samples: pd.DataFrame | str | Path,
        checks: Sequence[CheckResult],
        analyses: dict[str, Analysis] | None,
        gallery: Gallery,
        meta: dict[str, Any] | None = None,
        *,
        counterfactual: CounterfactualResult | None = None,
        sanity: SanityResult | None = None,
        featuremaps: Sequence[ExemplarGrid] = (),
        strategies: StrategiesResult | None = None,
        temporary: Path | None = None,
        summary: dict[str, Any] | None = None,
    ) -> None:
        in_memory = isinstance(samples, pd.DataFrame)
        self._frame: pd.DataFrame | None = samples if in_memory else None
        self.samples_path: Path | None = None if in_memory else Path(samples)
        self.checks = tuple(checks)
        self._analyses = analyses
        self._written = summary  # read from a bundle: its summary.json, as written
        self.gallery = gallery
        self.meta = {} if meta is None else meta
        self.counterfactual = counterfactual
        self.sanity = sanity
        self.featuremaps = tuple(featuremaps)
        self.strategies = strategies
        if temporary is not None:  # the folder that holds samples_path goes with the result
            weakref.finalize(self, shutil.rmtree, str(temporary), True)

    @property
    def analyses(self) -> dict[str, Analysis]:
        """The analysis per method. Of a result read from a bundle: estimated again from
        samples.parquet with the audit's (seeded) options on first use: the audit's numbers
        with the auditcam version that wrote it."""
        if self._analyses is None:
            attributes = self.meta["dataset"]["attributes"]
            options = AnalysisOptions(**self.meta["analysis"])
            task = self.meta.get("task", "single")
            self._analyses = {
                m: analyse(
                    analysis_frame(self.samples_path, m, attributes, multilabel=task == "multilabel"),
                    attributes,
                    options,
                    task=task,
                    classes=self.meta.get("classes"),
                )
                for m in self.meta["methods"]
            }
        return self._analyses

    @property
    def samples(self) -> pd.DataFrame:
        """One row per (sample, method), in dataset order (read from disk on first use); of a
        multi-label audit, one per (sample, explained label, method)."""
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
        """Write ``samples.parquet`` to ``path`` atomically; a table already on disk is copied
        as a file, never loaded."""
        path = Path(path)
        if self.samples_path is None:
            write_parquet(path, self._frame)
        elif path.resolve() != self.samples_path.resolve():
            with replacing(path) as tmp:
                shutil.copyfile(self.samples_path, tmp)

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
        if self._written is not None:
            return self._written["aggregates"]
        return {method: analysis.to_dict() for method, analysis in self.analyses.items()}

    def summary(self) -> dict[str, Any]:
        """The summary written to ``summary.json`` (schema: ``auditcam/schemas``), as it reads
        back from that file; of a result read from a bundle, the file's."""
        if self._written is not None:
            return copy.deepcopy(self._written)
        return _json_ready(self._summary())

    def _summary(self) -> dict[str, Any]:
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

    def _parts(self) -> dict[str, Parts]:
        """The bundle's parts beside summary.json and samples.parquet, by file stem."""
        from auditcam.probes.featuremaps import grids_to_parts

        parts = {GALLERY: self.gallery.to_parts(), FEATUREMAPS: grids_to_parts(self.featuremaps)}
        if self.counterfactual is not None:
            parts[COUNTERFACTUAL] = self.counterfactual.to_parts()
        if self.sanity is not None:
            parts[SANITY] = self.sanity.to_parts()
        if self.strategies is not None:
            parts[STRATEGIES] = self.strategies.to_parts()
        return parts

    def write(self, out: str | Path, formats: Sequence[str] | None = None) -> dict[str, Path]:
        """Write the bundle into ``out`` (created if needed): samples.parquet, the gallery's and
        each probe's files, then summary.json; read it back and render the views ``formats``
        (default: all, i.e. report.html and junit.xml) from it. Return every path by file name."""
        out = Path(out)
        _views(AUDIT, formats)  # an unknown format fails before anything is written
        try:
            out.mkdir(parents=True, exist_ok=True)
            paths = {SAMPLES: out / SAMPLES}
            self.write_samples(paths[SAMPLES])
            for stem, parts in self._parts().items():
                paths.update({path.name: path for path in write_parts(out, stem, parts)})
            paths[SUMMARY] = out / SUMMARY
            atomic_write(paths[SUMMARY], json_text(self._summary()))
        except OSError as exc:
            raise InputError(NOT_WRITABLE.format(out=out, reason=exc.strerror or exc)) from None
        return {**paths, **render_views(AuditResult.read(out), out, formats)}

    @classmethod
    def read(cls, folder: str | Path) -> AuditResult:
        """The result written into ``folder`` by :meth:`write`: the same summary, samples table,
        gallery and probe results. Not a bundle of this schema: an InputError naming the file."""
        from auditcam.probes.counterfactual import CounterfactualResult
        from auditcam.probes.featuremaps import grids_from_parts
        from auditcam.probes.occlusion import StrategiesResult
        from auditcam.probes.sanity import SanityResult

        folder = Path(folder)
        _require(folder, (SUMMARY, SAMPLES, f"{GALLERY}.json", f"{FEATUREMAPS}.json"), AUDIT)
        summary = _read_summary(folder / SUMMARY)
        probes: dict[str, Any] = {"featuremaps": grids_from_parts(read_parts(folder, FEATUREMAPS))}
        kinds = ((COUNTERFACTUAL, CounterfactualResult), (SANITY, SanityResult), (STRATEGIES, StrategiesResult))
        for stem, kind in kinds:
            if stem in summary:
                _require(folder, (f"{stem}.json",), AUDIT)
                probes[stem] = kind.from_parts(read_parts(folder, stem))
        return cls._of_summary(folder / SAMPLES, summary, Gallery.from_parts(read_parts(folder, GALLERY)), **probes)

    @classmethod
    def _of_summary(cls, samples: Path, summary: dict[str, Any], gallery: Gallery, **probes: Any) -> AuditResult:
        checks = [_check_from_dict(check) for check in summary["checks"]]
        return cls(samples, checks, None, gallery, summary["meta"], summary=summary, **probes)


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

    def write(self, out: str | Path, formats: Sequence[str] | None = None) -> dict[str, Path]:
        """Write the comparison's bundle into ``out``: comparison.json, each side's summary and
        samples (``summary_a.json``, ``samples_a.parquet``, ...), the paired deltas and focus
        transitions; read it back and render the views ``formats`` (default: comparison.html and
        junit.xml, B's checks) from it. Return every path by file name."""
        out = Path(out)
        _views(COMPARISON, formats)
        tables = {DELTAS: self.deltas, FOCUS: self.transitions}
        try:
            out.mkdir(parents=True, exist_ok=True)
            paths = {}
            for side, result in zip(SIDES, (self.a, self.b), strict=True):
                paths[f"samples_{side}.parquet"] = out / f"samples_{side}.parquet"
                result.write_samples(paths[f"samples_{side}.parquet"])
                paths[f"summary_{side}.json"] = out / f"summary_{side}.json"
                atomic_write(paths[f"summary_{side}.json"], json_text(result.summary()))
            for name, frame in tables.items():
                paths[name] = out / name
                write_parquet(paths[name], frame)
            paths[COMPARISON_JSON] = out / COMPARISON_JSON
            atomic_write(paths[COMPARISON_JSON], json_text(self.to_dict()))
        except OSError as exc:
            raise InputError(NOT_WRITABLE.format(out=out, reason=exc.strerror or exc)) from None
        return {**paths, **render_views(Comparison.read(out), out, formats)}

    @classmethod
    def read(cls, folder: str | Path) -> Comparison:
        """The comparison written into ``folder`` by :meth:`write` (its sides without gallery)."""
        folder = Path(folder)
        sides = [name for side in SIDES for name in (f"summary_{side}.json", f"samples_{side}.parquet")]
        _require(folder, (COMPARISON_JSON, *sides, DELTAS, FOCUS), COMPARISON)
        _read_summary(folder / COMPARISON_JSON, COMPARISON_SCHEMA_VERSION)
        a, b = (
            AuditResult._of_summary(
                folder / f"samples_{side}.parquet", _read_summary(folder / f"summary_{side}.json"), Gallery(size=0)
            )
            for side in SIDES
        )
        return cls(a, b, pd.read_parquet(folder / DELTAS), pd.read_parquet(folder / FOCUS))

    def to_dict(self, max_changed: int | None = None) -> dict[str, Any]:
        """JSON-ready comparison (``comparison.json``); ``max_changed`` caps the listed samples."""

        def side(result: AuditResult) -> dict[str, Any]:
            summary = result.summary()
            return {
                "name": summary["meta"].get("name"),
                "passed": summary["passed"],
                "model": summary["meta"].get("model"),
                "checks": summary["checks"],
            }

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
                    "a_ci": _interval(r, "a"),
                    "b": json_number(r.b),
                    "b_ci": _interval(r, "b"),
                    "delta": json_number(r.delta),
                    "delta_ci": _interval(r, "delta"),
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
    for result in (a, b):
        check_pairable(result.meta.get("task", "single"), result.meta.get("target", "pred"))
    frame_a = a.samples[a.samples["method"] == method_a].reset_index(drop=True)
    frame_b = b.samples[b.samples["method"] == method_b].reset_index(drop=True)
    return Comparison(
        a=a,
        b=b,
        deltas=paired_deltas(a.analyses[method_a], b.analyses[method_b]),
        transitions=focus_transitions(frame_a, frame_b),
    )


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of a trend: its ``name`` (the weights file's stem), its ``step``, the
    ``weights`` file and its ``weights_sha256``, and the ``folder`` (relative to the trend's)
    that holds its run and audit bundle."""

    name: str
    step: int
    weights: str
    weights_sha256: str
    folder: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (an entry of the trend summary's ``checkpoints``, with its results beside)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        """The inverse of :meth:`to_dict` (other keys are ignored)."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


# the trend summary's meta: what every checkpoint's audit shares, from the last one's
TREND_META = (
    "created",
    "command",
    "config_sources",
    "versions",
    "dataset",
    "classes",
    "methods",
    "layer",
    "target",
    "reliance_threshold",
    "preprocessing",
    "checks",
    "analysis",
)


@dataclass(frozen=True)
class Trend:
    """One model's checkpoints audited on the same samples, in order: each checkpoint's audit
    (``results``), every estimate of every checkpoint (``estimates``, see
    :func:`~auditcam.stats.trend.checkpoint_estimates`) and the paired changes between them
    (``changes``, see :func:`~auditcam.stats.trend.trend_changes`). The checks are decided on
    the last checkpoint. Build it with :meth:`of`."""

    checkpoints: tuple[Checkpoint, ...]
    results: tuple[AuditResult, ...]
    estimates: pd.DataFrame
    changes: pd.DataFrame
    name: str

    @classmethod
    def of(cls, checkpoints: Sequence[Checkpoint], results: Sequence[AuditResult], name: str) -> Trend:
        """The trend of audits of the same samples, one per checkpoint, on each one's primary method."""
        from auditcam.stats.trend import checkpoint_estimates, trend_changes

        methods = [result.meta["methods"][0] for result in results]
        if len(set(methods)) > 1:
            raise ValueError(OTHER_METHOD.format(a=methods[0], b=next(m for m in methods if m != methods[0])))
        analyses = [result.analyses[method] for result, method in zip(results, methods, strict=True)]
        return cls(tuple(checkpoints), tuple(results), checkpoint_estimates(analyses), trend_changes(analyses), name)

    @property
    def passed(self) -> bool:
        """The verdict of a trend is its last checkpoint's: does the model as trained pass its checks?"""
        return self.results[-1].passed

    @property
    def method(self) -> str:
        """The method every checkpoint's checks and statistics were decided on."""
        return self.results[-1].meta["methods"][0]

    @property
    def steps(self) -> tuple[int, ...]:
        """Each checkpoint's step, in order."""
        return tuple(checkpoint.step for checkpoint in self.checkpoints)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready trend (its ``summary.json``): per checkpoint its weights, sha256, step,
        verdict, checks and every statistic with its CI; the changes between checkpoints."""
        from auditcam.stats.estimates import Estimates

        summaries = [result.summary() for result in self.results]
        meta = summaries[-1]["meta"]
        confidence = meta["analysis"]["confidence"]
        checkpoints = []
        for i, (checkpoint, summary) in enumerate(zip(self.checkpoints, summaries, strict=True)):
            rows = self.estimates[self.estimates["checkpoint"] == i]
            checkpoints.append(
                {
                    **checkpoint.to_dict(),
                    "passed": summary["passed"],
                    "outcomes": summary["outcomes"],
                    "checks": summary["checks"],
                    "statistics": Estimates(rows, confidence).to_dict(),
                }
            )

        steps = self.steps
        changes = [
            {
                "from": int(r["from"]),
                "to": int(r["to"]),
                "from_step": steps[r["from"]],
                "to_step": steps[r["to"]],
                **{key: r[key] for key in ("dimension", "group", "statistic")},
                **{
                    key: value
                    for side in ("a", "b", "delta")
                    for key, value in ((side, json_number(r[side])), (f"{side}_ci", _interval(r, side)))
                },
                "n_a": int(r["n_a"]),
                "n_b": int(r["n_b"]),
                "change": r["change"],
                "direction": r["direction"],
            }
            for r in self.changes.to_dict("records")
        ]
        return _json_ready(
            {
                "schema_version": TREND_SCHEMA_VERSION,
                "kind": TREND,
                "passed": self.passed,
                "decided_on": self.checkpoints[-1].name,
                "method": self.method,
                "n_samples": summaries[-1]["n_samples"],
                "checkpoints": checkpoints,
                "changes": changes,
                "meta": {
                    "name": self.name,
                    "model": {"spec": (meta.get("model") or {}).get("spec")},
                    **_pick(meta, TREND_META),
                },
            }
        )

    def write(self, out: str | Path, formats: Sequence[str] | None = None) -> dict[str, Path]:
        """Write the trend's bundle into ``out``: each checkpoint's audit bundle into its folder
        (where its run already is when ``out`` was the trend's run folder), the estimates and
        changes tables and summary.json; read it back and render the views ``formats`` (default:
        trend.html and junit.xml, the last checkpoint's checks; the same formats of each
        checkpoint's audit: report.html, junit.xml). Return the trend's paths by name."""
        out = Path(out)
        _views(TREND, formats)
        for checkpoint, result in zip(self.checkpoints, self.results, strict=True):
            result.write(out / checkpoint.folder, formats)
        try:
            paths = {ESTIMATES: out / ESTIMATES, CHANGES: out / CHANGES, SUMMARY: out / SUMMARY}
            write_parquet(paths[ESTIMATES], self.estimates)
            write_parquet(paths[CHANGES], self.changes)
            atomic_write(paths[SUMMARY], json_text(self.to_dict()))
        except OSError as exc:
            raise InputError(NOT_WRITABLE.format(out=out, reason=exc.strerror or exc)) from None
        return {**paths, **render_views(Trend.read(out), out, formats)}

    @classmethod
    def read(cls, folder: str | Path) -> Trend:
        """The trend written into ``folder`` by :meth:`write`, with each checkpoint's audit."""
        folder = Path(folder)
        _require(folder, (SUMMARY, ESTIMATES, CHANGES), TREND)
        summary = _read_summary(folder / SUMMARY, TREND_SCHEMA_VERSION)
        if summary.get("kind") != TREND:
            raise InputError(NOT_A_TREND.format(path=folder / SUMMARY))
        checkpoints = tuple(Checkpoint.from_dict(entry) for entry in summary["checkpoints"])
        results = tuple(AuditResult.read(folder / checkpoint.folder) for checkpoint in checkpoints)
        estimates, changes = pd.read_parquet(folder / ESTIMATES), pd.read_parquet(folder / CHANGES)
        return cls(checkpoints, results, estimates, changes, summary["meta"]["name"])


def _interval(row: Any, prefix: str) -> list[float] | None:
    """``[low, high]`` of a table row's ``<prefix>_ci_low`` and ``_ci_high`` (a record or a
    named tuple); None where the row has no interval."""
    get = row.get if isinstance(row, dict) else lambda key: getattr(row, key)
    low, high = get(f"{prefix}_ci_low"), get(f"{prefix}_ci_high")
    return None if math.isnan(low) else [float(low), float(high)]


def _pick(data: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {key: data[key] for key in keys if key in data}


def is_trend(folder: str | Path) -> bool:
    """Whether ``folder`` holds a trend's bundle (its summary.json says ``"kind": "trend"``)."""
    path = Path(folder) / SUMMARY
    if not path.is_file():
        return False
    data = read_json(path)
    return isinstance(data, dict) and data.get("kind") == TREND


def read_bundle(folder: str | Path) -> AuditResult | Comparison | Trend:
    """The audit, comparison or trend written into ``folder``, whichever it holds."""
    folder = Path(folder)
    if (folder / COMPARISON_JSON).is_file():
        return Comparison.read(folder)
    return Trend.read(folder) if is_trend(folder) else AuditResult.read(folder)
