"""The Explainer: every requested CAM method from one forward and one gradient computation.

Head-only gradients. For the call the model's parameters are frozen (and restored after), so
no parameter gradient can exist and the trunk before the target layer records no autograd
graph: nothing there needs a gradient, it costs what inference costs. A forward hook on the
target layer detaches its output, marks that tensor as the one that needs a gradient, switches
autograd on for the rest of the pass (also inside a ``no_grad`` block of the model's own, such
as a frozen backbone) and hands a clone downstream, so in-place ops after the layer (DenseNet's
and MNASNet's ReLU) stay legal and never touch the kept activations. One
``torch.autograd.grad`` w.r.t. that tensor differentiates the head alone.

Full-autograd fallback. When the logits do not depend on the hooked tensor (the model switches
autograd off after the layer, or reads the layer's output by another route than the module's
return value), the explainer says so once (:class:`HeadOnlyFallbackWarning`) and from then on
differentiates from the input: the layer's own output stays in the graph. Correct, slower.

Transformer layers. The hook keeps the layer's output, and hands it on, in the layer's own layout;
the methods read activations and gradients through the layer's :class:`~auditcam.cam.grids.Grid`,
(N, C, h, w) views of Swin's channels-last maps and of a ViT's patch tokens (class token dropped).

Maps are clipped at 0 at the layer's resolution and upsampled to the input size (bilinear,
``align_corners=False``: :data:`UPSAMPLING`, recorded in every Explanation and audit).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

import torch
import torch.nn.functional as F
from torch import nn

from auditcam.cam.captum import CAPTUM_PREFIX, NEEDS_FEATURE_MAP, CaptumMethod
from auditcam.cam.grids import FEATURE_MAP, LAYOUTS, NOT_A_GRID, Grid, grid_of
from auditcam.cam.layers import find_target_layer, get_layer, preserved
from auditcam.cam.methods import FORWARD_METHODS, GRADIENT_FREE, METHOD_NAMES, METHODS
from auditcam.errors import InputError
from auditcam.models import check_hookable, logits_of

UPSAMPLING = "bilinear, align_corners=False"

FALLBACK_WARNING = (
    "{model}: the logits do not depend on the output of layer {layer} as the module returns it "
    "(the model switches autograd off after the layer, or reads its output another way); "
    "auditcam now differentiates the whole model from the input, which is slower"
)


class HeadOnlyFallbackWarning(UserWarning):
    """The head-only gradient did not reach the target layer; the full-autograd path is used."""


@dataclass(frozen=True)
class Explanation:
    """Result of explaining one batch.

    ``targets`` is (N,) with one explained class per image, or (N, k) with k per image (explicit
    (N, k) targets, ``top_k=k``: the k highest logits, highest first, or ``threshold``: every
    label of a multi-label model whose sigmoid probability reaches it, most probable first);
    -1 in (N, k) targets is padding, for an image with fewer than k targets, and its map is all
    zero. ``maps[method]`` is float32 (N, H, W) — or (N, k, H, W) — at input resolution, >= 0 and
    un-normalised: the raw values are what scoring uses; :meth:`normalised` gives the per-map
    [0, 1] display view.
    With several layers a map is the fusion :func:`fuse_layers` describes, in [0, 1].
    """

    logits: torch.Tensor
    targets: torch.Tensor
    maps: Mapping[str, torch.Tensor]
    layer: str
    upsampling: str = UPSAMPLING

    def normalised(self, method: str) -> torch.Tensor:
        """``maps[method]`` divided by each map's maximum (all-zero maps stay zero)."""
        return _normalised(self.maps[method])


def _normalised(maps: torch.Tensor) -> torch.Tensor:
    peak = maps.amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(maps.dtype).tiny)
    return maps / peak


