"""Feature maps: what each convolution of a model outputs for an image, and whether its shape
is the one the convolution arithmetic predicts.

Every output is captured with a forward hook inside :func:`auditcam.cam.preserved`, so the
model is left exactly as it was. A layer's grid shows its most active channels (highest mean
activation) in grayscale, bright = strong activation, on one scale per layer: black is the
lowest value among the channels shown, white the highest, so channels compare within a layer.
A transformer layer's output is laid over the image first (:mod:`auditcam.cam.grids`): Swin's
channels-last maps and a ViT's patch tokens become (C, H, W) grids like a convolution's.

The predicted spatial size of a convolution's output is, per dimension,
``floor((H + 2P - D(K - 1) - 1) / S + 1)`` for input size H, padding P, dilation D, kernel K
and stride S (padding ``"same"`` keeps H; ``"valid"`` is P = 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from auditcam.cam import preserved
from auditcam.cam.grids import NOT_A_GRID, Grid, grid_of
from auditcam.cam.layers import get_layer
from auditcam.errors import InputError
from auditcam.files import ROWS, Parts, records_table, table_records
from auditcam.models import Preprocessing, model_device
from auditcam.run.gallery import Exemplar

DEFAULT_CHANNELS = 16
CELL = 48  # minimum display size of a channel map, pixels
REPORT_CHANNELS, REPORT_CELL = 9, 32  # the audit report's smaller grids, one per exemplar
SEPARATOR_RGB = (40, 90, 160)  # grid lines: a colour no grayscale map takes
NO_CONV = "the model has no Conv2d layer that runs on this input"


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length along one dimension: ``floor((size + 2P - D(K - 1) - 1) / S + 1)``."""
    return math.floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1)


def predicted_shape(conv: nn.Conv2d, input_hw: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) that the arithmetic predicts for ``conv`` applied to an input of ``input_hw``."""
    if conv.padding == "same":
        return conv.out_channels, int(input_hw[0]), int(input_hw[1])
    padding = (0, 0) if conv.padding == "valid" else conv.padding
    h, w = (
        conv_output_size(int(input_hw[d]), conv.kernel_size[d], conv.stride[d], padding[d], conv.dilation[d])
        for d in (0, 1)
    )
    return conv.out_channels, h, w


@dataclass(frozen=True)
class LayerMaps:
    """One layer's output for a batch of images, and its geometry (None for a non-conv layer)."""

    name: str
    kind: str
    input_shape: tuple[int, ...]  # (C, H, W) of one image
    output_shape: tuple[int, ...]  # as the layer outputs it
    activations: np.ndarray  # float32 (N, C, H, W): the output laid over the image
    kernel: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    padding: tuple[int, int] | str | None = None
    dilation: tuple[int, int] | None = None
    groups: int | None = None
    predicted: tuple[int, int, int] | None = None

    @property
    def matches(self) -> bool | None:
        """Whether the measured output shape equals the predicted one (None: nothing predicted)."""
        return None if self.predicted is None else tuple(self.output_shape) == tuple(self.predicted)

    def row(self) -> dict[str, object]:
        """The layer table's row (JSON-ready)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "input": list(self.input_shape),
            "output": list(self.output_shape),
            "kernel": None if self.kernel is None else list(self.kernel),
            "stride": None if self.stride is None else list(self.stride),
            "padding": self.padding if isinstance(self.padding, str) or self.padding is None else list(self.padding),
            "dilation": None if self.dilation is None else list(self.dilation),
            "groups": self.groups,
            "predicted": None if self.predicted is None else list(self.predicted),
            "matches": self.matches,
        }


def _layer_maps(name: str, module: nn.Module, inputs: torch.Tensor, output: torch.Tensor, grid: Grid) -> LayerMaps:
    geometry = {}
    if isinstance(module, nn.Conv2d):
        geometry = {
            "kernel": tuple(module.kernel_size),
            "stride": tuple(module.stride),
            "padding": module.padding if isinstance(module.padding, str) else tuple(module.padding),
            "dilation": tuple(module.dilation),
            "groups": module.groups,
            "predicted": predicted_shape(module, inputs.shape[-2:]),
        }
    return LayerMaps(
        name=name,
        kind=type(module).__name__,
        input_shape=tuple(inputs.shape[1:]),
        output_shape=tuple(output.shape[1:]),
        activations=grid.to_nchw(output.detach()).float().cpu().numpy(),
        **geometry,
    )


def capture(model: nn.Module, images: torch.Tensor, layers: Sequence[str] | None = None) -> list[LayerMaps]:
    """Run ``images`` (model input, N x 3 x H x W) through ``model`` once and keep the 4-D output
    of every Conv2d, or the output of each named layer laid over the image (a named layer whose
    output is no grid is an InputError), in the order they run; a module that runs several times
    gets ``#2``, ``#3`` … after its name."""
    if images.dim() != 4:
        raise InputError("images must be a tensor of shape (N, C, H, W)")
    modules = dict(model.named_modules())
    if layers is None:
        chosen = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    else:
        for name in layers:
            get_layer(model, name)  # an unknown name is an InputError listing candidates
        chosen = list(dict.fromkeys(layers))
    captured: list[LayerMaps] = []
    calls: dict[str, int] = {}
    size = (images.shape[-2], images.shape[-1])

    def recorder(name: str):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            if not inputs or not torch.is_tensor(inputs[0]):
                return
            grid = grid_of(output.shape, size) if torch.is_tensor(output) else None
            if layers is None and (grid is None or output.dim() != 4):
                return  # the scan of every Conv2d keeps 4-D feature maps only
            if grid is None:
                got = tuple(output.shape) if torch.is_tensor(output) else type(output).__name__
                raise InputError(NOT_A_GRID.format(layer=name, got=got, height=size[0], width=size[1]))
            calls[name] = calls.get(name, 0) + 1
            shown = name if calls[name] == 1 else f"{name}#{calls[name]}"
            captured.append(_layer_maps(shown, module, inputs[0], output, grid))

        return hook

    device = model_device(model)
    with preserved(model) as handles:
        for name in chosen:
            handles.append(modules[name].register_forward_hook(recorder(name)))
        with torch.no_grad():
            model(images.to(device))
    if not captured and layers is None:
        raise InputError(NO_CONV)
    return captured


