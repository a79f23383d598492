"""Ratio estimates with seeded bootstrap CIs over the breakdowns of a per-sample table.

The counterfactual and sanity results estimate their own statistics (accuracy per background
variant, BG-gap, rank correlation per randomised layer) the way :mod:`auditcam.stats.analysis` does
for the heatmap metrics: every statistic of every group from the same resamples of the
samples (:mod:`auditcam.stats.bootstrap`), percentile intervals, and ``sufficient`` when at least
``min_group_size`` samples count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from auditcam.config import AnalysisOptions
from auditcam.stats import bootstrap
from auditcam.stats.analysis import ALL, CLASS, MISSING_GROUP, OVERALL, json_number

# dimension -> (group names in report order, each row's group index; -1: in no group)
Breakdowns = dict[str, tuple[list[str], np.ndarray]]
ESTIMATE_COLUMNS = ("dimension", "group", "statistic", "value", "ci_low", "ci_high", "n", "sufficient")


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
) -> pd.DataFrame:
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
    return pd.DataFrame(
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


def estimate_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """One estimate row as JSON-ready ``{value, ci, n, sufficient}``."""
    low = row["ci_low"]
    return {
        "value": json_number(row["value"]),
        "ci": None if low != low else [float(low), float(row["ci_high"])],
        "n": int(row["n"]),
        "sufficient": bool(row["sufficient"]),
    }


def slices(estimates: pd.DataFrame) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """dimension -> group -> statistic -> ``{value, ci, n, sufficient}``, in table order."""
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for row in estimates.to_dict("records"):
        out.setdefault(row["dimension"], {}).setdefault(row["group"], {})[row["statistic"]] = estimate_dict(row)
    return out
