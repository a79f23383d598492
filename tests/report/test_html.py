"""The HTML report: escaped data, no network, one script allowed by its hash, well-formed, all the sections."""

from __future__ import annotations

import base64
import csv
import re

import cv2
import numpy as np
import pytest

from auditcam import LabelledDataset, audit
from auditcam.config import AnalysisOptions, AuditSettings, Checks, GroupGap
from auditcam.report import html as report_html
from auditcam.report import render_html
from auditcam.report.figures import THUMBNAIL
from tests.htmlcheck import assert_self_contained, external_references, parse_page
from tests.records import audit_result, gallery, samples

EVIL_CLASS = "<script>alert('class')</script>"
EVIL_SITE = '"onerror=alert(1) x="'
EVIL_ID = "<img src=x onerror=alert(2)>"
EVIL_PATH = 'images/"><svg onload=alert(3)>.png'
EVIL_ATTRIBUTE = "<i>tone</i>"
DATA_URI = re.compile(r"data:image/(?:png|webp|svg\+xml);base64,[A-Za-z0-9+/=]+")


@pytest.fixture(scope="module")
def hostile_result(tmp_path_factory):
    """An audit whose class names, group values and ids are HTML/JS injection attempts."""
    import torch

    from auditcam.demo import MODEL_SPEC, write_split
    from auditcam.demo.synthetic import make_split
    from auditcam.models import load_model_info

    manifest = write_split(make_split(12, agreement={"A": 0.0, "B": 0.0}, seed=5), tmp_path_factory.mktemp("data"))
    with manifest.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for i, row in enumerate(rows):
        row["site"] = EVIL_SITE if i % 2 else "A"
        row["id"] = f"{EVIL_ID}{i}"
        row["label"] = {"circle": EVIL_CLASS}.get(row["label"], row["label"])
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model, info = load_model_info(MODEL_SPEC)
    classes = (EVIL_CLASS, "square", "cross")
    dataset = LabelledDataset.from_manifest(manifest, classes=classes)
    return audit(model, dataset, AuditSettings(gallery_size=4), model_info=info, name="<b>model</b>", progress=False)


@pytest.fixture(scope="module")
def hostile_records():
    """A synthetic audit (no model) with injection attempts everywhere data reaches the page: class
    names, group values, an attribute's name, ids, image paths, reasons, paths in the metadata and
    the command line, and gallery exemplars carrying all of them."""
    frame = samples({"light": 60, EVIL_SITE: 60}, classes=(EVIL_CLASS, "$x^2$", "ok"), invalid_rate=0.1, seed=3)
    frame = frame.rename(columns={"skin_tone": EVIL_ATTRIBUTE})
    frame["id"] = [f"{EVIL_ID}{i}" for i in range(len(frame))]
    frame["image"] = EVIL_PATH
    frame.loc[frame["status"] != "ok", "reason"] = "<script>alert(4)</script>"
    checks = Checks(max_group_gap=(GroupGap(EVIL_ATTRIBUTE, "subject_share_mean", 0.1),))
    result = audit_result(
        frame,
        checks,
        AnalysisOptions(bootstrap=100),
        attributes=(EVIL_ATTRIBUTE, "site"),
        name="<b>model</b>",
        exemplars=gallery(frame, size=3),
    )
    result.meta["model"]["weights"] = EVIL_PATH
    result.meta["dataset"]["source"] = EVIL_PATH
    result.meta["command"] = f"auditcam audit --data '{EVIL_PATH}' </pre><script>alert(5)</script>"
    result.meta["dataset"]["sha256"] = "ab" * 32
    return result


@pytest.fixture(scope="module")
def hostile_html(hostile_result):
    return render_html(hostile_result)


@pytest.fixture(scope="module")
def records_html(hostile_records):
    return render_html(hostile_records)


def test_data_is_escaped_everywhere(hostile_html):
    html = hostile_html
    assert_self_contained(html)
    assert html.lower().count("<script") == 1
    assert EVIL_CLASS not in html and "&lt;script&gt;alert(&#39;class&#39;)&lt;/script&gt;" in html
    assert EVIL_SITE not in html and "&#34;onerror=alert(1) x=&#34;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "<b>model</b>" not in html


def test_hostile_names_paths_and_attributes_are_escaped(records_html):
    html = records_html
    assert_self_contained(html)
    assert html.lower().count("<script") == 1
    text = DATA_URI.sub("", html)  # base64 image payloads cannot carry markup
    for evil in (EVIL_CLASS, EVIL_SITE, EVIL_ID, EVIL_PATH, EVIL_ATTRIBUTE, "<b>model</b>", "</pre><script>"):
        assert evil not in text, evil
    assert "&lt;i&gt;tone&lt;/i&gt;" in text  # the attribute's name, as a heading
    assert "images/&#34;&gt;&lt;svg onload=alert(3)&gt;.png" in text
    assert "&lt;script&gt;alert(4)&lt;/script&gt;" in text  # an invalid sample's reason
    assert "$x^2$" in text  # a class name with mathtext markup: drawn as text, not parsed
    tags = parse_page(html)
    # group values reach attributes only as escaped values of data-g*/value attributes
    filters = [a for t, a in tags if t == "option" and a.get("value") == EVIL_SITE]
    assert filters, "the gallery filter offers the hostile group value, escaped"
    cards = [a for t, a in tags if t == "article"]
    assert cards and all(set(a) <= {"class", "data-cls", "data-ok", "data-g0", "data-g1"} for a in cards)


def test_report_fetches_nothing(hostile_html):
    html = hostile_html
    assert external_references(html) == []
    tags = parse_page(html)
    images = [a["src"] for t, a in tags if t == "img"]
    assert images and all(DATA_URI.fullmatch(src) for src in images)
    assert all(a.get("alt") for t, a in tags if t == "img")
    hrefs = [a["href"] for t, a in tags if t == "a"]
    assert hrefs and all(h.startswith("#") for h in hrefs)  # in-page navigation only


