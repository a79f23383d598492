"""The probes an audit's settings ask for, run after the heatmaps: the counterfactual test, the
sanity check, the strategies' location-shortcut test (each with its check) and the gallery
exemplars' feature-map grids.

Under a multi-label audit the strategies' location test decides a flip on the explained label
(its probability crossing the threshold), the sanity check explains one label per sample, and the
counterfactual test, which asks whether the one predicted class follows the background's class,
is not applicable (:data:`SINGLE_LABEL_PROBE`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from auditcam.config import AnalysisOptions, AuditSettings, Checks
from auditcam.run.gallery import Gallery

SINGLE_LABEL_PROBE = (
    "not applicable (single-label probe): the background swap asks whether the one predicted class "
    "follows the donor image's class, and a multi-label model predicts a set of labels"
)


def beyond_heatmaps(
    model: nn.Module,
    dataset: Any,
    gallery: Gallery,
    settings: AuditSettings,
    *,
    samples: Any,
    donors: Any,
    subjects: bool,
    method: str,
    layer: str | None,
    checks: Checks,
    options: AnalysisOptions,
    classes: Sequence[str] | None,
    batch_size: int,
    num_workers: int | None,
    progress: bool,
) -> dict[str, Any]:
    """AuditResult fields (``counterfactual``, ``sanity``, ``featuremaps``, ``strategies``) plus
    ``checks``; ``samples``: the run's samples.parquet (the strategies cluster its heatmap grids);
    ``donors``: the dataset the swapped-in backgrounds come from (None: ``dataset``); ``method``
    and ``layer``: the explained ones that the sanity check and the feature maps use. Without
    ``subjects`` (no sample has one) the background test cannot move any subject: its checks are
    not applicable."""
    from auditcam.probes.counterfactual import BG_GAP, FOLLOWING, CounterfactualOptions, run_counterfactual
    from auditcam.probes.featuremaps import exemplar_grids
    from auditcam.probes.occlusion import OcclusionOptions, run_strategies
    from auditcam.probes.sanity import SanityOptions, run_sanity
    from auditcam.stats.analysis import NO_SUBJECTS
    from auditcam.stats.checks import background_following_check, bg_gap_check, not_applicable, sanity_check
    from auditcam.stats.estimates import Estimate

    out: dict[str, Any] = {"checks": []}
    multilabel = settings.task == "multilabel"
    if settings.counterfactual and (multilabel or not subjects):
        following = Estimate(FOLLOWING, None, None, 0, options.confidence, sufficient=False)
        gap = Estimate(BG_GAP, None, None, 0, options.confidence, sufficient=False)
        why = SINGLE_LABEL_PROBE if multilabel else f"{NO_SUBJECTS}: swapping backgrounds needs subject masks"
        for check in (background_following_check(following, checks, options), bg_gap_check(gap, checks, options)):
            if check is not None:
                out["checks"].append(not_applicable(check, why))
    elif settings.counterfactual:
        cf_options = CounterfactualOptions(
            donors=donors,
            fill=settings.bg_fill,
            match=settings.bg_match,
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
        following = background_following_check(cf.estimate(FOLLOWING), checks, options, _largest(cf, FOLLOWING))
        reason = "" if cf.bg_gap_informative else cf.information["reason"]
        out["checks"] += [following, bg_gap_check(cf.estimate(BG_GAP), checks, options, _largest(cf, BG_GAP), reason)]
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
            multilabel=multilabel,
        )
        out["sanity"] = result
        final = result.stages[-1].name
        out["checks"].append(sanity_check(result.final, checks, options, f"after randomising down to {final}"))
    channels = settings.featuremap_channels
    if channels > 0 and layer is not None:
        shown = list({e.record["id"]: e for e in [*gallery.background_reliant, *gallery.subject_focused]}.values())
        out["featuremaps"] = exemplar_grids(model, shown, dataset.preprocessing, layer, channels)
    if settings.strategies:
        out["strategies"], location = run_strategies(
            model,
            dataset,
            samples,
            method=method,
            classes=classes,
            checks=checks,
            analysis=options,
            batch_size=batch_size,
            threshold=settings.threshold if multilabel else None,
            occlusion=OcclusionOptions(samples=settings.location_samples, seed=options.seed),
        )
        out["checks"] = [c for c in [*out["checks"], location] if c is not None]
    return out


def _largest(cf: Any, statistic: str) -> str:
    """Where a counterfactual statistic is largest among the groups with enough samples."""
    worst = cf.largest_group_gap(statistic)
    return "" if worst is None else f"largest in {worst['dimension']}={worst['group']}: {worst['value']:.3f}"
