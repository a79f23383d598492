"""Template context of the report's optional sections: the counterfactual background test, the
sanity check of the explanations and the exemplars' feature maps. Each is None when it did not
run; pictures become PNG data URIs here, so the templates only lay things out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from auditcam.report import figures

if TYPE_CHECKING:
    from auditcam.result import AuditResult

THUMBNAIL = 112  # largest stored side of the small pictures, pixels; smaller ones are enlarged by CSS


def _check(summary: Mapping[str, Any], prefix: str) -> dict[str, Any] | None:
    return next((c for c in summary["checks"] if c["name"].startswith(prefix)), None)


def _small(picture: np.ndarray) -> np.ndarray:
    """Shrink to :data:`THUMBNAIL` if larger; never enlarge (that would only grow the page)."""
    return picture if max(picture.shape[:2]) <= THUMBNAIL else figures.resized(picture, THUMBNAIL)


def _grey(heatmap: np.ndarray) -> np.ndarray:
    return np.repeat((np.clip(heatmap, 0, 1) * 255 + 0.5).astype(np.uint8)[:, :, None], 3, axis=2)


def counterfactual(result: AuditResult, summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """Accuracy per background variant, the background-following rate, BG-gap (and whether the
    donors let it show anything) and flip rates per breakdown, the matched attributes, the two
    checks and a few examples."""
    from auditcam.probes.counterfactual import VARIANT_HELP, VARIANTS

    test = result.counterfactual
    if test is None:
        return None
    data = summary["counterfactual"]
    examples = [
        {
            "id": example["id"],
            "label_name": example["label_name"],
            "panels": [
                {
                    "variant": variant,
                    "image": figures.png_data_uri(_small(example["images"][k])),
                    "pred": example["preds"][k],
                    "correct": example["correct"][k],
                }
                for k, variant in enumerate(VARIANTS)
            ],
        }
        for example in test.examples
    ]
    return {
        "settings": data["settings"],
        "matched": data["matched"],
        "information": data["bg_gap_informative"],
        "variants": [{"key": v, "help": VARIANT_HELP[v]} for v in VARIANTS],
        "status": data["status"],
        "overall": data["overall"],
        "by_class": data["by_class"],
        "by_group": data["by_group"],
        "checks": [c for c in (_check(summary, "background_following"), _check(summary, "bg_gap")) if c is not None],
        "examples": examples,
    }


def sanity(result: AuditResult, summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """The cascade table, the verdict and the maps of a few samples as the layers go random."""
    check = result.sanity
    if check is None:
        return None
    data = summary["sanity"]
    stages = data["stages"]
    examples = []
    for example in check.examples:
        picture = example["picture"]
        titles = ["original", *(f"down to {s['layer']}" for s in stages)]
        panels = [
            {
                "title": title,
                "image": figures.png_data_uri(
                    figures.overlay(picture, heat, target=min(THUMBNAIL, max(picture.shape[:2])))
                    if picture is not None
                    else _small(_grey(heat))
                ),
            }
            for title, heat in zip(titles, example["maps"], strict=True)
        ]
        examples.append({"id": example["id"], "panels": panels})
    gate = _check(summary, "sanity:")
    return {
        "settings": data["settings"],
        "stages": stages,
        "final": data["final_spearman"],
        "check": gate,
        "failed": gate is not None and gate["outcome"] == "fail",
        "examples": examples,
    }


def featuremaps(result: AuditResult) -> dict[str, Any] | None:
    """Each exemplar's picture beside the grid of the explained layer's most active channels."""
    grids = result.featuremaps
    if not grids:
        return None
    first = grids[0]
    return {
        "layer": first.layer,
        "shape": " × ".join(map(str, first.shape)),
        "cards": [
            {
                "record": grid.record,
                "picture": figures.png_data_uri(_small(grid.picture)),
                "grid": figures.png_data_uri(grid.grid),
                "channels": ", ".join(map(str, grid.channels)),
            }
            for grid in grids
        ],
    }


def strategies(result: AuditResult, summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """Each class's strategies as mean-heatmap tiles with their numbers, exemplars and the
    occlusion result; the classes not clustered and everything not measured, with why."""
    found = result.strategies
    if found is None:
        return None
    cards = []
    for strategy in found.discovery.strategies:
        mean_map = strategy.mean_map / max(float(strategy.mean_map.max()), 1e-12)
        cards.append(
            {
                **strategy.to_dict(),
                "tile": figures.png_data_uri(figures.resized(figures.heat_colours(mean_map), THUMBNAIL // 2)),
                "exemplars": [
                    {"id": sample, "image": figures.png_data_uri(_small(picture))}
                    for sample, picture in found.pictures.get(strategy.id, [])
                ],
            }
        )
    return {
        "method": found.method,
        "classes": found.discovery.classes,
        "cards": cards,
        "not_measured": found.not_measured,
        "check": _check(summary, "location_shortcut"),
    }


def sections(result: AuditResult, summary: Mapping[str, Any]) -> dict[str, Any]:
    """The optional sections' contexts by template key (None: the section is left out); their
    numbers from ``summary`` (the result's, as written), their pictures from the result."""
    return {
        "strategies": strategies(result, summary),
        "counterfactual": counterfactual(result, summary),
        "sanity": sanity(result, summary),
        "featuremaps": featuremaps(result),
    }
