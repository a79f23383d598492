"""timm:NAME and hf:PATH audited end to end through the CLI, each with the preprocessing read
from the model's own config; the missing-extra and bad-input lines."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from auditcam import cli
from auditcam.errors import InputError
from auditcam.models import HF_MISSING, IMAGENET_MEAN, IMAGENET_STD, TIMM_MISSING, load_model_info

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

TINY_VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
TIMM_MODELS = [
    # (family, name, model arguments, --image-size or None: the data config decides)
    ("cnn", "resnet10t", {}, "32"),
    ("vit", "vit_tiny_patch16_224", TINY_VIT, None),
    (
        "swin",
        "swin_tiny_patch4_window7_224",
        {"img_size": 32, "window_size": 2, "embed_dim": 16, "depths": (1, 1), "num_heads": (1, 1)},
        None,
    ),
    ("hybrid", "vit_tiny_r_s16_p8_224", {"img_size": 64, "embed_dim": 32, "depth": 1, "num_heads": 2}, None),
]


def _audit(small_dataset, out, spec, extra):
    manifest, _ = small_dataset
    argv = ["audit", "--model", spec, "--data", str(manifest), "--out", str(out), "--no-progress"]
    argv += ["--bootstrap", "20", "--gallery-size", "2", *extra]
    assert cli.main(argv) in (cli.EXIT_PASS, cli.EXIT_FAIL)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return summary["meta"]


@pytest.mark.slow
@pytest.mark.parametrize(("family", "name", "model_args", "image_size"), TIMM_MODELS, ids=[m[0] for m in TIMM_MODELS])
def test_timm_models_are_audited_with_their_data_config(
    small_dataset, tmp_path, capsys, family, name, model_args, image_size
):
    torch.manual_seed(0)
    extra = ["--num-classes", "3", "--classes", str(small_dataset[0].parent / "classes.txt")]
    extra += [arg for key, value in model_args.items() for arg in ("--model-arg", f"{key}={value!r}")]
    extra += ["--image-size", image_size] if image_size else []
    meta = _audit(small_dataset, tmp_path / family, f"timm:{name}", extra)
    capsys.readouterr()
    # The reference: timm's own data config of the same architecture.
    config = timm.data.resolve_model_data_config(timm.create_model(name, num_classes=3, **model_args))
    side = int(image_size) if image_size else model_args["img_size"]
    expected = {
        "image_size": [side, side],
        "resize": None if image_size else math.floor(side / config["crop_pct"]),
        "mean": list(config["mean"]),
        "std": list(config["std"]),
        "interpolation": config["interpolation"],
    }
    assert meta["preprocessing"] == expected
    assert config["interpolation"] == "bicubic"  # not auditcam's bilinear default: the config was read


def _save_hf(folder, config, processor):
    model_class = transformers.AutoModelForImageClassification.from_config(config)
    model_class.save_pretrained(folder)
    processor.save_pretrained(folder)


LABELS = {0: "circle", 1: "square", 2: "cross"}


def _hf_cases():
    from transformers import (
        BitImageProcessor,
        ConvNextConfig,
        ConvNextImageProcessor,
        ResNetConfig,
        ViTConfig,
        ViTImageProcessor,
    )

    common = {"num_labels": 3, "id2label": LABELS, "label2id": {v: k for k, v in LABELS.items()}}
    return {
        # (config, processor, expected preprocessing: worked out from the processor's documented rules)
        "vit": (
            ViTConfig(
                image_size=32,
                patch_size=8,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                **common,
            ),
            ViTImageProcessor(
                size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.4], resample=3
            ),
            {
                "image_size": [32, 32],
                "resize": None,
                "mean": [0.4, 0.5, 0.6],
                "std": [0.2, 0.3, 0.4],
                "interpolation": "bicubic",
            },
        ),
        "convnext": (
            ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, **common),
            ConvNextImageProcessor(
                size={"shortest_edge": 32}, crop_pct=0.875, resample=2, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD
            ),
            # below 384 px: shortest edge to 32 / 0.875 = 36, then a 32 px centre crop
            {
                "image_size": [32, 32],
                "resize": 36,
                "mean": [0.485, 0.456, 0.406],
                "std": [0.229, 0.224, 0.225],
                "interpolation": "bilinear",
            },
        ),
        "resnet": (
            ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], **common),
            BitImageProcessor(
                size={"shortest_edge": 40},
                crop_size={"height": 32, "width": 32},
                do_center_crop=True,
                image_mean=[0.5, 0.5, 0.5],
                image_std=[0.5, 0.5, 0.5],
                resample=0,
            ),
            {
                "image_size": [32, 32],
                "resize": 40,
                "mean": [0.5, 0.5, 0.5],
                "std": [0.5, 0.5, 0.5],
                "interpolation": "nearest",
            },
        ),
    }


@pytest.mark.slow
@pytest.mark.parametrize("family", ["vit", "convnext", "resnet"])
def test_hugging_face_folders_are_audited_with_their_processor_and_labels(small_dataset, tmp_path, capsys, family):
    torch.manual_seed(0)
    config, processor, expected = _hf_cases()[family]
    folder = tmp_path / "saved"
    _save_hf(folder, config, processor)
    # No --classes: the class names come from config.id2label.
    meta = _audit(small_dataset, tmp_path / "out", f"hf:{folder}", [])
    capsys.readouterr()
    assert meta["preprocessing"] == expected
    _, info = load_model_info(f"hf:{folder}")
    assert info.classes == ("circle", "square", "cross")


def test_a_folder_without_config_or_without_a_classification_head_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["featuremaps", "--model", f"hf:{tmp_path / 'empty'}", "--image", "x.png", "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no config.json" in err
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    ViTModel(config).save_pretrained(tmp_path / "backbone")
    with pytest.raises(InputError, match="ViTModel, which has no image-classification head"):
        load_model_info(f"hf:{tmp_path / 'backbone'}")


def test_an_unknown_timm_name_lists_the_closest(capsys):
    argv = ["featuremaps", "--model", "timm:resnet5O", "--image", "x.png", "--out", "o"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "timm has no model 'resnet5O'; closest: resnet50" in err


@pytest.mark.parametrize(
    ("spec", "module", "message"), [("timm:resnet18", "timm", TIMM_MISSING), ("hf:x", "transformers", HF_MISSING)]
)
def test_a_missing_extra_says_what_to_install(monkeypatch, capsys, spec, module, message):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    assert cli.main(["featuremaps", "--model", spec, "--image", "x.png", "--out", "o"]) == 2
    assert capsys.readouterr().err == f"auditcam: error: {message}\n"
    assert "pip install" in message


def test_model_args_reach_the_timm_constructor():
    model, _ = load_model_info("timm:vit_tiny_patch16_224", num_classes=4, model_args=TINY_VIT)
    assert model.patch_embed.img_size == (32, 32) and len(model.blocks) == 2
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 4)
    with pytest.raises(InputError, match="check --model-arg"):
        load_model_info("timm:resnet18", model_args={"no_such_argument": 1})
