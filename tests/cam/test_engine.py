"""The Explainer: one pass for every method, targets, fallback, layers; the user's model untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from auditcam.cam import METHODS, Explainer, HeadOnlyFallbackWarning
from auditcam.cam.layers import get_layer
from auditcam.cam.methods import scorecam
from auditcam.errors import InputError
from tests.cam.reference import full_autograd
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


def test_new_methods_match_hand_computed_maps_on_the_golden_model():
    # G = W[k] / 4 everywhere and sum_ij A_c = 10 for both channels, so by hand:
    #   target 0, g = (0.25, 0):    Grad-CAM++ alpha_0 = 1 / (2 + 10 * 0.25), w_0 = 4 * 0.25 / 4.5 = 2/9
    #   target 1, g = (0.125, -0.25): LayerCAM keeps 0.125 A_0; Grad-CAM++ w_0 = 4 * 0.125 / 3.25, w_1 = 0;
    #   HiResCAM (G constant) and XGrad-CAM (w = g * 10 / (10 + eps)) equal Grad-CAM.
    model = _golden_model()
    a0 = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    x = torch.stack([a0, a0.flip(0, 1)])[None].repeat(2, 1, 1, 1)
    methods = ("gradcam", "hirescam", "xgradcam", "layercam", "gradcam++")
    maps = Explainer(model, layer="1", methods=methods)(x, torch.tensor([0, 1])).maps
    gradcam_1 = torch.tensor([[0.0, 0.0], [0.0, 0.25]])
    expected = {
        "gradcam": [0.25 * a0, gradcam_1],
        "hirescam": [0.25 * a0, gradcam_1],
        "xgradcam": [0.25 * a0, gradcam_1],
        "layercam": [0.25 * a0, 0.125 * a0],
        "gradcam++": [2 / 9 * a0, 0.5 / 3.25 * a0],
    }
    for name, (target_0, target_1) in expected.items():
        # atol: Grad-CAM++'s eps = 1e-6 against 2 g^2 ~ 0.03 moves its maps by ~1e-5
        torch.testing.assert_close(maps[name], torch.stack([target_0, target_1]), atol=1e-4, rtol=0, msg=name)


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
    with pytest.raises(InputError, match=r"unknown CAM method 'gradkam'; choose from gradcam, gradcam\+\+, .*scorecam"):
        Explainer(tiny_net, methods=("gradkam",))


def test_a_method_given_twice_is_an_error(tiny_net):
    with pytest.raises(InputError, match="method gradcam is given more than once"):
        Explainer(tiny_net, methods=("gradcam", "layercam", "gradcam"))


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


ALL_GRADIENT_METHODS = tuple(METHODS)


def test_all_methods_come_from_one_forward_and_one_gradient_computation(tiny_net, gen, monkeypatch):
    forwards, grads = [], []
    handle = tiny_net.register_forward_pre_hook(lambda *_: forwards.append(1))
    real_grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        grads.append(1)
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    x = torch.randn(3, 3, 16, 16, generator=gen)
    explanation = Explainer(tiny_net, layer="features", methods=ALL_GRADIENT_METHODS)(x)
    handle.remove()
    assert (len(forwards), len(grads)) == (1, 1)
    assert set(explanation.maps) == set(ALL_GRADIENT_METHODS)
    for name in ALL_GRADIENT_METHODS:  # each equal to the method explained alone
        alone = Explainer(tiny_net, layer="features", methods=(name,))(x).maps[name]
        torch.testing.assert_close(explanation.maps[name], alone, msg=name)


def test_eigencam_alone_needs_no_gradient(tiny_net, gen, monkeypatch):
    def no_grad_allowed(*_args, **_kwargs):
        raise AssertionError("eigencam must not differentiate")

    # The layer is named: finding the default differentiates once (its gradient probe), explaining must not.
    monkeypatch.setattr(torch.autograd, "grad", no_grad_allowed)
    explainer = Explainer(tiny_net, layer="act", methods=("eigencam",))
    maps = explainer(torch.randn(2, 3, 16, 16, generator=gen)).maps["eigencam"]
    assert maps.shape == (2, 16, 16) and maps.amax() > 0


def test_only_the_head_is_differentiated(tiny_net, gen):
    # The trunk before the layer records no graph; the head after it does; no parameter needs a gradient.
    seen = {}

    def record(name):
        def hook(module, _inputs, output):
            seen[name] = (output.requires_grad, any(p.requires_grad for p in module.parameters()))

        return hook

    handles = [getattr(tiny_net, n).register_forward_hook(record(n)) for n in ("stem", "act", "fc")]
    Explainer(tiny_net, layer="features")(torch.randn(2, 3, 16, 16, generator=gen))
    for handle in handles:
        handle.remove()
    assert seen == {"stem": (False, False), "act": (True, False), "fc": (True, False)}
    assert all(p.requires_grad for p in tiny_net.parameters())  # restored afterwards


def test_frozen_parameters_give_the_same_maps(tiny_net, gen):
    x = torch.randn(2, 3, 16, 16, generator=gen)
    expected = Explainer(tiny_net, methods=ALL_GRADIENT_METHODS)(x).maps
    tiny_net.requires_grad_(False)
    got = Explainer(tiny_net, methods=ALL_GRADIENT_METHODS)(x).maps
    assert not any(p.requires_grad for p in tiny_net.parameters())
    for name in ALL_GRADIENT_METHODS:
        torch.testing.assert_close(got[name], expected[name], msg=name)


def test_top_k_explains_the_k_highest_logits(tiny_net, gen):
    x = torch.randn(4, 3, 16, 16, generator=gen)
    explanation = Explainer(tiny_net, methods=("gradcam", "eigencam", "scorecam"))(x, top_k=2)
    assert torch.equal(explanation.targets, tiny_net(x).topk(2, dim=1).indices)
    for name, maps in explanation.maps.items():
        assert maps.shape == (4, 2, 16, 16), name
        assert explanation.normalised(name).amax(dim=(-2, -1)).le(1).all()
        for j in range(2):  # column j is the single-target explanation of targets[:, j]
            single = Explainer(tiny_net, methods=(name,))(x, explanation.targets[:, j]).maps[name]
            torch.testing.assert_close(maps[:, j], single, msg=name)


def test_explicit_targets_per_image_may_be_several(tiny_net, gen):
    x = torch.randn(2, 3, 16, 16, generator=gen)
    targets = torch.tensor([[0, 2, 1], [1, 1, 0]])
    explanation = Explainer(tiny_net, methods=("layercam",))(x, targets)
    assert explanation.maps["layercam"].shape == (2, 3, 16, 16)
    assert torch.equal(explanation.targets, targets)


@pytest.mark.parametrize(
    ("targets", "top_k", "message"),
    [
        (torch.tensor([[0, 1]]), None, r"got targets of shape \(1, 2\) for a batch of 2 images"),
        (torch.tensor([0, 1, 2]), None, "got 3 targets for a batch of 2 images"),
        (torch.tensor([0, 3]), None, r"a target class is outside 0..2"),
        (torch.tensor([0, 1]), 2, "give targets or top_k, not both"),
        (None, 4, "top_k must be between 1 and the model's 3 outputs, got 4"),
    ],
)
def test_bad_targets_are_input_errors(tiny_net, gen, targets, top_k, message):
    with pytest.raises(InputError, match=message):
        Explainer(tiny_net)(torch.randn(2, 3, 16, 16, generator=gen), targets, top_k=top_k)


def test_several_layers_are_fused_by_the_mean_of_normalised_maps(tiny_net, gen):
    x = torch.randn(3, 3, 16, 16, generator=gen)
    fused = Explainer(tiny_net, layer="stem,act", methods=("gradcam", "layercam"))(x)
    assert fused.layer == "stem,act"
    for name in ("gradcam", "layercam"):
        per_layer = [Explainer(tiny_net, layer=layer, methods=(name,))(x).normalised(name) for layer in ("stem", "act")]
        torch.testing.assert_close(fused.maps[name], (per_layer[0] + per_layer[1]) / 2, msg=name)


def test_scorecam_through_the_engine(tiny_net, gen):
    x = torch.randn(2, 3, 16, 16, generator=gen)
    explanation = Explainer(tiny_net, layer="features", methods=("scorecam",), scorecam_chunk_size=5)(x)
    a, _ = full_autograd(tiny_net, tiny_net.features, x, explanation.targets)
    with torch.no_grad():
        raw = scorecam(tiny_net, x, a, explanation.targets[:, None])[:, 0]
    expected = F.interpolate(raw.clamp_min(0)[:, None], size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(explanation.maps["scorecam"], expected)


def test_autocast_gives_float32_maps_close_to_full_precision(tiny_net, gen):
    x = torch.randn(2, 3, 16, 16, generator=gen)
    targets = torch.tensor([0, 2])
    expected = Explainer(tiny_net, methods=("gradcam", "hirescam"))(x, targets).maps
    got = Explainer(tiny_net, methods=("gradcam", "hirescam"), autocast=torch.bfloat16)(x, targets).maps
    for name in ("gradcam", "hirescam"):
        assert got[name].dtype == torch.float32
        scale = expected[name].amax()
        assert scale > 0 and (got[name] - expected[name]).abs().max() < 0.05 * scale


class FrozenBackboneProbe(TinyNet):
    """A linear probe: the backbone runs under the model's own no_grad block."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.pool(self.act(self.features(self.stem(x)))).flatten(1)
        return self.fc(features)


