"""Counterfactual background tests: the variants, the donors, the estimates, the demo's models."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
import torch

from auditcam import cli
from auditcam.config import AnalysisOptions, Checks, Threshold, load_config
from auditcam.data import LabelledDataset
from auditcam.demo import MODEL_SPEC
from auditcam.demo.synthetic import CLASSES
from auditcam.errors import InputError
from auditcam.models import load_model_info
from auditcam.probes.counterfactual import (
    BG_GAP,
    FOLLOWING,
    NO_SAME_DONOR,
    NO_SUBJECT,
    VARIANTS,
    Background,
    CounterfactualOptions,
    assign_donors,
    background_following,
    background_information,
    chance_accuracy,
    estimate,
    fill_colour,
    run_counterfactual,
    subject_box,
    tile_background,
    variants,
)
from auditcam.stats.checks import FAIL, NOT_APPLICABLE, PASS, background_following_check, bg_gap_check
from tests.htmlcheck import parse_page

IMAGE_URIS = ("data:image/png;base64,", "data:image/webp;base64,", "data:image/svg+xml;base64,")

# ---------------------------------------------------------------------------------------------
# the variants


def _grid(h: int, w: int) -> torch.Tensor:
    """A one-channel image whose pixel (y, x) holds 100 y + x: every source pixel is traceable."""
    return (100 * torch.arange(h)[:, None] + torch.arange(w)[None, :]).float()[None]


def test_the_box_is_refilled_from_the_strip_above_it_column_by_column():
    image = _grid(6, 8)
    # strips: above 3 rows x 8 = 24 px, below 1 x 8, left 2 x 6 = 12, right 3 x 6 = 18 -> above
    out = tile_background(image, (3, 5, 2, 5))
    expected = image.clone()
    expected[0, 3, 2:5] = image[0, 0, 2:5]  # row 3 -> row 3 mod 3 = 0
    expected[0, 4, 2:5] = image[0, 1, 2:5]  # row 4 -> row 1
    assert torch.equal(out, expected)


def test_the_box_is_refilled_from_the_strip_right_of_it_row_by_row():
    image = _grid(6, 8)
    # strips: above 0, below 0, left 1 x 6, right 4 x 6 -> right (columns 4..7, period 4)
    out = tile_background(image, (0, 6, 1, 4))
    expected = image.clone()
    for x, source in ((1, 5), (2, 6), (3, 7)):  # 4 + (x - 4) mod 4
        expected[0, :, x] = image[0, :, source]
    assert torch.equal(out, expected)


def test_a_box_covering_the_image_leaves_no_background():
    assert tile_background(_grid(4, 4), (0, 4, 0, 4)) is None


def test_subject_box_grows_by_the_margin_and_stays_inside():
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[1:3, 6:9] = True
    assert subject_box(mask) == (1, 3, 6, 9)
    assert subject_box(mask, margin=2) == (0, 5, 4, 10)
    assert subject_box(torch.zeros(4, 4, dtype=torch.bool)) is None


@pytest.fixture
def scene():
    """A 3 x 12 x 12 image: background values 0..1 in stripes, a subject of value 5 (unique)."""
    y = torch.arange(12).float()
    image = ((y[:, None] % 3) / 3 + 0 * y[None, :]).expand(3, 12, 12).clone()
    mask = torch.zeros(12, 12, dtype=torch.bool)
    mask[4:8, 5:9] = True
    image[:, mask] = 5.0
    return image, mask


def test_each_variant_keeps_and_removes_what_it_should(scene):
    image, mask = scene
    fill = torch.full((3, 1, 1), -7.0)
    donor = torch.full((3, 12, 12), 0.25)
    out, reasons = variants(image, mask, Background(donor), Background(donor * 2), fill, margin=1)
    assert reasons == [""] * 5
    original, only_fg, no_fg, mixed_same, mixed_rand = out
    assert torch.equal(original, image)
    assert torch.equal(only_fg[:, mask], image[:, mask]) and (only_fg[:, ~mask] == -7.0).all()
    assert not (no_fg == 5.0).any(), "no pixel of the subject survives in no_fg"
    assert torch.equal(no_fg[:, :3], image[:, :3])  # outside the grown box: untouched
    for mixed, value in ((mixed_same, 0.25), (mixed_rand, 0.5)):
        assert torch.equal(mixed[:, mask], image[:, mask]) and (mixed[:, ~mask] == value).all()


def test_an_empty_mask_or_a_missing_donor_makes_variants_invalid_not_dropped(scene):
    image, mask = scene
    fill = torch.zeros(3, 1, 1)
    out, reasons = variants(image, torch.zeros_like(mask), Background(image), Background(image), fill, 1)
    assert reasons == ["", NO_SUBJECT, NO_SUBJECT, NO_SUBJECT, NO_SUBJECT] and out.shape == (5, 3, 12, 12)
    out, reasons = variants(image, mask, Background(None, "no donor"), Background(image), fill, 1)
    assert reasons == ["", "", "", "no donor", ""]


def test_fill_colours_are_the_mean_or_black_in_model_input():
    from auditcam.demo.models import PREPROCESSING

    assert torch.allclose(fill_colour(PREPROCESSING, "mean"), torch.zeros(3, 1, 1))
    assert torch.allclose(PREPROCESSING.denormalise(fill_colour(PREPROCESSING, "black")), torch.zeros(3, 1, 1))
    with pytest.raises(InputError, match="fill"):
        CounterfactualOptions(fill="grey")


# ---------------------------------------------------------------------------------------------
# donors


def test_donors_share_class_and_group_or_differ_in_class_never_the_sample_itself():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 200)
    groups = [(g,) for g in rng.choice(["A", "B", "C"], 200)]
    groups[0], labels[0] = ("lonely",), 1  # the only sample of its group: no donor of either kind
    same, rand = assign_donors(labels, groups, labels, groups, own=np.arange(200), seed=0)
    assert same[0] == rand[0] == -1
    for i in range(1, 200):
        assert same[i] != i and labels[same[i]] == labels[i] and groups[same[i]] == groups[i]
        assert labels[rand[i]] != labels[i] and groups[rand[i]] == groups[i]
    again = assign_donors(labels, groups, labels, groups, own=np.arange(200), seed=0)
    other = assign_donors(labels, groups, labels, groups, own=np.arange(200), seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((same, rand), again, strict=True))
    assert not np.array_equal(same, other[0])


def test_donors_from_another_dataset_may_be_any_of_its_samples():
    labels, donor_labels = np.array([0, 1]), np.array([0, 0, 1])
    same, rand = assign_donors(labels, [()] * 2, donor_labels, [()] * 3, own=None, seed=0)
    assert same[0] in (0, 1) and same[1] == 2 and rand[0] == 2 and rand[1] in (0, 1)


# ---------------------------------------------------------------------------------------------
# the estimates against a brute-force count


def _rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n)
    site = rng.choice(["A", "B"], n)
    records = []
    for i in range(n):
        for variant in VARIANTS:
            ok = variant == "original" or rng.random() > 0.1
            pred = int(rng.integers(0, 3)) if rng.random() < 0.5 else int(label[i])
            mixed = variant.startswith("mixed") and rng.random() > 0.05
            records.append(
                {
                    "id": f"s{i:03d}",
                    "variant": variant,
                    "label": int(label[i]),
                    "label_name": CLASSES[label[i]],
                    "pred": pred if ok else None,
                    "correct": (pred == label[i]) if ok else None,
                    "status": "ok" if ok else "invalid",
                    "donor_pred": int(rng.integers(0, 3)) if mixed else None,
                    "site": site[i],
                }
            )
    frame = pd.DataFrame.from_records(records)
    return frame.astype({"pred": "Int64", "correct": "boolean", "donor_pred": "Int64"})


def test_accuracy_bg_gap_and_flips_equal_a_brute_force_count():
    frame = _rows(300, seed=5)
    table = estimate(frame, ["site"], AnalysisOptions(bootstrap=200)).frame
    wide = frame.pivot(index="id", columns="variant", values=["pred", "correct", "status", "donor_pred"])
    info = frame[frame["variant"] == "original"].set_index("id")
    for (dimension, group), rows in table.groupby(["dimension", "group"]):
        member = {
            "overall": info.index,
            "class": info.index[info["label_name"] == group],
            "site": info.index[info["site"] == group],
        }[dimension]
        w = wide.loc[member]
        ok = {v: w["status"][v] == "ok" for v in VARIANTS}
        value = rows.set_index("statistic")["value"]
        n = rows.set_index("statistic")["n"]
        for v in VARIANTS:
            assert value[f"accuracy_{v}"] == pytest.approx(w["correct"][v][ok[v]].astype(float).mean())
            assert n[f"accuracy_{v}"] == ok[v].sum()
        both = ok["mixed_same"] & ok["mixed_rand"]
        gap = (w["correct"]["mixed_same"][both].astype(float) - w["correct"]["mixed_rand"][both].astype(float)).mean()
        assert value["bg_gap"] == pytest.approx(gap) and n["bg_gap"] == both.sum()
        counted = ok["mixed_rand"] & ok["original"]
        flips = (w["pred"]["mixed_rand"][counted] != w["pred"]["original"][counted]).mean()
        assert value["flip_rate_mixed_rand"] == pytest.approx(flips)
        moves = []  # brute force: swaps whose donor image is predicted apart from the original
        for sample in member:
            row = w.loc[sample]
            donor = row[("donor_pred", "mixed_rand")]
            if row[("status", "mixed_rand")] == "ok" and not pd.isna(donor) and donor != row[("pred", "original")]:
                moves.append(row[("pred", "mixed_rand")] == donor)
        assert n[FOLLOWING] == len(moves) and value[FOLLOWING] == pytest.approx(np.mean(moves))
    assert (table["ci_low"] <= table["value"] + 1e-12).all() and (table["value"] <= table["ci_high"] + 1e-12).all()


def test_a_swap_follows_when_its_prediction_moves_to_the_donor_images():
    original = np.array([0, 0, 1, 2, 2, 1])
    swapped = np.array([1, 0, 1, 0, 2, 2])
    donor = np.array([1, 1, 1, 0, 0, 2])
    valid = np.array([True, True, True, True, True, False])
    follows, counted = background_following(original, swapped, donor, valid)
    # sample 2: the donor image is predicted as the sample is, no move can show; sample 5: invalid
    assert counted.tolist() == [True, True, False, True, True, False]
    assert follows[counted].tolist() == [1.0, 0.0, 1.0, 0.0]


def test_chance_accuracy_is_the_expected_agreement_of_independent_predictions():
    labels, preds = np.array([0, 0, 0, 1]), np.array([0, 1, 1, 1])
    # P(label): 3/4, 1/4; P(pred): 1/4, 3/4 -> 3/16 + 3/16
    assert chance_accuracy(labels, preds) == pytest.approx(6 / 16)
    assert chance_accuracy(labels, np.zeros(4, dtype=int)) == pytest.approx(3 / 4)  # always class 0


def test_backgrounds_are_informative_only_above_chance():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 400)
    options = AnalysisOptions(bootstrap=200)
    blind = background_information(labels, rng.integers(0, 3, 400), options)
    assert not blind["informative"] and "--bg-donors" in blind["reason"]
    assert blind["chance"] == pytest.approx(chance_accuracy(labels, rng.integers(0, 3, 400)), abs=0.05)
    readable = np.where(rng.random(400) < 0.6, labels, rng.integers(0, 3, 400))
    seen = background_information(labels, readable, options)
    assert seen["informative"] and seen["reason"] == ""
    assert seen["accuracy"]["value"] == pytest.approx(np.mean(readable == labels))
    assert not background_information(np.zeros(0), np.zeros(0), options)["informative"]


# ---------------------------------------------------------------------------------------------
# runs


def test_the_run_records_every_variant_of_every_sample_and_leaves_the_model(small_dataset, demo_model, tmp_path):
    manifest, classes = small_dataset
    with manifest.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    (manifest.parent / rows[0]["image"]).unlink()  # one unreadable sample
    model, _info = demo_model
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dataset = LabelledDataset.from_manifest(manifest, classes=classes, allow_missing=True)
    options = CounterfactualOptions(match=("site",))
    result = run_counterfactual(model, dataset, options, analysis=AnalysisOptions(bootstrap=50), batch_size=5)
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks for m in model.modules())
    samples = result.samples
    assert len(samples) == 5 * len(rows) and set(samples["variant"]) == set(VARIANTS)
    broken = samples[samples["id"] == rows[0]["id"]]
    assert (broken["status"] == "error").all() and broken["reason"].str.contains("not found").all()
    # 12 samples over 3 classes and 2 sites: some have no other sample of their class at their site
    invalid = samples[(samples["variant"] == "mixed_same") & (samples["status"] == "invalid")]["reason"]
    assert invalid.str.startswith(NO_SAME_DONOR.split("{")[0]).sum() >= 1
    # a sample whose drawn donor is the unreadable one says so
    unreadable = samples[samples["reason"].str.startswith(f"background donor {rows[0]['id']} unreadable")]
    assert len(unreadable) and set(unreadable["variant"]) <= {"mixed_same", "mixed_rand"}
    assert (
        len(invalid)
        == invalid.str.startswith(NO_SAME_DONOR.split("{")[0]).sum() + (unreadable["variant"] == "mixed_same").sum()
    )
    mixed = samples[(samples["variant"] == "mixed_same") & (samples["status"] == "ok")]
    assert mixed["donor"].notna().all() and (mixed["donor"] != mixed["id"]).all()
    # a usable donor's image and background were predicted; the unreadable donor's were not
    assert mixed["donor_pred"].notna().all() and mixed["donor_bg_pred"].notna().all()
    assert unreadable["donor_pred"].isna().all()
    assert (unreadable["donor_label"] == classes.index(rows[0]["label"])).all()


def test_shortcut_model_has_a_large_bg_gap_and_the_clean_model_a_small_one(demo_run):
    """Backgrounds from the demo's in-distribution split, where textures follow the class."""
    shortcut, clean = (demo_run.results[name].counterfactual for name in ("shortcut", "clean"))
    gap = {name: demo_run.results[name].counterfactual.bg_gap for name in ("shortcut", "clean")}
    assert gap["shortcut"]["value"] > 0.4 and abs(gap["clean"]["value"]) < 0.1, gap
    assert gap["shortcut"]["value"] - gap["clean"]["value"] > 0.35
    assert gap["shortcut"]["ci"][0] > gap["clean"]["ci"][1], "the intervals do not overlap"
    # site A shows the texture in high contrast and agrees with the class 97% of the time (B: 50%)
    sites = gap["shortcut"]["by_group"]["site"]
    assert sites["A"]["value"] > sites["B"]["value"] + 0.2
    flips = {name: r.estimate("flip_rate_mixed_rand")["value"] for name, r in (("s", shortcut), ("c", clean))}
    assert flips["s"] > 0.4 > 0.1 > flips["c"], flips
    # the clean model still knows a subject without its background; with no subject, neither knows
    assert clean.estimate("accuracy_only_fg")["value"] > 0.9
    assert clean.estimate("accuracy_no_fg")["value"] < 0.5
    checks = {name: {c.name: c.outcome for c in demo_run.results[name].checks} for name in ("shortcut", "clean")}
    assert checks["shortcut"]["background_following"] == "fail" and checks["clean"]["background_following"] == "pass"
    # the clean model classifies even in-distribution backgrounds at chance: BG-gap cannot show anything
    assert shortcut.bg_gap_informative and not clean.bg_gap_informative
    assert checks["shortcut"]["bg_gap"] == "fail" and checks["clean"]["bg_gap"] == "not applicable"
    assert shortcut.matched == clean.matched == ("site",)


