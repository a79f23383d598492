"""Run settings, checks (the pass/fail gates an audit is judged by) and analysis options, and
where they come from.

Settings are read from four layers; for each key the first layer that sets it wins:

1. command-line flags (``--min-subject-share 0.5``);
2. a TOML file named by ``--config`` (keys at the top level, or a ``[tool.auditcam]`` table);
3. the ``[tool.auditcam]`` table of the closest ``pyproject.toml`` at or above the working
   directory that has one (the convention of ruff and pytest);
4. the defaults of :class:`AuditSettings`, :class:`Checks` and :class:`AnalysisOptions`.

A list key (``max_group_gap``, ``intersections``) is replaced as a whole by a higher layer.
An unknown key or a bad value is an :class:`~auditcam.errors.InputError` naming the file and key.
The run settings are one key table (:data:`RUN_KEYS`): the ``audit`` and ``compare`` flags, the
TOML keys and :class:`AuditSettings` all come from it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditcam.data.rows import TASKS
from auditcam.errors import InputError
from auditcam.scoring import REGISTRY, Metric

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFAULT_MAX_BACKGROUND_RELIANT_RATE = 0.2
DEFAULT_MAX_BG_GAP = 0.1  # decided only when the counterfactual test runs (--counterfactual)
# With --counterfactual: the share of swaps onto another class's background whose prediction
# moves to the donor image's. Measured on the demo's balanced held-out split (README, "Counterfactual
# backgrounds"): the model trained on decorrelated data follows in 0.5 % of swaps (CI to 1.2 %; its
# few moves are pasting artefacts), the one that learnt the background in 100 %. 0.25 leaves a
# subject-driven model ample room for artefacts (which land on the donor's class only by chance:
# about 1/(classes - 1) of the flips) and fails a model that follows the background in one swap of four.
DEFAULT_MAX_BACKGROUND_FOLLOWING = 0.25
DEFAULT_MAX_LOCATION_SHORTCUT = 0.1  # flip-rate difference, spot minus control (strategies' occlusion test)
DEFAULT_MAX_SANITY_CORRELATION = 0.5  # decided only when the sanity check runs (--sanity)
DEFAULT_MIN_GROUP_SIZE = 30
DEFAULT_BOOTSTRAP = 1000
DEFAULT_CONFIDENCE = 0.95

# point: the estimate; upper/lower: that end of the CI; strict: the end on the failing side
# (upper for a max_* check, lower for a min_* check), so a noisy pass does not slip through.
DECIDE_ON = ("point", "upper", "lower", "strict")
# fail: a check without enough data makes the audit fail; skip: it is reported and ignored.
INSUFFICIENT_DATA = ("fail", "skip")


def gap_metrics(registry: dict[str, Metric] | None = None) -> dict[str, str]:
    """Names a gap check may use for a statistic, mapped to the statistic's name in the
    aggregates: every aggregate of a metric with a direction, and the metric's own name for its
    first aggregate (``subject_share`` -> ``subject_share_mean``)."""
    names: dict[str, str] = {}
    for metric in (REGISTRY if registry is None else registry).values():
        if metric.better is None or not metric.aggregates:
            continue
        names[metric.name] = metric.aggregates[0].name
        names.update({a.name: a.name for a in metric.aggregates})
    return names


GAP_METRICS = gap_metrics()


THRESHOLD_KEYS = (
    "max_background_reliant_rate",
    "min_subject_share",
    "min_accuracy",
    "max_error_rate",
    "max_bg_gap",
    "max_background_following",
    "max_sanity_correlation",
    "max_location_shortcut",
)


@dataclass(frozen=True)
class Threshold:
    """A threshold and, optionally, which estimate decides it (default: ``Checks.decide_on``)."""

    value: float
    decide_on: str | None = None


@dataclass(frozen=True)
class WorstGroupAccuracy:
    """The least accurate group of ``attribute`` (every group attribute when ``None``) must reach ``value``."""

    value: float
    attribute: str | None = None
    decide_on: str | None = None


@dataclass(frozen=True)
class GroupGap:
    """The difference of ``metric`` between the best and the worst group of ``attribute`` (an
    attribute, or an intersection ``"a,b"``) must be at most ``value``."""

    attribute: str
    metric: str
    value: float
    decide_on: str | None = None


@dataclass(frozen=True)
class Checks:
    """Thresholds of the checks; ``None`` turns a check off. A float is a :class:`Threshold`.

    - ``max_background_reliant_rate``: at most this share of valid samples may be background-reliant.
    - ``min_subject_share``: the mean subject_share must reach this value.
    - ``min_accuracy``: the accuracy over every predicted sample must reach this value.
    - ``max_error_rate``: at most this share of samples may be unscored, i.e. have status
      ``error`` (unreadable) or ``invalid`` (empty or full mask, degenerate heatmap).
    - ``min_worst_group_accuracy``: every group with enough data must reach this accuracy.
    - ``max_group_gap``: group disparities, one :class:`GroupGap` each.
    - ``max_bg_gap``: with the counterfactual test, accuracy on class-typical backgrounds minus
      accuracy on other classes' backgrounds (BG-gap) must be at most this (not applicable
      when the donors' backgrounds carry no class information for the model).
    - ``max_background_following``: with the counterfactual test, at most this share of the
      swaps onto another class's background may move the prediction to the donor image's.
    - ``max_sanity_correlation``: with the sanity check, the mean Spearman correlation between
      the original maps and those of the fully randomised model must be at most this.
    - ``max_location_shortcut``: the location-shortcut test (strategy discovery and occlusion):
      the largest difference between the flip rate of occluding a strategy's hot spot and that
      of an equally large control region, over strategies whose spot is not the subject, must
      be at most this.
    - ``decide_on``: default estimate that decides a check, one of :data:`DECIDE_ON`.
    - ``insufficient_data``: what a check without enough data does to the verdict, one of
      :data:`INSUFFICIENT_DATA` (``fail``: the audit does not pass; ``skip``: ignored).
    """

    max_background_reliant_rate: Threshold | float | None = DEFAULT_MAX_BACKGROUND_RELIANT_RATE
    min_subject_share: Threshold | float | None = None
    min_accuracy: Threshold | float | None = None
    max_error_rate: Threshold | float | None = None
    min_worst_group_accuracy: WorstGroupAccuracy | float | None = None
    max_group_gap: tuple[GroupGap, ...] = ()
    max_bg_gap: Threshold | float | None = DEFAULT_MAX_BG_GAP
    max_background_following: Threshold | float | None = DEFAULT_MAX_BACKGROUND_FOLLOWING
    max_sanity_correlation: Threshold | float | None = DEFAULT_MAX_SANITY_CORRELATION
    max_location_shortcut: Threshold | float | None = DEFAULT_MAX_LOCATION_SHORTCUT
    decide_on: str = "point"
    insufficient_data: str = "fail"

    def __post_init__(self) -> None:
        key = "decide_on"
        try:
            _choice(self.decide_on, DECIDE_ON)
            key = "insufficient_data"
            _choice(self.insufficient_data, INSUFFICIENT_DATA)
            for key in THRESHOLD_KEYS:
                value = getattr(self, key)
                if value is not None and not isinstance(value, Threshold):
                    object.__setattr__(self, key, Threshold(_rate(value)))
            key = "min_worst_group_accuracy"
            worst = self.min_worst_group_accuracy
            if worst is not None and not isinstance(worst, WorstGroupAccuracy):
                object.__setattr__(self, key, WorstGroupAccuracy(_rate(worst)))
        except ValueError as exc:
            raise InputError(f"Checks.{key}: {exc}") from None
        object.__setattr__(self, "max_group_gap", tuple(self.max_group_gap))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (written into the summary's ``meta``)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AnalysisOptions:
    """How aggregates are estimated.

    - ``min_group_size``: an estimate from fewer samples is "insufficient data": shown, but never
      passed, failed or counted in a disparity.
    - ``bootstrap``: number of bootstrap resamples behind each confidence interval.
    - ``confidence``: level of the (percentile bootstrap) intervals.
    - ``seed``: seed of the resampling; the same seed gives the same intervals.
    - ``intersections``: attribute combinations broken down jointly, e.g. ``(("skin_tone", "site"),)``.
    """

    min_group_size: int = DEFAULT_MIN_GROUP_SIZE
    bootstrap: int = DEFAULT_BOOTSTRAP
    confidence: float = DEFAULT_CONFIDENCE
    seed: int = 0
    intersections: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "intersections", tuple(tuple(i) for i in self.intersections))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (written into the summary's ``meta``)."""
        return dataclasses.asdict(self)


