"""Seeded, vectorised bootstrap of group statistics (pure numpy).

One replicate draws the n rows of the whole table with replacement; it is stored as a column
of *counts* (how often each row was drawn). Group sums of all replicates are then matrix
products of count blocks with value blocks, and every statistic of every group comes from the
same replicates. Two tables with the same number of rows, bootstrapped with the same seed, get
the same replicates: that is what makes a comparison of two models on the same samples *paired*.

Groups come in *partitions* (the groups of one breakdown, e.g. the classes, are disjoint), so
the work is proportional to the rows, not to rows x groups. Counts are laid out rows x
replicates, so gathering a partition's rows and running sums down them are contiguous,
vectorised passes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

# rows x replicates held at once: bounds memory (~16 MB of float32 counts) for any table size
CHUNK_ELEMENTS = 1 << 22
# ... and for the means of a few columns (mean_intervals): ~8 MB of draws, ~8 MB gathered
MEAN_CHUNK_ELEMENTS = 1 << 20
# a partition with at most this many groups sums through one dense (rows x groups*columns)
# product; with more, one product per group (a dense product would multiply mostly zeros)
DENSE_GROUPS = 32
# ... unless the one-hot expansion would hold more elements than this: then one product per
# group too, so memory stays proportional to rows x columns however many rows there are
DENSE_ELEMENTS = 1 << 21


@dataclass(frozen=True)
class Partition:
    """Disjoint groups of rows: group g is ``rows[bounds[g]:bounds[g + 1]]``. Within a group the
    rows are in ascending order of the median's values (only the counted ones matter)."""

    rows: np.ndarray
    bounds: np.ndarray

    @property
    def n_groups(self) -> int:
        return len(self.bounds) - 1


@dataclass(frozen=True)
class Table:
    """What to estimate per group: ratio statistics ``sum(w * numerators[:, k]) /
    sum(w * denominators[:, which[k]])`` and, optionally, the median of ``median_values`` over
    the rows where ``median_counted``."""

    numerators: np.ndarray  # (n, k)
    denominators: np.ndarray  # (n, j)
    which: np.ndarray  # (k,) column of denominators for each numerator
    median_values: np.ndarray | None = None  # (n,)
    median_counted: np.ndarray | None = None  # (n,) bool


