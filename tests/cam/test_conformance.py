"""Conformance: our maps are the maps of Captum and pytorch-grad-cam, after the same normalisation.

pytorch-grad-cam returns min-max normalised maps: it clips each layer-resolution map at 0,
min-max normalises it, resizes it (cv2, bilinear with half-pixel centres = our
``align_corners=False``) and min-max normalises again; min-max is invariant to the affine steps,
so we compare ``minmax(ours)`` with its output. Differences of definition, each tested here:

- Eigen-CAM / Eigen-Grad-CAM: the sign of a principal axis is arbitrary; pytorch-grad-cam keeps
  LAPACK's, we fix ours (see ``first_principal_component``). The test accepts its map for either
  sign and checks that ours is the one our convention picks.
- DenseNet: ``features`` is followed by an in-place ReLU. pytorch-grad-cam keeps a detached
  alias of the layer output, which that ReLU then overwrites on the CPU (on CUDA its ``.cpu()``
  copy is taken first), so there it combines relu(A) with the gradient w.r.t. A. We keep the
  layer's output as the module returned it, as Captum does: Grad-CAM equals Captum's exactly, and
  pytorch-grad-cam's maps equal our formulas applied to relu(A). Methods that only see G * A
  (HiResCAM, LayerCAM, Eigen-Grad-CAM) agree anyway: G is 0 wherever relu cut A.
- Score-CAM: pytorch-grad-cam upsamples the channel masks with ``align_corners=True``; we
  upsample them like every map (``align_corners=False``). With its setting our function matches.
- Vision transformers: pytorch-grad-cam reads a token or channels-last layer through a
  ``reshape_transform`` the user writes; we lay the layer over the image ourselves. On the tiny ViT
  at init every token's channels leave ``ln_1`` with the same sum, so our Eigen-CAM sign
  convention prefers neither sign and rounding decides: those tests accept either sign of ours too.
"""

from __future__ import annotations

import pytest
import pytorch_grad_cam as pgc
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import LayerAttribution, LayerGradCam
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from auditcam.cam import Explainer
from auditcam.cam.layers import get_layer
from auditcam.cam.methods import METHODS, scorecam
from tests.cam.reference import full_autograd

PGC_CLASSES = {
    "gradcam": pgc.GradCAM,
    "gradcam++": pgc.GradCAMPlusPlus,
    "xgradcam": pgc.XGradCAM,
    "hirescam": pgc.HiResCAM,
    "layercam": pgc.LayerCAM,
    "eigencam": pgc.EigenCAM,
    "eigengradcam": pgc.EigenGradCAM,
}
EIGEN = {"eigencam", "eigengradcam"}
# pytorch-grad-cam on the CPU sees relu(A) for DenseNet's `features` (see the module docstring).
SEES_RELU_A_ON_DENSENET = {"gradcam", "gradcam++", "xgradcam", "eigencam"}
SIZE = 96


def minmax(maps: torch.Tensor) -> torch.Tensor:
    low = maps.amin(dim=(-2, -1), keepdim=True)
    high = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - low) / (high - low).clamp_min(1e-12)


