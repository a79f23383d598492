"""A multi-label audit end to end: a tiny CNN trained in seconds on shapes that may co-occur
(each with its own mask), audited through ``auditcam audit --task multilabel``; its bundle,
report, read-back and the bad inputs of the issue."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pandas as pd
import pytest
import torch

import auditcam
from auditcam import cli
from auditcam.errors import InputError
from auditcam.probes.beyond import SINGLE_LABEL_PROBE
from auditcam.report import render_html, summary_schema
from tests.multilabel import CLASSES, PREPROCESSING, ShapesNet, train_shapes, write_shapes

SPEC = "tests.multilabel:shapes_net"
FAST = ["--bootstrap", "200", "--min-group-size", "5", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The trained model's weights file and a 40-sample dataset with a mask per label."""
    folder = tmp_path_factory.mktemp("multilabel")
    weights = folder / "shapes.pt"
    torch.save(train_shapes().state_dict(), weights)
    return weights, write_shapes(folder / "data", 40, seed=3)


@pytest.fixture(scope="module")
def audited(trained, tmp_path_factory):
    weights, manifest = trained
    out = tmp_path_factory.mktemp("out")
    argv = ["audit", "--model", SPEC, "--weights", str(weights), "--data", str(manifest), "--out", str(out)]
    code = cli.main([*argv, "--task", "multilabel", "--target", "label", *FAST])
    return code, out, manifest


def test_the_audit_writes_per_label_rows_summary_and_report(audited):
    code, out, manifest = audited
    assert code in (cli.EXIT_PASS, cli.EXIT_FAIL)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert (summary["meta"]["task"], summary["meta"]["target"], summary["meta"]["threshold"]) == (
        "multilabel",
        "label",
        0.5,
    )
    jsonschema.Draft202012Validator(summary_schema()).validate(summary)
    overall = summary["aggregates"]["gradcam"]["overall"]
    assert overall["accuracy"] > 0.9 and overall["precision"] > 0.9 and overall["recall"] > 0.9
    samples = pd.read_parquet(out / "samples.parquet")
    labels = pd.read_csv(manifest, keep_default_na=False)["labels"]
    assert len(samples) == sum(max(1, len([c for c in cell.split(";") if c])) for cell in labels)
    assert {"position", "true_labels", "pred_labels"} <= set(samples.columns)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Multi-label audit" in page and ">precision<" in page and "Per label" in page


def test_each_label_is_measured_against_its_own_mask(audited, trained, tmp_path):
    """The model finds each shape, so each label's heatmap lies on that label's mask; measured
    against the other label's mask (cells swapped on images with both), it lies off it."""
    _, out, manifest = audited
    samples = pd.read_parquet(out / "samples.parquet")
    ok = samples[samples["status"] == "ok"]
    for name in CLASSES:
        mine = ok[ok["label_name"] == name]
        assert mine["subject_share"].mean() > 0.3 and mine["focus_lift"].mean() > 2, name  # subject_area ~0.1
    frame = pd.read_csv(manifest, keep_default_na=False)
    both = frame["labels"] == "square;disc"
    frame.loc[both, ["mask:square", "mask:disc"]] = frame.loc[both, ["mask:disc", "mask:square"]].to_numpy()
    swapped = manifest.with_name("swapped.csv")
    frame.to_csv(swapped, index=False)
    model, info = auditcam.models.load_model_info(SPEC, trained[0])
    dataset = auditcam.open_dataset(swapped, classes=CLASSES, preprocessing=info.preprocessing, task="multilabel")
    result = auditcam.audit(
        model,
        dataset,
        auditcam.AuditSettings(task="multilabel", target="label", gallery_size=0),
        analysis=auditcam.AnalysisOptions(bootstrap=50, min_group_size=5),
        progress=False,
    )
    wrong = result.samples
    ids = set(frame.loc[both, "image"])
    on_both = wrong[wrong["id"].isin(ids) & (wrong["status"] == "ok")]
    right = ok[ok["id"].isin(ids)]
    assert len(on_both) and right["subject_share"].mean() > 0.3 > 0.1 > on_both["subject_share"].mean()


