"""Subject-versus-background metrics of heatmaps, vectorised over a batch (pure tensor math).

``H`` is a heatmap clipped at 0, ``M`` the boolean subject mask, both (N, H, W). Heatmaps at a
different resolution from the masks are resized bilinearly to the mask size first.

A sample whose mask is empty or covers the whole image, or whose heatmap is all zero or has a
non-finite value, is *invalid*: its metrics are NaN (never 0) and ``invalid`` holds a code
whose reason is ``INVALID_REASONS[code]``. A sample without a subject (``subjects`` False) is not
invalid: its subject metrics are NaN and its mask-free metrics (:data:`MASK_FREE_METRICS`) are
measured as for every other sample; only a faulty heatmap makes those NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

HIGHER, LOWER = "higher", "lower"


@dataclass(frozen=True)
class Aggregate:
    """A statistic of a metric over a slice of samples: ``kind`` ``mean`` (a rate for a 0/1
    metric) or ``median``; ``name`` is its key in the analysis, summary.json and the report."""

    name: str
    kind: str
    label: str
    description: str


@dataclass(frozen=True)
class Metric:
    """One metric, described once for scoring, the statistics, the config and the report.

    ``formula``: its definition (H the heatmap clipped at 0, M the subject mask); ``better``:
    ``higher``, ``lower`` or None (descriptive, no direction, no disparity); ``unit``: ``%`` for a
    rate shown as a percentage, ``""`` for a plain number; ``needs_subject``: whether it is
    measured only where a sample has a subject mask; ``scored``: a per-sample column
    :func:`score` computes (False: ``column`` comes from the prediction or the status);
    ``over``: the rows its aggregates count (``valid`` = status ok, ``predicted``, ``all``);
    ``aggregates``: the statistics the analysis estimates for it (none: per-sample only);
    ``task``: None for every audit, ``"multilabel"`` for a statistic only a multi-label audit has."""

    name: str
    formula: str
    better: str | None
    label: str
    help: str
    unit: str = ""
    needs_subject: bool = True
    scored: bool = True
    column: str = ""
    over: str = "valid"
    aggregates: tuple[Aggregate, ...] = field(default=())
    task: str | None = None

    def __post_init__(self) -> None:
        if not self.column:
            object.__setattr__(self, "column", self.name)

    @property
    def style(self) -> str:
        """How the report prints its values: ``pct`` or ``fmt``."""
        return "pct" if self.unit == "%" else "fmt"


REGISTRY: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "accuracy",
            "mean(pred = label) over the predicted samples",
            HIGHER,
            "accuracy",
            "Share of the samples that got a prediction which are classified correctly.",
            unit="%",
            needs_subject=False,
            scored=False,
            column="correct",
            over="predicted",
            aggregates=(Aggregate("accuracy", "mean", "accuracy", "share of predicted samples classified correctly"),),
        ),
        Metric(
            "precision",
            "TP / (TP + FP) of the predicted labels (multi-label)",
            HIGHER,
            "precision",
            "Multi-label: share of the predicted labels that are true labels of their sample; per label among "
            "the samples given that label, overall and per group over every label (micro average).",
            unit="%",
            needs_subject=False,
            scored=False,
            over="predicted",
            aggregates=(Aggregate("precision", "mean", "precision", "share of predicted labels that are true"),),
            task="multilabel",
        ),
        Metric(
            "recall",
            "TP / (TP + FN) of the true labels (multi-label)",
            HIGHER,
            "recall",
            "Multi-label: share of the true labels that the model predicts; per label among the samples that "
            "have it, overall and per group over every label (micro average).",
            unit="%",
            needs_subject=False,
            scored=False,
            over="predicted",
            aggregates=(Aggregate("recall", "mean", "recall", "share of true labels that are predicted"),),
            task="multilabel",
        ),
        Metric(
            "subject_share",
            "sum(H·M) / sum(H)",
            HIGHER,
            "subject_share",
            "Share of the heatmap's energy that falls on the labelled subject (0 to 1).",
            aggregates=(
                Aggregate("subject_share_mean", "mean", "mean subject_share", "mean share of heatmap on the subject"),
                Aggregate(
                    "subject_share_median", "median", "median subject_share", "median share of heatmap on the subject"
                ),
            ),
        ),
        Metric(
            "subject_area",
            "mean(M)",
            None,
            "subject_area",
            "Share of the image the subject covers: what subject_share would be for a uniform heatmap.",
            aggregates=(
                Aggregate(
                    "subject_area_mean", "mean", "mean subject_area", "mean share of the image the subject covers"
                ),
            ),
        ),
        Metric(
            "focus_lift",
            "subject_share / subject_area",
            HIGHER,
            "focus_lift",
            "subject_share divided by subject_area: 1 means no better than a uniform heatmap, "
            "above 1 focused on the subject, below 1 drawn to the background.",
            aggregates=(Aggregate("focus_lift_mean", "mean", "mean focus_lift", "mean subject_share / subject_area"),),
        ),
        Metric(
            "rank_accuracy",
            "share of the top-K pixels of H inside M, K = sum(M)",
            HIGHER,
            "rank accuracy",
            "Share of the K hottest pixels that lie on the subject, K = subject size in pixels (ties by pixel order).",
        ),
        Metric(
            "pointing_hit",
            "any maximum of H lies in M",
            HIGHER,
            "pointing hits",
            "Whether the hottest pixel lies on the subject (pointing game); when several pixels tie at the "
            "peak, a hit if any of them does.",
            unit="%",
            aggregates=(
                Aggregate("pointing_hit_rate", "mean", "pointing hits", "share of hottest pixels on the subject"),
            ),
        ),
        Metric(
            "iou",
            "IoU of {H ≥ 0.5·max H} with M",
            HIGHER,
            "IoU",
            "Overlap (intersection over union) of the pixels at or above half the peak heat with the subject.",
        ),
        Metric(
            "background_reliant",
            "focus_lift < reliance threshold (default 1)",
            LOWER,
            "background-reliant",
            "A sample counts as background-reliant when its focus_lift is below the reliance threshold.",
            unit="%",
            aggregates=(
                Aggregate(
                    "background_reliant_rate",
                    "mean",
                    "background-reliant rate",
                    "share of samples whose heatmap is drawn to the background",
                ),
            ),
        ),
        Metric(
            "border_share",
            "(sum(H·B) / sum(H)) / mean(B), B = outer band",
            LOWER,
            "border_share",
            "Share of the heatmap in the image's outer band (1/8 of each side) over the band's share of the image: "
            "1 means no preference, above 1 drawn to tags, rulers or scanner borders. Needs no subject.",
            needs_subject=False,
            over="predicted",
            aggregates=(
                Aggregate(
                    "border_share_mean",
                    "mean",
                    "mean border_share",
                    "mean heatmap share in the image's outer band over the band's share of the image",
                ),
            ),
        ),
        Metric(
            "error_rate",
            "mean(status ≠ ok) over all samples",
            LOWER,
            "not scored",
            "Share of the samples the audit could not score: unreadable (error) or invalid.",
            unit="%",
            needs_subject=False,
            scored=False,
            column="unscored",
            over="all",
            aggregates=(
                Aggregate("error_rate", "mean", "not scored", "share of samples not scored (status error or invalid)"),
            ),
        ),
    )
}


def scored_metrics(registry: dict[str, Metric] | None = None) -> tuple[str, ...]:
    """The per-sample columns :func:`score` returns, in registry order (that of samples.parquet)."""
    return tuple(name for name, m in (REGISTRY if registry is None else registry).items() if m.scored)


def aggregates(registry: dict[str, Metric] | None = None) -> dict[str, tuple[Metric, Aggregate]]:
    """Every statistic the analysis estimates, by name, with its metric, in registry order."""
    return {a.name: (m, a) for m in (REGISTRY if registry is None else registry).values() for a in m.aggregates}


METRICS = scored_metrics()
# metrics that need no subject: measured on every sample with a usable heatmap
MASK_FREE_METRICS = tuple(name for name in METRICS if not REGISTRY[name].needs_subject)
SUBJECT_METRICS = tuple(m for m in METRICS if m not in MASK_FREE_METRICS)
BORDER_BAND = 1 / 8

VALID = 0
INVALID_REASONS = {
    1: "empty subject mask",
    2: "subject mask covers the whole image, so there is no background to compare",
    3: "heatmap has non-finite values",
    4: "heatmap is all zero",
}


def _dilate(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Grow boolean masks by ``radius`` pixels (square neighbourhood)."""
    if radius <= 0:
        return masks
    size = 2 * radius + 1
    grown = F.max_pool2d(masks[:, None].float(), kernel_size=size, stride=1, padding=radius)
    return grown[:, 0] > 0


