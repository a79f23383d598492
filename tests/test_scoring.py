"""Scoring metrics against hand-computed cases and a per-sample brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from auditcam.scoring import INVALID_REASONS, MASK_FREE_METRICS, METRICS, reasons, score


def test_hand_computed_metrics():
    maps = torch.tensor([[[1.0, 3.0], [0.0, 4.0]], [[2.0, 0.0], [0.0, 0.0]]])
    masks = torch.tensor([[[1, 0], [0, 1]], [[0, 1], [1, 1]]], dtype=torch.bool)
    s = score(maps, masks)
    torch.testing.assert_close(s["subject_share"], torch.tensor([5 / 8, 0.0]))
    torch.testing.assert_close(s["subject_area"], torch.tensor([0.5, 0.75]))
    torch.testing.assert_close(s["focus_lift"], torch.tensor([1.25, 0.0]))
    # top-2 of sample 0 are 4 (subject) and 3 (background); top-3 of sample 1: 2 (bg), 0, 0 (subject, by order)
    torch.testing.assert_close(s["rank_accuracy"], torch.tensor([0.5, 2 / 3]))
    torch.testing.assert_close(s["pointing_hit"], torch.tensor([1.0, 0.0]))
    # hot = heat >= 0.5 * peak: sample 0 {3, 4} vs subject {1, 4} -> 1/3; sample 1 {2} vs 3 others -> 0
    torch.testing.assert_close(s["iou"], torch.tensor([1 / 3, 0.0]))
    torch.testing.assert_close(s["background_reliant"], torch.tensor([0.0, 1.0]))
    assert s["invalid"].tolist() == [0, 0]


def test_pointing_tolerance_counts_near_misses():
    maps = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])
    masks = torch.tensor([[[0, 1], [1, 1]]], dtype=torch.bool)
    assert score(maps, masks, pointing_tolerance=1)["pointing_hit"].item() == 1.0


def test_reliance_threshold_is_configurable():
    maps = torch.tensor([[[1.0, 3.0], [0.0, 4.0]]])  # focus_lift 1.25
    masks = torch.tensor([[[1, 0], [0, 1]]], dtype=torch.bool)
    assert score(maps, masks, reliance_threshold=1.5)["background_reliant"].item() == 1.0
    assert score(maps, masks, reliance_threshold=1.0)["background_reliant"].item() == 0.0


@pytest.mark.parametrize(
    ("heat", "mask", "code"),
    [
        ([[1.0, 2.0], [3.0, 4.0]], [[0, 0], [0, 0]], 1),
        ([[1.0, 2.0], [3.0, 4.0]], [[1, 1], [1, 1]], 2),
        ([[1.0, float("nan")], [3.0, 4.0]], [[1, 0], [0, 0]], 3),
        ([[1.0, float("inf")], [3.0, 4.0]], [[1, 0], [0, 0]], 3),
        ([[0.0, 0.0], [0.0, 0.0]], [[1, 0], [0, 0]], 4),
        ([[-1.0, -2.0], [0.0, -4.0]], [[1, 0], [0, 0]], 4),  # all energy clipped away
    ],
)
def test_invalid_samples_get_nan_and_a_reason(heat, mask, code):
    maps = torch.tensor([heat, [[1.0, 0.0], [0.0, 0.0]]])
    masks = torch.tensor([mask, [[1, 0], [0, 0]]], dtype=torch.bool)
    s = score(maps, masks)
    assert s["invalid"].tolist() == [code, 0]
    for name in METRICS:
        if name == "subject_area":
            assert s[name][0].item() == pytest.approx(float(np.mean(mask)))
        elif name in MASK_FREE_METRICS:  # a mask fault leaves them measured, a heatmap fault does not
            assert math.isnan(s[name][0].item()) == (code in (3, 4)), name
        else:
            assert math.isnan(s[name][0].item()), name  # never counted as 0
            assert not math.isnan(s[name][1].item()), name  # a valid neighbour is unaffected
    assert reasons(s["invalid"]) == [INVALID_REASONS[code], ""]


def test_maps_are_resized_to_the_mask_resolution():
    maps = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[:, :, 2:] = True
    s = score(maps, masks)
    # bilinear, align_corners=False: columns get 0, 0.25, 0.75, 1 -> share = 1.75 / 2
    torch.testing.assert_close(s["subject_share"], torch.tensor([1.75 / 2.0]))


def test_mismatched_batch_is_an_error():
    with pytest.raises(ValueError, match="same N"):
        score(torch.rand(2, 4, 4), torch.ones(3, 4, 4, dtype=torch.bool))


def _brute_force(heat: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """One sample, plain loops over pixels: the independent reference."""
    h = np.clip(heat, 0, None).ravel()
    m = mask.ravel().astype(bool)
    total = sum(h)
    share = sum(v for v, inside in zip(h, m, strict=True) if inside) / total
    area = m.mean()
    k = int(m.sum())
    ranked = sorted(range(len(h)), key=lambda i: (-h[i], i))
    peak = max(h)
    hot = [v >= 0.5 * peak for v in h]
    inter = sum(1 for a, b in zip(hot, m, strict=True) if a and b)
    union = sum(1 for a, b in zip(hot, m, strict=True) if a or b)
    return {
        "subject_share": share,
        "subject_area": area,
        "focus_lift": share / area,
        "rank_accuracy": sum(m[i] for i in ranked[:k]) / k,
        "pointing_hit": float(m[ranked[0]]),
        "iou": inter / union,
        "background_reliant": float(share / area < 1),
    }


def test_vectorised_metrics_equal_a_brute_force_loop(gen):
    maps = torch.randn(16, 9, 11, generator=gen).abs() * (torch.rand(16, 9, 11, generator=gen) > 0.3)
    masks = torch.rand(16, 9, 11, generator=gen) > 0.6
    s = score(maps, masks)
    assert (s["invalid"] == 0).all()
    for i in range(16):
        expected = _brute_force(maps[i].double().numpy(), masks[i].numpy())
        for name, value in expected.items():
            assert s[name][i].item() == pytest.approx(value, rel=1e-5, abs=1e-6), (i, name)


def test_border_share_against_a_hand_computation():
    # 8x8 map, band 1/8 -> one pixel deep: the 28 edge pixels are 28/64 of the image
    heat = torch.zeros(8, 8)
    heat[0, 0] = 3.0  # a corner (in the band)
    heat[4, 4] = 1.0  # the centre
    heat[7, 3] = 4.0  # the bottom edge (in the band)
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, 3:6, 3:6] = True
    s = score(heat[None], masks)
    assert s["border_share"].item() == pytest.approx((7 / 8) / (28 / 64))
    # a 16x24 map with band 1/4: 4 rows and 6 columns deep; uniform heat gives exactly 1
    flat = score(torch.ones(1, 16, 24), torch.ones(1, 16, 24, dtype=torch.bool), band=0.25)
    assert flat["border_share"].item() == pytest.approx(1.0)
    inner = torch.zeros(1, 16, 24)
    inner[0, 4:12, 6:18] = 1.0  # all heat off the band
    assert score(inner, torch.ones(1, 16, 24, dtype=torch.bool), band=0.25)["border_share"].item() == 0.0


def test_border_share_matches_a_pixel_loop():
    gen = torch.Generator().manual_seed(3)
    maps = torch.rand(3, 10, 13, generator=gen)
    s = score(maps, torch.zeros(3, 10, 13, dtype=torch.bool), subjects=torch.zeros(3, dtype=torch.bool))
    for k in range(3):
        total = band = band_pixels = 0.0
        for y in range(10):
            for x in range(13):
                edge = y < 1 or y >= 9 or x < 1 or x >= 12  # floor(10/8) = floor(13/8) = 1
                total += float(maps[k, y, x])
                band += float(maps[k, y, x]) if edge else 0.0
                band_pixels += edge
        assert s["border_share"][k].item() == pytest.approx((band / total) / (band_pixels / 130), rel=1e-5)


def test_a_sample_without_subject_is_scored_mask_free_only():
    maps = torch.tensor([[[1.0, 3.0], [0.0, 4.0]], [[1.0, 3.0], [0.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    masks = torch.tensor([[[1, 0], [0, 1]], [[0, 0], [0, 0]], [[0, 0], [0, 0]]], dtype=torch.bool)
    s = score(maps, masks, subjects=torch.tensor([True, False, False]))
    assert s["invalid"].tolist() == [0, 0, 4]  # no subject is not an empty mask; a zero heatmap still is invalid
    for name in METRICS:
        if name in MASK_FREE_METRICS:
            assert s[name][1].item() == s[name][0].item() and math.isnan(s[name][2].item()), name
        else:
            assert math.isnan(s[name][1].item()) and not math.isnan(s[name][0].item()), name
