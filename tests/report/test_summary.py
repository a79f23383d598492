"""summary.json against its shipped JSON Schema, and the report showing the numbers."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from auditcam.config import AnalysisOptions, Checks, GroupGap
from auditcam.report import render_html, summary_schema
from tests.htmlcheck import parse_page
from tests.records import audit_result, samples


@pytest.fixture(scope="module")
def rich_result():
    """Groups with enough data, one tiny group, one group whose samples are all invalid, an
    intersection, and checks that pass, fail and lack data."""
    frame = samples({"light": 150, "dark": 150, "tiny": 8, "void": 40}, share={"dark": 0.25}, seed=4)
    frame.loc[frame["skin_tone"] == "void", ["status"]] = "invalid"
    frame.loc[frame["skin_tone"] == "void", ["subject_share", "focus_lift", "pointing_hit", "background_reliant"]] = (
        None
    )
    checks = Checks(
        min_subject_share=0.3,
        min_worst_group_accuracy=0.5,
        max_group_gap=(
            GroupGap("skin_tone", "subject_share_mean", 0.1),
            GroupGap("skin_tone,site", "accuracy", 0.3),
        ),
    )
    return audit_result(frame, checks, AnalysisOptions(bootstrap=200, intersections=(("skin_tone", "site"),)))


def _validator():
    schema = summary_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_summaries_validate_against_the_shipped_schema(rich_result, demo_run):
    validator = _validator()
    summary = json.loads(json.dumps(rich_result.summary(), allow_nan=False))
    validator.validate(summary)
    groups = summary["aggregates"]["gradcam"]["by_group"]["skin_tone"]
    assert groups["void"]["subject_share_mean"] is None and groups["void"]["ci"]["subject_share_mean"] is None
    assert "skin_tone & site" in summary["aggregates"]["gradcam"]["by_intersection"]
    assert sum(summary["outcomes"].values()) == len(summary["checks"]) == 6
    for result in demo_run.results.values():
        validator.validate(json.loads(json.dumps(result.summary(), allow_nan=False, default=str)))


@pytest.mark.parametrize(
    "spoil",
    [
        lambda s: s.pop("outcomes"),
        lambda s: s["checks"][0].update(outcome="maybe"),
        lambda s: s["checks"][0].update(ci=[0.1]),
        lambda s: s["aggregates"]["gradcam"]["overall"].pop("ci"),
        lambda s: s["aggregates"]["gradcam"]["disparities"][0].update(statistic="speed"),
        lambda s: s.update(schema_version=99),
    ],
)
def test_the_schema_rejects_a_spoilt_summary(rich_result, spoil):
    summary = copy.deepcopy(json.loads(json.dumps(rich_result.summary())))
    spoil(summary)
    with pytest.raises(jsonschema.ValidationError):
        _validator().validate(summary)


def test_the_report_shows_intervals_outcomes_disparities_and_insufficient_groups(rich_result):
    html = render_html(rich_result)
    parse_page(html)
    overall = rich_result.aggregates["gradcam"]["overall"]
    low, high = overall["ci"]["subject_share_mean"]
    assert f"{low:.3f}–{high:.3f}" in html
    gap = next(c for c in rich_result.checks if c.name == "group_gap:skin_tone:subject_share_mean")
    assert gap.outcome == "fail" and f"{gap.ci[0]:.3f}–{gap.ci[1]:.3f}" in html
    assert "✘ fail" in html and "✔ pass" in html and "95% CI" in html
    assert 'aria-label="disparities"' in html and '<td class="worst"><strong>dark</strong></td>' in html
    # tiny (8 samples) and void (none valid)
    assert '<span class="tag tag-insufficient">insufficient data</span>' in html
    assert '<td class="insufficient">tiny, void</td>' in html  # left out of the subject_share disparity
    assert '<td class="insufficient">tiny</td>' in html  # void's 40 samples all have predictions
    assert "skin_tone &amp; site" in html  # the intersection, escaped
