"""Load a classifier from a model spec and describe the preprocessing it expects.

A spec is ``torchvision:NAME``, ``timm:NAME``, ``hf:PATH`` (a Hugging Face folder or hub id),
``path/to/file.py:function`` or ``package.module:function``. Weights load without unpickling
arbitrary objects (``torch.load(weights_only=True)`` or safetensors). A factory may declare
``preprocessing`` and ``classes`` as attributes of the function; timm models bring their data
config and Hugging Face folders their image-processor config and ``id2label``, so users do not
repeat them on every command line. timm and transformers are optional extras.

TorchScript and exported programs are refused: hooks cannot reach a scripted graph.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib
import importlib.util
import math
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from auditcam.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Resampling of the image (masks are always resized nearest); what tensors support in torchvision.
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")

TIMM_MISSING = 'timm is not installed: pip install "auditcam[timm]"'
HF_MISSING = 'transformers is not installed: pip install "auditcam[hf]"'
NOT_HOOKABLE = (
    "{what} is {kind}, which auditcam cannot explain: hooks cannot reach a scripted or exported graph; "
    "load the eager model from its factory and state dict (--model file.py:function --weights state_dict.pt)"
)


def logits_of(output: Any) -> torch.Tensor:
    """The (N, classes) logits in what a classifier returns: a tensor, an object with ``.logits``
    (a Hugging Face ``ModelOutput``), a dict with ``"logits"``, or a tuple/list led by the logits."""
    logits = output
    if not torch.is_tensor(logits):
        if hasattr(logits, "logits"):
            logits = logits.logits
        elif isinstance(logits, Mapping) and "logits" in logits:
            logits = logits["logits"]
        elif isinstance(logits, tuple | list) and logits:
            logits = logits[0]
    if not torch.is_tensor(logits) or logits.dim() != 2:
        shape = tuple(logits.shape) if torch.is_tensor(logits) else type(output).__name__
        raise InputError(f"the model returned {shape}; auditcam needs logits of shape (N, classes)")
    return logits


@dataclass(frozen=True)
class Preprocessing:
    """How raw images become model input: optional resize (an int: the shorter side; (H, W): both
    sides), then a resize or centre crop to ``image_size`` (H, W), then normalisation with ``mean``
    and ``std``. ``interpolation`` (:data:`INTERPOLATIONS`) resamples the image; masks stay nearest."""

    image_size: tuple[int, int] = (224, 224)
    resize: int | tuple[int, int] | None = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise InputError(
                f"interpolation {self.interpolation!r} is not supported; choose from {', '.join(INTERPOLATIONS)}"
            )

    @classmethod
    def center_crop(
        cls,
        image_size: tuple[int, int],
        crop_pct: float,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: str = "bilinear",
    ) -> Preprocessing:
        """timm's evaluation transform: resize to ``image_size / crop_pct`` (the shorter side when
        the size is square), then centre crop ``image_size``."""
        if not 0 < crop_pct <= 1:
            raise InputError(f"crop_pct {crop_pct}: expected a fraction in (0, 1], e.g. 0.875")
        height, width = (math.floor(side / crop_pct) for side in image_size)
        resize = height if height == width else (height, width)
        return cls(tuple(image_size), resize, tuple(mean), tuple(std), interpolation)  # type: ignore[arg-type]

    def geometry(self) -> v2.Transform:
        """The joint geometric transform for image, mask and boxes (no normalisation)."""
        mode = InterpolationMode(self.interpolation)
        if self.resize is None:
            return v2.Resize(self.image_size, interpolation=mode, antialias=True)
        return v2.Compose([v2.Resize(self.resize, interpolation=mode, antialias=True), v2.CenterCrop(self.image_size)])

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1], shape (..., 3, H, W) -> model input."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device)[:, None, None]
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device)[:, None, None]
        return (images - mean) / std

    def denormalise(self, inputs: torch.Tensor) -> torch.Tensor:
        """Model input -> float images in [0, 1] (for display)."""
        mean = torch.tensor(self.mean, dtype=inputs.dtype, device=inputs.device)[:, None, None]
        std = torch.tensor(self.std, dtype=inputs.dtype, device=inputs.device)[:, None, None]
        return (inputs * std + mean).clamp(0, 1)

    def to_uint8(self, inputs: torch.Tensor) -> np.ndarray:
        """Model input (..., 3, H, W) -> displayable uint8 pictures (..., H, W, 3) on the host:
        de-normalised, scaled to 0-255 and rounded."""
        pictures = self.denormalise(inputs.detach().float().cpu()).movedim(-3, -1)
        return (pictures.numpy() * 255 + 0.5).astype(np.uint8)

    def describe(self) -> dict[str, Any]:
        """JSON-friendly record of the settings, for summaries and run fingerprints."""
        return {
            "image_size": list(self.image_size),
            "resize": list(self.resize) if isinstance(self.resize, tuple) else self.resize,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }


IMAGENET = Preprocessing()


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU for a model without any)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@dataclass(frozen=True)
class ModelInfo:
    """What auditcam knows about a loaded model beyond the module itself."""

    spec: str
    weights: str | None
    weights_sha256: str | None
    preprocessing: Preprocessing
    classes: tuple[str, ...] | None


def parse_size(text: str) -> tuple[int, int]:
    """``"224"`` -> (224, 224); ``"224x320"`` -> (224, 320) as (H, W)."""
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"--image-size {text!r}: expected an integer or HxW, e.g. 224 or 224x320") from None
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) <= 0:
        raise InputError(f"--image-size {text!r}: expected an integer or HxW, e.g. 224 or 224x320")
    return sizes[0], sizes[1]


def parse_triple(text: str, flag: str) -> tuple[float, float, float]:
    """``"0.5,0.5,0.5"`` -> (0.5, 0.5, 0.5); one value per RGB channel."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise InputError(f"{flag} {text!r}: expected three comma-separated numbers, e.g. 0.5,0.5,0.5")
    return values  # type: ignore[return-value]


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _import_factory(spec: str):
    """Resolve ``file.py:function`` or ``package.module:function`` to the callable."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise InputError(
            f"--model {spec!r}: expected torchvision:NAME, timm:NAME, hf:PATH, path/to/file.py:function "
            "or package.module:function"
        )
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise InputError(f"--model {spec!r}: file not found: {path}")
        module_name = f"auditcam_user_model_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise InputError(f"--model {spec!r}: cannot import {path} as Python")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            raise InputError(f"--model {spec!r}: cannot import module {target!r} ({exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"--model {spec!r}: {target} has no function {attr!r}")
    return factory


@dataclass(frozen=True)
class _Built:
    """An instantiated architecture and what its source says about it."""

    model: nn.Module
    preprocessing: Preprocessing | None = None
    classes: tuple[str, ...] | None = None


def parse_model_args(texts: Sequence[str] | None) -> dict[str, Any]:
    """``["img_size=32", "depths=(1, 1)"]`` -> {"img_size": 32, "depths": (1, 1)}: keyword arguments
    for the model's constructor; a value that is no Python literal stays a string."""
    parsed: dict[str, Any] = {}
    for text in texts or ():
        key, sep, value = text.partition("=")
        if not sep or not key.strip().isidentifier():
            raise InputError(f"--model-arg {text!r}: expected KEY=VALUE, e.g. img_size=32")
        try:
            parsed[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            parsed[key.strip()] = value.strip()
    return parsed


def check_hookable(model: Any, what: str = "the model") -> None:
    """Refuse TorchScript modules and exported programs with one line: auditcam's hooks need an
    eager ``nn.Module``."""
    kind = None
    if isinstance(model, torch.jit.ScriptModule | torch.jit.ScriptFunction):
        kind = "a TorchScript module"
    elif isinstance(model, torch.export.ExportedProgram):
        kind = "an exported program (torch.export)"
    if kind is not None:
        raise InputError(NOT_HOOKABLE.format(what=what, kind=kind))


def _refuse_archive(path: Path, flag: str) -> None:
    """A TorchScript archive or exported-program file handed over as weights or as the model."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return
    if any(n.endswith("/constants.pkl") or "/code/__torch__/" in n for n in names):
        raise InputError(NOT_HOOKABLE.format(what=f"{flag} {path}", kind="a TorchScript archive"))
    if any(n.endswith("/archive_format") for n in names):
        raise InputError(NOT_HOOKABLE.format(what=f"{flag} {path}", kind="an exported program (torch.export)"))


def _build_torchvision(name: str, kwargs: dict[str, Any]) -> _Built:
    import torchvision.models

    if name not in torchvision.models.list_models():
        raise InputError(
            f"--model 'torchvision:{name}': torchvision has no model {name!r}; "
            "see torchvision.models.list_models() for the names"
        )
    return _Built(torchvision.models.get_model(name, weights=None, **kwargs))


def _build_timm(name: str, kwargs: dict[str, Any], pretrained: bool) -> _Built:
    """``timm.create_model`` and the model's data config: input size (an ``img_size`` model
    argument sets it), crop percentage, interpolation, mean and std."""
    try:
        import timm
        from timm.data import resolve_model_data_config
    except ImportError:
        raise InputError(TIMM_MISSING) from None
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"closest: {', '.join(close)}" if close else "see timm.list_models() for the names"
        raise InputError(f"--model 'timm:{name}': timm has no model {name!r}; {hint}")
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as exc:
        raise InputError(f"--model 'timm:{name}': {exc}; check --model-arg and --num-classes") from None
    config = resolve_model_data_config(model)
    size = kwargs.get("img_size", config["input_size"][1:])
    size = (size, size) if isinstance(size, int) else tuple(size)
    interpolation = config.get("interpolation", "bilinear")
    interpolation = interpolation if interpolation in INTERPOLATIONS else "bicubic"  # timm's "random" trains only
    crop_mode = config.get("crop_mode", "center")
    pre = Preprocessing.center_crop(size, config["crop_pct"], config["mean"], config["std"], interpolation)
    if crop_mode == "squash":  # both sides to size / crop_pct, whatever the aspect ratio, then the crop
        scaled = tuple(math.floor(side / config["crop_pct"]) for side in size)
        pre = replace(pre, resize=scaled)
    elif crop_mode != "center":
        raise InputError(
            f"--model 'timm:{name}': its data config crops with crop_mode={crop_mode!r}, which auditcam does "
            "not reproduce; give --image-size and --crop-pct"
        )
    return _Built(model, pre)


_PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL.Image.Resampling codes


def _hf_preprocessing(path: str) -> Preprocessing | None:
    """The image processor's geometry and normalisation; None when the folder has none."""
    from transformers import AutoImageProcessor

    try:
        config = AutoImageProcessor.from_pretrained(path).to_dict()
    except (OSError, ValueError):
        return None
    resample = config.get("resample", 2)
    interpolation = _PIL_RESAMPLE.get(resample) if isinstance(resample, int) else str(resample).lower()
    if interpolation not in INTERPOLATIONS:
        raise InputError(
            f"--model 'hf:{path}': the image processor resamples with {resample!r}; "
            f"give --interpolation ({', '.join(INTERPOLATIONS)})"
        )
    normalise = config.get("do_normalize", True)
    mean = tuple(config.get("image_mean") or IMAGENET_MEAN) if normalise else (0.0, 0.0, 0.0)
    std = tuple(config.get("image_std") or IMAGENET_STD) if normalise else (1.0, 1.0, 1.0)
    size, crop = config.get("size") or {}, config.get("crop_size") if config.get("do_center_crop") else None
    crop_hw = None if not crop else (crop["height"], crop["width"])
    if "shortest_edge" in size:
        edge = size["shortest_edge"]
        if config.get("crop_pct") is not None:  # ConvNeXt/ResNet: below 384 px, resize edge / crop_pct and crop
            if edge < 384:
                return Preprocessing.center_crop((edge, edge), config["crop_pct"], mean, std, interpolation)
            return Preprocessing((edge, edge), None, mean, std, interpolation)  # type: ignore[arg-type]
        if crop_hw is None:
            raise InputError(
                f"--model 'hf:{path}': the image processor resizes the shortest edge without a crop, so images "
                "keep their aspect ratio; give --image-size"
            )
        return Preprocessing(crop_hw, edge, mean, std, interpolation)  # type: ignore[arg-type]
    if "height" in size and "width" in size:
        resized = (size["height"], size["width"])
        if crop_hw is not None:
            return Preprocessing(crop_hw, resized, mean, std, interpolation)  # type: ignore[arg-type]
        return Preprocessing(resized, None, mean, std, interpolation)  # type: ignore[arg-type]
    raise InputError(f"--model 'hf:{path}': cannot read the image processor's size {size!r}; give --image-size")


