"""CAM methods: small pure functions of the target layer's activations and gradients.

Every function in :data:`METHODS` takes ``activations`` A and ``gradients`` G = d(target
logit)/dA, shaped (..., C, h, w) and broadcastable against each other (the engine passes A as
(N, 1, C, h, w) and G as (N, k, C, h, w) when each image has k targets), and returns the map
(..., h, w) at the layer's resolution, before clipping at 0. Channel-weight methods share one
combine step, :func:`weighted_sum`. ``eigencam`` reads no gradient (:data:`GRADIENT_FREE`), so
a request for it alone skips the backward pass.

Score-CAM needs the model itself (one forward pass per channel mask), so it is no function of
(A, G): it lives in a second registry, :data:`FORWARD_METHODS`, of functions
``(forward, images, activations, targets, chunk_size) -> map`` that the engine calls after its
single gradient pass, with the activations that pass captured.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType

import torch
import torch.nn.functional as F

CamMethod = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ForwardMethod = Callable[..., torch.Tensor]

_SPATIAL = (-2, -1)


def weighted_sum(activations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The shared combine step, ``sum_c weights_c * A_c``: ``weights`` is (..., C, 1, 1) for one
    weight per channel (a matrix product) or (..., C, h, w) for one weight per position."""
    if weights.shape[-2:] == (1, 1):
        return torch.einsum("...c,...chw->...hw", weights[..., 0, 0], activations)
    return (weights * activations).sum(dim=-3)


def gradcam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391): the channel weight is the
    spatial mean of the gradient, ``L = sum_c mean_ij(G_cij) A_c``."""
    return weighted_sum(activations, gradients.mean(dim=_SPATIAL, keepdim=True))


def gradcam_plus_plus(activations: torch.Tensor, gradients: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al., WACV 2018, arXiv:1710.11063, eq. 19 with the
    exponential-output closed form): ``alpha_cij = G^2 / (2 G^2 + sum_ab(A_cab) G^3 + eps)``,
    ``w_c = sum_ij alpha_cij relu(G_cij)``, ``L = sum_c w_c A_c`` (eps = 1e-6 as in
    pytorch-grad-cam). Only positive gradients count, so with r = relu(G) the weight is
    ``sum_ij r^3 / (2 r^2 + sum_ab(A_cab) r^3 + eps)``: the same value, fewer passes, and no
    0/0 where a negative gradient zeroes the denominator."""
    total = activations.sum(dim=_SPATIAL, keepdim=True)
    r = gradients.clamp_min(0)
    r2 = r * r
    r3 = r2 * r
    denominator = (total * r3).add_(r2, alpha=2).add_(eps)
    return weighted_sum(activations, (r3 / denominator).sum(dim=_SPATIAL, keepdim=True))


