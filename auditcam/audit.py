"""audit(): explain and score a labelled dataset, aggregate, run the probes, decide the checks.

Orchestration only: the run (:mod:`auditcam.run`), the statistics (:mod:`auditcam.stats`) and the
probes (:mod:`auditcam.probes`) do the work; the settings are one :class:`~auditcam.config.AuditSettings`;
the result is an :class:`~auditcam.result.AuditResult`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from auditcam.cam import UPSAMPLING, Explainer
from auditcam.config import AnalysisOptions, AuditSettings, Checks
from auditcam.data import LabelledDataset, as_audit_dataset
from auditcam.data.rows import SINGLE_LABEL_NOTE
from auditcam.errors import InputError
from auditcam.models import ModelInfo, model_device
from auditcam.probes.beyond import beyond_heatmaps
from auditcam.result import AuditResult
from auditcam.run import distributed
from auditcam.run.device import amp_dtype, on_device, resolve_device
from auditcam.run.gallery import Gallery, pick_gallery
from auditcam.run.loop import analysis_frame, explain_share, find_layer, merge_shards
from auditcam.run.memory import release_memory
from auditcam.run.meta import run_meta
from auditcam.run.plan import Run, prepare, run_folder
from auditcam.run.runfolder import fingerprint
from auditcam.stats.analysis import analyse
from auditcam.stats.checks import evaluate_checks, required_intersections, validate_checks

RESUME_AND_OVERWRITE = "`resume` and `overwrite` exclude each other: choose one"
SEVERAL_LABELS = "the dataset gives several labels per sample ('labels'); audit it with `task` multilabel"
DISTRIBUTED_NEEDS_RUN_DIR = "under torch.distributed, give a `run_dir` that every process can reach"


def audit(
    model: nn.Module,
    dataset: LabelledDataset | Dataset,
    settings: AuditSettings | None = None,
    *,
    checks: Checks | None = None,
    analysis: AnalysisOptions | None = None,
    model_info: ModelInfo | None = None,
    name: str | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    num_workers: int | None = 0,
    progress: bool = True,
    command: str | None = None,
    config_sources: Sequence[str] = (),
) -> AuditResult | None:
    """Explain and score every sample of ``dataset`` with ``model`` as ``settings`` say (default:
    :class:`AuditSettings`); aggregate as ``analysis`` says; decide ``checks``.

    ``dataset`` may be any torch Dataset yielding the item dict of :mod:`auditcam.data.custom`;
    ``settings.task="multilabel"`` audits a multi-label model (sigmoid outputs): one row per
    (sample, explained label, method), precision and recall beside accuracy (a single-label
    dataset is audited as one label per sample, said in ``meta["dataset"]["notes"]``);
    ``num_workers`` decodes in worker processes (None: :func:`auditcam.data.default_workers`).
    ``name`` titles the report (default: the weights file's stem, else the model spec);
    ``command`` and ``config_sources`` (the command line and the config files read) go into ``meta``.

    ``run_dir`` holds the run's manifest, shards and ``samples.parquet`` (default: a temporary
    folder that lives as long as the result); ``resume`` continues the run there, ``overwrite``
    replaces it (see :func:`auditcam.run.runfolder.open_run`). The model is moved to the settings'
    device for the audit and back after.

    Under torch.distributed (torchrun) every rank explains its share of the chunks into the
    shared ``run_dir``; rank 0 returns the result, the other ranks None. The counterfactual
    test, the sanity check, the feature maps and the strategies' location test run on rank 0
    after the merge.
    """
    settings = AuditSettings() if settings is None else settings
    if resume and overwrite:
        raise InputError(RESUME_AND_OVERWRITE, "resume")
    group = distributed.current()
    if group.world > 1 and run_dir is None:
        raise InputError(DISTRIBUTED_NEEDS_RUN_DIR, "run_dir")
    checks = Checks() if checks is None else checks
    dataset = as_audit_dataset(dataset)
    multilabel = settings.task == "multilabel"
    if not multilabel and getattr(dataset, "multilabel", False):
        raise InputError(SEVERAL_LABELS, "task")
    notes = list(getattr(dataset, "notes", ()))
    if multilabel and not getattr(dataset, "multilabel", False) and not notes:
        notes.append(SINGLE_LABEL_NOTE.format(why="the dataset's samples have one 'label' each"))
    options = required_intersections(checks, AnalysisOptions() if analysis is None else analysis)
    validate_checks(checks, options, dataset.attributes)
    if model_info is not None and dataset.preprocessing != model_info.preprocessing:
        dataset = dataset.with_preprocessing(model_info.preprocessing)
    donors = _donors(settings.bg_donors, dataset)
    classes = dataset.classes or (model_info.classes if model_info else None)
    device = model_device(model) if settings.device is None else resolve_device(settings.device, group.local_rank)
    autocast = amp_dtype(device, settings.amp)
    explainer = Explainer(model, layer=settings.layer, methods=settings.methods, autocast=autocast)
    methods = explainer.methods  # names, also for CaptumMethod objects
    with run_folder(run_dir) as (folder, temporary):
        records = {
            **settings.describe(records_only=True),
            "methods": list(methods),
            "preprocessing": dataset.preprocessing.describe(),
            "upsampling": UPSAMPLING,
            "device": device.type,
            "amp": None if autocast is None else str(autocast).removeprefix("torch."),
        }
        model_spec = (
            None if model_info is None else {"spec": model_info.spec, "weights_sha256": model_info.weights_sha256}
        )

        def make_fingerprint(batch: int, shard: int) -> dict[str, Any]:
            settings = {**records, "batch_size": batch, "shard_size": shard}
            return fingerprint(model=model, model_spec=model_spec, dataset=dataset, settings=settings)

        prepared = None
        if group.leader:
            prepared = prepare(
                folder,
                dataset,
                methods,
                make_fingerprint,
                settings.batch_size,
                settings.shard_size,
                resume,
                overwrite,
                multilabel=multilabel,
            )
        run: Run = group.exchange("plan", prepared)[0]
        batch_size = run.layout.batch_size
        with on_device(model, device), explainer:
            shown = Gallery(size=settings.gallery_size)  # this process's candidates, kept while it explains
            if not run.complete:
                explain_share(
                    explainer,
                    dataset,
                    run,
                    group,
                    folder,
                    methods,
                    classes,
                    settings.target,
                    settings.reliance_threshold,
                    device,
                    num_workers,
                    progress,
                    shown,
                    threshold=settings.threshold if multilabel else None,
                )
            group.exchange("explained")
            if not group.leader:
                return None
            if not run.complete:
                merge_shards(folder, run, dataset.attributes, len(methods), multilabel=multilabel)
            release_memory()
            analyses = {
                m: analyse(
                    analysis_frame(folder.samples, m, dataset.attributes, multilabel=multilabel),
                    dataset.attributes,
                    options,
                    task=settings.task,
                    classes=classes,
                )
                for m in methods
            }
            release_memory()
            seen = dict((*shown.background_reliant, *shown.subject_focused))
            gallery = pick_gallery(
                folder.samples, explainer, dataset, methods, settings.gallery_size, batch_size, device, seen
            )
            if explainer.layer is None:
                find_layer(explainer, dataset, device)
            beyond = beyond_heatmaps(
                model,
                dataset,
                gallery,
                settings,
                samples=folder.samples,
                donors=donors,
                subjects=analyses[methods[0]].n_with_subject > 0,
                method=methods[0],
                layer=explainer.layer,
                checks=checks,
                options=options,
                classes=classes,
                batch_size=batch_size,
                num_workers=num_workers,
                progress=progress,
            )
        check_results = [*evaluate_checks(analyses[methods[0]], checks), *beyond.pop("checks")]
        meta = run_meta(
            name=name,
            model_info=model_info,
            dataset=dataset,
            classes=classes,
            settings=dataclasses.replace(settings, methods=tuple(methods), layer=explainer.layer),
            checks=checks,
            analysis=options,
            run={
                "device": str(device),
                "amp": records["amp"],
                "processes": group.world,
                **run.layout.to_dict(),
                "resumed_at": run.done,
                "folder": None if run_dir is None else str(run_dir),
            },
            upsampling=UPSAMPLING,
            command=command,
            config_sources=config_sources,
            notes=notes,
        )
        return AuditResult(folder.samples, check_results, analyses, gallery, meta, temporary=temporary, **beyond)


def _donors(donors: Any, dataset: Any) -> Any:
    """The background donors of the counterfactual test: a dataset as given, or one opened from a
    path with the audited dataset's classes and preprocessing (None: the audited data)."""
    if not isinstance(donors, (str, os.PathLike)):
        return donors
    return LabelledDataset.open(donors, classes=dataset.classes, preprocessing=dataset.preprocessing)
