"""Sample pictures: the heatmap overlay blends as documented, thumbnails are bounded and decode."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from auditcam.report import figures


@pytest.fixture
def picture() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)


def test_overlay_leaves_cold_pixels_alone_and_colours_hot_ones(picture):
    heat = np.zeros((40, 40), np.float32)
    heat[:, 20:] = 1.0
    out = figures.overlay(picture, heat, alpha=0.75, target=40)
    assert out.shape == picture.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :20], picture[:, :20])  # heat 0: the image as it is
    hottest = figures.heat_colours(np.ones((1, 1), np.float32))[0, 0].astype(float)
    expected = 0.25 * picture[:, 21:].astype(float) + 0.75 * hottest
    np.testing.assert_allclose(out[:, 21:], expected, atol=1.0)


def test_overlay_outlines_the_subject(picture):
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    out = figures.overlay(picture, np.zeros((40, 40), np.float32), target=40, mask=mask)
    changed = np.any(out != picture, axis=-1)
    assert changed[10, 10:30].any() and not changed[0:5].any() and not changed[15:25, 15:25].any()


def test_thumbnails_are_bounded_and_decode():
    yy, xx = np.mgrid[:300, :600]
    large = np.stack([xx * 255 // 600, yy * 255 // 300, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    small = figures.resized(large)
    assert small.shape == (80, figures.THUMBNAIL, 3)
    uri = figures.webp_data_uri(small)
    assert uri.startswith("data:image/webp;base64,")
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == small.shape
    assert np.abs(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB).astype(int) - small).mean() < 4  # lossy, close
    lossless = figures.png_data_uri(small)
    back = cv2.imdecode(np.frombuffer(base64.b64decode(lossless.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(cv2.cvtColor(back, cv2.COLOR_BGR2RGB), small)


def test_outline_draws_only_on_the_subject_border(picture):
    mask = np.zeros((40, 40), bool)
    mask[5:15, 5:15] = True
    out = figures.outline(picture, mask, target=40, thickness=1)
    changed = np.any(out != picture, axis=-1)
    assert changed[5, 5:15].all() and changed.sum() == 36  # the 10x10 square's border
    assert tuple(out[5, 5]) == figures.OUTLINE_RGB