def test_on_the_balanced_split_bg_gap_is_near_zero_but_flips_still_show(demo_run):
    """Donors from the audited split, where backgrounds are independent of the class."""
    model, info = load_model_info(MODEL_SPEC, demo_run.weights["shortcut"])
    dataset = LabelledDataset.from_manifest(demo_run.manifest, classes=CLASSES, preprocessing=info.preprocessing)
    options = CounterfactualOptions(samples=90)
    result = run_counterfactual(model, dataset, options, analysis=AnalysisOptions(bootstrap=200))
    assert result.settings["samples"] == 90 and result.settings["donors"] == "the audited dataset"
    assert abs(result.bg_gap["value"]) < 0.2
    assert result.estimate("flip_rate_mixed_rand")["value"] > 0.4


def test_max_bg_gap_comes_from_flags_and_toml(tmp_path):
    assert Checks().max_bg_gap == Threshold(0.1)
    config = load_config({"max_bg_gap": 0.05}, use_pyproject=False)
    assert config.checks.max_bg_gap == Threshold(0.05)
    toml = tmp_path / "audit.toml"
    toml.write_text('max_bg_gap = {value = 0.2, decide_on = "upper"}\n', encoding="utf-8")
    assert load_config(config_file=toml, use_pyproject=False).checks.max_bg_gap == Threshold(0.2, "upper")
    assert load_config({"max_bg_gap": False}, use_pyproject=False).checks.max_bg_gap is None
    with pytest.raises(InputError, match="--max-bg-gap"):
        load_config({"max_bg_gap": 1.5}, use_pyproject=False)


