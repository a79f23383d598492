"""The page of ``auditcam featuremaps``: per image, the layer table (measured vs predicted
output shapes) and a grid of each layer's most active channels; written with the grids as PNG
files and the table as JSON beside a self-contained HTML page."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from auditcam.files import atomic_write
from auditcam.probes.featuremaps import LayerMaps, channel_grid
from auditcam.report.html import _environment, page_assets

PAGE, TABLE, PNG_FOLDER = "featuremaps.html", "layers.json", "png"


@dataclass(frozen=True)
class ImageMaps:
    """One input image: its name, the picture as the model saw it (uint8 H x W x 3) and the
    captured layers (activations of this image only)."""

    name: str
    picture: np.ndarray
    layers: list[LayerMaps]


def _png(rgb: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return buffer.tobytes()


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "layer"


def _shape(shape: Any) -> str:
    return "—" if shape is None else " × ".join(map(str, shape))


def write_featuremaps(images: list[ImageMaps], out: str | Path, *, model: str, channels: int) -> dict[str, Path]:
    """Write ``featuremaps.html``, ``layers.json`` and ``png/<image>/<layer>.png`` into ``out``."""
    out = Path(out)
    pages, table = [], []
    for i, image in enumerate(images):
        folder = out / PNG_FOLDER / f"{i + 1:02d}-{_safe(Path(image.name).stem)}"
        folder.mkdir(parents=True, exist_ok=True)
        layers, rows = [], []
        for k, layer in enumerate(image.layers):
            grid, shown = channel_grid(layer.activations[0], channels)
            png = _png(grid)
            path = folder / f"{k + 1:03d}-{_safe(layer.name)}.png"
            atomic_write(path, png)
            row = {**layer.row(), "png": path.relative_to(out).as_posix()}
            rows.append(row)
            layers.append(
                {
                    **row,
                    "input_text": _shape(row["input"]),
                    "output_text": _shape(row["output"]),
                    "predicted_text": _shape(row["predicted"]),
                    "grid": _uri(png),
                    "channels": ", ".join(map(str, shown)),
                }
            )
        table.append({"image": image.name, "layers": rows})
        pages.append({"name": image.name, "picture": _uri(_png(image.picture)), "layers": layers})
    html = (
        _environment()
        .get_template("featuremaps.html.j2")
        .render(**page_assets(script=False), model=model, channels=channels, images=pages)
    )
    paths = {PAGE: out / PAGE, TABLE: out / TABLE}
    atomic_write(paths[TABLE], json.dumps(table, indent=2).encode("utf-8"))
    atomic_write(paths[PAGE], html.encode("utf-8"))
    return paths
