"""Read images and subject masks with one orientation policy, so a mask can never be rotated
relative to its image: both go through PIL with their EXIF orientation applied."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError


class SampleFault(Exception):
    """A problem with one sample's files: recorded with its reason, the audit goes on."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _open(path: Path, what: str) -> Image.Image:
    """Open and fully decode an image; bombs and truncated files are faults, not warnings."""
    if not path.is_file():
        raise SampleFault("error", f"{what} file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return ImageOps.exif_transpose(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SampleFault("error", f"{what} is too large to decode safely ({exc})") from None
    except UnidentifiedImageError:
        raise SampleFault("error", f"{what} is not an image file PIL can read: {path}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise SampleFault("error", f"{what} is corrupt or truncated: {path} ({exc})") from None


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> uint8 (H, W, 3): 16-bit scaled down, alpha dropped, palette expanded."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if img.mode == "F":
        arr = np.clip(np.asarray(img, dtype=np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_image(path: str | Path) -> torch.Tensor:
    """uint8 tensor (3, H, W), RGB, EXIF orientation applied."""
    img = _open(Path(path), "image")
    return torch.from_numpy(_to_rgb_array(img).copy()).permute(2, 0, 1).contiguous()


def read_mask(path: str | Path, subject_value: int | None = None) -> torch.Tensor:
    """bool tensor (H, W): pixels > 0 (or == ``subject_value``) are the subject; EXIF applied.

    Palette PNGs are read by palette index, so index 0 is background whatever its colour.
    """
    img = _open(Path(path), "mask")
    if img.mode in ("RGB", "RGBA", "LA"):
        img = img.convert("L")
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise SampleFault("invalid", f"mask is not single-channel: {path}")
    mask = arr == subject_value if subject_value is not None else arr > 0
    return torch.from_numpy(np.ascontiguousarray(mask))
