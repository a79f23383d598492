"""Counterfactual background tests: does the prediction follow the subject or the background?

The variants of the ImageNet-9 backgrounds protocol (Xiao et al., 2020, "Noise or Signal: The
Role of Image Backgrounds in Object Recognition"), built from the subject masks:

- ``original``: the image as audited;
- ``only_fg``: the subject kept, everything else set to a constant :data:`FILLS` colour;
- ``no_fg``: the subject removed: its bounding box (grown by ``margin``) refilled with tiles of
  the image's own background (the paper's Only-BG-T). A constant-filled hole would keep the
  subject's silhouette, which alone can give the class away; a box is the same for every class;
- ``mixed_same``: the subject pasted, at its own position, onto the background of another
  sample *of the same class* (that donor's own subject box refilled the same way);
- ``mixed_rand``: the same onto the background of a random sample *of another class* (the
  paper draws a random class; excluding the own class keeps the contrast clean when there are
  few classes).

The gate is the **background-following rate**, valid for any donors: over the ``mixed_rand``
swaps where the model predicts the donor image differently from the sample, the share whose
prediction moves to the donor's (:func:`background_following`). A model that reads the subject
keeps its prediction (pasting artefacts move 0.5 % on the demo's balanced split), one that reads
the background takes the donor's (100 % there); the default threshold
:data:`auditcam.config.DEFAULT_MAX_BACKGROUND_FOLLOWING` sits between. The flip rate, the share
of predictions that change at all (original vs a mixed variant), is reported beside it.

BG-gap = accuracy(mixed_same) − accuracy(mixed_rand), paired over the samples where both are
valid: how much a class-typical background helps. It shows reliance only when the donors'
backgrounds carry class information; when the model classifies their subject-removed images at
chance (:func:`background_information`), BG-gap is reported as not informative on these donors.

Backgrounds come from the audited dataset unless ``donors`` names another labelled dataset
(e.g. in-distribution data where backgrounds follow the usual correlation with the class). By
default donors are drawn from any sample; ``match`` names the group attributes a donor must
share with the sample. Donors are drawn with a seeded generator; a sample without a usable donor
gets the variant's status ``invalid`` and a reason, never a silent drop.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from auditcam.cam import preserved
from auditcam.config import AnalysisOptions
from auditcam.data import as_audit_dataset, default_workers
from auditcam.errors import InputError
from auditcam.files import ROWS, Parts
from auditcam.models import Preprocessing, logits_of, model_device
from auditcam.stats.analysis import ALL, CLASS, OVERALL
from auditcam.stats.estimates import Estimate, Estimates, breakdowns, ratio_estimates

ORIGINAL, ONLY_FG, NO_FG, MIXED_SAME, MIXED_RAND = "original", "only_fg", "no_fg", "mixed_same", "mixed_rand"
VARIANTS = (ORIGINAL, ONLY_FG, NO_FG, MIXED_SAME, MIXED_RAND)
VARIANT_HELP = {
    ORIGINAL: "the image as audited",
    ONLY_FG: "subject only: the background set to a constant colour",
    NO_FG: "subject removed: its box refilled with tiles of the image's own background",
    MIXED_SAME: "subject on the background of another sample of the same class",
    MIXED_RAND: "subject on the background of a random sample of another class",
}
FILLS = ("mean", "black")  # mean: the normalisation mean (0 in model input); black: 0 in pixels
STATISTICS = (
    *(f"accuracy_{v}" for v in VARIANTS),
    "bg_gap",
    "flip_rate_mixed_same",
    "flip_rate_mixed_rand",
    "background_following_rate",
)
BG_GAP = "bg_gap"
FOLLOWING = "background_following_rate"
DONOR_VIEWS = 4  # per sample: the mixed_same donor's image and background, the mixed_rand donor's
MAX_EXAMPLES = 4

NO_SUBJECT = "empty subject mask: no subject to keep or move"
NO_BACKGROUND = "the subject's box leaves no background to tile"
NO_SAME_DONOR = "no other sample of class {label} to take a background from{group}"
NO_RAND_DONOR = "no sample of another class to take a background from{group}"
DONOR_UNREADABLE = "background donor {id} unreadable: {reason}"
DONOR_NO_BACKGROUND = "background donor {id} has no background to tile"
DONOR_SIZE = "background donor {id} is {donor} (HxW) but the sample is {sample}"
OTHER_CLASSES = "the background donors' classes ({donors}) differ from the audited dataset's ({audited})"
UNKNOWN_MATCH = "counterfactual bg_match {attribute!r} is not a group attribute of {where} (attributes: {attributes})"
AT_CHANCE = (
    "not informative on these donors: the model classifies their subject-removed backgrounds at chance "
    "(accuracy {accuracy}, CI {low} to {high}; chance {chance:.3f}, n = {n}), so a same-class background cannot "
    "help it and BG-gap cannot show reliance; the background-following rate gates instead. For a BG-gap that can, "
    "pass --bg-donors with a split where backgrounds follow the class"
)
NO_DONOR_BACKGROUND = "not informative: no donor background could be classified"


@dataclass(frozen=True)
class CounterfactualOptions:
    """How the background variants are built.

    ``donors``: a labelled dataset to take backgrounds from (default: the audited one);
    ``fill``: the constant of ``only_fg``, one of :data:`FILLS`; ``match``: group attributes a
    donor must share with the sample (default none: any sample of the right class);
    ``margin``: the subject box grows by this share of the image's longer side (at least one
    pixel) before it is refilled, to take mask halos along;
    ``samples``: test a seeded random subset of this many samples (None: all of them; donors
    are still drawn from the whole donor dataset).
    """

    donors: Dataset | None = None
    fill: str = "mean"
    match: tuple[str, ...] = ()
    margin: float = 0.02
    samples: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "match", tuple(dict.fromkeys(self.match)))
        if self.fill not in FILLS:
            raise InputError(f"counterfactual fill {self.fill!r}: choose from {', '.join(FILLS)}")
        if not 0 <= self.margin < 0.5:
            raise InputError(f"counterfactual margin must be in [0, 0.5), got {self.margin}")
        if self.samples is not None and self.samples < 1:
            raise InputError(f"counterfactual samples must be at least 1, got {self.samples}")


# ---------------------------------------------------------------------------------------------
# the variants: pure tensor operations on one model-input image (3, H, W) and its mask (H, W)


def subject_box(mask: torch.Tensor, margin: int = 0) -> tuple[int, int, int, int] | None:
    """``(y0, y1, x0, x1)`` (end exclusive) of the subject, grown by ``margin`` pixels and clipped
    to the image; None for an empty mask."""
    rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
    if rows.numel() == 0:
        return None
    h, w = mask.shape
    return (
        max(0, int(rows[0]) - margin),
        min(h, int(rows[-1]) + 1 + margin),
        max(0, int(cols[0]) - margin),
        min(w, int(cols[-1]) + 1 + margin),
    )


def tile_background(image: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor | None:
    """``image`` with ``box`` refilled from the largest subject-free strip beside it (above,
    below, left or right of the box, across the whole image), tiled periodically: a strip above
    or below keeps each column's pixels (vertical structure continues), one left or right keeps
    each row's. None when the box covers the image."""
    y0, y1, x0, x1 = box
    h, w = image.shape[-2:]
    strips = {"top": y0 * w, "bottom": (h - y1) * w, "left": x0 * h, "right": (w - x1) * h}
    side = max(strips, key=strips.__getitem__)
    if strips[side] == 0:
        return None
    out = image.clone()
    if side in ("top", "bottom"):
        ys = torch.arange(y0, y1)
        source = ys.remainder(y0) if side == "top" else y1 + (ys - y1).remainder(h - y1)
        out[:, y0:y1, x0:x1] = image[:, source, x0:x1]
    else:
        xs = torch.arange(x0, x1)
        source = xs.remainder(x0) if side == "left" else x1 + (xs - x1).remainder(w - x1)
        out[:, y0:y1, x0:x1] = image[:, y0:y1][:, :, source]
    return out


