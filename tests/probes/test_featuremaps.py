"""Feature maps: the conv arithmetic, capture on torchvision models, grids, the page and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from auditcam import cli
from auditcam.demo import MODEL_SPEC
from auditcam.errors import InputError
from auditcam.probes.featuremaps import (
    SEPARATOR_RGB,
    capture,
    channel_grid,
    conv_output_size,
    predicted_shape,
    top_channels,
)
from tests.htmlcheck import external_references, parse_page


def test_conv_arithmetic_by_hand():
    assert conv_output_size(224, kernel=7, stride=2, padding=3, dilation=1) == 112  # ResNet's stem
    assert conv_output_size(10, kernel=3, stride=3, padding=1, dilation=1) == 4  # floor(9 / 3 + 1)
    assert conv_output_size(5, kernel=3, stride=1, padding=0, dilation=2) == 1  # effective kernel 5
    assert conv_output_size(7, kernel=2, stride=2, padding=0, dilation=1) == 3  # floor(2.5 + 1)


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "dilation"),
    [(3, 1, 1, 1), (5, 2, 0, 1), (3, 2, 2, 2), ((3, 1), (2, 1), (0, 1), (1, 3)), (3, 1, "same", 2), (4, 1, "valid", 1)],
)
def test_the_prediction_equals_what_torch_computes(kernel, stride, padding, dilation, gen):
    conv = nn.Conv2d(2, 3, kernel, stride=stride, padding=padding, dilation=dilation)
    for size in ((11, 13), (16, 16), (9, 20)):
        measured = conv(torch.randn(1, 2, *size, generator=gen)).shape[1:]
        assert predicted_shape(conv, size) == tuple(measured)


@pytest.mark.parametrize("name", ["resnet18", "vgg11", "densenet121"])
def test_every_conv_of_torchvision_models_has_its_predicted_shape(name, gen):
    model = torchvision.models.get_model(name, num_classes=3).eval()
    layers = capture(model, torch.randn(1, 3, 64, 64, generator=gen))
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert len(layers) == n_convs
    for layer in layers:
        assert layer.predicted == layer.output_shape and layer.matches, layer.row()
        assert layer.activations.shape == (1, *layer.output_shape)
    assert layers[0].input_shape == (3, 64, 64)


def test_capture_leaves_the_model_as_it_was(tiny_net, gen):
    tiny_net.train()
    tiny_net.fc.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    layers = capture(tiny_net, torch.randn(2, 3, 16, 16, generator=gen))
    assert [layer.name for layer in layers] == ["stem.0", "features"]
    assert tiny_net.training and not tiny_net.fc.weight.requires_grad and tiny_net.stem[0].weight.requires_grad
    assert all(torch.equal(v, before[k]) for k, v in tiny_net.state_dict().items())
    assert all(not m._forward_hooks for m in tiny_net.modules())
    (only,) = capture(tiny_net, torch.randn(1, 3, 16, 16, generator=gen), ["act"])
    assert only.kind == "ReLU" and only.predicted is None and only.matches is None


def test_transformer_layers_are_captured_as_grids(vit, swin, gen):
    x = torch.randn(2, 3, 32, 32, generator=gen)
    (tokens,) = capture(vit, x, ["encoder.layers.encoder_layer_1.ln_1"])
    assert tokens.output_shape == (17, 16) and tokens.activations.shape == (2, 16, 4, 4)
    (channels_last,) = capture(swin, x, ["features"])
    assert channels_last.output_shape == (4, 4, 24) and channels_last.activations.shape == (2, 24, 4, 4)
    kept = []
    handle = vit.encoder.layers.encoder_layer_1.ln_1.register_forward_hook(lambda _m, _i, out: kept.append(out))
    capture(vit, x, ["encoder.layers.encoder_layer_1.ln_1"])
    handle.remove()
    # Patch token 1 + 4 i + j is cell (i, j); the class token is not shown.
    expected = kept[0][:, 1:].reshape(2, 4, 4, 16).permute(0, 3, 1, 2)
    np.testing.assert_array_equal(tokens.activations, expected.numpy())
    assert [layer.name for layer in capture(vit, x)] == ["conv_proj"]  # the scan of every conv is unchanged


def test_a_named_layer_that_is_no_grid_is_an_input_error(vit, gen):
    with pytest.raises(InputError, match=r"layer 'heads.head' outputs \(1, 3\), which is no feature map"):
        capture(vit, torch.randn(1, 3, 32, 32, generator=gen), ["heads.head"])
    assert all(not m._forward_hooks for m in vit.modules())


def test_a_module_that_runs_twice_is_captured_twice(gen):
    conv = nn.Conv2d(3, 3, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), conv)
    assert [layer.name for layer in capture(model, torch.randn(1, 3, 8, 8, generator=gen))] == ["0", "0#2"]


def test_grids_show_the_most_active_channels_brightest_first():
    activations = np.zeros((5, 4, 4), dtype=np.float32)
    for c, level in enumerate([0.1, 3.0, -1.0, 2.0, 0.5]):
        activations[c] = level
    activations[1, 0, 0] = 5.0  # channel 1: highest mean and the single highest value
    assert top_channels(activations, 3).tolist() == [1, 3, 4]
    grid, channels = channel_grid(activations, k=4, cell=8)
    assert channels.tolist() == [1, 3, 4, 0]
    # 2 x 2 cells of 8 px (4 px maps enlarged twice) with 1 px separators
    assert grid.shape == (2 * 9 + 1, 2 * 9 + 1, 3) and tuple(grid[0, 0]) == SEPARATOR_RGB
    first_cell = grid[1:9, 1:9, 0]
    assert first_cell[0, 0] == 255 and first_cell[0, 0] == first_cell[1, 1]  # channel 1's peak, nearest-enlarged
    fourth = grid[10:18, 10:18, 0]  # channel 0 (0.1), the darkest shown: black
    assert (fourth == 0).all() and (grid[1:9, 10:18, 0] > fourth).all()  # channel 3 (2.0) is brighter


@pytest.fixture
def picture(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "<b>x's image.png"
    Image.fromarray(rng.integers(0, 255, (80, 70, 3), dtype=np.uint8)).save(path)
    return path


def test_the_featuremaps_command_writes_a_page_pngs_and_the_table(picture, tmp_path, capsys):
    out = tmp_path / "maps"
    args = ["featuremaps", "--model", MODEL_SPEC, "--image", str(picture), "--out", str(out), "--channels", "4"]
    assert cli.main(args) == cli.EXIT_PASS
    assert "4 layer outputs of 1 image(s)" in capsys.readouterr().out
    html = (out / "featuremaps.html").read_text(encoding="utf-8")
    tags = parse_page(html)
    assert external_references(html) == [] and "<b>x" not in html and "&lt;b&gt;x&#39;s image.png" in html
    csp = [a["content"] for t, a in tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0] and "script-src 'none'" in csp[0]
    assert not any("style" in a for _, a in tags)  # the CSP allows no inline style attribute
    assert all(a["src"].startswith("data:image/png;base64,") for t, a in tags if t == "img")
    table = json.loads((out / "layers.json").read_text(encoding="utf-8"))
    layers = table[0]["layers"]
    assert [layer["name"] for layer in layers] == ["features.0", "features.4", "features.8", "features.11"]
    assert all(layer["predicted"] == layer["output"] and layer["matches"] for layer in layers)
    assert layers[0]["input"] == [3, 64, 64] and layers[-1]["output"] == [64, 16, 16]
    for layer in layers:
        side = layer["output"][1]
        cell = side * max(1, -(-48 // side))  # 64 px maps stay 64 px; 16 px maps are enlarged to 48
        with Image.open(out / layer["png"]) as png:
            assert png.size == (2 * (cell + 1) + 1,) * 2  # a 2 x 2 grid with 1 px separators


def test_the_featuremaps_command_reports_bad_input_in_one_line(tmp_path, capsys):
    args = ["featuremaps", "--model", MODEL_SPEC, "--image", str(tmp_path / "missing.png"), "--out", str(tmp_path)]
    assert cli.main(args) == cli.EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing.png" in err and "not found" in err
    bad_layer = ["featuremaps", "--model", MODEL_SPEC, "--image", str(Path(__file__)), "--layer", "nope"]
    assert cli.main([*bad_layer, "--out", str(tmp_path)]) == cli.EXIT_INPUT
