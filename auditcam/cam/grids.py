"""Layer outputs as grids over the image: the (N, C, h, w) view every CAM method reads.

A CNN's feature map is (N, C, h, w) already. Vision transformers keep their positions in other
layouts: Swin (torchvision ``swin_t``) runs channels-last, (N, h, w, C); ViT runs a sequence of
tokens (N, k + h*w, D) whose k leading tokens (the class token; distillation or register tokens
in other ViTs) stand for no position. :func:`grid_of` tells the layout from the output's shape
and the input's size; :meth:`Grid.to_nchw` rearranges an output, or its gradient, into
(N, C, h, w). The rearranging happens where auditcam reads the tensors: the layer itself still
hands its output downstream in its own layout.

A grid of h x w cells *fits* an H x W input when it could be the input seen at some stride s,
each side the input's side over s rounded either way: then ``|h W - w H| < H + W``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FEATURE_MAP, CHANNELS_LAST, TOKENS = "feature map", "channels-last", "tokens"
LAYOUTS = {
    FEATURE_MAP: "(N, C, H, W)",
    CHANNELS_LAST: "(N, H, W, C)",
    TOKENS: "(N, [class token +] H*W, D)",
}
MAX_PREFIX_TOKENS = 8  # class, distillation and register tokens (DeiT: 2; ViT with 4 registers: 5)
NOT_A_GRID = (
    "layer {layer!r} outputs {got}, which is no feature map (N, C, H, W), channels-last map (N, H, W, C) "
    "or token sequence (N, [class token +] H*W, D) over the {height}x{width} input; choose another layer"
)


@dataclass(frozen=True)
class Grid:
    """Where a layer output's positions lie: its ``layout`` (:data:`LAYOUTS`), its ``height`` x
    ``width`` cells and, for tokens, the ``prefix`` leading tokens that are no cell (the class token)."""

    layout: str
    height: int
    width: int
    prefix: int = 0

    @property
    def cells(self) -> int:
        """Number of positions, h * w."""
        return self.height * self.width

    def to_nchw(self, output: torch.Tensor) -> torch.Tensor:
        """The layer output, or its gradient, (..., <layout>) as (..., C, h, w): a view, no copy."""
        if self.layout == CHANNELS_LAST:
            return output.movedim(-1, -3)
        if self.layout == TOKENS:
            return output[..., self.prefix :, :].transpose(-1, -2).unflatten(-1, (self.height, self.width))
        return output


def fits(height: int, width: int, image_hw: tuple[int, int]) -> bool:
    """Whether ``height`` x ``width`` cells can be the ``image_hw`` input seen at some stride."""
    image_h, image_w = image_hw
    inside = 1 <= height <= image_h and 1 <= width <= image_w
    return inside and abs(height * image_w - width * image_h) < image_h + image_w


def _factor_pairs(n: int) -> set[tuple[int, int]]:
    """Every (h, w) with h * w == n."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return {pair for d in small for pair in ((d, n // d), (n // d, d))}


def token_grid(length: int, image_hw: tuple[int, int]) -> Grid | None:
    """The grid of a sequence of ``length`` tokens: of every split into k <= :data:`MAX_PREFIX_TOKENS`
    leading tokens and an h x w grid that fits the input, the one closest to the input's aspect
    ratio, fewest leading tokens on a tie (ViT-B/16 at 224 px: 197 = class token + 14 x 14)."""
    image_h, image_w = image_hw
    splits = [
        (abs(h * image_w - w * image_h), k, h, w)
        for k in range(min(MAX_PREFIX_TOKENS, length - 1) + 1)
        for h, w in _factor_pairs(length - k)
        if fits(h, w, image_hw)
    ]
    if not splits:
        return None
    _, k, h, w = min(splits)
    return Grid(TOKENS, h, w, prefix=k)


def grid_of(shape: tuple[int, ...] | torch.Size, image_hw: tuple[int, int]) -> Grid | None:
    """The grid of a layer output of ``shape`` for an ``image_hw`` input, None when it is none.

    4-D is PyTorch's (N, C, h, w) unless only dims 1 and 2 fit the input (Swin's (N, h, w, C));
    3-D is a token sequence (see :func:`token_grid`)."""
    if len(shape) == 4:
        if not fits(shape[2], shape[3], image_hw) and fits(shape[1], shape[2], image_hw):
            return Grid(CHANNELS_LAST, shape[1], shape[2])
        return Grid(FEATURE_MAP, shape[2], shape[3])
    if len(shape) == 3:
        return token_grid(shape[1], image_hw)
    return None
