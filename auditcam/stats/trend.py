"""One model's statistics across its checkpoints, audited on the same samples: each checkpoint's
estimates with their CIs, and where they rose or fell.

Every checkpoint's analysis resamples the same samples identically (the same ids in the same
order, the same bootstrap options), so the change between two checkpoints gets a *paired*
bootstrap CI (:func:`auditcam.stats.comparison.paired_deltas`): the sample-to-sample noise the
checkpoints share cancels. Changes are taken between consecutive checkpoints and, with more
than two, from the first to the last; each interval holds at its own level, not adjusted for
the number of changes read off one table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from auditcam.stats.analysis import Analysis
from auditcam.stats.comparison import IMPROVED, WORSENED, paired_deltas

ROSE, FELL = "rose", "fell"
TOO_FEW = "a trend needs at least two checkpoints, got {n}"


def checkpoint_estimates(analyses: Sequence[Analysis]) -> pd.DataFrame:
    """Every estimate of every checkpoint: one row per (checkpoint, dimension, group, statistic),
    ``checkpoint`` the position in ``analyses``, then the analysis' estimate columns."""
    frames = [analysis.estimates.assign(checkpoint=i) for i, analysis in enumerate(analyses)]
    frame = pd.concat(frames, ignore_index=True)
    return frame[["checkpoint", *(c for c in frame.columns if c != "checkpoint")]]


def checkpoint_pairs(n: int) -> list[tuple[int, int]]:
    """The pairs of checkpoint positions a trend compares: each consecutive pair, and the first
    with the last when there are more than two."""
    if n < 2:
        raise ValueError(TOO_FEW.format(n=n))
    return [(i, i + 1) for i in range(n - 1)] + ([(0, n - 1)] if n > 2 else [])


def trend_changes(analyses: Sequence[Analysis]) -> pd.DataFrame:
    """Per pair of :func:`checkpoint_pairs` (``from``, ``to``) and (dimension, group, statistic):
    the columns of :func:`~auditcam.stats.comparison.paired_deltas` (``a`` the earlier checkpoint,
    ``b`` the later, ``delta`` = later − earlier with its paired CI, ``change`` improved or
    worsened in the statistic's good direction) and ``direction``: rose or fell (the CI excludes
    0), no clear change, or insufficient data."""
    frames = []
    for first, second in checkpoint_pairs(len(analyses)):
        deltas = paired_deltas(analyses[first], analyses[second])
        decided = deltas["change"].isin([IMPROVED, WORSENED]).to_numpy()
        direction = np.where(decided, np.where(deltas["delta"].to_numpy() > 0, ROSE, FELL), deltas["change"])
        frames.append(deltas.assign(direction=direction).assign(**{"from": first, "to": second}))
    frame = pd.concat(frames, ignore_index=True)
    return frame[["from", "to", *(c for c in frame.columns if c not in ("from", "to"))]]
