"""The HTML report: escaped data, no network, well-formed, all the sections."""

from __future__ import annotations

import csv

import pytest

from auditcam import LabelledDataset, audit
from auditcam.report import render_html, write_bundle
from tests.htmlcheck import external_references, parse_page

EVIL_CLASS = "<script>alert('class')</script>"
EVIL_SITE = '"onerror=alert(1) x="'
EVIL_ID = "<img src=x onerror=alert(2)>"


@pytest.fixture
def hostile_result(small_dataset, demo_model):
    """An audit whose class names, group values and ids are HTML/JS injection attempts."""
    manifest, _ = small_dataset
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
    model, info = demo_model
    classes = (EVIL_CLASS, "square", "cross")
    dataset = LabelledDataset.from_manifest(manifest, classes=classes)
    return audit(model, dataset, model_info=info, name="<b>model</b>", gallery_size=4, progress=False)


def test_data_is_escaped_everywhere(hostile_result):
    html = render_html(hostile_result)
    assert "<script" not in html.lower()
    assert EVIL_CLASS not in html and "&lt;script&gt;alert(&#39;class&#39;)&lt;/script&gt;" in html
    assert EVIL_SITE not in html and "&#34;onerror=alert(1) x=&#34;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "<b>model</b>" not in html
    tags = parse_page(html)
    assert not any(k.startswith("on") for _, attrs in tags for k in attrs)


def test_report_fetches_nothing(hostile_result):
    html = render_html(hostile_result)
    assert external_references(html) == []
    tags = parse_page(html)
    csp = [a["content"] for t, a in tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert len(csp) == 1
    assert "default-src 'none'" in csp[0] and "script-src 'none'" in csp[0]
    images = [a["src"] for t, a in tags if t == "img"]
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    assert all(a.get("alt") for t, a in tags if t == "img")


def test_report_has_its_sections(hostile_result):
    html = render_html(hostile_result)
    for label in ("verdict", "key numbers", "per class", "per group", "gallery", "invalid samples", "methodology"):
        assert f'aria-label="{label}"' in html
    assert "background_reliant_rate" in html


def test_bundle_files(hostile_result, tmp_path):
    import json

    import pandas as pd

    paths = write_bundle(hostile_result, tmp_path / "out")
    summary = json.loads(paths["summary.json"].read_text(encoding="utf-8"))
    assert summary["schema_version"] == 2
    assert summary["passed"] == hostile_result.passed
    assert summary["n_samples"] == 12
    assert summary["checks"][0]["name"] == "background_reliant_rate"
    samples = pd.read_parquet(paths["samples.parquet"])
    pd.testing.assert_frame_equal(samples, hostile_result.samples, check_dtype=False)
    assert not list((tmp_path / "out").glob(".*.tmp"))
