"""The audit runner: iterate a labelled dataset, explain, score, and record one row per
(sample, method); then aggregate and decide the checks.

A sample that cannot be read, or whose mask/heatmap makes the metrics meaningless, still gets
its rows, with ``status`` (``error`` / ``invalid``) and ``reason``: nothing is dropped.
"""

from __future__ import annotations

import datetime as _dt
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torchvision
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from auditcam.analysis import Analysis, analyse
from auditcam.cam import UPSAMPLING, CaptumMethod, Explainer
from auditcam.checks import OUTCOMES, CheckResult, evaluate_checks, passed, required_intersections, validate_checks
from auditcam.config import AnalysisOptions, Checks
from auditcam.data import LabelledDataset, as_audit_dataset, loader
from auditcam.errors import InputError
from auditcam.gallery import Exemplar, Gallery
from auditcam.models import ModelInfo, sha256_file
from auditcam.scoring import METRICS, reasons, score

if TYPE_CHECKING:
    from auditcam.counterfactual import CounterfactualOptions, CounterfactualResult
    from auditcam.featuremaps import ExemplarGrid
    from auditcam.sanity import SanityOptions, SanityResult

SCHEMA_VERSION = 1  # of summary.json; see auditcam/schemas/summary.schema.json
TARGETS = ("pred", "label")


@dataclass(frozen=True)
class AuditResult:
    """Everything an audit found: the tidy per-sample frame, the analysis per method, check
    outcomes (decided on the first method), the gallery exemplars and the run's metadata; the
    counterfactual background test and the sanity check when they ran, and the feature-map
    grids of the exemplars."""

    samples: pd.DataFrame
    checks: tuple[CheckResult, ...]
    analyses: dict[str, Analysis]
    gallery: Gallery
    meta: dict[str, Any] = field(default_factory=dict)
    counterfactual: CounterfactualResult | None = None
    sanity: SanityResult | None = None
    featuremaps: tuple[ExemplarGrid, ...] = ()

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
        return {
            "schema_version": SCHEMA_VERSION,
            "passed": self.passed,
            "n_samples": int(self.samples["id"].nunique()),
            "outcomes": {o: sum(c.outcome == o for c in self.checks) for o in OUTCOMES},
            "checks": [check.to_dict() for check in self.checks],
            "aggregates": self.aggregates,
            "meta": self.meta,
            **self._beyond_summary(),
        }

    def _beyond_summary(self) -> dict[str, Any]:
        """``bg_gap`` (headline) and ``counterfactual`` (detail), ``sanity``: present when run."""
        out: dict[str, Any] = {}
        if self.counterfactual is not None:
            out["bg_gap"] = self.counterfactual.bg_gap
            out["counterfactual"] = self.counterfactual.to_dict()
        if self.sanity is not None:
            out["sanity"] = {**self.sanity.to_dict(), "check": _check_named(self.checks, "sanity:")}
        return out

    def write(self, out: str | Path) -> dict[str, Path]:
        """Write report.html, summary.json, junit.xml and samples.parquet into ``out``; return their paths."""
        from auditcam.report import write_bundle  # the report is a view over this result

        return write_bundle(self, out)


def _version() -> str:
    from auditcam import __version__

    return __version__


def _sample_rows(batch: dict[str, Any], classes: Sequence[str] | None) -> list[dict[str, Any]]:
    """The method-independent part of each sample's record."""
    rows = []
    for i, sample_id in enumerate(batch["id"]):
        label = int(batch["label"][i])
        row = {
            "id": sample_id,
            "image": batch["image_path"][i],
            "label": label,
            "label_name": classes[label] if classes is not None else str(label),
            "pred": None,
            "pred_name": None,
            "correct": None,
            "confidence": float("nan"),
            "target": None,
            "status": batch["status"][i],
            "reason": batch["reason"][i],
            "note": batch["note"][i],
        }
        row.update(batch["attributes"][i])
        rows.append(row)
    return rows


def _add_predictions(
    rows: list[dict[str, Any]],
    ok: torch.Tensor,
    explanation: Any,
    labels: torch.Tensor,
    classes: Sequence[str] | None,
) -> None:
    """Fill pred, confidence, correctness and the explained class into the readable rows."""
    confidence, pred = explanation.logits.float().softmax(dim=1).max(dim=1)
    for j, pos in enumerate(ok.nonzero().flatten().tolist()):
        p = int(pred[j])
        rows[pos].update(
            pred=p,
            pred_name=classes[p] if classes is not None else str(p),
            correct=p == int(labels[j]),
            confidence=float(confidence[j]),
            target=int(explanation.targets[j]),
        )


def _check_outputs(logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str] | None) -> None:
    n_outputs = logits.shape[1]
    if classes is not None and len(classes) != n_outputs:
        raise InputError(
            f"the model has {n_outputs} outputs but the class list has {len(classes)} names; "
            "check --num-classes and --classes"
        )
    if labels.numel() and int(labels.max()) >= n_outputs:
        raise InputError(
            f"a label is {int(labels.max())} but the model has only {n_outputs} outputs; "
            "check --num-classes and the manifest's labels"
        )