class PinnedGradModeNet(TinyNet):
    """Runs its head with autograd only when its input needs a gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.act(self.features(self.stem(x)))
        with torch.set_grad_enabled(x.requires_grad):
            return self.fc(self.pool(features).flatten(1))


def test_a_frozen_backbone_in_no_grad_still_gets_head_only_gradients(tiny_net, gen):
    probe = FrozenBackboneProbe()
    probe.load_state_dict(tiny_net.state_dict())
    x = torch.randn(2, 3, 16, 16, generator=gen)
    expected = Explainer(tiny_net, layer="features")(x).maps["gradcam"]
    torch.testing.assert_close(Explainer(probe, layer="features")(x).maps["gradcam"], expected)


def test_models_the_head_only_trick_misses_fall_back_and_say_so_once(tiny_net, gen):
    pinned = PinnedGradModeNet()
    pinned.load_state_dict(tiny_net.state_dict())
    x = torch.randn(2, 3, 16, 16, generator=gen)
    expected = Explainer(tiny_net, methods=ALL_GRADIENT_METHODS)(x).maps
    before = _snapshot(pinned)
    explainer = Explainer(pinned, methods=ALL_GRADIENT_METHODS)
    with pytest.warns(HeadOnlyFallbackWarning, match="PinnedGradModeNet: the logits do not depend on .* layer act"):
        first = explainer(x).maps
    second = explainer(x).maps  # no second warning: filterwarnings=error would raise it
    for name in ALL_GRADIENT_METHODS:
        torch.testing.assert_close(first[name], expected[name], msg=name)
        torch.testing.assert_close(second[name], expected[name], msg=name)
    _assert_unchanged(pinned, before)


class SideBranchNet(TinyNet):
    """Has a conv whose output never reaches the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.side = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.side(x)
        return super().forward(x)


