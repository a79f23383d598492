"""The location-shortcut test on tiny CNNs trained in seconds: a model that learned a fixed tag is
flagged and its spot covers the tag; a clean model is not, nor one looking at centred subjects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auditcam.audit import audit
from auditcam.config import AuditSettings
from auditcam.data import LabelledDataset
from auditcam.demo import write_split
from auditcam.demo.models import PREPROCESSING, train
from auditcam.demo.synthetic import CLASSES, add_tag, make_split, tag_region
from auditcam.probes.occlusion import control_boxes, pixel_box
from auditcam.report import render_html
from auditcam.result import AuditResult
from auditcam.stats.bootstrap import mean_interval

NONE = {"A": 0.0, "B": 0.0}


def _audit(tmp_path, model, split, name, masks=True):
    manifest = write_split(split, tmp_path / name, masks=masks)
    dataset = LabelledDataset.from_manifest(manifest, classes=CLASSES, preprocessing=PREPROCESSING)
    return audit(model, dataset, AuditSettings(featuremap_channels=0, gallery_size=2), progress=False)


def _flagged(result):
    return [s for s in result.strategies.discovery.strategies if s.flagged]


@pytest.fixture(scope="module")
def tag_model():
    """Trained where every circle carries the tag (and nothing else does): it learns the tag."""
    split = make_split(600, agreement=NONE, seed=11)
    return train(add_tag(split, split.labels == 0).images, split.labels, epochs=3, seed=0)


@pytest.fixture(scope="module")
def audited_split():
    """Held out: the tag on half the images of every class, independent of the class."""
    split = make_split(300, agreement=NONE, seed=12)
    return add_tag(split, torch.arange(300) % 2 == 0)


@pytest.mark.slow
def test_a_tag_shortcut_is_flagged_and_its_region_covers_the_tag(tmp_path, tag_model, audited_split):
    result = _audit(tmp_path, tag_model, audited_split, "tag")
    flagged = _flagged(result)
    assert flagged, [s.to_dict() for s in result.strategies.discovery.strategies]
    x0, y0, x1, y1 = flagged[0].region
    tx0, ty0, tx1, ty1 = tag_region()
    assert x0 <= tx0 and y0 <= ty0 and x1 >= tx1 and y1 >= ty1  # the spot covers the tag
    assert flagged[0].class_name == "circle"
    occlusion = flagged[0].occlusion
    assert occlusion["spot_flip_rate"] > occlusion["control_flip_rate"] + 0.3
    assert occlusion["evidence"]["decided_by"] == "subject masks"
    check = next(c for c in result.checks if c.name == "location_shortcut")
    assert check.outcome == "fail"
    strategies = result.samples.loc[result.samples["method"] == "gradcam", "strategy"]
    assert strategies.notna().all() and flagged[0].id in set(strategies)
    # the bundle holds the strategies: read back, the same summary, mean maps, exemplars and page
    paths = result.write(tmp_path / "bundle")
    back = AuditResult.read(tmp_path / "bundle").strategies
    assert back.to_dict() == result.strategies.to_dict()
    for ours, theirs in zip(result.strategies.discovery.strategies, back.discovery.strategies, strict=True):
        assert np.array_equal(ours.mean_map, theirs.mean_map) and ours.explained == theirs.explained
        pictures, read = result.strategies.pictures.get(ours.id, []), back.pictures.get(ours.id, [])
        assert [i for i, _ in pictures] == [i for i, _ in read]
        assert all(np.array_equal(p, q) for (_, p), (_, q) in zip(pictures, read, strict=True))
    assert paths["report.html"].read_text(encoding="utf-8") == render_html(result)


@pytest.mark.slow
def test_a_tag_shortcut_is_flagged_without_masks_on_label_free_evidence(tmp_path, tag_model, audited_split):
    result = _audit(tmp_path, tag_model, audited_split, "tag-nomask", masks=False)
    flagged = _flagged(result)
    assert [s.class_name for s in flagged] == ["circle"]
    evidence = flagged[0].occlusion["evidence"]
    assert evidence["decided_by"].startswith("no subjects") and evidence["border"]
    assert evidence["constant_share"] > 0.05  # the tag's pixels are the same in every member
    assert all(s.subject_share is None for s in result.strategies.discovery.strategies)


@pytest.mark.slow
def test_a_clean_model_is_not_flagged(tmp_path, audited_split):
    split = make_split(600, agreement=NONE, seed=13)
    model = train(split.images, split.labels, epochs=3, seed=0)  # never saw a tag
    result = _audit(tmp_path, model, audited_split, "clean")
    assert not _flagged(result)
    assert next(c for c in result.checks if c.name == "location_shortcut").outcome != "fail"


@pytest.mark.slow
def test_a_model_looking_at_centred_subjects_is_not_flagged(tmp_path):
    split = make_split(600, agreement=NONE, seed=14, centred=True)
    model = train(split.images, split.labels, epochs=3, seed=0)
    result = _audit(tmp_path, model, make_split(300, agreement=NONE, seed=15, centred=True), "centred")
    strategies = result.strategies.discovery.strategies
    assert not _flagged(result)
    # the subject is the compact shared spot: occluding it was measured, and ruled out by the masks
    measured = [s for s in strategies if s.occlusion and s.occlusion["measured"]]
    assert all(not s.occlusion["evidence"]["artefact"] for s in measured)


def test_control_boxes_never_overlap_the_spot_and_keep_its_size():
    rng = np.random.default_rng(0)
    spot = pixel_box((0.0, 0.0, 0.25, 0.25), 32, 32)
    assert spot == (0, 8, 0, 8)
    boxes = control_boxes(spot, 32, 32, 500, rng)
    for y0, y1, x0, x1 in boxes:
        assert (y1 - y0, x1 - x0) == (8, 8) and y0 >= 0 and y1 <= 32 and x0 >= 0 and x1 <= 32
        assert y0 >= 8 or x0 >= 8  # disjoint from the spot
    assert len(set(boxes)) > 50  # drawn, not one fixed place
    assert control_boxes(pixel_box((0.0, 0.0, 0.75, 0.75), 32, 32), 32, 32, 3, rng) is None


def test_the_paired_bootstrap_ci_agrees_with_a_brute_force_loop():
    rng = np.random.default_rng(5)
    spot = (rng.random(80) < 0.6).astype(float)
    control = (rng.random(80) < 0.2).astype(float)
    difference = spot - control
    low, high = mean_interval(difference, n_boot=400, confidence=0.9, seed=3)
    draws = np.random.default_rng(3).integers(0, 80, size=(400, 80))
    means = [np.mean([spot[i] - control[i] for i in row]) for row in draws]
    assert low == pytest.approx(np.quantile(means, 0.05)) and high == pytest.approx(np.quantile(means, 0.95))