def resample_indices(n: int, n_boot: int, seed: int, *, elements: int | None = None) -> Iterator[np.ndarray]:
    """Yield ``(chunk, n)`` arrays of drawn row numbers, ``n_boot`` rows in all, about
    ``elements`` (None: :data:`CHUNK_ELEMENTS`) a chunk: each row is one resample of the ``n``
    rows with replacement. The stream depends only on ``(n, n_boot, seed)``, not on how it is
    chunked."""
    rng = np.random.default_rng(seed)
    elements = CHUNK_ELEMENTS if elements is None else elements
    chunk = max(1, min(n_boot, elements // max(n, 1)))
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        yield rng.integers(0, n, size=(size, n)) if n else np.zeros((size, 0), dtype=np.int64)


def resample_counts(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Yield ``(n, chunk)`` arrays of draw counts, ``n_boot`` columns in all: column r counts how
    often each row was drawn in resample r of :func:`resample_indices` (a multinomial resample)."""
    for cells in resample_indices(n, n_boot, seed):
        size = len(cells)
        if n == 0:
            yield np.zeros((0, size), dtype=np.float32)
            continue
        cells *= size  # in place: (row, replicate) -> row * size + replicate, one array alive, not two
        cells += np.arange(size, dtype=np.int64)[:, None]
        counts = np.bincount(cells.ravel(), minlength=n * size).reshape(n, size)
        del cells  # freed before the consumer runs, not held by this paused generator
        # float32 holds every count and running sum of counts (at most n) exactly below 2**24
        block = counts.astype(np.float32 if n < 1 << 24 else np.float64)
        del counts
        yield block


# rows per block of running draw counts in :func:`group_medians`
MEDIAN_BLOCK = 64


def group_medians(values: np.ndarray, weights: np.ndarray, bounds: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Median of each group in each weighted resample, all groups at once.

    ``values`` (m,) are ascending within each group ``[bounds[g], bounds[g + 1])``; ``weights``
    (m, b) are integer draw counts (0 for rows that do not count); ``totals`` (b, groups) their
    sums per group. The median of T drawn items is the mean of the items at sorted positions
    floor((T-1)/2) and floor(T/2); the item at a position is the first row whose running draw
    count exceeds it, necessarily a drawn row. Running counts are kept per block of
    :data:`MEDIAN_BLOCK` rows and resolved inside the one block that holds each position, so
    no running sum over every row is needed. NaN where a resample drew no counted row of a
    group. Returns (b, groups).
    """
    m, b = weights.shape
    if m == 0:
        return np.full(totals.shape, np.nan)
    n_blocks = -(-m // MEDIAN_BLOCK)
    padded = np.zeros((n_blocks * MEDIAN_BLOCK, b), dtype=weights.dtype)
    padded[:m] = weights
    block_ends = np.cumsum(padded.reshape(n_blocks, MEDIAN_BLOCK, b).sum(axis=1), axis=0).T.astype(np.float64)
    replicate = np.arange(b)[:, None]
    offsets = replicate * (block_ends[:, -1].max() + 1)  # one flat, sorted array for every replicate
    flat = (block_ends + offsets).ravel()
    before = np.cumsum(totals, axis=1) - totals  # draws in the groups before each group

    def item(position: np.ndarray) -> np.ndarray:
        target = before + position  # (b, groups): running count to exceed
        block = np.searchsorted(flat, (target + offsets).ravel(), side="right").reshape(target.shape)
        block = np.minimum(block - replicate * n_blocks, n_blocks - 1)
        prior = np.where(block > 0, block_ends[replicate, np.maximum(block - 1, 0)], 0)
        rows = block[..., None] * MEDIAN_BLOCK + np.arange(MEDIAN_BLOCK)
        running = prior[..., None] + np.cumsum(padded[rows, replicate[..., None]], axis=2)
        index = block * MEDIAN_BLOCK + np.count_nonzero(running <= target[..., None], axis=2)
        return values[np.minimum(index, m - 1)]

    median = (item(np.maximum(totals - 1, 0) // 2) + item(totals // 2)) / 2
    return np.where(totals > 0, median, np.nan)


@dataclass(frozen=True)
class _Prepared:
    """One partition's share of the table, laid out for :func:`_estimate` (built once)."""

    partition: Partition
    values: np.ndarray  # (m, columns), or (m, groups * columns) one-hot expanded when dense
    dense: bool
    median_values: np.ndarray | None
    median_counted: np.ndarray | None


def _prepare(table: Table, partitions: Sequence[Partition], dtype: type) -> list[_Prepared]:
    """Per partition: its rows' columns [numerators | denominators | median counted], one-hot
    expanded by group when dense, and the median's values."""
    has_median = table.median_values is not None
    parts = [table.numerators, table.denominators]
    if has_median:
        parts.append(table.median_counted[:, None])
    columns = np.concatenate(parts, axis=1).astype(dtype)
    prepared = []
    for partition in partitions:
        values = columns[partition.rows]
        m, width = values.shape
        dense = partition.n_groups <= DENSE_GROUPS and m * partition.n_groups * width <= DENSE_ELEMENTS
        if dense:
            expanded = np.zeros((m, partition.n_groups, width), dtype=dtype)
            expanded[np.arange(m), np.repeat(np.arange(partition.n_groups), np.diff(partition.bounds))] = values
            values = expanded.reshape(m, -1)
        prepared.append(
            _Prepared(
                partition,
                values,
                dense,
                table.median_values[partition.rows] if has_median else None,
                table.median_counted[partition.rows].astype(dtype)[:, None] if has_median else None,
            )
        )
    return prepared


def _estimate(table: Table, prepared: Sequence[_Prepared], counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ratios (b, groups, k) and medians (b, groups) of every group for draw counts (n, b)."""
    b, k, j = counts.shape[1], table.numerators.shape[1], table.denominators.shape[1]
    sums, medians = [], []
    for part in prepared:
        bounds = part.partition.bounds
        block = counts[part.partition.rows]  # (m, b): whole rows, contiguous
        if part.dense:
            part_sums = (block.T @ part.values).reshape(b, part.partition.n_groups, -1)
        else:
            part_sums = np.stack([block[a:z].T @ part.values[a:z] for a, z in itertools.pairwise(bounds)], axis=1)
        sums.append(part_sums)
        if part.median_values is not None:
            block *= part.median_counted
            medians.append(group_medians(part.median_values, block, bounds, part_sums[:, :, k + j]))
    total = np.concatenate(sums, axis=1).astype(np.float64)
    top, bottom = total[:, :, :k], total[:, :, k : k + j][:, :, table.which]
    ratios = np.full(top.shape, np.nan)
    np.divide(top, bottom, out=ratios, where=bottom > 0)
    if not medians:
        return ratios, np.full(ratios.shape[:2], np.nan)
    return ratios, np.concatenate(medians, axis=1)


def point(table: Table, partitions: Sequence[Partition]) -> tuple[np.ndarray, np.ndarray]:
    """The estimates on the data itself (every row once): ratios (groups, k), medians (groups,).
    One partition is laid out at a time, so only one float64 copy of the rows exists at once."""
    ones = np.ones((table.numerators.shape[0], 1))
    parts = [_estimate(table, _prepare(table, [partition], np.float64), ones) for partition in partitions]
    return np.concatenate([r for r, _ in parts], axis=1)[0], np.concatenate([m for _, m in parts], axis=1)[0]


def replicate(
    table: Table,
    partitions: Sequence[Partition],
    *,
    n_boot: int,
    seed: int,
    clusters: np.ndarray | None = None,
    n_clusters: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap replicates: ratios (n_boot, groups, k) and medians (n_boot, groups), all from
    the same resamples of the rows. With ``clusters`` (each row's cluster, 0..n_clusters-1: a
    multi-label sample's rows) the clusters are resampled and a row counts as often as its
    cluster is drawn; the resamples are then those of any table of ``n_clusters`` rows."""
    prepared = _prepare(table, partitions, np.float32)
    n = len(table.numerators) if clusters is None else n_clusters
    parts = [
        _estimate(table, prepared, counts if clusters is None else counts[clusters])
        for counts in resample_counts(n, n_boot, seed)
    ]
    return np.concatenate([r for r, _ in parts]), np.concatenate([m for _, m in parts])


def percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CI per column of ``replicates`` (b, k), ignoring NaN replicates; NaN where a
    column has no finite replicate."""
    alpha = (1 - confidence) / 2
    finite = np.isfinite(replicates)
    low = np.full(replicates.shape[1], np.nan)
    high = np.full(replicates.shape[1], np.nan)
    complete = finite.all(axis=0)
    if complete.any():
        low[complete], high[complete] = np.quantile(replicates[:, complete], [alpha, 1 - alpha], axis=0)
    for column in np.flatnonzero(~complete & finite.any(axis=0)):
        kept = replicates[finite[:, column], column]
        low[column], high[column] = np.quantile(kept, [alpha, 1 - alpha])
    return low, high


def mean_intervals(columns: np.ndarray, *, n_boot: int, confidence: float, seed: int) -> list[tuple[float, float]]:
    """Percentile CI of the mean of each column of ``columns`` (n, k), all from one set of
    resamples (:func:`resample_indices`, the draws behind :func:`resample_counts`): each is the
    CI :func:`mean_interval` gives that column alone, at the cost of one. A resample's mean is
    the sum of the drawn values (a gather per column, ~4x faster than counts times values), in
    chunks of :data:`MEAN_CHUNK_ELEMENTS` draws."""
    by_column = np.ascontiguousarray(np.asarray(columns, dtype=np.float64).T)
    n = by_column.shape[1]
    chunks = resample_indices(n, n_boot, seed, elements=MEAN_CHUNK_ELEMENTS)
    with np.errstate(invalid="ignore"):  # no rows: every mean is NaN, and so the interval
        replicates = np.concatenate(
            [np.stack([np.take(c, cells).sum(axis=1) for c in by_column], 1) / n for cells in chunks]
        )
    low, high = percentile_interval(replicates, confidence)
    return [(float(a), float(b)) for a, b in zip(low, high, strict=True)]


def mean_interval(values: np.ndarray, *, n_boot: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile CI of the mean of ``values`` from the :func:`resample_counts` replicates: two
    arrays of the same length with the same seed get the same resamples (a paired bootstrap of
    per-sample differences is the CI of their mean)."""
    column = np.asarray(values, dtype=np.float64)[:, None]
    return mean_intervals(column, n_boot=n_boot, confidence=confidence, seed=seed)[0]
