"""The gallery: the few samples the report shows (most background-reliant, most subject-focused),
kept while the audit streams past in two bounded heaps (memory never grows with the dataset), or
picked afterwards by streaming samples.parquet and explaining only those samples again."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from auditcam.cam import Explainer
from auditcam.data import collate
from auditcam.files import ROWS, Parts, records_table, table_records
from auditcam.models import Preprocessing
from auditcam.run.device import to_device
from auditcam.run.records import HEATMAP_GRID, POSITION, pair_subjects

ENDS = ("background_reliant", "subject_focused")
PICTURES = ("image", "heatmap", "mask")


@dataclass(frozen=True)
class Exemplar:
    """A sample to show: the displayed input image, its normalised heatmap and subject mask."""

    record: dict[str, Any]
    image: np.ndarray  # uint8 (H, W, 3)
    heatmap: np.ndarray  # float32 (H, W) in [0, 1]
    mask: np.ndarray  # bool (H, W)


@dataclass
class Gallery:
    """Top-``size`` exemplars at each end of ``subject_share``."""

    size: int = 8
    _worst: list = field(default_factory=list)
    _best: list = field(default_factory=list)
    _tie: itertools.count = field(default_factory=itertools.count)

    def offer(self, share: float, make: Any) -> None:
        """Consider a sample with this subject_share; ``make()`` builds its Exemplar only
        if it is kept, so the images of samples that are not kept are never copied."""
        if self.size <= 0:
            return
        tie = next(self._tie)
        # _worst is a max-heap on share (keeps the lowest), _best a min-heap (keeps the highest).
        wanted = [
            (heap, key)
            for heap, key in ((self._worst, -share), (self._best, share))
            if len(heap) < self.size or key > heap[0][0]
        ]
        if not wanted:
            return
        exemplar = make()
        for heap, key in wanted:
            if len(heap) < self.size:
                heapq.heappush(heap, (key, -tie, exemplar))
            else:
                heapq.heapreplace(heap, (key, -tie, exemplar))

    @property
    def background_reliant(self) -> list[Exemplar]:
        """Lowest subject_share first."""
        return [item for _, _, item in sorted(self._worst, key=lambda t: (-t[0], -t[1]))]

    @property
    def subject_focused(self) -> list[Exemplar]:
        """Highest subject_share first."""
        return [item for _, _, item in sorted(self._best, key=lambda t: (-t[0], -t[1]))]

    def to_parts(self) -> Parts:
        """For the bundle: each end's exemplars in order, their records as one table (rows:
        background-reliant, then subject-focused) and their pictures as arrays."""
        ends = {end: getattr(self, end) for end in ENDS}
        shown = [e for exemplars in ends.values() for e in exemplars]
        arrays = {f"{i}/{name}": getattr(e, name) for i, e in enumerate(shown) for name in PICTURES}
        records = records_table([e.record for e in shown])
        return Parts({"size": self.size, **{end: len(e) for end, e in ends.items()}}, arrays, {ROWS: records})

    @classmethod
    def from_parts(cls, parts: Parts) -> Gallery:
        """The gallery :meth:`to_parts` took apart, each end in the same order."""
        records = table_records(parts.tables[ROWS])
        shown = [
            Exemplar(record, *(parts.arrays[f"{i}/{name}"] for name in PICTURES)) for i, record in enumerate(records)
        ]
        gallery = cls(size=parts.fields["size"])
        n_reliant = parts.fields[ENDS[0]]
        # heap keys that sort as the ends were given: the kth item of an end has the kth rank
        gallery._worst = [(-float(k), -k, e) for k, e in enumerate(shown[:n_reliant])]
        gallery._best = [(-float(k), -k, e) for k, e in enumerate(shown[n_reliant:])]
        for heap in (gallery._worst, gallery._best):
            heapq.heapify(heap)
        return gallery


GALLERY_READ_ROWS = 8192


def pick_gallery(
    path: Path,
    explainer: Explainer,
    dataset: Any,
    methods: Sequence[str],
    size: int,
    batch_size: int,
    device: torch.device,
    seen: dict[tuple[int, int], Exemplar],
) -> Gallery:
    """The exemplars at each end of the first method's subject_share, picked by streaming
    samples.parquet (sample k's rows are rows k*M .. k*M+M-1; a multi-label run's rows name
    their sample's ``position``). Those this process kept while it explained (``seen``, by
    position and explained class) are used as they are; the others (explained by another
    process or before a resume) are read and explained again for display."""
    primary, width = methods[0], len(methods)
    picks = Gallery(size=size)
    offset = 0
    for rows in pq.ParquetFile(path).iter_batches(batch_size=GALLERY_READ_ROWS):
        scored = pc.and_(pc.equal(rows.column("method"), primary), pc.equal(rows.column("status"), "ok"))
        shares = rows.column("subject_share").to_numpy(zero_copy_only=False)
        positions = rows.column(POSITION).to_numpy() if POSITION in rows.schema.names else None
        for i in np.flatnonzero(scored.to_numpy(zero_copy_only=False)):
            position = (offset + int(i)) // width if positions is None else int(positions[i])
            picks.offer(float(shares[i]), _pick(rows, int(i), position))
        offset += rows.num_rows
    chosen = {pick[0]: pick for pick in (*picks.background_reliant, *picks.subject_focused)}
    ordered = sorted(chosen)
    exemplars = {p: seen[p] for p in ordered if p in seen}
    missing = [p for p in ordered if p not in seen]
    for start in range(0, len(missing), batch_size):
        exemplars.update(
            explain_exemplars(
                [chosen[p] for p in missing[start : start + batch_size]], explainer, dataset, primary, device
            )
        )
    gallery = Gallery(size=size)
    for position in ordered:
        if position in exemplars:
            gallery.offer(chosen[position][1]["subject_share"], lambda e=exemplars[position]: e)
    return gallery


def _pick(rows: pa.RecordBatch, i: int, position: int) -> Callable[[], tuple[tuple[int, int], dict[str, Any]]]:
    def make() -> tuple[tuple[int, int], dict[str, Any]]:
        record = rows.slice(i, 1).to_pylist()[0]
        record.pop(POSITION, None)
        return (position, record["target"]), record

    return make


def explain_exemplars(
    picks: Sequence[tuple[tuple[int, int], dict[str, Any]]],
    explainer: Explainer,
    dataset: Any,
    method: str,
    device: torch.device,
) -> dict[tuple[int, int], Exemplar]:
    """Read and explain the picked samples (for the class recorded for them; ``picks`` are
    ((position, class), record)); skip any that can no longer be read."""
    items = [dataset[position] for (position, _), _ in picks]
    batch = collate(items)
    if not batch["ok"].any():
        return {}
    readable = [pick for pick, ok in zip(picks, batch["ok"].tolist(), strict=True) if ok]
    targets = np.asarray([record["target"] for _, record in readable], dtype=np.int64)
    explanation = explainer(to_device(batch, device)["image"], torch.as_tensor(targets, device=device))
    heatmaps = explanation.normalised(method)
    if "masks" in batch:  # multi-label: the explained label's subject
        index, _ = pair_subjects(batch, np.arange(len(readable)), targets)
        blank = torch.zeros(batch["image"].shape[-2:], dtype=torch.bool)
        masks = [batch["masks"][i] if i >= 0 else blank for i in index]
    else:
        masks = list(batch["mask"])
    return {
        key: exemplar(record, batch["image"][j], heatmaps[j], masks[j], dataset.preprocessing)
        for j, (key, record) in enumerate(readable)
    }


def exemplar(
    record: dict[str, Any], image: torch.Tensor, heatmap: torch.Tensor, mask: torch.Tensor, preprocessing: Preprocessing
) -> Exemplar:
    """One sample as the report shows it: the displayed input, its [0, 1] heatmap and mask, on the
    host; its record without the pooled heatmap grid (the heatmap itself is kept)."""
    return Exemplar(
        record={k: v for k, v in record.items() if k != HEATMAP_GRID},
        image=preprocessing.to_uint8(image),
        heatmap=heatmap.float().cpu().numpy().astype(np.float32),
        mask=mask.cpu().numpy().copy(),
    )


def offer(
    shown: Gallery,
    records: pa.RecordBatch,
    pictures: Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    width: int,
    preprocessing: Preprocessing,
) -> None:
    """Offer a batch's rows scored on the first method to ``shown``, keyed by (position,
    explained class); ``width`` rows (one per method) make a unit (a sample, or a multi-label
    sample's explained label) and ``pictures(u)`` is unit ``u``'s model input, [0, 1] heatmap and
    mask. Pixels are copied only for the units it keeps."""
    if shown.size <= 0:
        return
    status = records.column("status").to_pylist()[::width]
    shares = records.column("subject_share").to_numpy()[::width]

    def keep(u: int) -> Callable[[], tuple[tuple[int, int], Exemplar]]:
        def make() -> tuple[tuple[int, int], Exemplar]:
            record = records.slice(u * width, 1).to_pylist()[0]
            key = (record.pop(POSITION), record["target"])
            return key, exemplar(record, *pictures(u), preprocessing)

        return make

    for u, state in enumerate(status):
        if state == "ok":
            shown.offer(float(shares[u]), keep(u))