BAD_SETTING = "AuditSettings `{key}`: {reason}"
DONORS_NEED_COUNTERFACTUAL = "`bg_donors` needs `counterfactual`: the donors are only used by the background swap"
MATCH_NEEDS_COUNTERFACTUAL = "`bg_match` needs `counterfactual`: donors are matched only in the background swap"


@dataclass(frozen=True)
class AuditSettings:
    """Every setting of a run: what is explained and how (the per-sample records depend on these),
    the gallery and the probes beyond heatmaps. One key each of :data:`RUN_KEYS`.

    - ``methods``: CAM methods (names or :class:`~auditcam.cam.CaptumMethod`); the first decides the checks.
    - ``layer``: module name(s) of the explained layer, comma-separated are fused (None: found).
    - ``target``: class each heatmap explains, one of :data:`TARGETS`.
    - ``task``: ``"single"`` (one class per image, softmax) or ``"multilabel"`` (several labels per
      image, sigmoid outputs: every true label, or every label predicted at ``threshold``, is explained).
    - ``threshold``: multilabel: a label is predicted when its sigmoid probability is at least this,
      strictly between 0 and 1.
    - ``reliance_threshold``: focus_lift below this counts as background-reliant.
    - ``batch_size`` (None: 32, or the resumed run's), ``shard_size`` (None: from the dataset size).
    - ``device``: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda[:N]"``, or None (where the model is).
    - ``amp``: autocast: False, True/``"auto"``, ``"bf16"`` or ``"fp16"``.
    - ``gallery_size``: samples shown at each end of the gallery; ``featuremap_channels`` drawn per exemplar.
    - ``counterfactual``: the background-swap test, on ``counterfactual_samples`` samples (None: all),
      backgrounds from ``bg_donors`` (a path or a dataset; None: the audited data), of the sample's
      sharing the sample's value of every group attribute in ``bg_match`` (none: any sample), the
      subject-only variant filled with ``bg_fill``.
    - ``sanity``: the model-randomisation check, on ``sanity_samples`` samples, comparing the maps after
      at most ``sanity_stages`` stages of the cascade.
    - ``strategies``: the strategy discovery and its location-shortcut test (on by default; off, the
      ``max_location_shortcut`` check is not run).
    - ``location_samples``: the location-shortcut test occludes a strategy's spot on at most this many
      of its members (a seeded subset; the paired bootstrap CI holds on it, its ``n`` is recorded).
    """

    methods: tuple[Any, ...] = ("gradcam",)
    layer: str | None = None
    target: str = "pred"
    task: str = "single"
    threshold: float = 0.5
    reliance_threshold: float = 1.0
    batch_size: int | None = None
    shard_size: int | None = None
    device: Any = "auto"
    amp: bool | str = False
    gallery_size: int = 8
    featuremap_channels: int = 9
    counterfactual: bool = False
    counterfactual_samples: int | None = None
    bg_donors: Any = None
    bg_fill: str = "mean"
    bg_match: tuple[str, ...] = ()
    sanity: bool = False
    sanity_samples: int = 32
    sanity_stages: int = 16
    strategies: bool = True
    location_samples: int = 50

    def __post_init__(self) -> None:
        methods = (self.methods,) if isinstance(self.methods, str) else tuple(self.methods)
        object.__setattr__(self, "methods", methods)
        for key in RUN_KEYS.values():
            value = getattr(self, key.name)
            if value is None or _an_object(key.name, value):
                continue
            try:
                object.__setattr__(self, key.name, key.parse(value))
            except ValueError as exc:
                raise InputError(BAD_SETTING.format(key=key.name, reason=exc), key.name) from None
        if self.bg_donors is not None and not self.counterfactual:
            raise InputError(DONORS_NEED_COUNTERFACTUAL, "bg_donors")

    def describe(self, records_only: bool = False) -> dict[str, Any]:
        """JSON-ready settings, written into the summary's ``meta``; ``records_only``: only those
        the per-sample records depend on (the run fingerprint that ``--resume`` compares)."""
        described = {}
        for key in RUN_KEYS.values():
            if records_only and not key.records:
                continue
            value = getattr(self, key.name)
            if key.name == "methods":
                value = [m if isinstance(m, str) else getattr(m, "name", repr(m)) for m in value]
            elif key.name == "bg_donors" and value is not None:
                path = isinstance(value, (str, os.PathLike))
                value = str(value if path else getattr(value, "source", None) or type(value).__name__)
            elif key.name == "device" and value is not None:
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            described[key.name] = value
        return described


