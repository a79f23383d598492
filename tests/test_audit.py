"""The audit runner: one record per (sample, method), faults kept, checks decided."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from auditcam import Checks, LabelledDataset, audit
from auditcam.cam import Explainer
from auditcam.config import RUN_KEYS, AnalysisOptions, AuditSettings
from auditcam.errors import InputError
from auditcam.models import Preprocessing
from auditcam.scoring import METRICS


def _append_rows(manifest, rows):
    with manifest.open("a", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerows(rows)


@pytest.fixture
def faulty_manifest(small_dataset):
    """The small dataset plus an unreadable image and an empty mask."""
    manifest, classes = small_dataset
    folder = manifest.parent
    (folder / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    from PIL import Image

    Image.new("L", (64, 64), 0).save(folder / "masks" / "empty.png")
    _append_rows(
        manifest,
        [
            ["broken", "images/broken.png", "masks/00000.png", "square", "A"],
            ["empty", "images/00001.png", "masks/empty.png", "cross", "B"],
        ],
    )
    return manifest, classes


def test_every_sample_gets_a_row_per_method(faulty_manifest, demo_model):
    model, info = demo_model
    manifest, classes = faulty_manifest
    dataset = LabelledDataset.from_manifest(manifest, classes=classes)
    result = audit(model, dataset, AuditSettings(methods=("gradcam",), batch_size=5), model_info=info, progress=False)
    samples = result.samples
    assert len(samples) == 14
    assert list(samples["id"]) == [f"demo-{i:05d}" for i in range(12)] + ["broken", "empty"]
    broken = samples[samples["id"] == "broken"].iloc[0]
    assert broken["status"] == "error" and "corrupt or truncated" in broken["reason"]
    assert all(math.isnan(broken[m]) for m in METRICS)
    assert broken["pred"] is None or str(broken["pred"]) == "<NA>"
    empty = samples[samples["id"] == "empty"].iloc[0]
    assert empty["status"] == "invalid" and empty["reason"] == "empty subject mask"
    assert empty["label_name"] == "cross" and empty["pred_name"] in classes  # predicted, just not scored
    ok = samples[samples["status"] == "ok"]
    assert len(ok) == 12 and ok["subject_share"].between(0, 1).all()
    assert set(samples["site"]) == {"A", "B"}
    overall = result.aggregates["gradcam"]["overall"]
    assert (overall["n"], overall["n_valid"], overall["n_invalid"], overall["n_error"]) == (14, 12, 1, 1)
    assert overall["subject_share_mean"] == pytest.approx(ok["subject_share"].mean())


def test_checks_decide_pass_and_fail(small_dataset, demo_model):
    model, info = demo_model
    manifest, classes = small_dataset
    dataset = LabelledDataset.from_manifest(manifest, classes=classes)
    few = AnalysisOptions(min_group_size=5, bootstrap=200)
    loose = audit(
        model, dataset, checks=Checks(max_background_reliant_rate=1.0), analysis=few, model_info=info, progress=False
    )
    assert loose.passed
    rate = loose.checks[0].value
    strict = audit(
        model,
        dataset,
        checks=Checks(max_background_reliant_rate=None, min_subject_share=1.0),
        analysis=few,
        model_info=info,
        progress=False,
    )
    assert not strict.passed and [c.name for c in strict.failed_checks] == ["mean_subject_share"]
    expected = loose.samples["background_reliant"].mean()
    assert rate == pytest.approx(expected)


def test_twelve_samples_are_insufficient_data_by_default(small_dataset, demo_model):
    """12 samples < min_group_size 30: the check is neither passed nor failed, and the audit does
    not pass unless insufficient data is set to be skipped."""
    model, info = demo_model
    manifest, classes = small_dataset
    dataset = LabelledDataset.from_manifest(manifest, classes=classes)
    result = audit(model, dataset, checks=Checks(max_background_reliant_rate=1.0), model_info=info, progress=False)
    check, location = result.checks
    assert check.outcome == "insufficient data" and check.detail == "n = 12 < min_group_size 30"
    # the location-shortcut check is on by default; no class has enough maps to cluster
    assert location.name == "location_shortcut" and location.outcome == "not applicable" and not location.blocking
    assert not result.passed and result.failed_checks == [check]
    skipping = audit(
        model,
        dataset,
        checks=Checks(max_background_reliant_rate=1.0, insufficient_data="skip"),
        model_info=info,
        progress=False,
    )
    assert skipping.checks[0].outcome == "insufficient data" and skipping.passed


def test_explaining_the_true_label(small_dataset, demo_model):
    model, info = demo_model
    manifest, classes = small_dataset
    dataset = LabelledDataset.from_manifest(manifest, classes=classes)
    result = audit(model, dataset, AuditSettings(target="label"), model_info=info, progress=False)
    assert (result.samples["target"] == result.samples["label"]).all()


def test_class_list_that_does_not_match_the_model(small_dataset, demo_model):
    model, info = demo_model
    manifest, _ = small_dataset
    dataset = LabelledDataset.from_manifest(manifest, classes=("circle", "square", "cross", "star"))
    with pytest.raises(InputError, match="the model has 3 outputs but the class list has 4 names"):
        audit(model, dataset, model_info=info, progress=False)


def test_gallery_is_bounded_and_ordered(small_dataset, demo_model):
    model, info = demo_model
    manifest, classes = small_dataset
    dataset = LabelledDataset.from_manifest(manifest, classes=classes)
    result = audit(model, dataset, AuditSettings(gallery_size=3, batch_size=4), model_info=info, progress=False)
    worst = [e.record["subject_share"] for e in result.gallery.background_reliant]
    best = [e.record["subject_share"] for e in result.gallery.subject_focused]
    shares = sorted(result.samples["subject_share"])
    assert worst == shares[:3] and best == shares[::-1][:3]
    exemplar = result.gallery.background_reliant[0]
    assert exemplar.image.shape == (64, 64, 3) and exemplar.mask.shape == (64, 64)
    assert exemplar.heatmap.min() >= 0 and exemplar.heatmap.max() <= 1


def test_audit_leaves_the_model_as_it_was(small_dataset, demo_model):
    model, info = demo_model
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    manifest, classes = small_dataset
    audit(model, LabelledDataset.from_manifest(manifest, classes=classes), model_info=info, progress=False)
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_vision_transformer_is_audited_like_a_cnn(small_dataset, vit, tmp_path):
    manifest, classes = small_dataset
    at_32_px = Preprocessing(image_size=(32, 32), resize=None, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    dataset = LabelledDataset.from_manifest(manifest, classes=classes, preprocessing=at_32_px)
    methods = ("gradcam", "layercam", "eigencam")
    settings = AuditSettings(methods=methods, sanity=True, sanity_samples=4, sanity_stages=3, batch_size=5)
    result = audit(vit, dataset, settings, progress=False)
    assert result.meta["layer"] == "encoder.layers.encoder_layer_1.ln_1"
    samples = result.samples
    assert len(samples) == 12 * len(methods)
    ok = samples["status"] == "ok"
    # An untrained model's Grad-CAM may be negative everywhere: that map is reported invalid, never scored 0.
    assert (samples.loc[~ok, "reason"] == "heatmap is all zero").all()
    assert ok[samples["method"] == "eigencam"].all() and ok.mean() > 0.8
    scored = samples[ok]
    assert (
        scored["subject_share"].between(0, 1).all() and scored["focus_lift"].ge(0).all()
    )  # a map may miss the subject entirely
    assert {grid.shape for grid in result.featuremaps} == {(16, 4, 4)}  # the layer's tokens as a grid
    assert result.sanity.stages[-1].name == "conv_proj"
    paths = result.write(tmp_path / "out")
    assert 'aria-label="feature maps"' in paths["report.html"].read_text(encoding="utf-8")


def test_the_summary_meta_and_the_resume_fingerprint_come_from_the_settings(small_dataset, demo_model, tmp_path):
    model, info = demo_model
    manifest, classes = small_dataset
    dataset = LabelledDataset.from_manifest(manifest, classes=classes)
    with Explainer(model) as explainer:
        explainer(torch.zeros(1, 3, 64, 64))
        layer = explainer.layer  # the one found automatically, given explicitly
    settings = AuditSettings(
        layer=layer, batch_size=4, shard_size=8, device="cpu", gallery_size=2, featuremap_channels=0
    )
    result = audit(
        model, dataset, settings, model_info=info, run_dir=tmp_path / "run", progress=False, command="auditcam audit"
    )
    result.write(tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))["meta"]
    assert {key: meta[key] for key in RUN_KEYS} == settings.describe()
    assert meta["command"] == "auditcam audit" and meta["config_sources"] == []
    fingerprint = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))["fingerprint"]
    recorded = settings.describe(records_only=True)
    assert {key: fingerprint[key] for key in recorded} == {**recorded, "amp": None}  # amp: the dtype, None when off
