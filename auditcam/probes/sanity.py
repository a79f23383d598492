"""Sanity check of the explanations: model-parameter randomisation (Adebayo et al., 2018,
"Sanity Checks for Saliency Maps").

An explanation that depends on what the model learned must change when the learned weights
are destroyed. On a deep copy of the model (the user's model is never touched, not even run)
the weight layers are re-initialised *cascading from the top*: first the classifier, then the
layer below it, and so on down to the first convolution. After each stage the maps of the same
images, for the same target classes, are recomputed and compared with the original maps by
Spearman rank correlation and SSIM. If the maps of the fully randomised model still look like
the originals, the heatmaps reflect the input (edges, the subject's contrast), not the model,
and the audit's attribution numbers cannot be trusted: the check fails.

A *stage* randomises one weight layer (a module with a weight of two or more dimensions: conv,
linear) together with the parameterised modules that run after it and before the next weight
layer (its batch norm, say). Each module is re-initialised by its own ``reset_parameters()``
(batch norm statistics included); a module without one gets each parameter redrawn from a
normal with that parameter's standard deviation. Seeded; the random state of the caller is
left alone.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from auditcam.cam import Explainer, preserved
from auditcam.config import AnalysisOptions
from auditcam.errors import InputError
from auditcam.files import Parts
from auditcam.models import logits_of, model_device
from auditcam.stats.analysis import ALL, OVERALL
from auditcam.stats.estimates import Estimate, Estimates, ratio_estimates

# (model, images, targets) -> maps (N, H, W): how the maps under test are computed
Explain = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
SPEARMAN, SSIM = "spearman", "ssim"
SSIM_SIGMA, SSIM_RADIUS = 1.5, 5  # Wang et al. (2004): 11 x 11 Gaussian window, sigma 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
MAX_EXAMPLES = 2
NO_COPY = "the sanity check works on a copy of the model, but copy.deepcopy failed: {error}"
NO_WEIGHT_LAYERS = "the model has no weight layers (conv or linear) to randomise"


@dataclass(frozen=True)
class SanityOptions:
    """``samples``: how many readable samples (seeded subsample) are explained at every stage;
    ``max_stages``: compare maps after at most this many stages, spread evenly over the cascade
    and always including the first and the last (every layer is still randomised in turn)."""

    samples: int = 32
    max_stages: int = 16

    def __post_init__(self) -> None:
        if self.samples < 1 or self.max_stages < 2:
            raise InputError(f"sanity: samples must be >= 1 and max_stages >= 2, got {self.samples}, {self.max_stages}")


# ---------------------------------------------------------------------------------------------
# similarity of two batches of maps (pure tensor maths)


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..P of each row of ``values`` (N, P), ties sharing their average rank (float64)."""
    n, p = values.shape
    order = values.argsort(dim=1, stable=True)
    ordered = values.gather(1, order)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    tie = starts.long().cumsum(dim=1) - 1  # tie group of each sorted position
    position = torch.arange(p, dtype=torch.float64).expand(n, p)
    first = torch.full((n, p), float(p), dtype=torch.float64).scatter_reduce(1, tie, position, "amin")
    last = torch.full((n, p), -1.0, dtype=torch.float64).scatter_reduce(1, tie, position, "amax")
    sorted_ranks = (first.gather(1, tie) + last.gather(1, tie)) / 2 + 1
    return torch.empty_like(sorted_ranks).scatter_(1, order, sorted_ranks)