def _an_object(key: str, value: Any) -> bool:
    """A torch.device, a Dataset of donors, or methods with a CaptumMethod: taken as they are."""
    if key == "methods":
        return not all(isinstance(m, str) for m in value)
    return key in ("device", "bg_donors") and not isinstance(value, str)


@dataclass(frozen=True)
class Config:
    """Settings, checks and analysis options after merging every layer; ``sources`` lists the files read."""

    checks: Checks = field(default_factory=Checks)
    analysis: AnalysisOptions = field(default_factory=AnalysisOptions)
    settings: AuditSettings = field(default_factory=AuditSettings)
    sources: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# value parsers: raise ValueError with what was expected; the loader adds the file and key


def _number(raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise ValueError(f"expected a number, got {raw!r}")
    return float(raw)


def _rate(raw: Any) -> float:
    value = _number(raw)
    if not 0 <= value <= 1:
        raise ValueError(f"expected a number between 0 and 1, got {raw!r}")
    return value


def _non_negative(raw: Any) -> float:
    value = _number(raw)
    if value < 0:
        raise ValueError(f"expected a number >= 0, got {raw!r}")
    return value


def _integer(minimum: int) -> Callable[[Any], int]:
    def parse(raw: Any) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < minimum:
            raise ValueError(f"expected an integer >= {minimum}, got {raw!r}")
        return raw

    return parse


def _choice(raw: Any, choices: Sequence[str]) -> str:
    if raw not in choices:
        raise ValueError(f"expected one of {', '.join(map(repr, choices))}, got {raw!r}")
    return raw


def _open_rate(raw: Any) -> float:
    """A number strictly between 0 and 1 (a confidence level, a probability threshold)."""
    value = _number(raw)
    if not 0 < value < 1:
        raise ValueError(f"expected a number between 0 and 1 (exclusive), got {raw!r}")
    return value


def _table(raw: Any, required: Sequence[str], optional: Sequence[str]) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"expected a table with keys {', '.join(required + tuple(optional))}, got {raw!r}")
    unknown = [k for k in raw if k not in (*required, *optional)]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; expected {', '.join((*required, *optional))}")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ValueError(f"missing key {missing[0]!r}")
    return dict(raw)


