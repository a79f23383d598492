"""Strategy discovery (SpRAy, Lapuschkin et al. 2019, "Unmasking Clever Hans predictors"): per
explained class, cluster the heatmaps so that each cluster is one way the model decides.

Each heatmap arrives pooled to a small fixed grid (see :mod:`auditcam.run.records`); it is
clipped at 0 and normalised to sum 1, so clusters differ by *where* the model looks, not how
strongly. k-means (scikit-learn, seeded) runs for 2..``max_strategies`` clusters on a seeded
subsample of at most ``fit_samples`` maps, the silhouette picks the number (one strategy when no
split reaches ``min_silhouette``), and every map is then assigned to its nearest centre: memory
and time stay bounded however many samples there are.

Each strategy gets its size and share of the class, accuracy and confidence with bootstrap CIs,
its mean heatmap, its *hot region* (the smallest grid-aligned box holding ``energy`` of the mean
map's mass, as a normalised ``[x0, y0, x1, y1]``), how much of each member's own map falls in
that box, the group composition against the class's, and the mean subject_share where
subjects exist. Pure numpy and scikit-learn: no model, no images.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from auditcam.stats.bootstrap import mean_intervals

INSUFFICIENT = "insufficient data"
EXEMPLARS = 3  # members shown per strategy
KMEANS_STARTS = 3  # k-means++ seedings per k; the one with the least inertia is kept
SILHOUETTE_SAMPLES = 500  # the silhouette (quadratic in its points) is scored on a seeded subset
ASSIGN_ROWS = 16384  # maps assigned to their nearest centre at a time


@dataclass(frozen=True)
class StrategyOptions:
    """How strategies are found and what makes a hot region a candidate spot.

    ``max_strategies``: the most clusters per class; ``min_class_samples``: a class with fewer
    explained maps is "insufficient data"; ``fit_samples``: k-means and the silhouette run on a
    seeded subsample of at most this many maps per class; ``min_silhouette``: below it the class
    keeps one strategy; ``energy``: the share of the mean map's mass the hot region holds;
    ``max_region_area``: a hot region is *compact* when it covers at most this share of the
    image; ``min_shared``: it is *shared* when the median member puts at least this share of its
    own map inside it.
    """

    max_strategies: int = 4
    min_class_samples: int = 20
    fit_samples: int = 2000
    min_silhouette: float = 0.2
    energy: float = 0.5
    max_region_area: float = 0.25
    min_shared: float = 0.35
    seed: int = 0


@dataclass
class Strategy:
    """One cluster of a class's heatmaps. ``rows`` index the input arrays (not serialised),
    ``exemplars`` the members whose maps lie nearest the mean map;
    ``candidate``: the hot region is compact and shared, a spot worth occluding;
    ``occlusion`` and ``flagged`` are filled by the location-shortcut test when it ran."""

    explained: int
    class_name: str
    id: str
    n: int
    share: float
    accuracy: dict[str, Any]
    confidence: dict[str, Any]
    subject_share: dict[str, Any] | None
    mean_map: np.ndarray
    region: tuple[float, float, float, float]
    region_mass: float
    shared: float
    compact: bool
    candidate: bool
    groups: dict[str, list[dict[str, Any]]]
    rows: np.ndarray = field(repr=False)
    exemplars: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=np.int64))
    occlusion: dict[str, Any] | None = None
    flagged: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (summary.json ``strategies``)."""
        return {
            "class": self.class_name,
            "id": self.id,
            "n": self.n,
            "share": self.share,
            "accuracy": self.accuracy,
            "confidence": self.confidence,
            "subject_share": self.subject_share,
            "region": list(self.region),
            "region_mass": self.region_mass,
            "shared": self.shared,
            "compact": self.compact,
            "candidate": self.candidate,
            "mean_map": np.round(self.mean_map, 5).tolist(),
            "groups": self.groups,
            "occlusion": self.occlusion,
            "flagged": self.flagged,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], explained: int, mean_map: np.ndarray) -> Strategy:
        """The strategy :meth:`to_dict` described, with its class index and exact mean map (the
        member rows are not kept)."""
        return cls(
            explained,
            data["class"],
            data["id"],
            data["n"],
            data["share"],
            data["accuracy"],
            data["confidence"],
            data["subject_share"],
            mean_map,
            tuple(data["region"]),
            data["region_mass"],
            data["shared"],
            data["compact"],
            data["candidate"],
            data["groups"],
            rows=np.zeros(0, dtype=np.int64),
            occlusion=data["occlusion"],
            flagged=data["flagged"],
        )


@dataclass(frozen=True)
class Discovery:
    """Every class's strategies; ``classes`` says per explained class how many maps it had and
    whether it was clustered (``status`` ok or "insufficient data", with the reason);
    ``assignment`` is each input row's strategy id (None: not clustered)."""

    strategies: list[Strategy]
    classes: list[dict[str, Any]]
    assignment: np.ndarray