def test_a_result_read_back_renders_the_same_report(audited):
    _, out, _ = audited
    again = auditcam.AuditResult.read(out)
    assert render_html(again) == (out / "report.html").read_text(encoding="utf-8")
    assert again.analyses["gradcam"].task == "multilabel"
    assert again.analyses["gradcam"].to_dict()["overall"] == again.aggregates["gradcam"]["overall"]


@pytest.mark.parametrize("threshold", ["0", "1"])
def test_a_threshold_outside_the_open_interval_exits_2_naming_the_flag(trained, tmp_path, capsys, threshold):
    _, manifest = trained
    argv = ["audit", "--model", SPEC, "--data", str(manifest), "--out", str(tmp_path), "--task", "multilabel"]
    assert cli.main([*argv, "--threshold", threshold]) == cli.EXIT_INPUT
    error = capsys.readouterr().err
    assert error.startswith("auditcam: error: --threshold: expected a number between 0 and 1 (exclusive)")
    assert len(error.strip().splitlines()) == 1


def test_a_labels_manifest_needs_the_multilabel_task(trained, tmp_path, capsys):
    weights, manifest = trained
    argv = ["audit", "--model", SPEC, "--weights", str(weights), "--data", str(manifest), "--out", str(tmp_path)]
    assert cli.main(argv) == cli.EXIT_INPUT
    assert "the 'labels' column holds several labels per sample: set --task to multilabel" in capsys.readouterr().err


def test_a_single_label_manifest_works_under_multilabel_and_says_so(trained, tmp_path, capsys):
    weights, manifest = trained
    frame = pd.read_csv(manifest, keep_default_na=False)
    single = frame[frame["labels"].isin(CLASSES)]
    rows = pd.DataFrame({"image": single["image"], "label": single["labels"], "site": single["site"]})
    rows["mask"] = [row[f"mask:{row['labels']}"] for _, row in single.iterrows()]
    path = manifest.with_name("single.csv")
    rows.to_csv(path, index=False)
    out = tmp_path / "out"
    argv = ["audit", "--model", SPEC, "--weights", str(weights), "--data", str(path), "--out", str(out)]
    assert cli.main([*argv, "--task", "multilabel", *FAST]) in (cli.EXIT_PASS, cli.EXIT_FAIL)
    note = "every sample has one label (single.csv has a 'label' column, not 'labels')"
    assert f"auditcam: note: {note}" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["meta"]["dataset"]["notes"][0].startswith(note)
    samples = pd.read_parquet(out / "samples.parquet")
    assert len(samples) == len(rows) and (samples["true_labels"].map(len) == 1).all()


def test_a_label_beyond_the_model_outputs_names_num_classes(trained, tmp_path):
    _, manifest = trained
    frame = pd.read_csv(manifest, keep_default_na=False)
    frame["labels"] = "0;2"  # indices, no class list: the model has 2 outputs
    path = manifest.with_name("beyond.csv")
    frame.drop(columns=["mask:square", "mask:disc"]).to_csv(path, index=False)
    dataset = auditcam.open_dataset(path, preprocessing=PREPROCESSING, task="multilabel")
    for target in ("label", "pred"):
        with pytest.raises(InputError, match="check `num_classes` and the labels") as error:
            auditcam.audit(
                ShapesNet(), dataset, auditcam.AuditSettings(task="multilabel", target=target), progress=False
            )
        assert error.value.parameter == "num_classes"


def test_probes_under_multilabel_work_per_label_or_say_they_do_not_apply(trained):
    weights, manifest = trained
    model, info = auditcam.models.load_model_info(SPEC, weights)
    dataset = auditcam.open_dataset(manifest, classes=CLASSES, preprocessing=info.preprocessing, task="multilabel")
    settings = auditcam.AuditSettings(
        task="multilabel", target="pred", counterfactual=True, sanity=True, sanity_samples=4, sanity_stages=2
    )
    training = model.training
    result = auditcam.audit(
        model, dataset, settings, analysis=auditcam.AnalysisOptions(bootstrap=50, min_group_size=5), progress=False
    )
    assert model.training == training and all(p.requires_grad for p in model.parameters())
    counterfactual = [c for c in result.checks if c.name in ("bg_gap", "background_following")]
    assert counterfactual and {c.outcome for c in counterfactual} == {"not applicable"}
    assert {c.detail for c in counterfactual} == {SINGLE_LABEL_PROBE}
    assert result.counterfactual is None
    assert result.sanity.settings["explained"] == "one label per sample: the most probable label"
    assert np.isfinite(result.sanity.final.value)


