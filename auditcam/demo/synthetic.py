"""A synthetic shortcut dataset: coloured shapes (the subject) on striped or checkered
backgrounds, where the background can be made to predict the class.

Each image has a ``site`` group attribute. Site ``A`` photographs show the background texture
in high contrast, site ``B`` in low contrast; in a *shortcut* training split the texture agrees
with the class far more often at site A than at site B. A model trained on it learns to read
the background where it can, which the audit should reveal, and unequally across sites.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CLASSES = ("circle", "square", "cross")
TEXTURES = ("horizontal stripes", "vertical stripes", "checkerboard")
SITES = ("A", "B")
SITE_CONTRAST = {"A": 0.55, "B": 0.12}


@dataclass(frozen=True)
class Split:
    """Images uint8 (N, 3, S, S), masks bool (N, S, S), labels (N,), texture ids (N,), sites."""

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    textures: torch.Tensor
    sites: tuple[str, ...]


def _shape_mask(kind: int, cy: float, cx: float, r: float, yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    dy, dx = yy - cy, xx - cx
    if kind == 0:  # circle
        return dy * dy + dx * dx <= r * r
    if kind == 1:  # square of the same area as the circle
        half = r * math.sqrt(math.pi) / 2
        return (dy.abs() <= half) & (dx.abs() <= half)
    arm = r * 0.38  # cross
    return ((dy.abs() <= arm) & (dx.abs() <= r)) | ((dx.abs() <= arm) & (dy.abs() <= r))


def _texture(kind: int, period: float, phase: float, yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    """A {0, 1} pattern: horizontal stripes, vertical stripes or a checkerboard."""
    if kind == 0:
        return ((yy + phase) / period).floor().remainder(2)
    if kind == 1:
        return ((xx + phase) / period).floor().remainder(2)
    return (((yy + phase) / period).floor() + ((xx + phase) / period).floor()).remainder(2)


def _hue_to_rgb(hue: float) -> torch.Tensor:
    """A saturated colour of the given hue in [0, 1)."""
    k = torch.tensor([5.0, 3.0, 1.0])
    channel = (k + hue * 6.0).remainder(6.0)
    return 0.95 - 0.8 * torch.clamp(torch.minimum(channel, 4.0 - channel), 0.0, 1.0)


def make_split(
    n: int,
    *,
    agreement: dict[str, float],
    size: int = 64,
    seed: int = 0,
    centred: bool = False,
) -> Split:
    """Generate ``n`` samples, half per site. ``agreement[site]`` is the probability that the
    background texture equals the class; otherwise the texture is drawn uniformly at random.
    ``centred`` puts every subject in the middle of its image (as centred crops do)."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    masks = torch.empty(n, size, size, dtype=torch.bool)
    labels = torch.randint(len(CLASSES), (n,), generator=gen)
    textures = torch.empty(n, dtype=torch.long)
    sites = tuple(SITES[i % 2] for i in range(n))

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=gen))

    for i in range(n):
        label, site = int(labels[i]), sites[i]
        if float(torch.rand((), generator=gen)) < agreement[site]:
            texture = label
        else:
            texture = int(torch.randint(len(TEXTURES), (), generator=gen))
        textures[i] = texture
        pattern = _texture(texture, uniform(4.0, 7.0), uniform(0.0, 8.0), yy, xx)
        grey = uniform(0.35, 0.65)
        tint = (torch.rand(3, generator=gen) - 0.5) * 0.1
        contrast = SITE_CONTRAST[site]
        background = (grey + tint)[:, None, None] + contrast * (pattern - 0.5)
        r = uniform(9.0, 12.0)
        cy, cx = uniform(r + 2, size - r - 2), uniform(r + 2, size - r - 2)
        if centred:
            cy, cx = size / 2 + uniform(-1.5, 1.5), size / 2 + uniform(-1.5, 1.5)
        mask = _shape_mask(label, cy, cx, r, yy, xx)
        colour = _hue_to_rgb(uniform(0.0, 1.0))
        image = torch.where(mask, colour[:, None, None], background)
        image = image + 0.03 * torch.randn(3, size, size, generator=gen)
        images[i] = (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
        masks[i] = mask
    return Split(images=images, masks=masks, labels=labels, textures=textures, sites=sites)


TAG_SIZE = 6  # pixels of the square tag, at TAG_OFFSET from the top-left corner
TAG_OFFSET = 2
TAG_COLOUR = (255, 0, 255)


def add_tag(split: Split, tagged: torch.Tensor) -> Split:
    """The split with a small fixed-position magenta tag stamped on the images where ``tagged``
    (like the source tag of the PASCAL VOC horses, a shortcut found without masks)."""
    images = split.images.clone()
    end = TAG_OFFSET + TAG_SIZE
    images[tagged, :, TAG_OFFSET:end, TAG_OFFSET:end] = torch.tensor(TAG_COLOUR, dtype=torch.uint8)[:, None, None]
    return Split(images=images, masks=split.masks, labels=split.labels, textures=split.textures, sites=split.sites)


def tag_region(size: int = 64) -> tuple[float, float, float, float]:
    """The tag's normalised box ``[x0, y0, x1, y1]``."""
    return (TAG_OFFSET / size, TAG_OFFSET / size, (TAG_OFFSET + TAG_SIZE) / size, (TAG_OFFSET + TAG_SIZE) / size)
