"""What a run's summary says about itself (``meta``): the model, the data, the settings as
:meth:`~auditcam.config.AuditSettings.describe` gives them, the checks, the versions and how it ran."""

from __future__ import annotations

import datetime as _dt
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision

from auditcam.config import AnalysisOptions, AuditSettings, Checks
from auditcam.data import LabelledDataset
from auditcam.models import ModelInfo, sha256_file
from auditcam.version import __version__


def run_meta(
    *,
    name: str | None,
    model_info: ModelInfo | None,
    dataset: Any,
    classes: Sequence[str] | None,
    settings: AuditSettings,
    checks: Checks,
    analysis: AnalysisOptions,
    run: Mapping[str, Any],
    upsampling: str,
    command: str | None,
    config_sources: Sequence[str],
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The JSON-ready ``meta`` of an audit's summary; ``settings`` as they ran (resolved layer;
    ``task``, ``target`` and ``threshold`` among them), ``run`` how (device, autocast, processes,
    layout, resumed samples, folder); ``notes``: what was assumed about the data."""
    return {
        "name": name or _default_name(model_info),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "config_sources": list(config_sources),
        "versions": {
            "auditcam": __version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
        "model": None
        if model_info is None
        else {"spec": model_info.spec, "weights": model_info.weights, "weights_sha256": model_info.weights_sha256},
        "dataset": {
            "source": dataset.source,
            "sha256": _index_sha256(dataset.source) if isinstance(dataset, LabelledDataset) else None,
            "n_samples": len(dataset),
            "attributes": list(dataset.attributes),
            **({"notes": list(notes)} if notes else {}),
        },
        "classes": None if classes is None else list(classes),
        **settings.describe(),
        "upsampling": upsampling,
        "preprocessing": dataset.preprocessing.describe(),
        "checks": checks.to_dict(),
        "analysis": analysis.to_dict(),
        "run": dict(run),
    }


def _index_sha256(source: str | None) -> str | None:
    """sha256 of the dataset's index file (manifest, COCO JSON), so a report names exactly the
    data it audited; None for a folder layout or an in-memory Dataset."""
    path = Path(source) if source else None
    return sha256_file(path) if path is not None and path.is_file() else None


def _default_name(info: ModelInfo | None) -> str:
    if info is None:
        return "model"
    return Path(info.weights).stem if info.weights else info.spec
