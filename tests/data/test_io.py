"""Decoding images and masks: formats and modes, one EXIF policy, and exact faults for bad files."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from auditcam.data import SampleFault, read_image, read_mask
from auditcam.data.io import decode, fit_mask
from tests.data.conftest import save_exif_rotated_jpeg


def _fault(call, *args) -> SampleFault:
    with pytest.raises(SampleFault) as info:
        call(*args)
    return info.value


@pytest.fixture
def rgb() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)


@pytest.mark.parametrize(("suffix", "fmt", "options"), [(".png", "PNG", {}), (".bmp", "BMP", {}), (".tif", "TIFF", {})])
def test_lossless_formats_read_back_exactly(tmp_path, rgb, suffix, fmt, options):
    path = tmp_path / f"x{suffix}"
    Image.fromarray(rgb).save(path, fmt, **options)
    assert torch.equal(read_image(path), torch.from_numpy(rgb).permute(2, 0, 1))


def test_webp_and_jpeg_decode_to_three_channels(tmp_path, rgb):
    for name, options in (("x.webp", {"lossless": True}), ("x.jpg", {"quality": 95})):
        Image.fromarray(rgb).save(tmp_path / name, **options)
        image = read_image(tmp_path / name)
        assert image.shape == (3, 12, 20) and image.dtype == torch.uint8
    assert torch.equal(read_image(tmp_path / "x.webp"), torch.from_numpy(rgb).permute(2, 0, 1))


def test_modes_become_rgb(tmp_path):
    grey = np.array([[0, 100], [200, 255]], np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert torch.equal(read_image(tmp_path / "grey.png"), torch.from_numpy(grey).expand(3, 2, 2))

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, [[0, 255], [128, 255]]  # alpha is dropped, colour kept
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "rgba.png")[:, 0, 0].tolist() == [200, 0, 0]

    deep = np.array([[0, 32768], [65535, 257]], np.uint16)  # 16-bit grey scales to 8 bits
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert read_image(tmp_path / "deep.png")[0].tolist() == [[0, 128], [255, 1]]

    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.putdata([1, 0])
    palette.info["transparency"] = 0
    palette.save(tmp_path / "palette.png", transparency=0)
    assert read_image(tmp_path / "palette.png")[:, 0, 0].tolist() == [10, 20, 30]


def test_bad_files_are_faults_with_exact_reasons(tmp_path, rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG")
    jpeg = buf.getvalue()
    corrupt = bytearray(jpeg)
    start = jpeg.index(b"\xff\xda")  # scrub the scan header: the file opens, decoding breaks
    corrupt[start + 2 : start + 40] = bytes(38)
    (tmp_path / "corrupt.jpg").write_bytes(bytes(corrupt))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    (tmp_path / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "text.jpg").write_text("just some text\n", encoding="utf-8")

    fault = _fault(read_image, tmp_path / "corrupt.jpg")
    assert (fault.status, fault.kind) == ("error", "unreadable")
    assert re.fullmatch(
        re.escape(f"image is corrupt or truncated: {tmp_path / 'corrupt.jpg'} (") + r".+\)", fault.reason
    )
    fault = _fault(read_image, tmp_path / "truncated.png")
    assert fault.reason == f"image is corrupt or truncated: {tmp_path / 'truncated.png'} (image file is truncated)"
    fault = _fault(read_mask, tmp_path / "text.jpg")
    assert (fault.status, fault.reason) == ("error", f"mask is not an image file PIL can read: {tmp_path / 'text.jpg'}")
    fault = _fault(read_image, tmp_path / "gone.png")
    assert (fault.status, fault.kind, fault.reason) == (
        "error",
        "missing file",
        f"image file not found: {tmp_path / 'gone.png'}",
    )


def test_decompression_bombs_are_errors_and_no_global_flag_changes(tmp_path, monkeypatch):
    Image.new("RGB", (20, 10)).save(tmp_path / "big.png")  # 200 pixels
    for limit in (150, 50):  # PIL warns above the limit and refuses above twice the limit
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        fault = _fault(read_image, tmp_path / "big.png")
        assert fault.status == "error" and fault.reason.startswith("image is too large to decode safely (")
        assert limit == Image.MAX_IMAGE_PIXELS


def test_exif_orientation_applies_to_image_and_mask_alike(tmp_path):
    raw = np.full((32, 48, 3), 40, np.uint8)
    raw[4:12, 6:20] = (250, 0, 0)  # the subject, in the stored (sideways) frame
    raw_mask = np.zeros((32, 48), np.uint8)
    raw_mask[4:12, 6:20] = 255
    save_exif_rotated_jpeg(tmp_path / "photo.jpg", raw)  # orientation 6: rotate 90 degrees clockwise
    upright = np.rot90(raw_mask, k=-1)
    Image.fromarray(np.ascontiguousarray(upright)).save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(raw_mask).save(tmp_path / "sideways_exif.png", exif=exif)

    image = read_image(tmp_path / "photo.jpg")
    assert image.shape == (3, 48, 32)
    red = (image[0] > 180) & (image[1] < 80)
    expected = torch.from_numpy(upright.copy() > 0)
    for mask_file in ("upright.png", "sideways_exif.png"):  # drawn upright, or stored sideways with the same EXIF
        mask = read_mask(tmp_path / mask_file)
        assert torch.equal(mask, expected)
    inner = expected & torch.roll(expected, 1, 0) & torch.roll(expected, -1, 0)
    inner &= torch.roll(expected, 1, 1) & torch.roll(expected, -1, 1)
    assert red[inner].all() and not red[~expected].any()

    # a mask stored sideways without EXIF cannot match the upright photo: the reason says why
    Image.fromarray(raw_mask).save(tmp_path / "sideways.png")
    decoded = decode(tmp_path / "photo.jpg")
    with pytest.raises(SampleFault) as info:
        fit_mask(read_mask(tmp_path / "sideways.png"), (48, 32), orientation=decoded.orientation)
    assert info.value.reason == (
        "mask is 48x32 but image is 32x48 (WxH); the image's EXIF orientation (6) rotates it: "
        "masks must match the image as displayed (EXIF applied)"
    )


def test_mask_encodings(tmp_path):
    ones = np.array([[0, 1], [1, 0]], np.uint8)
    Image.fromarray(ones).save(tmp_path / "ones.png")
    Image.fromarray(ones * 255).save(tmp_path / "full.png")
    Image.fromarray(ones.astype(bool)).save(tmp_path / "bits.png")
    for name in ("ones.png", "full.png", "bits.png"):
        assert read_mask(tmp_path / name).tolist() == [[False, True], [True, False]]

    palette = Image.new("P", (3, 1))
    palette.putpalette([255, 255, 255, 0, 0, 0, 9, 9, 9] + [0] * 759)  # index 0 is white: still background
    palette.putdata([0, 1, 2])
    palette.save(tmp_path / "palette.png")
    assert read_mask(tmp_path / "palette.png").tolist() == [[False, True, True]]

    instances = np.array([[0, 3, 7], [7, 7, 3]], np.uint16)
    Image.fromarray(instances).save(tmp_path / "instances.png")
    assert read_mask(tmp_path / "instances.png", subject_value=7).tolist() == [
        [False, False, True],
        [True, True, False],
    ]
    assert read_mask(tmp_path / "instances.png").tolist() == [[False, True, True], [True, True, True]]


def test_size_mismatch_policy():
    mask = torch.tensor([[True, False], [False, False]])
    with pytest.raises(SampleFault) as info:
        fit_mask(mask, (4, 4))
    assert info.value.reason == "mask is 2x2 but image is 4x4 (WxH); same aspect ratio, --resize-masks would resize it"
    assert info.value.status == "invalid" and info.value.kind == "size mismatch"
    resized, note = fit_mask(mask, (4, 4), resize=True)
    assert note == "mask resized from 2x2 to 4x4 (WxH, nearest)"
    assert torch.equal(resized, torch.from_numpy(np.kron(mask.numpy(), np.ones((2, 2), bool))))
    with pytest.raises(SampleFault, match=r"^mask is 2x2 but image is 6x4 \(WxH\)$"):
        fit_mask(mask, (4, 6), resize=True)  # another aspect ratio is never resized
    assert fit_mask(mask, (2, 2)) == (mask, "")
