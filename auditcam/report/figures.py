"""Pictures for the report, drawn with OpenCV: heatmap overlays and subject outlines,
returned as PNG data URIs so the report stays one self-contained file."""

from __future__ import annotations

import base64

import cv2
import numpy as np

OUTLINE_RGB = (255, 255, 0)


def _display_size(height: int, width: int, target: int) -> tuple[int, int]:
    """(width, height) with the longer side scaled to ``target`` pixels."""
    scale = target / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resize(image: np.ndarray, target: int, nearest: bool = False) -> np.ndarray:
    size = _display_size(image.shape[0], image.shape[1], target)
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5, target: int = 160) -> np.ndarray:
    """Alpha-blend a [0, 1] heatmap in the JET colour map over an RGB uint8 image."""
    base = _resize(image, target)
    heat = _resize((np.clip(heatmap, 0, 1) * 255).astype(np.uint8), target)
    colour = cv2.cvtColor(cv2.applyColorMap(heat, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(base, 1 - alpha, colour, alpha, 0)


def outline(image: np.ndarray, mask: np.ndarray, target: int = 160, thickness: int = 2) -> np.ndarray:
    """The image with the subject mask's contour drawn on it."""
    base = np.ascontiguousarray(_resize(image, target))
    grown = _resize(mask.astype(np.uint8), target, nearest=True)
    contours, _ = cv2.findContours(grown, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return cv2.drawContours(base, contours, -1, OUTLINE_RGB, thickness)


def resized(image: np.ndarray, target: int = 160) -> np.ndarray:
    """The image at display size."""
    return _resize(image, target)


def png_data_uri(rgb: np.ndarray) -> str:
    """Encode an RGB uint8 image as a ``data:image/png;base64,...`` URI."""
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.tobytes()).decode("ascii")