def normalise_grids(grids: np.ndarray) -> np.ndarray:
    """Clip at 0 and scale each row to sum 1 (float32: a grid's cells need no more, and a large
    class's maps stay small); an all-zero or non-finite cell counts 0, an all-zero map becomes
    uniform (it looks nowhere). A new array; ``grids`` is left as it is."""
    return _normalise(np.array(grids, dtype=np.float32))


def _normalise(maps: np.ndarray) -> np.ndarray:
    """:func:`normalise_grids` in place on a float32 array of our own (no second copy of a class)."""
    np.nan_to_num(maps, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    np.clip(maps, 0, None, out=maps)
    total = maps.sum(axis=1, keepdims=True)
    empty = total[:, 0] <= 0
    maps /= np.where(empty[:, None], 1, total)
    maps[empty] = 1.0 / maps.shape[1]
    return maps


def hot_region(mean_map: np.ndarray, energy: float) -> tuple[int, int, int, int]:
    """``(r0, r1, c0, c1)`` (end exclusive, in cells) of the smallest box holding at least
    ``energy`` of the map's mass; among equally small boxes the one holding the most."""
    g_rows, g_cols = mean_map.shape
    total = mean_map.sum()
    cum = np.zeros((g_rows + 1, g_cols + 1))
    cum[1:, 1:] = mean_map.cumsum(0).cumsum(1)
    r0, r1, c0, c1 = np.meshgrid(
        np.arange(g_rows + 1), np.arange(g_rows + 1), np.arange(g_cols + 1), np.arange(g_cols + 1), indexing="ij"
    )
    valid = (r1 > r0) & (c1 > c0)
    mass = cum[r1, c1] - cum[r0, c1] - cum[r1, c0] + cum[r0, c0]
    area = (r1 - r0) * (c1 - c0)
    enough = valid & (mass >= energy * total - 1e-12)
    # smallest area first, then most mass: one lexicographic key
    key = np.where(enough, area * (total + 1) - mass, np.inf)
    best = np.unravel_index(np.argmin(key), key.shape)
    return int(r0[best]), int(r1[best]), int(c0[best]), int(c1[best])


def cluster(features: np.ndarray, options: StrategyOptions) -> np.ndarray:
    """Cluster labels (0 = largest cluster) of normalised maps: k-means on a seeded subsample for
    each k in 2..max_strategies, k by the best silhouette (on at most :data:`SILHOUETTE_SAMPLES`
    of the fitted maps; 1 cluster below ``min_silhouette``), then every row assigned to its
    nearest centre in fixed-size chunks. One thread: these fits are small, and on a busy machine
    a second OpenMP or BLAS thread waits for a core longer than it saves (5x slower measured)."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    n = len(features)
    rng = np.random.default_rng(options.seed)
    fit = features if n <= options.fit_samples else features[np.sort(rng.choice(n, options.fit_samples, replace=False))]
    scored = np.sort(rng.choice(len(fit), min(len(fit), SILHOUETTE_SAMPLES), replace=False))
    best, best_score = None, options.min_silhouette
    with threadpool_limits(limits=1):
        for k in range(2, min(options.max_strategies, len(fit) - 1) + 1):
            with warnings.catch_warnings():  # identical maps give fewer distinct points than k
                warnings.simplefilter("ignore", ConvergenceWarning)
                model = KMeans(n_clusters=k, n_init=KMEANS_STARTS, random_state=options.seed).fit(fit)
            labels = model.labels_[scored]
            if not 2 <= len(np.unique(labels)) < len(scored):  # the silhouette needs 2..n-1 clusters
                continue
            score = silhouette_score(fit[scored], labels)
            if score > best_score:
                best, best_score = model, score
        if best is None:
            return np.zeros(n, dtype=np.int64)
        labels = np.concatenate([best.predict(features[i : i + ASSIGN_ROWS]) for i in range(0, n, ASSIGN_ROWS)])
    order = np.argsort(-np.bincount(labels, minlength=best.n_clusters), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[labels]


def _estimates(columns: Sequence[np.ndarray], n_boot: int, confidence: float, seed: int) -> list[dict[str, Any]]:
    """The mean of each column's finite values with its bootstrap CI (``value`` and ``ci`` None,
    ``n`` 0 where none is finite). Columns finite on the same rows share one set of replicates,
    which is what bootstrapping each alone with the same seed draws, at the cost of one."""
    out: list[dict[str, Any]] = [{"value": None, "ci": None, "n": 0} for _ in columns]
    finite = [np.isfinite(column) for column in columns]
    pending = [i for i, kept in enumerate(finite) if kept.any()]
    while pending:
        same = [i for i in pending if np.array_equal(finite[i], finite[pending[0]])]
        kept = finite[pending[0]]
        values = np.stack([columns[i][kept] for i in same], axis=1)
        intervals = mean_intervals(values, n_boot=n_boot, confidence=confidence, seed=seed)
        for i, mean, (low, high) in zip(same, values.mean(axis=0), intervals, strict=True):
            out[i] = {"value": float(mean), "ci": [low, high], "n": int(kept.sum())}
        pending = [i for i in pending if i not in same]
    return out


def _composition(groups: Mapping[str, np.ndarray], members: np.ndarray, of_class: np.ndarray) -> dict[str, list]:
    """Per attribute, each group's count and share in the strategy against its share in the class."""
    out = {}
    for attribute, values in groups.items():
        in_class = values[of_class]
        in_strategy = values[members]
        names, class_counts = np.unique(in_class.astype(str), return_counts=True)
        out[attribute] = [
            {
                "group": str(name),
                "n": int(np.sum(in_strategy.astype(str) == name)),
                "share": float(np.mean(in_strategy.astype(str) == name)),
                "class_share": float(count / len(in_class)),
            }
            for name, count in zip(names, class_counts, strict=True)
        ]
    return out


