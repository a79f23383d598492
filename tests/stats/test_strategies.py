"""Strategy discovery against hand-built heatmap grids and brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from auditcam.stats.bootstrap import mean_interval, mean_intervals
from auditcam.stats.strategies import (
    INSUFFICIENT,
    StrategyOptions,
    discover,
    hot_region,
    normalise_grids,
)


def _blob(row: int, col: int, rng: np.random.Generator, noise: float = 0.02) -> np.ndarray:
    grid = rng.random((8, 8)) * noise
    grid[row : row + 2, col : col + 2] += 1.0
    return grid.ravel()


def test_hot_region_is_the_smallest_box_holding_the_energy_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        grid = rng.random((8, 8)) ** 4
        r0, r1, c0, c1 = hot_region(grid, 0.5)
        best = None
        for a, b in itertools.combinations(range(9), 2):
            for c, d in itertools.combinations(range(9), 2):
                mass = grid[a:b, c:d].sum()
                if mass >= 0.5 * grid.sum() - 1e-12:
                    key = ((b - a) * (d - c), -mass)
                    best = key if best is None or key < best else best
        assert ((r1 - r0) * (c1 - c0), -grid[r0:r1, c0:c1].sum()) == pytest.approx(best)


def test_two_ways_of_looking_are_two_strategies_with_their_regions_and_numbers():
    rng = np.random.default_rng(1)
    n = 120
    corner = np.arange(n) < 40  # a third look at the top-left corner, the rest at the middle
    grids = np.stack([_blob(0, 0, rng) if c else _blob(3, 3, rng) for c in corner])
    correct = np.where(corner, rng.random(n) < 0.3, rng.random(n) < 0.9).astype(float)
    confidence = rng.random(n)
    site = np.where(corner, "A", np.where(np.arange(n) % 2 == 0, "A", "B")).astype(object)
    found = discover(
        grids, np.zeros(n, dtype=int), correct, confidence, class_names=["horse"], groups={"site": site}, n_boot=200
    )
    assert [c["status"] for c in found.classes] == ["ok"]
    by_size = sorted(found.strategies, key=lambda s: s.n)
    small, large = by_size
    assert small.n == 40 and large.n == 80 and small.share == pytest.approx(1 / 3)
    assert set(small.rows) == set(np.flatnonzero(corner))
    assert small.region == (0.0, 0.0, 0.25, 0.25) and large.region == (0.375, 0.375, 0.625, 0.625)
    assert small.candidate and large.candidate
    assert small.accuracy["value"] == pytest.approx(correct[corner].mean())
    assert small.accuracy["ci"] == pytest.approx(
        list(mean_interval(correct[corner], n_boot=200, confidence=0.95, seed=small.explained * 101 + 1))
    )
    composition = {g["group"]: g for g in small.groups["site"]}
    assert composition["A"]["share"] == 1.0 and composition["A"]["class_share"] == pytest.approx(80 / 120)
    assert (found.assignment[corner] == small.id).all() and (found.assignment[~corner] == large.id).all()


def test_exemplars_are_the_members_nearest_the_mean_map_brute_force():
    rng = np.random.default_rng(3)
    n = 90
    corner = np.arange(n) < 30
    grids = np.stack([_blob(0, 0, rng, noise=0.3) if c else _blob(4, 4, rng, noise=0.3) for c in corner])
    found = discover(grids, np.zeros(n, dtype=int), np.ones(n), np.ones(n), class_names=["a"], n_boot=20)
    maps = normalise_grids(grids.reshape(n, -1)).astype(np.float64)
    for strategy in found.strategies:
        distance = {int(r): float(((maps[r] - strategy.mean_map.reshape(-1)) ** 2).sum()) for r in strategy.rows}
        nearest = sorted(distance, key=lambda r: (distance[r], r))[:3]
        assert list(strategy.exemplars) == nearest


@pytest.mark.parametrize("kind", ["uniform", "random"])
def test_uniform_or_random_maps_give_no_spot_to_occlude(kind):
    rng = np.random.default_rng(2)
    grids = np.ones((200, 64)) if kind == "uniform" else rng.random((200, 64))
    found = discover(grids, np.zeros(200, dtype=int), np.ones(200), np.ones(200), class_names=["a"], n_boot=50)
    assert found.strategies and not any(s.candidate for s in found.strategies)


def test_a_class_with_too_few_maps_is_insufficient_data():
    rng = np.random.default_rng(3)
    grids = rng.random((30, 64))
    explained = np.array([0] * 25 + [1] * 5)
    found = discover(grids, explained, np.ones(30), np.ones(30), class_names=["a", "b"], n_boot=20)
    status = {c["class"]: c["status"] for c in found.classes}
    assert status == {"a": "ok", "b": INSUFFICIENT}
    assert all(s.class_name == "a" for s in found.strategies)
    assert (found.assignment[25:] == None).all()  # noqa: E711 (an object array compared elementwise)


def test_a_large_class_is_fit_on_a_subsample_and_every_row_assigned():
    rng = np.random.default_rng(4)
    n = 20000
    corner = rng.random(n) < 0.3
    grids = np.where(corner[:, None], _blob(0, 0, rng), _blob(5, 5, rng)) + rng.random((n, 64)) * 0.05
    found = discover(
        grids, np.zeros(n, dtype=int), np.ones(n), np.ones(n), class_names=["a"],
        options=StrategyOptions(fit_samples=500), n_boot=20,
    )  # fmt: skip
    assert len(found.strategies) == 2
    small = min(found.strategies, key=lambda s: s.n)
    assert set(small.rows) == set(np.flatnonzero(corner))


def test_normalised_grids_sum_to_one_and_an_empty_map_is_uniform():
    out = normalise_grids(np.array([[0.0, 2.0, -1.0, 2.0], [0.0, 0.0, 0.0, 0.0]]))
    assert out.tolist() == [[0.0, 0.5, 0.0, 0.5], [0.25, 0.25, 0.25, 0.25]]


def test_one_set_of_replicates_gives_each_column_its_own_interval():
    rng = np.random.default_rng(7)
    columns = np.stack([rng.random(90), (rng.random(90) < 0.4).astype(float)], axis=1)
    together = mean_intervals(columns, n_boot=300, confidence=0.9, seed=11)
    alone = [mean_interval(columns[:, k], n_boot=300, confidence=0.9, seed=11) for k in range(2)]
    assert np.asarray(together) == pytest.approx(np.asarray(alone))
