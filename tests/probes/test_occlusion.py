"""The location-shortcut test on tiny CNNs trained in seconds: a model that learned a fixed tag is
flagged and its spot covers the tag; a clean model is not, nor one looking at centred subjects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auditcam.audit import audit
from auditcam.cam import CaptumMethod
from auditcam.config import AuditSettings
from auditcam.data import LabelledDataset
from auditcam.demo import write_split
from auditcam.demo.models import PREPROCESSING, train
from auditcam.demo.synthetic import CLASSES, add_tag, make_split, tag_region
from auditcam.probes.occlusion import SUBJECT_SPOT, OcclusionOptions, control_boxes, occlude_strategy, pixel_box
from auditcam.report import render_html
from auditcam.result import AuditResult
from auditcam.stats.bootstrap import mean_interval
from auditcam.stats.strategies import Strategy

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


class _FlatOrNoise:
    """A stand-in attribution: the same value everywhere, or seeded noise (no model at all)."""

    def __init__(self, kind: str) -> None:
        self.kind, self.gen = kind, torch.Generator().manual_seed(0)

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "uniform":
            return torch.ones_like(inputs)
        return torch.rand(inputs.shape, generator=self.gen)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["uniform", "random"])
def test_a_uniform_or_random_map_explainer_never_flags_even_the_tag_model(tmp_path, tag_model, audited_split, kind):
    manifest = write_split(audited_split, tmp_path / kind, masks=False)
    dataset = LabelledDataset.from_manifest(manifest, classes=CLASSES, preprocessing=PREPROCESSING)
    method = CaptumMethod(_FlatOrNoise(kind), name=kind)
    settings = AuditSettings(methods=(method,), featuremap_channels=0, gallery_size=2)
    result = audit(tag_model, dataset, settings, progress=False)
    strategies = result.strategies.discovery.strategies
    assert strategies and not any(s.candidate or s.flagged for s in strategies)  # no spot to occlude
    assert next(c for c in result.checks if c.name == "location_shortcut").outcome == "not applicable"


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
    # the subject is the compact shared spot: the masks rule it out before any occlusion
    candidates = [s for s in strategies if s.candidate]
    assert candidates, [s.to_dict() for s in strategies]
    for strategy in candidates:
        occlusion = strategy.occlusion
        assert not occlusion["measured"] and occlusion["reason"].startswith("the spot is the subject")
        assert occlusion["evidence"]["decided_by"] == "subject masks" and not occlusion["evidence"]["artefact"]
    assert "the subject (decided by subject masks): not occluded" in render_html(result)  # the report says why


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


SIZE = 32


class SpotModel(torch.nn.Module):
    """Class 0 when the top-left 8x8 corner is bright (mean above 0.5), else class 1; returns a
    dict, as Hugging Face models do, and records the size of every batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(10.0))
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.batches.append(len(x))
        spot = x[:, :, :8, :8].mean(dim=(1, 2, 3))
        return {"logits": torch.stack([self.scale * spot, self.scale * 0.5 * torch.ones_like(spot)], dim=1)}


def _members(n: int, subject: tuple[slice, slice]) -> list[dict]:
    """Images whose corner is bright except every third one; the subject mask at ``subject``."""
    gen = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        image = torch.rand(3, SIZE, SIZE, generator=gen) * 0.2
        if i % 3:
            image[:, :8, :8] = 1.0
        mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        mask[subject] = True
        items.append({"image": image, "mask": mask, "has_subject": True})
    return items


def _corner_strategy(n: int) -> Strategy:
    return Strategy(
        explained=0, class_name="a", id="a#1", n=n, share=1.0, accuracy={}, confidence={}, subject_share=None,
        mean_map=np.zeros((8, 8), np.float32), region=(0.0, 0.0, 0.25, 0.25), region_mass=1.0, shared=1.0,
        compact=True, candidate=True, groups={}, rows=np.arange(n),
    )  # fmt: skip


def test_the_occlusion_result_agrees_with_a_brute_force_loop():
    n, seed, n_boot = 40, 7, 300
    model = SpotModel()
    members = _members(n, (slice(20, 28), slice(20, 28)))  # the subject lies off the corner
    out = occlude_strategy(
        model, members, _corner_strategy(n), np.arange(n), np.zeros(0, dtype=int), OcclusionOptions(seed=seed),
        threshold=0.1, n_boot=n_boot, level=0.9, batch_size=16,
    )  # fmt: skip
    # by hand: occluding the corner flips exactly the bright-corner images; the control never touches it
    spot_flip = np.array([float(i % 3 != 0) for i in range(n)])
    assert out["measured"] and out["n"] == n and out["spot_box"] == [0, 8, 0, 8]
    assert out["spot_flip_rate"] == pytest.approx(spot_flip.mean()) and out["control_flip_rate"] == 0.0
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))  # the paired resamples, one by one
    means = [np.mean([spot_flip[i] - 0.0 for i in row]) for row in draws]
    low, high = out["difference"]["ci"]
    assert low == pytest.approx(np.quantile(means, 0.05)) and high == pytest.approx(np.quantile(means, 0.95))
    assert out["evidence"]["artefact"] and out["clear"]
    # the original, spot and control variants go through the model together, in full batches
    assert max(model.batches) <= 16 and model.batches[0] == 15 and sum(model.batches) == 3 * n
    capped = occlude_strategy(
        model, members, _corner_strategy(n), np.arange(n), np.zeros(0, dtype=int), OcclusionOptions(samples=25),
        threshold=0.1, n_boot=50, level=0.9, batch_size=16,
    )  # fmt: skip
    assert capped["n"] == 25  # a seeded subset of the members, and the n used is recorded


def test_a_spot_the_masks_show_to_be_the_subject_is_never_shown_to_the_model():
    n = 30
    model = SpotModel()
    members = _members(n, (slice(0, 8), slice(0, 8)))  # the subject is the corner spot itself
    out = occlude_strategy(
        model, members, _corner_strategy(n), np.arange(n), np.zeros(0, dtype=int), OcclusionOptions(),
        threshold=0.1, n_boot=50, level=0.9, batch_size=16,
    )  # fmt: skip
    assert model.batches == []  # decided from the masks alone: no forward pass
    assert not out["measured"] and out["n"] == n and out["reason"] == SUBJECT_SPOT.format(decided_by="subject masks")
    assert out["evidence"]["subject_overlap"] == 1.0 and not out["evidence"]["artefact"]