def audit(
    model: nn.Module,
    dataset: LabelledDataset | Dataset,
    *,
    methods: Sequence[str | CaptumMethod] = ("gradcam",),
    layer: str | None = None,
    checks: Checks | None = None,
    analysis: AnalysisOptions | None = None,
    target: str = "pred",
    batch_size: int = 32,
    num_workers: int | None = 0,
    reliance_threshold: float = 1.0,
    gallery_size: int = 8,
    model_info: ModelInfo | None = None,
    name: str | None = None,
    progress: bool = True,
    counterfactual: CounterfactualOptions | bool | None = None,
    sanity: SanityOptions | bool | None = None,
    featuremap_channels: int = 9,
) -> AuditResult:
    """Explain and score every sample of ``dataset`` with ``model``; aggregate; decide checks.

    ``target`` picks the class each heatmap explains: ``"pred"`` (the model's prediction) or
    ``"label"`` (the true class). The first method decides the checks and the gallery.
    ``name`` titles the report (default: the weights file's stem, else the model spec).
    ``dataset`` may be any torch Dataset yielding the item dict of :mod:`auditcam.data.custom`;
    ``num_workers`` decodes in worker processes (None: :func:`auditcam.data.default_workers`).
    ``analysis`` sets the minimum group size, bootstrap and intersections of the aggregates.
    ``counterfactual`` (True or options) adds the background-swap test and its ``max_bg_gap``
    check, ``sanity`` (True or options) the model-randomisation check of the explanations;
    ``featuremap_channels`` channels of the explained layer are drawn per exemplar (0: none).
    """
    if target not in TARGETS:
        raise InputError(f"target {target!r}: choose from {', '.join(TARGETS)}")
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    checks = Checks() if checks is None else checks
    dataset = as_audit_dataset(dataset)
    options = required_intersections(checks, AnalysisOptions() if analysis is None else analysis)
    validate_checks(checks, options, dataset.attributes)
    if model_info is not None and dataset.preprocessing != model_info.preprocessing:
        dataset = dataset.with_preprocessing(model_info.preprocessing)
    classes = dataset.classes or (model_info.classes if model_info else None)
    preprocessing = dataset.preprocessing
    explainer = Explainer(model, layer=layer, methods=methods)
    methods = explainer.methods  # names, also for CaptumMethod objects
    primary = methods[0]
    gallery = Gallery(size=gallery_size)
    records: list[dict[str, Any]] = []
    checked_outputs = False

    with explainer, tqdm(total=len(dataset), unit="img", desc="auditing", disable=not progress, file=sys.stderr) as bar:
        for batch in loader(dataset, batch_size, num_workers):
            rows = _sample_rows(batch, classes)
            ok = batch["ok"]
            scored: dict[str, dict[str, list]] = {}
            if ok.any():
                labels = batch["label"][ok]
                explanation = explainer(batch["image"], labels if target == "label" else None)
                if not checked_outputs:
                    _check_outputs(explanation.logits, batch["label"], classes)
                    checked_outputs = True
                _add_predictions(rows, ok, explanation, labels, classes)
                for method in methods:
                    scores = score(explanation.maps[method], batch["mask"], reliance_threshold=reliance_threshold)
                    scored[method] = {name: scores[name].tolist() for name in METRICS}
                    scored[method]["reason"] = reasons(scores["invalid"])
            readable = iter(range(int(ok.sum())))
            for pos, row in enumerate(rows):
                j = next(readable) if ok[pos] else None
                for method in methods:
                    if j is None:
                        records.append(dict(row, method=method, **dict.fromkeys(METRICS, float("nan"))))
                        continue
                    values = scored[method]
                    record = dict(row, method=method, **{name: values[name][j] for name in METRICS})
                    if values["reason"][j]:
                        record.update(status="invalid", reason=values["reason"][j])
                    elif method == primary:
                        gallery.offer(
                            values["subject_share"][j],
                            _exemplar_maker(record, batch, explanation, method, j, preprocessing),
                        )
                    records.append(record)
            bar.update(len(rows))

    samples = _frame(records, dataset.attributes)
    analyses = {m: analyse(samples[samples["method"] == m], dataset.attributes, options) for m in methods}
    check_results = evaluate_checks(analyses[primary], checks)
    beyond = _beyond_heatmaps(
        model,
        dataset,
        gallery,
        counterfactual=counterfactual,
        sanity=sanity,
        featuremap_channels=featuremap_channels,
        method=primary,
        layer=explainer.layer,
        target=target,
        checks=checks,
        options=options,
        classes=classes,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
    )
    check_results += beyond.pop("checks")
    meta = {
        "name": name or _default_name(model_info),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "auditcam": _version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
        "model": None
        if model_info is None
        else {
            "spec": model_info.spec,
            "weights": model_info.weights,
            "weights_sha256": model_info.weights_sha256,
        },
        "dataset": {
            "source": dataset.source,
            "sha256": _index_sha256(dataset.source) if isinstance(dataset, LabelledDataset) else None,
            "n_samples": len(dataset),
            "attributes": list(dataset.attributes),
        },
        "classes": None if classes is None else list(classes),
        "methods": list(methods),
        "layer": explainer.layer,
        "target": target,
        "upsampling": UPSAMPLING,
        "reliance_threshold": reliance_threshold,
        "preprocessing": preprocessing.describe(),
        "checks": checks.to_dict(),
        "analysis": options.to_dict(),
    }
    return AuditResult(
        samples=samples, checks=tuple(check_results), analyses=analyses, gallery=gallery, meta=meta, **beyond
    )