def test_a_layer_off_the_path_to_the_logits_is_an_error_after_the_fallback(gen):
    model = SideBranchNet()
    before = _snapshot(model)
    with pytest.warns(HeadOnlyFallbackWarning), pytest.raises(InputError, match="do not depend on layer side"):
        Explainer(model, layer="side")(torch.randn(2, 3, 16, 16, generator=gen))
    _assert_unchanged(model, before)


def test_inplace_relu_after_the_layer_on_mnasnet_equals_captum(gen):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torchvision.models.mnasnet0_5(num_classes=5).eval()
    assert isinstance(model.layers[16], nn.ReLU) and model.layers[16].inplace
    x = torch.randn(2, 3, 64, 64, generator=gen)
    explanation = Explainer(model, layer="layers.15")(x)
    reference = captum_gradcam(model, model.layers[15], x, explanation.targets)
    assert reference.abs().max() > 0
    torch.testing.assert_close(explanation.maps["gradcam"], reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_every_method_works_inside_inference_mode(tiny_net, gen, mode):
    x = torch.randn(2, 3, 16, 16, generator=gen)
    methods = (*ALL_GRADIENT_METHODS, "scorecam", "captum:Saliency")
    expected = Explainer(tiny_net, methods=methods)(x).maps
    with torch.no_grad() if mode == "no_grad" else torch.inference_mode():
        got = Explainer(tiny_net, methods=methods)(x.clone()).maps
    for name in methods:
        torch.testing.assert_close(got[name], expected[name], msg=name)


def test_model_is_unchanged_after_every_kind_of_method(trained_mode_model, gen):
    before = _snapshot(trained_mode_model)
    methods = (*ALL_GRADIENT_METHODS, "scorecam", "captum:IntegratedGradients", "captum:GuidedGradCam")
    with pytest.warns(UserWarning, match="Setting backward hooks on ReLU"):  # Captum's own notice
        Explainer(trained_mode_model, methods=methods)(torch.randn(2, 3, 16, 16, generator=gen), top_k=2)
    _assert_unchanged(trained_mode_model, before)


def test_model_is_unchanged_when_a_target_is_bad_after_the_forward(trained_mode_model, gen):
    before = _snapshot(trained_mode_model)
    with pytest.raises(InputError, match="outside"):
        Explainer(trained_mode_model, methods=("gradcam", "scorecam"))(
            torch.randn(2, 3, 16, 16, generator=gen), torch.tensor([0, 7])
        )
    _assert_unchanged(trained_mode_model, before)


def test_the_hot_path_never_reads_a_value_on_the_host():
    # Meta tensors have shapes but no values: any .item(), .tolist(), int(tensor) or data-dependent
    # branch would raise here, and on a GPU it would be a host round-trip.
    with torch.device("meta"):
        model = TinyNet()
        x = torch.empty(4, 3, 16, 16)
        explicit = torch.zeros(4, 2, dtype=torch.long)
    methods = (*ALL_GRADIENT_METHODS, "scorecam")
    for targets, top_k, shape in [
        (None, None, (4, 16, 16)),
        (None, 3, (4, 3, 16, 16)),
        (explicit, None, (4, 2, 16, 16)),
    ]:
        explanation = Explainer(model, layer="features", methods=methods)(x, targets, top_k=top_k)
        for name in methods:
            assert explanation.maps[name].shape == shape and explanation.maps[name].is_meta, name


# ---------------------------------------------------------------------------------------------
# vision transformers: token and channels-last layers, read as grids


def vit_grid(tokens: torch.Tensor, side: int = 4) -> torch.Tensor:
    """ViT tokens (N, 1 + side^2, D) as (N, D, side, side), written out independently of the engine."""
    n, _, d = tokens.shape
    return tokens[:, 1:].reshape(n, side, side, d).permute(0, 3, 1, 2)


def swin_grid(channels_last: torch.Tensor) -> torch.Tensor:
    """Swin's (N, h, w, C) as (N, C, h, w)."""
    return channels_last.permute(0, 3, 1, 2)


def _upsampled(raw: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(raw.clamp_min(0)[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]


TRANSFORMER_LAYERS = [
    ("vit", "encoder.layers.encoder_layer_1.ln_1", vit_grid),  # the default layer
    ("vit", "encoder.layers.encoder_layer_0.ln_1", vit_grid),  # one the user names
    ("swin", "features", swin_grid),  # the default layer, 4 x 4 x 24
    ("swin", "features.1", swin_grid),  # the first stage, 8 x 8 x 12
]


@pytest.mark.parametrize(("model_name", "layer", "to_grid"), TRANSFORMER_LAYERS)
def test_gradcam_on_transformer_layers_equals_a_brute_force_computation(request, gen, model_name, layer, to_grid):
    model = request.getfixturevalue(model_name)
    x = torch.randn(3, 3, 32, 32, generator=gen)
    explanation = Explainer(model, layer=layer)(x)
    a, g = full_autograd(model, get_layer(model, layer), x, explanation.targets)
    a, g = to_grid(a), to_grid(g)
    # Grad-CAM by its definition: channel weights = the gradient's mean over the cells.
    expected = _upsampled(torch.einsum("nc,nchw->nhw", g.mean(dim=(2, 3)), a), 32)
    assert expected.amax() > 0
    torch.testing.assert_close(explanation.maps["gradcam"], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("model_name", "layer", "to_grid"), TRANSFORMER_LAYERS[::2])
def test_every_method_works_on_transformer_layers(request, gen, model_name, layer, to_grid):
    model = request.getfixturevalue(model_name)
    x = torch.randn(2, 3, 32, 32, generator=gen)
    methods = (*ALL_GRADIENT_METHODS, "scorecam")
    explanation = Explainer(model, methods=methods)(x)
    assert explanation.layer == layer
    a, g = full_autograd(model, get_layer(model, layer), x, explanation.targets)
    a, g = to_grid(a), to_grid(g)
    with torch.no_grad():
        raws = {name: METHODS[name](a, g) for name in ALL_GRADIENT_METHODS}
        raws["scorecam"] = scorecam(model, x, a, explanation.targets[:, None])[:, 0]
    for name, raw in raws.items():
        expected = _upsampled(raw, 32)
        if name == "eigencam" and model_name == "vit":
            # Every token's channels leave a LayerNorm at init with the same sum, so the first principal
            # axis is orthogonal to (1, ..., 1) and Eigen-CAM's sign convention is decided by rounding.
            got, flipped = explanation.maps[name], _upsampled(-raw, 32)
            use_flipped = (got - flipped).abs().amax(dim=(1, 2)) < (got - expected).abs().amax(dim=(1, 2))
            expected = torch.where(use_flipped[:, None, None], flipped, expected)
        assert expected.amax() > 0, name
        torch.testing.assert_close(explanation.maps[name], expected, atol=1e-5, rtol=1e-4, msg=name)


def test_top_k_on_a_vit_explains_each_column_like_a_single_target(vit, gen):
    x = torch.randn(2, 3, 32, 32, generator=gen)
    explanation = Explainer(vit, methods=("gradcam", "layercam"))(x, top_k=2)
    for name, maps in explanation.maps.items():
        assert maps.shape == (2, 2, 32, 32), name
        for j in range(2):
            single = Explainer(vit, methods=(name,))(x, explanation.targets[:, j]).maps[name]
            torch.testing.assert_close(maps[:, j], single, msg=name)


def test_the_default_vit_layer_is_the_last_whose_patch_tokens_reach_the_logits(vit, gen):
    # After the last attention each token is transformed alone, and the head reads the class token:
    # the patch tokens of the last block's output get no gradient at all.
    x = torch.randn(2, 3, 32, 32, generator=gen)
    assert Explainer(vit)(x).maps["gradcam"].amax(dim=(1, 2)).gt(0).all()
    last_block = Explainer(vit, layer="encoder.layers.encoder_layer_1")(x).maps["gradcam"]
    assert torch.equal(last_block, torch.zeros_like(last_block))


def test_a_vit_is_explained_in_one_pass_through_its_head_only(vit, gen, monkeypatch):
    seen, forwards, grads = {}, [], []

    def record(name):
        def hook(_module, _inputs, output):
            seen[name] = output.requires_grad

        return hook

    modules = dict(vit.named_modules())
    names = ("conv_proj", "encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1", "heads")
    handles = [modules[name].register_forward_hook(record(name)) for name in names]
    handles.append(vit.register_forward_pre_hook(lambda *_: forwards.append(1)))
    real_grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        grads.append(1)
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    layer = "encoder.layers.encoder_layer_1.ln_1"
    Explainer(vit, layer=layer, methods=ALL_GRADIENT_METHODS)(torch.randn(2, 3, 32, 32, generator=gen))
    for handle in handles:
        handle.remove()
    assert (len(forwards), len(grads)) == (1, 1)
    assert seen == dict(zip(names, (False, False, True, True), strict=True))


def test_a_transformer_is_unchanged_after_every_kind_of_method(vit, gen):
    vit.train()
    vit.conv_proj.weight.requires_grad_(False)
    vit.encoder.ln.eval()
    handle = vit.heads.register_forward_hook(lambda *_: None)
    before = _snapshot(vit)
    methods = (*ALL_GRADIENT_METHODS, "scorecam", "captum:IntegratedGradients")
    Explainer(vit, methods=methods)(torch.randn(2, 3, 32, 32, generator=gen), top_k=2)
    _assert_unchanged(vit, before)
    with pytest.raises(InputError):
        Explainer(vit, layer="heads.head")(torch.randn(2, 3, 32, 32, generator=gen))
    _assert_unchanged(vit, before)
    handle.remove()


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ("heads.head", r"layer 'heads.head' outputs \(2, 3\), which is no feature map \(N, C, H, W\), "),
        ("encoder.layers.encoder_layer_1.self_attention", r"outputs tuple, which is no feature map .* 32x32 input"),
    ],
)
def test_a_layer_that_is_no_grid_is_an_input_error(vit, gen, layer, message):
    with pytest.raises(InputError, match=message):
        Explainer(vit, layer=layer)(torch.randn(2, 3, 32, 32, generator=gen))


@pytest.mark.parametrize(
    ("model_name", "layer", "layout"),
    [
        ("vit", "encoder.layers.encoder_layer_1.ln_1", r"\(N, \[class token \+\] H\*W, D\)"),
        ("swin", "features", r"\(N, H, W, C\)"),
    ],
)
def test_captum_layer_methods_on_transformer_layers_are_input_errors(request, gen, model_name, layer, layout):
    model = request.getfixturevalue(model_name)
    x = torch.randn(2, 3, 32, 32, generator=gen)
    message = rf"captum:LayerGradCam reads layer '{layer}' as a feature map \(N, C, H, W\), but it outputs {layout}; "
    with pytest.raises(InputError, match=message):
        Explainer(model, methods=("gradcam", "captum:LayerGradCam"))(x)
    saliency = Explainer(model, methods=("captum:Saliency",))(x).maps["captum:Saliency"]  # input attributions work
    assert saliency.shape == (2, 32, 32) and saliency.amax() > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "size", "layer", "to_grid"),
    [
        ("vit_b_16", 224, "encoder.layers.encoder_layer_11.ln_1", lambda tokens: vit_grid(tokens, side=14)),
        ("swin_t", 64, "features", swin_grid),
    ],
)
def test_random_init_torchvision_transformers_are_explained_at_the_layer_found(gen, name, size, layer, to_grid):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None, num_classes=4).eval()
        if name.startswith("vit"):  # torchvision zero-initialises the ViT head: every gradient would be 0
            nn.init.normal_(model.heads.head.weight, std=0.02)
    x = torch.randn(1, 3, size, size, generator=gen)
    explanation = Explainer(model)(x)
    assert explanation.layer == layer
    a, g = full_autograd(model, get_layer(model, layer), x, explanation.targets)
    a, g = to_grid(a), to_grid(g)
    expected = _upsampled(torch.einsum("nc,nchw->nhw", g.mean(dim=(2, 3)), a), size)
    assert expected.amax() > 0
    torch.testing.assert_close(explanation.maps["gradcam"], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layer", [[3], 3, ["features", 4], {"features": 1}])
def test_a_wrongly_typed_layer_is_an_input_error_naming_layer(tiny_net, layer):
    with pytest.raises(InputError, match=r"^layer must be a module name or a list of names .* got "):
        Explainer(tiny_net, layer=layer)


def test_fused_layers_are_each_divided_by_their_maximum_after_upsampling():
    # x is 4x4 with a 2x2 block of 4s in the middle. Layer "1" (identity 1x1 conv) keeps x: its
    # Grad-CAM map is relu(x / 16) (the mean gradient of mean(avgpool(x)) is 1/16), / max -> the block's
    # indicator. Layer "2" (2x2 average pool, stride 1) gives A = outer(v, v), v = (1, 2, 1), with
    # gradient 1/9: map A / 9. Upsampled 3 -> 4 (align_corners=False) a row (a, b, c) becomes
    # (a, 0.375a + 0.625b, 0.625b + 0.375c, c), so v -> u = (1, 1.625, 1.625, 1); the map is
    # outer(u, u) / 9, maximum 1.625^2 / 9 -- not A's maximum 4 / 9, which the upsampling misses.
    conv = nn.Conv2d(1, 1, 1, bias=False)
    fc = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        fc.weight.fill_(1.0)
    model = nn.Sequential(nn.Identity(), conv, nn.AvgPool2d(2, stride=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc)
    x = torch.zeros(1, 1, 4, 4)
    x[..., 1:3, 1:3] = 4.0
    block = (x[0, 0] > 0).float()
    u = torch.tensor([1.0, 1.625, 1.625, 1.0])
    coarse = torch.outer(u, u) / 1.625**2
    fused = Explainer(model, layer=["1", "2"])(x, torch.tensor([0]))
    torch.testing.assert_close(fused.maps["gradcam"][0], (block + coarse) / 2)
    raw = Explainer(model, layer="2")(x, torch.tensor([0])).maps["gradcam"][0]
    torch.testing.assert_close(raw, torch.outer(u, u) / 9)  # one layer: un-normalised
