"""The report's optional sections (counterfactual, sanity, feature maps): escaped, self-contained,
present only when run, and their summary.json parts checked by the schema."""

from __future__ import annotations

import copy
import csv
import json

import jsonschema
import pytest
import torch

from auditcam import AnalysisOptions, LabelledDataset, audit
from auditcam.config import AuditSettings
from auditcam.demo import MODEL_SPEC, write_split
from auditcam.demo.synthetic import CLASSES, make_split
from auditcam.models import load_model_info
from auditcam.report import render_html, summary_schema
from auditcam.report.html import extra_sections
from tests.htmlcheck import external_references, parse_page

IMAGE_URIS = ("data:image/png;base64,", "data:image/webp;base64,", "data:image/svg+xml;base64,")

EVIL_CLASS = "<script>alert('class')</script>"
EVIL_SITE = '"onerror=alert(1) x="'
EVIL_ID = "<img src=x onerror=alert(2)>"
SECTIONS = ("counterfactual backgrounds", "sanity check", "feature maps")


@pytest.fixture(scope="module")
def hostile_result(tmp_path_factory):
    """An audit with every optional section, whose class names, groups and ids are injection attempts."""

    folder = tmp_path_factory.mktemp("hostile")
    manifest = write_split(make_split(24, agreement={"A": 0.0, "B": 0.0}, seed=5), folder / "data")
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
    dataset = LabelledDataset.from_manifest(manifest, classes=(EVIL_CLASS, *CLASSES[1:]))
    return audit(
        model,
        dataset,
        AuditSettings(gallery_size=2, counterfactual=True, sanity=True, sanity_samples=6, featuremap_channels=4),
        model_info=info,
        name="<b>model</b>",
        progress=False,
        analysis=AnalysisOptions(bootstrap=50, min_group_size=5),
    )


def test_the_sections_are_escaped_and_self_contained(hostile_result):
    html = render_html(hostile_result)
    for label in SECTIONS:
        assert f'aria-label="{label}"' in html
    assert html.lower().count("<script") == 1  # the report's own, allowed by its hash in the CSP
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>model</b>" not in html
    assert "&lt;script&gt;alert(&#39;class&#39;)&lt;/script&gt;" in html and "&#34;onerror=alert(1) x=&#34;" in html
    tags = parse_page(html)
    assert not any(k.startswith("on") or k == "style" for _, attrs in tags for k in attrs)
    assert external_references(html) == []
    images = [a["src"] for t, a in tags if t == "img"]
    assert images and all(src.startswith(IMAGE_URIS) for src in images)
    assert all(a.get("alt") for t, a in tags if t == "img")


def test_sections_are_left_out_when_not_run(small_dataset, demo_model):
    manifest, classes = small_dataset
    model, info = demo_model
    plain = audit(
        model,
        LabelledDataset.from_manifest(manifest, classes=classes),
        AuditSettings(featuremap_channels=0),
        model_info=info,
        progress=False,
    )
    sections = extra_sections(plain, plain.summary())
    assert {k: v for k, v in sections.items() if k != "strategies"} == {
        "counterfactual": None,
        "sanity": None,
        "featuremaps": None,
    }
    assert sections["strategies"]["cards"] == []  # 12 samples: no class clustered, and the page says why
    assert sections["strategies"]["not_measured"]
    html = render_html(plain)
    assert not any(f'aria-label="{label}"' in html for label in SECTIONS)
    assert not {"bg_gap", "counterfactual", "sanity"} & set(plain.summary())
    assert not [c for c in plain.checks if c.name in ("bg_gap", "sanity:model_randomisation")]


def test_the_featuremaps_section_shows_each_exemplar_once(hostile_result):
    grids = hostile_result.featuremaps
    ids = [g.record["id"] for g in grids]
    shown = {
        e.record["id"] for e in [*hostile_result.gallery.background_reliant, *hostile_result.gallery.subject_focused]
    }
    assert len(ids) == len(set(ids)) and set(ids) == shown
    assert all(g.layer == hostile_result.meta["layer"] and len(g.channels) == 4 for g in grids)
    context = extra_sections(hostile_result, hostile_result.summary())["featuremaps"]
    assert context["shape"] == "64 × 16 × 16" and len(context["cards"]) == len(grids)


def test_the_summary_parts_follow_the_schema(hostile_result):
    validator = jsonschema.Draft202012Validator(summary_schema())
    summary = json.loads(json.dumps(hostile_result.summary(), allow_nan=False, default=str))
    validator.validate(summary)
    assert set(summary["bg_gap"]["by_group"]) == {"site"}
    assert len(summary["sanity"]["stages"]) == 5 and summary["sanity"]["check"]["name"] == "sanity:model_randomisation"
    for spoil in (
        lambda s: s["bg_gap"].pop("n"),
        lambda s: s["counterfactual"]["overall"].update(accuracy_sideways={}),
        lambda s: s["sanity"]["stages"][0].update(stage=0),
        lambda s: s["checks"][-1].update(metric="vibes"),
    ):
        spoiled = copy.deepcopy(summary)
        spoil(spoiled)
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(spoiled)