def _small_manifest(demo_run, folder, n: int):
    folder.mkdir()
    lines = demo_run.manifest.read_text(encoding="utf-8").splitlines()
    (folder / "manifest.csv").write_text("\n".join(lines[: n + 1]) + "\n", encoding="utf-8")
    for name in ("images", "masks"):
        (folder / name).symlink_to(demo_run.manifest.parent / name)
    return folder / "manifest.csv"


def test_audit_cli_with_counterfactual_and_sanity(demo_run, tmp_path, capsys):
    from auditcam.report import summary_schema

    jsonschema = pytest.importorskip("jsonschema")
    manifest = _small_manifest(demo_run, tmp_path / "data", 45)
    out = tmp_path / "out"
    args = ["audit", "--model", MODEL_SPEC, "--weights", str(demo_run.weights["shortcut"]), "--data", str(manifest)]
    args += ["--out", str(out), "--no-progress", "--bootstrap", "200", "--min-group-size", "10", "--isolated"]
    args += ["--counterfactual", "--bg-donors", str(demo_run.donors), "--bg-match", "site"]
    assert cli.main([*args, "--sanity", "--sanity-samples", "12"]) == cli.EXIT_FAIL
    printed = capsys.readouterr().out
    assert "FAIL  background_following" in printed and "bg_gap" in printed and "sanity:model_randomisation" in printed
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(summary_schema()).validate(summary)
    assert summary["bg_gap"]["value"] > 0.3 and "site" in summary["bg_gap"]["by_group"]
    assert summary["counterfactual"]["settings"]["donors"] == str(demo_run.donors)
    assert (
        summary["counterfactual"]["matched"] == ["site"]
        and summary["counterfactual"]["bg_gap_informative"]["informative"]
    )
    assert summary["counterfactual"]["background_following"]["value"] > 0.5
    assert summary["sanity"]["settings"]["samples"] == 12 and summary["sanity"]["check"]["outcome"] == "pass"
    table = pd.read_parquet(out / "counterfactual.parquet")
    assert len(table) == 5 * 45 and table.loc[table["variant"] == "mixed_rand", "donor_pred"].notna().all()
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "donors matched on site (the sample's own value)" in html and "follow the background" in html
    tags = parse_page(html)
    for label in ("counterfactual backgrounds", "sanity check", "feature maps"):
        assert f'aria-label="{label}"' in html
    assert all(a["src"].startswith(IMAGE_URIS) for t, a in tags if t == "img")


