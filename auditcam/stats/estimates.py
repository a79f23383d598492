"""Ratio estimates with seeded bootstrap CIs over the breakdowns of a per-sample table.

The counterfactual and sanity results estimate their own statistics (accuracy per background
variant, BG-gap, rank correlation per randomised layer) the way :mod:`auditcam.stats.analysis` does
for the heatmap metrics: every statistic of every group from the same resamples of the
samples (:mod:`auditcam.stats.bootstrap`), percentile intervals, and ``sufficient`` when at least
``min_group_size`` samples count.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from auditcam.config import AnalysisOptions
from auditcam.stats import bootstrap

OVERALL, ALL = "overall", "all"
CLASS = "class"
MISSING_GROUP = "(missing)"


def json_number(value: Any) -> float | None:
    """JSON-ready number: NaN and None become None."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


# dimension -> (group names in report order, each row's group index; -1: in no group)
Breakdowns = dict[str, tuple[list[str], np.ndarray]]
ESTIMATE_COLUMNS = ("dimension", "group", "statistic", "value", "ci_low", "ci_high", "n", "sufficient")
Key = tuple[str, str, str]  # (dimension, group, statistic)
ESTIMATE_FIELDS = ("value", "ci", "n", "sufficient")


@dataclass(frozen=True)
class Estimate:
    """One statistic of one slice: its ``value`` (None: not measured), percentile-bootstrap
    ``ci`` at ``confidence`` (None without an interval), the ``n`` samples it counts, and
    ``sufficient`` (n reaches min_group_size). ``estimate["value"]`` reads a field by its
    summary.json name."""

    statistic: str
    value: float | None
    ci: tuple[float, float] | None
    n: int
    confidence: float
    sufficient: bool = True

    def __getitem__(self, field: str) -> Any:
        if field not in ESTIMATE_FIELDS:
            raise KeyError(field)
        return getattr(self, field)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{value, ci, n, sufficient}``, the shape summary.json has always had."""
        ci = None if self.ci is None else [self.ci[0], self.ci[1]]
        return {"value": self.value, "ci": ci, "n": self.n, "sufficient": self.sufficient}

    @classmethod
    def from_dict(cls, statistic: str, data: Mapping[str, Any], confidence: float) -> Estimate:
        """The inverse of :meth:`to_dict`."""
        ci = data.get("ci")
        return cls(
            statistic,
            json_number(data.get("value")),
            None if ci is None else (float(ci[0]), float(ci[1])),
            int(data["n"]),
            confidence,
            bool(data.get("sufficient", True)),
        )


def _estimate(statistic: str, value: float, low: float, high: float, n: int, confidence: float, sufficient: bool):
    ci = None if math.isnan(low) else (float(low), float(high))
    return Estimate(statistic, json_number(value), ci, int(n), confidence, bool(sufficient))


class Estimates:
    """Estimates keyed by ``(dimension, group, statistic)`` — overall is ``("overall", "all", s)``
    — with, when built from a bootstrap, every estimate's replicates, so any two give a
    :meth:`difference` or :meth:`ratio` with its own percentile CI (paired: both come from the
    same resamples, also across two containers bootstrapped on the same samples)."""

    def __init__(self, frame: pd.DataFrame, confidence: float, replicates: np.ndarray | None = None) -> None:
        frame = frame[list(ESTIMATE_COLUMNS)].reset_index(drop=True)
        if replicates is not None and replicates.shape[1] != len(frame):
            raise ValueError(f"{replicates.shape[1]} replicate columns for {len(frame)} estimates")
        self._frame = frame
        self._confidence = confidence
        self._replicates = replicates
        keys = zip(frame["dimension"], frame["group"], frame["statistic"], strict=True)
        self._index = {key: i for i, key in enumerate(keys)}

    @property
    def frame(self) -> pd.DataFrame:
        """Tidy: one row per key with value, ci_low, ci_high, n, sufficient (columns :data:`ESTIMATE_COLUMNS`)."""
        return self._frame.copy()

    @property
    def confidence(self) -> float:
        """The level of every interval."""
        return self._confidence

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[Key]:
        return iter(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def _row(self, key: Key) -> int:
        if key not in self._index:
            dimension, group, statistic = key
            raise KeyError(f"no estimate of {statistic!r} for {dimension}={group!r}")
        return self._index[key]

    def __getitem__(self, key: Key) -> Estimate:
        row = self._frame.iloc[self._row(key)]
        return _estimate(
            key[2], row["value"], row["ci_low"], row["ci_high"], row["n"], self._confidence, row["sufficient"]
        )

    def replicates(self, key: Key) -> np.ndarray:
        """The bootstrap replicates (bootstrap,) of one estimate (an error without a bootstrap)."""
        if self._replicates is None:
            raise ValueError("these estimates carry no bootstrap replicates (read back from JSON?)")
        return self._replicates[:, self._row(key)]

    def _combined(self, a: Key, b: Key, of: Estimates | None, name: str, op: Callable) -> Estimate:
        other = self if of is None else of
        ea, eb = self[a], other[b]
        with np.errstate(divide="ignore", invalid="ignore"):
            value = op(np.float64(math.nan if ea.value is None else ea.value), np.float64(eb.value or 0.0))
            replicates = op(self.replicates(a).astype(np.float64), other.replicates(b).astype(np.float64))
        value = float(value) if np.isfinite(value) and eb.value is not None else math.nan
        replicates = np.where(np.isfinite(replicates), replicates, np.nan)
        low, high = bootstrap.percentile_interval(replicates[:, None], self._confidence)
        statistic = ea.statistic if ea.statistic == eb.statistic else f"{ea.statistic} {name} {eb.statistic}"
        n = min(ea.n, eb.n)
        return _estimate(statistic, value, low[0], high[0], n, self._confidence, ea.sufficient and eb.sufficient)

    def difference(self, a: Key, b: Key, *, of: Estimates | None = None) -> Estimate:
        """``self[a] - of[b]`` (``of``: this container by default) with the percentile CI of the
        replicate differences; n is the smaller n, sufficient when both are."""
        return self._combined(a, b, of, "-", operator.sub)

    def ratio(self, a: Key, b: Key, *, of: Estimates | None = None) -> Estimate:
        """``self[a] / of[b]`` with the percentile CI of the replicate ratios (replicates with a
        zero denominator left out); the value is NaN (not measured) when ``of[b]`` is 0."""
        return self._combined(a, b, of, "/", operator.truediv)

    def to_dict(self) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
        """dimension -> group -> statistic -> ``{value, ci, n, sufficient}``, in table order."""
        out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        for dimension, group, statistic in self._index:
            estimate = self[(dimension, group, statistic)]
            out.setdefault(dimension, {}).setdefault(group, {})[statistic] = estimate.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], confidence: float, min_group_size: int | None = None) -> Estimates:
        """The inverse of :meth:`to_dict` (without replicates)."""
        rows = []
        for dimension, groups in data.items():
            for group, statistics in groups.items():
                for statistic, d in statistics.items():
                    e = Estimate.from_dict(statistic, d, confidence)
                    low, high = (math.nan, math.nan) if e.ci is None else e.ci
                    value = math.nan if e.value is None else e.value
                    rows.append((dimension, group, statistic, value, low, high, e.n, e.sufficient))
        return cls(pd.DataFrame(rows, columns=list(ESTIMATE_COLUMNS)), confidence)


def breakdowns(samples: pd.DataFrame, attributes: Sequence[str] = ()) -> Breakdowns:
    """Overall, per true class (in label order) and per value of each group attribute, for a
    table with one row per sample and columns ``label``, ``label_name`` and the attributes."""
    out: Breakdowns = {OVERALL: ([ALL], np.zeros(len(samples), dtype=np.int64))}
    classes = samples[["label", "label_name"]].drop_duplicates().sort_values(["label", "label_name"])
    order = [str(c) for c in dict.fromkeys(classes["label_name"])]
    out[CLASS] = (order, pd.Categorical(samples["label_name"].astype(str), categories=order).codes.astype(np.int64))
    for attribute in attributes:
        labels = samples[attribute].astype("string").fillna(MISSING_GROUP).astype(str)
        groups = sorted(labels.unique())
        out[attribute] = (groups, pd.Categorical(labels, categories=groups).codes.astype(np.int64))
    return out


def ratio_estimates(
    values: Mapping[str, np.ndarray],
    counted: Mapping[str, np.ndarray],
    groups: Breakdowns,
    options: AnalysisOptions,
) -> Estimates:
    """Per (dimension, group, statistic): the mean of ``values[statistic]`` over the rows where
    ``counted[statistic]``, its percentile-bootstrap CI and how many rows count (``n``)."""
    names = list(values)
    mask = np.stack([np.asarray(counted[s], dtype=bool) for s in names], axis=1)
    numerators = np.where(mask, np.stack([np.nan_to_num(np.asarray(values[s], float)) for s in names], axis=1), 0.0)
    table = bootstrap.Table(numerators=numerators, denominators=mask.astype(np.float64), which=np.arange(len(names)))
    partitions, keys, sizes = [], [], []
    for dimension, (group_names, codes) in groups.items():
        member = np.flatnonzero(codes >= 0)
        ordered = member[np.argsort(codes[member], kind="stable")]
        per_group = np.bincount(codes[member], minlength=len(group_names))
        partitions.append(bootstrap.Partition(ordered, np.concatenate([[0], np.cumsum(per_group)])))
        keys += [(dimension, g) for g in group_names]
        weights = (mask[member, j] for j in range(len(names)))
        per_statistic = [np.bincount(codes[member], weights=w, minlength=len(group_names)) for w in weights]
        sizes.append(np.stack(per_statistic, axis=1).round())
    point, _ = bootstrap.point(table, partitions)
    replicates, _ = bootstrap.replicate(table, partitions, n_boot=options.bootstrap, seed=options.seed)
    low, high = bootstrap.percentile_interval(replicates.reshape(options.bootstrap, -1), options.confidence)
    counts = np.concatenate(sizes).astype(np.int64).ravel() if keys else np.zeros(0, dtype=np.int64)
    frame = pd.DataFrame(
        {
            "dimension": np.repeat([d for d, _ in keys], len(names)),
            "group": np.repeat([g for _, g in keys], len(names)),
            "statistic": np.tile(names, len(keys)),
            "value": point.ravel(),
            "ci_low": low,
            "ci_high": high,
            "n": counts,
            "sufficient": counts >= options.min_group_size,
        },
        columns=list(ESTIMATE_COLUMNS),
    )
    return Estimates(frame, options.confidence, replicates.reshape(options.bootstrap, -1))
