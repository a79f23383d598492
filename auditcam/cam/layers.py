"""Find the layer whose feature maps Grad-CAM explains, and leave the user's model as found.

A feature map is any layer output :func:`~auditcam.cam.grids.grid_of` can lay over the image:
a CNN's (N, C, h, w), Swin's channels-last (N, h, w, C), a ViT's token sequence.

Every hook auditcam places lives inside :func:`preserved`, which removes it and restores each
module's ``training`` flag and each parameter's ``requires_grad`` on the way out, exception
or not. Gradients are never accumulated into ``.grad``.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from torchvision.ops.misc import Permute

from auditcam.cam.grids import TOKENS, grid_of
from auditcam.errors import InputError
from auditcam.models import logits_of

NO_FEATURE_MAP = (
    "found no feature map (N, C, H, W), channels-last map or token sequence in the model; "
    "pass the layer to explain with `layer`"
)

# Modules that resample, regularise or rearrange a feature map on its way to the classifier:
# their output is not a feature map of the trunk (VGG's AdaptiveAvgPool2d(7) keeps 7x7, Swin's
# Permute turns it channels-first, say).
_NOT_FEATURE_LAYERS = (
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
    nn.Flatten,
    Permute,
)
# A per-position normalisation after the trunk (Swin's `norm`, ViT's `encoder.ln`) rescales the
# trunk's output; the trunk's own output is the final feature map.
_NORMALISATIONS = (nn.LayerNorm,)


@dataclass
class _SavedState:
    training: dict[nn.Module, bool] = field(default_factory=dict)
    requires_grad: dict[nn.Parameter, bool] = field(default_factory=dict)


@contextlib.contextmanager
def preserved(
    model: nn.Module, handles: list[RemovableHandle] | None = None, *, frozen: bool = False
) -> Iterator[list[RemovableHandle]]:
    """Switch ``model`` to eval mode for the block (and, with ``frozen``, every parameter to
    ``requires_grad=False``, so no parameter gradient can exist); on exit remove every handle
    appended to the yielded list and restore training flags and ``requires_grad`` as they were."""
    saved = _SavedState(
        training={m: m.training for m in model.modules()},
        requires_grad={p: p.requires_grad for p in model.parameters()},
    )
    owned = [] if handles is None else handles
    try:
        model.eval()
        if frozen:
            for param in saved.requires_grad:
                param.requires_grad_(False)
        yield owned
    finally:
        for handle in owned:
            handle.remove()
        owned.clear()
        for module, flag in saved.training.items():
            module.training = flag
        for param, flag in saved.requires_grad.items():
            param.requires_grad_(flag)


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; an unknown name is an error listing candidates."""
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    candidates = [n for n, m in model.named_modules() if n and isinstance(m, nn.Conv2d | nn.Sequential | nn.LayerNorm)]
    tail = ", ".join(candidates[-12:])
    raise InputError(f"layer {name!r} is not a module of the model; candidates (last ones): {tail}")


@dataclass(frozen=True)
class LayerTrace:
    """One forward pass: ``outputs``, ``(name, output shape)`` of every submodule whose output is a
    tensor in the order the modules finish (a container finishes after its children); for each
    attention module in the order they start, how many of those outputs had finished then; and
    ``starts``, the same count for every submodule when it first starts."""

    outputs: list[tuple[str, tuple[int, ...]]]
    attention_starts: list[int]
    starts: dict[str, int] = field(default_factory=dict)


def _is_attention(module: nn.Module) -> bool:
    """``nn.MultiheadAttention`` (torchvision's ViT), or a class named ``...Attention`` (timm's ViT)."""
    return isinstance(module, nn.MultiheadAttention) or type(module).__name__.endswith("Attention")


def trace_layers(model: nn.Module, example: torch.Tensor) -> LayerTrace:
    """Run one forward pass of ``example`` and record the :class:`LayerTrace`."""
    trace = LayerTrace(outputs=[], attention_starts=[])

    def recorder(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if torch.is_tensor(output):
                trace.outputs.append((name, tuple(output.shape)))

        return hook

    def attention_start(_module: nn.Module, _inputs: object) -> None:
        trace.attention_starts.append(len(trace.outputs))

    def starter(name: str):
        def hook(_module: nn.Module, _inputs: object) -> None:
            trace.starts.setdefault(name, len(trace.outputs))

        return hook

    with preserved(model) as handles:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(recorder(name)))
                handles.append(module.register_forward_pre_hook(starter(name)))
            if _is_attention(module):
                handles.append(module.register_forward_pre_hook(attention_start))
        with torch.no_grad():
            model(example)
    return trace


