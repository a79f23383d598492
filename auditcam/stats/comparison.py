"""Compare two models audited on the same samples: did retraining remove the shortcut?

Both audits must cover the same samples in the same order with the same bootstrap settings;
then their analyses were resampled identically (see :mod:`auditcam.stats.bootstrap`), so the CI of
each delta (B − A) comes from a *paired* bootstrap: the sample-to-sample noise both models
share cancels out.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from auditcam.errors import InputError
from auditcam.stats.analysis import CORRECTNESS, Analysis
from auditcam.stats.checks import INSUFFICIENT
from auditcam.stats.estimates import Estimate

SCHEMA_VERSION = 1  # of comparison.json
NOT_PAIRED = (
    "the two audits do not cover the same samples in the same order with the same bootstrap settings; "
    "audit both models on one dataset with equal analysis options"
)
OTHER_METHOD = "the two audits were decided on different methods ({a} and {b}); use the same --method"
PREDICTED_LABELS = (
    "a multi-label comparison pairs each (sample, label) row of the two audits, and two models predict "
    "different labels: explain the true labels (`target` label)"
)
IMPROVED, WORSENED, NO_CLEAR_CHANGE = "improved", "worsened", "no clear change"
SUBJECT, BACKGROUND = "subject", "background"
# focus transitions A -> B
TRANSITIONS = ("subject_to_subject", "subject_to_background", "background_to_subject", "background_to_background")


def _check_paired(a: Analysis, b: Analysis) -> None:
    same = (
        len(a.ids) == len(b.ids)
        and bool(np.all(a.ids == b.ids))
        and a.options.bootstrap == b.options.bootstrap
        and a.options.seed == b.options.seed
        and a.options.confidence == b.options.confidence
        and a.task == b.task
    )
    if not same:
        raise ValueError(NOT_PAIRED)


def paired_deltas(a: Analysis, b: Analysis) -> pd.DataFrame:
    """Per (dimension, group, statistic): A and B with their CIs, delta = B − A with its paired
    bootstrap CI, and ``change``: improved / worsened (the CI excludes 0, in the statistic's good
    or bad direction), no clear change, or insufficient data (either side below min_group_size)."""
    _check_paired(a, b)
    records = []
    for dimension in a.dimensions:
        if dimension == CORRECTNESS:  # not the same samples in A and B
            continue
        shared = set(b.by_group(dimension).index)  # a multi-label class only one model ever predicts is in one
        for group in (g for g in a.by_group(dimension).index if g in shared):
            for statistic in a.disparity_statistics:
                key = (dimension, group, statistic)
                ea, eb = a.results[key], b.results[key]
                delta = paired_delta(a, b, key)
                low, high = delta.ci or (math.nan, math.nan)
                if not delta.sufficient or delta.value is None:
                    change = INSUFFICIENT
                elif low > 0 or high < 0:
                    better = a.statistics[statistic].better == "higher"
                    change = IMPROVED if (low > 0) == better else WORSENED
                else:
                    change = NO_CLEAR_CHANGE
                records.append(
                    {
                        "dimension": dimension,
                        "group": group,
                        "statistic": statistic,
                        **_sides("a", ea),
                        **_sides("b", eb),
                        **_sides("delta", delta),
                        "n_a": ea.n,
                        "n_b": eb.n,
                        "change": change,
                    }
                )
    return pd.DataFrame.from_records(records)


def paired_delta(a: Analysis, b: Analysis, key: tuple[str, str, str]) -> Estimate:
    """B − A of one (dimension, group, statistic) with its paired bootstrap CI (both analyses
    resampled the same samples identically)."""
    return b.results.difference(key, key, of=a.results)


def _sides(prefix: str, estimate: Estimate) -> dict[str, float]:
    """``prefix``, ``prefix_ci_low``, ``prefix_ci_high`` of one estimate (NaN where not measured)."""
    low, high = estimate.ci or (math.nan, math.nan)
    value = math.nan if estimate.value is None else estimate.value
    return {prefix: value, f"{prefix}_ci_low": low, f"{prefix}_ci_high": high}


def check_pairable(task: str, target: str) -> None:
    """Refuse, before any work, a comparison whose audits cannot have the same rows: multi-label
    audits of the predicted labels (each model explains its own)."""
    if task == "multilabel" and target == "pred":
        raise InputError(PREDICTED_LABELS, "target")


def focus_transitions(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """One row per sample: where each model's heatmap went (subject or background, None when
    not scored) and the transition A -> B (``subject_to_background`` ...; None when either side
    is not scored). ``a`` and ``b`` are one method's samples of the same dataset."""
    if list(a["id"]) != list(b["id"]):
        raise ValueError(NOT_PAIRED)

    def focus(frame: pd.DataFrame) -> np.ndarray:
        reliant = frame["background_reliant"].to_numpy(dtype=float)
        scored = (frame["status"].astype(str) == "ok").to_numpy() & np.isfinite(reliant)
        return np.where(scored, np.where(reliant > 0, BACKGROUND, SUBJECT), None)

    fa, fb = focus(a), focus(b)
    out = pd.DataFrame(
        {
            "id": a["id"].astype(str).to_numpy(),
            "image": a["image"].astype(str).to_numpy(),
            "label_name": a["label_name"].astype(str).to_numpy(),
            "a_pred_name": a["pred_name"].to_numpy(),
            "b_pred_name": b["pred_name"].to_numpy(),
            "a_correct": a["correct"].to_numpy(),
            "b_correct": b["correct"].to_numpy(),
            "a_subject_share": a["subject_share"].to_numpy(dtype=float),
            "b_subject_share": b["subject_share"].to_numpy(dtype=float),
            "a_focus_lift": a["focus_lift"].to_numpy(dtype=float),
            "b_focus_lift": b["focus_lift"].to_numpy(dtype=float),
            "a_focus": fa,
            "b_focus": fb,
        }
    )
    both = (fa != None) & (fb != None)  # noqa: E711 - elementwise over an object array
    out["transition"] = np.where(both, [f"{x}_to_{y}" for x, y in zip(fa, fb, strict=True)], None)
    return out
