"""The location-shortcut test: does a strategy's prediction rest on a fixed spot of the image?

For each strategy (:mod:`auditcam.stats.strategies`) whose hot region is compact and shared by
its members, the spot is occluded (set to the normalisation mean, 0 in model input) on the
members' images and, paired on the same images, an equally large control region elsewhere
(drawn per image with a seeded generator, never overlapping the spot). The flip rates (the
prediction changes) and the drops of the explained class's probability are compared; the
difference of the flip rates gets a paired bootstrap CI.

A spot that flips predictions is not yet a shortcut: on centred subjects, a model that looks at
the subject has a compact, shared spot too. So a strategy is ``flagged`` only when its spot is
also *not the subject*. Where members have subject masks, the spot must lie off them. Where
none do, three label-free signs of an artefact decide (and the result says which): the spot
looks nearly the same in every member image (a tag, a ruler, a token; subjects vary), it sits
at a border or corner, and pasting it into images the model gives other classes carries the
prediction with it. The pixels are asked first: a spot they show to be the subject is never
shown to the model (it cannot be a shortcut), and the paste test runs only where it decides.

For a multi-label model (``threshold`` given) a flip is the explained label's decision changing
(its sigmoid probability crossing the threshold), the probability drop is that label's, and a
paste carries when the label becomes predicted; a strategy's members are the (sample, label)
rows that explained the label, read back by their ``position``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import nn

from auditcam.cam import preserved
from auditcam.config import DEFAULT_MAX_LOCATION_SHORTCUT, AnalysisOptions, Checks
from auditcam.files import Parts
from auditcam.models import logits_of, model_device
from auditcam.run.memory import release_memory
from auditcam.run.records import GRID, HEATMAP_GRID, POSITION, STRATEGY
from auditcam.stats.bootstrap import mean_interval
from auditcam.stats.checks import CheckResult, location_shortcut_check
from auditcam.stats.strategies import Discovery, Strategy, StrategyOptions, discover

NO_CONTROL = "the spot leaves no equally large region elsewhere for the control"
NO_IMAGES = "no member image could be read"
# a pixel of the spot is constant when at least AGREEMENT of the members lie within CONSTANT of
# the images' mean spread (std over members) of the members' median there: a tag missing from a
# few members (or a few members tagged elsewhere) does not hide it, as a spread over all would
CONSTANT = 0.1
AGREEMENT = 0.75
NOT_A_SPOT = "the hot region is not a compact spot shared by the members"
RUN_ROWS = 4096  # rows of samples.parquet decoded at a time (~2 MB) while it is read or rewritten
SUBJECT_SPOT = "the spot is the subject, decided by {decided_by}: not a location shortcut, not occluded"


@dataclass(frozen=True)
class OcclusionOptions:
    """``samples``: occlude at most this many members per strategy (a seeded subset);
    ``paste_samples``: images of other classes the spot is pasted into (no subjects only);
    ``max_subject_overlap``: a spot is the subject when, on average over the members, the
    subject fills more than this share of the spot or more than this share of the subject lies
    in it; ``min_constant_share``: a spot looks the same everywhere when at least this share
    of its pixels is constant across the members (:data:`AGREEMENT` of them within
    :data:`CONSTANT` of the images' mean spread of the members' median);
    ``min_carry``: pasting must move at least this share of other-class images to the class."""

    samples: int = 50
    paste_samples: int = 50
    max_subject_overlap: float = 0.25
    min_constant_share: float = 0.05
    min_carry: float = 0.5
    seed: int = 0


@dataclass(frozen=True)
class StrategiesResult:
    """The discovered strategies (with their occlusion results), the per-class status, which
    results were not measured and why, and per strategy its exemplars as (sample id, RGB uint8)."""

    discovery: Discovery
    method: str
    not_measured: list[str]
    pictures: dict[str, list[tuple[str, np.ndarray]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (summary.json ``strategies``)."""
        return {
            "method": self.method,
            "classes": self.discovery.classes,
            "strategies": [s.to_dict() for s in self.discovery.strategies],
            "not_measured": self.not_measured,
        }

    def to_parts(self) -> Parts:
        """For the bundle: :meth:`to_dict` with each strategy's class index and exemplar ids;
        each mean map and exemplar picture as arrays (keyed by position, not by data-made ids)."""
        arrays: dict[str, np.ndarray] = {}
        exemplars = []
        for k, strategy in enumerate(self.discovery.strategies):
            arrays[f"{k}/mean_map"] = strategy.mean_map
            pictures = self.pictures.get(strategy.id, [])
            exemplars.append([sample for sample, _ in pictures])
            arrays.update({f"{k}/exemplar/{i}": picture for i, (_, picture) in enumerate(pictures)})
        explained = [strategy.explained for strategy in self.discovery.strategies]
        return Parts({**self.to_dict(), "explained": explained, "exemplars": exemplars}, arrays)

    @classmethod
    def from_parts(cls, parts: Parts) -> StrategiesResult:
        """The result :meth:`to_parts` took apart (without the per-row assignment, which lives
        in samples.parquet's strategy column)."""
        fields, arrays = parts.fields, parts.arrays
        strategies, pictures = [], {}
        for k, data in enumerate(fields["strategies"]):
            strategy = Strategy.from_dict(data, fields["explained"][k], arrays[f"{k}/mean_map"])
            strategies.append(strategy)
            ids = fields["exemplars"][k]
            if ids:
                pictures[strategy.id] = [(sample, arrays[f"{k}/exemplar/{i}"]) for i, sample in enumerate(ids)]
        discovery = Discovery(strategies, fields["classes"], np.zeros(0, dtype=object))
        return cls(discovery, fields["method"], list(fields["not_measured"]), pictures)


