"""A training-loop monitor: a fixed audit subset, audited with the current weights at each
:meth:`Monitor.step`, its check values returned and sent to the chosen trackers.

The model is handed back exactly as it came: training flags, ``requires_grad`` and hooks (the
audit's own guard, :func:`auditcam.cam.layers.preserved`), parameters and gradients
(the explainer's gradients reach only the hooked activations), the autocast state (the audit
runs with autocast off, as its own precision setting says) and the random number generators
(forked), so a seeded training run gives the same losses with or without the monitor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from auditcam.audit import audit
from auditcam.cam import CaptumMethod, Explainer
from auditcam.config import AnalysisOptions, AuditSettings, Checks
from auditcam.data import as_audit_dataset, collate
from auditcam.data.custom import WrappedDataset
from auditcam.errors import InputError
from auditcam.integrations.scalars import summary_scalars
from auditcam.integrations.targets import TENSORBOARD, Logged, LogTarget, as_targets, gallery_exemplars, send
from auditcam.run.device import model_device, to_device
from auditcam.stats.checks import CheckResult

MULTILABEL_MONITOR = (
    "Monitor audits single-label classifiers; for a multi-label dataset run "
    "auditcam.audit(model, dataset, AuditSettings(task='multilabel')) at the steps you choose"
)


class _Items(Dataset):
    """Items read once and kept: the audit subset never touches the disk again."""

    def __init__(self, items: Sequence[dict[str, Any]]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


@dataclass(frozen=True)
class StepResult:
    """One monitored step: the checks decided on the subset, the verdict, and every metric
    sent to the trackers (names of :mod:`auditcam.integrations.scalars`)."""

    step: int | None
    checks: tuple[CheckResult, ...]
    passed: bool
    metrics: dict[str, float]

    @property
    def values(self) -> dict[str, float | None]:
        """Each check's value by name (None: not measured on this subset)."""
        return {check.name: check.value for check in self.checks}


@contextlib.contextmanager
def _isolated(model: nn.Module) -> Iterator[None]:
    """Autocast off and the random generators forked for the block: the training loop's
    precision and random stream are what they were."""
    device = model_device(model)
    cuda = [device.index or 0] if device.type == "cuda" else []
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.random.fork_rng(devices=cuda))
        stack.enter_context(torch.autocast("cpu", enabled=False))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast("cuda", enabled=False))
        state = random.getstate(), np.random.get_state()
        try:
            yield
        finally:
            random.setstate(state[0])
            np.random.set_state(state[1])


class Monitor:
    """Audit a fixed subset of ``dataset`` (``samples`` drawn with ``seed``, read once) at every
    :meth:`step` of a training loop, and log each step to ``log`` (``"mlflow[:URI]"``,
    ``"tensorboard[:DIR]"``, several, or None). ``checks``, ``analysis``, ``methods``, ``layer``,
    ``target`` and ``reliance_threshold`` mean what they mean in :class:`~auditcam.AuditSettings`;
    ``gallery_size`` exemplars at each end (and each class's mean heatmap) go to TensorBoard.
    The audit runs where the model is, without autocast and feature maps.

    The strategy discovery and its location-shortcut test (an occlusion pass per strategy, the
    ``max_location_shortcut`` check) run only every ``location_every``-th call of :meth:`step`,
    the first included (default 0: never), as they would dominate a step's time.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        samples: int = 64,
        seed: int = 0,
        methods: Sequence[str | CaptumMethod] = ("gradcam",),
        layer: str | None = None,
        checks: Checks | None = None,
        analysis: AnalysisOptions | None = None,
        target: str = "pred",
        reliance_threshold: float = 1.0,
        batch_size: int = 32,
        gallery_size: int = 4,
        log: str | LogTarget | Sequence[str | LogTarget] | None = None,
        location_every: int = 0,
    ) -> None:
        if samples < 1:
            raise InputError(f"samples must be at least 1, got {samples}")
        if location_every < 0:
            raise InputError(f"location_every must be 0 (never) or a number of steps, got {location_every}")
        source = as_audit_dataset(dataset)
        if getattr(source, "multilabel", False):
            raise InputError(MULTILABEL_MONITOR)
        picked = sorted(random.Random(seed).sample(range(len(source)), min(samples, len(source))))
        self.subset = WrappedDataset(
            _Items([source[i] for i in picked]),
            classes=source.classes,
            attributes=source.attributes,
            preprocessing=source.preprocessing,
            source=f"{source.source} (audit subset: {len(picked)} of {len(source)}, seed {seed})",
        )
        self.targets = as_targets(log)
        self.checks, self.analysis = checks, analysis
        self.gallery_size = gallery_size if any(t.kind == TENSORBOARD for t in self.targets) else 0
        self.settings = AuditSettings(
            methods=tuple(methods),
            layer=layer,
            target=target,
            reliance_threshold=reliance_threshold,
            batch_size=batch_size,
            device=None,  # where the training loop keeps the model: it is never moved
            gallery_size=self.gallery_size,
            featuremap_channels=0,
            strategies=False,
        )
        self.location_every = location_every
        self.calls = 0

    def step(self, model: nn.Module, step: int | None = None) -> StepResult:
        """Audit the subset with ``model``'s current weights; log and return the checks."""
        location = self.location_every > 0 and self.calls % self.location_every == 0
        self.calls += 1
        with _isolated(model):
            result = audit(
                model,
                self.subset,
                dataclasses.replace(self.settings, strategies=location),
                checks=self.checks,
                analysis=self.analysis,
                num_workers=0,
                name=f"step {step}" if step is not None else None,
                progress=False,
            )
            heatmaps = class_heatmaps(model, self.subset, result.meta) if self.gallery_size else {}
        summary = result.summary()
        metrics = summary_scalars(summary)
        if self.targets:
            logged = Logged(summary, exemplars=gallery_exemplars(result), class_heatmaps=heatmaps, step=step)
            send(logged, self.targets)
        return StepResult(step=step, checks=result.checks, passed=result.passed, metrics=metrics)


def class_heatmaps(model: nn.Module, dataset: Any, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """Each class's mean normalised heatmap over ``dataset`` (the audit's first method, layer
    and target, from its ``meta``), keyed by class name."""
    method, device = meta["methods"][0], model_device(model)
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}
    with Explainer(model, layer=meta["layer"], methods=[method]) as explainer:
        for start in range(0, len(dataset), 32):
            batch = collate([dataset[i] for i in range(start, min(start + 32, len(dataset)))])
            if not batch["ok"].any():
                continue
            labels = batch["label"][batch["ok"]]
            targets = labels.to(device) if meta["target"] == "label" else None
            maps = explainer(to_device(batch, device)["image"], targets).normalised(method).cpu()
            for label in labels.unique().tolist():
                chosen = maps[labels == label]
                sums[label] = sums.get(label, 0) + chosen.sum(0)
                counts[label] = counts.get(label, 0) + len(chosen)
    names = meta.get("classes")
    return {(names[k] if names else str(k)): (sums[k] / counts[k]).numpy() for k in sorted(sums)}
