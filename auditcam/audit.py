"""audit(): explain and score a labelled dataset, aggregate, run the probes, decide the checks.

Orchestration only: the run (:mod:`auditcam.run`), the statistics (:mod:`auditcam.stats`) and the
probes (:mod:`auditcam.probes`) do the work; the result is an :class:`~auditcam.result.AuditResult`.
"""

from __future__ import annotations

import datetime as _dt
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torchvision
from torch import nn
from torch.utils.data import Dataset

from auditcam.cam import UPSAMPLING, CaptumMethod, Explainer
from auditcam.config import AnalysisOptions, Checks
from auditcam.data import LabelledDataset, as_audit_dataset
from auditcam.errors import InputError
from auditcam.models import ModelInfo, model_device, sha256_file
from auditcam.probes.occlusion import run_strategies
from auditcam.result import AuditResult
from auditcam.run import distributed
from auditcam.run.device import amp_dtype, on_device, resolve_device
from auditcam.run.gallery import Gallery, pick_gallery
from auditcam.run.loop import analysis_frame, explain_share, find_layer, merge_shards
from auditcam.run.memory import release_memory
from auditcam.run.plan import Run, prepare, run_folder
from auditcam.run.runfolder import fingerprint, fingerprint_settings
from auditcam.stats.analysis import analyse
from auditcam.stats.checks import (
    evaluate_checks,
    required_intersections,
    validate_checks,
)
from auditcam.version import __version__

if TYPE_CHECKING:
    from auditcam.probes.counterfactual import CounterfactualOptions
    from auditcam.probes.sanity import SanityOptions


TARGETS = ("pred", "label")


def audit(
    model: nn.Module,
    dataset: LabelledDataset | Dataset,
    *,
    methods: Sequence[str | CaptumMethod] = ("gradcam",),
    layer: str | None = None,
    checks: Checks | None = None,
    analysis: AnalysisOptions | None = None,
    target: str = "pred",
    batch_size: int | None = None,
    num_workers: int | None = 0,
    reliance_threshold: float = 1.0,
    gallery_size: int = 8,
    model_info: ModelInfo | None = None,
    name: str | None = None,
    progress: bool = True,
    run_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    amp: bool | str | torch.dtype = False,
    shard_size: int | None = None,
    counterfactual: CounterfactualOptions | bool | None = None,
    sanity: SanityOptions | bool | None = None,
    featuremap_channels: int = 9,
) -> AuditResult | None:
    """Explain and score every sample of ``dataset`` with ``model``; aggregate; decide checks.

    ``target`` picks the class each heatmap explains: ``"pred"`` (the model's prediction) or
    ``"label"`` (the true class). The first method decides the checks and the gallery.
    ``name`` titles the report (default: the weights file's stem, else the model spec).
    ``dataset`` may be any torch Dataset yielding the item dict of :mod:`auditcam.data.custom`;
    ``num_workers`` decodes in worker processes (None: :func:`auditcam.data.default_workers`).
    ``analysis`` sets the minimum group size, bootstrap and intersections of the aggregates.
    ``counterfactual`` (True or options) adds the background-swap test and its
    ``max_background_following`` and ``max_bg_gap`` checks, ``sanity`` (True or options) the
    model-randomisation check of the explanations;
    ``featuremap_channels`` channels of the explained layer are drawn per exemplar (0: none).

    ``run_dir`` holds the run's manifest, shards and ``samples.parquet`` (default: a temporary
    folder that lives as long as the result); ``resume`` continues the run there, ``overwrite``
    replaces it (see :func:`auditcam.run.runfolder.open_run`). ``batch_size`` (default 32, or the
    resumed run's) and ``shard_size`` (samples per shard; default from the dataset size) fix
    the batches. ``device``: ``"cpu"``, ``"cuda"``, ``"auto"`` or None (where the model is);
    the model is moved there for the audit and back after. ``amp`` runs the model under
    autocast (True: bfloat16 on the CPU, float16 or bfloat16 on CUDA; or ``"bf16"``/``"fp16"``).

    Under torch.distributed (torchrun) every rank explains its share of the chunks into the
    shared ``run_dir``; rank 0 returns the result, the other ranks None. The counterfactual
    test, the sanity check and the feature maps run on rank 0 after the merge.
    """
    if target not in TARGETS:
        raise InputError(f"target {target!r}: choose from {', '.join(TARGETS)}")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    if resume and overwrite:
        raise InputError("--resume and --overwrite exclude each other: choose one")
    group = distributed.current()
    if group.world > 1 and run_dir is None:
        raise InputError("under torch.distributed, give a run folder (--out) that every process can reach")
    checks = Checks() if checks is None else checks
    dataset = as_audit_dataset(dataset)
    options = required_intersections(checks, AnalysisOptions() if analysis is None else analysis)
    validate_checks(checks, options, dataset.attributes)
    if model_info is not None and dataset.preprocessing != model_info.preprocessing:
        dataset = dataset.with_preprocessing(model_info.preprocessing)
    classes = dataset.classes or (model_info.classes if model_info else None)
    device = model_device(model) if device is None else resolve_device(device, group.local_rank)
    autocast = amp_dtype(device, amp)
    explainer = Explainer(model, layer=layer, methods=methods, autocast=autocast)
    methods = explainer.methods  # names, also for CaptumMethod objects
    with run_folder(run_dir) as (folder, temporary):
        settings = {
            "methods": methods,
            "layer": layer,
            "target": target,
            "reliance_threshold": reliance_threshold,
            "preprocessing": dataset.preprocessing.describe(),
            "upsampling": UPSAMPLING,
            "device": device,
            "amp": autocast,
        }

        def make_fingerprint(batch: int, shard: int) -> dict[str, Any]:
            return fingerprint(
                model=model,
                model_spec=None
                if model_info is None
                else {"spec": model_info.spec, "weights_sha256": model_info.weights_sha256},
                dataset=dataset,
                settings=fingerprint_settings(**settings, batch_size=batch, shard_size=shard),
            )

        prepared = (
            prepare(folder, dataset, methods, make_fingerprint, batch_size, shard_size, resume, overwrite)
            if group.leader
            else None
        )
        run: Run = group.exchange("plan", prepared)[0]
        with on_device(model, device), explainer:
            shown = Gallery(size=gallery_size)  # this process's candidates, kept while it explains
            if not run.complete:
                explain_share(
                    explainer,
                    dataset,
                    run,
                    group,
                    folder,
                    methods,
                    classes,
                    target,
                    reliance_threshold,
                    device,
                    num_workers,
                    progress,
                    shown,
                )
            group.exchange("explained")
            if not group.leader:
                return None
            if not run.complete:
                merge_shards(folder, run, dataset.attributes, len(methods))
            release_memory()
            analyses = {
                m: analyse(analysis_frame(folder.samples, m, dataset.attributes), dataset.attributes, options)
                for m in methods
            }
            release_memory()
            seen = dict((*shown.background_reliant, *shown.subject_focused))
            gallery = pick_gallery(
                folder.samples, explainer, dataset, methods, gallery_size, run.layout.batch_size, device, seen
            )
            if explainer.layer is None:
                find_layer(explainer, dataset, device)
            beyond = _beyond_heatmaps(
                model,
                dataset,
                gallery,
                counterfactual=counterfactual,
                sanity=sanity,
                featuremap_channels=featuremap_channels,
                subjects=analyses[methods[0]].n_with_subject > 0,
                method=methods[0],
                layer=explainer.layer,
                target=target,
                checks=checks,
                options=options,
                classes=classes,
                batch_size=run.layout.batch_size,
                num_workers=num_workers,
                progress=progress,
            )
            beyond["strategies"], location = run_strategies(
                model, dataset, folder.samples, method=methods[0], classes=classes, checks=checks, analysis=options,
                batch_size=run.layout.batch_size,
            )  # fmt: skip
            beyond["checks"] += [location] if location is not None else []
        check_results = [*evaluate_checks(analyses[methods[0]], checks), *beyond.pop("checks")]
        meta = {
            "name": name or _default_name(model_info),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": {
                "auditcam": __version__,
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
            "preprocessing": dataset.preprocessing.describe(),
            "checks": checks.to_dict(),
            "analysis": options.to_dict(),
            "run": {
                "device": str(device),
                "amp": None if autocast is None else str(autocast).removeprefix("torch."),
                "processes": group.world,
                **run.layout.to_dict(),
                "resumed_at": run.done,
                "folder": None if run_dir is None else str(run_dir),
            },
        }
        return AuditResult(folder.samples, check_results, analyses, gallery, meta, temporary=temporary, **beyond)


