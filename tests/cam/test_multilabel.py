"""Multi-label targets in the Explainer: padded (N, k) true labels and every label at a sigmoid
threshold, all from one forward pass, each map equal to Grad-CAM of that label on its own."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from auditcam.cam import Explainer
from auditcam.errors import InputError


def _forwards(model: torch.nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    calls: list[int] = []
    return calls, model.register_forward_hook(lambda *_: calls.append(1))


def _reference_gradcam(model: torch.nn.Module, x: torch.Tensor, label: int) -> torch.Tensor:
    """Grad-CAM by hand with full autograd: relu(sum_k mean(dy/dA_k) A_k) of ``model.act``'s
    output, upsampled bilinearly (align_corners=False)."""
    kept = {}
    handle = model.act.register_forward_hook(lambda _m, _i, out: kept.setdefault("a", out))
    try:
        logits = model(x)
    finally:
        handle.remove()
    activations = kept["a"]
    (gradients,) = torch.autograd.grad(logits[:, label].sum(), activations)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = (weights * activations).sum(1, keepdim=True).clamp_min(0)
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0].detach()


def test_padded_true_labels_come_from_one_forward_pass_and_match_each_label_alone(tiny_net, gen):
    x = torch.randn(4, 3, 16, 16, generator=gen)
    targets = torch.tensor([[0, 2], [1, -1], [-1, -1], [2, 0]])  # -1 pads a sample with fewer labels
    calls, handle = _forwards(tiny_net)
    try:
        explanation = Explainer(tiny_net, layer="act", methods=("gradcam",))(x, targets)
    finally:
        handle.remove()
    assert calls == [1]
    maps = explanation.maps["gradcam"]
    assert maps.shape == (4, 2, 16, 16) and torch.equal(explanation.targets, targets)
    for i, j in ((1, 1), (2, 0), (2, 1)):
        assert not maps[i, j].any()  # padding explains nothing
    for i, j in ((0, 0), (0, 1), (1, 0), (3, 0), (3, 1)):
        label = int(targets[i, j])
        reference = _reference_gradcam(tiny_net, x[i : i + 1], label)[0]
        torch.testing.assert_close(maps[i, j], reference, rtol=1e-4, atol=1e-6, msg=f"sample {i} label {label}")
        alone = Explainer(tiny_net, layer="act", methods=("gradcam",))(x[i : i + 1], torch.tensor([label]))
        torch.testing.assert_close(maps[i, j], alone.maps["gradcam"][0], rtol=1e-5, atol=1e-7)


def test_a_threshold_explains_every_label_whose_sigmoid_reaches_it(tiny_net, gen):
    x = torch.randn(6, 3, 16, 16, generator=gen)
    with torch.no_grad():
        probabilities = tiny_net(x).sigmoid()
    threshold = float(probabilities.median())
    calls, handle = _forwards(tiny_net)
    try:
        explanation = Explainer(tiny_net, layer="act", methods=("gradcam", "layercam"))(x, threshold=threshold)
    finally:
        handle.remove()
    assert calls == [1]
    for i in range(6):
        expected = [c for c in probabilities[i].argsort(descending=True).tolist() if probabilities[i, c] >= threshold]
        got = [c for c in explanation.targets[i].tolist() if c >= 0]
        assert got == expected, i
    assert explanation.targets.shape[1] == max(1, int((probabilities >= threshold).sum(1).max()))
    padded = explanation.targets < 0
    for name in ("gradcam", "layercam"):
        assert not explanation.maps[name][padded].any()


@pytest.mark.parametrize("threshold", [0.0, 1.0, 1.5])
def test_a_threshold_outside_the_open_unit_interval_is_refused(tiny_net, threshold):
    with pytest.raises(InputError, match="threshold must be strictly between 0 and 1") as error:
        Explainer(tiny_net)(torch.zeros(1, 3, 16, 16), threshold=threshold)
    assert error.value.parameter == "threshold"


def test_padding_is_allowed_only_in_n_by_k_targets(tiny_net):
    with pytest.raises(InputError, match=r"a target class is outside 0..2"):
        Explainer(tiny_net)(torch.zeros(2, 3, 16, 16), torch.tensor([0, -1]))
    with pytest.raises(InputError, match="give threshold alone"):
        Explainer(tiny_net)(torch.zeros(2, 3, 16, 16), torch.tensor([0, 1]), threshold=0.5)
