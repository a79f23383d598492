"""Model-randomisation sanity check: the similarity measures, the cascade, the verdict."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from auditcam.config import AnalysisOptions, Checks, Threshold, load_config
from auditcam.probes.sanity import (
    SanityOptions,
    average_ranks,
    cascade,
    checkpoints,
    model_randomisation,
    randomise,
    rank_correlation,
    ssim,
)
from auditcam.stats.checks import sanity_check

# the demo's trained models: heatmaps of the fully randomised model keep at most this much of
# the originals' pixel ranking (Adebayo et al. report Grad-CAM near 0 after full randomisation)
DECORRELATED = 0.4


def _maps(gen: torch.Generator, n: int = 6, size: int = 20) -> torch.Tensor:
    """Heatmap-like maps: smooth blobs, clipped at 0 (so many ties at zero), some rounded."""
    raw = torch.nn.functional.avg_pool2d(torch.randn(n, 1, size, size, generator=gen), 5, 1, 2)[:, 0]
    maps = raw.clamp_min(0)
    maps[::2] = (maps[::2] * 20).round()  # integer maps: ties everywhere
    return maps


def test_average_ranks_and_spearman_equal_scipy(gen):
    a, b = _maps(gen), _maps(gen)
    for i in range(len(a)):
        expected = stats.rankdata(a[i].flatten().numpy())
        assert np.allclose(average_ranks(a[i].flatten()[None])[0].numpy(), expected)
    ours = rank_correlation(a, b).numpy()
    reference = [stats.spearmanr(a[i].flatten(), b[i].flatten()).statistic for i in range(len(a))]
    assert np.allclose(ours, reference)
    assert np.allclose(rank_correlation(a, a).numpy(), 1.0)
    assert np.allclose(rank_correlation(a, a.amax() - a).numpy(), -1.0)


def test_constant_maps_have_no_ranking(gen):
    a = _maps(gen, n=2)
    assert rank_correlation(a, torch.zeros_like(a)).tolist() == [0.0, 0.0]
    assert torch.isnan(rank_correlation(torch.zeros_like(a), a)).all()
    broken = a.clone()
    broken[0, 0, 0] = float("nan")
    assert torch.isnan(rank_correlation(broken, a)[0]) and not torch.isnan(rank_correlation(broken, a)[1])


def _reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM as in Wang et al. (2004) / scikit-image (gaussian_weights, sigma 1.5, population
    statistics, data range 1): scipy's Gaussian filter, then the border of 5 cropped."""
    a, b = a / max(a.max(), 1e-300), b / max(b.max(), 1e-300)

    def blur(x: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(x, sigma=1.5, truncate=3.5, mode="reflect")

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(index[5:-5, 5:-5].mean())


def test_ssim_equals_a_scipy_reference(gen):
    a, b = _maps(gen, size=32), _maps(gen, size=32)
    ours = ssim(a, b).numpy()
    reference = [_reference_ssim(a[i].double().numpy(), b[i].double().numpy()) for i in range(len(a))]
    assert np.allclose(ours, reference, atol=1e-10)
    assert np.allclose(ssim(a, 3 * a).numpy(), 1.0)  # scale-free: each map is divided by its maximum
    assert (ssim(a, b) < 0.99).all()


def test_the_cascade_runs_top_down_and_keeps_norms_with_their_layer(demo_model, gen):
    model, _ = demo_model
    stages = cascade(model, torch.randn(1, 3, 64, 64, generator=gen))
    assert [s.name for s in stages] == ["classifier", "features.11", "features.8", "features.4", "features.0"]
    assert stages[1].modules == ("features.11", "features.12")  # conv + its batch norm
    assert checkpoints(5, 16) == [0, 1, 2, 3, 4]
    picked = checkpoints(54, 16)
    assert len(picked) == 16 and picked[0] == 0 and picked[-1] == 53


def test_the_full_cascade_redraws_every_parameter_of_a_vit_attention_included(vit, gen):
    model = copy.deepcopy(vit)
    with torch.no_grad():  # "trained": no parameter at the value its reset would give it
        for p in model.parameters():
            p.add_(0.5)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    stages = cascade(model, torch.randn(1, 3, 32, 32, generator=gen))
    attention = [s for s in stages if "encoder.layers.encoder_layer_1.self_attention" in s.modules]
    assert len(attention) == 1 and "encoder.layers.encoder_layer_1.self_attention.out_proj" in attention[0].modules
    modules = dict(model.named_modules())
    for k, stage in enumerate(stages):
        randomise([modules[m] for m in stage.modules], seed=k)
    kept = [name for name, p in model.named_parameters() if torch.equal(p, before[name])]
    assert kept == []


def test_randomise_is_seeded_and_leaves_the_global_random_state(tiny_net):
    state = torch.random.get_rng_state()
    randomise([tiny_net.fc], seed=3)
    first = tiny_net.fc.weight.detach().clone()
    randomise([tiny_net.fc], seed=3)
    assert torch.equal(first, tiny_net.fc.weight) and torch.equal(state, torch.random.get_rng_state())
    randomise([tiny_net.fc], seed=4)
    assert not torch.equal(first, tiny_net.fc.weight)


def test_the_users_model_is_never_modified(tiny_net, gen):
    tiny_net.train()
    tiny_net.stem[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    images = torch.randn(4, 3, 16, 16, generator=gen)
    result = model_randomisation(tiny_net, images, layer="act", analysis=AnalysisOptions(bootstrap=20))
    assert tiny_net.training and all(m.training for m in tiny_net.modules())
    assert not tiny_net.stem[0].weight.requires_grad and tiny_net.fc.weight.requires_grad
    assert all(torch.equal(v, before[k]) for k, v in tiny_net.state_dict().items())
    assert all(not m._forward_hooks for m in tiny_net.modules())
    assert [s.name for s in result.stages] == ["fc", "features", "stem.0"]
    assert result.spearman.shape == result.ssim.shape == (3, 4)


def _centre_blob(model, images, targets):
    """An 'explanation' that ignores the model: the same centred Gaussian for every image."""
    _, _, h, w = images.shape
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    blob = torch.exp(-((y - h / 2) ** 2 + (x - w / 2) ** 2) / (2 * (h / 5) ** 2))
    return blob.float().expand(len(images), h, w)


def test_an_explanation_that_ignores_the_model_is_flagged(tiny_net, gen):
    images = torch.randn(40, 3, 16, 16, generator=gen)
    options = AnalysisOptions(bootstrap=50)
    result = model_randomisation(tiny_net, images, explain=_centre_blob, analysis=options)
    assert np.allclose(result.spearman, 1.0) and np.allclose(result.ssim, 1.0)
    check = sanity_check(result.final, Checks(), options)
    assert check.outcome == "fail" and check.value == pytest.approx(1.0) and check.n == 40


def test_the_demo_models_heatmaps_decorrelate_under_randomisation(demo_run):
    for name in ("shortcut", "clean"):
        result = demo_run.results[name]
        sanity = result.sanity
        assert sanity.final["value"] < DECORRELATED and sanity.final["ci"][1] < 0.5, (name, sanity.final)
        assert sanity.spearman.shape == (len(sanity.stages), 32)
        assert sanity.stages[0].name == "classifier" and sanity.stages[-1].name == "features.0"
        check = next(c for c in result.checks if c.name == "sanity:model_randomisation")
        assert check.outcome == "pass" and "features.0" in check.detail
        assert result.summary()["sanity"]["final_spearman"]["value"] == pytest.approx(sanity.final["value"])


def test_max_sanity_correlation_comes_from_flags_and_options():
    assert Checks().max_sanity_correlation == Threshold(0.5)
    assert load_config({"max_sanity_correlation": 0.3}, use_pyproject=False).checks.max_sanity_correlation == (
        Threshold(0.3)
    )
    assert load_config({"max_sanity_correlation": False}, use_pyproject=False).checks.max_sanity_correlation is None
    with pytest.raises(Exception, match="samples"):
        SanityOptions(samples=0)