def pixel_box(region: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` pixels of a normalised ``[x0, y0, x1, y1]`` box (at least one pixel)."""
    x0, y0, x1, y1 = region
    top, left = int(np.floor(y0 * height)), int(np.floor(x0 * width))
    return top, max(top + 1, int(np.ceil(y1 * height))), left, max(left + 1, int(np.ceil(x1 * width)))


def control_boxes(
    spot: tuple[int, int, int, int], height: int, width: int, n: int, rng: np.random.Generator
) -> list[tuple[int, int, int, int]] | None:
    """``n`` boxes as large as ``spot``, each drawn uniformly among the positions that do not
    overlap it; None when there is no such position."""
    y0, y1, x0, x1 = spot
    h, w = y1 - y0, x1 - x0
    ys, xs = np.meshgrid(np.arange(height - h + 1), np.arange(width - w + 1), indexing="ij")
    free = (ys + h <= y0) | (ys >= y1) | (xs + w <= x0) | (xs >= x1)
    if not free.any():
        return None
    picks = rng.integers(0, int(free.sum()), size=n)
    top, left = ys[free][picks], xs[free][picks]
    return [(int(t), int(t) + h, int(s), int(s) + w) for t, s in zip(top, left, strict=True)]


def _occlude(images: torch.Tensor, boxes: Sequence[tuple[int, int, int, int]]) -> None:
    """Set box ``i`` of image ``i`` to 0 (the normalisation mean), in place."""
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        images[i, :, y0:y1, x0:x1] = 0.0


@torch.no_grad()
def _predict_variants(
    model: nn.Module,
    images: torch.Tensor,
    edit: Callable[[list[torch.Tensor], slice], None],
    count: int,
    batch_size: int,
    multilabel: bool = False,
) -> list[torch.Tensor]:
    """Probabilities (N, classes) of each of ``count`` variants of ``images``, on the model's
    device: softmax, or sigmoid for a multi-label model. A chunk of images is copied ``count``
    times into one batch and ``edit(copies, where)`` changes the copies in place (``where``: the
    chunk's positions in ``images``); the variants of a chunk go through the model together, so
    every forward pass is a full batch however many variants there are, and only one chunk's
    copies exist at a time."""
    device = model_device(model)
    per = max(1, batch_size // count)
    parts = []
    for start in range(0, len(images), per):
        where = slice(start, start + per)
        batch = images[where].repeat(count, 1, 1, 1)
        edit(list(batch.chunk(count)), where)
        logits = logits_of(model(batch.to(device))).float()
        probabilities = logits.sigmoid() if multilabel else logits.softmax(1)
        parts.append(probabilities.cpu().view(count, -1, probabilities.shape[1]))
    return list(torch.cat(parts, dim=1))


def _decisions(probabilities: torch.Tensor, explained: int, threshold: float | None) -> torch.Tensor:
    """What a flip changes: the predicted class, or whether a multi-label model predicts the
    explained label (``threshold`` given)."""
    if threshold is None:
        return probabilities.argmax(1)
    return (probabilities[:, explained] >= threshold).long()


def _load(dataset: Any, positions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Images (N, 3, H, W), masks (N, H, W) and whether each has a subject, of the readable positions."""
    images, masks, has = [], [], []
    for p in positions:
        item = dataset[int(p)]
        if "image" not in item:
            continue
        images.append(item["image"])
        mask = item.get("mask")
        mask = torch.zeros(item["image"].shape[-2:], dtype=torch.bool) if mask is None else mask
        masks.append(mask)
        has.append(bool(item.get("has_subject", True)) and bool(mask.any()))
    if not images:
        return torch.empty(0), torch.empty(0), np.zeros(0, dtype=bool)
    return torch.stack(images), torch.stack(masks), np.asarray(has)


def occlude_strategy(
    model: nn.Module,
    dataset: Any,
    strategy: Strategy,
    positions: np.ndarray,
    others: np.ndarray,
    options: OcclusionOptions,
    *,
    threshold: float,
    n_boot: int,
    level: float,
    batch_size: int,
    multilabel_threshold: float | None = None,
) -> dict[str, Any]:
    """The occlusion result of one candidate strategy (``positions``: its members' dataset
    positions; ``others``: positions the model gives another class, for the paste test;
    ``multilabel_threshold``: a multi-label model's, see the module's docstring).

    The evidence from the pixels alone (:func:`spot_evidence`) comes first: a spot it shows to
    be the subject cannot be a location shortcut, and is not occluded (``measured`` False, with
    the evidence and why); the model sees only the images of spots that may be an artefact."""
    rng = np.random.default_rng(options.seed + strategy.explained * 101 + int(strategy.id.rsplit("#", 1)[1]))
    if len(positions) > options.samples:
        positions = np.sort(rng.choice(positions, options.samples, replace=False))
    images, masks, has_subject = _load(dataset, positions)
    if not len(images):
        return {"measured": False, "reason": NO_IMAGES}
    height, width = images.shape[-2:]
    spot = pixel_box(strategy.region, height, width)
    controls = control_boxes(spot, height, width, len(images), rng)
    if controls is None:
        return {"measured": False, "reason": NO_CONTROL}
    evidence = spot_evidence(images, masks, has_subject, spot, options)
    if evidence["artefact"] is False:
        reason = SUBJECT_SPOT.format(decided_by=evidence["decided_by"])
        return {"measured": False, "reason": reason, "n": len(images), "spot_box": list(spot), "evidence": evidence}
    c = strategy.explained

    def occlude(copies: list[torch.Tensor], where: slice) -> None:
        _, spotted, control = copies  # the first stays as it is
        _occlude(spotted, [spot] * len(spotted))
        _occlude(control, controls[where])

    multilabel = multilabel_threshold is not None
    original, spotted, control = _predict_variants(model, images, occlude, 3, batch_size, multilabel)
    pred = _decisions(original, c, multilabel_threshold)
    spot_flip = (_decisions(spotted, c, multilabel_threshold) != pred).double().numpy()
    control_flip = (_decisions(control, c, multilabel_threshold) != pred).double().numpy()
    difference = spot_flip - control_flip
    low, high = mean_interval(difference, n_boot=n_boot, confidence=level, seed=options.seed + c)
    out: dict[str, Any] = {
        "measured": True,
        "strategy": strategy.id,
        "n": len(images),
        "spot_box": list(spot),
        "spot_flip_rate": float(spot_flip.mean()),
        "control_flip_rate": float(control_flip.mean()),
        "difference": {"value": float(difference.mean()), "ci": [low, high]},
        "spot_probability_drop": float((original[:, c] - spotted[:, c]).mean()),
        "control_probability_drop": float((original[:, c] - control[:, c]).mean()),
    }
    if evidence["artefact"] is None:  # the same in every member image, off the border: pasting decides
        evidence = _paste_evidence(
            model, dataset, images, spot, others, c, evidence, options, rng, batch_size, multilabel_threshold
        )
    out["evidence"] = evidence
    out["clear"] = bool(low > 0 and out["difference"]["value"] > threshold)
    return out


def spot_evidence(
    images: torch.Tensor,
    masks: torch.Tensor,
    has_subject: np.ndarray,
    spot: tuple[int, int, int, int],
    options: OcclusionOptions,
) -> dict[str, Any]:
    """Whether the spot is an artefact rather than the subject, from the member images and masks
    alone (no model): ``artefact`` True or False with ``decided_by``, or None when only the
    paste test can tell (no subjects; the spot looks the same in every member image, off the border)."""
    y0, y1, x0, x1 = spot
    height, width = images.shape[-2:]
    patches = images[:, :, y0:y1, x0:x1]
    # a tag, a ruler, a token: part of the spot is (nearly) the same pixels in every member image
    whole = float(images.std(0).mean()) if len(images) > 1 else 0.0
    close = (patches - patches.median(dim=0).values).abs().amax(1) <= CONSTANT * whole  # (members, h, w)
    constant = float((close.double().mean(0) >= AGREEMENT).double().mean()) if whole > 0 else 1.0
    border = y0 == 0 or x0 == 0 or y1 == height or x1 == width
    evidence: dict[str, Any] = {"constant_share": constant, "border": bool(border)}
    if has_subject.mean() >= 0.5:
        subjects = masks[has_subject]
        inside = subjects[:, y0:y1, x0:x1].flatten(1).sum(1).double()
        # the spot is the subject when the subject fills much of it, or much of the subject is in it
        covered = torch.maximum(inside / ((y1 - y0) * (x1 - x0)), inside / subjects.flatten(1).sum(1).double())
        overlap = float(covered.mean())
        evidence.update(
            subject_overlap=overlap,
            artefact=overlap <= options.max_subject_overlap,
            decided_by="subject masks",
        )
        return evidence
    uniform = constant >= options.min_constant_share
    evidence.update(paste_carry=None, artefact=(border or None) if uniform else False)
    paste = "paste not needed" if not uniform or border else "paste not measured"
    evidence["decided_by"] = _no_subjects(constant, uniform, border, paste, options)
    return evidence


def _paste_evidence(
    model: nn.Module,
    dataset: Any,
    images: torch.Tensor,
    spot: tuple[int, int, int, int],
    others: np.ndarray,
    explained: int,
    evidence: dict[str, Any],
    options: OcclusionOptions,
    rng: np.random.Generator,
    batch_size: int,
    multilabel_threshold: float | None = None,
) -> dict[str, Any]:
    """``evidence`` decided by pasting the members' median spot into images the model gives
    other classes: an artefact when that moves at least ``min_carry`` of them to the class."""
    y0, y1, x0, x1 = spot
    carry = None
    if len(others):
        picked = others if len(others) <= options.paste_samples else rng.choice(others, options.paste_samples, False)
        targets, _, _ = _load(dataset, np.sort(picked))
        if len(targets):
            patch = images[:, :, y0:y1, x0:x1].median(dim=0).values

            def paste(copies: list[torch.Tensor], where: slice) -> None:
                copies[1][:, :, y0:y1, x0:x1] = patch  # the first stays as it is

            multilabel = multilabel_threshold is not None
            before, after = _predict_variants(model, targets, paste, 2, batch_size, multilabel)
            chosen = 1 if multilabel else explained  # the label predicted, or the class

            def carried(probabilities: torch.Tensor) -> torch.Tensor:
                return (_decisions(probabilities, explained, multilabel_threshold) == chosen).double().mean()

            carry = float(carried(after) - carried(before))
    carries = carry is not None and carry >= options.min_carry
    paste = "paste not measured" if carry is None else f"pasting it carries {carry:.0%} of other-class images"
    decided_by = _no_subjects(evidence["constant_share"], True, evidence["border"], paste, options)
    return {**evidence, "paste_carry": carry, "artefact": carries, "decided_by": decided_by}


def _no_subjects(constant: float, uniform: bool, border: bool, paste: str, options: OcclusionOptions) -> str:
    """The ``decided_by`` line of a spot judged without subject masks."""
    return "no subjects: " + ", ".join(
        [
            f"{constant:.0%} of the spot is the same in every member image "
            f"({'at least' if uniform else 'under'} {options.min_constant_share:.0%})",
            f"{'at' if border else 'off'} the border",
            paste,
        ]
    )


def run_strategies(
    model: nn.Module,
    dataset: Any,
    samples_path: Any,
    *,
    method: str,
    classes: Sequence[str] | None,
    checks: Checks,
    analysis: AnalysisOptions,
    batch_size: int,
    strategy_options: StrategyOptions | None = None,
    occlusion: OcclusionOptions | None = None,
    threshold: float | None = None,
) -> tuple[StrategiesResult, CheckResult | None]:
    """Discover the strategies of ``method``'s heatmaps in ``samples.parquet``, write each row's
    ``strategy`` there, occlude every candidate spot; return the result and the
    ``max_location_shortcut`` check. ``threshold``: a multi-label audit's (its strategies are
    per label, and a flip is the label's decision changing)."""
    occlusion = OcclusionOptions(seed=analysis.seed) if occlusion is None else occlusion
    attributes = list(getattr(dataset, "attributes", ()))
    numbers = ["target", "correct", "confidence", "subject_share", *([POSITION] if threshold is not None else [])]
    rows, values, grids, valid = _method_rows(samples_path, method, numbers, attributes)
    release_memory()  # the Arrow batches read: their pages go back before the bootstrap's peak
    # each row's sample in the dataset: the row itself, or a multi-label row's position
    positions = np.arange(len(rows)) if threshold is None else values[POSITION].astype(np.int64)
    explained = np.where(valid & np.isfinite(values["target"]), values["target"], -1).astype(np.int64)
    names = list(classes) if classes is not None else [str(c) for c in range(int(explained.max(initial=-1)) + 1)]
    discovery = discover(
        grids,
        explained,
        values["correct"],
        values["confidence"],
        class_names=names,
        groups={a: values[a] for a in attributes},
        subject_share=values["subject_share"],
        options=strategy_options,
        n_boot=analysis.bootstrap,
        level=analysis.confidence,
    )
    del grids, values  # clustered: only the assignment is written, beside the rows read in batches
    _write_strategies(samples_path, rows, discovery.assignment)
    release_memory()
    shortcut = (
        DEFAULT_MAX_LOCATION_SHORTCUT if checks.max_location_shortcut is None else checks.max_location_shortcut.value
    )
    not_measured = [
        f"{c['class']}: strategies {c['status']} ({c['reason']})" for c in discovery.classes if c["status"] != "ok"
    ]
    measured = []
    with preserved(model, frozen=True):
        for strategy in discovery.strategies:
            if not strategy.candidate:
                not_measured.append(f"{strategy.id}: occlusion not measured ({NOT_A_SPOT})")
                continue
            others = positions[(explained >= 0) & (explained != strategy.explained)]
            if threshold is not None:  # images where the label is explained too are no paste targets
                others = np.setdiff1d(others, positions[explained == strategy.explained])
            strategy.occlusion = occlude_strategy(
                model,
                dataset,
                strategy,
                positions[strategy.rows],
                np.unique(others),
                occlusion,
                threshold=shortcut,
                n_boot=analysis.bootstrap,
                level=analysis.confidence,
                batch_size=batch_size,
                multilabel_threshold=threshold,
            )
            if not strategy.occlusion["measured"]:
                not_measured.append(f"{strategy.id}: occlusion not measured ({strategy.occlusion['reason']})")
                continue
            artefact = strategy.occlusion["evidence"]["artefact"]
            strategy.flagged = bool(strategy.occlusion["clear"] and artefact)
            if artefact:
                measured.append(strategy.occlusion)
    ids = pq.read_table(samples_path, columns=["id"], filters=[("method", "==", method)]).column("id")
    pictures = {s.id: _pictures(dataset, positions[s.exemplars], ids, s.exemplars) for s in discovery.strategies}
    reason = "no strategy has a compact hot spot shared by its members off the subject: nothing to occlude"
    check = location_shortcut_check(measured, checks, analysis, reason)
    return StrategiesResult(discovery, method, not_measured, pictures), check


def _pictures(
    dataset: Any, positions: np.ndarray, ids: pa.ChunkedArray, rows: np.ndarray
) -> list[tuple[str, np.ndarray]]:
    """The exemplars (the method's ``rows``, samples at ``positions``) as displayable RGB uint8
    pictures, with their sample ids."""
    images, _, _ = _load(dataset, positions)
    if not len(images):
        return []
    shown = (dataset.preprocessing.denormalise(images) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [(ids[int(r)].as_py(), picture) for r, picture in zip(rows, shown, strict=False)]


def _method_rows(
    path: Any, method: str, numbers: Sequence[str], texts: Sequence[str]
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """``method``'s rows of samples.parquet, read one row group at a time into arrays of their
    final size (memory: the arrays, not an Arrow copy of the columns besides): their row numbers
    in the file; the ``numbers`` columns as float64 (NaN where null) and the ``texts`` columns
    as object arrays; the heatmap grids as (n, GRID * GRID) float32 (zeros where there is no
    heatmap) and where there is one."""
    source = pq.ParquetFile(path)
    methods = source.read(columns=["method"], use_threads=False).column("method")
    rows = np.flatnonzero(pc.fill_null(pc.equal(methods, method), False).to_numpy(zero_copy_only=False))
    values = {name: np.full(len(rows), np.nan) for name in numbers}
    values.update({name: np.empty(len(rows), dtype=object) for name in texts})
    grids = np.zeros((len(rows), GRID * GRID), dtype=np.float32)
    valid = np.zeros(len(rows), dtype=bool)
    start = 0
    for group in _row_groups(source, ["method", *numbers, *texts, HEATMAP_GRID]):
        mine = group.filter(pc.equal(group.column("method"), method))
        end = start + mine.num_rows
        for name in numbers:
            values[name][start:end] = pc.cast(mine.column(name), pa.float64()).to_numpy(zero_copy_only=False)
        for name in texts:
            values[name][start:end] = mine.column(name).to_numpy(zero_copy_only=False)
        column = mine.column(HEATMAP_GRID)
        kept = ~column.is_null().to_numpy(zero_copy_only=False)
        valid[start:end] = kept
        if kept.any():
            block = grids[start:end]  # a view: assigning into it fills grids
            block[kept] = column.drop_null().combine_chunks().flatten().to_numpy().reshape(-1, GRID * GRID)
        start = end
    return rows, values, grids, valid


def _row_groups(source: pq.ParquetFile, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
    """The file's rows in runs of whole row groups of about :data:`RUN_ROWS` rows (a row group is
    one shard of the run; one larger than that comes alone), decoded on this thread: Arrow's
    reader threads each kept pages of their own, and memory grew with the file (~60 MB at
    100,000 rows against ~25 MB), while one call per small shard cost more than the decoding."""
    run: list[int] = []
    rows = 0
    for i in range(source.num_row_groups):
        if run and rows + source.metadata.row_group(i).num_rows > RUN_ROWS:
            yield source.read_row_groups(run, columns=columns, use_threads=False)
            run, rows = [], 0
        run.append(i)
        rows += source.metadata.row_group(i).num_rows
    if run:
        yield source.read_row_groups(run, columns=columns, use_threads=False)


def _write_strategies(path: Any, rows: np.ndarray, assignment: np.ndarray) -> None:
    """Set ``samples.parquet``'s ``strategy`` column to ``assignment`` at ``rows`` (null elsewhere),
    streamed row group by row group into a new file that then replaces it: memory stays flat."""
    source = pq.ParquetFile(path)
    values = np.full(source.metadata.num_rows, None, dtype=object)
    values[rows] = assignment
    tmp = f"{path}.tmp"
    start = 0
    # dictionary pages for the text columns only: on the heatmap grids' floats a dictionary is
    # built per row group and then dropped, which made most of the rewrite's time (and the file
    # a fifth larger)
    texts = [f.name for f in source.schema_arrow if pa.types.is_string(f.type)]
    with pq.ParquetWriter(tmp, source.schema_arrow, use_dictionary=texts) as writer:
        for group in _row_groups(source):
            index = group.schema.get_field_index(STRATEGY)
            column = pa.array(values[start : start + group.num_rows].tolist(), type=pa.string())
            writer.write_table(group.set_column(index, group.schema.field(index), column))
            start += group.num_rows
    os.replace(tmp, path)