def reaching_layers(model: nn.Module, example: torch.Tensor, names: set[str]) -> set[str]:
    """Of the layers ``names``, those whose output's positions (cells of the grid; a ViT's patch
    tokens, not its class token) get a non-zero gradient from the predicted class's logit: one
    forward and backward pass of a seeded random input shaped like ``example``. A layer outside
    this set makes all-zero maps by construction (the head cannot see its positions)."""
    kept: dict[str, torch.Tensor] = {}
    size = (example.shape[-2], example.shape[-1])
    modules = dict(model.named_modules())

    def keeper(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> object:
            if not torch.is_tensor(output) or name in kept:
                return None
            kept[name] = output
            return output.clone()  # in-place ops downstream leave the kept output alone

        return hook

    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(example[:1].shape, generator=generator).to(example)
    with preserved(model) as handles, torch.enable_grad():
        handles.extend(modules[name].register_forward_hook(keeper(name)) for name in names)
        logits = logits_of(model(noise.requires_grad_(True)))
        wanted = [name for name, output in kept.items() if output.requires_grad]
        score = logits[0, int(logits[0].argmax())]
        grads = torch.autograd.grad(score, [kept[n] for n in wanted], allow_unused=True) if wanted else []
    reached = set()
    for name, grad in zip(wanted, grads, strict=True):
        grid = grid_of(grad.shape, size) if grad is not None else None
        if grid is not None and bool(grid.to_nchw(grad).abs().amax() > 0):
            reached.add(name)
    return reached


def find_target_layer(model: nn.Module, example: torch.Tensor) -> str:
    """Name of the layer explained by default: the last feature map with more than one cell before
    global pooling (``layer4`` of a ResNet, ``features`` of DenseNet and Swin); when that is a token
    sequence with a class token, which the head reads alone, the input of the last attention, the
    last layer whose patch tokens reach the logits (``encoder.layers.encoder_layer_11.ln_1`` of ViT-B).

    The choice is then checked by data flow (:func:`reaching_layers`; skipped on the meta device):
    when the head cannot see the chosen layer's positions (an attention block the name rule does not
    know, as in ConViT and XCiT), the default is the last layer whose positions reach the logits, or,
    when that layer sits inside a module whose output the head cannot see at those positions (a
    class-attention module), that module's input."""
    modules = dict(model.named_modules())
    trace = trace_layers(model, example[:1])
    size = (example.shape[-2], example.shape[-1])
    runs = Counter(name for name, _ in trace.outputs)  # a module run twice (CoaT's shared crpe) has no one map
    maps = []  # (position in the trace, name, grid)
    for position, (name, shape) in enumerate(trace.outputs):
        grid = grid_of(shape, size)
        if (
            grid is not None
            and grid.cells > 1
            and runs[name] == 1
            and not isinstance(modules[name], _NOT_FEATURE_LAYERS)
        ):
            maps.append((position, name, grid))
    trunk = [(name, grid) for _, name, grid in maps if not isinstance(modules[name], _NORMALISATIONS)]
    if not trunk:
        raise InputError(NO_FEATURE_MAP, "layer")
    name, grid = trunk[-1]
    if grid.layout == TOKENS and grid.prefix and trace.attention_starts:
        start = trace.attention_starts[-1]
        name = next((n for p, n, g in reversed(maps) if p < start and g.layout == TOKENS), name)
    if example.device.type == "meta":
        return name
    reached = reaching_layers(model, example, {n for _, n, _ in maps} | {name})
    if name in reached:
        return name
    seen = [(position, n) for position, n, _ in maps if n in reached]
    if not seen:
        return name
    last = seen[-1][1]
    parent = last.rpartition(".")[0]
    if parent and parent not in reached and parent in trace.starts:
        inputs = [n for position, n in seen if position < trace.starts[parent]]
        if inputs:
            return inputs[-1]
    return last
