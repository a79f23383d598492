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


CLASS_ATTENTION_MODELS = [
    # (timm name, tiny configuration, the default layer: the input of the last attention the class token reads)
    ("convit_tiny", {"embed_dim": 48, "local_up_to_layer": 1}, "blocks.1.norm1"),
    ("xcit_nano_12_p16_224", {"cls_attn_layers": 2}, "cls_attn_blocks.1.norm1"),
    ("cait_xxs24_224", {"depth_token_only": 1}, "blocks_token_only.0.attn.v"),
]


@pytest.mark.parametrize(
    ("name", "tiny", "expected"), CLASS_ATTENTION_MODELS, ids=[m[0] for m in CLASS_ATTENTION_MODELS]
)
def test_class_attention_models_get_a_layer_the_head_sees(gen, name, tiny, expected):
    timm = pytest.importorskip("timm")
    from auditcam.cam import Explainer
    from auditcam.cam.grids import grid_of
    from tests.cam.reference import full_autograd

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        kwargs = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, **tiny}
        model = timm.create_model(name, num_classes=3, **kwargs).eval()
    x = torch.randn(4, 3, 32, 32, generator=gen)
    explanation = Explainer(model)(x)
    assert explanation.layer == expected
    # Grad-CAM by its definition from the whole graph's gradient at that layer.
    a, g = full_autograd(model, get_layer(model, expected), x, explanation.targets)
    grid = grid_of(a.shape, (32, 32))
    a, g = grid.to_nchw(a), grid.to_nchw(g)
    raw = torch.einsum("nc,nchw->nhw", g.mean(dim=(2, 3)), a).clamp_min(0)
    reference = torch.nn.functional.interpolate(raw[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    # Every image's patch positions get a gradient (by construction), so the maps are not zero
    # (a random-init map may still be clipped to zero where the weighted sum is negative).
    assert (g.flatten(1).abs().amax(1) > 0).all()
    assert explanation.maps["gradcam"].amax() > 0
    torch.testing.assert_close(explanation.maps["gradcam"], reference, atol=1e-6, rtol=1e-4)


def test_a_layer_the_head_cannot_see_is_not_the_default(gen):
    # The last feature map feeds an auxiliary output the logits never read: Grad-CAM there is zero
    # by construction, so the default is the map before it, which the head pools.
    class Auxiliary(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.aux = torch.nn.Conv2d(4, 4, 3, padding=1)
            self.head = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            features = self.features(x)
            self.aux_output = self.aux(features)
            return self.head(features.mean(dim=(2, 3)))

    from auditcam.cam.layers import reaching_layers

    model = Auxiliary().eval()
    x = torch.randn(1, 3, 16, 16, generator=gen)
    assert reaching_layers(model, x, {"features", "aux"}) == {"features"}
    assert find_target_layer(model, x) == "features"
    with torch.device("meta"):  # shapes only: no probe, the structural rule alone
        assert find_target_layer(Auxiliary().eval(), torch.zeros(1, 3, 16, 16)) == "aux"