def fill_colour(preprocessing: Preprocessing, fill: str) -> torch.Tensor:
    """The ``only_fg`` background in model-input space, (3, 1, 1)."""
    pixel = torch.full((3, 1, 1), 0.0) if fill == "black" else torch.tensor(preprocessing.mean)[:, None, None]
    return preprocessing.normalise(pixel.float())


def margin_pixels(shape: Sequence[int], margin: float) -> int:
    """The box margin in pixels: ``margin`` of the longer side, at least one pixel (0 stays 0)."""
    return 0 if margin == 0 else max(1, round(margin * max(shape)))


@dataclass(frozen=True)
class Background:
    """A sample's image with its subject box refilled (None: no background), or why not."""

    image: torch.Tensor | None
    reason: str = ""


def background_of(image: torch.Tensor, mask: torch.Tensor, margin: int) -> Background:
    """The image without its subject: the subject's box (grown by ``margin``) tiled over."""
    box = subject_box(mask, margin)
    if box is None:
        return Background(image.clone())  # nothing to remove: the whole image is background
    filled = tile_background(image, box)
    return Background(filled, "" if filled is not None else NO_BACKGROUND)


def variants(
    image: torch.Tensor,
    mask: torch.Tensor,
    same: Background,
    rand: Background,
    fill: torch.Tensor,
    margin: int,
) -> tuple[torch.Tensor, list[str]]:
    """The five variants (5, 3, H, W) of a sample and, per variant, '' or why it is invalid
    (an invalid variant's image is the original, so the batch keeps its shape)."""
    reasons = [""] * len(VARIANTS)
    out = image.unsqueeze(0).repeat(len(VARIANTS), 1, 1, 1)
    if not mask.any():
        reasons[1:] = [NO_SUBJECT] * (len(VARIANTS) - 1)
        return out, reasons
    out[1] = torch.where(mask, image, fill.to(image.dtype))
    own = background_of(image, mask, margin)
    if own.image is None:
        reasons[2] = own.reason
    else:
        out[2] = own.image
    for k, donor in ((3, same), (4, rand)):  # donors come at the sample's size (see VariantDataset)
        if donor.image is None:
            reasons[k] = donor.reason
        else:
            out[k] = torch.where(mask, image, donor.image)
    return out, reasons


