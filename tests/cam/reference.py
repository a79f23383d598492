"""Independent references shared by the CAM tests."""

from __future__ import annotations

import torch
from torch import nn


def full_autograd(
    model: nn.Module, layer: nn.Module, images: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, G) the textbook way: record the whole graph from the input, keep the layer's output
    (a clone goes on, so in-place ops downstream leave it alone), differentiate w.r.t. it."""
    kept = []

    def hook(_module, _inputs, output):
        kept.append(output)
        return output.clone()

    handle = layer.register_forward_hook(hook)
    try:
        logits = model(images.clone().requires_grad_(True))
    finally:
        handle.remove()
    (gradients,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), kept[0])
    return kept[0].detach(), gradients
