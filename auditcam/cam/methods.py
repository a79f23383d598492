"""CAM methods: pure functions of the target layer's activations and gradients.

Each method takes ``activations`` and ``gradients`` of shape (N, C, h, w) — the feature maps
of the target layer and d(target logit)/d(feature maps) — and returns a map (N, h, w) at the
layer's resolution, before clipping. :data:`METHODS` maps a method's name to its function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

CamMethod = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def weighted_sum(activations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The shared combine step: sum over channels of ``weights[c] * activations[c]``.

    ``weights`` is (N, C) for one weight per channel or (N, C, h, w) for per-pixel weights.
    """
    if weights.dim() == 2:
        weights = weights[:, :, None, None]
    return (weights * activations).sum(dim=1)


def gradcam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., ICCV 2017): channel weight = spatial mean of the gradient,
    ``L = sum_c mean_ij(dy/dA_cij) * A_c``."""
    return weighted_sum(activations, gradients.mean(dim=(2, 3)))


METHODS: dict[str, CamMethod] = {
    "gradcam": gradcam,
}
