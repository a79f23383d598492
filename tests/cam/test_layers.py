"""find_target_layer: the last feature map before global pooling."""

from __future__ import annotations

import pytest
import torch
import torchvision

from auditcam.cam import find_target_layer
from auditcam.cam.layers import get_layer
from auditcam.errors import InputError


@pytest.mark.parametrize(
    ("name", "expected", "device"),
    [
        ("resnet18", "layer4", "meta"),
        ("resnet50", "layer4", "meta"),
        ("vgg11", "features", "meta"),
        ("vgg16", "features", "meta"),
        ("densenet121", "features", "meta"),
        ("mobilenet_v3_small", "features", "meta"),
        ("mobilenet_v3_large", "features", "meta"),
        ("efficientnet_b0", "features", "meta"),
        ("convnext_tiny", "features", "meta"),
        ("mnasnet0_5", "layers", "meta"),
        # RegNet computes its stage widths with real tensors while it is built.
        ("regnet_y_400mf", "trunk_output", "cpu"),
    ],
)
def test_finds_the_final_feature_map(name, expected, device):
    # Only shapes matter here, so most models are built and run on the meta device: no
    # weights are initialised and no arithmetic is done (vgg16 alone has 138M parameters).
    with torch.device(device):
        model = torchvision.models.get_model(name, num_classes=5).eval()
        example = torch.zeros(1, 3, 64, 64)
    assert find_target_layer(model, example) == expected


@pytest.mark.parametrize(
    ("name", "size", "expected"),
    [
        # The head reads the class token alone: the patch tokens reach it through the last attention.
        ("vit_b_16", 224, "encoder.layers.encoder_layer_11.ln_1"),
        ("vit_b_32", 224, "encoder.layers.encoder_layer_11.ln_1"),
        # Channels-last stages; the trunk's output comes before `norm` and `permute`.
        ("swin_t", 64, "features"),
        ("swin_v2_t", 64, "features"),
    ],
)
def test_finds_the_layer_of_vision_transformers(name, size, expected):
    with torch.device("meta"):
        model = torchvision.models.get_model(name, num_classes=5).eval()
        example = torch.zeros(1, 3, size, size)
    assert find_target_layer(model, example) == expected


def test_finds_the_layer_of_the_tiny_transformers(vit, swin, gen):
    x = torch.randn(1, 3, 32, 32, generator=gen)
    assert find_target_layer(vit, x) == "encoder.layers.encoder_layer_1.ln_1"
    assert find_target_layer(swin, x) == "features"


def test_a_model_without_feature_maps_is_an_input_error(gen):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    with pytest.raises(InputError, match="found no feature map"):
        find_target_layer(model, torch.randn(1, 3, 2, 2, generator=gen))


def test_a_bad_layer_name_lists_candidates():
    with torch.device("meta"):
        model = torchvision.models.resnet18(num_classes=5)
    with pytest.raises(InputError, match=r"layer 'layer5' is not a module of the model; candidates .*layer4"):
        get_layer(model, "layer5")


def test_finding_the_layer_leaves_no_hooks_and_keeps_training_mode(tiny_net, gen):
    tiny_net.train()
    assert find_target_layer(tiny_net, torch.randn(1, 3, 16, 16, generator=gen)) == "act"
    assert tiny_net.training
    assert all(not m._forward_hooks for m in tiny_net.modules())
