"""Check thresholds: the pass/fail gates an audit is judged by."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_BACKGROUND_RELIANT_RATE = 0.2


@dataclass(frozen=True)
class Checks:
    """Thresholds of the checks; ``None`` turns a check off.

    ``max_background_reliant_rate``: at most this share of valid samples may have
    focus_lift below the reliance threshold (heatmap drawn to the background).
    ``min_subject_share``: the mean subject_share must reach this value.
    """

    max_background_reliant_rate: float | None = DEFAULT_MAX_BACKGROUND_RELIANT_RATE
    min_subject_share: float | None = None
