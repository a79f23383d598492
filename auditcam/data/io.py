"""Read images and subject masks with one orientation policy, so a mask can never be rotated
relative to its image: both go through PIL with their EXIF orientation applied.

Decompression bombs and truncated or corrupt files are per-sample faults, never warnings, and no
global PIL flag is changed (``MAX_IMAGE_PIXELS`` and ``LOAD_TRUNCATED_IMAGES`` keep the values the
process has). Other warnings PIL raises while decoding are kept as notes on the sample.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from auditcam.data.problems import MISSING_FILE, SIZE_MISMATCH, UNREADABLE

# EXIF orientations that swap width and height (rotations by 90 degrees, transpositions).
TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
EXIF_ORIENTATION_TAG = 0x0112


class SampleFault(Exception):
    """A problem with one sample's files: recorded with its status and reason, the audit goes on.
    ``kind`` names the problem for ``auditcam validate`` (see :mod:`auditcam.data.problems`)."""

    def __init__(self, status: str, reason: str, kind: str = "") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.kind = kind or (UNREADABLE if status == "error" else status)


@dataclass(frozen=True)
class Decoded:
    """A fully decoded picture, upright, with the EXIF orientation it had and PIL's warnings."""

    image: Image.Image
    orientation: int
    warnings: tuple[str, ...]


def decode(path: str | Path, what: str = "image") -> Decoded:
    """Open and fully decode ``path``; ``what`` ('image', 'mask') starts every fault's reason."""
    path = Path(path)
    if not path.is_file():
        raise SampleFault("error", f"{what} file not found: {path}", MISSING_FILE)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                orientation = int(img.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
                upright = ImageOps.exif_transpose(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SampleFault("error", f"{what} is too large to decode safely ({exc})") from None
    except UnidentifiedImageError:
        raise SampleFault("error", f"{what} is not an image file PIL can read: {path}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise SampleFault("error", f"{what} is corrupt or truncated: {path} ({exc})") from None
    notes = tuple(f"{what}: {w.message}" for w in caught)
    return Decoded(upright, orientation, notes)


def _rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> a new, writable uint8 (H, W, 3): 16-bit scaled down, alpha dropped,
    palette expanded."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if img.mode == "F":
        arr = np.clip(np.asarray(img, dtype=np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # PIL warns when a palette with transparency goes straight to RGB
    return np.array(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)


def image_tensor(decoded: Decoded) -> torch.Tensor:
    """uint8 tensor (3, H, W), RGB, from a decoded image of any mode.

    A channels-last view, not a contiguous copy: the transpose would cost more than decoding,
    and torchvision's uint8 antialiased resize is fastest on channels-last input anyway."""
    return torch.from_numpy(_rgb_array(decoded.image)).permute(2, 0, 1)


def mask_tensor(decoded: Decoded, subject_value: int | None = None) -> torch.Tensor:
    """bool tensor (H, W): pixels > 0 (or == ``subject_value``) are the subject.

    Palette PNGs are read by palette index, so index 0 is background whatever its colour; colour
    masks are read as grey levels.
    """
    img = decoded.image
    if img.mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr"):
        img = img.convert("L")
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise SampleFault("invalid", f"mask is not single-channel (mode {img.mode})")
    mask = arr == subject_value if subject_value is not None else arr > 0
    return torch.from_numpy(np.ascontiguousarray(mask))


def read_image(path: str | Path) -> torch.Tensor:
    """uint8 tensor (3, H, W), RGB, EXIF orientation applied."""
    return image_tensor(decode(path, "image"))


def read_mask(path: str | Path, subject_value: int | None = None) -> torch.Tensor:
    """bool tensor (H, W) of the subject, EXIF orientation applied (see :func:`mask_tensor`)."""
    return mask_tensor(decode(path, "mask"), subject_value)


def same_aspect(mask_hw: tuple[int, int], image_hw: tuple[int, int]) -> bool:
    """True when the mask, scaled to the image's width, is within a pixel of the image's height."""
    (mh, mw), (ih, iw) = mask_hw, image_hw
    return abs(mh * iw / mw - ih) <= 1.0


def fit_mask(
    mask: torch.Tensor,
    image_hw: tuple[int, int],
    *,
    resize: bool = False,
    what: str = "mask",
    orientation: int = 1,
) -> tuple[torch.Tensor, str]:
    """The mask at the image's size, and a note when it was resized.

    A mask of another size is an ``invalid`` sample; with ``resize`` it is resized (nearest
    neighbour) when its aspect ratio matches the image's, and the note says so.
    """
    mask_hw = (int(mask.shape[0]), int(mask.shape[1]))
    if fits(mask_hw, image_hw, resize=resize, what=what, orientation=orientation):
        return mask, ""
    resized = torch.nn.functional.interpolate(mask[None, None].float(), size=tuple(image_hw), mode="nearest")
    note = f"{what} resized from {mask_hw[1]}x{mask_hw[0]} to {image_hw[1]}x{image_hw[0]} (WxH, nearest)"
    return resized[0, 0] > 0.5, note


def fits(size_hw: tuple[int, int], image_hw: tuple[int, int], *, resize: bool, what: str, orientation: int = 1) -> bool:
    """Whether a ``what`` (a mask, an annotation) drawn at ``size_hw`` sits on the image as it is
    (True), or is to be scaled to it (False: ``resize`` and the same aspect ratio); any other
    size raises an ``invalid`` :class:`SampleFault` with both sizes (and the EXIF orientation
    when that is what swapped them)."""
    if tuple(size_hw) == tuple(image_hw):
        return True
    sizes = f"{what} is {size_hw[1]}x{size_hw[0]} but image is {image_hw[1]}x{image_hw[0]} (WxH)"
    if same_aspect(size_hw, image_hw):
        if resize:
            return False
        raise SampleFault("invalid", f"{sizes}; same aspect ratio, --resize-masks would resize it", SIZE_MISMATCH)
    if tuple(size_hw) == tuple(image_hw)[::-1] and orientation in TRANSPOSING_ORIENTATIONS:
        raise SampleFault(
            "invalid",
            f"{sizes}; the image's EXIF orientation ({orientation}) rotates it: "
            "masks must match the image as displayed (EXIF applied)",
            SIZE_MISMATCH,
        )
    raise SampleFault("invalid", sizes, SIZE_MISMATCH)
