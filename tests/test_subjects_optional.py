"""Audits of data without subject labels, with some, and with all: the mask-free results agree,
the subject results are measured on the rows with a subject or stated as not measured."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from auditcam import AuditSettings, Checks, LabelledDataset, audit
from auditcam.config import AnalysisOptions, GroupGap, Threshold
from auditcam.stats.analysis import NO_SUBJECTS, SUBJECT_STATISTICS
from auditcam.stats.checks import NOT_APPLICABLE

FEW = AnalysisOptions(min_group_size=3, bootstrap=200)
MASK_FREE = ["pred", "correct", "confidence", "border_share"]


@pytest.fixture
def three_manifests(small_dataset):
    """The same 12 samples with every subject, with the masks of the odd rows left empty, and
    with no mask column at all."""
    manifest, classes = small_dataset
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    partial = frame.copy()
    partial.loc[partial.index % 2 == 1, "mask"] = ""
    paths = {"full": manifest, "partial": manifest.with_name("partial.csv"), "none": manifest.with_name("none.csv")}
    partial.to_csv(paths["partial"], index=False)
    frame.drop(columns="mask").to_csv(paths["none"], index=False)
    return paths, classes


def _audit(path, classes, demo_model, checks):
    model, info = demo_model
    dataset = LabelledDataset.from_manifest(path, classes=classes)
    return audit(model, dataset, checks=checks, analysis=FEW, model_info=info, progress=False)


def test_no_partial_and_full_subjects(three_manifests, demo_model):
    paths, classes = three_manifests
    checks = Checks(min_subject_share=Threshold(0.0), min_accuracy=Threshold(0.0))
    results = {kind: _audit(path, classes, demo_model, checks) for kind, path in paths.items()}
    samples = {kind: r.samples for kind, r in results.items()}
    for kind in ("partial", "none"):  # every row kept, the mask-free numbers unchanged
        assert list(samples[kind]["id"]) == list(samples["full"]["id"])
        pd.testing.assert_frame_equal(samples[kind][MASK_FREE], samples["full"][MASK_FREE])
    assert samples["full"]["border_share"].notna().all() and (samples["full"]["border_share"] > 0).all()

    odd = samples["partial"].index % 2 == 1
    assert list(samples["partial"]["has_subject"]) == list(~odd)
    assert (samples["partial"]["status"] == "ok").all()  # a row without subject is not invalid
    assert (samples["partial"].loc[odd, "reason"] == "no subject").all()
    assert samples["partial"].loc[odd, "subject_share"].isna().all()
    pd.testing.assert_series_equal(
        samples["partial"].loc[~odd, "subject_share"], samples["full"].loc[~odd, "subject_share"]
    )
    assert not samples["none"]["has_subject"].any() and samples["none"]["subject_share"].isna().all()

    overall = {kind: r.aggregates["gradcam"]["overall"] for kind, r in results.items()}
    for kind in ("partial", "none"):
        assert overall[kind]["accuracy"] == overall["full"]["accuracy"]
        assert overall[kind]["border_share_mean"] == pytest.approx(samples["full"]["border_share"].mean())
        assert overall[kind]["error_rate"] == 0.0
    assert overall["partial"]["subject_share_mean"] == pytest.approx(samples["full"].loc[~odd, "subject_share"].mean())
    assert results["partial"].analyses["gradcam"].estimate("overall", "all", "subject_share_mean")["n"] == 6
    assert overall["none"]["subject_share_mean"] is None  # never 0

    aggregates = {kind: r.aggregates["gradcam"] for kind, r in results.items()}
    assert (aggregates["full"]["n_with_subject"], aggregates["partial"]["n_with_subject"]) == (12, 6)
    assert aggregates["full"]["not_measured"] == aggregates["partial"]["not_measured"] == {}
    assert aggregates["none"]["not_measured"] == dict.fromkeys(SUBJECT_STATISTICS, NO_SUBJECTS)

    outcomes = {kind: {c.name: c.outcome for c in r.checks} for kind, r in results.items()}
    assert outcomes["full"]["mean_subject_share"] == outcomes["partial"]["mean_subject_share"] == "pass"
    assert outcomes["none"]["mean_subject_share"] == NOT_APPLICABLE
    assert outcomes["none"]["accuracy"] == "pass"
    assert results["none"].passed  # the verdict rests on the mask-free checks


def test_subject_checks_are_not_applicable_without_subjects_and_never_block(three_manifests, demo_model):
    paths, classes = three_manifests
    impossible = Threshold(1.0)  # would fail on any data that had subjects
    checks = Checks(
        max_background_reliant_rate=Threshold(0.0),
        min_subject_share=impossible,
        max_group_gap=(GroupGap("site", "subject_share_mean", 0.0),),
        insufficient_data="fail",
    )
    result = _audit(paths["none"], classes, demo_model, checks)
    by_name = {c.name: c for c in result.checks}
    for name in ("background_reliant_rate", "mean_subject_share", "group_gap:site:subject_share_mean"):
        check = by_name[name]
        assert check.outcome == NOT_APPLICABLE and check.detail == NO_SUBJECTS and not check.blocking
    assert result.passed
    assert not _audit(paths["partial"], classes, demo_model, checks).passed  # with subjects they decide


def test_a_box_off_the_image_or_of_zero_area_is_a_sample_without_subject(small_dataset, demo_model):
    manifest, classes = small_dataset
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False).drop(columns="mask")
    boxes = [("10", "10", "30", "30"), ("100", "0", "120", "20"), ("5", "5", "5", "20")] * 4
    frame[["x_min", "y_min", "x_max", "y_max"]] = boxes
    path = manifest.with_name("boxes.csv")
    frame.to_csv(path, index=False)
    samples = _audit(path, classes, demo_model, Checks()).samples
    assert len(samples) == 12 and samples["pred"].notna().all()  # nothing dropped, all predicted
    assert list(samples["has_subject"]) == [True, False, False] * 4
    assert samples.loc[1, "reason"] == "no subject: box (100, 0, 120, 20) lies outside the 64x64 image (WxH)"
    assert samples.loc[2, "reason"] == "no subject: box (5, 5, 5, 20) has zero area"
    assert (samples["status"] == "ok").all() and samples["border_share"].notna().all()
    assert math.isnan(samples.loc[1, "subject_share"]) and not math.isnan(samples.loc[0, "subject_share"])


def test_a_folder_tree_without_masks_is_audited_end_to_end(small_dataset, tmp_path, capsys):
    from auditcam import cli
    from auditcam.demo import MODEL_SPEC

    manifest, _classes = small_dataset
    frame = pd.read_csv(manifest, dtype=str)
    tree = tmp_path / "tree"
    for row in frame.itertuples():
        (tree / row.label).mkdir(parents=True, exist_ok=True)
        (tree / row.label / f"{row.id}.png").write_bytes((manifest.parent / row.image).read_bytes())
    out = tmp_path / "out"
    argv = ["audit", "--model", MODEL_SPEC, "--data", str(tree), "--out", str(out), "--no-progress"]
    argv += ["--classes", str(manifest.parent / "classes.txt"), "--min-group-size", "3"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the untrained model's weights: a heatmap can be all zero, then it is invalid
        code = cli.main(argv)
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    outcomes = {c["name"]: c["outcome"] for c in summary["checks"]}
    assert outcomes["background_reliant_rate"] == NOT_APPLICABLE
    blocking = [c for c in summary["checks"] if c["blocking"]]
    assert code == (cli.EXIT_FAIL if blocking else cli.EXIT_PASS)  # decided by the mask-free checks alone
    assert summary["aggregates"]["gradcam"]["not_measured"]["subject_share_mean"] == NO_SUBJECTS
    samples = pd.read_parquet(out / "samples.parquet")
    assert len(samples) == 12 and not samples["has_subject"].any()
    scored = samples["status"] == "ok"  # the others are invalid heatmaps (all zero), not subject faults
    assert scored.any() and set(samples.loc[~scored, "status"]) <= {"invalid"}
    assert samples.loc[scored, "border_share"].notna().all()
    report = (out / "report.html").read_text(encoding="utf-8")
    assert f'<div class="value not-measured">{NO_SUBJECTS}</div>' in report  # a key number, not a 0
    assert "No sample has a subject label" in report


def test_the_counterfactual_test_without_subjects_is_not_applicable(three_manifests, demo_model):
    """No subject masks: no background can be swapped, so both counterfactual checks are not
    applicable (with why) and the audit's verdict does not rest on them."""
    paths, classes = three_manifests
    model, info = demo_model
    dataset = LabelledDataset.from_manifest(paths["none"], classes=classes)
    result = audit(model, dataset, AuditSettings(counterfactual=True), analysis=FEW, model_info=info, progress=False)
    checks = {c.name: c for c in result.checks}
    for name in ("background_following", "bg_gap"):
        assert checks[name].outcome == NOT_APPLICABLE and checks[name].value is None, checks[name]
        assert checks[name].detail.startswith(NO_SUBJECTS) and not checks[name].blocking
    assert result.counterfactual is None


