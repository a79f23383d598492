"""Pictures of single samples for the report, drawn with OpenCV: heatmap overlays and subject
outlines, returned as data URIs so the report stays one self-contained file.

Thumbnails are WebP (lossy, about a tenth of a PNG's size), their longer side at most
:data:`THUMBNAIL` pixels, so a gallery's weight is bounded whatever the input resolution.
"""

from __future__ import annotations

import base64

import cv2
import numpy as np

THUMBNAIL = 160  # longer side of a gallery picture, in pixels
WEBP_QUALITY = 82
OUTLINE_RGB = (255, 255, 0)  # subject outline on the plain image
OVERLAY_OUTLINE_RGB = (86, 180, 233)  # Okabe–Ito sky blue: visible on every colour of the heat scale
COLOURMAP = cv2.COLORMAP_INFERNO  # perceptually uniform and readable with colour-vision deficiencies


def _display_size(height: int, width: int, target: int) -> tuple[int, int]:
    """(width, height) with the longer side scaled to ``target`` pixels."""
    scale = target / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resize(image: np.ndarray, target: int, nearest: bool = False) -> np.ndarray:
    size = _display_size(image.shape[0], image.shape[1], target)
    if size == (image.shape[1], image.shape[0]):
        return image.copy()  # callers draw on the result: never on the caller's array
    shrinking = size[0] < image.shape[1]
    interpolation = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return cv2.resize(image, size, interpolation=interpolation)


def _contours(mask: np.ndarray, target: int) -> list[np.ndarray]:
    grown = _resize(mask.astype(np.uint8), target, nearest=True)
    contours, _ = cv2.findContours(grown, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return list(contours)


def heat_colours(heatmap: np.ndarray) -> np.ndarray:
    """A [0, 1] heatmap in the report's colour map, RGB uint8."""
    heat = (np.clip(np.nan_to_num(heatmap), 0, 1) * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(heat, COLOURMAP), cv2.COLOR_BGR2RGB)


def overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    alpha: float = 0.75,
    target: int = THUMBNAIL,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Blend a [0, 1] heatmap in the colour map over an RGB uint8 image, each pixel's opacity
    ``alpha × heat`` so cold regions show the image as it is; with ``mask``, the subject's outline on top."""
    base = _resize(image, target).astype(np.float32)
    heat = np.clip(np.nan_to_num(_resize(heatmap.astype(np.float32), target)), 0, 1)
    colour = heat_colours(heat).astype(np.float32)
    weight = (alpha * heat)[..., None]
    blended = np.ascontiguousarray((base * (1 - weight) + colour * weight + 0.5).astype(np.uint8))
    if mask is not None:
        cv2.drawContours(blended, _contours(mask, target), -1, OVERLAY_OUTLINE_RGB, 1, lineType=cv2.LINE_AA)
    return blended


def outline(image: np.ndarray, mask: np.ndarray, target: int = THUMBNAIL, thickness: int = 2) -> np.ndarray:
    """The image with the subject mask's contour drawn on it."""
    base = np.ascontiguousarray(_resize(image, target))
    return cv2.drawContours(base, _contours(mask, target), -1, OUTLINE_RGB, thickness)


def resized(image: np.ndarray, target: int = THUMBNAIL) -> np.ndarray:
    """The image at display size."""
    return np.ascontiguousarray(_resize(image, target))


def _encode(rgb: np.ndarray, extension: str, params: list[int], mime: str) -> str:
    ok, buffer = cv2.imencode(extension, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {extension} image")
    return f"data:{mime};base64," + base64.b64encode(buffer.tobytes()).decode("ascii")


def png_data_uri(rgb: np.ndarray) -> str:
    """Encode an RGB uint8 image as a lossless ``data:image/png;base64,...`` URI."""
    return _encode(rgb, ".png", [], "image/png")


def webp_data_uri(rgb: np.ndarray, quality: int = WEBP_QUALITY) -> str:
    """Encode an RGB uint8 image as a lossy ``data:image/webp;base64,...`` URI (thumbnails)."""
    return _encode(rgb, ".webp", [cv2.IMWRITE_WEBP_QUALITY, quality], "image/webp")


def colour_scale(width: int = 160, height: int = 10) -> np.ndarray:
    """The colour map as a horizontal bar, cold on the left (a legend for the overlays)."""
    return heat_colours(np.tile(np.linspace(0, 1, width, dtype=np.float32), (height, 1)))
