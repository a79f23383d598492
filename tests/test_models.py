"""Model specs, checkpoints and preprocessing resolution."""

from __future__ import annotations

import textwrap
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from auditcam.errors import InputError
from auditcam.models import (
    IMAGENET,
    Preprocessing,
    load_model,
    load_model_info,
    model_device,
    parse_size,
    parse_triple,
    sha256_file,
)


@pytest.fixture
def factory_file(tmp_path):
    path = tmp_path / "my model.py"
    path.write_text(
        textwrap.dedent(
            """
        import torch
        from torch import nn

        def build(num_classes=2):
            return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(4, num_classes))

        build.preprocessing = {"image_size": (32, 48), "resize": None, "mean": (0.5, 0.5, 0.5), "std": (0.2, 0.2, 0.2)}
        build.classes = ("cat", "dog")

        def not_a_model():
            return 42
        """
        )
    )
    return path


def test_torchvision_spec_with_pt_and_safetensors_weights(tmp_path, gen):
    reference = load_model("torchvision:resnet18", num_classes=3)
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.01)
    torch.save(reference.state_dict(), tmp_path / "w.pt")
    save_file(reference.state_dict(), str(tmp_path / "w.safetensors"))
    x = torch.randn(1, 3, 32, 32, generator=gen)
    for name in ("w.pt", "w.safetensors"):
        model, info = load_model_info("torchvision:resnet18", tmp_path / name, num_classes=3)
        assert not model.training
        torch.testing.assert_close(model(x), reference.eval()(x))
        assert info.weights_sha256 == sha256_file(tmp_path / name)
        assert info.preprocessing == IMAGENET


def test_common_checkpoint_layouts_are_unwrapped(tmp_path, gen):
    reference = load_model("torchvision:resnet18", num_classes=3)
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 7}, tmp_path / "ddp.pth")
    model = load_model("torchvision:resnet18", tmp_path / "ddp.pth", num_classes=3)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


def test_file_factory_declares_preprocessing_and_classes(factory_file):
    model, info = load_model_info(f"{factory_file}:build")
    assert info.classes == ("cat", "dog")
    assert info.preprocessing == Preprocessing((32, 48), None, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    assert model(torch.zeros(1, 3, 32, 48)).shape == (1, 2)


def test_flags_override_the_factory_preprocessing(factory_file):
    _, info = load_model_info(f"{factory_file}:build", image_size=(64, 64), mean=(0.1, 0.2, 0.3))
    assert info.preprocessing == Preprocessing((64, 64), None, (0.1, 0.2, 0.3), (0.2, 0.2, 0.2))


def test_module_factory_spec():
    model, info = load_model_info("auditcam.demo.models:tiny_cnn")
    assert info.classes == ("circle", "square", "cross")
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 3)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("torchvision:resnet9000", "torchvision has no model 'resnet9000'"),
        ("no_colon_here", "expected torchvision:NAME"),
        ("missing_file.py:build", "file not found: missing_file.py"),
        ("auditcam.nonexistent:build", "cannot import module 'auditcam.nonexistent'"),
        ("auditcam.models:nothing_here", "has no function 'nothing_here'"),
    ],
)
def test_bad_specs_are_input_errors(spec, message):
    with pytest.raises(InputError, match=message):
        load_model(spec)


def test_factory_returning_a_non_module_is_an_input_error(factory_file):
    with pytest.raises(InputError, match=r"returned int, not a torch\.nn\.Module"):
        load_model(f"{factory_file}:not_a_model")


def test_mismatched_weights_name_the_keys(tmp_path):
    torch.save(load_model("torchvision:resnet18", num_classes=3).state_dict(), tmp_path / "w.pt")
    with pytest.raises(
        InputError, match=r"does not match the architecture: .*'fc.weight'.*check --model and --num-classes"
    ):
        load_model("torchvision:resnet18", tmp_path / "w.pt", num_classes=5)


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"weights": load_model("torchvision:resnet18", num_classes=2), "x": object()}, tmp_path / "full.pt")
    with pytest.raises(InputError, match="cannot load as a weights-only checkpoint"):
        load_model("torchvision:resnet18", tmp_path / "full.pt", num_classes=2)


def test_missing_weights_file(tmp_path):
    with pytest.raises(InputError, match=r"--weights .*nope.pt: file not found"):
        load_model("torchvision:resnet18", tmp_path / "nope.pt")


def test_parse_size_and_triple():
    assert parse_size("224") == (224, 224)
    assert parse_size("224x320") == (224, 320)
    with pytest.raises(InputError, match="expected an integer or HxW"):
        parse_size("big")
    assert parse_triple("0.5,0.4,0.3", "--mean") == (0.5, 0.4, 0.3)
    with pytest.raises(InputError, match="--std '1,2': expected three"):
        parse_triple("1,2", "--std")


