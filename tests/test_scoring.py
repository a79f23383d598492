"""Scoring metrics against hand-computed cases and a per-sample brute-force reference; the metric
registry drives the records columns, the statistics, the gap metrics, the report labels and the README."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from auditcam import config, scoring
from auditcam.report import html
from auditcam.run import records
from auditcam.scoring import INVALID_REASONS, MASK_FREE_METRICS, METRICS, REGISTRY, Aggregate, Metric, reasons, score
from auditcam.stats import analysis


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


def _pointing_brute_force(heat: np.ndarray, mask: np.ndarray) -> float:
    """Quantus' rule by plain loops: a hit when any pixel equal to the maximum lies on the subject."""
    h = np.clip(heat, 0, None)
    peak = max(h.ravel())
    rows, cols = h.shape
    return float(any(h[i, j] == peak and mask[i, j] for i in range(rows) for j in range(cols)))


def test_pointing_hit_counts_any_of_the_tied_maxima():
    # A 7x7 map with one hot cell, upsampled bilinearly to 56 px, has a plateau of tied maxima.
    coarse = torch.zeros(1, 1, 7, 7)
    coarse[..., 3, 3] = 1.0
    maps = F.interpolate(coarse, size=(56, 56), mode="bilinear", align_corners=False)[:, 0]
    tied = (maps[0] == maps[0].max()).nonzero().tolist()
    assert len(tied) > 1
    first, last = tied[0], tied[-1]
    mask = torch.zeros(1, 56, 56, dtype=torch.bool)
    mask[0, last[0], last[1]] = True  # only a non-first maximum lies on the subject
    assert score(maps, mask)["pointing_hit"].item() == 1.0 == _pointing_brute_force(maps[0].numpy(), mask[0].numpy())
    mask[0, last[0], last[1]] = False
    mask[0, first[0] - 1, first[1] - 1] = True  # next to the plateau, not on it
    assert score(maps, mask)["pointing_hit"].item() == 0.0 == _pointing_brute_force(maps[0].numpy(), mask[0].numpy())
    assert score(maps, mask, pointing_tolerance=1)["pointing_hit"].item() == 1.0


def test_pointing_hit_equals_a_brute_force_loop_on_plateaus(gen):
    coarse = torch.randint(0, 3, (12, 1, 4, 4), generator=gen).float()  # ties between cells too
    maps = F.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    masks = torch.rand(12, 16, 16, generator=gen) > 0.8
    got = score(maps, masks)["pointing_hit"]
    for i in range(12):
        assert got[i].item() == _pointing_brute_force(maps[i].numpy(), masks[i].numpy()), i


def test_score_returns_every_scored_metric_of_the_registry(gen):
    s = score(torch.rand(2, 4, 4, generator=gen), torch.rand(2, 4, 4, generator=gen) > 0.5)
    assert set(s) == {*(name for name, m in REGISTRY.items() if m.scored), "invalid"}
    assert tuple(name for name, m in REGISTRY.items() if m.scored) == METRICS


def test_the_readme_metrics_table_is_the_registry():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Metrics\n") :]
    header = section.index("| name | label | definition | meaning |")
    lines = section[header:].split("\n\n")[0].splitlines()[2:]
    rows = [tuple(cell.strip() for cell in line.strip("|").split(" | ")) for line in lines]
    assert rows == [(m.name, m.label, m.formula, m.help) for m in REGISTRY.values()]


SHARPNESS = Metric(
    "sharpness",
    "max(H) / mean(H)",
    "higher",
    "sharpness",
    "How peaked the heatmap is.",
    aggregates=(Aggregate("sharpness_mean", "mean", "mean sharpness", "mean max(H) / mean(H)"),),
)


@pytest.fixture
def with_sharpness(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(scoring.REGISTRY, SHARPNESS.name, SHARPNESS)


def test_the_derived_tables_are_the_registry_as_shipped():
    assert records.dtypes() == records.DTYPES
    assert records.analysis_columns() == records.ANALYSIS_COLUMNS
    # what the analysis requires: all of those but the columns older frames may lack
    assert tuple(c for c in records.ANALYSIS_COLUMNS if c not in analysis.OPTIONAL_COLUMNS) == analysis.REQUIRED_COLUMNS
    assert analysis.statistics() == analysis.STATISTICS
    assert config.gap_metrics() == config.GAP_METRICS
    assert html.statistic_labels() == html.STATISTIC_LABELS


@pytest.mark.usefixtures("with_sharpness")
def test_a_metric_added_to_the_registry_appears_everywhere():
    names = list(records.dtypes())
    assert names[names.index("border_share") + 1] == "sharpness" and records.dtypes()["sharpness"] == "float64"
    assert records.analysis_columns()[-1] == "sharpness"
    assert analysis.statistics()["sharpness_mean"] == analysis.Statistic(
        "sharpness", "valid", "mean", "higher", "mean max(H) / mean(H)"
    )
    assert config.gap_metrics()["sharpness"] == config.gap_metrics()["sharpness_mean"] == "sharpness_mean"
    assert html.statistic_labels()["sharpness_mean"] == ("mean sharpness", "fmt")
    assert html.metric_help()["sharpness"] == "How peaked the heatmap is."


def test_a_metric_without_direction_is_no_gap_metric():
    assert "subject_area" not in config.GAP_METRICS and "subject_area_mean" not in config.GAP_METRICS
    assert analysis.STATISTICS["subject_area_mean"].better is None
    assert set(config.GAP_METRICS.values()) == set(analysis.DISPARITY_STATISTICS)
