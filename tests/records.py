"""Synthetic per-sample records in the shape of ``AuditResult.samples`` (one method)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def samples(
    groups: dict[str, int],
    *,
    share: dict[str, float] | None = None,
    accuracy: dict[str, float] | None = None,
    attribute: str = "skin_tone",
    invalid_rate: float = 0.0,
    seed: int = 0,
    classes: tuple[str, ...] = ("circle", "square", "cross"),
) -> pd.DataFrame:
    """``groups``: rows per value of ``attribute``. subject_share ~ Uniform(mean ± 0.2) per group
    (default mean 0.4), correct ~ Bernoulli(accuracy) (default 0.8), a ``site`` attribute A/B
    independent of everything, ``classes`` (default 3), ``invalid_rate`` of rows invalid (metrics NaN)."""
    rng = np.random.default_rng(seed)
    names = np.array(classes, dtype=object)
    k = len(classes)
    values = np.concatenate([[g] * n for g, n in groups.items()])
    n = len(values)
    mean = np.array([(share or {}).get(g, 0.4) for g in values])
    p_correct = np.array([(accuracy or {}).get(g, 0.8) for g in values])
    subject_share = mean + rng.uniform(-0.2, 0.2, n)
    subject_area = rng.uniform(0.2, 0.5, n)
    label = rng.integers(0, k, n)
    correct = rng.random(n) < p_correct
    pred = np.where(correct, label, (label + 1) % k)
    status = np.where(rng.random(n) < invalid_rate, "invalid", "ok")
    focus_lift = subject_share / subject_area
    frame = pd.DataFrame(
        {
            "id": [f"s{i:05d}" for i in range(n)],
            "image": [f"images/{i:05d}.png" for i in range(n)],
            "method": "gradcam",
            "label": label,
            "label_name": names[label],
            "pred": pd.array(pred, dtype="Int64"),
            "pred_name": names[pred],
            "correct": pd.array(correct, dtype="boolean"),
            "confidence": rng.random(n),
            "target": pd.array(pred, dtype="Int64"),
            "status": status,
            "reason": np.where(status == "ok", "", "empty subject mask"),
            "note": "",
            "subject_share": subject_share,
            "subject_area": subject_area,
            "focus_lift": focus_lift,
            "rank_accuracy": subject_share,
            "pointing_hit": (rng.random(n) < subject_share).astype(float),
            "iou": subject_share / 2,
            "background_reliant": (focus_lift < 1).astype(float),
            "border_share": rng.uniform(0.5, 2.0, n),
            "has_subject": pd.array(np.ones(n, dtype=bool), dtype="boolean"),
            attribute: values,
            "site": rng.choice(["A", "B"], n),
        }
    )
    metrics = [
        "subject_share",
        "focus_lift",
        "rank_accuracy",
        "pointing_hit",
        "iou",
        "background_reliant",
        "border_share",
    ]
    frame.loc[status != "ok", metrics] = np.nan
    return frame


def gallery(frame: pd.DataFrame, size: int = 4, pixels: int = 48, seed: int = 0):
    """A Gallery over the valid rows of ``frame`` with drawn exemplars: a disc-shaped subject of
    the row's subject_area on a striped background, heat split between subject and background
    in the row's subject_share."""
    from auditcam.run.gallery import Exemplar, Gallery

    rng = np.random.default_rng(seed)
    kept = Gallery(size=size)
    yy, xx = np.mgrid[:pixels, :pixels]
    stripes = ((xx // 4) % 2).astype(np.uint8)
    for row in frame[frame["status"] == "ok"].to_dict("records"):
        radius = max(2.0, pixels * float(np.sqrt(row["subject_area"] / np.pi)))
        cy, cx = rng.uniform(radius, pixels - radius, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2

        def make(row=row, mask=mask):
            image = np.stack([stripes * 90 + 60, stripes * 40 + 100, np.full_like(stripes, 80)], axis=-1)
            image[mask] = (230, 120, 40)
            share = float(np.clip(row["subject_share"], 0, 1))
            heat = np.where(mask, share / mask.sum(), (1 - share) / (~mask).sum()).astype(np.float32)
            return Exemplar(record=dict(row), image=image.astype(np.uint8), heatmap=heat / heat.max(), mask=mask)

        kept.offer(row["subject_share"], make)
    return kept


def audit_result(
    frame: pd.DataFrame, checks, options, attributes=("skin_tone", "site"), name: str = "model", exemplars=None
):
    """An AuditResult over synthetic records (no model run): for the report views; ``exemplars``
    is its Gallery (default: empty)."""
    from auditcam.result import AuditResult
    from auditcam.run.gallery import Gallery
    from auditcam.stats.analysis import analyse
    from auditcam.stats.checks import evaluate_checks

    analysis = analyse(frame, attributes, options)
    meta = {
        "name": name,
        "created": "2026-01-02T03:04:05+00:00",
        "versions": {"auditcam": "0.0", "torch": "0.0", "torchvision": "0.0", "python": "3.11"},
        "model": {"spec": "tests:model", "weights": "w.pt", "weights_sha256": "0" * 64},
        "dataset": {"source": "synthetic.csv", "n_samples": len(frame), "attributes": list(attributes)},
        "classes": list(dict.fromkeys(frame.sort_values("label")["label_name"].astype(str))),
        "methods": ["gradcam"],
        "layer": "features",
        "target": "pred",
        "upsampling": "bilinear",
        "reliance_threshold": 1.0,
        "preprocessing": {},
        "checks": checks.to_dict(),
        "analysis": options.to_dict(),
    }
    return AuditResult(
        samples=frame,
        checks=tuple(evaluate_checks(analysis, checks)),
        analyses={"gradcam": analysis},
        gallery=Gallery(size=0) if exemplars is None else exemplars,
        meta=meta,
    )
