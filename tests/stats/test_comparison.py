"""Comparing two models on the same samples: paired deltas, focus transitions, the report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from auditcam.config import AnalysisOptions, Checks
from auditcam.result import compare
from auditcam.stats import comparison
from auditcam.stats.analysis import analyse
from auditcam.stats.comparison import focus_transitions, paired_deltas
from tests.htmlcheck import assert_self_contained, external_references, parse_page
from tests.records import audit_result, samples

OPTIONS = AnalysisOptions(bootstrap=400)


def _retrained(before: pd.DataFrame, lift_group: str, by: float, seed: int = 9) -> pd.DataFrame:
    """The same samples after 'retraining': subject_share up by ``by`` in one group, small noise elsewhere."""
    rng = np.random.default_rng(seed)
    after = before.copy()
    noise = rng.normal(0, 0.02, len(after))
    after["subject_share"] = after["subject_share"] + noise + np.where(after["skin_tone"] == lift_group, by, 0)
    after["focus_lift"] = after["subject_share"] / after["subject_area"]
    after["background_reliant"] = (after["focus_lift"] < 1).astype(float)
    return after


def test_paired_deltas_find_the_group_that_changed():
    before = samples({"light": 300, "dark": 300}, share={"dark": 0.3})
    after = _retrained(before, "dark", 0.1)
    deltas = paired_deltas(analyse(before, ["skin_tone"], OPTIONS), analyse(after, ["skin_tone"], OPTIONS))
    share = deltas[deltas["statistic"] == "subject_share_mean"].set_index(["dimension", "group"])
    dark, light = share.loc[("skin_tone", "dark")], share.loc[("skin_tone", "light")]
    assert dark["delta"] == pytest.approx(0.1, abs=0.01) and dark["change"] == "improved"
    assert dark["delta_ci_low"] > 0.09 and light["change"] == "no clear change"
    assert light["delta_ci_low"] < 0 < light["delta_ci_high"]
    reliant = deltas[deltas["statistic"] == "background_reliant_rate"].set_index(["dimension", "group"])
    assert reliant.loc[("overall", "all"), "change"] == "improved"  # fewer background-reliant samples is better
    assert "correctness" not in set(deltas["dimension"])  # not the same samples in A and B


def test_pairing_makes_the_interval_narrower_than_independent_resampling():
    before = samples({"light": 300, "dark": 300})
    after = _retrained(before, "dark", 0.05)
    a, b = analyse(before, ["skin_tone"], OPTIONS), analyse(after, ["skin_tone"], OPTIONS)
    paired = (
        paired_deltas(a, b).set_index(["dimension", "group", "statistic"]).loc[("overall", "all", "subject_share_mean")]
    )
    k = list(a.by_group("overall").columns).index("subject_share_mean")
    independent = analyse(after, ["skin_tone"], AnalysisOptions(bootstrap=400, seed=99))
    unpaired = independent.replicates("overall", "all")[:, k] - a.replicates("overall", "all")[:, k]
    unpaired_width = np.subtract(*np.quantile(unpaired, [0.975, 0.025]))
    assert paired["delta_ci_high"] - paired["delta_ci_low"] < unpaired_width / 5


def test_focus_transitions_per_sample():
    before = samples({"light": 4}, seed=2)
    after = before.copy()
    before["background_reliant"] = [0.0, 0.0, 1.0, 1.0]
    after["background_reliant"] = [0.0, 1.0, 0.0, 1.0]
    after.loc[3, "status"] = "invalid"
    moved = focus_transitions(before, after)
    assert list(moved["transition"][:3]) == ["subject_to_subject", "subject_to_background", "background_to_subject"]
    assert pd.isna(moved["transition"][3])  # B did not score it
    with pytest.raises(ValueError) as error:
        focus_transitions(before, after.iloc[::-1])
    assert str(error.value) == comparison.NOT_PAIRED


def test_analyses_of_other_samples_do_not_pair():
    a = analyse(samples({"light": 60}), ["skin_tone"], OPTIONS)
    other_seed = analyse(samples({"light": 60}), ["skin_tone"], AnalysisOptions(bootstrap=400, seed=1))
    fewer = analyse(samples({"light": 59}), ["skin_tone"], OPTIONS)
    for b in (other_seed, fewer):
        with pytest.raises(ValueError) as error:
            paired_deltas(a, b)
        assert str(error.value) == comparison.NOT_PAIRED


def test_retraining_removed_the_demo_shortcut(demo_run, tmp_path):
    result = compare(demo_run.results["shortcut"], demo_run.results["clean"])
    assert result.passed  # the clean model passes its checks
    overall = result.deltas[result.deltas["dimension"] == "overall"].set_index("statistic")
    assert overall.loc["background_reliant_rate", "change"] == "improved"
    assert overall.loc["background_reliant_rate", "delta_ci_high"] < -0.3
    focus = result.focus_counts
    assert focus["background_to_subject"] > 10 * max(focus["subject_to_background"], 1)
    assert sum(focus.values()) == 600
    paths = result.write(tmp_path / "cmp")
    data = json.loads(paths["comparison.json"].read_text(encoding="utf-8"))
    assert data["passed"] and data["focus"]["counts"] == focus
    assert len(data["focus"]["changed"]) == focus["background_to_subject"] + focus["subject_to_background"]
    html = paths["comparison.html"].read_text(encoding="utf-8")
    parse_page(html)
    assert external_references(html) == [] and "background → subject" in html
    assert pd.read_parquet(paths["samples_b.parquet"]).shape[0] == 600


def test_the_comparison_page_escapes_data(tmp_path):
    frame = samples({"<script>alert(1)</script>": 40, "light": 40})
    a = audit_result(frame, Checks(), OPTIONS, name="<b>old</b>")
    b = audit_result(_retrained(frame, "light", 0.2), Checks(), OPTIONS, name="<b>new</b>")
    html = compare(a, b).write(tmp_path)["comparison.html"].read_text(encoding="utf-8")
    parse_page(html)
    assert_self_contained(html)  # the one script is ours, allowed by its hash
    assert html.lower().count("<script") == 1 and "<b>" not in html and "&lt;b&gt;new&lt;/b&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