def _decide_on(raw: Any) -> str | None:
    return None if raw is None else _choice(raw, DECIDE_ON)


def _threshold(raw: Any) -> Threshold | None:
    """``0.2``, ``{value = 0.2, decide_on = "upper"}``, or ``false`` (check off)."""
    if raw is False:
        return None
    if isinstance(raw, Mapping):
        table = _table(raw, ("value",), ("decide_on",))
        return Threshold(_rate(table["value"]), _decide_on(table.get("decide_on")))
    return Threshold(_rate(raw))


def _worst_group(raw: Any) -> WorstGroupAccuracy | None:
    if raw is False:
        return None
    if isinstance(raw, Mapping):
        table = _table(raw, ("value",), ("attribute", "decide_on"))
        attribute = table.get("attribute")
        if attribute is not None and (not isinstance(attribute, str) or not attribute.strip()):
            raise ValueError(f"attribute: expected a column name, got {attribute!r}")
        return WorstGroupAccuracy(_rate(table["value"]), attribute, _decide_on(table.get("decide_on")))
    return WorstGroupAccuracy(_rate(raw))


def _attribute_name(raw: Any) -> str:
    names = _intersection(raw) if isinstance(raw, str) and ("," in raw or "&" in raw) else None
    if names:
        return ",".join(names)
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"attribute: expected a column name, got {raw!r}")
    return raw.strip()