def xgradcam(activations: torch.Tensor, gradients: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """XGrad-CAM (Fu et al., BMVC 2020, arXiv:2008.02312): activation-weighted gradient,
    ``w_c = sum_ij(A_cij G_cij) / (sum_ij(A_cij) + eps)``, ``L = sum_c w_c A_c``."""
    total = activations.sum(dim=_SPATIAL, keepdim=True)
    weights = (activations * gradients).sum(dim=_SPATIAL, keepdim=True) / (total + eps)
    return weighted_sum(activations, weights)


def hirescam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """HiResCAM (Draelos & Carin, 2020, arXiv:2011.08891): the element-wise product before the
    channel sum, ``L = sum_c G_c * A_c`` (faithful to the logit for global-average-pool heads)."""
    return weighted_sum(activations, gradients)


def layercam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al., IEEE TIP 2021, doi:10.1109/TIP.2021.3089943): positive gradients
    as per-position weights, ``L = sum_c relu(G_c) * A_c``."""
    return weighted_sum(activations, gradients.clamp_min(0))


def first_principal_component(features: torch.Tensor, squarings: int = 10) -> torch.Tensor:
    """Projection of every position's channel vector, centred over the positions, on the first
    principal axis v1 (first right-singular vector): (..., C, h, w) -> (..., h, w).

    Computed without an SVD (which costs more than the rest of the engine on a CPU and syncs a
    GPU with its host): with X the centred (positions x channels) matrix and K = X X^T its small
    (hw x hw) Gram matrix, X v1 = K u1 / sqrt(u1' K u1) for the top eigenvector u1 of K, found by
    squaring K ``squarings`` times in float64 (the other eigenvalues fade as (l_k / l_1)^1024).
    About thirty small tensor operations, no LAPACK call.

    SVD leaves the sign of v1 free. We fix it so that ``sum_c v1_c > 0``: then the map correlates
    positively with the (centred) channel-sum map, since <X v1, X 1> = s1^2 <v1, 1>, so the
    regions where the channels fire together come out positive. (pytorch-grad-cam keeps
    whatever sign LAPACK returns; the conformance tests align signs before comparing.)
    """
    positions = features.flatten(-2).transpose(-1, -2)  # (..., hw, C)
    centred = positions - positions.mean(dim=-2, keepdim=True)
    gram = (centred @ centred.transpose(-1, -2)).double()  # (..., hw, hw)
    tiny = torch.finfo(gram.dtype).tiny

    def by_trace(m: torch.Tensor) -> torch.Tensor:  # an all-zero matrix stays zero
        return m / m.diagonal(dim1=-2, dim2=-1).sum(dim=-1).add(tiny)[..., None, None]

    # Eigenvalues of a trace-1 matrix lie in [1/hw, 1] for the top one and [0, 1] for the rest:
    # five squarings in a row (powers up to 32) cannot underflow float64 before renormalising.
    power = by_trace(gram)
    for step in range(1, squarings + 1):
        power = power @ power
        if step % 5 == 0 or step == squarings:
            power = by_trace(power)  # -> u1 u1' when l_1 > l_2
    column = power.norm(dim=-2).argmax(dim=-1)  # the column of u1 u1' with the most weight
    u = power.gather(-1, column[..., None, None].expand(*power.shape[:-1], 1))
    u = u / u.norm(dim=-2, keepdim=True).add(tiny)
    ku = gram @ u
    projection = ku / (u * ku).sum(dim=-2, keepdim=True).add(tiny).sqrt()  # X v1 = s1 u1
    channel_sum = centred.sum(dim=-1, keepdim=True).double()
    sign = torch.where((u * channel_sum).sum(dim=-2, keepdim=True) < 0, -1.0, 1.0)
    return (projection * sign)[..., 0].to(features.dtype).unflatten(-1, features.shape[-2:])


def eigencam(activations: torch.Tensor, gradients: torch.Tensor | None = None) -> torch.Tensor:
    """Eigen-CAM (Muhammad & Yeasin, IJCNN 2020, arXiv:2008.00299): the activations' first
    principal component, ``L = (A - mean_ij A) v1`` (centred as pytorch-grad-cam does);
    class-agnostic, reads no gradient."""
    return first_principal_component(activations)


def eigengradcam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Eigen-Grad-CAM (pytorch-grad-cam's class-discriminative variant of Eigen-CAM): the first
    principal component of the element-wise product, ``L = (G*A - mean_ij G*A) v1``."""
    return first_principal_component(gradients * activations)


def scorecam(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    activations: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int = 32,
    align_corners: bool = False,
) -> torch.Tensor:
    """Score-CAM (Wang et al., CVPR-W 2020, arXiv:1910.01279): each channel is upsampled to the
    input size and min-max normalised into a mask M_c; the channel weight is the softmax over
    channels of the target logit of the masked image, ``w_c = softmax_c(y_t(X * M_c))``,
    ``L = sum_c w_c A_c``.

    ``images`` (N, 3, H, W), ``activations`` (N, C, h, w), ``targets`` (N, k) -> (N, k, h, w).
    It costs N*C forward passes, run ``chunk_size`` masked images at a time: that bounds the
    memory. Softmax over raw logits follows pytorch-grad-cam (the baseline score of the paper
    cancels under the softmax). Masks are upsampled like our maps (bilinear,
    ``align_corners=False``); pytorch-grad-cam uses ``align_corners=True``.
    """
    n, c = activations.shape[:2]
    flat = activations.flatten(0, 1)[:, None]
    scores = []
    for start in range(0, n * c, chunk_size):
        stop = min(start + chunk_size, n * c)
        masks = F.interpolate(flat[start:stop], size=images.shape[-2:], mode="bilinear", align_corners=align_corners)
        low, high = masks.amin(dim=_SPATIAL, keepdim=True), masks.amax(dim=_SPATIAL, keepdim=True)
        masks = (masks - low) / (high - low + 1e-8)
        owners = torch.arange(start, stop, device=images.device) // c
        logits = forward(images[owners] * masks.to(images.dtype))
        scores.append(logits.gather(1, targets[owners]).to(activations.dtype))
    weights = torch.cat(scores).unflatten(0, (n, c)).softmax(dim=1)  # (N, C, k)
    return torch.einsum("nck,nchw->nkhw", weights, activations)


METHODS: MappingProxyType[str, CamMethod] = MappingProxyType(
    {
        "gradcam": gradcam,
        "gradcam++": gradcam_plus_plus,
        "xgradcam": xgradcam,
        "hirescam": hirescam,
        "layercam": layercam,
        "eigencam": eigencam,
        "eigengradcam": eigengradcam,
    }
)
"""Methods computed from one forward and one gradient pass: name -> f(activations, gradients)."""

GRADIENT_FREE = frozenset({"eigencam"})
"""Methods of :data:`METHODS` that ignore the gradients."""

FORWARD_METHODS: MappingProxyType[str, ForwardMethod] = MappingProxyType({"scorecam": scorecam})
"""Methods that run the model on perturbed inputs: name -> f(forward, images, activations, targets, chunk_size)."""

METHOD_NAMES: tuple[str, ...] = (*METHODS, *FORWARD_METHODS)
"""Every built-in method name, in the order error messages list them."""