def test_two_multilabel_audits_of_the_true_labels_compare_paired(trained):
    weights, manifest = trained
    model, info = auditcam.models.load_model_info(SPEC, weights)
    dataset = auditcam.open_dataset(manifest, classes=CLASSES, preprocessing=info.preprocessing, task="multilabel")
    options = auditcam.AnalysisOptions(bootstrap=50, min_group_size=5)
    a, b = (
        auditcam.audit(
            model,
            dataset,
            auditcam.AuditSettings(task="multilabel", target="label", threshold=threshold, gallery_size=0),
            analysis=options,
            progress=False,
        )
        for threshold in (0.5, 0.999)
    )
    comparison = auditcam.compare(a, b)
    deltas = comparison.deltas.set_index(["dimension", "group", "statistic"])
    for key in (("overall", "all", "precision"), ("class", "disc", "recall"), ("site", "A", "accuracy")):
        row = deltas.loc[key]
        assert np.isfinite(row["a"]) and row["delta"] == pytest.approx(row["b"] - row["a"]), key
    assert deltas.loc[("overall", "all", "recall"), "delta"] <= 0  # a stricter threshold predicts fewer labels


def test_comparing_multilabel_audits_of_predicted_labels_is_refused_before_any_audit(trained, tmp_path, capsys):
    weights, manifest = trained
    argv = ["compare", "--model", SPEC, "--weights", str(weights), "--weights", str(weights), "--data", str(manifest)]
    out = tmp_path / "compare"
    assert cli.main([*argv, "--out", str(out), "--task", "multilabel", "--target", "pred", *FAST]) == cli.EXIT_INPUT
    error = capsys.readouterr().err.strip()
    assert error.endswith("and two models predict different labels: explain the true labels (--target label)")
    assert len(error.splitlines()) == 1 and not out.exists()  # refused before the first audit


def test_the_api_refuses_to_pair_multilabel_audits_of_predicted_labels(trained):
    weights, manifest = trained
    model, info = auditcam.models.load_model_info(SPEC, weights)
    dataset = auditcam.open_dataset(manifest, classes=CLASSES, preprocessing=info.preprocessing, task="multilabel")
    settings = auditcam.AuditSettings(task="multilabel", target="pred", gallery_size=0, strategies=False)
    options = auditcam.AnalysisOptions(bootstrap=20, min_group_size=5)
    result = auditcam.audit(model, dataset, settings, analysis=options, progress=False)
    with pytest.raises(auditcam.InputError) as info:
        auditcam.compare(result, result)
    assert info.value.parameter == "target"


def test_a_trend_of_multilabel_checkpoints_reads_several_labels_per_sample(trained, tmp_path):
    weights, manifest = trained
    for name in ("epoch1", "epoch2"):
        (tmp_path / f"{name}.pt").write_bytes(weights.read_bytes())
    out = tmp_path / "trend"
    argv = ["trend", "--model", SPEC, "--weights", str(tmp_path / "epoch*.pt"), "--data", str(manifest)]
    code = cli.main([*argv, "--out", str(out), "--task", "multilabel", "--target", "label", "--no-strategies", *FAST])
    assert code in (cli.EXIT_PASS, cli.EXIT_FAIL)
    summary = json.loads((out / "summary.json").read_text())
    assert [e["name"] for e in summary["checkpoints"]] == ["epoch1", "epoch2"]
    inner = json.loads((out / summary["checkpoints"][-1]["folder"] / "summary.json").read_text())
    assert inner["meta"]["task"] == "multilabel"
    precision = [c["statistics"]["overall"]["all"]["precision"]["value"] for c in summary["checkpoints"]]
    assert precision[0] == pytest.approx(precision[1])  # the same weights twice
