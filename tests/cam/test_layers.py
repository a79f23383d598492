"""find_target_layer: the last feature map before global pooling."""

from __future__ import annotations

import pytest
import torch
import torchvision

from auditcam.cam import find_target_layer
from auditcam.errors import InputError


@pytest.mark.parametrize(
    ("name", "expected"),
    [("resnet18", "layer4"), ("vgg11", "features"), ("densenet121", "features"), ("mobilenet_v3_small", "features")],
)
def test_finds_the_final_feature_map(name, expected, gen):
    model = torchvision.models.get_model(name, num_classes=5).eval()
    assert find_target_layer(model, torch.randn(1, 3, 64, 64, generator=gen)) == expected


def test_a_model_without_feature_maps_is_an_input_error(gen):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    with pytest.raises(InputError, match="found no 4-D feature map"):
        find_target_layer(model, torch.randn(1, 3, 2, 2, generator=gen))


def test_finding_the_layer_leaves_no_hooks_and_keeps_training_mode(tiny_net, gen):
    tiny_net.train()
    assert find_target_layer(tiny_net, torch.randn(1, 3, 16, 16, generator=gen)) == "act"
    assert tiny_net.training
    assert all(not m._forward_hooks for m in tiny_net.modules())