def test_bg_donors_without_counterfactual_is_a_usage_error(demo_run, tmp_path, capsys):
    args = ["audit", "--model", MODEL_SPEC, "--data", str(demo_run.manifest), "--out", str(tmp_path)]
    assert cli.main([*args, "--bg-donors", str(demo_run.donors)]) == cli.EXIT_INPUT
    assert "--bg-donors needs --counterfactual" in capsys.readouterr().err
    assert cli.main([*args, "--bg-match", "site"]) == cli.EXIT_INPUT
    assert "--bg-match needs --counterfactual" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# a balanced audit set with a background-family column (the background independent of the class)


@pytest.fixture(scope="session")
def balanced(demo_run, tmp_path_factory):
    """240 demo images whose backgrounds are independent of the class, with a ``background``
    column naming the texture family, and the demo's shortcut and clean models."""
    from auditcam.demo import CLEAN_AGREEMENT, write_split
    from auditcam.demo.synthetic import make_split

    split = make_split(240, agreement=CLEAN_AGREEMENT, seed=77)
    manifest = write_split(split, tmp_path_factory.mktemp("balanced"), background=True)
    models = {name: load_model_info(MODEL_SPEC, demo_run.weights[name]) for name in ("shortcut", "clean")}
    info = models["clean"][1]
    dataset = LabelledDataset.from_manifest(manifest, classes=CLASSES, preprocessing=info.preprocessing)
    return dataset, {name: model for name, (model, _info) in models.items()}