def display(raw: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """A layer-resolution map as pytorch-grad-cam shows it: clipped, upsampled, min-max normalised."""
    return minmax(F.interpolate(raw.clamp_min(0)[:, None], size=(size, size), mode="bilinear")[:, 0])


def closer_sign(raw: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``display(raw)`` or ``display(-raw)``, per image whichever is closer to ``reference`` (Eigen-CAM's free sign)."""
    size = reference.shape[-1]
    flips = [display(-raw, size), display(raw, size)]
    errors = torch.stack([(f - reference).abs().amax(dim=(-2, -1)) for f in flips])
    return torch.where((errors[0] < errors[1])[:, None, None], flips[0], flips[1])


def pytorch_grad_cam(name, model, layer, images, targets, reshape_transform=None) -> torch.Tensor:
    with PGC_CLASSES[name](model, [layer], reshape_transform=reshape_transform) as cam:
        maps = cam(images, [ClassifierOutputTarget(int(t)) for t in targets])
    return torch.from_numpy(maps)


@pytest.fixture(scope="module", params=["resnet18", "densenet121"])
def setup(request):
    """A random-init model, images, and all seven maps from one explainer call."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torchvision.models.get_model(request.param, num_classes=10).eval()
        images = torch.randn(2, 3, SIZE, SIZE)
    explanation = Explainer(model, methods=tuple(PGC_CLASSES))(images)
    layer = dict(model.named_modules())[explanation.layer]
    a, g = full_autograd(model, layer, images, explanation.targets)
    return request.param, model, layer, images, explanation, a, g


def test_gradcam_equals_captum_layergradcam(setup):
    _, model, layer, images, explanation, _, _ = setup
    reference = LayerGradCam(model, layer).attribute(images, target=explanation.targets, relu_attributions=True)
    reference = LayerAttribution.interpolate(reference, (SIZE, SIZE), "bilinear")[:, 0].detach()
    assert reference.abs().max() > 0
    torch.testing.assert_close(explanation.maps["gradcam"], reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(PGC_CLASSES))
def test_maps_equal_pytorch_grad_cam(setup, name):
    arch, model, layer, images, explanation, a, g = setup
    reference = pytorch_grad_cam(name, model, layer, images, explanation.targets)
    ours = minmax(explanation.maps[name])
    assert reference.amax() > 0 and ours.amax() > 0
    # Our engine's map is our formula on the independently captured (A, G) ...
    torch.testing.assert_close(ours, display(METHODS[name](a, g)), atol=1e-4, rtol=0)
    # ... and pytorch-grad-cam's is the same formula, up to the differences the module states.
    inputs = (a.clamp_min(0), g) if arch == "densenet121" and name in SEES_RELU_A_ON_DENSENET else (a, g)
    raw = METHODS[name](*inputs)
    expected = closer_sign(raw, reference) if name in EIGEN else display(raw)  # its sign is LAPACK's
    assert (expected - reference).abs().max() < 1e-4
    if name not in EIGEN and not (arch == "densenet121" and name in SEES_RELU_A_ON_DENSENET):
        assert (ours - reference).abs().max() < 1e-4  # the same maps, no caveat


def test_scorecam_equals_pytorch_grad_cam_with_its_mask_upsampling():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=10).eval()
        images = torch.randn(1, 3, 32, 32)
    targets = torch.tensor([[4]])
    # layer3 (256 channels, 2x2 at 32 px) keeps the 2 x 256 masked forward passes cheap.
    a, _ = full_autograd(model, model.layer3, images, targets[:, 0])
    cam = pgc.ScoreCAM(model, [model.layer3])
    cam.batch_size = 128
    with cam:
        reference = torch.from_numpy(cam(images, [ClassifierOutputTarget(4)]))
    with torch.no_grad():
        raw = scorecam(model, images, a, targets, chunk_size=128, align_corners=True)[:, 0]
    ours = minmax(F.interpolate(raw.clamp_min(0)[:, None], size=(32, 32), mode="bilinear")[:, 0])
    assert reference.amax() > 0
    assert (ours - reference).abs().max() < 1e-4


# pytorch-grad-cam's reshape_transform for each tiny transformer (tests/conftest.py), as its docs write them.
TRANSFORMERS = {
    "vit": (
        "encoder.layers.encoder_layer_1.ln_1",
        lambda t: t[:, 1:].reshape(t.shape[0], 4, 4, -1).permute(0, 3, 1, 2),
    ),
    "swin": ("features", lambda t: t.permute(0, 3, 1, 2)),
}


@pytest.mark.parametrize("name", list(PGC_CLASSES))
@pytest.mark.parametrize("model_name", list(TRANSFORMERS))
def test_transformer_maps_equal_pytorch_grad_cam_with_its_reshape_transform(request, gen, model_name, name):
    model = request.getfixturevalue(model_name)
    layer_name, reshape = TRANSFORMERS[model_name]
    layer = get_layer(model, layer_name)
    images = torch.randn(2, 3, 32, 32, generator=gen)
    explanation = Explainer(model, methods=(name,))(images)
    assert explanation.layer == layer_name
    reference = pytorch_grad_cam(name, model, layer, images, explanation.targets, reshape_transform=reshape)
    ours = minmax(explanation.maps[name])
    assert reference.amax() > 0 and ours.amax() > 0
    a, g = (reshape(t) for t in full_autograd(model, layer, images, explanation.targets))
    raw = METHODS[name](a, g)
    if name in EIGEN:
        torch.testing.assert_close(ours, closer_sign(raw, ours), atol=1e-4, rtol=0)
        assert (closer_sign(raw, reference) - reference).abs().max() < 1e-4
    else:
        assert (ours - reference).abs().max() < 1e-4