def _hf_classes(id2label: Mapping[Any, str]) -> tuple[str, ...] | None:
    """Class names in output order; None for transformers' placeholders LABEL_0, LABEL_1, ..."""
    labels = [id2label[key] for key in sorted(id2label, key=int)]
    return None if labels == [f"LABEL_{i}" for i in range(len(labels))] else tuple(labels)


def _build_hf(path: str, kwargs: dict[str, Any], num_classes: int | None) -> _Built:
    """``AutoModelForImageClassification.from_pretrained`` of a local folder (or a hub id where the
    network allows), with classes from ``config.id2label`` and the folder's image processor."""
    try:
        import transformers
    except ImportError:
        raise InputError(HF_MISSING) from None
    spec = f"--model 'hf:{path}'"
    folder = Path(path)
    if folder.exists() and not (folder / "config.json").is_file():
        raise InputError(f"{spec}: {folder} has no config.json; save the model there with save_pretrained()")
    try:
        config = transformers.AutoConfig.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise InputError(f"{spec}: cannot read the model config ({str(exc).splitlines()[0]})") from None
    heads = [a for a in (config.architectures or ()) if not a.endswith("ForImageClassification")]
    if heads and len(heads) == len(config.architectures):
        raise InputError(
            f"{spec}: the folder holds a {heads[0]}, which has no image-classification head; "
            "save a ...ForImageClassification model"
        )
    if num_classes is not None and num_classes != config.num_labels:
        raise InputError(f"{spec}: --num-classes {num_classes}, but config.json has {config.num_labels} labels")
    try:
        model = transformers.AutoModelForImageClassification.from_pretrained(path, config=config)
    except ValueError as exc:
        raise InputError(
            f"{spec}: a {type(config).__name__} has no image-classification head in transformers "
            f"({str(exc).splitlines()[0][:120]})"
        ) from None
    return _Built(model, _hf_preprocessing(path), _hf_classes(config.id2label))


