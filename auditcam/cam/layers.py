"""Find the layer whose feature maps Grad-CAM explains, and leave the user's model as found.

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

from auditcam.errors import InputError

# Modules that resample or regularise a feature map on its way to the classifier: their
# output is not a feature map of the trunk (VGG's AdaptiveAvgPool2d(7) keeps 7x7, say).
_NOT_FEATURE_LAYERS = (
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
    nn.Flatten,
)


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
    candidates = [n for n, m in model.named_modules() if n and isinstance(m, nn.Conv2d | nn.Sequential)]
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


def layer_output_shapes(model: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """Run one forward pass and list ``(name, output shape)`` for every submodule whose output is
    a tensor, in the order the modules finish (a container finishes after its children)."""
    order: list[tuple[str, tuple[int, ...]]] = []

    def recorder(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if torch.is_tensor(output):
                order.append((name, tuple(output.shape)))

        return hook

    with preserved(model) as handles:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(recorder(name)))
        with torch.no_grad():
            model(example)
    return order


def find_target_layer(model: nn.Module, example: torch.Tensor) -> str:
    """Name of the last module to produce a 4-D feature map with more than one spatial cell
    before global pooling (``layer4`` for torchvision ResNets, ``features`` for DenseNet)."""
    modules = dict(model.named_modules())
    best: str | None = None
    for name, shape in layer_output_shapes(model, example[:1]):
        if isinstance(modules[name], _NOT_FEATURE_LAYERS):
            continue
        if len(shape) == 4 and shape[2] * shape[3] > 1:
            best = name
    if best is None:
        raise InputError("found no 4-D feature map (N, C, H, W) in the model; pass the layer to explain with --layer")
    return best
