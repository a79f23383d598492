"""The Explainer: one forward pass and one gradient computation for all requested methods.

The trunk up to the target layer runs without autograd; a forward hook on the target layer
detaches its output, marks it as the one tensor that needs a gradient and switches autograd on
for the rest of the pass, so only the head is differentiated and no parameter gradient is
ever computed. Maps are clipped at 0 and upsampled to the input resolution (bilinear,
``align_corners=False``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

import torch
import torch.nn.functional as F
from torch import nn

from auditcam.cam.layers import find_target_layer, get_layer, preserved
from auditcam.cam.methods import METHODS
from auditcam.errors import InputError

UPSAMPLING = "bilinear, align_corners=False"


@dataclass(frozen=True)
class Explanation:
    """Result of explaining one batch.

    ``maps[method]`` is float32 (N, H, W) at input resolution, >= 0 and un-normalised (the raw
    values are what scoring uses); :meth:`normalised` gives the per-sample [0, 1] display view.
    """

    logits: torch.Tensor
    targets: torch.Tensor
    maps: Mapping[str, torch.Tensor]
    layer: str

    def normalised(self, method: str) -> torch.Tensor:
        """``maps[method]`` divided by each sample's maximum (all-zero maps stay zero)."""
        maps = self.maps[method]
        peak = maps.flatten(1).amax(dim=1).clamp_min(torch.finfo(maps.dtype).tiny)
        return maps / peak[:, None, None]


def _logits_of(output: object) -> torch.Tensor:
    """The (N, classes) logits of a model output: a tensor, or an object with ``.logits``."""
    logits = getattr(output, "logits", output)
    if not torch.is_tensor(logits) or logits.dim() != 2:
        shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
        raise InputError(f"the model returned {shape}; auditcam needs logits of shape (N, classes)")
    return logits


def _check_targets(targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    targets = torch.as_tensor(targets, device=logits.device).long().reshape(-1)
    if targets.numel() != logits.shape[0]:
        raise InputError(f"got {targets.numel()} targets for a batch of {logits.shape[0]} images; pass one per image")
    return targets


class Explainer:
    """Grad-CAM-family explanations for a classifier.

    ``layer=None`` finds the last 4-D feature map before global pooling on the first call.
    ``autocast``: a dtype (``torch.bfloat16``, ``torch.float16``) to run the model under
    ``torch.autocast``; maps are computed in float32 regardless.
    Use as a context manager to keep the model in eval mode across calls; every call leaves
    the model's training flags, ``requires_grad`` and hooks exactly as it found them.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        methods: Sequence[str] = ("gradcam",),
        *,
        autocast: torch.dtype | None = None,
    ) -> None:
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise InputError(
                f"unknown CAM method {', '.join(map(repr, unknown)) or '(none given)'}; "
                f"choose from {', '.join(METHODS)}"
            )
        self.model = model
        self.layer = layer
        self.methods = tuple(methods)
        self.autocast = autocast
        self._stack: contextlib.ExitStack | None = None
        if layer is not None:
            get_layer(model, layer)

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

    def __call__(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> Explanation:
        """Explain a batch (N, 3, H, W); ``targets=None`` explains each predicted class."""
        if not torch.is_tensor(images) or images.dim() != 4:
            raise InputError("images must be a tensor of shape (N, C, H, W)")
        with torch.inference_mode(False):
            images = images.clone() if images.is_inference() else images
            if self.layer is None:
                self.layer = find_target_layer(self.model, images)
            layer = get_layer(self.model, self.layer)
            autocast = (
                contextlib.nullcontext()
                if self.autocast is None
                else torch.autocast(device_type=images.device.type, dtype=self.autocast)
            )
            with preserved(self.model) as handles:
                with autocast:
                    logits, activations = self._forward(layer, images, handles)
                targets = logits.argmax(dim=1) if targets is None else _check_targets(targets, logits)
                (gradients,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), activations)
            activations, gradients = activations.detach().float(), gradients.float()
            maps = {
                name: self._to_input_size(METHODS[name](activations, gradients), images.shape[-2:])
                for name in self.methods
            }
        return Explanation(logits=logits.detach(), targets=targets, maps=maps, layer=self.layer)

    def _forward(self, layer: nn.Module, images: torch.Tensor, handles: list) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the model with autograd only after ``layer``; return logits and the layer output."""
        captured: list[torch.Tensor] = []
        name = self.layer

        def hook(_module: nn.Module, _inputs: object, output: object) -> torch.Tensor:
            if captured:
                raise InputError(f"layer {name!r} runs more than once per forward pass; choose another layer")
            if not torch.is_tensor(output) or output.dim() != 4:
                got = tuple(output.shape) if torch.is_tensor(output) else type(output).__name__
                raise InputError(f"layer {name!r} outputs {got}, not a feature map (N, C, H, W); choose another layer")
            activations = output.detach().requires_grad_(True)
            captured.append(activations)
            torch.set_grad_enabled(True)  # undone when the surrounding no_grad block exits
            # A non-leaf copy goes on, so in-place ops after the layer (DenseNet's ReLU) stay legal
            # and never overwrite the activations kept for the maps.
            return activations.clone()

        handles.append(layer.register_forward_hook(hook))
        with torch.no_grad():
            logits = _logits_of(self.model(images))
        if not captured:
            raise InputError(f"layer {name!r} did not run during the forward pass; choose another layer")
        if not logits.requires_grad:
            raise InputError(f"the logits do not depend on layer {name!r}; choose a layer on the path to the output")
        return logits, captured[0]

    @staticmethod
    def _to_input_size(raw: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """Clip at 0 at the layer's resolution, then upsample bilinearly to the input size."""
        upsampled = F.interpolate(raw.clamp_min(0)[:, None], size=tuple(size), mode="bilinear", align_corners=False)
        return upsampled[:, 0].float()
