"""Aggregates of the per-sample records with bootstrap confidence intervals, and group disparities.

Everything here is a function of the tidy ``samples`` frame (one row per sample for one
method); nothing touches the model or the files. :class:`Analysis` follows fairlearn's
``MetricFrame``: one immutable object with ``overall``, ``by_group``, ``group_min``,
``group_max``, ``difference`` and ``ratio``, plus a seeded percentile-bootstrap CI on every
estimate and on every disparity.

A multi-label audit's frame has one row per (sample, explained label): a label is a "class", the
bootstrap resamples samples (all rows of a sample together), and accuracy, precision and recall
come from each sample's true and predicted label sets (:data:`LABEL_STATISTICS`), so a label
that was predicted but never explained still counts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from auditcam.config import TASKS, AnalysisOptions
from auditcam.errors import InputError
from auditcam.run.records import ANALYSIS_COLUMNS, MULTILABEL_ANALYSIS_COLUMNS, POSITION, SKIPPED
from auditcam.scoring import SUBJECT_METRICS, Metric, aggregates
from auditcam.stats import bootstrap
from auditcam.stats.estimates import ALL, CLASS, MISSING_GROUP, OVERALL, Estimate, Estimates, json_number

CORRECTNESS = "correctness"
CORRECT, INCORRECT = "correct", "incorrect"
INTERSECTION_JOIN = " & "

MISSING_COLUMNS = "the samples frame lacks the column(s) {columns}"
SEVERAL_METHODS = "the samples frame holds several methods ({methods}); analyse one method at a time"
UNKNOWN_ATTRIBUTE = "{what}: {attribute!r} is not a group attribute of the data; attributes: {attributes}"
IMMUTABLE = "an Analysis is immutable; analyse() the samples again to change it"
BUILT_IN_DIMENSION = "group attribute {attribute!r} has the name of a built-in breakdown; rename the column"
UNKNOWN_DIMENSION = "no breakdown {dimension!r}; choose from {dimensions}"
NO_DISPARITY = "no disparity of {statistic!r} across {dimension!r} (only class, attributes and intersections have one)"


@dataclass(frozen=True)
class Statistic:
    """A slice statistic: ``kind`` (mean or median) of ``column`` over the rows in ``over``
    (``predicted``, ``valid`` = status ok, or ``all``); ``better`` is the good direction;
    ``task``: None for every audit, ``"multilabel"`` for one only multi-label audits have."""

    column: str
    over: str
    kind: str
    better: str | None
    description: str
    task: str | None = None


def statistics(registry: dict[str, Metric] | None = None) -> dict[str, Statistic]:
    """The slice statistics, one per aggregate of each metric of the registry (of every task)."""
    return {
        name: Statistic(m.column, m.over, a.kind, m.better, a.description, m.task)
        for name, (m, a) in aggregates(registry).items()
    }


STATISTICS: dict[str, Statistic] = statistics()
DISPARITY_STATISTICS = tuple(name for name, s in STATISTICS.items() if s.better is not None)
# a multi-label audit's statistics from the samples' label sets, not from the explained rows
LABEL_STATISTICS = ("accuracy", "precision", "recall")
MULTILABEL_ACCURACY = (
    "share of samples whose predicted labels are exactly their true labels (per label: whose decision on it is right)"
)


def task_statistics(task: str = "single") -> dict[str, Statistic]:
    """The statistics an audit of ``task`` estimates, in report order: a multi-label audit adds
    precision and recall, and its accuracy is the exact-match accuracy (per label: the label's)."""
    chosen = {name: s for name, s in STATISTICS.items() if s.task in (None, task)}
    if task == "multilabel":
        chosen["accuracy"] = dataclasses.replace(chosen["accuracy"], description=MULTILABEL_ACCURACY)
    return chosen


# statistics of subject metrics: measured only on the samples that have a subject
SUBJECT_STATISTICS = tuple(name for name, s in STATISTICS.items() if s.column in SUBJECT_METRICS)
NO_SUBJECTS = "not measured (no subject labels)"
# columns older sample frames may lack: border_share (NaN) and has_subject (every row has one)
OPTIONAL_COLUMNS = {"border_share": math.nan, "has_subject": True}
REQUIRED_COLUMNS = tuple(c for c in ANALYSIS_COLUMNS if c not in OPTIONAL_COLUMNS)
ROW_COUNTS = ("n", "n_valid", "n_invalid", "n_error", "n_predicted")  # per slice; a multi-label one adds n_skipped


def json_label(value: Any) -> str | None:
    """JSON-ready group name: a missing one (None, or NaN in a pandas column) becomes None."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _group_labels(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """One string label per row: the value of ``columns`` (joined for an intersection)."""
    parts = [frame[c].astype("string").fillna(MISSING_GROUP).astype(str) for c in columns]
    labels = parts[0]
    for part in parts[1:]:
        labels = labels + INTERSECTION_JOIN + part
    return labels


def intersection_name(attributes: Sequence[str]) -> str:
    """The breakdown name of an intersection of attributes, e.g. ``"skin_tone & site"``."""
    return INTERSECTION_JOIN.join(attributes)


@dataclass(frozen=True)
class _Slices:
    """The groups of every breakdown, in report order: ``codes[dimension]`` holds each row's
    group index (-1: in no group, e.g. an unpredicted sample under correctness)."""

    kinds: dict[str, str]  # dimension -> overall / class / attribute / intersection / correctness
    groups: dict[str, list[str]]
    codes: dict[str, np.ndarray]

    @property
    def keys(self) -> tuple[tuple[str, str], ...]:
        return tuple((d, g) for d, groups in self.groups.items() for g in groups)


@dataclass(frozen=True)
class _LabelSets:
    """A multi-label frame's samples: each row's sample (0..S-1, by position), a row of each
    sample, whether the model saw it, its true and predicted labels as (S, classes) indicators,
    and the classes as (index, name): every class of ``classes`` (so two audits of one model
    family have the same class slices), and any other one true, predicted or explained somewhere."""

    cluster: np.ndarray
    first: np.ndarray
    seen: np.ndarray
    true: np.ndarray
    pred: np.ndarray
    classes: list[tuple[int, str]]

    @classmethod
    def of(cls, frame: pd.DataFrame, classes: Sequence[str] | None) -> _LabelSets:
        _, first, cluster = np.unique(frame[POSITION].to_numpy(np.int64), return_index=True, return_inverse=True)
        true = [_indices(v) for v in frame["true_labels"].to_numpy()[first]]
        pred = [_indices(v) for v in frame["pred_labels"].to_numpy()[first]]
        explained = frame["label"].dropna().astype(np.int64).to_numpy()
        named = dict(zip(explained, frame["label_name"].dropna().astype(str), strict=True))
        known = list(classes) if classes is not None else []
        in_play = sorted({*range(len(known)), *named, *(c for v in (*true, *pred) if v is not None for c in v)})
        width = max(in_play, default=-1) + 1
        indicators = [np.zeros((len(first), width), dtype=bool) for _ in range(2)]
        for matrix, lists in zip(indicators, (true, pred), strict=True):
            for s, v in enumerate(lists):
                matrix[s, list(v or ())] = True
        names = [
            (c, named.get(c) or (classes[c] if classes is not None and c < len(classes) else str(c))) for c in in_play
        ]
        seen = np.array([v is not None for v in pred], dtype=bool)
        return cls(cluster.ravel(), first, seen, indicators[0] & seen[:, None], indicators[1], names)


def _indices(value: Any) -> list[int] | None:
    """A list cell of class indices (None where the model saw no image)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return [int(c) for c in value]


def _predicted(frame: pd.DataFrame, multilabel: bool) -> np.ndarray:
    """Rows with a prediction: the model saw the image (a multi-label row: it made a decision on
    the row's label, so ``pred`` may be null for a label it does not predict)."""
    return (frame["correct"] if multilabel else frame["pred"]).notna().to_numpy()


def _slices(
    frame: pd.DataFrame,
    attributes: Sequence[str],
    intersections: Sequence[Sequence[str]],
    labels: _LabelSets | None = None,
) -> _Slices:
    kinds, groups, codes = {}, {}, {}

    def add(dimension: str, kind: str, labels: pd.Series, order: Sequence[str]) -> None:
        kinds[dimension], groups[dimension] = kind, list(order)
        codes[dimension] = pd.Categorical(labels, categories=order).codes.astype(np.int64)

    add(OVERALL, OVERALL, pd.Series([ALL] * len(frame), dtype=object), [ALL])
    if labels is None:
        classes = frame[["label", "label_name"]].drop_duplicates().sort_values(["label", "label_name"])
        add(CLASS, CLASS, frame["label_name"].astype(str), [str(c) for c in dict.fromkeys(classes["label_name"])])
    else:  # every class in play, also one only ever predicted (its precision) or only true (its recall)
        kinds[CLASS], groups[CLASS] = CLASS, [name for _, name in labels.classes]
        group_of = {c: k for k, (c, _) in enumerate(labels.classes)}
        explained = frame["label"].astype("Int64")
        codes[CLASS] = np.array([-1 if pd.isna(c) else group_of[int(c)] for c in explained], dtype=np.int64)
    for attribute in attributes:
        labels_ = _group_labels(frame, [attribute])
        add(attribute, "attribute", labels_, sorted(labels_.unique()))
    for names in intersections:
        labels_ = _group_labels(frame, names)
        add(intersection_name(names), "intersection", labels_, sorted(labels_.unique()))
    predicted = _predicted(frame, labels is not None)
    correct = frame["correct"].fillna(False).astype(bool).to_numpy()
    kinds[CORRECTNESS], groups[CORRECTNESS] = CORRECTNESS, [CORRECT, INCORRECT]
    codes[CORRECTNESS] = np.where(predicted, np.where(correct, 0, 1), -1)
    return _Slices(kinds, groups, codes)


def _group_sums(slices: _Slices, flags: np.ndarray) -> np.ndarray:
    """How many flagged rows each group of every breakdown has, groups in report order."""
    return np.concatenate(
        [
            np.bincount(code[code >= 0], weights=flags[code >= 0], minlength=len(slices.groups[d])).round()
            for d, code in slices.codes.items()
        ]
    ).astype(np.int64)


def _row_values(
    frame: pd.DataFrame, stats: Mapping[str, Statistic], predicted: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per statistic: the row values (0 where not counted) and the rows it counts."""
    status = frame["status"].astype(str).to_numpy()
    columns = {
        "correct": frame["correct"].fillna(False).astype(float).to_numpy(),
        "unscored": ((status != "ok") & (status != SKIPPED)).astype(float),
    }
    over = {"predicted": predicted, "valid": status == "ok", "all": np.ones(len(frame), dtype=bool)}
    out = {}
    for name, stat in stats.items():
        values = columns[stat.column] if stat.column in columns else frame[stat.column].to_numpy(dtype=float)
        counted = over[stat.over] & np.isfinite(values)
        out[name] = (np.where(counted, values, 0.0), counted)
    return out


class Analysis:
    """Estimates with bootstrap CIs for every slice of one method's samples, and disparities.

    Slices ("breakdowns" and their groups): ``overall`` (``all``), ``class`` (true class),
    each group attribute, each intersection (``"a & b"``, groups ``"x & y"``) and
    ``correctness`` (``correct`` / ``incorrect`` predictions). An estimate from fewer than
    ``options.min_group_size`` samples is *insufficient*: shown, but left out of disparities
    and never passed or failed. ``n_with_subject`` counts the samples that have a subject: the
    subject statistics (:data:`SUBJECT_STATISTICS`) rest on those alone, and with none they are
    not measured. ``task``: ``"single"`` or ``"multilabel"`` (rows per explained label, classes
    are labels, and precision and recall join accuracy). Build it with :func:`analyse`; it is not
    modified afterwards.
    """

    def __init__(
        self,
        *,
        estimates: pd.DataFrame,
        counts: pd.DataFrame,
        disparities: pd.DataFrame,
        replicates: np.ndarray,
        keys: tuple[tuple[str, str], ...],
        kinds: Mapping[str, str],
        ids: np.ndarray,
        attributes: tuple[str, ...],
        options: AnalysisOptions,
        n_with_subject: int | None = None,
        task: str = "single",
    ) -> None:
        replicates.flags.writeable = False
        ids.flags.writeable = False
        fields = {
            "_estimates": estimates,
            "_counts": counts,
            "_disparities": disparities,
            "_replicates": replicates,
            "_results": Estimates(estimates, options.confidence, replicates.reshape(len(replicates), -1)),
            "_keys": keys,
            "_index": {key: i for i, key in enumerate(keys)},
            "_kinds": dict(kinds),
            "_ids": ids,
            "attributes": attributes,
            "options": options,
            "n_with_subject": len(ids) if n_with_subject is None else n_with_subject,
            "task": task,
            "_statistics": task_statistics(task),
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(IMMUTABLE)

    # -- fairlearn-style accessors --------------------------------------------------------

    @property
    def statistics(self) -> dict[str, Statistic]:
        """The statistics this analysis estimates, in report order (see :func:`task_statistics`)."""
        return dict(self._statistics)

    @property
    def disparity_statistics(self) -> tuple[str, ...]:
        """The statistics with a good direction, which have disparities and group gaps."""
        return tuple(name for name, s in self._statistics.items() if s.better is not None)

    @property
    def dimensions(self) -> tuple[str, ...]:
        """Breakdown names in report order."""
        return tuple(self._kinds)

    def kind(self, dimension: str) -> str:
        """What a breakdown groups by: ``overall``, ``class``, ``attribute``, ``intersection`` or ``correctness``."""
        self._check_dimension(dimension)
        return self._kinds[dimension]

    @property
    def estimates(self) -> pd.DataFrame:
        """Tidy: one row per (dimension, group, statistic) with value, ci_low, ci_high, n, sufficient."""
        return self._estimates.copy()

    @property
    def counts(self) -> pd.DataFrame:
        """One row per (dimension, group): n, n_valid, n_invalid, n_error, n_predicted."""
        return self._counts.copy()

    @property
    def disparities(self) -> pd.DataFrame:
        """One row per (dimension, statistic) over the groups with enough data: group_min,
        group_max, their groups, worst_group, difference (max - min) with its CI, ratio (min / max)."""
        return self._disparities.copy()

    @property
    def overall(self) -> pd.DataFrame:
        """Statistics of all samples: index statistic; columns value, ci_low, ci_high, n, sufficient."""
        rows = self._estimates[self._estimates["dimension"] == OVERALL]
        return rows.set_index("statistic")[["value", "ci_low", "ci_high", "n", "sufficient"]]

    def by_group(self, dimension: str, column: str = "value") -> pd.DataFrame:
        """Groups x statistics of ``column`` (value, ci_low, ci_high, n or sufficient)."""
        self._check_dimension(dimension)
        rows = self._estimates[self._estimates["dimension"] == dimension]
        table = rows.pivot(index="group", columns="statistic", values=column)
        groups = [g for d, g in self._keys if d == dimension]
        return table.reindex(index=groups, columns=list(self._statistics))

    def _disparity(self, dimension: str, column: str) -> pd.Series:
        self._check_dimension(dimension)
        rows = self._disparities[self._disparities["dimension"] == dimension]
        return rows.set_index("statistic")[column].reindex(list(self.disparity_statistics))

    def group_min(self, dimension: str) -> pd.Series:
        """Per statistic, the smallest value over the groups with enough data."""
        return self._disparity(dimension, "group_min")

    def group_max(self, dimension: str) -> pd.Series:
        """Per statistic, the largest value over the groups with enough data."""
        return self._disparity(dimension, "group_max")

    def difference(self, dimension: str) -> pd.Series:
        """Per statistic, ``group_max - group_min`` over the groups with enough data."""
        return self._disparity(dimension, "difference")

    def ratio(self, dimension: str) -> pd.Series:
        """Per statistic, ``group_min / group_max`` over the groups with enough data."""
        return self._disparity(dimension, "ratio")

    @property
    def results(self) -> Estimates:
        """Every estimate keyed by (dimension, group, statistic), with its bootstrap replicates:
        ``results.difference(a, b)`` / ``results.ratio(a, b)`` give any two's gap with a CI."""
        return self._results

    def estimate(self, dimension: str, group: str, statistic: str) -> Estimate:
        """One estimate: value, ci (None without an interval), n and sufficient."""
        self._check_dimension(dimension)
        return self._results[(dimension, group, statistic)]

    def disparity(self, dimension: str, statistic: str) -> dict[str, Any]:
        """One row of :attr:`disparities` as a dict (group names None where there is no spread)."""
        self._check_dimension(dimension)
        rows = self._disparities
        row = rows[(rows["dimension"] == dimension) & (rows["statistic"] == statistic)]
        if row.empty:
            raise KeyError(NO_DISPARITY.format(dimension=dimension, statistic=statistic))
        out = row.iloc[0].to_dict()
        for key in ("min_group", "max_group", "worst_group"):
            out[key] = json_label(out[key])
        return out

    def replicates(self, dimension: str, group: str) -> np.ndarray:
        """Bootstrap replicates ``(bootstrap, len(statistics))`` of one group (read-only)."""
        self._check_dimension(dimension)
        return self._replicates[:, self._index[(dimension, group)], :]

    def not_measured(self) -> dict[str, str]:
        """Statistic -> why the data cannot give it (empty when everything was measured)."""
        return dict.fromkeys(SUBJECT_STATISTICS, NO_SUBJECTS) if self.n_with_subject == 0 else {}

    @property
    def ids(self) -> np.ndarray:
        """Sample ids in row order: two analyses pair up when these and the options agree."""
        return self._ids

    def _check_dimension(self, dimension: str) -> None:
        if dimension not in self._kinds:
            raise KeyError(UNKNOWN_DIMENSION.format(dimension=dimension, dimensions=", ".join(self._kinds)))

    # -- serialisation --------------------------------------------------------------------

    def _slice_dict(self, dimension: str, group: str, rows: pd.DataFrame, counts: Mapping[str, Any]) -> dict:
        out: dict[str, Any] = {k: int(counts[k]) for k in counts.index}
        out.update({r.statistic: json_number(r.value) for r in rows.itertuples()})
        out["ci"] = {
            r.statistic: None if math.isnan(r.ci_low) else [float(r.ci_low), float(r.ci_high)]
            for r in rows.itertuples()
        }
        out["insufficient"] = [r.statistic for r in rows.itertuples() if not r.sufficient]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready aggregates (the per-method part of ``summary.json``)."""
        grouped = {key: rows for key, rows in self._estimates.groupby(["dimension", "group"], sort=False)}
        counts = self._counts.set_index(["dimension", "group"])
        slices: dict[str, dict[str, Any]] = {}
        for dimension, group in self._keys:
            key = (dimension, group)
            slices.setdefault(dimension, {})[group] = self._slice_dict(dimension, group, grouped[key], counts.loc[key])
        by_kind = {"attribute": "by_group", "intersection": "by_intersection"}
        out: dict[str, Any] = {
            "n_with_subject": int(self.n_with_subject),
            "not_measured": self.not_measured(),
            "overall": slices[OVERALL][ALL],
            "by_class": slices[CLASS],
            "by_group": {},
            "by_intersection": {},
            "by_correctness": slices[CORRECTNESS],
        }
        for dimension, kind in self._kinds.items():
            if kind in by_kind:
                out[by_kind[kind]][dimension] = slices[dimension]
        out["disparities"] = [
            {
                "dimension": r.dimension,
                "statistic": r.statistic,
                "n_groups": int(r.n_groups),
                "insufficient_groups": list(r.insufficient_groups),
                "group_min": json_number(r.group_min),
                "group_max": json_number(r.group_max),
                "min_group": json_label(r.min_group),
                "max_group": json_label(r.max_group),
                "worst_group": json_label(r.worst_group),
                "difference": json_number(r.difference),
                "difference_ci": None
                if math.isnan(r.difference_ci_low)
                else [float(r.difference_ci_low), float(r.difference_ci_high)],
                "ratio": json_number(r.ratio),
            }
            for r in self._disparities.itertuples()
        ]
        return out


def _validate_frame(
    frame: pd.DataFrame, attributes: Sequence[str], intersections: Sequence[Sequence[str]], multilabel: bool
) -> None:
    required = (*REQUIRED_COLUMNS, *(MULTILABEL_ANALYSIS_COLUMNS if multilabel else ()))
    missing = [c for c in required if c not in frame]
    if missing:
        raise ValueError(MISSING_COLUMNS.format(columns=", ".join(missing)))
    if "method" in frame and frame["method"].nunique() > 1:
        raise ValueError(SEVERAL_METHODS.format(methods=", ".join(map(str, frame["method"].unique()))))
    clashes = [a for a in attributes if a in (OVERALL, CLASS, CORRECTNESS)]
    if clashes:
        raise InputError(BUILT_IN_DIMENSION.format(attribute=clashes[0]))
    for attribute in [*attributes, *(a for names in intersections for a in names)]:
        if attribute not in frame:
            raise InputError(
                UNKNOWN_ATTRIBUTE.format(
                    what="breakdown", attribute=attribute, attributes=", ".join(attributes) or "(none)"
                )
            )


def analyse(
    frame: pd.DataFrame,
    attributes: Sequence[str] = (),
    options: AnalysisOptions | None = None,
    *,
    task: str = "single",
    classes: Sequence[str] | None = None,
) -> Analysis:
    """Estimate every statistic of every slice of ``frame`` (one method's samples) with a
    seeded percentile-bootstrap CI, and the disparities across the groups of each breakdown.

    ``task="multilabel"``: ``frame`` has one row per (sample, explained label) with the sample's
    ``position``, ``true_labels`` and ``pred_labels``; the bootstrap resamples samples, and
    accuracy, precision and recall come from the label sets (:func:`label_estimates`);
    ``classes`` names a class that no row explains (default: its index)."""
    options = AnalysisOptions() if options is None else options
    if task not in TASKS:
        raise InputError(f"`task` {task!r}: choose from {', '.join(TASKS)}", "task")
    multilabel = task == "multilabel"
    attributes = tuple(attributes)
    _validate_frame(frame, attributes, options.intersections, multilabel)
    frame = frame.reset_index(drop=True)
    absent = {c: v for c, v in OPTIONAL_COLUMNS.items() if c not in frame}
    if absent:
        frame = frame.assign(**absent)
    stats = task_statistics(task)
    sets = _LabelSets.of(frame, classes) if multilabel else None
    slices = _slices(frame, attributes, options.intersections, sets)
    keys = slices.keys
    names = list(stats)
    from_rows = [s for s in names if not (multilabel and s in LABEL_STATISTICS)]
    predicted = _predicted(frame, multilabel)
    rows = _row_values(frame, {s: stats[s] for s in from_rows}, predicted)
    mean_names = [s for s in from_rows if stats[s].kind == "mean"]
    (median_name,) = [s for s in from_rows if stats[s].kind == "median"]

    # ratio statistics share a denominator column when they count the same rows
    counted_sets: list[np.ndarray] = []
    which = []
    for s in mean_names:
        counted = rows[s][1]
        u = next((i for i, c in enumerate(counted_sets) if np.array_equal(c, counted)), len(counted_sets))
        if u == len(counted_sets):
            counted_sets.append(counted)
        which.append(u)
    median_values, median_counted = rows[median_name]
    table = bootstrap.Table(
        numerators=np.stack([rows[s][0] for s in mean_names], axis=1),
        denominators=np.stack(counted_sets, axis=1).astype(np.float64),
        which=np.asarray(which),
        median_values=np.where(median_counted, median_values, np.inf),  # uncounted rows sort last
        median_counted=median_counted,
    )
    # one partition per breakdown: rows grouped by group, by the median's values within a group
    partitions = []
    for dimension, code in slices.codes.items():
        member = np.flatnonzero(code >= 0)
        ordered = member[np.lexsort((table.median_values[member], code[member]))]
        sizes_d = np.bincount(code[member], minlength=len(slices.groups[dimension]))
        partitions.append(bootstrap.Partition(ordered, np.concatenate([[0], np.cumsum(sizes_d)])))

    def combine(ratios: np.ndarray, medians: np.ndarray) -> np.ndarray:
        """(..., groups, k) ratios and (..., groups) medians -> (..., groups, statistic)."""
        out = np.full((*medians.shape, len(names)), np.nan)
        for k, s in enumerate(mean_names):
            out[..., names.index(s)] = ratios[..., k]
        out[..., names.index(median_name)] = medians
        return out

    clusters = {} if sets is None else {"clusters": sets.cluster, "n_clusters": len(sets.first)}
    point = combine(*bootstrap.point(table, partitions))
    replicates = combine(
        *bootstrap.replicate(table, partitions, n_boot=options.bootstrap, seed=options.seed, **clusters)
    )
    # rows each statistic counts, per group
    counted_per_group = np.stack([_group_sums(slices, c) for c in [*counted_sets, median_counted]], axis=1)
    sizes = np.zeros((len(keys), len(names)), dtype=np.int64)
    for k, s in enumerate(mean_names):
        sizes[:, names.index(s)] = counted_per_group[:, which[k]]
    sizes[:, names.index(median_name)] = counted_per_group[:, -1]
    if sets is not None:
        columns = [names.index(s) for s in LABEL_STATISTICS]
        point[:, columns], replicates[:, :, columns], sizes[:, columns] = label_estimates(sets, slices, options)
    low, high = bootstrap.percentile_interval(replicates.reshape(options.bootstrap, -1), options.confidence)
    n_slices = len(keys)

    estimates = pd.DataFrame(
        {
            "dimension": np.repeat([d for d, _ in keys], len(names)),
            "group": np.repeat([g for _, g in keys], len(names)),
            "statistic": np.tile(names, n_slices),
            "value": point.ravel(),
            "ci_low": low,
            "ci_high": high,
            "n": sizes.ravel(),
            "sufficient": sizes.ravel() >= options.min_group_size,
        }
    )
    status = frame["status"].astype(str).to_numpy()
    row_flags = {
        "n": np.ones(len(frame), dtype=bool),
        "n_valid": status == "ok",
        "n_invalid": status == "invalid",
        "n_error": status == "error",
        "n_predicted": predicted,
        **({"n_skipped": status == SKIPPED} if multilabel else {}),
    }
    counts = pd.DataFrame(
        {
            "dimension": [d for d, _ in keys],
            "group": [g for _, g in keys],
            **{name: _group_sums(slices, flag) for name, flag in row_flags.items()},
        }
    )
    disparities = _disparities(slices, point, sizes, replicates, options, stats)
    return Analysis(
        estimates=estimates,
        counts=counts,
        disparities=disparities,
        replicates=replicates,
        keys=keys,
        kinds=slices.kinds,
        ids=frame["id"].astype(str).to_numpy(),
        attributes=attributes,
        options=options,
        n_with_subject=int(frame["has_subject"].fillna(False).astype(bool).sum()),
        task=task,
    )


def _ratio_table(numerators: list[np.ndarray], denominators: list[np.ndarray], which: list[int]) -> bootstrap.Table:
    return bootstrap.Table(
        numerators=np.stack(numerators, axis=1).astype(np.float64),
        denominators=np.stack(denominators, axis=1).astype(np.float64),
        which=np.asarray(which),
    )


def label_estimates(
    sets: _LabelSets, slices: _Slices, options: AnalysisOptions
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accuracy, precision and recall of a multi-label audit for every slice: points (slices, 3),
    replicates (bootstrap, slices, 3) and sizes (slices, 3), in :data:`LABEL_STATISTICS` order.

    Per class c over the samples the model saw: precision = TP/(TP+FP), recall = TP/(TP+FN),
    accuracy = (TP+TN)/samples. Overall and per group, over every label of their samples (micro
    averages: sklearn's ``average="micro"``), and accuracy is the share of samples whose
    predicted labels are exactly the true ones (sklearn's ``accuracy_score``). Sizes count
    samples: those predicted c, those truly c, those seen (with any predicted / true label).
    The correctness breakdown has none of them. The bootstrap draws the samples as the rows'
    (same seed, same number of samples), so every statistic comes from the same resamples."""
    keys, n_stats = slices.keys, len(LABEL_STATISTICS)
    point = np.full((len(keys), n_stats), np.nan)
    replicates = np.full((options.bootstrap, len(keys), n_stats), np.nan)
    sizes = np.zeros((len(keys), n_stats), dtype=np.int64)
    seen = sets.seen.astype(np.float64)
    n = len(seen)
    resampled = {"n_boot": options.bootstrap, "seed": options.seed}

    # per class: one group of every sample, three columns per class
    classes = [c for c, _ in sets.classes]
    true, pred = sets.true[:, classes], sets.pred[:, classes] & sets.seen[:, None]
    hit, agree = true & pred, (true == pred) & sets.seen[:, None]
    k = len(classes)
    table = _ratio_table(
        [*hit.T, *hit.T, *agree.T], [*pred.T, *true.T, seen], [*range(k), *range(k, 2 * k), *[2 * k] * k]
    )
    everyone = [bootstrap.Partition(np.arange(n), np.array([0, n]))]
    ratios = bootstrap.point(table, everyone)[0].reshape(3, k)  # precision, recall, accuracy per class
    draws = bootstrap.replicate(table, everyone, **resampled)[0].reshape(options.bootstrap, 3, k)
    rows = [i for i, (d, _) in enumerate(keys) if d == CLASS]
    order = [LABEL_STATISTICS.index(s) for s in ("precision", "recall", "accuracy")]
    point[np.ix_(rows, order)] = ratios.T
    for j, column in enumerate(order):
        replicates[:, rows, column] = draws[:, j]
    sizes[np.ix_(rows, order)] = np.stack([pred.sum(0), true.sum(0), np.full(k, int(seen.sum()))], axis=1)

    # overall and per group: micro averages over every label of the group's samples
    hits = (sets.true & sets.pred).sum(1) * seen
    n_pred, n_true = sets.pred.sum(1) * seen, sets.true.sum(1) * seen
    exact = (sets.true == sets.pred).all(1) * seen
    table = _ratio_table([exact, hits, hits], [seen, n_pred, n_true], [0, 1, 2])
    for dimension, kind in slices.kinds.items():
        if kind not in (OVERALL, "attribute", "intersection"):
            continue
        code = slices.codes[dimension][sets.first]
        member = np.flatnonzero(code >= 0)
        ordered = member[np.argsort(code[member], kind="stable")]
        counts = np.bincount(code[member], minlength=len(slices.groups[dimension]))
        partition = [bootstrap.Partition(ordered, np.concatenate([[0], np.cumsum(counts)]))]
        rows = [i for i, (d, _) in enumerate(keys) if d == dimension]
        point[rows] = bootstrap.point(table, partition)[0]
        replicates[:, rows] = bootstrap.replicate(table, partition, **resampled)[0]
        flags = np.stack([seen > 0, n_pred > 0, n_true > 0], axis=1)
        sizes[rows] = np.stack(
            [np.bincount(code[member], weights=f[member], minlength=len(rows)) for f in flags.T], axis=1
        ).round()
    return point, replicates, sizes


def _disparities(
    slices: _Slices,
    point: np.ndarray,
    sizes: np.ndarray,
    replicates: np.ndarray,
    options: AnalysisOptions,
    stats: Mapping[str, Statistic],
) -> pd.DataFrame:
    """Per breakdown (class, attributes, intersections) and statistic: the spread across groups.

    The CI of the difference comes from the bootstrap distribution of the difference between
    the two groups at the extremes (paired: both from the same resamples); it does not allow
    for those two having been picked as the extremes, so with many groups it is optimistic.
    """
    names = list(stats)
    records = []
    for dimension, kind in slices.kinds.items():
        if kind not in (CLASS, "attribute", "intersection"):
            continue
        positions = [i for i, (d, _) in enumerate(slices.keys) if d == dimension]
        for statistic in (name for name, s in stats.items() if s.better is not None):
            k = names.index(statistic)
            enough = [i for i in positions if sizes[i, k] >= options.min_group_size and not math.isnan(point[i, k])]
            record: dict[str, Any] = {
                "dimension": dimension,
                "statistic": statistic,
                "n_groups": len(enough),
                "insufficient_groups": tuple(slices.keys[i][1] for i in positions if i not in enough),
                "group_min": math.nan,
                "group_max": math.nan,
                "min_group": None,
                "max_group": None,
                "worst_group": None,
                "difference": math.nan,
                "difference_ci_low": math.nan,
                "difference_ci_high": math.nan,
                "ratio": math.nan,
            }
            if len(enough) >= 2:
                values = point[enough, k]
                lo, hi = enough[int(np.argmin(values))], enough[int(np.argmax(values))]
                diff = (replicates[:, hi, k] - replicates[:, lo, k])[:, None]
                ci_low, ci_high = bootstrap.percentile_interval(diff, options.confidence)
                worst = lo if stats[statistic].better == "higher" else hi
                record.update(
                    group_min=point[lo, k],
                    group_max=point[hi, k],
                    min_group=slices.keys[lo][1],
                    max_group=slices.keys[hi][1],
                    worst_group=slices.keys[worst][1] if point[hi, k] > point[lo, k] else None,
                    difference=point[hi, k] - point[lo, k],
                    difference_ci_low=ci_low[0],
                    difference_ci_high=ci_high[0],
                    ratio=point[lo, k] / point[hi, k] if point[hi, k] > 0 else math.nan,
                )
            records.append(record)
    columns = [
        "dimension",
        "statistic",
        "n_groups",
        "insufficient_groups",
        "group_min",
        "group_max",
        "min_group",
        "max_group",
        "worst_group",
        "difference",
        "difference_ci_low",
        "difference_ci_high",
        "ratio",
    ]
    return pd.DataFrame.from_records(records, columns=columns)