@pytest.fixture(scope="session")
def balanced_runs(balanced):
    """The default counterfactual test (no attribute matched, donors from the audited set)."""
    dataset, models = balanced
    analysis = AnalysisOptions(bootstrap=200)
    return {name: run_counterfactual(model, dataset, analysis=analysis) for name, model in models.items()}


def _gate(result):
    options = AnalysisOptions(bootstrap=200)
    following = background_following_check(result.estimate(FOLLOWING), Checks(), options)
    reason = "" if result.bg_gap_informative else result.information["reason"]
    return following, bg_gap_check(result.estimate(BG_GAP), Checks(), options, not_informative=reason)


def test_the_default_gate_fails_a_background_driven_model_on_a_balanced_set(balanced_runs):
    following, gap = _gate(balanced_runs["shortcut"])
    assert following.outcome == FAIL and following.value > 0.6, following.message
    # the background family is a group attribute, reported per group
    families = balanced_runs["shortcut"].headline(FOLLOWING)["by_group"]["background"]
    assert set(families) == {"horizontal stripes", "vertical stripes", "checkerboard"}
    assert gap.outcome == NOT_APPLICABLE and "--bg-donors" in gap.detail and not gap.blocking


def test_the_default_gate_passes_a_model_trained_on_decorrelated_data(balanced_runs):
    following, gap = _gate(balanced_runs["clean"])
    assert following.outcome == PASS and following.value < 0.15, following.message
    assert gap.outcome == NOT_APPLICABLE
    shortcut = balanced_runs["shortcut"].estimate(FOLLOWING)
    assert shortcut["ci"][0] > following.ci[1], "the intervals do not overlap"


