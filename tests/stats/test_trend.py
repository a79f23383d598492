"""A model's checkpoints on the same samples: estimates per checkpoint, paired changes between them."""

from __future__ import annotations

import pytest

from auditcam.config import AnalysisOptions
from auditcam.stats.analysis import analyse
from auditcam.stats.comparison import paired_deltas
from auditcam.stats.trend import checkpoint_estimates, checkpoint_pairs, trend_changes
from tests.records import samples

OPTIONS = AnalysisOptions(bootstrap=300, min_group_size=20)


def checkpoint_frames(shares=(0.55, 0.4, 0.25)):
    """The same 400 samples at three checkpoints (one seed: the same ids, labels and noise) whose
    dark group looks less and less at the subject; the light group stays as it was."""
    return [samples({"light": 200, "dark": 200}, share={"dark": share}) for share in shares]


def test_the_pairs_are_consecutive_then_first_to_last():
    assert checkpoint_pairs(2) == [(0, 1)]
    assert checkpoint_pairs(4) == [(0, 1), (1, 2), (2, 3), (0, 3)]
    with pytest.raises(ValueError, match="at least two checkpoints, got 1"):
        checkpoint_pairs(1)


def test_every_estimate_of_every_checkpoint_in_one_table():
    analyses = [analyse(frame, ["skin_tone"], OPTIONS) for frame in checkpoint_frames()]
    table = checkpoint_estimates(analyses)
    assert list(table.columns[:4]) == ["checkpoint", "dimension", "group", "statistic"]
    for i, analysis in enumerate(analyses):
        rows = table[table["checkpoint"] == i].drop(columns="checkpoint").reset_index(drop=True)
        assert rows.equals(analysis.estimates.reset_index(drop=True))


def test_reliance_rises_where_the_subject_share_fell_and_nowhere_else():
    analyses = [analyse(frame, ["skin_tone"], OPTIONS) for frame in checkpoint_frames()]
    changes = trend_changes(analyses).set_index(["from", "to", "dimension", "group", "statistic"]).sort_index()
    dark = changes.loc[(0, 2, "skin_tone", "dark")]
    assert dark.loc["subject_share_mean", "direction"] == "fell"
    assert dark.loc["subject_share_mean", "change"] == "worsened"
    assert dark.loc["subject_share_mean", "delta"] == pytest.approx(-0.3, abs=0.01)
    assert dark.loc["background_reliant_rate", "direction"] == "rose"
    assert dark.loc["background_reliant_rate", "delta_ci_low"] > 0
    light = changes.loc[(0, 2, "skin_tone", "light")]
    assert light.loc["subject_share_mean", "direction"] == "no clear change"
    assert light.loc["subject_share_mean", "delta_ci_low"] <= 0 <= light.loc["subject_share_mean", "delta_ci_high"]
    # each pair is exactly the paired comparison of its two checkpoints
    step = paired_deltas(analyses[1], analyses[2]).set_index(["dimension", "group", "statistic"]).sort_index()
    ours = changes.loc[(1, 2)]
    assert ours["delta"].equals(step["delta"]) and ours["delta_ci_low"].equals(step["delta_ci_low"])
    assert set(changes.index.droplevel([2, 3, 4])) == {(0, 1), (1, 2), (0, 2)}


def test_a_slice_below_the_minimum_size_is_insufficient_data_not_a_change():
    frames = [samples({"light": 200, "dark": 10}, share={"dark": s}) for s in (0.6, 0.1)]
    changes = trend_changes([analyse(frame, ["skin_tone"], OPTIONS) for frame in frames])
    dark = changes[(changes["group"] == "dark") & (changes["statistic"] == "subject_share_mean")]
    assert dark["direction"].tolist() == ["insufficient data"]
