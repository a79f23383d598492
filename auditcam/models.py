"""Load a classifier from a model spec and describe the preprocessing it expects.

A spec is ``torchvision:NAME``, ``path/to/file.py:function`` or ``package.module:function``.
Weights load without unpickling arbitrary objects (``torch.load(weights_only=True)`` or
safetensors). A factory may declare ``preprocessing`` and ``classes`` as attributes of the
function, so users do not repeat them on every command line.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.transforms import v2

from auditcam.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How raw images become model input: optional shorter-side resize, then a resize or
    centre crop to ``image_size`` (H, W), then normalisation with ``mean`` and ``std``."""

    image_size: tuple[int, int] = (224, 224)
    resize: int | None = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def geometry(self) -> v2.Transform:
        """The joint geometric transform for image, mask and boxes (no normalisation)."""
        if self.resize is None:
            return v2.Resize(self.image_size, antialias=True)
        return v2.Compose([v2.Resize(self.resize, antialias=True), v2.CenterCrop(self.image_size)])

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
            "resize": self.resize,
            "mean": list(self.mean),
            "std": list(self.std),
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
            f"--model {spec!r}: expected torchvision:NAME, path/to/file.py:function or package.module:function"
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


def _build(spec: str, num_classes: int | None) -> tuple[nn.Module, Any]:
    """Instantiate the architecture; return it with the factory (None for torchvision)."""
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if spec.startswith("torchvision:"):
        import torchvision.models

        name = spec.split(":", 1)[1]
        if name not in torchvision.models.list_models():
            raise InputError(
                f"--model {spec!r}: torchvision has no model {name!r}; "
                "see torchvision.models.list_models() for the names"
            )
        return torchvision.models.get_model(name, weights=None, **kwargs), None
    factory = _import_factory(spec)
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        if kwargs:
            raise InputError(f"--model {spec!r}: the factory does not take num_classes ({exc})") from None
        raise
    if not isinstance(model, nn.Module):
        raise InputError(f"--model {spec!r}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    return model, factory


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
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--weights {path}: file not found")
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
    model.load_state_dict(state)


def _factory_preprocessing(factory: Any) -> Preprocessing | None:
    declared = getattr(factory, "preprocessing", None)
    if declared is None or isinstance(declared, Preprocessing):
        return declared
    if isinstance(declared, Mapping):
        return Preprocessing(**declared)
    raise InputError("the model factory's `preprocessing` attribute must be a Preprocessing or a dict")


def load_model_info(
    spec: str,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    *,
    image_size: tuple[int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> tuple[nn.Module, ModelInfo]:
    """Build the model in eval mode, load its weights, and resolve its preprocessing:
    explicit arguments override what the factory declares, which overrides ImageNet's."""
    model, factory = _build(spec, num_classes)
    if weights is not None:
        load_weights(model, weights)
    model.eval()
    pre = _factory_preprocessing(factory) or IMAGENET
    if image_size is not None:
        # An explicit size replaces the crop too: resize straight to the size asked for.
        pre = Preprocessing(image_size, None, pre.mean, pre.std)
    if mean is not None:
        pre = Preprocessing(pre.image_size, pre.resize, tuple(mean), pre.std)
    if std is not None:
        pre = Preprocessing(pre.image_size, pre.resize, pre.mean, tuple(std))
    classes = getattr(factory, "classes", None)
    info = ModelInfo(
        spec=spec,
        weights=None if weights is None else str(weights),
        weights_sha256=None if weights is None else sha256_file(weights),
        preprocessing=pre,
        classes=None if classes is None else tuple(classes),
    )
    return model, info


def load_model(spec: str, weights: str | Path | None = None, num_classes: int | None = None) -> nn.Module:
    """Build a classifier from a spec, load its weights and put it in eval mode."""
    return load_model_info(spec, weights, num_classes)[0]