def discover(
    grids: np.ndarray,
    explained: np.ndarray,
    correct: np.ndarray,
    confidence: np.ndarray,
    *,
    class_names: Sequence[str],
    groups: Mapping[str, np.ndarray] | None = None,
    subject_share: np.ndarray | None = None,
    options: StrategyOptions | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
) -> Discovery:
    """The strategies of every explained class from per-row grids (n, g*g) of a square grid.

    ``explained`` is each row's explained class (-1: no heatmap, left out), ``correct`` and
    ``confidence`` the model's outcome on it (NaN where unknown), ``groups`` the group
    attribute values, ``subject_share`` NaN where the row has no subject. CIs are percentile
    bootstrap intervals at ``level`` from ``n_boot`` seeded resamples.
    """
    options = StrategyOptions() if options is None else options
    groups = {} if groups is None else groups
    side = round(np.sqrt(grids.shape[1]))
    assignment = np.full(len(grids), None, dtype=object)
    # accuracy, confidence and (where given) subject_share of each row: estimated per strategy
    outcomes = [np.asarray(v, dtype=np.float64) for v in (correct, confidence, subject_share) if v is not None]
    strategies: list[Strategy] = []
    classes: list[dict[str, Any]] = []
    for c in np.unique(explained[explained >= 0]):
        of_class = np.flatnonzero(explained == c)
        name = class_names[c] if c < len(class_names) else str(c)
        if len(of_class) < options.min_class_samples:
            classes.append(
                {
                    "class": name,
                    "n": len(of_class),
                    "status": INSUFFICIENT,
                    "reason": f"{len(of_class)} explained maps < {options.min_class_samples} needed to cluster",
                }
            )
            continue
        features = _normalise(grids[of_class].astype(np.float32, copy=False))  # the indexing made the copy
        labels = cluster(features, options)
        norms = np.einsum("nd,nd->n", features, features)
        classes.append({"class": name, "n": len(of_class), "status": "ok", "n_strategies": int(labels.max() + 1)})
        for k in range(int(labels.max()) + 1):
            # each strategy's numbers from the class's maps through its mask: no copy of its maps
            inside = labels == k
            members = of_class[inside]
            total = features.sum(axis=0, where=inside[:, None], dtype=np.float64)
            mean_map = (total / len(members)).reshape(side, side)
            r0, r1, c0, c1 = hot_region(mean_map, options.energy)
            own_mass = features.reshape(-1, side, side)[:, r0:r1, c0:c1].sum(axis=(1, 2), dtype=np.float64)[inside]
            centre = mean_map.reshape(-1).astype(np.float32)
            # each member's squared distance to the mean map, |f|^2 - 2 f.m + |m|^2, with no copy of the maps
            nearest = (norms - 2 * (features @ centre) + centre @ centre)[inside]
            area = (r1 - r0) * (c1 - c0) / side**2
            seed = options.seed + int(c) * 101 + k
            accuracy, confident, *subject = _estimates([column[members] for column in outcomes], n_boot, level, seed)
            strategy = Strategy(
                explained=int(c),
                class_name=name,
                id=f"{name}#{k + 1}",
                n=len(members),
                share=float(len(members) / len(of_class)),
                accuracy=accuracy,
                confidence=confident,
                subject_share=subject[0] if subject and subject[0]["n"] else None,
                mean_map=mean_map.astype(np.float32),
                region=(c0 / side, r0 / side, c1 / side, r1 / side),
                region_mass=float(mean_map[r0:r1, c0:c1].sum()),
                shared=float(np.median(own_mass)),
                compact=bool(area <= options.max_region_area),
                candidate=bool(area <= options.max_region_area and np.median(own_mass) >= options.min_shared),
                groups=_composition(groups, members, of_class),
                rows=members,
                exemplars=members[np.argsort(nearest, kind="stable")[:EXEMPLARS]],
            )
            strategies.append(strategy)
            assignment[members] = strategy.id
    return Discovery(strategies, classes, assignment)
