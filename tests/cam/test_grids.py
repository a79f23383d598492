"""Layer outputs laid over the image: the layout each shape gets, and the (N, C, h, w) it becomes."""

from __future__ import annotations

import pytest
import torch

from auditcam.cam.grids import CHANNELS_LAST, FEATURE_MAP, TOKENS, Grid, fits, grid_of


def test_tokens_become_a_grid_without_the_class_token():
    # One image, a class token (100, 101) then 2 x 3 patch tokens of width 2 in row-major order:
    # token t = 1 + 3i + j holds (t, 10 t).
    tokens = torch.tensor([[[100.0, 101.0], [1, 10], [2, 20], [3, 30], [4, 40], [5, 50], [6, 60]]])
    grid = grid_of(tokens.shape, (20, 30))
    assert grid == Grid(TOKENS, 2, 3, prefix=1)
    expected = torch.tensor([[[[1.0, 2, 3], [4, 5, 6]], [[10, 20, 30], [40, 50, 60]]]])
    assert torch.equal(grid.to_nchw(tokens), expected)


def test_channels_last_is_permuted_to_channels_first():
    # (1, h=2, w=2, C=6): position (i, j), channel c holds 100 i + 10 j + c.
    channels_last = torch.tensor([[[[100.0 * i + 10 * j + c for c in range(6)] for j in range(2)] for i in range(2)]])
    grid = grid_of(channels_last.shape, (32, 32))
    assert grid == Grid(CHANNELS_LAST, 2, 2)
    expected = torch.tensor([[[[100.0 * i + 10 * j + c for j in range(2)] for i in range(2)] for c in range(6)]])
    assert torch.equal(grid.to_nchw(channels_last), expected)


def test_a_feature_map_is_read_as_it_is(gen):
    feature_map = torch.randn(2, 5, 4, 4, generator=gen)
    grid = grid_of(feature_map.shape, (32, 32))
    assert grid == Grid(FEATURE_MAP, 4, 4)
    assert grid.to_nchw(feature_map) is feature_map


def test_leading_dimensions_such_as_one_gradient_per_target_are_kept(gen):
    gradients = torch.randn(2, 3, 17, 6, generator=gen)  # (N, k, class token + 4 x 4, D)
    grid = grid_of(gradients.shape[-3:], (32, 32))
    got = grid.to_nchw(gradients)
    assert got.shape == (2, 3, 6, 4, 4)
    for j in range(3):
        assert torch.equal(got[:, j], grid.to_nchw(gradients[:, j]))


@pytest.mark.parametrize(
    ("shape", "image_hw", "expected"),
    [
        ((1, 197, 768), (224, 224), Grid(TOKENS, 14, 14, prefix=1)),  # ViT-B/16
        ((1, 50, 768), (224, 224), Grid(TOKENS, 7, 7, prefix=1)),  # ViT-B/32
        ((1, 198, 768), (224, 224), Grid(TOKENS, 14, 14, prefix=2)),  # DeiT: class and distillation tokens
        ((1, 201, 768), (224, 224), Grid(TOKENS, 14, 14, prefix=5)),  # a class token and four registers
        ((1, 196, 768), (224, 224), Grid(TOKENS, 14, 14, prefix=0)),  # no class token
        ((1, 141, 64), (224, 160), Grid(TOKENS, 14, 10, prefix=1)),  # an image wider than high
        ((1, 25, 64), (100, 70), Grid(TOKENS, 6, 4, prefix=1)),  # sides not a multiple of the patch
        ((1, 7, 7, 768), (224, 224), Grid(CHANNELS_LAST, 7, 7)),  # Swin-T's last stage
        ((1, 768, 7, 7), (224, 224), Grid(FEATURE_MAP, 7, 7)),
        ((1, 512, 4, 3), (100, 70), Grid(FEATURE_MAP, 4, 3)),  # ResNet's layer4, rounded up
        ((1, 96, 8, 8), (8, 8), Grid(FEATURE_MAP, 8, 8)),  # both readings fit: PyTorch's layout
        ((1, 10), (32, 32), None),  # logits
        ((1, 50, 8), (4, 4), None),  # more tokens than the input has pixels
        ((1, 2, 3, 4, 5), (32, 32), None),
    ],
)
def test_the_layout_is_told_from_the_shape_and_the_input_size(shape, image_hw, expected):
    assert grid_of(shape, image_hw) == expected


@pytest.mark.parametrize(
    ("height", "width", "image_hw", "expected"),
    [
        (7, 7, (224, 224), True),
        (4, 3, (100, 70), True),  # 100/32 and 70/32 rounded up
        (3, 2, (100, 70), True),  # ... and down
        (2, 8, (32, 32), False),
        (4, 5, (32, 32), True),  # one cell off is still a rounding
        (33, 33, (32, 32), False),  # more cells than pixels
    ],
)
def test_a_grid_fits_an_input_seen_at_some_stride(height, width, image_hw, expected):
    assert fits(height, width, image_hw) is expected
