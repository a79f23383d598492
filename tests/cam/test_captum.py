"""The Captum adapter: any captum.attr attribution as a method with the same Explanation."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Occlusion, Saliency

from auditcam import LabelledDataset, audit
from auditcam.cam import CaptumMethod, Explainer
from auditcam.config import AuditSettings
from auditcam.errors import InputError


def test_layergradcam_through_the_adapter_is_our_gradcam(tiny_net, gen):
    x = torch.randn(3, 3, 16, 16, generator=gen)
    explanation = Explainer(tiny_net, layer="features", methods=("gradcam", "captum:LayerGradCam"))(x)
    assert explanation.maps["gradcam"].abs().max() > 0
    torch.testing.assert_close(explanation.maps["captum:LayerGradCam"], explanation.maps["gradcam"])


def test_integrated_gradients_are_summed_over_colour_channels_and_clipped(tiny_net, gen):
    x = torch.randn(2, 3, 16, 16, generator=gen)
    targets = torch.tensor([1, 0])
    method = CaptumMethod(IntegratedGradients, n_steps=8)
    got = Explainer(tiny_net, methods=(method,))(x, targets).maps["captum:IntegratedGradients"]
    raw = IntegratedGradients(tiny_net).attribute(x.clone().requires_grad_(), target=targets, n_steps=8)
    expected = raw.detach().sum(dim=1).clamp_min(0)
    assert got.shape == (2, 16, 16) and expected.amax() > 0
    torch.testing.assert_close(got, expected)
    magnitude = CaptumMethod("IntegratedGradients", sign="absolute_value", name="ig-abs", n_steps=8)
    got_abs = Explainer(tiny_net, methods=(magnitude,))(x, targets).maps["ig-abs"]
    torch.testing.assert_close(got_abs, raw.detach().abs().sum(dim=1))


def test_occlusion_gets_a_window_of_an_eighth_of_the_image_by_default(tiny_net, gen):
    x = torch.randn(2, 3, 16, 16, generator=gen)
    fast = {"perturbations_per_eval": 64}  # Captum's default of 1 costs ~60 ms per window position
    got = Explainer(tiny_net, methods=(CaptumMethod("Occlusion", **fast),))(x)
    raw = Occlusion(tiny_net).attribute(
        x, sliding_window_shapes=(3, 2, 2), strides=(3, 1, 1), target=got.targets, **fast
    )
    assert raw.sum(dim=1).amax() > 0
    torch.testing.assert_close(got.maps["captum:Occlusion"], raw.sum(dim=1).clamp_min(0))
    # A window of one's own is moved by half of it unless strides are given too.
    own = Explainer(tiny_net, methods=(CaptumMethod("Occlusion", sliding_window_shapes=(3, 4, 4), **fast),))
    raw = Occlusion(tiny_net).attribute(
        x, sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2), target=got.targets, **fast
    )
    torch.testing.assert_close(own(x, got.targets).maps["captum:Occlusion"], raw.sum(dim=1).clamp_min(0))


def test_top_k_with_a_captum_method(tiny_net, gen):
    x = torch.randn(2, 3, 16, 16, generator=gen)
    explanation = Explainer(tiny_net, methods=("captum:Saliency",))(x, top_k=3)
    maps = explanation.maps["captum:Saliency"]
    assert maps.shape == (2, 3, 16, 16)
    for j in range(3):
        raw = Saliency(tiny_net).attribute(x.clone().requires_grad_(), target=explanation.targets[:, j])
        torch.testing.assert_close(maps[:, j], raw.sum(dim=1).clamp_min(0))


def test_a_ready_made_attribution_object_is_used_as_given(tiny_net, gen):
    x = torch.randn(2, 3, 16, 16, generator=gen)
    smooth = CaptumMethod(NoiseTunnel(Saliency(tiny_net)), nt_samples=2, stdevs=0.0)
    explanation = Explainer(tiny_net, methods=("captum:Saliency", smooth))(x)
    # With zero noise the tunnel averages identical saliency maps.
    torch.testing.assert_close(explanation.maps["captum:NoiseTunnel"], explanation.maps["captum:Saliency"])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("captum:Frobnicate", "'Frobnicate' is not an attribution class of captum.attr"),
        ("captum:NoiseTunnel", "captum:NoiseTunnel wraps another attribution; build it yourself"),
        ("captum:KernelShap", None),
    ],
)
def test_names_that_cannot_be_built_are_input_errors(tiny_net, spec, message):
    if message is None:  # builds from the model alone
        assert Explainer(tiny_net, methods=(spec,)).methods == (spec,)
        return
    with pytest.raises(InputError, match=message):
        Explainer(tiny_net, methods=(spec,))


def test_a_missing_attribute_argument_is_an_input_error(tiny_net, gen):
    with pytest.raises(
        InputError, match=r"captum:NeuronGradient needs neuron_selector: pass CaptumMethod\(\.\.\., neuron"
    ):
        Explainer(tiny_net, methods=("captum:NeuronGradient",))(torch.randn(1, 3, 16, 16, generator=gen))


def test_captum_methods_flow_through_the_audit(small_dataset, demo_model):
    model, info = demo_model
    manifest, classes = small_dataset
    dataset = LabelledDataset.from_manifest(manifest, classes=classes)
    methods = ("gradcam", "captum:Saliency", CaptumMethod("IntegratedGradients", n_steps=4))
    result = audit(model, dataset, AuditSettings(methods=methods, batch_size=6), model_info=info, progress=False)
    names = ["gradcam", "captum:Saliency", "captum:IntegratedGradients"]
    assert result.meta["methods"] == names
    assert list(result.samples["method"].unique()) == names
    for name in names:
        rows = result.samples[result.samples["method"] == name]
        assert len(rows) == 12 and (rows["status"] == "ok").all(), name
        assert rows["subject_share"].between(0, 1).all(), name
    assert set(result.aggregates) == set(names)