def test_report_has_its_sections(hostile_html):
    html = hostile_html
    labels = re.findall(r'<section id="[^"]+"[^>]* aria-label="([^"]+)"', html)
    assert labels == [
        "verdict",
        "key numbers",
        "audit details",
        "per class",
        "per group",
        "disparities",
        "figures",
        "gallery",
        "invalid samples",
        "methodology",
    ]
    ids = re.findall(r'<section id="([^"]+)"', html)
    assert re.findall(r'<nav class="toc".*?</nav>', html, re.S) and all(f'href="#{i}"' in html for i in ids)
    assert html.index('aria-label="verdict"') < html.index('aria-label="key numbers"')
    assert "background_reliant_rate" in html


def test_header_names_everything_needed_to_reproduce(hostile_records, records_html):
    meta, html = hostile_records.meta, records_html
    for needed in (
        meta["model"]["spec"],
        meta["model"]["weights_sha256"],
        "ab" * 32,
        meta["created"],
        "min_group_size = 30",
    ):
        assert needed in html
    assert f"{len(hostile_records.samples)} (" in html  # sample count with its breakdown
    assert "bootstrap = 100" in html and "auditcam audit --data" in html
    for name, version in meta["versions"].items():
        assert f"{name} {version}" in html


def test_numbers_sort_by_their_raw_value(hostile_records, records_html):
    """Every sortable value cell carries the number it shows, unrounded, for the table script."""
    html = records_html
    by_class = hostile_records.aggregates["gradcam"]["by_class"]
    for name, s in by_class.items():
        share = s["subject_share_mean"]
        assert f'data-sort="{share!r}">{share:.3f}' in html, name


NO_CHARTS = {"distribution": None, "bars": [], "scatter": None, "accuracy": None, "omitted": ""}


def test_gallery_is_bounded_in_count_and_thumbnail_size(monkeypatch):
    monkeypatch.setattr(report_html, "_charts", lambda *args: NO_CHARTS)  # not what this test is about
    frame = samples({"light": 120}, seed=1)
    result = audit_result(frame, Checks(), AnalysisOptions(bootstrap=50), exemplars=gallery(frame, size=40, pixels=200))
    html = render_html(result)
    tags = parse_page(html)
    cards = [a for t, a in tags if t == "article"]
    assert len(cards) == 2 * report_html.MAX_GALLERY_CARDS
    assert f"The audit kept 40 samples at each end; the first {report_html.MAX_GALLERY_CARDS} are shown." in html
    thumbnails = [a["src"] for t, a in tags if t == "img" and a["src"].startswith("data:image/webp")]
    assert len(thumbnails) == 3 * len(cards)
    for uri in thumbnails[:6]:
        picture = cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
        assert max(picture.shape[:2]) == THUMBNAIL
    assert len(html) < 2_000_000


def test_optional_sections_are_included_only_when_present(hostile_records, records_html, monkeypatch):
    assert 'href="#sanity"' not in records_html and 'aria-label="sanity check"' not in records_html
    monkeypatch.setattr(report_html, "_charts", lambda *args: NO_CHARTS)  # not what this test is about
    monkeypatch.setattr(report_html, "extra_sections", lambda result, summary: {"sanity": {}})
    assert 'href="#sanity"' not in render_html(hostile_records)  # an empty value is not a section


def test_bundle_files(hostile_result, tmp_path):
    import json

    import pandas as pd

    paths = hostile_result.write(tmp_path / "out")
    summary = json.loads(paths["summary.json"].read_text(encoding="utf-8"))
    assert summary["schema_version"] == 1
    assert summary["passed"] == hostile_result.passed
    assert summary["n_samples"] == 12
    assert summary["checks"][0]["name"] == "background_reliant_rate"
    samples_table = pd.read_parquet(paths["samples.parquet"])
    pd.testing.assert_frame_equal(samples_table, hostile_result.samples, check_dtype=False)
    assert not list((tmp_path / "out").glob(".*.tmp"))
    assert len(summary["meta"]["dataset"]["sha256"]) == 64  # the manifest's hash, for the header


def test_the_trend_page_escapes_data_and_fetches_nothing():
    from auditcam.report import render_trend
    from auditcam.result import Checkpoint, Trend

    options = AnalysisOptions(bootstrap=50, min_group_size=20)
    classes = (EVIL_CLASS, "square", "cross")
    results = [
        audit_result(samples({"light": 60, "dark": 60}, share={"dark": s}, classes=classes), Checks(), options)
        for s in (0.55, 0.3)
    ]
    checkpoints = [Checkpoint(f"{EVIL_ID}{i}", i, f"{EVIL_PATH}{i}", "0" * 64, f"checkpoints/c{i}") for i in range(2)]
    html = render_trend(Trend.of(checkpoints, results, "<b>model</b>"))
    assert_self_contained(html)
    assert external_references(html) == []
    assert html.lower().count("<script") == 1
    for evil in (EVIL_CLASS, EVIL_ID, EVIL_PATH, "<b>model</b>"):
        assert evil not in html
    assert "&lt;script&gt;alert(&#39;class&#39;)&lt;/script&gt;" in html and "&lt;b&gt;model&lt;/b&gt;" in html
    hrefs = [attrs["href"] for tag, attrs in parse_page(html) if tag == "a" and not attrs["href"].startswith("#")]
    assert hrefs == ["checkpoints/c0/report.html", "checkpoints/c1/report.html"]  # each checkpoint's own report
    assert 'id="chart-trend-lines"' in html