def test_a_partial_masks_tree_keeps_every_sample_and_the_mask_free_numbers(small_dataset, tmp_path, demo_model):
    """A folder tree whose masks/ holds a mask for only some images: those are subjects, the rest
    'no subject' (kept, predicted, never an error), and the mask-free numbers are those of the
    same tree without masks/."""
    manifest, classes = small_dataset
    frame = pd.read_csv(manifest, dtype=str)
    trees = {"partial": tmp_path / "partial", "none": tmp_path / "none"}
    for i, row in enumerate(frame.itertuples()):
        for tree in trees.values():
            (tree / row.label).mkdir(parents=True, exist_ok=True)
            (tree / row.label / f"{row.id}.png").write_bytes((manifest.parent / row.image).read_bytes())
        if i % 3 == 0:  # a mask for every third image only
            (trees["partial"] / "masks" / row.label).mkdir(parents=True, exist_ok=True)
            mask = trees["partial"] / "masks" / row.label / f"{row.id}.png"
            mask.write_bytes((manifest.parent / row.mask).read_bytes())
    model, info = demo_model
    samples = {}
    for kind, tree in trees.items():
        dataset = LabelledDataset.open(tree, classes=classes)
        samples[kind] = audit(model, dataset, analysis=FEW, model_info=info, progress=False).samples
    partial, none = samples["partial"], samples["none"]
    assert len(partial) == len(none) == 12 and list(partial["id"]) == list(none["id"])
    pd.testing.assert_frame_equal(partial[MASK_FREE], none[MASK_FREE])
    masked = partial["id"].isin({f"{row.label}/{row.id}.png" for row in frame.iloc[::3].itertuples()})
    assert masked.sum() == 4 and list(partial["has_subject"]) == list(masked)
    assert (partial["status"] == "ok").all() and (partial.loc[~masked, "reason"] == "no subject").all()
    assert partial.loc[masked, "subject_share"].notna().all() and partial.loc[~masked, "subject_share"].isna().all()
    assert not none["has_subject"].any()