def test_to_uint8_undoes_the_normalisation_channels_last(gen):
    pictures = torch.randint(0, 256, (2, 3, 5, 7), generator=gen, dtype=torch.uint8)
    pre = Preprocessing(mean=(0.2, 0.5, 0.7), std=(0.1, 0.3, 0.25))
    inputs = pre.normalise(pictures.float() / 255)
    got = pre.to_uint8(inputs)
    assert got.dtype == np.uint8 and got.shape == (2, 5, 7, 3)
    np.testing.assert_array_equal(got, pictures.permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(pre.to_uint8(inputs[0]), got[0])  # one (3, H, W) image too


def test_model_device_is_the_first_parameter_or_buffer_device():
    assert model_device(nn.Linear(2, 2).to("meta")) == torch.device("meta")
    buffers_only = nn.BatchNorm2d(2, affine=False).to("meta")
    assert model_device(buffers_only) == torch.device("meta")
    assert model_device(nn.ReLU()) == torch.device("cpu")


def test_logits_of_reads_every_output_shape(gen):
    from collections import namedtuple

    from auditcam.models import logits_of

    logits = torch.randn(2, 3, generator=gen)
    Output = namedtuple("Output", "logits hidden")
    for output in (logits, Output(logits, None), {"logits": logits}, (logits, "aux"), [logits]):
        assert logits_of(output) is logits
    with pytest.raises(InputError, match=r"returned \(2, 3, 4\); auditcam needs logits of shape \(N, classes\)"):
        logits_of(torch.zeros(2, 3, 4))
    with pytest.raises(InputError, match="returned str"):
        logits_of("nope")


def test_center_crop_follows_timm_and_interpolation_reaches_the_resize():
    # timm: scale = floor(size / crop_pct), the shorter side for a square size, both sides otherwise.
    assert Preprocessing.center_crop((224, 224), 0.875).resize == 256
    assert Preprocessing.center_crop((32, 48), 0.9).resize == (35, 53)
    pre = Preprocessing.center_crop((32, 32), 0.9, interpolation="nearest")
    image = torch.arange(3 * 40 * 40, dtype=torch.uint8).reshape(3, 40, 40)
    out = pre.geometry()(image)
    # nearest resize 40 -> 35 then the 32 px centre crop: every value is one of the input's
    assert out.shape == (3, 32, 32) and set(out.unique().tolist()) <= set(image.unique().tolist())
    assert pre.describe()["interpolation"] == "nearest" and pre.describe()["resize"] == 35
    with pytest.raises(InputError, match="interpolation 'lanczos' is not supported"):
        Preprocessing(interpolation="lanczos")
    with pytest.raises(InputError, match=r"crop_pct 1\.5"):
        Preprocessing.center_crop((32, 32), 1.5)


def test_flags_crop_pct_and_interpolation_override_the_factory(factory_file):
    _, info = load_model_info(f"{factory_file}:build", crop_pct=0.8, interpolation="bicubic")
    assert info.preprocessing == Preprocessing((32, 48), (40, 60), (0.5, 0.5, 0.5), (0.2, 0.2, 0.2), "bicubic")


def test_model_args_are_python_literals():
    from auditcam.models import parse_model_args

    assert parse_model_args(["img_size=32", "depths=(1, 1)", "act=gelu"]) == {
        "img_size": 32,
        "depths": (1, 1),
        "act": "gelu",
    }
    with pytest.raises(InputError, match="--model-arg 'img_size': expected KEY=VALUE"):
        parse_model_args(["img_size"])
    model = load_model("torchvision:resnet18", model_args={"num_classes": 4, "zero_init_residual": True})
    assert model.fc.out_features == 4


def test_torchscript_and_exported_programs_are_refused(tmp_path, factory_file):
    from auditcam.cam import Explainer

    eager = load_model(f"{factory_file}:build")
    with warnings.catch_warnings():  # torch 2.9 deprecates TorchScript: what users still hand us
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.trace(eager, torch.zeros(1, 3, 32, 48))
    with pytest.raises(InputError, match="TorchScript module, which auditcam cannot explain: hooks cannot reach"):
        Explainer(scripted)
    scripted.save(str(tmp_path / "scripted.pt"))
    with pytest.raises(InputError, match=r"--weights .*scripted.pt is a TorchScript archive.*factory and state dict"):
        load_model(f"{factory_file}:build", tmp_path / "scripted.pt")
    with pytest.raises(InputError, match=r"--model .*scripted.pt.* is a TorchScript archive"):
        load_model(str(tmp_path / "scripted.pt"))
    exported = torch.export.export(eager, (torch.zeros(1, 3, 32, 48),))
    with pytest.raises(InputError, match=r"exported program \(torch.export\)"):
        Explainer(exported)
    torch.export.save(exported, tmp_path / "exported.pt2")
    with pytest.raises(InputError, match=r"exported.pt2 is an exported program"):
        load_model(f"{factory_file}:build", tmp_path / "exported.pt2")
