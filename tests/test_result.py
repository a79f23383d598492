"""The bundle is the result: what AuditResult.write puts on disk reads back as the same result
(summary, samples, gallery, each probe's result) and renders the same views."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from auditcam import AnalysisOptions, AuditResult, AuditSettings, Checks, InputError, LabelledDataset, audit, compare
from auditcam.demo import MODEL_SPEC, write_split
from auditcam.demo.synthetic import CLASSES, make_split
from auditcam.files import Parts, read_parts, write_parts
from auditcam.models import load_model_info
from auditcam.report import render_comparison, render_html, render_junit, render_trend
from auditcam.result import VIEWS, Checkpoint, Comparison, Trend, read_bundle
from tests.records import audit_result, gallery, samples


@pytest.fixture(scope="module")
def probed(tmp_path_factory) -> AuditResult:
    """A real audit of 24 synthetic images with the counterfactual test, the sanity check and
    feature maps."""
    folder = tmp_path_factory.mktemp("probed")
    manifest = write_split(make_split(24, agreement={"A": 0.0, "B": 0.0}, seed=5), folder / "data")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model, info = load_model_info(MODEL_SPEC)
    return audit(
        model,
        LabelledDataset.from_manifest(manifest, classes=CLASSES),
        AuditSettings(gallery_size=2, counterfactual=True, sanity=True, sanity_samples=6, featuremap_channels=4),
        model_info=info,
        progress=False,
        analysis=AnalysisOptions(bootstrap=50, min_group_size=5),
    )


@pytest.fixture(scope="module")
def written(probed, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    return probed.write(out), AuditResult.read(out)


@pytest.fixture
def synthetic() -> AuditResult:
    frame = samples({"light": 40, "dark": 40}, share={"dark": 0.25}, invalid_rate=0.05, seed=3)
    return audit_result(frame, Checks(), AnalysisOptions(bootstrap=50), exemplars=gallery(frame, size=3))


def _same_exemplars(a, b) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert pd.Series(x.record).equals(pd.Series(y.record))  # NaN equals NaN here
        for name in ("image", "heatmap", "mask"):
            got, want = getattr(y, name), getattr(x, name)
            assert got.dtype == want.dtype and np.array_equal(got, want)


@pytest.mark.slow
def test_write_then_read_gives_the_same_result(probed, written):
    paths, back = written
    assert back.summary() == probed.summary() == json.loads(paths["summary.json"].read_text(encoding="utf-8"))
    pd.testing.assert_frame_equal(back.samples, probed.samples)
    _same_exemplars(probed.gallery.background_reliant, back.gallery.background_reliant)
    _same_exemplars(probed.gallery.subject_focused, back.gallery.subject_focused)
    assert [c.to_dict() for c in back.checks] == [c.to_dict() for c in probed.checks]
    assert back.passed == probed.passed


@pytest.mark.slow
def test_each_probe_reads_back_as_it_was(probed, written):
    _, back = written
    cf, cf_back = probed.counterfactual, back.counterfactual
    pd.testing.assert_frame_equal(cf_back.samples, cf.samples)
    pd.testing.assert_frame_equal(cf_back.estimates.frame, cf.estimates.frame)
    assert cf_back.matched == cf.matched and cf_back.information == cf.information and cf.information
    assert cf_back.attributes == cf.attributes and len(cf_back.examples) == len(cf.examples) > 0
    for x, y in zip(cf.examples, cf_back.examples, strict=True):
        assert np.array_equal(x["images"], y["images"]) and y["images"].dtype == np.uint8
        assert {k: v for k, v in x.items() if k != "images"} == {k: v for k, v in y.items() if k != "images"}
    sanity, sanity_back = probed.sanity, back.sanity
    assert sanity_back.stages == sanity.stages and sanity_back.ids == sanity.ids
    np.testing.assert_array_equal(sanity_back.spearman, sanity.spearman)
    np.testing.assert_array_equal(sanity_back.ssim, sanity.ssim)
    pd.testing.assert_frame_equal(sanity_back.estimates.frame, sanity.estimates.frame)
    for x, y in zip(sanity.examples, sanity_back.examples, strict=True):
        assert x["id"] == y["id"] and len(x["maps"]) == len(y["maps"])
        assert all(np.array_equal(m, n) for m, n in zip(x["maps"], y["maps"], strict=True))
    assert len(back.featuremaps) == len(probed.featuremaps) > 0
    for x, y in zip(probed.featuremaps, back.featuremaps, strict=True):
        assert (x.layer, x.shape, x.channels) == (y.layer, y.shape, y.channels)
        assert np.array_equal(x.grid, y.grid) and np.array_equal(x.picture, y.picture)


@pytest.mark.slow
def test_the_views_render_from_disk_as_from_the_live_result(probed, written):
    paths, back = written
    html = render_html(probed)
    assert 'aria-label="counterfactual backgrounds"' in html and 'aria-label="sanity check"' in html
    assert render_html(back) == html == paths["report.html"].read_text(encoding="utf-8")
    assert render_junit(back.summary()) == render_junit(probed.summary()) == paths["junit.xml"].read_text("utf-8")


def test_a_synthetic_result_round_trips_and_renders_the_same(synthetic, tmp_path):
    paths = synthetic.write(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == set(paths)  # nothing left under a temporary name
    back = AuditResult.read(tmp_path)
    assert back.summary() == synthetic.summary()
    pd.testing.assert_frame_equal(back.samples, synthetic.samples, check_dtype=False)
    _same_exemplars(synthetic.gallery.background_reliant, back.gallery.background_reliant)
    assert render_html(back) == render_html(synthetic) == paths["report.html"].read_text(encoding="utf-8")
    # the analysis of a read result is estimated again, seeded: the written aggregates
    assert back.analyses["gradcam"].to_dict() == synthetic.summary()["aggregates"]["gradcam"]


def test_write_renders_only_the_formats_asked_for(synthetic, tmp_path):
    paths = synthetic.write(tmp_path, formats=["junit"])
    assert "junit.xml" in paths and not (tmp_path / "report.html").exists()
    with pytest.raises(InputError, match="--format 'pdf': choose from html, junit"):
        synthetic.write(tmp_path / "other", formats=["pdf"])
    assert not (tmp_path / "other").exists()  # refused before anything is written


def test_a_folder_that_is_not_a_bundle_is_named_with_its_missing_file(synthetic, tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        AuditResult.read(tmp_path / "nowhere")
    synthetic.write(tmp_path)
    (tmp_path / "gallery.json").unlink()
    with pytest.raises(InputError, match=r"not an audit bundle, gallery.json is missing"):
        AuditResult.read(tmp_path)


@pytest.mark.parametrize(("version", "hint"), [(2, "upgrade auditcam"), ("one", "it was not written by auditcam")])
def test_a_summary_of_another_schema_is_refused(synthetic, tmp_path, version, hint):
    synthetic.write(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    (tmp_path / "summary.json").write_text(json.dumps({**summary, "schema_version": version}), encoding="utf-8")
    with pytest.raises(InputError, match=f"schema_version {version!r}, .*; {hint}"):
        AuditResult.read(tmp_path)


def test_a_part_lists_its_files_and_a_missing_one_is_named(tmp_path):
    parts = Parts(
        {"k": [1, 2.5, None]}, {"0/x": np.arange(6, dtype=np.int16).reshape(2, 3)}, {"t": pd.DataFrame({"a": [1]})}
    )
    names = {p.name for p in write_parts(tmp_path, "probe", parts)}
    assert names == {"probe.json", "probe.npz", "probe-t.parquet"}
    back = read_parts(tmp_path, "probe")
    assert back.fields == parts.fields and back.arrays["0/x"].dtype == np.int16
    np.testing.assert_array_equal(back.arrays["0/x"], parts.arrays["0/x"])
    (tmp_path / "probe-t.parquet").unlink()
    with pytest.raises(InputError, match=r"probe-t\.parquet is missing"):
        read_parts(tmp_path, "probe")


def test_a_comparison_renders_from_its_bundle_as_from_the_live_one(tmp_path):
    frame = samples({"light": 40, "dark": 40}, share={"dark": 0.25}, seed=4)
    better = frame.assign(subject_share=(frame["subject_share"] + 0.3).clip(upper=1.0))
    options = AnalysisOptions(bootstrap=50)
    live = compare(audit_result(frame, Checks(), options, name="A"), audit_result(better, Checks(), options, name="B"))
    paths = live.write(tmp_path)
    back = Comparison.read(tmp_path)
    pd.testing.assert_frame_equal(back.deltas, live.deltas, check_dtype=False)
    assert back.to_dict() == json.loads(paths["comparison.json"].read_text(encoding="utf-8"))
    assert render_comparison(back) == render_comparison(live) == paths["comparison.html"].read_text("utf-8")
    assert set(VIEWS["comparison"]) == {"html", "junit"}


def _synthetic_trend(classes=("circle", "square", "cross"), name="trend", shares=(0.55, 0.3)):
    """A trend of synthetic audits (no model): the same samples at each checkpoint, the dark
    group looking less at the subject from one to the next."""
    options = AnalysisOptions(bootstrap=50, min_group_size=20)
    results = [
        audit_result(samples({"light": 60, "dark": 60}, share={"dark": s}, classes=classes), Checks(), options)
        for s in shares
    ]
    checkpoints = [Checkpoint(f"ck{i}", 10 * i, f"ckpts/ck{i}.pt", f"{i}" * 64, f"checkpoints/ck{i}") for i in range(2)]
    return Trend.of(checkpoints, results, name)


def test_a_trend_round_trips_through_its_bundle(tmp_path):
    live = _synthetic_trend()
    paths = live.write(tmp_path, formats=["junit"])
    assert {"summary.json", "estimates.parquet", "changes.parquet", "junit.xml"} <= set(paths)
    assert not (tmp_path / "trend.html").exists() and not (tmp_path / "checkpoints" / "ck0" / "report.html").exists()
    back = read_bundle(tmp_path)
    assert isinstance(back, Trend) and back.steps == (0, 10) and back.name == "trend"
    assert back.to_dict() == live.to_dict() == json.loads(paths["summary.json"].read_text(encoding="utf-8"))
    pd.testing.assert_frame_equal(back.estimates, live.estimates)
    pd.testing.assert_frame_equal(back.changes, live.changes)
    assert [r.summary() for r in back.results] == [r.summary() for r in live.results]
    assert render_trend(back) == render_trend(live)
    assert set(VIEWS["trend"]) == {"html", "junit"}


def test_a_folder_that_is_not_a_trend_is_refused(synthetic, tmp_path):
    synthetic.write(tmp_path / "audit", formats=["junit"])
    for name in ("estimates.parquet", "changes.parquet"):
        (tmp_path / "audit" / name).write_bytes(b"")
    with pytest.raises(InputError, match=r"audit/summary\.json: not a trend's summary\.json"):
        Trend.read(tmp_path / "audit")
    with pytest.raises(InputError, match=r"not a trend bundle, summary\.json is missing"):
        Trend.read(tmp_path)
