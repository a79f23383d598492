"""Any Captum attribution as an auditcam method: the same Explanation, scoring and audit.

A :class:`CaptumMethod` names a ``captum.attr`` class (or holds a ready-made attribution) and
turns its attributions into maps like ours: summed over channels (colour channels of an
input-space attribution, feature channels of a layer attribution), clipped at 0 (``sign=
"positive"``: evidence for the target, like Grad-CAM's ReLU) or summed in absolute value
(``sign="absolute_value"``), and upsampled to the input size (bilinear, ``align_corners=False``)
when the attribution lives at a layer's resolution. In a method list it is ``"captum:NAME"``
(the CLI's ``--method captum:IntegratedGradients``) or the object itself.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from auditcam.errors import InputError
from auditcam.models import logits_of

CAPTUM_PREFIX = "captum:"
SIGNS = ("positive", "absolute_value")
NEEDS_FEATURE_MAP = (
    "{method} reads layer {layer!r} as a feature map (N, C, H, W), but it outputs {layout}; "
    "use a built-in method (gradcam, ...), which lays it over the image, or an input attribution "
    "such as captum:IntegratedGradients"
)


def _occlusion_defaults(kwargs: dict[str, Any], images: torch.Tensor) -> None:
    """Occlusion-style windows, unless given: 1/8 of the image, moved by half a window (Captum
    requires a window and would move it one pixel at a time)."""
    c, h, w = images.shape[1:]
    window = kwargs.setdefault("sliding_window_shapes", (c, max(1, h // 8), max(1, w // 8)))
    if isinstance(window, tuple) and len(window) == 3:
        kwargs.setdefault("strides", (window[0], max(1, window[1] // 2), max(1, window[2] // 2)))


class CaptumMethod:
    """A ``captum.attr`` attribution as a CAM method.

    ``attribution``: a class of ``captum.attr`` or its name (``"IntegratedGradients"``,
    ``"Occlusion"``, ``"GuidedGradCam"``, ``"LayerGradCam"``, ...), built for each call with the
    model as first argument and, when it takes a ``layer``, the explained layer; or a ready-made
    attribution object (used as given). ``attribute_kwargs`` go to ``attribute`` (``n_steps=16``,
    ``sliding_window_shapes=(3, 8, 8)``, ...). ``name`` is the key in ``Explanation.maps``
    (default ``captum:<class name>``).
    """

    def __init__(
        self, attribution: str | type | Any, *, sign: str = "positive", name: str | None = None, **attribute_kwargs: Any
    ) -> None:
        if sign not in SIGNS:
            raise InputError(f"sign {sign!r}: choose from {', '.join(SIGNS)}")
        self.sign = sign
        self.attribute_kwargs = attribute_kwargs
        if isinstance(attribution, str):
            import captum.attr

            found = getattr(captum.attr, attribution, None)
            if not (inspect.isclass(found) and issubclass(found, captum.attr.Attribution)):
                raise InputError(
                    f"{attribution!r} is not an attribution class of captum.attr; "
                    "try IntegratedGradients, Saliency, Occlusion, GuidedGradCam or LayerGradCam"
                )
            attribution = found
        self._class = attribution if inspect.isclass(attribution) else None
        self._instance = None if inspect.isclass(attribution) else attribution
        cls = self._class or type(attribution)
        self.name = name or f"{CAPTUM_PREFIX}{cls.__name__}"
        self._init_params = list(inspect.signature(cls.__init__).parameters.values())[1:] if self._class else []
        if self._class and (not self._init_params or self._init_params[0].name not in ("forward_func", "model")):
            raise InputError(
                f"{self.name} wraps another attribution; build it yourself and pass CaptumMethod(<attribution object>)"
            )
        missing = [
            p.name
            for p in self._init_params[1:]
            if p.name != "layer" and p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD
        ]
        if missing:
            raise InputError(
                f"{self.name} needs {', '.join(missing)} to be built; build it yourself and pass "
                "CaptumMethod(<attribution object>)"
            )

    @property
    def uses_layer(self) -> bool:
        """True when the attribution is built for the explained layer (a layer method)."""
        return any(p.name == "layer" for p in self._init_params)

    def _build(self, model: nn.Module, layer: nn.Module) -> Any:
        if self._instance is not None:
            return self._instance
        first = self._init_params[0].name if self._init_params else None
        forward = model if first == "model" else (lambda x: logits_of(model(x)))
        return self._class(forward, layer) if self.uses_layer else self._class(forward)  # type: ignore[misc]

    def __call__(self, model: nn.Module, layer: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Maps (N, H, W) for targets (N,), or (N, k, H, W) for targets (N, k); >= 0."""
        attribution = self._build(model, layer)
        kwargs = dict(self.attribute_kwargs)
        signature = inspect.signature(attribution.attribute).parameters
        if "sliding_window_shapes" in signature and "strides" in signature:
            _occlusion_defaults(kwargs, images)
        missing = [
            name
            for name, p in list(signature.items())[1:]
            if name not in kwargs
            and name != "target"
            and p.default is inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        if missing:
            raise InputError(f"{self.name} needs {', '.join(missing)}: pass CaptumMethod(..., {missing[0]}=...)")
        columns = targets if targets.dim() == 2 else targets[:, None]
        maps = []
        with torch.enable_grad():
            for j in range(columns.shape[1]):
                # Our own input tensor needs a gradient (Captum would warn that it set it itself);
                # perturbation methods run their forward passes under no_grad regardless.
                inputs = images.detach().requires_grad_(True)
                raw = attribution.attribute(inputs, target=columns[:, j], **kwargs)
                maps.append(self._to_map(raw, images.shape[-2:]))
        return torch.stack(maps, dim=1) if targets.dim() == 2 else maps[0]

    def _to_map(self, attributions: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if not torch.is_tensor(attributions) or attributions.dim() != 4:
            got = tuple(attributions.shape) if torch.is_tensor(attributions) else type(attributions).__name__
            raise InputError(f"{self.name} returned {got}; auditcam needs (N, C, H, W) attributions")
        attributions = attributions.detach().float()
        if self.sign == "positive":
            raw = attributions.sum(dim=1, keepdim=True).clamp_min(0)
        else:
            raw = attributions.abs().sum(dim=1, keepdim=True)
        if raw.shape[-2:] != size:
            raw = F.interpolate(raw, size=tuple(size), mode="bilinear", align_corners=False)
        return raw[:, 0]