def _largest(cf: Any, statistic: str) -> str:
    """Where a counterfactual statistic is largest among the groups with enough samples."""
    worst = cf.largest_group_gap(statistic)
    return "" if worst is None else f"largest in {worst['dimension']}={worst['group']}: {worst['value']:.3f}"


def _beyond_heatmaps(
    model: nn.Module,
    dataset: Any,
    gallery: Gallery,
    *,
    counterfactual: CounterfactualOptions | bool | None,
    sanity: SanityOptions | bool | None,
    featuremap_channels: int,
    subjects: bool,
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
    feature-map grids, as AuditResult fields plus ``checks``. Without ``subjects`` (no sample
    has one) the background test cannot move any subject: its checks are not applicable."""
    from auditcam.probes.counterfactual import BG_GAP, FOLLOWING, CounterfactualOptions, run_counterfactual
    from auditcam.probes.featuremaps import exemplar_grids
    from auditcam.probes.sanity import SanityOptions, run_sanity
    from auditcam.stats.analysis import NO_SUBJECTS
    from auditcam.stats.checks import background_following_check, bg_gap_check, not_applicable, sanity_check

    out: dict[str, Any] = {"checks": []}
    if counterfactual and not subjects:
        nothing = {"value": None, "ci": None, "n": 0}
        for check in (background_following_check(nothing, checks, options), bg_gap_check(nothing, checks, options)):
            if check is not None:
                out["checks"].append(not_applicable(check, f"{NO_SUBJECTS}: swapping backgrounds needs subject masks"))
    elif counterfactual:
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
        following = background_following_check(cf.estimate(FOLLOWING), checks, options, _largest(cf, FOLLOWING))
        reason = "" if cf.bg_gap_informative else cf.information["reason"]
        out["checks"] += [following, bg_gap_check(cf.estimate(BG_GAP), checks, options, _largest(cf, BG_GAP), reason)]
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
