"""Keep the few samples the report shows (most background-reliant, most subject-focused)
while the audit streams past: two bounded heaps, so memory never grows with the dataset."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