def _build(
    spec: str, num_classes: int | None, model_args: Mapping[str, Any] | None = None, pretrained: bool = False
) -> _Built:
    """Instantiate the architecture the spec names, with what its source declares."""
    kwargs = dict(model_args or {})
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    scheme, _, name = spec.partition(":")
    if pretrained and scheme != "timm":
        raise InputError("--pretrained asks timm for its own weights: it needs a timm:NAME model")
    if scheme == "timm":
        return _build_timm(name, kwargs, pretrained)
    if scheme == "hf":
        kwargs.pop("num_classes", None)
        return _build_hf(name, kwargs, num_classes)
    if scheme == "torchvision":
        return _build_torchvision(name, kwargs)
    if Path(spec).suffix in (".pt", ".pth", ".pt2", ".ts") and Path(spec).is_file():
        _refuse_archive(Path(spec), "--model")
    factory = _import_factory(spec)
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        if kwargs:
            raise InputError(f"--model {spec!r}: the factory does not take {', '.join(kwargs)} ({exc})") from None
        raise
    check_hookable(model, f"--model {spec!r}")
    if not isinstance(model, nn.Module):
        raise InputError(f"--model {spec!r}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    classes = getattr(factory, "classes", None)
    return _Built(model, _factory_preprocessing(factory), None if classes is None else tuple(classes))


def _unwrap_state_dict(obj: Any, path: Path) -> Mapping[str, torch.Tensor]:
    """Accept the common checkpoint layouts: a plain state dict, {'state_dict': ...},
    {'model': ...}; strip a DistributedDataParallel ``module.`` prefix."""
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise InputError(f"--weights {path}: not a state dict of tensors; save model.state_dict()")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict from ``.safetensors`` or ``.pt``/``.pth`` (weights_only) into model."""
    model.load_state_dict(read_weights(model, path))


def read_weights(model: nn.Module, path: str | Path) -> Mapping[str, torch.Tensor]:
    """The state dict in ``path`` (``.safetensors``, or ``.pt``/``.pth`` loaded weights_only),
    checked against ``model`` without loading it: a missing file, an unreadable one, or one whose
    keys or shapes do not fit the model is an :class:`InputError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--weights {path}: file not found")
    _refuse_archive(path, "--weights")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:
            raise InputError(f"--weights {path}: not a readable safetensors file ({exc})") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise InputError(
                f"--weights {path}: cannot load as a weights-only checkpoint "
                f"({str(exc).splitlines()[0]}); save model.state_dict() with torch.save"
            ) from None
    state = _unwrap_state_dict(state, path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    resized = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys (e.g. {missing[0]!r})")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[0]!r})")
    if resized:
        key = resized[0]
        parts.append(
            f"{len(resized)} tensors of another shape (e.g. {key!r}: {tuple(state[key].shape)} in the file, "
            f"{tuple(expected[key].shape)} in the model)"
        )
    if parts:
        raise InputError(
            f"--weights {path}: does not match the architecture: {'; '.join(parts)}; check --model and --num-classes"
        )
    return state


def _factory_preprocessing(factory: Any) -> Preprocessing | None:
    declared = getattr(factory, "preprocessing", None)
    if declared is None or isinstance(declared, Preprocessing):
        return declared
    if isinstance(declared, Mapping):
        return Preprocessing(**declared)
    raise InputError("the model factory's `preprocessing` attribute must be a Preprocessing or a dict")


def _override(
    pre: Preprocessing,
    image_size: tuple[int, int] | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    interpolation: str | None,
    crop_pct: float | None,
) -> Preprocessing:
    """The model's preprocessing with the settings the user gave explicitly."""
    if crop_pct is not None:
        pre = Preprocessing.center_crop(image_size or pre.image_size, crop_pct, pre.mean, pre.std, pre.interpolation)
    elif image_size is not None:
        # An explicit size replaces the crop too: resize straight to the size asked for.
        pre = replace(pre, image_size=tuple(image_size), resize=None)
    if mean is not None:
        pre = replace(pre, mean=tuple(mean))
    if std is not None:
        pre = replace(pre, std=tuple(std))
    if interpolation is not None:
        pre = replace(pre, interpolation=interpolation)
    return pre


def load_model_info(
    spec: str,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    *,
    image_size: tuple[int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    interpolation: str | None = None,
    crop_pct: float | None = None,
    model_args: Mapping[str, Any] | None = None,
    pretrained: bool = False,
) -> tuple[nn.Module, ModelInfo]:
    """Build the model in eval mode, load its weights, and resolve its preprocessing: explicit
    arguments override what the model declares (factory attribute, timm data config, Hugging Face
    image processor), which overrides ImageNet's. ``model_args`` go to the model's constructor;
    ``pretrained`` asks timm for its own weights (network)."""
    built = _build(spec, num_classes, model_args, pretrained)
    model = built.model
    if weights is not None:
        load_weights(model, weights)
    model.eval()
    pre = _override(built.preprocessing or IMAGENET, image_size, mean, std, interpolation, crop_pct)
    info = ModelInfo(
        spec=spec,
        weights=None if weights is None else str(weights),
        weights_sha256=None if weights is None else sha256_file(weights),
        preprocessing=pre,
        classes=built.classes,
    )
    return model, info


def load_model(
    spec: str,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    *,
    model_args: Mapping[str, Any] | None = None,
    pretrained: bool = False,
) -> nn.Module:
    """Build a classifier from a spec, load its weights and put it in eval mode."""
    return load_model_info(spec, weights, num_classes, model_args=model_args, pretrained=pretrained)[0]
