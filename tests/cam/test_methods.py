"""CAM methods as pure functions: hand-computed maps, and Score-CAM against a brute-force loop."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from auditcam.cam.methods import (
    FORWARD_METHODS,
    GRADIENT_FREE,
    METHOD_NAMES,
    METHODS,
    eigencam,
    eigengradcam,
    scorecam,
)


@pytest.fixture
def activations() -> torch.Tensor:
    """One image, 2 channels, a 1x2 map: A_0 = [1, 3], A_1 = [2, 0]."""
    return torch.tensor([[[[1.0, 3.0]], [[2.0, 0.0]]]])


@pytest.fixture
def gradients() -> torch.Tensor:
    """G_0 = [1, -1], G_1 = [0.5, 2]."""
    return torch.tensor([[[[1.0, -1.0]], [[0.5, 2.0]]]])


# Worked by hand from each docstring's formula:
#   gradcam   w = mean G = (0, 1.25)                      -> 1.25 * A_1                 = [2.5, 0]
#   hirescam  sum_c G_c * A_c                            -> [1 + 1, -3 + 0]            = [2, -3]
#   layercam  sum_c relu(G_c) * A_c                      -> [1 + 1, 0 + 0]             = [2, 0]
#   xgradcam  w_0 = (1 - 3) / 4, w_1 = (1 + 0) / 2       -> -0.5 A_0 + 0.5 A_1         = [0.5, -1.5]
#   gradcam++ sum A = (4, 2); alpha = g^2 / (2 g^2 + S g^3):
#             channel 0: g = 1 -> 1/6 (g = -1 is cut by relu)       w_0 = 1/6
#             channel 1: g = .5 -> .25/.75 = 1/3, g = 2 -> 4/24 = 1/6 w_1 = 1/3 * .5 + 1/6 * 2 = 1/2
#             -> A_0 / 6 + A_1 / 2 = [7/6, 1/2]
HAND_COMPUTED = {
    "gradcam": [2.5, 0.0],
    "hirescam": [2.0, -3.0],
    "layercam": [2.0, 0.0],
    "xgradcam": [0.5, -1.5],
    "gradcam++": [7 / 6, 0.5],
}


@pytest.mark.parametrize("name", sorted(HAND_COMPUTED))
def test_channel_and_pixel_weight_methods_match_hand_computed_maps(name, activations, gradients):
    got = METHODS[name](activations, gradients)
    torch.testing.assert_close(got, torch.tensor([[HAND_COMPUTED[name]]]), atol=1e-5, rtol=0)


def test_methods_broadcast_over_several_targets_per_image(activations, gradients):
    # A as (N, 1, C, h, w) against G as (N, k, C, h, w): one map per target (eigencam's single
    # map broadcasts), the same as one target at a time.
    stacked = torch.stack([gradients, -gradients, 2 * gradients], dim=1)
    for name, method in METHODS.items():
        got = torch.broadcast_to(method(activations[:, None], stacked), (1, 3, 1, 2))
        for j in range(3):
            torch.testing.assert_close(got[:, j], method(activations, stacked[:, j]), msg=name)


def _rank_one(direction: tuple[float, float]) -> torch.Tensor:
    """3 positions along a line: channel vectors 0, d, 2d -> centred t * d with t = (-1, 0, 1)."""
    d = torch.tensor(direction)
    positions = torch.stack([0 * d, d, 2 * d])  # (hw, C)
    return positions.T.reshape(1, 2, 1, 3)


def test_eigencam_is_the_centred_projection_on_the_first_axis():
    # Centred positions are t * d, so v1 = d / |d| and the projection is t * |d| = (-sqrt5, 0, sqrt5).
    got = eigencam(_rank_one((2.0, 1.0)))
    root5 = math.sqrt(5)
    torch.testing.assert_close(got, torch.tensor([[[-root5, 0.0, root5]]]))


def test_eigencam_sign_makes_the_first_axis_sum_positive():
    # d = (2, -3) sums negative, so v1 = -d / |d| and the projection flips to -t * |d|.
    got = eigencam(_rank_one((2.0, -3.0)))
    root13 = math.sqrt(13)
    torch.testing.assert_close(got, torch.tensor([[[root13, 0.0, -root13]]]))


def test_eigengradcam_projects_the_gradient_weighted_activations():
    a = _rank_one((2.0, 1.0))
    g = torch.tensor([3.0, 0.5]).reshape(1, 2, 1, 1).expand_as(a)
    # G * A has channel vectors t * (6, 0.5): the projection is t * |(6, 0.5)|.
    expected = torch.tensor([-1.0, 0.0, 1.0]) * math.hypot(6.0, 0.5)
    torch.testing.assert_close(eigengradcam(a, g), expected.reshape(1, 1, 3))


def test_registries_name_every_method_once():
    assert set(METHODS) | set(FORWARD_METHODS) == set(METHOD_NAMES)
    assert not set(METHODS) & set(FORWARD_METHODS)
    assert len(METHOD_NAMES) == 8
    assert set(METHODS) >= GRADIENT_FREE


class _Scorer(nn.Module):
    """Hand-set tiny classifier: logits = W @ (per-channel spatial mean of the image) + b."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        with torch.no_grad():
            self.fc.weight.copy_(torch.arange(12.0).reshape(4, 3).sin())
            self.fc.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


def _scorecam_by_hand(model, images, activations, targets):
    """The definition, one image and one channel at a time."""
    maps = torch.zeros(images.shape[0], targets.shape[1], *activations.shape[-2:])
    for i in range(images.shape[0]):
        scores = torch.zeros(activations.shape[1], targets.shape[1])
        for c in range(activations.shape[1]):
            mask = F.interpolate(activations[i, c][None, None], size=images.shape[-2:], mode="bilinear")[0, 0]
            mask = (mask - mask.min()) / (mask.max() - mask.min() + 1e-8)
            logits = model(images[i : i + 1] * mask)[0]
            scores[c] = logits[targets[i]]
        weights = scores.softmax(dim=0)
        for j in range(targets.shape[1]):
            maps[i, j] = (weights[:, j, None, None] * activations[i]).sum(0)
    return maps


@pytest.mark.parametrize("chunk_size", [1, 5, 1000])
def test_scorecam_matches_the_definition_for_any_chunk_size(gen, chunk_size):
    model = _Scorer()
    images = torch.randn(2, 3, 12, 12, generator=gen)
    activations = torch.rand(2, 7, 3, 3, generator=gen)
    targets = torch.tensor([[0, 3], [2, 1]])
    with torch.no_grad():
        expected = _scorecam_by_hand(model, images, activations, targets)
        got = scorecam(model, images, activations, targets, chunk_size=chunk_size)
    assert got.shape == (2, 2, 3, 3)
    torch.testing.assert_close(got, expected)