def band_mask(hw: tuple[int, int], band: float = BORDER_BAND) -> torch.Tensor:
    """bool (H, W): the image's outer band, ``max(1, floor(band * side))`` pixels deep on each side."""
    h, w = hw
    dy, dx = max(1, int(band * h)), max(1, int(band * w))
    rows, cols = torch.arange(h), torch.arange(w)
    edge_rows = (rows < dy) | (rows >= h - dy)
    edge_cols = (cols < dx) | (cols >= w - dx)
    return edge_rows[:, None] | edge_cols[None, :]


def border_share(maps: torch.Tensor, band: float = BORDER_BAND) -> torch.Tensor:
    """Per sample (N,): the heatmap's share in the outer band over the band's share of the
    image (1: no preference; above 1: drawn to tags, rulers, scanner borders). ``maps`` must be
    clipped at 0 with a positive sum."""
    edge = band_mask(tuple(maps.shape[-2:]), band).to(maps.device)
    heat = maps.flatten(1)
    share = (heat * edge.flatten().float()).sum(dim=1) / heat.sum(dim=1).clamp_min(torch.finfo(heat.dtype).tiny)
    return share / edge.float().mean()


def invalid_codes(maps: torch.Tensor, masks: torch.Tensor, subjects: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample code: 0 valid, else a key of :data:`INVALID_REASONS` (first fault wins); a
    sample without a subject (``subjects`` False) has no mask fault, only heatmap faults."""
    area = masks.flatten(1).float().mean(dim=1)
    if subjects is not None:
        area = torch.where(subjects.to(area.device), area, 0.5)  # neither empty nor full
    finite = torch.isfinite(maps).flatten(1).all(dim=1)
    energy = torch.where(finite[:, None], maps.clamp_min(0).flatten(1), 0).sum(dim=1)
    codes = torch.full_like(area, VALID, dtype=torch.int8)
    codes = torch.where(energy == 0, torch.tensor(4, dtype=torch.int8, device=codes.device), codes)
    codes = torch.where(~finite, torch.tensor(3, dtype=torch.int8, device=codes.device), codes)
    codes = torch.where(area == 1, torch.tensor(2, dtype=torch.int8, device=codes.device), codes)
    return torch.where(area == 0, torch.tensor(1, dtype=torch.int8, device=codes.device), codes)


def score(
    maps: torch.Tensor,
    masks: torch.Tensor,
    *,
    iou_threshold: float = 0.5,
    pointing_tolerance: int = 0,
    reliance_threshold: float = 1.0,
    subjects: torch.Tensor | None = None,
    band: float = BORDER_BAND,
) -> dict[str, torch.Tensor]:
    """Score heatmaps ``maps`` (N, H, W) against boolean subject ``masks`` (N, H', W').

    Returns float tensors (N,) for every name in :data:`METRICS` (the scored metrics of
    :data:`REGISTRY`; NaN where invalid, except
    subject_area which every mask has; the
    boolean metrics pointing_hit and background_reliant as 0./1.) and ``invalid`` (int8 codes).
    ``subjects`` (bool, N; default all True) marks the samples that have a subject: the others
    get NaN subject metrics (subject_area too) and are scored on the mask-free ones;
    ``band`` is border_share's band depth as a fraction of each side.
    ``rank_accuracy`` breaks ties in the heatmap by pixel order (stable sort);
    ``pointing_hit`` is a hit when any of the maximal pixels (all those tied at the peak) lies
    within ``pointing_tolerance`` pixels of the subject (Quantus' rule): a bilinearly upsampled
    coarse map has a plateau of tied maxima, and the first in raster order is only its corner.
    """
    if maps.dim() != 3 or masks.dim() != 3 or maps.shape[0] != masks.shape[0]:
        raise ValueError(
            f"maps and masks must be (N, H, W) with the same N; got {tuple(maps.shape)} and {tuple(masks.shape)}"
        )
    masks = masks.bool()
    if maps.shape[-2:] != masks.shape[-2:]:
        maps = F.interpolate(maps[:, None].float(), size=masks.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    has_subject = torch.ones(len(masks), dtype=torch.bool, device=masks.device) if subjects is None else subjects
    has_subject = has_subject.to(masks.device).bool()
    codes = invalid_codes(maps, masks, has_subject)
    valid = codes == VALID
    measured = valid & has_subject
    heat = torch.where(valid[:, None, None], maps.float().clamp_min(0), 0).flatten(1)
    subject = masks.flatten(1)
    subject_f = subject.float()

    energy = heat.sum(dim=1)
    subject_share = (heat * subject_f).sum(dim=1) / energy.clamp_min(torch.finfo(heat.dtype).tiny)
    subject_area = subject_f.mean(dim=1)
    focus_lift = subject_share / subject_area.clamp_min(torch.finfo(heat.dtype).tiny)

    # Top-K pixels with K = subject size: sort once, count subject pixels among the first K.
    order = torch.sort(heat, dim=1, descending=True, stable=True).indices
    hits_in_order = torch.gather(subject_f, 1, order).cumsum(dim=1)
    k = subject.sum(dim=1)
    rank_accuracy = torch.gather(hits_in_order, 1, (k - 1).clamp_min(0)[:, None])[:, 0] / k.clamp_min(1)

    peak = heat.amax(dim=1, keepdim=True)
    pointing_hit = ((heat == peak) & _dilate(masks, pointing_tolerance).flatten(1)).any(dim=1)

    hot = heat >= iou_threshold * peak
    iou = (hot & subject).sum(dim=1) / (hot | subject).sum(dim=1).clamp_min(1)

    background_reliant = (focus_lift < reliance_threshold).float()
    # mask-free: needs only a usable heatmap (a mask fault of a sample with a subject does not matter)
    heat_ok = invalid_codes(maps, masks, torch.zeros_like(has_subject)) == VALID
    finite_maps = torch.where(heat_ok[:, None, None], maps.float().clamp_min(0), 1.0)

    nan = torch.tensor(float("nan"), device=heat.device)
    scores = {
        "subject_share": subject_share,
        "subject_area": subject_area,
        "focus_lift": focus_lift,
        "rank_accuracy": rank_accuracy,
        "pointing_hit": pointing_hit,
        "iou": iou.float(),
        "background_reliant": background_reliant,
    }
    # subject_area is a fact of the mask, defined for every sample with one; the rest needs a valid pair.
    scores = {
        name: torch.where(has_subject, value.float(), nan)
        if name == "subject_area"
        else torch.where(measured, value.float(), nan)
        for name, value in scores.items()
    }
    scores["border_share"] = torch.where(heat_ok, border_share(finite_maps, band), nan)
    scores["invalid"] = codes
    return scores


def reasons(codes: torch.Tensor) -> list[str]:
    """Human-readable reason per sample ('' for valid ones)."""
    return [INVALID_REASONS.get(int(c), "") for c in codes.tolist()]