def top_channels(activations: np.ndarray, k: int = DEFAULT_CHANNELS) -> np.ndarray:
    """Indices of the ``k`` channels of ``activations`` (C, H, W) with the highest mean
    activation, most active first (ties: lower index first)."""
    means = activations.reshape(activations.shape[0], -1).mean(axis=1)
    return np.argsort(-means, kind="stable")[:k]


def channel_grid(activations: np.ndarray, k: int = DEFAULT_CHANNELS, cell: int = CELL) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 picture of the ``k`` most active channels of ``activations`` (C, H, W), in
    grayscale on one scale for the layer, most active top left, row by row; and their indices.
    Each map is enlarged by an integer factor (nearest) to at least ``cell`` pixels."""
    channels = top_channels(activations, k)
    maps = activations[channels].astype(np.float64)
    low, high = float(maps.min()), float(maps.max())
    grey = np.zeros_like(maps) if high <= low else (maps - low) / (high - low)
    grey = (grey * 255 + 0.5).astype(np.uint8)
    h, w = grey.shape[1:]
    factor = max(1, math.ceil(cell / max(h, w)))
    grey = grey.repeat(factor, axis=1).repeat(factor, axis=2)
    columns = math.ceil(math.sqrt(len(channels)))
    rows = math.ceil(len(channels) / columns)
    ch, cw = grey.shape[1:]
    picture = np.empty((rows * (ch + 1) + 1, columns * (cw + 1) + 1, 3), dtype=np.uint8)
    picture[:] = SEPARATOR_RGB
    for i in range(len(channels)):
        r, c = divmod(i, columns)
        y, x = 1 + r * (ch + 1), 1 + c * (cw + 1)
        picture[y : y + ch, x : x + cw] = grey[i][:, :, None]
    return picture, channels


@dataclass(frozen=True)
class ExemplarGrid:
    """The feature-map grid of one gallery exemplar at the explained layer."""

    record: dict
    layer: str
    shape: tuple[int, ...]
    picture: np.ndarray  # the input as shown, uint8 (H, W, 3)
    grid: np.ndarray  # RGB uint8
    channels: tuple[int, ...]


def exemplar_grids(
    model: nn.Module,
    exemplars: Sequence[Exemplar],
    preprocessing: Preprocessing,
    layer: str,
    k: int = REPORT_CHANNELS,
    cell: int = REPORT_CELL,
) -> tuple[ExemplarGrid, ...]:
    """Grids of ``layer``'s most active channels for the gallery's exemplars, from their shown
    pictures (8-bit, so within half a grey level of the audited input)."""
    if not exemplars:
        return ()
    pictures = np.stack([e.image for e in exemplars])
    images = preprocessing.normalise(torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 255.0)
    maps = capture(model, images, [layer])[0]
    out = []
    for i, exemplar in enumerate(exemplars):
        grid, channels = channel_grid(maps.activations[i], k, cell)
        out.append(
            ExemplarGrid(
                record=exemplar.record,
                layer=layer,
                shape=tuple(maps.activations.shape[1:]),
                picture=exemplar.image,
                grid=grid,
                channels=tuple(int(c) for c in channels),
            )
        )
    return tuple(out)


def grids_to_parts(grids: Sequence[ExemplarGrid]) -> Parts:
    """The exemplars' grids for the bundle: records as a table, pictures and grids as arrays."""
    fields = {"grids": [{"layer": g.layer, "shape": list(g.shape), "channels": list(g.channels)} for g in grids]}
    arrays = {f"{i}/{name}": getattr(g, name) for i, g in enumerate(grids) for name in ("picture", "grid")}
    return Parts(fields, arrays, {ROWS: records_table([g.record for g in grids])})


def grids_from_parts(parts: Parts) -> tuple[ExemplarGrid, ...]:
    """The grids :func:`grids_to_parts` took apart."""
    records = table_records(parts.tables[ROWS])
    return tuple(
        ExemplarGrid(
            record=record,
            layer=g["layer"],
            shape=tuple(g["shape"]),
            picture=parts.arrays[f"{i}/picture"],
            grid=parts.arrays[f"{i}/grid"],
            channels=tuple(g["channels"]),
        )
        for i, (record, g) in enumerate(zip(records, parts.fields["grids"], strict=True))
    )
