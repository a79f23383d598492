"""The probes an audit's settings ask for, run after the heatmaps: the counterfactual test, the
sanity check (each with its check) and the gallery exemplars' feature-map grids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from auditcam.config import AnalysisOptions, AuditSettings, Checks
from auditcam.run.gallery import Gallery


def beyond_heatmaps(
    model: nn.Module,
    dataset: Any,
    gallery: Gallery,
    settings: AuditSettings,
    *,
    donors: Any,
    method: str,
    layer: str | None,
    checks: Checks,
    options: AnalysisOptions,
    classes: Sequence[str] | None,
    batch_size: int,
    num_workers: int | None,
    progress: bool,
) -> dict[str, Any]:
    """AuditResult fields (``counterfactual``, ``sanity``, ``featuremaps``) plus ``checks``;
    ``donors``: the dataset the swapped-in backgrounds come from (None: ``dataset``); ``method``
    and ``layer``: the explained ones that the sanity check and the feature maps use."""
    from auditcam.probes.counterfactual import BG_GAP, CounterfactualOptions, run_counterfactual
    from auditcam.probes.featuremaps import exemplar_grids
    from auditcam.probes.sanity import SanityOptions, run_sanity
    from auditcam.stats.checks import bg_gap_check, sanity_check

    out: dict[str, Any] = {"checks": []}
    if settings.counterfactual:
        cf_options = CounterfactualOptions(
            donors=donors,
            fill=settings.bg_fill,
            match_groups=settings.bg_match_groups,
            samples=settings.counterfactual_samples,
        )
        cf = run_counterfactual(
            model,
            dataset,
            cf_options,
            analysis=options,
            classes=classes,
            batch_size=batch_size,
            num_workers=num_workers,
            progress=progress,
        )
        out["counterfactual"] = cf
        worst = cf.largest_group_gap()
        detail = "" if worst is None else f"largest in {worst['dimension']}={worst['group']}: {worst['value']:.3f}"
        out["checks"].append(bg_gap_check(cf.estimate(BG_GAP), checks, options, detail))
    if settings.sanity:
        result = run_sanity(
            model,
            dataset,
            SanityOptions(samples=settings.sanity_samples, max_stages=settings.sanity_stages),
            method=method,
            layer=layer,
            target=settings.target,
            analysis=options,
            batch_size=batch_size,
        )
        out["sanity"] = result
        final = result.stages[-1].name
        out["checks"].append(sanity_check(result.final, checks, options, f"after randomising down to {final}"))
    channels = settings.featuremap_channels
    if channels > 0 and layer is not None:
        shown = list({e.record["id"]: e for e in [*gallery.background_reliant, *gallery.subject_focused]}.values())
        out["featuremaps"] = exemplar_grids(model, shown, dataset.preprocessing, layer, channels)
    out["checks"] = [c for c in out["checks"] if c is not None]
    return out
