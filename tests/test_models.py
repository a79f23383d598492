"""Model specs, checkpoints and preprocessing resolution."""

from __future__ import annotations

import textwrap

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
