"""The vectorised bootstrap against a brute-force loop over the same resamples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from auditcam.stats import bootstrap


def _table(rng: np.random.Generator, n: int) -> tuple[bootstrap.Table, pd.DataFrame]:
    """Rows with a value, a 0/1 flag, rows that count (valid) and two group codes."""
    frame = pd.DataFrame(
        {
            "value": rng.random(n),
            "flag": (rng.random(n) < 0.3).astype(float),
            "valid": rng.random(n) < 0.8,
            "small": rng.integers(0, 3, n),  # 3 groups: one dense product
            "many": rng.integers(0, 40, n),  # 40 groups: one product per group
        }
    )
    frame.loc[frame["small"] == 2, "valid"] = False  # a group with no counted row at all
    valid = frame["valid"].to_numpy()
    table = bootstrap.Table(
        numerators=np.stack([np.where(valid, frame["value"], 0), frame["flag"]], axis=1),
        denominators=np.stack([valid, np.ones(n, dtype=bool)], axis=1).astype(float),
        which=np.array([0, 1]),
        median_values=np.where(valid, frame["value"], np.inf),
        median_counted=valid,
    )
    return table, frame


def _partition(codes: np.ndarray, n_groups: int, sort_by: np.ndarray) -> bootstrap.Partition:
    rows = np.lexsort((sort_by, codes))
    return bootstrap.Partition(rows, np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=n_groups))]))


def _brute_force(frame: pd.DataFrame, column: str, n_groups: int, counts: np.ndarray) -> np.ndarray:
    """Per replicate and group: mean value over valid rows, flag rate, median value (pandas)."""
    out = np.full((counts.shape[1], n_groups, 3), np.nan)
    for r in range(counts.shape[1]):
        drawn = frame.iloc[np.repeat(np.arange(len(frame)), counts[:, r].astype(int))]
        valid = drawn[drawn["valid"]]
        out[r, :, 0] = valid.groupby(column)["value"].mean().reindex(range(n_groups))
        out[r, :, 1] = drawn.groupby(column)["flag"].mean().reindex(range(n_groups))
        out[r, :, 2] = valid.groupby(column)["value"].median().reindex(range(n_groups))
    return out


@pytest.mark.parametrize("block", [4, 64])
def test_replicates_equal_a_loop_over_the_same_resamples(monkeypatch, block):
    monkeypatch.setattr(bootstrap, "MEDIAN_BLOCK", block)
    monkeypatch.setattr(bootstrap, "CHUNK_ELEMENTS", 300 * 7)  # several chunks
    rng = np.random.default_rng(0)
    table, frame = _table(rng, 300)
    sort_by = table.median_values
    partitions = [_partition(frame[c].to_numpy(), k, sort_by) for c, k in (("small", 3), ("many", 40))]
    ratios, medians = bootstrap.replicate(table, partitions, n_boot=16, seed=7)
    counts = np.concatenate(list(bootstrap.resample_counts(300, 16, 7)), axis=1)
    expected = np.concatenate(
        [_brute_force(frame, "small", 3, counts), _brute_force(frame, "many", 40, counts)], axis=1
    )
    np.testing.assert_allclose(ratios[..., 0], expected[..., 0], rtol=1e-5)
    np.testing.assert_allclose(ratios[..., 1], expected[..., 1], rtol=1e-5)
    np.testing.assert_array_equal(medians, expected[..., 2])  # medians pick data values: exact
    assert np.isnan(medians[:, 2]).all()  # the group without counted rows


def test_point_estimates_equal_pandas():
    rng = np.random.default_rng(1)
    table, frame = _table(rng, 500)
    partition = _partition(frame["many"].to_numpy(), 40, table.median_values)
    ratios, medians = bootstrap.point(table, [partition])
    valid = frame[frame["valid"]]
    np.testing.assert_allclose(ratios[:, 0], valid.groupby("many")["value"].mean().reindex(range(40)))
    np.testing.assert_allclose(ratios[:, 1], frame.groupby("many")["flag"].mean().reindex(range(40)))
    np.testing.assert_array_equal(medians, valid.groupby("many")["value"].median().reindex(range(40)))


def test_resamples_are_seeded_multinomial_and_independent_of_chunking(monkeypatch):
    whole = np.concatenate(list(bootstrap.resample_counts(50, 40, seed=3)), axis=1)
    assert whole.shape == (50, 40) and (whole.sum(axis=0) == 50).all()
    monkeypatch.setattr(bootstrap, "CHUNK_ELEMENTS", 50 * 6)
    chunks = list(bootstrap.resample_counts(50, 40, seed=3))
    assert len(chunks) == 7
    np.testing.assert_array_equal(np.concatenate(chunks, axis=1), whole)
    other = np.concatenate(list(bootstrap.resample_counts(50, 40, seed=4)), axis=1)
    assert not np.array_equal(other, whole)


def test_percentile_interval_ignores_missing_replicates():
    rng = np.random.default_rng(2)
    replicates = rng.normal(size=(1000, 3))
    replicates[:100, 1] = np.nan
    replicates[:, 2] = np.nan
    low, high = bootstrap.percentile_interval(replicates, 0.9)
    assert (low[0], high[0]) == tuple(np.quantile(replicates[:, 0], [0.05, 0.95]))
    assert (low[1], high[1]) == tuple(np.quantile(replicates[100:, 1], [0.05, 0.95]))
    assert np.isnan(low[2]) and np.isnan(high[2])


def test_mean_intervals_gather_the_resamples_that_the_counts_hold():
    rng = np.random.default_rng(8)
    values = rng.random((70, 2))
    counts = np.concatenate(list(bootstrap.resample_counts(70, 50, seed=9)), axis=1)  # (rows, replicates)
    low, high = bootstrap.percentile_interval(counts.T @ values / 70, 0.9)
    got = bootstrap.mean_intervals(values, n_boot=50, confidence=0.9, seed=9)
    assert np.asarray(got) == pytest.approx(np.stack([low, high], axis=1))
    assert all(np.isnan(v) for v in bootstrap.mean_intervals(np.zeros((0, 1)), n_boot=5, confidence=0.9, seed=0)[0])