def test_the_following_rate_is_recomputable_from_the_probe_table(balanced_runs):
    samples = balanced_runs["shortcut"].samples
    wide = samples.pivot(index="id", columns="variant", values=["pred", "donor_pred", "status"])
    original, swapped, donor = wide["pred"]["original"], wide["pred"]["mixed_rand"], wide["donor_pred"]["mixed_rand"]
    usable = (wide["status"]["mixed_rand"] == "ok") & donor.notna() & (donor != original)
    assert balanced_runs["shortcut"].estimate(FOLLOWING)["value"] == pytest.approx((swapped == donor)[usable].mean())
    # with donors from the audited set, a donor's own prediction is its original variant's
    first = samples[samples["variant"] == "original"].set_index("id")["pred"]
    rand = samples[(samples["variant"] == "mixed_rand") & samples["donor_pred"].notna()]
    assert (rand["donor_pred"].to_numpy() == first.loc[rand["donor"]].to_numpy()).all()
    no_fg = samples[samples["variant"] == "no_fg"].set_index("id")["pred"]
    assert (rand["donor_bg_pred"].to_numpy() == no_fg.loc[rand["donor"]].to_numpy()).all()


def test_bg_match_keeps_the_named_attribute_equal_between_sample_and_donor(balanced):
    dataset, models = balanced
    family = {r.id: r.attributes["background"] for r in dataset.rows}
    options = CounterfactualOptions(match=("background",), samples=60)
    result = run_counterfactual(models["shortcut"], dataset, options, analysis=AnalysisOptions(bootstrap=50))
    assert result.matched == ("background",) and result.to_dict()["matched"] == ["background"]
    mixed = result.samples[
        result.samples["variant"].isin(["mixed_same", "mixed_rand"]) & result.samples["donor"].notna()
    ]
    assert len(mixed) > 60
    assert all(family[d] == family[i] for i, d in zip(mixed["id"], mixed["donor"], strict=True))
    unmatched = run_counterfactual(
        models["shortcut"], dataset, CounterfactualOptions(samples=60), analysis=AnalysisOptions(bootstrap=50)
    )
    rows = unmatched.samples[unmatched.samples["donor"].notna()]
    assert unmatched.matched == () and any(
        family[d] != family[i] for i, d in zip(rows["id"], rows["donor"], strict=True)
    )
    with pytest.raises(InputError, match="'scanner' is not a group attribute of the audited data"):
        run_counterfactual(models["shortcut"], dataset, CounterfactualOptions(match=("scanner",)))


def test_max_background_following_and_bg_match_come_from_flags_and_toml(tmp_path):
    assert Checks().max_background_following == Threshold(0.25)
    assert load_config(
        {"max_background_following": 0.3}, use_pyproject=False
    ).checks.max_background_following == Threshold(0.3)
    toml = tmp_path / "audit.toml"
    toml.write_text('bg_match = ["site", "scanner"]\nmax_background_following = false\n', encoding="utf-8")
    config = load_config(config_file=toml, use_pyproject=False)
    assert config.settings.bg_match == ("site", "scanner") and config.checks.max_background_following is None
    assert load_config({"bg_match": ["background"]}, config_file=toml, use_pyproject=False).settings.bg_match == (
        "background",
    )
    assert load_config(use_pyproject=False).settings.bg_match == ()
    with pytest.raises(InputError, match="--bg-match"):
        load_config({"bg_match": [""]}, use_pyproject=False)
    with pytest.raises(InputError, match="bg_match"):
        toml.write_text("bg_match = 3\n", encoding="utf-8")
        load_config(config_file=toml, use_pyproject=False)
