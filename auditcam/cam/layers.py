"""Find the layer whose feature maps Grad-CAM explains, and leave the user's model as found.

A feature map is any layer output :func:`~auditcam.cam.grids.grid_of` can lay over the image:
a CNN's (N, C, h, w), Swin's channels-last (N, h, w, C), a ViT's token sequence.

Every hook auditcam places lives inside :func:`preserved`, which removes it and restores each
module's ``training`` flag and each parameter's ``requires_grad`` on the way out, exception
or not. Gradients are never accumulated into ``.grad``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from torchvision.ops.misc import Permute

from auditcam.cam.grids import TOKENS, grid_of
from auditcam.errors import InputError

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


def model_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The (N, classes) logits of ``model(images)``: a tensor, or an object with ``.logits``."""
    output = model(images)
    logits = getattr(output, "logits", output)
    if not torch.is_tensor(logits) or logits.dim() != 2:
        shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
        raise InputError(f"the model returned {shape}; auditcam needs logits of shape (N, classes)")
    return logits


@dataclass(frozen=True)
class LayerTrace:
    """One forward pass: ``outputs``, ``(name, output shape)`` of every submodule whose output is a
    tensor in the order the modules finish (a container finishes after its children), and, for
    each attention module in the order they start, how many of those outputs had finished then."""

    outputs: list[tuple[str, tuple[int, ...]]]
    attention_starts: list[int]


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

    with preserved(model) as handles:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(recorder(name)))
            if _is_attention(module):
                handles.append(module.register_forward_pre_hook(attention_start))
        with torch.no_grad():
            model(example)
    return trace


def find_target_layer(model: nn.Module, example: torch.Tensor) -> str:
    """Name of the layer explained by default: the last feature map with more than one cell before
    global pooling (``layer4`` of a ResNet, ``features`` of DenseNet and Swin); when that is a token
    sequence with a class token, which the head reads alone, the input of the last attention, the
    last layer whose patch tokens reach the logits (``encoder.layers.encoder_layer_11.ln_1`` of ViT-B)."""
    modules = dict(model.named_modules())
    trace = trace_layers(model, example[:1])
    size = (example.shape[-2], example.shape[-1])
    maps = []  # (position in the trace, name, grid)
    for position, (name, shape) in enumerate(trace.outputs):
        grid = grid_of(shape, size)
        if grid is not None and grid.cells > 1 and not isinstance(modules[name], _NOT_FEATURE_LAYERS):
            maps.append((position, name, grid))
    trunk = [(name, grid) for _, name, grid in maps if not isinstance(modules[name], _NORMALISATIONS)]
    if not trunk:
        raise InputError(NO_FEATURE_MAP, "layer")
    name, grid = trunk[-1]
    if grid.layout == TOKENS and grid.prefix and trace.attention_starts:
        start = trace.attention_starts[-1]
        name = next((n for p, n, g in reversed(maps) if p < start and g.layout == TOKENS), name)
    return name