def _gap(raw: Any) -> GroupGap:
    table = _table(raw, ("attribute", "metric", "value"), ("decide_on",))
    metric = table["metric"]
    if metric not in GAP_METRICS:
        raise ValueError(f"metric: expected one of {', '.join(GAP_METRICS)}, got {metric!r}")
    return GroupGap(
        _attribute_name(table["attribute"]),
        GAP_METRICS[metric],
        _non_negative(table["value"]),
        _decide_on(table.get("decide_on")),
    )


def _gaps(raw: Any) -> tuple[GroupGap, ...]:
    if raw is False:
        return ()
    items = [raw] if isinstance(raw, Mapping) else raw
    if not isinstance(items, list):
        raise ValueError(f"expected a table or an array of tables, got {raw!r}")
    gaps = []
    for i, item in enumerate(items):
        try:
            gaps.append(_gap(item))
        except ValueError as exc:
            raise ValueError(f"item {i + 1}: {exc}") from None
    return tuple(gaps)


def _intersection(raw: Any) -> tuple[str, ...]:
    """``"skin_tone,site"``, ``"skin_tone & site"`` or ``["skin_tone", "site"]``."""
    if isinstance(raw, str):
        names = [n.strip() for n in raw.replace("&", ",").split(",")]
    elif isinstance(raw, list) and all(isinstance(n, str) for n in raw):
        names = [n.strip() for n in raw]
    else:
        raise ValueError(f"expected attribute names like 'skin_tone,site', got {raw!r}")
    if len(names) < 2 or not all(names) or len(set(names)) != len(names):
        raise ValueError(f"an intersection needs two or more distinct attribute names, got {raw!r}")
    return tuple(names)


def _attribute_names(raw: Any) -> tuple[str, ...]:
    """``["site", "scanner"]`` (a single name is taken as a list of one)."""
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(f'expected attribute names like ["site"], got {raw!r}')
    return tuple(dict.fromkeys(n.strip() for n in names))


def _intersections(raw: Any) -> tuple[tuple[str, ...], ...]:
    if not isinstance(raw, list):
        raise ValueError(f'expected an array like ["skin_tone,site"], got {raw!r}')
    return tuple(dict.fromkeys(_intersection(item) for item in raw))


CHECK_KEYS: dict[str, Callable[[Any], Any]] = {
    "max_background_reliant_rate": _threshold,
    "min_subject_share": _threshold,
    "min_accuracy": _threshold,
    "max_error_rate": _threshold,
    "min_worst_group_accuracy": _worst_group,
    "max_group_gap": _gaps,
    "max_bg_gap": _threshold,
    "max_background_following": _threshold,
    "max_sanity_correlation": _threshold,
    "max_location_shortcut": _threshold,
    "decide_on": lambda raw: _choice(raw, DECIDE_ON),
    "insufficient_data": lambda raw: _choice(raw, INSUFFICIENT_DATA),
}
ANALYSIS_KEYS: dict[str, Callable[[Any], Any]] = {
    "min_group_size": _integer(1),
    "bootstrap": _integer(1),
    "confidence": _open_rate,
    "seed": _integer(0),
    "intersections": _intersections,
}


