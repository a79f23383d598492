"""The demo's tag model, audited without masks, is flagged by the location test; the clean model is not."""

from __future__ import annotations

from auditcam.demo.synthetic import tag_region


def _location(result):
    return next(c for c in result.checks if c.name == "location_shortcut")


def test_the_tag_model_is_flagged_without_masks_and_the_clean_model_is_not(demo_run):
    tag = demo_run.results["tag"]
    flagged = [s for s in tag.strategies.discovery.strategies if s.flagged]
    assert flagged and _location(tag).outcome == "fail"
    x0, y0, x1, y1 = flagged[0].region
    tx0, ty0, tx1, ty1 = tag_region()
    assert x0 <= tx0 and y0 <= ty0 and x1 >= tx1 and y1 >= ty1
    assert flagged[0].occlusion["evidence"]["decided_by"].startswith("no subjects")
    clean = demo_run.results["clean"]
    assert not any(s.flagged for s in clean.strategies.discovery.strategies)
    assert _location(clean).outcome != "fail"