# ---------------------------------------------------------------------------------------------
# donors


def _group_text(names: Sequence[str], values: tuple) -> str:
    return "" if not names else " in group " + ", ".join(f"{n}={v}" for n, v in zip(names, values, strict=True))


def assign_donors(
    labels: np.ndarray,
    groups: Sequence[tuple],
    donor_labels: np.ndarray,
    donor_groups: Sequence[tuple],
    *,
    own: np.ndarray | None,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the index of a ``mixed_same`` donor (same label and group, never the sample
    itself: ``own`` is each sample's index among the donors when they are the audited samples)
    and of a ``mixed_rand`` donor (same group, another label), drawn uniformly with a seeded
    generator; -1 where there is none."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    same, rand = np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64)
    pools: dict[tuple, list[int]] = {}
    for j, key in enumerate(zip(donor_groups, donor_labels.tolist(), strict=True)):
        pools.setdefault(key, []).append(j)
    by_group: dict[tuple, np.ndarray] = {}
    for (group, _label), members in pools.items():
        by_group[group] = np.concatenate([by_group.get(group, np.zeros(0, dtype=np.int64)), members])
    targets: dict[tuple, list[int]] = {}
    for i, key in enumerate(zip(groups, labels.tolist(), strict=True)):
        targets.setdefault(key, []).append(i)
    for key in sorted(targets, key=repr):
        group = key[0]
        who = np.asarray(targets[key])
        pool = np.asarray(pools.get(key, []), dtype=np.int64)
        if own is not None:
            position = np.searchsorted(pool, own[who])  # each sample's own place in its pool
            if len(pool) > 1:
                draw = rng.integers(0, len(pool) - 1, size=len(who))
                same[who] = pool[draw + (draw >= position)]
        elif len(pool):
            same[who] = pool[rng.integers(0, len(pool), size=len(who))]
        others = np.setdiff1d(by_group.get(group, np.zeros(0, dtype=np.int64)), pool)
        if len(others):
            rand[who] = others[rng.integers(0, len(others), size=len(who))]
    return same, rand


def _catalogue(dataset: Any, attributes: Sequence[str]) -> tuple[np.ndarray, list[tuple]]:
    """Labels and group values of every sample, from the rows when the dataset has them (no
    decoding), else from its items."""
    rows = getattr(dataset, "rows", None)
    if rows is not None:
        pairs = [(r.label, tuple(str(r.attributes.get(a, "")) for a in attributes)) for r in rows]
    else:
        items = (dataset[i] for i in range(len(dataset)))
        pairs = [(int(it["label"]), tuple(str(it["attributes"].get(a, "")) for a in attributes)) for it in items]
    return np.asarray([p[0] for p in pairs], dtype=np.int64), [p[1] for p in pairs]


class VariantDataset(Dataset):
    """Item ``i``: sample ``indices[i]`` of ``dataset`` with its five variants built from its
    mask and its two background donors (read from ``donors``), and the donors' own images and
    backgrounds (``donor_views``, :data:`DONOR_VIEWS`, predicted too so that the following rate
    and BG-gap's informativeness can be computed); the work runs in DataLoader workers."""

    def __init__(
        self,
        dataset: Any,
        donors: Any,
        indices: np.ndarray,
        same: np.ndarray,
        rand: np.ndarray,
        missing: tuple[list[str], list[str]],
        *,
        donor_labels: np.ndarray,
        fill: torch.Tensor,
        margin: float,
    ) -> None:
        self.dataset, self.donors, self.indices = dataset, donors, indices
        self.same, self.rand, self.donor_labels = same, rand, donor_labels
        self.missing = missing
        self.fill, self.margin = fill, margin

    def __len__(self) -> int:
        return len(self.indices)

    def _donor(
        self, index: int, why_none: str, shape: torch.Size, margin: int
    ) -> tuple[Background, str | None, torch.Tensor | None]:
        """The donor's background, id and own image (None where it cannot be used)."""
        if index < 0:
            return Background(None, why_none), None, None
        item = self.donors[index]
        donor_id = str(item["id"])
        if "image" not in item:
            reason = DONOR_UNREADABLE.format(id=donor_id, reason=item.get("reason", ""))
            return Background(None, reason), donor_id, None
        if item["image"].shape != shape:
            size = "x".join(map(str, item["image"].shape[-2:]))
            reason = DONOR_SIZE.format(id=donor_id, donor=size, sample="x".join(map(str, shape[-2:])))
            return Background(None, reason), donor_id, None
        background = background_of(item["image"], item["mask"], margin)
        if background.image is None:
            return Background(None, DONOR_NO_BACKGROUND.format(id=donor_id)), donor_id, None
        return background, donor_id, item["image"]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[int(self.indices[index])]
        out = {k: item.get(k) for k in ("id", "image_path", "label", "attributes")}
        out.update(status=item.get("status", "ok"), reason=item.get("reason", ""), donors=(None, None))
        if "image" not in item:
            return out
        image, mask = item["image"], item["mask"]
        margin = margin_pixels(image.shape[-2:], self.margin)
        same, same_id, same_image = self._donor(int(self.same[index]), self.missing[0][index], image.shape, margin)
        rand, rand_id, rand_image = self._donor(int(self.rand[index]), self.missing[1][index], image.shape, margin)
        out["variants"], out["reasons"] = variants(image, mask, same, rand, self.fill, margin)
        out["donors"] = (same_id, rand_id)
        out["donor_labels"] = tuple(
            int(self.donor_labels[j]) if j >= 0 else None for j in (self.same[index], self.rand[index])
        )
        views = (same_image, same.image, rand_image, rand.image)  # an unusable view is the sample, unread
        out["donor_views"] = torch.stack([image if v is None else v for v in views])
        out["donor_valid"] = [v is not None for v in views]
        return out


def _collate(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return list(items)


# ---------------------------------------------------------------------------------------------
# the run


@dataclass(frozen=True)
class CounterfactualResult:
    """``samples``: one row per (sample, variant) with the prediction, the background donor and
    status/reason; ``estimates``: accuracy per variant, BG-gap and flip rates per breakdown
    with CIs (:class:`~auditcam.stats.estimates.Estimates`); ``examples``: a few
    samples' variants as displayable uint8 images with their predictions."""

    samples: pd.DataFrame
    estimates: Estimates
    settings: dict[str, Any]
    attributes: tuple[str, ...] = ()
    examples: tuple[dict[str, Any], ...] = field(default=())
    matched: tuple[str, ...] = ()
    information: dict[str, Any] = field(default_factory=dict)

    def estimate(self, statistic: str = BG_GAP, dimension: str = OVERALL, group: str = ALL) -> Estimate:
        """One estimate (value, ci, n, sufficient)."""
        return self.estimates[(dimension, group, statistic)]

    def largest_group_gap(self, statistic: str = BG_GAP) -> dict[str, Any] | None:
        """The group (of any attribute, with enough samples) with the largest ``statistic``, as
        an estimate row; None without such a group."""
        e = self.estimates.frame
        rows = e[(e["statistic"] == statistic) & e["sufficient"] & e["dimension"].isin(self.attributes)]
        rows = rows[rows["value"].notna()]
        return None if rows.empty else rows.loc[rows["value"].idxmax()].to_dict()

    def headline(self, statistic: str) -> dict[str, Any]:
        """One statistic overall (``value, ci, n, sufficient``), ``by_class`` and ``by_group``."""
        table = self.estimates.to_dict()
        pick = {d: {g: s[statistic] for g, s in groups.items()} for d, groups in table.items()}
        return {
            **pick[OVERALL][ALL],
            "by_class": pick[CLASS],
            "by_group": {a: pick[a] for a in self.attributes},
        }

    @property
    def bg_gap(self) -> dict[str, Any]:
        """The headline of ``summary.json``: BG-gap overall, per class and per group."""
        return self.headline(BG_GAP)

    @property
    def bg_gap_informative(self) -> bool:
        """Whether the donors' backgrounds carry class information for this model (else BG-gap
        cannot show reliance and its check is not applicable)."""
        return bool(self.information.get("informative", False))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready detail: settings, the matched attributes, counts per variant status, the
        background-following rate and flip rate (headlines), BG-gap's informativeness and every
        estimate per breakdown."""
        table = self.estimates.to_dict()
        status = self.samples.groupby(["variant", "status"]).size()
        return {
            "settings": self.settings,
            "matched": list(self.matched),
            "variants": {v: VARIANT_HELP[v] for v in VARIANTS},
            "status": {v: {s: int(n) for (w, s), n in status.items() if w == v} for v in VARIANTS},
            "background_following": self.headline(FOLLOWING),
            "flip_rate": self.headline(f"flip_rate_{MIXED_RAND}"),
            "bg_gap_informative": self.information,
            "overall": table[OVERALL][ALL],
            "by_class": table[CLASS],
            "by_group": {a: table[a] for a in self.attributes},
        }

    def to_parts(self) -> Parts:
        """For the bundle: the per-variant rows (``counterfactual.parquet``), the estimates, the
        settings and the examples (their pictures as arrays)."""
        examples = [{k: v for k, v in e.items() if k != "images"} for e in self.examples]
        return Parts(
            {
                "settings": self.settings,
                "attributes": list(self.attributes),
                "examples": examples,
                "matched": list(self.matched),
                "information": self.information,
                "confidence": self.estimates.confidence,
            },
            {f"{i}/images": e["images"] for i, e in enumerate(self.examples)},
            {ROWS: self.samples, "estimates": self.estimates.frame},
        )

    @classmethod
    def from_parts(cls, parts: Parts) -> CounterfactualResult:
        """The result :meth:`to_parts` took apart."""
        fields = parts.fields
        examples = tuple({**e, "images": parts.arrays[f"{i}/images"]} for i, e in enumerate(fields["examples"]))
        return cls(
            parts.tables[ROWS],
            Estimates(parts.tables["estimates"], fields["confidence"]),
            fields["settings"],
            tuple(fields["attributes"]),
            examples,
            tuple(fields["matched"]),
            fields["information"],
        )


def background_following(
    original: np.ndarray, swapped: np.ndarray, donor: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per swap: 1.0 where the prediction on the swapped image equals the model's prediction
    for the donor image, and whether the swap counts: ``valid`` and the donor image predicted
    differently from the sample's original (otherwise a move to the donor's class cannot show).
    The mean over the counted swaps is the background-following rate."""
    counted = np.asarray(valid, dtype=bool) & (np.asarray(donor) != np.asarray(original))
    return (np.asarray(swapped) == np.asarray(donor)).astype(float), counted


def chance_accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    """Accuracy expected if the predictions were independent of the labels, with their observed
    frequencies: sum over classes of P(pred = k) P(label = k) (Cohen's expected agreement)."""
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    if len(labels) == 0:
        return math.nan
    size = int(max(labels.max(), preds.max())) + 1
    return float(np.bincount(labels, minlength=size) @ np.bincount(preds, minlength=size)) / len(labels) ** 2


def background_information(labels: np.ndarray, preds: np.ndarray, options: AnalysisOptions) -> dict[str, Any]:
    """Do the donors' backgrounds carry class information for the model? ``labels``: each
    donor's class, ``preds``: the model's prediction for its subject-removed background. Yes
    when the accuracy's CI lies above :func:`chance_accuracy`; else BG-gap cannot show reliance."""
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    if len(labels) == 0:
        return {"informative": False, "accuracy": None, "chance": None, "reason": NO_DONOR_BACKGROUND}
    overall = {OVERALL: ([ALL], np.zeros(len(labels), dtype=np.int64))}
    estimates = ratio_estimates(
        {"accuracy": labels == preds}, {"accuracy": np.ones(len(labels), bool)}, overall, options
    )
    accuracy = estimates[(OVERALL, ALL, "accuracy")].to_dict()
    chance = chance_accuracy(labels, preds)
    low, high = accuracy["ci"] if accuracy["ci"] is not None else (accuracy["value"], accuracy["value"])
    informative = bool(low > chance)
    reason = (
        ""
        if informative
        else AT_CHANCE.format(
            accuracy=f"{accuracy['value']:.3f}", low=f"{low:.3f}", high=f"{high:.3f}", chance=chance, n=accuracy["n"]
        )
    )
    return {"informative": informative, "accuracy": accuracy, "chance": chance, "reason": reason}


def donor_backgrounds(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per donor whose background was classified: ``donor``, ``donor_label``,
    ``donor_bg_pred`` (a donor drawn several times counts once)."""
    used = samples[samples["donor_bg_pred"].notna() & samples["donor_label"].notna()]
    return used[["donor", "donor_label", "donor_bg_pred"]].drop_duplicates("donor").reset_index(drop=True)


def estimate(samples: pd.DataFrame, attributes: Sequence[str], options: AnalysisOptions) -> Estimates:
    """Accuracy per variant, BG-gap (paired), flip rates and the background-following rate per
    breakdown, from the per (sample, variant) rows of :attr:`CounterfactualResult.samples`."""
    wide = samples.pivot(index="id", columns="variant", values=["pred", "correct", "status", "donor_pred"])
    first = samples[samples["variant"] == ORIGINAL].set_index("id").loc[wide.index].reset_index()
    valid = {v: (wide["status"][v] == "ok").to_numpy() & wide["pred"][v].notna().to_numpy() for v in VARIANTS}
    correct = {v: wide["correct"][v].fillna(False).astype(bool).to_numpy() for v in VARIANTS}
    pred = {v: wide["pred"][v].fillna(-1).astype(np.int64).to_numpy() for v in VARIANTS}
    values = {f"accuracy_{v}": correct[v].astype(float) for v in VARIANTS}
    counted = {f"accuracy_{v}": valid[v] for v in VARIANTS}
    values[BG_GAP] = correct[MIXED_SAME].astype(float) - correct[MIXED_RAND].astype(float)
    counted[BG_GAP] = valid[MIXED_SAME] & valid[MIXED_RAND]
    for v in (MIXED_SAME, MIXED_RAND):
        values[f"flip_rate_{v}"] = (pred[v] != pred[ORIGINAL]).astype(float)
        counted[f"flip_rate_{v}"] = valid[v] & valid[ORIGINAL]
    donor = wide["donor_pred"][MIXED_RAND]
    values[FOLLOWING], counted[FOLLOWING] = background_following(
        pred[ORIGINAL],
        pred[MIXED_RAND],
        donor.fillna(-1).astype(np.int64).to_numpy(),
        valid[MIXED_RAND] & valid[ORIGINAL] & donor.notna().to_numpy(),
    )
    return ratio_estimates(values, counted, breakdowns(first, attributes), options)


def _name(classes: Sequence[str] | None, label: int) -> str:
    return classes[label] if classes is not None and 0 <= label < len(classes) else str(label)


def _example(item: dict[str, Any], preds: list[int], classes: Sequence[str] | None, pre: Preprocessing) -> dict:
    """A sample's variants as displayable uint8 pictures (5, H, W, 3) with the predicted classes."""
    pictures = pre.to_uint8(item["variants"])
    label = int(item["label"])
    return {
        "id": str(item["id"]),
        "label_name": _name(classes, label),
        "images": pictures,
        "preds": [_name(classes, p) for p in preds],
        "correct": [p == label for p in preds],
    }


def run_counterfactual(
    model: nn.Module,
    dataset: Any,
    options: CounterfactualOptions | None = None,
    *,
    analysis: AnalysisOptions | None = None,
    classes: Sequence[str] | None = None,
    batch_size: int = 32,
    num_workers: int | None = 0,
    progress: bool = False,
) -> CounterfactualResult:
    """Predict every sample's five background variants and its donors' images with ``model``
    (left as it was found) and estimate accuracy per variant, BG-gap, flip rates and the
    background-following rate with seeded bootstrap CIs."""
    options = CounterfactualOptions() if options is None else options
    analysis = AnalysisOptions() if analysis is None else analysis
    dataset = as_audit_dataset(dataset)
    donors = dataset if options.donors is None else as_audit_dataset(options.donors)
    if donors is not dataset and donors.preprocessing != dataset.preprocessing:
        donors = donors.with_preprocessing(dataset.preprocessing)
    if donors.classes is not None and dataset.classes is not None and donors.classes != dataset.classes:
        raise InputError(OTHER_CLASSES.format(donors=", ".join(donors.classes), audited=", ".join(dataset.classes)))
    classes = dataset.classes or classes
    for attribute in options.match:
        for where, data in (("the audited data", dataset), ("the background donors", donors)):
            if attribute not in data.attributes:
                known = ", ".join(data.attributes) or "(none)"
                raise InputError(UNKNOWN_MATCH.format(attribute=attribute, where=where, attributes=known))
    shared = list(options.match)
    all_labels, all_groups = _catalogue(dataset, shared)
    indices = np.arange(len(dataset))
    if options.samples is not None and options.samples < len(dataset):
        picker = np.random.default_rng([analysis.seed, 1])  # a stream apart from the donors'
        indices = np.sort(picker.choice(len(dataset), size=options.samples, replace=False))
    labels, groups = all_labels[indices], [all_groups[i] for i in indices]
    donor_labels, donor_groups = (all_labels, all_groups) if donors is dataset else _catalogue(donors, shared)
    same, rand = assign_donors(
        labels, groups, donor_labels, donor_groups, own=indices if donors is dataset else None, seed=analysis.seed
    )

    missing = (
        [
            NO_SAME_DONOR.format(label=repr(_name(classes, int(lab))), group=_group_text(shared, g))
            for lab, g in zip(labels, groups, strict=True)
        ],
        [NO_RAND_DONOR.format(group=_group_text(shared, g)) for g in groups],
    )
    pre = dataset.preprocessing
    source = VariantDataset(
        dataset,
        donors,
        indices,
        same,
        rand,
        missing,
        donor_labels=donor_labels,
        fill=fill_colour(pre, options.fill),
        margin=options.margin,
    )
    workers = default_workers(len(source), batch_size) if num_workers is None else num_workers
    batches = DataLoader(source, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=_collate)
    device = model_device(model)
    records: list[dict[str, Any]] = []
    examples: list[dict[str, Any]] = []
    bar = tqdm(total=len(source), unit="img", desc="backgrounds", disable=not progress, file=sys.stderr)
    with preserved(model), torch.no_grad(), bar:
        for items in batches:
            readable = [it for it in items if "variants" in it]
            if readable:
                per_variant = [torch.stack([it["variants"][k] for it in readable]) for k in range(len(VARIANTS))]
                probs = torch.stack(
                    [logits_of(model(b.to(device))).float().softmax(1) for b in per_variant], dim=1
                ).cpu()
                confidence, pred = probs.max(dim=2)
                views = _donor_predictions(model, readable, device)
            done = iter(range(len(readable)))
            for item in items:
                j = next(done) if "variants" in item else None
                prediction = None if j is None else (pred[j].tolist(), confidence[j].tolist(), views[j])
                records.extend(_records(item, prediction, classes))
                if prediction is not None and len(examples) < MAX_EXAMPLES and not any(item["reasons"]):
                    examples.append(_example(item, prediction[0], classes, pre))
            bar.update(len(items))
    samples = _frame(records, dataset.attributes)
    settings = {
        "donors": "the audited dataset" if donors is dataset else str(donors.source),
        "fill": options.fill,
        "matched": list(shared),
        "margin": options.margin,
        "samples": len(indices),
        "seed": analysis.seed,
    }
    backgrounds = donor_backgrounds(samples)
    return CounterfactualResult(
        samples=samples,
        estimates=estimate(samples, dataset.attributes, analysis),
        settings=settings,
        attributes=tuple(dataset.attributes),
        examples=tuple(examples),
        matched=tuple(shared),
        information=background_information(
            backgrounds["donor_label"].to_numpy(np.int64), backgrounds["donor_bg_pred"].to_numpy(np.int64), analysis
        ),
    )


def _donor_predictions(model: nn.Module, items: Sequence[dict[str, Any]], device: torch.device) -> list[list]:
    """Per item, the model's prediction for each of its :data:`DONOR_VIEWS` (None: unusable);
    only the usable views are run, one forward pass per view."""
    out: list[list] = [[None] * DONOR_VIEWS for _ in items]
    for k in range(DONOR_VIEWS):
        usable = [i for i, it in enumerate(items) if it["donor_valid"][k]]
        if usable:
            batch = torch.stack([items[i]["donor_views"][k] for i in usable]).to(device)
            for i, p in zip(usable, logits_of(model(batch)).argmax(1).tolist(), strict=True):
                out[i][k] = p
    return out


def _records(
    item: dict[str, Any], prediction: tuple[list, list] | None, classes: Sequence[str] | None
) -> list[dict[str, Any]]:
    """The five rows of one sample (an unreadable sample: five ``error`` rows with its reason);
    a mixed row names its donor, the donor's class and the model's predictions for the donor's
    image (``donor_pred``) and for its subject-removed background (``donor_bg_pred``)."""
    label = int(item["label"])
    base = {
        "id": str(item["id"]),
        "image": str(item["image_path"]),
        "label": label,
        "label_name": _name(classes, label),
        **{k: str(v) for k, v in (item["attributes"] or {}).items()},
    }
    donors = {MIXED_SAME: 0, MIXED_RAND: 1}
    rows = []
    for k, variant in enumerate(VARIANTS):
        d = donors.get(variant)
        row = dict(base, variant=variant, donor=None if d is None else item["donors"][d], pred=None, pred_name=None)
        row.update(correct=None, confidence=float("nan"), status=item["status"], reason=item["reason"])
        row.update(donor_label=None, donor_pred=None, donor_bg_pred=None)
        if prediction is not None:
            preds, confidence, views = prediction
            if d is not None:
                row.update(donor_label=item["donor_labels"][d], donor_pred=views[2 * d], donor_bg_pred=views[2 * d + 1])
            reason = item["reasons"][k]
            if reason:
                row.update(status="invalid", reason=reason)
            else:
                p = preds[k]
                row.update(
                    pred=p,
                    pred_name=_name(classes, p),
                    correct=p == label,
                    confidence=confidence[k],
                )
        rows.append(row)
    return rows


def _frame(records: list[dict[str, Any]], attributes: Sequence[str]) -> pd.DataFrame:
    columns = [
        "id",
        "image",
        "variant",
        "label",
        "label_name",
        "pred",
        "pred_name",
        "correct",
        "confidence",
        "donor",
        "donor_label",
        "donor_pred",
        "donor_bg_pred",
        "status",
        "reason",
        *attributes,
    ]
    frame = pd.DataFrame.from_records(records, columns=columns)
    numbers = {"label": "int64", "pred": "Int64", "correct": "boolean", "confidence": "float64"}
    frame = frame.astype({**numbers, "donor_label": "Int64", "donor_pred": "Int64", "donor_bg_pred": "Int64"})
    text = ("id", "image", "variant", "label_name", "pred_name", "donor", "status", "reason", *attributes)
    return frame.astype({c: "string" for c in text})