def fuse_layers(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Fuse one method's maps from several layers: each layer's map, already upsampled to the input
    size, is divided by its own maximum (per image and target; an all-zero map stays zero), and the
    fused map is the mean of those. Normalising after upsampling puts every layer on the same
    [0, 1] scale whatever its resolution or activation magnitude, so no layer dominates."""
    return torch.stack([_normalised(m) for m in maps]).mean(0)


def _resolve_methods(methods: Sequence[str | CaptumMethod]) -> tuple[tuple[str, ...], dict[str, CaptumMethod]]:
    """Method names in order, and the Captum methods among them by name; unknown names raise."""
    names: list[str] = []
    captum: dict[str, CaptumMethod] = {}
    unknown: list[str] = []
    for method in methods:
        if isinstance(method, CaptumMethod):
            captum[method.name] = method
            names.append(method.name)
        elif isinstance(method, str) and method.startswith(CAPTUM_PREFIX):
            captum[method] = CaptumMethod(method[len(CAPTUM_PREFIX) :])
            names.append(method)
        elif method in METHOD_NAMES:
            names.append(method)
        else:
            unknown.append(repr(method))
    if unknown or not names:
        raise InputError(
            f"unknown CAM method {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(METHOD_NAMES)}, or captum:NAME for a captum.attr attribution"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"method {', '.join(repeated)} is given more than once")
    return tuple(names), captum


def _layer_names(layer: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"layer3,layer4"``, ``["layer3", "layer4"]`` -> ("layer3", "layer4")."""
    if layer is None:
        return None
    if isinstance(layer, str):
        names = layer.split(",")
    elif isinstance(layer, Sequence) and all(isinstance(name, str) for name in layer):
        names = list(layer)
    else:
        raise InputError(
            f"layer must be a module name or a list of names (e.g. 'layer4' or ['layer3', 'layer4']); got {layer!r}"
        )
    names = [name.strip() for name in names if name.strip()]
    if not names:
        raise InputError("give a layer name, e.g. layer4")
    return tuple(names)


def _check_targets(targets: object, logits: torch.Tensor) -> torch.Tensor:
    """Explicit targets, (N,) or (N, k) class ids (-1: padding in (N, k)), on the logits' device."""
    n, classes = logits.shape
    targets = torch.as_tensor(targets)
    if targets.dim() == 0:
        targets = targets.reshape(1)
    if targets.dim() == 1 and targets.shape[0] != n:
        raise InputError(f"got {targets.numel()} targets for a batch of {n} images; pass one per image")
    if targets.dim() > 2 or targets.shape[0] != n or targets.numel() == 0:
        raise InputError(
            f"got targets of shape {tuple(targets.shape)} for a batch of {n} images; pass (N,) or (N, k) class ids"
        )
    # Range check where it costs no device round-trip (targets handed over on the CPU).
    lowest = -1 if targets.dim() == 2 else 0
    if targets.device.type == "cpu" and (int(targets.min()) < lowest or int(targets.max()) >= classes):
        raise InputError(f"a target class is outside 0..{classes - 1}, the model's {classes} outputs", "targets")
    return targets.to(device=logits.device, dtype=torch.long)


def predicted_labels(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """(N, k) targets of a multi-label model: every class whose sigmoid probability is at least
    ``threshold``, most probable first, -1 after an image's last (k >= 1: the most any image has)."""
    probabilities = logits.detach().float().sigmoid()
    positive = probabilities >= threshold
    k = max(1, int(positive.sum(dim=1).max()))
    order = probabilities.topk(k, dim=1).indices
    return torch.where(positive.gather(1, order), order, torch.full_like(order, -1))


def _choose_targets(logits: torch.Tensor, targets: object, top_k: int | None, threshold: float | None) -> torch.Tensor:
    if threshold is not None:
        return predicted_labels(logits, threshold)
    if top_k is None:
        return logits.argmax(dim=1) if targets is None else _check_targets(targets, logits)
    classes = logits.shape[1]
    if not 1 <= top_k <= classes:
        raise InputError(f"top_k must be between 1 and the model's {classes} outputs, got {top_k}")
    return logits.topk(top_k, dim=1).indices


def _explained(targets: torch.Tensor) -> torch.Tensor:
    """Targets with padding (-1) replaced by class 0, so every slot can be computed (images do not
    interact, so a padded slot changes no other map; its own map is zeroed afterwards)."""
    return targets.clamp_min(0)


def _upsample(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Clip (N, ..., h, w) maps at 0 and upsample them bilinearly to ``size`` (align_corners=False)."""
    flat = raw.clamp_min(0).flatten(1, -3) if raw.dim() > 3 else raw.clamp_min(0)[:, None]
    upsampled = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return upsampled.reshape(*raw.shape[:-2], *size)


def _check_captum_layers(captum: Mapping[str, CaptumMethod], layers: Sequence[str], grids: Sequence[Grid]) -> None:
    """Captum's layer methods read a layer's output as (N, C, H, W): a channels-last or token
    layer is an error naming the method, rather than a map of the wrong axes."""
    layered = [name for name, method in captum.items() if method.uses_layer]
    if not layered:
        return
    for layer, grid in zip(layers, grids, strict=True):
        if grid.layout != FEATURE_MAP:
            raise InputError(NEEDS_FEATURE_MAP.format(method=layered[0], layer=layer, layout=LAYOUTS[grid.layout]))


@dataclass
class _Pass:
    logits: torch.Tensor
    targets: torch.Tensor
    activations: list[torch.Tensor]
    gradients: list[torch.Tensor] | None
    grids: list[Grid]


class Explainer:
    """CAM-family explanations of a classifier, every requested method from one pass.

    ``layer``: a module name, several (a list or ``"layer3,layer4"``: maps fused by
    :func:`fuse_layers`, the mean of the per-layer maps each divided by its maximum after
    upsampling), or None for the layer :func:`~auditcam.cam.layers.find_target_layer`
    finds on the first call (the last feature map before global pooling; a ViT's last attention
    input); a token or channels-last layer is read as a grid. ``methods``: names from
    :data:`~auditcam.cam.methods.METHOD_NAMES`, ``"captum:NAME"`` or
    :class:`~auditcam.cam.captum.CaptumMethod` objects. ``autocast``: a dtype (``torch.bfloat16``,
    ``torch.float16``) to run the model under ``torch.autocast``; maps are computed in float32
    regardless. ``scorecam_chunk_size``: masked images per forward pass of Score-CAM (its memory
    bound).

    Use as a context manager to keep the model in eval mode across calls; every call leaves
    the model's training flags, ``requires_grad`` and hooks exactly as it found them.

    A multi-label model (sigmoid outputs) is explained per label from one forward pass:
    ``ex(images, threshold=0.5)`` explains every label whose probability reaches 0.5, and
    ``ex(images, targets)`` with (N, k) true labels padded by -1 explains those; either gives
    (N, k, H, W) maps, zero where a target is padding.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | Sequence[str] | None = None,
        methods: Sequence[str | CaptumMethod] = ("gradcam",),
        *,
        autocast: torch.dtype | None = None,
        scorecam_chunk_size: int = 32,
    ) -> None:
        if scorecam_chunk_size < 1:
            raise InputError(f"scorecam_chunk_size must be at least 1, got {scorecam_chunk_size}")
        check_hookable(model)
        self.model = model
        self.methods, self._captum = _resolve_methods(methods)
        self.autocast = autocast
        self.scorecam_chunk_size = scorecam_chunk_size
        self._layers = _layer_names(layer)
        self._full_autograd = False
        self._stack: contextlib.ExitStack | None = None
        for name in self._layers or ():
            get_layer(model, name)

    @property
    def layer(self) -> str | None:
        """The explained layer's name (several joined by commas); None until found."""
        return None if self._layers is None else ",".join(self._layers)

    def __enter__(self) -> Explainer:
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(preserved(self.model))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def __call__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        top_k: int | None = None,
        threshold: float | None = None,
    ) -> Explanation:
        """Explain a batch (N, C, H, W). ``targets``: None for each predicted class, (N,) class ids
        (e.g. the true labels) or (N, k) with -1 as padding (a multi-label model's true labels);
        ``top_k=k`` explains the k highest logits of each image; ``threshold`` (multi-label) every
        class whose sigmoid probability reaches it. Every target comes from the one forward pass."""
        if not torch.is_tensor(images) or images.dim() != 4:
            raise InputError("images must be a tensor of shape (N, C, H, W)")
        if top_k is not None and targets is not None:
            raise InputError("give targets or top_k, not both")
        if threshold is not None and (targets is not None or top_k is not None):
            raise InputError("give threshold alone, without targets or top_k", "threshold")
        if threshold is not None and not 0 < threshold < 1:
            raise InputError(f"threshold must be strictly between 0 and 1, got {threshold}", "threshold")
        with torch.inference_mode(False):
            images = images.detach()
            images = images.clone() if images.is_inference() else images
            if self._layers is None:
                self._layers = (find_target_layer(self.model, images),)
            modules = [get_layer(self.model, name) for name in self._layers]
            with preserved(self.model, frozen=True):
                run = self._gradient_pass(modules, images, (targets, top_k, threshold))
                per_layer = self._maps(run, modules, images)
        maps = {
            name: layer_maps[0] if len(layer_maps) == 1 else fuse_layers(layer_maps)
            for name, layer_maps in per_layer.items()
        }
        if run.targets.dim() == 2:  # padding explains nothing
            maps = {name: m.masked_fill((run.targets < 0)[..., None, None], 0.0) for name, m in maps.items()}
        return Explanation(logits=run.logits.detach(), targets=run.targets, maps=maps, layer=self.layer)

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast)

    def _gradient_pass(self, modules: list[nn.Module], images: torch.Tensor, wanted: tuple) -> _Pass:
        """The one forward and (if any method needs it) the one gradient computation; ``wanted``
        is (targets, top_k, threshold) as :meth:`__call__` got them."""
        needs_gradients = any(name in METHODS and name not in GRADIENT_FREE for name in self.methods)
        if not self._full_autograd:
            run = self._run(modules, images, wanted, needs_gradients, from_input=False)
            if run is not None:
                return run
            warnings.warn(
                FALLBACK_WARNING.format(model=type(self.model).__name__, layer=self.layer),
                HeadOnlyFallbackWarning,
                stacklevel=3,
            )
            self._full_autograd = True
        run = self._run(modules, images, wanted, needs_gradients, from_input=True)
        if run is None:
            raise InputError(
                f"the logits do not depend on layer {self.layer} through autograd; "
                "choose a layer on the path to the output (does the model switch autograd off?)"
            )
        return run

    def _run(
        self,
        modules: list[nn.Module],
        images: torch.Tensor,
        wanted: tuple,
        needs_gradients: bool,
        from_input: bool,
    ) -> _Pass | None:
        """One forward pass with the capture hooks, then one gradient computation per target
        column; None when the gradient does not reach every hooked tensor."""
        x = images.detach().requires_grad_(from_input and needs_gradients)
        with (
            self._capture(modules, needs_gradients, (images.shape[-2], images.shape[-1])) as (captured, grids),
            torch.set_grad_enabled(needs_gradients),
            self._autocast(images.device),
        ):
            logits = logits_of(self.model(x))
        targets = _choose_targets(logits, *wanted)
        activations = [a.detach() for a in captured]
        if not needs_gradients:
            return _Pass(logits, targets, activations, None, grids)
        if not logits.requires_grad:
            return None
        columns = _explained(targets if targets.dim() == 2 else targets[:, None])
        per_column = []
        for j in range(columns.shape[1]):
            score = logits.gather(1, columns[:, j : j + 1]).sum()
            grads = torch.autograd.grad(score, captured, retain_graph=j < columns.shape[1] - 1, allow_unused=True)
            if any(g is None for g in grads):
                return None
            per_column.append(grads)
        if targets.dim() == 1:
            gradients = list(per_column[0])
        else:
            gradients = [torch.stack([grads[i] for grads in per_column], dim=1) for i in range(len(modules))]
        return _Pass(logits, targets, activations, gradients, grids)

    @contextlib.contextmanager
    def _capture(
        self, modules: list[nn.Module], needs_gradients: bool, image_hw: tuple[int, int]
    ) -> Iterator[tuple[list[torch.Tensor], list[Grid]]]:
        """Forward hooks that keep each target layer's output as it is, and its grid over an
        ``image_hw`` input; removed on exit."""
        captured: list[torch.Tensor | None] = [None] * len(modules)
        grids: list[Grid | None] = [None] * len(modules)
        names = self._layers or ()

        def hook_for(i: int):
            def hook(_module: nn.Module, _inputs: object, output: object) -> torch.Tensor:
                if captured[i] is not None:
                    raise InputError(f"layer {names[i]!r} runs more than once per forward pass; choose another layer")
                grids[i] = grid_of(output.shape, image_hw) if torch.is_tensor(output) else None
                if grids[i] is None:
                    got = tuple(output.shape) if torch.is_tensor(output) else type(output).__name__
                    raise InputError(NOT_A_GRID.format(layer=names[i], got=got, height=image_hw[0], width=image_hw[1]))
                if output.requires_grad:  # already on the recorded path (full autograd, or after another layer)
                    activation = output
                elif needs_gradients:
                    activation = output.detach().requires_grad_(True)
                    torch.set_grad_enabled(True)  # undone when the enclosing grad-mode block exits
                else:
                    activation = output.detach()
                captured[i] = activation
                # A copy goes on, so in-place ops downstream never overwrite the kept activations.
                return activation.clone()

            return hook

        handles = [module.register_forward_hook(hook_for(i)) for i, module in enumerate(modules)]
        try:
            yield captured, grids  # type: ignore[misc]
            missing = [names[i] for i, a in enumerate(captured) if a is None]
            if missing:
                raise InputError(f"layer {missing[0]!r} did not run during the forward pass; choose another layer")
        finally:
            for handle in handles:
                handle.remove()

    def _maps(self, run: _Pass, modules: list[nn.Module], images: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """Every requested method's maps at input resolution, one per layer."""
        size = (images.shape[-2], images.shape[-1])
        batch = tuple(run.targets.shape)
        columns = _explained(run.targets if run.targets.dim() == 2 else run.targets[:, None])
        per_layer: dict[str, list[torch.Tensor]] = {name: [] for name in self.methods}
        _check_captum_layers(self._captum, self._layers or (), run.grids)
        for i, (activations, grid) in enumerate(zip(run.activations, run.grids, strict=True)):
            dtype = torch.promote_types(activations.dtype, torch.float32)
            a = grid.to_nchw(activations.to(dtype))
            g = None if run.gradients is None else grid.to_nchw(run.gradients[i].to(dtype))
            a_batched = a[:, None] if run.targets.dim() == 2 else a
            raws = {}
            for name in self.methods:
                if name in METHODS:
                    raw = METHODS[name](a_batched, g)
                    raws[name] = torch.broadcast_to(raw, batch + raw.shape[-2:])
                elif name in FORWARD_METHODS:
                    raw = FORWARD_METHODS[name](self._plain_forward, images, a, columns, self.scorecam_chunk_size)
                    raws[name] = raw if run.targets.dim() == 2 else raw[:, 0]
            if raws:
                upsampled = _upsample(torch.stack(list(raws.values()), dim=1), size).float().unbind(1)
                for name, m in zip(raws, upsampled, strict=True):
                    per_layer[name].append(m)
        for name, method in self._captum.items():
            layers = modules if method.uses_layer else modules[:1]
            for module in layers:
                per_layer[name].append(method(self.model, module, images, _explained(run.targets)).float())
        return per_layer

    def _plain_forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits without autograd and without capture hooks (Score-CAM's masked images)."""
        with torch.no_grad(), self._autocast(images.device):
            return logits_of(self.model(images))