def rank_correlation(original: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps (N, H, W) -> (N,), float64.

    NaN where the original map is constant or a map is not finite (no ranking to compare); 0
    where only ``other`` is constant (e.g. all zero after clipping): it ranks no pixel above
    another, so it keeps none of the original's order."""
    a, b = original.flatten(1).double(), other.flatten(1).double()
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    sa, sb = (ra * ra).sum(dim=1), (rb * rb).sum(dim=1)
    r = (ra * rb).sum(dim=1) / (sa * sb).sqrt()
    r = torch.where((sb == 0) & (sa > 0), torch.zeros_like(r), r)
    finite = torch.isfinite(a).all(dim=1) & torch.isfinite(b).all(dim=1)
    return torch.where(finite & (sa > 0), r, torch.full_like(r, math.nan))


def _unit(maps: torch.Tensor) -> torch.Tensor:
    """Each map divided by its maximum (clipped at 0; an all-zero map stays zero), float64."""
    maps = maps.double().clamp_min(0)
    return maps / maps.flatten(1).amax(dim=1).clamp_min(torch.finfo(torch.float64).tiny)[:, None, None]


def ssim(original: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Mean structural similarity (Wang et al., 2004) of each pair of maps (N, H, W) -> (N,),
    each map first scaled to [0, 1] by its maximum; Gaussian window (sigma 1.5, 11 x 11, smaller
    for maps under 11 pixels), population statistics, averaged over the window positions that
    fit inside the map."""
    a, b = _unit(original)[:, None], _unit(other)[:, None]
    radius = min(SSIM_RADIUS, (min(a.shape[-2:]) - 1) // 2)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(x * x) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))

    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    out = index.mean(dim=(1, 2, 3))
    finite = torch.isfinite(original.flatten(1)).all(dim=1) & torch.isfinite(other.flatten(1)).all(dim=1)
    return torch.where(finite, out, torch.full_like(out, math.nan))


# ---------------------------------------------------------------------------------------------
# the cascade


@dataclass(frozen=True)
class Stage:
    """One step of the cascade: the weight layer ``name`` and every module it re-initialises."""

    name: str
    modules: tuple[str, ...]


def _is_weight_layer(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return isinstance(weight, nn.Parameter) and weight.dim() >= 2


def _parameterised_children_that_never_ran(module: nn.Module, name: str, taken: set[str]) -> list[str]:
    """Submodules of ``module`` with parameters of their own that it uses without calling them
    (``nn.MultiheadAttention`` reads ``out_proj.weight`` directly): they belong to its stage."""
    return [
        full
        for full, sub in module.named_modules(prefix=name)
        if full not in taken and next(sub.parameters(recurse=False), None) is not None
    ]


def cascade(model: nn.Module, example: torch.Tensor) -> list[Stage]:
    """The stages of ``model``, top (output side) first, from the order its parameterised
    modules run in on ``example`` (with the parameterised submodules they use without calling
    them); modules that are never used are left out."""
    ran: list[str] = []

    def recorder(name: str):
        def hook(_module: nn.Module, _inputs: object, _output: object) -> None:
            if name not in ran:
                ran.append(name)

        return hook

    with preserved(model) as handles:
        for name, module in model.named_modules():
            if next(module.parameters(recurse=False), None) is not None:
                handles.append(module.register_forward_hook(recorder(name)))
        with torch.no_grad():
            model(example)
    modules = dict(model.named_modules())
    groups: list[list[str]] = []
    taken = set(ran)
    for name in ran:
        if _is_weight_layer(modules[name]) or not groups:
            groups.append([name])
        else:
            groups[-1].append(name)
        orphans = _parameterised_children_that_never_ran(modules[name], name, taken)
        groups[-1].extend(orphans)
        taken.update(orphans)
    if not any(_is_weight_layer(modules[g[0]]) for g in groups):
        raise InputError(NO_WEIGHT_LAYERS)
    return [Stage(g[0], tuple(g)) for g in reversed(groups)]


def randomise(modules: Sequence[nn.Module], seed: int) -> None:
    """Re-initialise ``modules`` in place (see the module docstring), seeded; the global random
    state (CPU, and every CUDA device when a parameter lives on one) is restored afterwards."""
    params = [p for m in modules for p in m.parameters(recurse=False)]
    cuda = any(p.is_cuda for p in params)
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for module in modules:
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
                continue
            for p in module.parameters(recurse=False):
                std = float(p.float().std()) if p.numel() > 1 else 0.0
                p.normal_(0.0, std if std > 0 and math.isfinite(std) else 1.0)


def checkpoints(n_stages: int, max_stages: int) -> list[int]:
    """Indices of the stages after which maps are compared: all, or ``max_stages`` spread
    evenly, first and last included."""
    if n_stages <= max_stages:
        return list(range(n_stages))
    return sorted({round(x) for x in np.linspace(0, n_stages - 1, max_stages)})


def gradcam_explain(method: str = "gradcam", layer: str | None = None) -> Explain:
    """The audit's explanations: ``method`` maps of ``layer`` (found automatically when None)."""

    def explain(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with Explainer(model, layer=layer, methods=(method,)) as explainer:
            return explainer(images, targets).maps[method]

    return explain


# ---------------------------------------------------------------------------------------------
# the result


@dataclass(frozen=True)
class SanityResult:
    """Per compared stage (top first): the layer randomised last, and each sample's Spearman
    rank correlation and SSIM with its original map; ``estimates`` holds their means with
    bootstrap CIs (statistics ``spearman:<k>`` / ``ssim:<k>``, k = position in ``stages``).
    ``examples``: a few samples' input pictures (uint8) and [0, 1] maps, original then per stage."""

    stages: tuple[Stage, ...]
    ids: tuple[str, ...]
    spearman: np.ndarray  # (stages, samples)
    ssim: np.ndarray  # (stages, samples)
    estimates: Estimates
    settings: dict[str, Any]
    examples: tuple[dict[str, Any], ...] = field(default=())

    def stage_estimate(self, statistic: str, k: int) -> Estimate:
        """Mean ``spearman`` or ``ssim`` after compared stage ``k``."""
        return self.estimates[(OVERALL, ALL, f"{statistic}:{k}")]

    @property
    def final(self) -> Estimate:
        """Mean Spearman correlation with the original maps once every layer is randomised."""
        return self.stage_estimate(SPEARMAN, len(self.stages) - 1)

    def table(self) -> list[dict[str, Any]]:
        """One JSON-ready row per compared stage, top first."""
        return [
            {
                "stage": k + 1,
                "layer": stage.name,
                "randomised": list(stage.modules),
                SPEARMAN: self.stage_estimate(SPEARMAN, k).to_dict(),
                SSIM: self.stage_estimate(SSIM, k).to_dict(),
            }
            for k, stage in enumerate(self.stages)
        ]

    def to_dict(self) -> dict[str, Any]:
        """The ``sanity`` part of summary.json (its check is added by the audit)."""
        return {"settings": self.settings, "final_spearman": self.final.to_dict(), "stages": self.table()}

    def to_parts(self) -> Parts:
        """For the bundle: stages, ids and settings; the per-sample scores and the examples'
        pictures and maps as arrays; the estimates as a table."""
        arrays = {SPEARMAN: self.spearman, SSIM: self.ssim}
        for i, example in enumerate(self.examples):
            arrays[f"{i}/maps"] = np.stack(example["maps"])
            if example["picture"] is not None:
                arrays[f"{i}/picture"] = example["picture"]
        fields = {
            "stages": [dataclasses.asdict(stage) for stage in self.stages],
            "ids": list(self.ids),
            "settings": self.settings,
            "examples": [e["id"] for e in self.examples],
        }
        fields["confidence"] = self.estimates.confidence
        return Parts(fields, arrays, {"estimates": self.estimates.frame})

    @classmethod
    def from_parts(cls, parts: Parts) -> SanityResult:
        """The result :meth:`to_parts` took apart."""
        fields, arrays = parts.fields, parts.arrays
        examples = tuple(
            {"id": name, "picture": arrays.get(f"{i}/picture"), "maps": tuple(arrays[f"{i}/maps"])}
            for i, name in enumerate(fields["examples"])
        )
        return cls(
            tuple(Stage(s["name"], tuple(s["modules"])) for s in fields["stages"]),
            tuple(fields["ids"]),
            arrays[SPEARMAN],
            arrays[SSIM],
            Estimates(parts.tables["estimates"], fields["confidence"]),
            fields["settings"],
            examples,
        )


def model_randomisation(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor | None = None,
    *,
    explain: Explain | None = None,
    method: str = "gradcam",
    layer: str | None = None,
    ids: Sequence[str] | None = None,
    seed: int = 0,
    max_stages: int = 16,
    batch_size: int = 32,
    analysis: AnalysisOptions | None = None,
    pictures: np.ndarray | None = None,
) -> SanityResult:
    """Cascading randomisation of a copy of ``model``; compare the maps of ``images`` (model
    input, N x 3 x H x W) for ``targets`` (default: the intact model's predictions) after each
    stage with the original maps. ``explain`` computes the maps (default: ``method`` of
    ``layer`` with auditcam's Explainer). ``pictures`` (N, H, W, 3) uint8 are shown in examples."""
    analysis = AnalysisOptions() if analysis is None else analysis
    explain = gradcam_explain(method, layer) if explain is None else explain
    try:
        twin = copy.deepcopy(model)
    except Exception as exc:  # a module that cannot be copied: say so instead of touching the original
        raise InputError(NO_COPY.format(error=exc)) from None
    twin.eval()
    device = model_device(twin)
    images = images.to(device)
    chunks = range(0, len(images), batch_size)
    if targets is None:
        with torch.no_grad():
            targets = torch.cat([_argmax(twin, images[i : i + batch_size]) for i in chunks])
    targets = targets.to(device)

    def maps() -> torch.Tensor:
        return torch.cat([explain(twin, images[i : i + batch_size], targets[i : i + batch_size]).cpu() for i in chunks])

    original = maps()
    stages = cascade(twin, images[:1])
    modules = dict(twin.named_modules())
    compared = checkpoints(len(stages), max_stages)
    spearman, structural, kept = [], [], []
    shown = min(MAX_EXAMPLES, len(images))
    example_maps = [[_unit(original[i : i + 1])[0].float().numpy()] for i in range(shown)]
    for k, stage in enumerate(stages):
        randomise([modules[name] for name in stage.modules], seed=seed * 1_000_003 + k)
        if k not in compared:
            continue
        after = maps()
        spearman.append(rank_correlation(original, after).numpy())
        structural.append(ssim(original, after).numpy())
        kept.append(stage)
        for i in range(shown):
            example_maps[i].append(_unit(after[i : i + 1])[0].float().numpy())
    spearman_a, ssim_a = np.stack(spearman), np.stack(structural)
    ids = tuple(str(i) for i in (ids if ids is not None else range(len(images))))
    values: dict[str, np.ndarray] = {}
    counted: dict[str, np.ndarray] = {}
    for k in range(len(kept)):
        for name, table in ((SPEARMAN, spearman_a), (SSIM, ssim_a)):
            values[f"{name}:{k}"], counted[f"{name}:{k}"] = table[k], np.isfinite(table[k])
    overall = {OVERALL: ([ALL], np.zeros(len(ids), dtype=np.int64))}
    estimates = ratio_estimates(values, counted, overall, analysis)
    examples = tuple(
        {"id": ids[i], "picture": None if pictures is None else pictures[i], "maps": tuple(example_maps[i])}
        for i in range(shown)
    )
    settings = {
        "samples": len(ids),
        "seed": seed,
        "weight_layers": len(stages),
        "compared_stages": len(kept),
        "reinitialisation": "reset_parameters(), else normal(0, the parameter's std)",
    }
    return SanityResult(tuple(kept), ids, spearman_a, ssim_a, estimates, settings, examples)


def _argmax(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return logits_of(model(images)).argmax(dim=1)


def run_sanity(
    model: nn.Module,
    dataset: Any,
    options: SanityOptions | None = None,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    target: str = "pred",
    analysis: AnalysisOptions | None = None,
    batch_size: int = 32,
    multilabel: bool = False,
) -> SanityResult:
    """:func:`model_randomisation` on a seeded subsample of the readable samples of ``dataset``
    (an audit's dataset), explaining the prediction or the true label as the audit does. A
    ``multilabel`` audit's maps are compared for one label per sample: the most probable one, or
    (``target="label"``) the sample's first true label, passing over samples without one."""
    options = SanityOptions() if options is None else options
    analysis = AnalysisOptions() if analysis is None else analysis
    order = np.random.default_rng([analysis.seed, 2]).permutation(len(dataset))
    items, passed_over, unlabelled = [], 0, 0
    for index in order:
        item = dataset[int(index)]
        if "image" not in item:
            passed_over += 1
        elif target == "label" and _first_label(item) is None:
            unlabelled += 1
        else:
            items.append(item)
        if len(items) == options.samples:
            break
    if not items:
        raise InputError("sanity check: no readable sample to explain")
    images = torch.stack([item["image"] for item in items])
    labels = torch.tensor([_first_label(item) for item in items]) if target == "label" else None
    pre = dataset.preprocessing
    pictures = pre.to_uint8(images[:MAX_EXAMPLES])
    result = model_randomisation(
        model,
        images,
        labels,
        method=method,
        layer=layer,
        ids=[str(item["id"]) for item in items],
        seed=analysis.seed,
        max_stages=options.max_stages,
        batch_size=batch_size,
        analysis=analysis,
        pictures=pictures,
    )
    extra = {"method": method, "layer": layer, "target": target, "unreadable_passed_over": passed_over}
    if multilabel:
        explained = "the first true label" if target == "label" else "the most probable label"
        extra.update(explained=f"one label per sample: {explained}", unlabelled_passed_over=unlabelled)
    return dataclasses.replace(result, settings={**result.settings, **extra})


def _first_label(item: dict[str, Any]) -> int | None:
    """The class a label-target sanity check explains: the label, or a multi-label sample's first."""
    if "labels" in item:
        return int(item["labels"][0]) if item["labels"] else None
    return int(item["label"])