def _text(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"expected a non-empty string, got {raw!r}")
    return raw.strip()


def _flag(raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise ValueError(f"expected true or false, got {raw!r}")
    return raw


def _methods(raw: Any) -> tuple[str, ...]:
    """``"gradcam,layercam"`` or ``["gradcam", "layercam"]``."""
    if isinstance(raw, str):
        names = [m.strip() for m in raw.split(",") if m.strip()]
    elif isinstance(raw, (list, tuple)) and all(isinstance(m, str) and m.strip() for m in raw):
        names = [m.strip() for m in raw]
    else:
        raise ValueError(f'expected method names like "gradcam,layercam" or ["gradcam"], got {raw!r}')
    if not names:
        raise ValueError(f"give at least one method, e.g. gradcam; got {raw!r}")
    return tuple(names)


def _count_text(minimum: int) -> Callable[[str], int]:
    """Command-line text of a count -> int (the value parser then checks it as a TOML value)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise ValueError(f"expected {expected}, got {text!r}")
        return value

    return parse


def _number_text(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def _amp(raw: Any) -> bool | str:
    return raw if isinstance(raw, bool) else _choice(raw, AMP)


TARGETS = ("pred", "label")
AMP = ("auto", "bf16", "fp16")
BG_FILLS = ("mean", "black")  # mean: the normalisation mean (0 in model input); black: 0 in pixels


@dataclass(frozen=True)
class RunKey:
    """One run setting: the :class:`AuditSettings` field ``name``, its parser (a TOML value, or the
    command-line text after ``text``, to the value; ValueError says what was expected), its help,
    and how the ``audit`` and ``compare`` flag is spelled (``flag``; default ``--name-with-dashes``).

    ``action``: ``"store_true"``/``"store_false"`` for a switch, ``"optional"`` for a flag whose
    value may be left out (then ``const``), ``"append"`` for a repeatable one (a list); ``records``:
    the per-sample records depend on it, so it is part of the run fingerprint; ``group``: the
    section of ``--help``."""

    name: str
    parse: Callable[[Any], Any]
    help: str
    group: str
    flag: str = ""
    metavar: str | None = None
    text: Callable[[str], Any] = str
    action: str | None = None
    const: Any = None
    records: bool = False

    @property
    def option(self) -> str:
        """The command-line flag."""
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def default(self) -> Any:
        """The default, from :class:`AuditSettings` (one place)."""
        return AuditSettings.__dataclass_fields__[self.name].default


_EXPLAIN, _RUN, _BEYOND = "explanations", "batches and devices", "beyond heatmaps"
RUN_KEYS: dict[str, RunKey] = {
    k.name: k
    for k in (
        RunKey(
            "methods",
            _methods,
            "CAM method(s), comma-separated, from gradcam, gradcam++, xgradcam, hirescam, layercam, eigencam, "
            "eigengradcam, scorecam, or captum:NAME for a captum.attr attribution (e.g. captum:IntegratedGradients); "
            "the first decides the checks",
            _EXPLAIN,
            flag="--method",
            metavar="NAMES",
            records=True,
        ),
        RunKey(
            "layer",
            _text,
            "module name of the layer to explain; several comma-separated are fused (default: found automatically)",
            _EXPLAIN,
            records=True,
        ),
        RunKey(
            "target",
            lambda raw: _choice(raw, TARGETS),
            "class each heatmap explains: the prediction or the true label (multilabel: every label predicted "
            "at --threshold, or every true label)",
            _EXPLAIN,
            metavar="|".join(TARGETS),
            records=True,
        ),
        RunKey(
            "task",
            lambda raw: _choice(raw, TASKS),
            "single: one class per image (softmax outputs); multilabel: several labels per image (sigmoid outputs), "
            "a 'labels' column such as cat;dog",
            _EXPLAIN,
            metavar="|".join(TASKS),
            records=True,
        ),
        RunKey(
            "threshold",
            _open_rate,
            "multilabel: a label is predicted when its sigmoid probability is at least this (strictly between 0 and 1)",
            _EXPLAIN,
            metavar="P",
            text=_number_text,
            records=True,
        ),
        RunKey(
            "reliance_threshold",
            _non_negative,
            "focus_lift below this counts as background-reliant",
            _EXPLAIN,
            metavar="X",
            text=_number_text,
            records=True,
        ),
        RunKey(
            "batch_size",
            _integer(1),
            "images per batch (default: 32, or the resumed run's)",
            _RUN,
            metavar="N",
            text=_count_text(1),
            records=True,
        ),
        RunKey(
            "shard_size",
            _integer(1),
            "samples per shard, a multiple of the batch size (default: about 64 shards, at most 128 batches each)",
            _RUN,
            metavar="N",
            text=_count_text(1),
            records=True,
        ),
        RunKey(
            "device", _text, "cpu, cuda, cuda:N or auto (= cuda when available)", _RUN, metavar="NAME", records=True
        ),
        RunKey(
            "amp",
            _amp,
            "run the model under autocast (auto: bf16 on the CPU, fp16 or bf16 on CUDA)",
            _RUN,
            metavar="|".join(AMP),
            action="optional",
            const="auto",
            records=True,
        ),
        RunKey(
            "gallery_size",
            _integer(0),
            "samples shown at each end of the gallery",
            _RUN,
            metavar="N",
            text=_count_text(0),
        ),
        RunKey(
            "featuremap_channels",
            _integer(0),
            "feature-map channels of the explained layer drawn per gallery exemplar (0: none)",
            _RUN,
            metavar="K",
            text=_count_text(0),
        ),
        RunKey(
            "counterfactual",
            _flag,
            "also test the model on background-swapped images (ImageNet-9 variants) and report BG-gap",
            _BEYOND,
            action="store_true",
        ),
        RunKey(
            "counterfactual_samples",
            _integer(1),
            "test a seeded random subset of N samples (default: all)",
            _BEYOND,
            metavar="N",
            text=_count_text(1),
        ),
        RunKey(
            "bg_donors",
            _text,
            "take the swapped-in backgrounds from this labelled dataset (manifest, COCO JSON or folder; "
            "same classes), e.g. in-distribution data (default: the audited data)",
            _BEYOND,
            metavar="PATH",
        ),
        RunKey(
            "bg_fill",
            lambda raw: _choice(raw, BG_FILLS),
            "background of the subject-only variant: the normalisation mean or black",
            _BEYOND,
            metavar="|".join(BG_FILLS),
        ),
        RunKey(
            "bg_match",
            _attribute_names,
            "a background donor shares the sample's value of this group attribute, repeatable "
            "(default: none, donors from any sample)",
            _BEYOND,
            metavar="ATTR",
            action="append",
        ),
        RunKey(
            "sanity",
            _flag,
            "also check that the heatmaps change when the model's weights are randomised (Adebayo et al.)",
            _BEYOND,
            action="store_true",
        ),
        RunKey(
            "sanity_samples",
            _integer(1),
            "samples explained at every randomisation stage",
            _BEYOND,
            metavar="N",
            text=_count_text(1),
        ),
        RunKey(
            "sanity_stages",
            _integer(2),
            "compare the maps after at most this many randomisation stages, first and last included",
            _BEYOND,
            metavar="N",
            text=_count_text(2),
        ),
        RunKey(
            "strategies",
            _flag,
            "skip the strategy discovery and its location-shortcut test (the occlusion of each strategy's hot "
            "spot), and with them the max_location_shortcut check",
            _BEYOND,
            flag="--no-strategies",
            action="store_false",
        ),
        RunKey(
            "location_samples",
            _integer(1),
            "the location-shortcut test occludes each strategy's spot on a seeded subset of at most N members",
            _BEYOND,
            metavar="N",
            text=_count_text(1),
        ),
    )
}
KEYS: dict[str, Callable[[Any], Any]] = {**CHECK_KEYS, **ANALYSIS_KEYS, **{k: v.parse for k, v in RUN_KEYS.items()}}
FLAGS: dict[str, str] = {
    **{key: "--" + key.replace("_", "-") for key in (*CHECK_KEYS, *ANALYSIS_KEYS)},
    "intersections": "--intersection",  # the flag is singular, repeated
    **{key: k.option for key, k in RUN_KEYS.items()},
}
"""The command-line flag of every key."""


# ---------------------------------------------------------------------------------------------
# layers


def parse_settings(raw: Mapping[str, Any], where: Callable[[str], str]) -> dict[str, Any]:
    """Validate one layer's raw settings; ``where(key)`` names the key's origin in errors."""
    parsed = {}
    for key, value in raw.items():
        if key not in KEYS:
            raise InputError(f"{where(key)}: unknown key; known keys: {', '.join(KEYS)}")
        try:
            parsed[key] = KEYS[key](value)
        except ValueError as exc:
            raise InputError(f"{where(key)}: {exc}") from None
    return parsed


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the config file ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None


def _tool_table(path: Path, data: Mapping[str, Any]) -> Mapping[str, Any]:
    table = data.get("tool", {}).get("auditcam", {}) if isinstance(data.get("tool"), Mapping) else {}
    if not isinstance(table, Mapping):
        raise InputError(f"{path}: [tool.auditcam] must be a table")
    return table


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The parsed settings of a ``--config`` file: keys at the top level, or in ``[tool.auditcam]``
    when the file is a ``pyproject.toml`` or holds only a ``tool`` table."""
    path = Path(path)
    data = _read_toml(path)
    if path.name == "pyproject.toml" or set(data) == {"tool"}:
        return parse_settings(_tool_table(path, data), lambda key: f"{path}: [tool.auditcam] {key}")
    return parse_settings(data, lambda key: f"{path}: {key}")


def find_pyproject(start: str | Path | None = None) -> Path | None:
    """The closest ``pyproject.toml`` at or above ``start`` (default: the working directory) that
    has a ``[tool.auditcam]`` table; files without one are passed over, as ruff does."""
    start = Path.cwd() if start is None else Path(start)
    for folder in (start.resolve(), *start.resolve().parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            data = _read_toml(candidate)
            if isinstance(data.get("tool"), Mapping) and "auditcam" in data["tool"]:
                return candidate
    return None


def read_pyproject(path: str | Path) -> dict[str, Any]:
    """The parsed ``[tool.auditcam]`` settings of a pyproject.toml."""
    path = Path(path)
    table = _tool_table(path, _read_toml(path))
    return parse_settings(table, lambda key: f"{path}: [tool.auditcam] {key}")


def build_config(*layers: Mapping[str, Any], sources: Sequence[str] = ()) -> Config:
    """Merge parsed layers, lowest precedence first, over the defaults."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    checks = Checks(**{k: v for k, v in merged.items() if k in CHECK_KEYS})
    analysis = AnalysisOptions(**{k: v for k, v in merged.items() if k in ANALYSIS_KEYS})
    settings = AuditSettings(**{k: v for k, v in merged.items() if k in RUN_KEYS})
    return Config(checks=checks, analysis=analysis, settings=settings, sources=tuple(sources))


def load_config(
    cli: Mapping[str, Any] | None = None,
    config_file: str | Path | None = None,
    *,
    cwd: str | Path | None = None,
    use_pyproject: bool = True,
) -> Config:
    """Merge the command line (``cli``: raw values by key), ``config_file`` and the closest
    ``[tool.auditcam]`` pyproject table above ``cwd``, in that order of precedence."""
    layers, sources = [], []
    pyproject = find_pyproject(cwd) if use_pyproject else None
    if pyproject is not None:
        layers.append(read_pyproject(pyproject))
        sources.append(str(pyproject))
    if config_file is not None:
        layers.append(read_config_file(config_file))
        sources.append(str(config_file))
    layers.append(parse_settings(cli or {}, lambda key: FLAGS.get(key, key)))
    return build_config(*layers, sources=sources)
