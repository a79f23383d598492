"""The shared estimate type: Estimate and the Estimates container, against a brute-force bootstrap loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from auditcam.config import AnalysisOptions
from auditcam.stats import bootstrap
from auditcam.stats.estimates import ALL, OVERALL, Estimate, Estimates, ratio_estimates

OPTIONS = AnalysisOptions(bootstrap=200, confidence=0.9, seed=5, min_group_size=10)


@pytest.fixture
def data() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    rng = np.random.default_rng(2)
    n = 80
    values = {"hit": (rng.random(n) < 0.6).astype(float), "score": rng.random(n)}
    counted = {"hit": rng.random(n) < 0.9, "score": np.ones(n, dtype=bool)}
    codes = rng.integers(0, 2, n)
    groups = {OVERALL: ([ALL], np.zeros(n, dtype=np.int64)), "site": (["a", "b"], codes)}
    return values, counted, groups


def _brute_force_replicates(values, counted, members, statistic) -> np.ndarray:
    """Each replicate's mean by a plain loop over the same resampled draw counts."""
    n = len(values[statistic])
    counts = np.concatenate(list(bootstrap.resample_counts(n, OPTIONS.bootstrap, OPTIONS.seed)), axis=1)
    out = []
    for b in range(OPTIONS.bootstrap):
        total = weight = 0.0
        for i in range(n):
            if members[i] and counted[statistic][i]:
                total += counts[i, b] * values[statistic][i]
                weight += counts[i, b]
        out.append(total / weight if weight else math.nan)
    return np.array(out)


def _interval(replicates: np.ndarray) -> tuple[float, float]:
    kept = replicates[np.isfinite(replicates)]
    alpha = (1 - OPTIONS.confidence) / 2
    return float(np.quantile(kept, alpha)), float(np.quantile(kept, 1 - alpha))


def test_difference_and_ratio_cis_equal_a_brute_force_bootstrap(data):
    values, counted, groups = data
    estimates = ratio_estimates(values, counted, groups, OPTIONS)
    codes = groups["site"][1]
    ra = _brute_force_replicates(values, counted, codes == 0, "hit")
    rb = _brute_force_replicates(values, counted, codes == 1, "hit")
    a, b = ("site", "a", "hit"), ("site", "b", "hit")
    np.testing.assert_allclose(estimates.replicates(a), ra, rtol=1e-5)
    difference = estimates.difference(a, b)
    expected_value = estimates[a].value - estimates[b].value
    assert difference.value == pytest.approx(expected_value)
    assert difference.ci == pytest.approx(_interval(ra - rb), abs=1e-5)
    assert difference.n == min(estimates[a].n, estimates[b].n) and difference.confidence == 0.9
    ratio = estimates.ratio(a, b)
    assert ratio.value == pytest.approx(estimates[a].value / estimates[b].value)
    assert ratio.ci == pytest.approx(_interval(ra / rb), rel=1e-5)
    other = estimates.difference(("overall", "all", "score"), ("site", "a", "score"))
    assert other.statistic == "score"
    mixed = estimates.difference(a, ("site", "a", "score"))
    assert mixed.statistic == "hit - score"


def test_a_paired_difference_across_two_containers(data):
    values, counted, groups = data
    a = ratio_estimates(values, counted, groups, OPTIONS)
    shifted = {**values, "score": values["score"] + 0.25}
    b = ratio_estimates(shifted, counted, groups, OPTIONS)
    key = (OVERALL, ALL, "score")
    delta = b.difference(key, key, of=a)
    # the same resamples: every replicate moves by exactly 0.25, so the interval collapses to it
    assert delta.value == pytest.approx(0.25) and delta.ci == pytest.approx((0.25, 0.25), abs=1e-5)


def test_a_ratio_over_zero_is_not_measured():
    zero = {"x": np.zeros(40)}
    groups = {OVERALL: ([ALL], np.zeros(40, dtype=np.int64))}
    estimates = ratio_estimates(zero, {"x": np.ones(40, dtype=bool)}, groups, OPTIONS)
    key = (OVERALL, ALL, "x")
    ratio = estimates.ratio(key, key)
    assert ratio.value is None and ratio.ci is None


def test_estimates_round_trip_through_json(data):
    values, counted, groups = data
    estimates = ratio_estimates(values, counted, groups, OPTIONS)
    back = Estimates.from_dict(estimates.to_dict(), OPTIONS.confidence)
    assert list(back) == list(estimates) and len(back) == 6
    for key in estimates:
        assert back[key] == estimates[key]
    assert estimates.to_dict()["site"]["b"]["hit"] == estimates[("site", "b", "hit")].to_dict()
    with pytest.raises(ValueError, match="no bootstrap replicates"):
        back.difference(("site", "a", "hit"), ("site", "b", "hit"))
    with pytest.raises(KeyError, match="no estimate of 'nope' for site='a'"):
        estimates[("site", "a", "nope")]


def test_an_estimate_reads_its_summary_fields():
    e = Estimate("bg_gap", 0.1, (0.05, 0.2), 40, 0.95, True)
    assert e["value"] == 0.1 and e["ci"] == (0.05, 0.2) and e["n"] == 40 and e["sufficient"]
    assert e.to_dict() == {"value": 0.1, "ci": [0.05, 0.2], "n": 40, "sufficient": True}
    assert Estimate.from_dict("bg_gap", e.to_dict(), 0.95) == e
    with pytest.raises(KeyError):
        e["statistic_name"]
