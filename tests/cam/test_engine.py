"""The Explainer: Grad-CAM against Captum and hand-computed maps; the user's model untouched."""

from __future__ import annotations

import pytest
import torch
import torchvision
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from auditcam.cam import Explainer
from auditcam.errors import InputError
from tests.conftest import TinyNet


def captum_gradcam(model: nn.Module, layer: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The reference: Captum's LayerGradCam with ReLU, bilinearly upsampled to the input size."""
    attributions = LayerGradCam(model, layer).attribute(images, target=targets, relu_attributions=True)
    return LayerAttribution.interpolate(attributions, tuple(images.shape[-2:]), "bilinear")[:, 0].detach()


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture
def images(gen: torch.Generator) -> torch.Tensor:
    return torch.randn(4, 3, 112, 112, generator=gen)


@pytest.mark.parametrize("explicit_targets", [False, True])
def test_gradcam_equals_captum_on_resnet18(resnet18, images, explicit_targets):
    targets = torch.tensor([3, 0, 9, 3]) if explicit_targets else None
    explanation = Explainer(resnet18)(images, targets)
    expected_targets = targets if explicit_targets else resnet18(images).argmax(dim=1)
    assert explanation.layer == "layer4"
    assert torch.equal(explanation.targets, expected_targets)
    reference = captum_gradcam(resnet18, resnet18.layer4, images, expected_targets)
    maps = explanation.maps["gradcam"]
    assert maps.dtype == torch.float32 and maps.shape == (4, 112, 112)
    assert reference.abs().max() > 0  # a real comparison, not two zero maps
    torch.testing.assert_close(maps, reference, atol=1e-5, rtol=0)


def test_gradcam_equals_captum_in_float64(resnet18, images):
    model = resnet18.double()
    try:
        x = images.double()
        explanation = Explainer(model)(x)
        reference = captum_gradcam(model, model.layer4, x, explanation.targets)
        torch.testing.assert_close(explanation.maps["gradcam"].double(), reference, atol=1e-7, rtol=0)
    finally:
        resnet18.float()


def _golden_model() -> nn.Sequential:
    """features = identity 1x1 conv on 2 channels; logits = W @ spatial mean of the features."""
    features = nn.Conv2d(2, 2, 1, bias=False)
    fc = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        features.weight.copy_(torch.eye(2)[:, :, None, None])
        fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.5, -1.0]]))
    return nn.Sequential(nn.Identity(), features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc)


def test_gradcam_matches_hand_computed_maps():
    # d logit_k / d A_cij = W[k, c] / 4 (mean over 2x2), so map_k = relu(sum_c W[k, c] / 4 * A_c).
    model = _golden_model()
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[4.0, 3.0], [2.0, 1.0]]]]).repeat(2, 1, 1, 1)
    explanation = Explainer(model, layer="1")(x, torch.tensor([0, 1]))
    expected = torch.tensor(
        [
            [[0.25, 0.5], [0.75, 1.0]],  # target 0: 0.25 * A_0
            [[0.0, 0.0], [0.0, 0.25]],  # target 1: relu(0.25 * (0.5 A_0 - A_1))
        ]
    )
    torch.testing.assert_close(explanation.maps["gradcam"], expected)
    torch.testing.assert_close(explanation.normalised("gradcam")[1], expected[1] / 0.25)


def test_predicted_class_is_the_default_target(tiny_net, gen):
    x = torch.randn(5, 3, 16, 16, generator=gen)
    explanation = Explainer(tiny_net)(x)
    assert torch.equal(explanation.targets, tiny_net(x).argmax(dim=1))
    assert torch.equal(explanation.logits, tiny_net(x).detach())


def test_wrong_number_of_targets_is_an_error(tiny_net, gen):
    x = torch.randn(3, 3, 16, 16, generator=gen)
    with pytest.raises(InputError, match="got 2 targets for a batch of 3 images"):
        Explainer(tiny_net)(x, torch.tensor([0, 1]))


def test_unknown_method_lists_the_known_ones(tiny_net):
    with pytest.raises(InputError, match="unknown CAM method 'gradkam'; choose from gradcam"):
        Explainer(tiny_net, methods=("gradkam",))


def test_unknown_layer_lists_candidates(tiny_net):
    with pytest.raises(InputError, match=r"layer 'layer9' is not a module of the model; candidates .*features"):
        Explainer(tiny_net, layer="layer9")


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_works_inside_no_grad_and_inference_mode(tiny_net, gen, mode):
    x = torch.randn(2, 3, 16, 16, generator=gen)
    expected = Explainer(tiny_net)(x).maps["gradcam"]
    context = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with context:
        inner = x.clone()
        got = Explainer(tiny_net)(inner).maps["gradcam"]
        assert not torch.is_grad_enabled()  # the caller's mode is back
    torch.testing.assert_close(got, expected)


def test_inplace_relu_after_the_target_layer_gives_the_same_maps(gen):
    x = torch.randn(3, 3, 16, 16, generator=gen)
    plain, inplace = TinyNet(inplace=False), TinyNet(inplace=True)
    inplace.load_state_dict(plain.state_dict())
    expected = Explainer(plain, layer="features")(x).maps["gradcam"]
    got = Explainer(inplace, layer="features")(x).maps["gradcam"]
    torch.testing.assert_close(got, expected)


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "hooks": {
            name: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for name, m in model.named_modules()
        },
    }


def _assert_unchanged(model: nn.Module, before: dict) -> None:
    after = _snapshot(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["hooks"] == before["hooks"]
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key
    assert all(p.grad is None for p in model.parameters())


@pytest.fixture
def trained_mode_model(tiny_net) -> TinyNet:
    """A model in training mode with one frozen layer, one eval submodule and a user hook."""
    model = tiny_net.train()
    model.stem[0].weight.requires_grad_(False)
    model.pool.eval()
    model.fc.register_forward_hook(lambda *_: None)
    return model


def test_model_is_unchanged_after_explaining(trained_mode_model, gen):
    before = _snapshot(trained_mode_model)
    with Explainer(trained_mode_model) as explainer:
        explainer(torch.randn(2, 3, 16, 16, generator=gen))
        assert not trained_mode_model.training  # eval inside the block
    _assert_unchanged(trained_mode_model, before)


def test_model_is_unchanged_when_the_forward_raises(trained_mode_model, gen):
    before = _snapshot(trained_mode_model)

    def explode(*_):
        raise RuntimeError("boom in the head")

    handle = trained_mode_model.fc.register_forward_pre_hook(explode)
    before["hooks"]["fc"] = (before["hooks"]["fc"][0], before["hooks"]["fc"][1] + 1, before["hooks"]["fc"][2])
    with pytest.raises(RuntimeError, match="boom in the head"):
        Explainer(trained_mode_model, layer="features")(torch.randn(2, 3, 16, 16, generator=gen))
    _assert_unchanged(trained_mode_model, before)
    handle.remove()


def test_model_is_unchanged_after_a_user_error(trained_mode_model, gen):
    before = _snapshot(trained_mode_model)
    with pytest.raises(InputError):
        Explainer(trained_mode_model)(torch.randn(2, 3, 16, 16, generator=gen), torch.tensor([1, 2, 0]))
    _assert_unchanged(trained_mode_model, before)


def test_batchnorm_statistics_do_not_move(gen):
    model = torchvision.models.resnet18(num_classes=4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Explainer(model)(torch.randn(2, 3, 64, 64, generator=gen))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert model.training
