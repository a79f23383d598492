"""Subject-versus-background metrics of heatmaps, vectorised over a batch (pure tensor math).

``H`` is a heatmap clipped at 0, ``M`` the boolean subject mask, both (N, H, W). Heatmaps at a
different resolution from the masks are resized bilinearly to the mask size first.

A sample whose mask is empty or covers the whole image, or whose heatmap is all zero or has a
non-finite value, is *invalid*: its metrics are NaN (never 0) and ``invalid`` holds a code
whose reason is ``INVALID_REASONS[code]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

METRICS = ("subject_share", "subject_area", "focus_lift", "rank_accuracy", "pointing_hit", "iou", "background_reliant")

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


def invalid_codes(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per-sample code: 0 valid, else a key of :data:`INVALID_REASONS` (first fault wins)."""
    area = masks.flatten(1).float().mean(dim=1)
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
) -> dict[str, torch.Tensor]:
    """Score heatmaps ``maps`` (N, H, W) against boolean subject ``masks`` (N, H', W').

    Returns float tensors (N,) for every name in :data:`METRICS` (NaN where invalid, except
    subject_area which every mask has; the
    boolean metrics pointing_hit and background_reliant as 0./1.) and ``invalid`` (int8 codes).
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
    codes = invalid_codes(maps, masks)
    valid = codes == VALID
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
    # subject_area is a fact of the mask, defined for every sample; the rest needs a valid pair.
    scores = {
        name: value.float() if name == "subject_area" else torch.where(valid, value.float(), nan)
        for name, value in scores.items()
    }
    scores["invalid"] = codes
    return scores


def reasons(codes: torch.Tensor) -> list[str]:
    """Human-readable reason per sample ('' for valid ones)."""
    return [INVALID_REASONS.get(int(c), "") for c in codes.tolist()]