def _check_named(checks: Sequence[CheckResult], prefix: str) -> dict[str, Any] | None:
    return next((c.to_dict() for c in checks if c.name.startswith(prefix)), None)


def _beyond_heatmaps(
    model: nn.Module,
    dataset: Any,
    gallery: Gallery,
    *,
    counterfactual: CounterfactualOptions | bool | None,
    sanity: SanityOptions | bool | None,
    featuremap_channels: int,
    method: str,
    layer: str | None,
    target: str,
    checks: Checks,
    options: AnalysisOptions,
    classes: Sequence[str] | None,
    batch_size: int,
    num_workers: int | None,
    progress: bool,
) -> dict[str, Any]:
    """The counterfactual test, the sanity check (each with its check) and the exemplars'
    feature-map grids, as AuditResult fields plus ``checks``."""
    from auditcam.checks import bg_gap_check, sanity_check
    from auditcam.counterfactual import BG_GAP, CounterfactualOptions, run_counterfactual
    from auditcam.featuremaps import exemplar_grids
    from auditcam.sanity import SanityOptions, run_sanity

    out: dict[str, Any] = {"checks": []}
    if counterfactual:
        cf_options = counterfactual if isinstance(counterfactual, CounterfactualOptions) else CounterfactualOptions()
        cf = run_counterfactual(
            model,
            dataset,
            cf_options,
            analysis=options,
            classes=classes,
            batch_size=batch_size,
            num_workers=num_workers,
            progress=progress,
        )
        out["counterfactual"] = cf
        worst = cf.largest_group_gap()
        detail = "" if worst is None else f"largest in {worst['dimension']}={worst['group']}: {worst['value']:.3f}"
        out["checks"].append(bg_gap_check(cf.estimate(BG_GAP), checks, options, detail))
    if sanity:
        sanity_options = sanity if isinstance(sanity, SanityOptions) else SanityOptions()
        result = run_sanity(
            model,
            dataset,
            sanity_options,
            method=method,
            layer=layer,
            target=target,
            analysis=options,
            batch_size=batch_size,
        )
        out["sanity"] = result
        final = result.stages[-1].name
        out["checks"].append(sanity_check(result.final, checks, options, f"after randomising down to {final}"))
    if featuremap_channels > 0 and layer is not None:
        shown = list({e.record["id"]: e for e in [*gallery.background_reliant, *gallery.subject_focused]}.values())
        out["featuremaps"] = exemplar_grids(model, shown, dataset.preprocessing, layer, featuremap_channels)
    out["checks"] = [c for c in out["checks"] if c is not None]
    return out


def _index_sha256(source: str | None) -> str | None:
    """sha256 of the dataset's index file (manifest, COCO JSON), so a report names exactly the
    data it audited; None for a folder layout or an in-memory Dataset."""
    path = Path(source) if source else None
    return sha256_file(path) if path is not None and path.is_file() else None


def _default_name(info: ModelInfo | None) -> str:
    if info is None:
        return "model"
    return Path(info.weights).stem if info.weights else info.spec


def _exemplar_maker(row, batch, explanation, method, j, preprocessing):
    """Deferred construction of an Exemplar: copies pixels only if the gallery keeps it."""

    def make() -> Exemplar:
        image = preprocessing.denormalise(batch["image"][j].float())
        return Exemplar(
            record=dict(row),
            image=(image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8),
            heatmap=explanation.normalised(method)[j].numpy().astype(np.float32),
            mask=batch["mask"][j].numpy().copy(),
        )

    return make


def _frame(records: list[dict[str, Any]], attributes: Sequence[str]) -> pd.DataFrame:
    """Records -> the documented samples table, with stable column order and dtypes."""
    columns = [
        "id",
        "image",
        "method",
        "label",
        "label_name",
        "pred",
        "pred_name",
        "correct",
        "confidence",
        "target",
        "status",
        "reason",
        "note",
        *METRICS,
        *attributes,
    ]
    frame = pd.DataFrame.from_records(records, columns=columns)
    frame = frame.astype(
        {
            "label": "int64",
            "pred": "Int64",
            "target": "Int64",
            "correct": "boolean",
            "confidence": "float64",
            **{m: "float64" for m in METRICS},
        }
    )
    text = ("id", "image", "method", "label_name", "pred_name", "status", "reason", "note", *attributes)
    return frame.astype({c: "string" for c in text})
