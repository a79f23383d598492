"""Command line: ``auditcam demo``, ``audit``, ``compare``, ``trend``, ``validate``,
``featuremaps`` and ``report``.

Exit codes: 0 every check passed, 1 a check failed (or lacks data, unless
``insufficient_data = "skip"``), 2 bad input or usage (one line on stderr, no traceback),
3 internal error (a bug: traceback and a request to report it). ``compare`` exits with the
verdict of model B's checks, ``trend`` with that of the last checkpoint's.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from auditcam.config import (
    DECIDE_ON,
    DEFAULT_MAX_BACKGROUND_FOLLOWING,
    DEFAULT_MAX_BACKGROUND_RELIANT_RATE,
    DEFAULT_MAX_BG_GAP,
    DEFAULT_MAX_LOCATION_SHORTCUT,
    DEFAULT_MAX_SANITY_CORRELATION,
    DEFAULT_MIN_GROUP_SIZE,
    FLAGS,
    INSUFFICIENT_DATA,
    RUN_KEYS,
    RunKey,
)
from auditcam.errors import InputError, Interrupted
from auditcam.models import INTERPOLATIONS
from auditcam.version import __version__

EXIT_PASS, EXIT_FAIL, EXIT_INPUT, EXIT_BUG = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
ISSUES_URL = "https://github.com/auditcam/auditcam/issues"
# API parameters named in library messages -> the flag a command-line user gave
PARAMETER_FLAGS = {
    **FLAGS,
    "run_dir": "--out",
    "resume": "--resume",
    "overwrite": "--overwrite",
    "num_workers": "--workers",
    "num_classes": "--num-classes",
    "classes": "--classes",
    "checkpoints": "--weights",
    "steps": "--step",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{self.prog}: {message} (see {self.prog} --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def _names(text: str) -> list[str]:
    """A comma-separated list of names."""
    return [m.strip() for m in text.split(",") if m.strip()]


def _threshold(text: str) -> float | bool:
    """A check threshold, or ``off`` (False: turn a default check off)."""
    return False if text.strip().lower() in ("off", "none") else _rate(text)


def _gap(text: str) -> dict[str, object]:
    """``ATTRIBUTE:METRIC:VALUE``, e.g. ``skin_tone:subject_share:0.1``."""
    parts = text.rsplit(":", 2)
    try:
        attribute, metric, value = parts
        return {"attribute": attribute, "metric": metric, "value": float(value)}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected ATTRIBUTE:METRIC:VALUE, e.g. site:subject_share:0.1, got {text!r}"
        ) from None


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the checks and analysis options; each overrides --config and [tool.auditcam]."""
    kept = {"default": argparse.SUPPRESS}  # absent unless given, so lower layers show through
    checks = parser.add_argument_group(
        "checks",
        "Flags override --config, which overrides [tool.auditcam] in the closest pyproject.toml. "
        "A threshold of 'off' turns a check off.",
    )
    checks.add_argument("--config", type=Path, metavar="TOML", help="settings, checks and options from this TOML file")
    checks.add_argument("--isolated", action="store_true", help="ignore [tool.auditcam] in pyproject.toml")
    checks.add_argument(
        "--max-background-reliant-rate",
        type=_threshold,
        metavar="RATE",
        help="fail if more than this share of samples is background-reliant "
        f"(default: {DEFAULT_MAX_BACKGROUND_RELIANT_RATE})",
        **kept,
    )
    checks.add_argument(
        "--min-subject-share", type=_threshold, metavar="SHARE", help="floor on the mean subject_share", **kept
    )
    checks.add_argument("--min-accuracy", type=_threshold, metavar="RATE", help="floor on the accuracy", **kept)
    checks.add_argument(
        "--max-error-rate", type=_threshold, metavar="RATE", help="ceiling on the share of unscored samples", **kept
    )
    checks.add_argument(
        "--min-worst-group-accuracy",
        type=_threshold,
        metavar="RATE",
        help="floor on the accuracy of the worst group of every attribute",
        **kept,
    )
    checks.add_argument(
        "--max-group-gap",
        type=_gap,
        action="append",
        metavar="ATTR:METRIC:VALUE",
        help="ceiling on a metric's difference between groups, e.g. site:subject_share:0.1 (repeatable)",
        **kept,
    )
    checks.add_argument(
        "--max-bg-gap",
        type=_threshold,
        metavar="GAP",
        help="with --counterfactual: ceiling on BG-gap, accuracy on same-class minus other-class backgrounds "
        f"(default: {DEFAULT_MAX_BG_GAP})",
        **kept,
    )
    checks.add_argument(
        "--max-background-following",
        type=_threshold,
        metavar="RATE",
        help="with --counterfactual: ceiling on the share of swaps onto another class's background whose "
        f"prediction moves to the donor image's (default: {DEFAULT_MAX_BACKGROUND_FOLLOWING})",
        **kept,
    )
    checks.add_argument(
        "--max-sanity-correlation",
        type=_threshold,
        metavar="R",
        help="with --sanity: ceiling on the rank correlation of the heatmaps with those of the randomised model "
        f"(default: {DEFAULT_MAX_SANITY_CORRELATION})",
        **kept,
    )
    checks.add_argument(
        "--max-location-shortcut",
        type=_threshold,
        metavar="DIFF",
        help="ceiling on how much more occluding a strategy's hot spot flips predictions than an equally large "
        f"control region, over spots off the subject (default: {DEFAULT_MAX_LOCATION_SHORTCUT})",
        **kept,
    )
    checks.add_argument("--decide-on", choices=DECIDE_ON, help="estimate that decides checks (default: point)", **kept)
    checks.add_argument(
        "--insufficient-data",
        choices=INSUFFICIENT_DATA,
        help="a check without enough data fails the audit, or is skipped (default: fail)",
        **kept,
    )
    checks.add_argument(
        "--min-group-size",
        type=_positive_int,
        metavar="N",
        help=f"estimates from fewer samples are 'insufficient data' (default: {DEFAULT_MIN_GROUP_SIZE})",
        **kept,
    )
    checks.add_argument(
        "--bootstrap", type=_positive_int, metavar="N", help="bootstrap resamples (default: 1000)", **kept
    )
    checks.add_argument("--confidence", type=float, help="level of the intervals (default: 0.95)", **kept)
    checks.add_argument("--seed", type=int, help="seed of the bootstrap (default: 0)", **kept)
    checks.add_argument(
        "--intersection",
        dest="intersections",
        action="append",
        metavar="A,B",
        help="also break down by the combination of these attributes (repeatable)",
        **kept,
    )


def load_config_from_args(args: argparse.Namespace):
    """The merged configuration: these flags > --config > [tool.auditcam] > defaults. A project's
    ``bg_match`` may wait for a run with the counterfactual test; --bg-match on its own is a slip."""
    from auditcam.config import KEYS, MATCH_NEEDS_COUNTERFACTUAL, load_config

    given = {key: getattr(args, key) for key in KEYS if hasattr(args, key)}
    config = load_config(given, args.config, use_pyproject=not args.isolated)
    if "bg_match" in given and not config.settings.counterfactual:
        raise InputError(MATCH_NEEDS_COUNTERFACTUAL, "bg_match")
    return config


def add_setting_arguments(parser: argparse.ArgumentParser) -> None:
    """The run-setting flags of ``audit`` and ``compare``, one per key of :data:`auditcam.config.RUN_KEYS`;
    like the checks, each overrides --config and [tool.auditcam]."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key in RUN_KEYS.values():
        group = groups.get(key.group) or groups.setdefault(key.group, parser.add_argument_group(key.group))
        group.add_argument(key.option, dest=key.name, default=argparse.SUPPRESS, **_argument(key))


def _text_of(key: RunKey):
    """argparse ``type`` of a run key: its command-line text converter, with argparse's error."""

    def convert(text: str):
        try:
            return key.text(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = key.name
    return convert


def _argument(key: RunKey) -> dict:
    """argparse options of one run key; the value is parsed (and errors named) by the config layer."""
    if key.action in ("store_true", "store_false"):
        return {"action": key.action, "help": key.help}
    default = key.default
    shown = ",".join(default) if isinstance(default, tuple) else "off" if default is False else default
    shown = "" if default is None or "(default:" in key.help else f" (default: {shown})"
    options = {"type": _text_of(key), "metavar": key.metavar, "help": key.help + shown}
    if key.action == "optional":
        options.update(nargs="?", const=key.const)
    elif key.action == "append":
        options["action"] = "append"
    return options


def build_parser() -> argparse.ArgumentParser:
    """The ``auditcam`` parser with its subcommands."""
    parser = _Parser(prog="auditcam", description="Audit image classifiers for background bias with Grad-CAM.")
    parser.add_argument("--version", action="version", version=f"auditcam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="train a shortcut and a clean tiny model on synthetic data and audit both")
    demo.add_argument("--out", type=Path, default=Path("auditcam-demo"), help="output folder (default: auditcam-demo)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(handler=_run_demo)

    run = sub.add_parser("audit", help="audit a model on a labelled dataset with subject masks")
    add_model_arguments(run.add_argument_group("model"))
    data = run.add_argument_group("data")
    _add_data_arguments(data)
    data.add_argument(
        "--allow-missing",
        action="store_true",
        help="record samples whose files are missing as errors instead of stopping",
    )
    add_setting_arguments(run)
    add_check_arguments(run)
    runtime = run.add_argument_group("run")
    runtime.add_argument("--out", required=True, type=Path, help="output folder for the report and results")
    runtime.add_argument("--name", help="model name shown in the report (default: the weights file's stem)")
    _add_workers_argument(runtime)
    runtime.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_scale_arguments(run)
    _add_log_argument(runtime)
    run.set_defaults(handler=_run_audit)
    _add_compare(sub)
    _add_trend(sub)
    _add_validate(sub)
    _add_featuremaps(sub)
    _add_report(sub)
    return parser


def _add_report(sub: argparse._SubParsersAction) -> None:
    """``auditcam report``: render the views of an audit (comparison, trend) folder again."""
    report = sub.add_parser(
        "report",
        help="render an audit's (or comparison's, or trend's) report.html and junit.xml again from its folder, "
        "e.g. after an upgrade",
    )
    report.add_argument("out", type=Path, metavar="OUT", help="the --out folder of an audit, comparison or trend")
    report.add_argument(
        "--format",
        type=_names,
        metavar="NAMES",
        help="views to render, comma-separated, from html, junit (default: all)",
    )
    report.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from auditcam.result import Comparison, Trend, read_bundle, render_views

    bundle = read_bundle(args.out)
    paths = render_views(bundle, args.out, args.format)
    kind = "comparison" if isinstance(bundle, Comparison) else "trend" if isinstance(bundle, Trend) else "audit"
    print(f"{'PASSED' if bundle.passed else 'FAILED'} {kind}; rendered {', '.join(map(str, paths.values()))}")
    return EXIT_PASS


MODEL_SPECS = (
    "torchvision:NAME, timm:NAME, hf:PATH (a Hugging Face folder), path/to/file.py:function or package.module:function"
)


def add_model_arguments(group: argparse._ArgumentGroup, *, twice: bool = False, checkpoints: bool = False) -> None:
    """The flags that load a model and set its preprocessing, shared by every subcommand that loads
    one; with ``twice`` (``compare``), --model, --weights and --num-classes are given once or twice;
    with ``checkpoints`` (``trend``), --weights names several files or globs."""
    per_model = {"action": "append"} if twice else {}
    each = " (once or twice)" if twice else ""
    group.add_argument("--model", required=True, metavar="SPEC", help=MODEL_SPECS + each, **per_model)
    if checkpoints:
        group.add_argument(
            "--weights",
            required=True,
            nargs="+",
            action="extend",
            metavar="FILE|GLOB",
            help="the checkpoints' state dicts (.safetensors, .pt, .pth): files or quoted globs such as "
            "'ckpts/*.pt'; repeatable. Ordered by name (numbers compared as numbers) unless --step is given",
        )
    else:
        group.add_argument("--weights", type=Path, help="state dict: .safetensors, .pt or .pth" + each, **per_model)
    group.add_argument(
        "--num-classes",
        type=_positive_int,
        help="number of model outputs, if the factory needs it" + each,
        **per_model,
    )
    group.add_argument(
        "--model-arg",
        action="append",
        metavar="KEY=VALUE",
        help="keyword argument for the model's constructor, the value a Python literal, e.g. img_size=32 (repeatable)",
    )
    group.add_argument(
        "--pretrained", action="store_true", help="timm:NAME: load timm's own pretrained weights (needs the network)"
    )
    group.add_argument("--image-size", help="model input size: N or HxW (default: from the model)")
    group.add_argument(
        "--crop-pct",
        type=_crop_pct,
        metavar="FRACTION",
        help="resize to image size / FRACTION, then centre crop, as timm does (default: from the model)",
    )
    group.add_argument(
        "--interpolation",
        choices=INTERPOLATIONS,
        help="resampling of the images (default: from the model, else bilinear)",
    )
    group.add_argument("--mean", help="normalisation mean, three comma-separated numbers (default: from the model)")
    group.add_argument("--std", help="normalisation std, three comma-separated numbers (default: from the model)")


def _crop_pct(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], e.g. 0.875, got {text!r}")
    return value


def model_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`~auditcam.models.load_model_info` beyond spec, weights and
    number of classes, taken from the flags of :func:`add_model_arguments`."""
    from auditcam.models import parse_model_args, parse_size, parse_triple

    return {
        "image_size": None if args.image_size is None else parse_size(args.image_size),
        "mean": None if args.mean is None else parse_triple(args.mean, "--mean"),
        "std": None if args.std is None else parse_triple(args.std, "--std"),
        "interpolation": args.interpolation,
        "crop_pct": args.crop_pct,
        "model_args": parse_model_args(args.model_arg),
        "pretrained": args.pretrained,
    }


def _log_target(text: str):
    from auditcam.integrations.targets import parse_log_target

    try:
        return parse_log_target(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_log_argument(parser: argparse.ArgumentParser) -> None:
    """``--log mlflow[:URI]`` / ``--log tensorboard[:DIR]`` (repeatable), checked before any work."""
    parser.add_argument(
        "--log",
        type=_log_target,
        action="append",
        default=[],
        metavar="TARGET",
        help="also log the audit to mlflow[:URI] (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db) "
        "or tensorboard[:DIR] (default: runs); repeatable. The bundle is written first: a tracker that "
        "fails costs a warning, never the audit",
    )


def _add_scale_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of long runs: resume, overwrite (device, autocast and shard size are run settings)."""
    scale = parser.add_argument_group(
        "large runs",
        "Records stream to shards in --out as the run goes; a killed or interrupted run continues with --resume. "
        "Under torchrun every process explains its share (see the README).",
    )
    again = scale.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out (same model, data and settings), or start it if there is none; "
        "on a finished run, analyse its samples again with the current checks",
    )
    again.add_argument("--overwrite", action="store_true", help="delete the run or results in --out and start again")


def _workers(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of processes >= 0, got {text!r}")
    return value


def _add_workers_argument(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--workers",
        type=_workers,
        default=None,
        metavar="N|auto",
        help="processes that decode images in parallel (default: auto = none for up to two batches, "
        "else half the CPU cores, at most 4)",
    )


def _add_data_arguments(group: argparse._ArgumentGroup) -> None:
    """The dataset flags shared by ``audit`` and ``validate``."""
    from auditcam.data import FORMATS
    from auditcam.data.grabcut import SUBJECT_FROM_BOXES

    group.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="PATH",
        help="manifest (.csv/.parquet: image, label, mask or box columns; other columns are group attributes), "
        "COCO instances .json, or a folder root/<class>/<image>",
    )
    group.add_argument("--format", choices=FORMATS, help="format of --data (default: from the path)")
    group.add_argument("--classes", type=Path, help="class names, one per line, in the model's output order")
    group.add_argument("--images", type=Path, help="COCO: folder of the images (default: the JSON's folder)")
    group.add_argument(
        "--coco-labels",
        type=Path,
        metavar="CSV",
        help="COCO: columns image (file_name), label; these rows are the samples "
        "(default: every image, labelled by its largest category)",
    )
    group.add_argument(
        "--masks", type=Path, help="folder layout: the tree masks/<class>/<stem>.png (default: root/masks)"
    )
    group.add_argument(
        "--mask-value",
        type=int,
        metavar="N",
        help="masks are instance-id maps: pixels equal to N are the subject (default: every pixel > 0)",
    )
    group.add_argument(
        "--resize-masks",
        action="store_true",
        help="resize (nearest) a mask whose size differs from its image's but whose aspect ratio matches",
    )
    group.add_argument(
        "--subject-from-boxes",
        choices=SUBJECT_FROM_BOXES,
        help="refine each box (manifest box columns) into a subject mask with OpenCV's GrabCut, "
        "for detection boxes that count background as subject",
    )


def _data_options(args: argparse.Namespace) -> dict:
    """The dataset keyword arguments of :meth:`LabelledDataset.open` taken from the flags."""
    return {
        "format": args.format,
        "images": args.images,
        "labels": args.coco_labels,
        "masks": args.masks,
        "mask_value": args.mask_value,
        "resize_masks": args.resize_masks,
        "subject_from_boxes": args.subject_from_boxes,
    }


def _add_validate(sub: argparse._SubParsersAction) -> None:
    from auditcam.config import TASKS

    check = sub.add_parser("validate", help="check a dataset before a long audit and list its problems")
    _add_data_arguments(check)
    check.add_argument(
        "--task",
        choices=TASKS,
        default="single",
        help="multilabel: several labels per sample (a 'labels' column such as cat;dog, every category of a "
        "COCO image) (default: single)",
    )
    _add_workers_argument(check)
    check.add_argument("--no-progress", action="store_true", help="no progress bar")
    check.set_defaults(handler=_run_validate)


def _run_validate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from auditcam.data import DataOptions, MaskOptions, format_table, read_classes, validate

    result = validate(
        args.data,
        format=args.format,
        classes=read_classes(args.classes) if args.classes else None,
        options=DataOptions(images=args.images, labels=args.coco_labels, masks=args.masks),
        masks=MaskOptions(
            subject_value=args.mask_value, resize=args.resize_masks, subject_from_boxes=args.subject_from_boxes
        ),
        workers=args.workers,
        progress=not args.no_progress,
        multilabel=args.task == "multilabel",
    )
    source = result.source
    for note in source.notes:
        print(f"note: {note}")
    classes = "class indices" if source.classes is None else f"{len(source.classes)} classes"
    print(f"{source.path} ({source.format}): {len(source.rows)} samples checked, {classes}")
    print(
        f"subjects: {result.with_subject} samples with a subject, {result.without_subject} without "
        "(audited on everything mask-free; their subject metrics are not measured)"
    )
    if result.ok:
        print("OK: no problems found")
        return EXIT_PASS
    print(format_table(result.problems))
    print(
        f"{len(result.problems)} problem(s). An audit stops at missing files (unless --allow-missing), unknown "
        "labels and duplicate ids; it records the other problems per sample with their reason"
    )
    return EXIT_FAIL


def _run_demo(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from auditcam.demo import run_demo

    print("auditcam demo: does a model look at the subject or at the background?")
    run = run_demo(args.out, seed=args.seed, progress=not args.no_progress)
    print()
    for name, result in run.results.items():
        verdict = "PASSED" if result.passed else "FAILED"
        print(f"{name:>8} model: {verdict}  report: {run.reports[name]}")
    print(f"\nOpen {run.reports['index']} in a browser: the shortcut model looks at the background.")
    return EXIT_PASS


def _run_audit(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from auditcam.audit import audit
    from auditcam.data import read_classes
    from auditcam.models import load_model_info

    config = load_config_from_args(args)
    model, info = load_model_info(args.model, args.weights, args.num_classes, **model_options(args))
    classes = read_classes(args.classes) if args.classes else info.classes
    dataset = _open_data(args, classes, info.preprocessing, config.settings.task)
    result = audit(
        model,
        dataset,
        _with_donors(config.settings, dataset, args.allow_missing),
        checks=config.checks,
        analysis=config.analysis,
        model_info=info,
        name=args.name,
        run_dir=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        num_workers=args.workers,
        progress=not args.no_progress,
        command="auditcam " + shlex.join(argv),
        config_sources=config.sources,
    )
    if result is None:  # another process of a torchrun job: rank 0 reports
        return EXIT_PASS
    paths = result.write(args.out)
    if args.log:
        from auditcam.integrations.targets import log_result

        log_result(result, args.out, args.log)
    for check in result.checks:
        print(f"{check.outcome.upper():>17}  {check.message}")
    print(f"{'PASSED' if result.passed else 'FAILED'}: report {paths['report.html']}, junit {paths['junit.xml']}")
    return EXIT_PASS if result.passed else EXIT_FAIL


def _open_data(args: argparse.Namespace, classes, preprocessing, task: str):
    """The audited dataset as the data flags say; what the reader assumed (e.g. one label per
    sample of a multi-label audit) is printed as a note."""
    from auditcam.data import LabelledDataset

    dataset = LabelledDataset.open(
        args.data,
        classes=classes,
        preprocessing=preprocessing,
        allow_missing=args.allow_missing,
        task=task,
        **_data_options(args),
    )
    for note in dataset.notes:
        print(f"auditcam: note: {note}", file=sys.stderr)
    return dataset


def _with_donors(settings, dataset, allow_missing: bool):
    """The settings with ``bg_donors`` (a path) opened as a dataset of the audited classes, so
    --allow-missing applies to it too."""
    import dataclasses

    from auditcam.data import LabelledDataset

    if settings.bg_donors is None:
        return settings
    donors = LabelledDataset.open(
        settings.bg_donors,
        classes=dataset.classes,
        preprocessing=dataset.preprocessing,
        allow_missing=allow_missing,
    )
    return dataclasses.replace(settings, bg_donors=donors)


def _add_featuremaps(sub: argparse._SubParsersAction) -> None:
    """``auditcam featuremaps``: every conv layer's output for some images, and the shape table."""
    maps = sub.add_parser(
        "featuremaps",
        help="show every conv layer's feature maps for an image, with output shapes and the conv arithmetic",
    )
    add_model_arguments(maps.add_argument_group("model"))
    maps.add_argument("--image", type=Path, action="append", required=True, help="an image (repeatable)")
    maps.add_argument(
        "--layer", action="append", metavar="NAME", help="only these modules (repeatable; default: every Conv2d)"
    )
    maps.add_argument("--channels", type=_positive_int, default=16, metavar="K", help="channels per grid (default: 16)")
    maps.add_argument("--out", required=True, type=Path, help="output folder")
    maps.set_defaults(handler=_run_featuremaps)


def _run_featuremaps(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import torch
    from torchvision import tv_tensors

    from auditcam.data import SampleFault, read_image
    from auditcam.models import load_model_info
    from auditcam.probes.featuremaps import capture
    from auditcam.report.featuremaps import ImageMaps, write_featuremaps

    model, info = load_model_info(args.model, args.weights, args.num_classes, **model_options(args))
    pre, images = info.preprocessing, []
    for path in args.image:
        try:
            raw = read_image(path)
        except SampleFault as fault:
            raise InputError(f"--image {path}: {fault.reason}") from None
        shown = pre.geometry()(tv_tensors.Image(raw)).as_subclass(torch.Tensor)
        layers = capture(model, pre.normalise(shown.float() / 255.0)[None], args.layer)
        images.append(ImageMaps(str(path), shown.permute(1, 2, 0).contiguous().numpy(), layers))
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        paths = write_featuremaps(images, args.out, model=args.model, channels=args.channels)
    except PermissionError as exc:
        raise InputError(f"--out {args.out}: cannot write there ({exc.strerror}); choose a writable folder") from None
    differs = [f"{i.name}: {m.name}" for i in images for m in i.layers if m.matches is False]
    n_layers = sum(len(i.layers) for i in images)
    print(f"{n_layers} layer outputs of {len(images)} image(s): page {paths['featuremaps.html']}")
    for line in differs:
        print(f"output shape differs from the conv arithmetic: {line}")
    return EXIT_PASS


def _add_compare(sub) -> None:
    """``auditcam compare``: two models (A before, B after) on the same samples."""
    compare = sub.add_parser(
        "compare",
        help="audit two models on the same samples and compare them (did retraining remove the shortcut?)",
        description="Each of --model, --weights, --name, --num-classes is given once (shared by both models) "
        "or twice (A, then B). Exit code: B's verdict (0 B passes its checks, 1 it does not, 2 bad input).",
    )
    models = compare.add_argument_group("models (A then B)")
    add_model_arguments(models, twice=True)
    models.add_argument("--name", action="append", help="model name (once or twice; default: weights file stem)")
    data = compare.add_argument_group("data")
    _add_data_arguments(data)
    data.add_argument("--allow-missing", action="store_true", help="record missing files as errors")
    add_setting_arguments(compare)
    add_check_arguments(compare)
    runtime = compare.add_argument_group("run")
    runtime.add_argument("--out", required=True, type=Path, help="output folder for the comparison")
    _add_workers_argument(runtime)
    runtime.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_log_argument(runtime)
    compare.set_defaults(handler=_run_compare)


def _pair(values: list | None, flag: str) -> list:
    """A per-model option given once (shared), twice (A, B) or not at all."""
    if values is None:
        return [None, None]
    if len(values) not in (1, 2):
        raise InputError(f"{flag}: give it once (both models) or twice (A, then B), not {len(values)} times")
    return values * 2 if len(values) == 1 else values


def _run_compare(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from auditcam.audit import audit
    from auditcam.data import read_classes
    from auditcam.models import load_model_info
    from auditcam.result import compare
    from auditcam.stats.comparison import check_pairable

    config = load_config_from_args(args)
    check_pairable(config.settings.task, config.settings.target)
    specs, weights = _pair(args.model, "--model"), _pair(args.weights, "--weights")
    names, num_classes = _pair(args.name, "--name"), _pair(args.num_classes, "--num-classes")
    if names == [None, None]:
        stems = [w.stem if w else spec for w, spec in zip(weights, specs, strict=True)]
        names = stems if stems[0] != stems[1] else [f"{stems[0]} (A)", f"{stems[1]} (B)"]
    options = model_options(args)
    loaded = [load_model_info(specs[i], weights[i], num_classes[i], **options) for i in range(2)]
    classes = read_classes(args.classes) if args.classes else loaded[0][1].classes
    dataset = _open_data(args, classes, loaded[0][1].preprocessing, config.settings.task)
    settings = _with_donors(config.settings, dataset, args.allow_missing)
    results = [
        audit(
            model,
            dataset,
            settings,
            checks=config.checks,
            analysis=config.analysis,
            model_info=info,
            name=name,
            num_workers=args.workers,
            progress=not args.no_progress,
            command="auditcam " + shlex.join(argv),
            config_sources=config.sources,
        )
        for (model, info), name in zip(loaded, names, strict=True)
    ]
    comparison = compare(*results)
    paths = comparison.write(args.out)
    if args.log:
        from auditcam.integrations.targets import log_comparison

        log_comparison(comparison, args.out, args.log)
    focus = comparison.focus_counts
    print(
        f"focus moved subject -> background in {focus['subject_to_background']} samples, "
        f"background -> subject in {focus['background_to_subject']}"
    )
    overall = comparison.deltas[comparison.deltas["dimension"] == "overall"]
    for row in overall.itertuples():
        print(
            f"{row.statistic:>24}  {row.a:.3f} -> {row.b:.3f}  delta {row.delta:+.3f} "
            f"[{row.delta_ci_low:+.3f}, {row.delta_ci_high:+.3f}]  {row.change}"
        )
    for check in results[1].checks:
        print(f"{check.outcome.upper():>17}  B: {check.message}")
    print(f"B {'PASSED' if comparison.passed else 'FAILED'}: report {paths['comparison.html']}")
    return EXIT_PASS if comparison.passed else EXIT_FAIL


def _add_trend(sub) -> None:
    """``auditcam trend``: several checkpoints of one model on the same samples."""
    trend = sub.add_parser(
        "trend",
        help="audit several checkpoints of one model on the same samples and show how each statistic moved",
        description="Every checkpoint is loaded into the one model and audited on the same samples, in one process. "
        "Exit code: the last checkpoint's verdict (0 it passes its checks, 1 it does not, 2 bad input).",
    )
    models = trend.add_argument_group("model and checkpoints")
    add_model_arguments(models, checkpoints=True)
    models.add_argument(
        "--step",
        metavar="REGEX",
        help="each checkpoint's training step: the number this pattern's first group finds in its path, e.g. "
        "'epoch(\\d+)'; orders the checkpoints (default: by name, the step is the position)",
    )
    models.add_argument("--name", help="the trend's name shown in its report (default: the model spec)")
    data = trend.add_argument_group("data")
    _add_data_arguments(data)
    data.add_argument("--allow-missing", action="store_true", help="record missing files as errors")
    add_setting_arguments(trend)
    add_check_arguments(trend)
    runtime = trend.add_argument_group("run")
    runtime.add_argument(
        "--out", required=True, type=Path, help="output folder: the trend, and each checkpoint's audit in checkpoints/"
    )
    _add_workers_argument(runtime)
    runtime.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_scale_arguments(trend)
    _add_log_argument(runtime)
    trend.set_defaults(handler=_run_trend)


def _run_trend(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from auditcam.data import read_classes
    from auditcam.models import load_model_info
    from auditcam.trend import find_checkpoints, trend

    config = load_config_from_args(args)
    found = find_checkpoints(args.weights, args.step)
    model, info = load_model_info(args.model, None, args.num_classes, **model_options(args))
    classes = read_classes(args.classes) if args.classes else info.classes
    dataset = _open_data(args, classes, info.preprocessing, config.settings.task)
    result = trend(
        model,
        dataset,
        [path for path, _ in found],
        _with_donors(config.settings, dataset, args.allow_missing),
        steps=[step for _, step in found],
        checks=config.checks,
        analysis=config.analysis,
        model_info=info,
        name=args.name,
        run_dir=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        num_workers=args.workers,
        progress=not args.no_progress,
        command="auditcam " + shlex.join(argv),
        config_sources=config.sources,
    )
    paths = result.write(args.out)
    if args.log:
        from auditcam.integrations.targets import log_trend

        log_trend(result, args.out, args.log)
    first_to_last = result.changes[(result.changes["from"] == 0) & (result.changes["to"] == len(found) - 1)]
    for row in first_to_last[first_to_last["dimension"] == "overall"].itertuples():
        print(
            f"{row.statistic:>24}  {row.a:.3f} -> {row.b:.3f}  delta {row.delta:+.3f} "
            f"[{row.delta_ci_low:+.3f}, {row.delta_ci_high:+.3f}]  {row.direction}"
        )
    last = result.checkpoints[-1]
    for check in result.results[-1].checks:
        print(f"{check.outcome.upper():>17}  {last.name}: {check.message}")
    verdict = "PASSED" if result.passed else "FAILED"
    print(f"{verdict} at the last checkpoint ({last.name}, step {last.step}): report {paths['trend.html']}")
    return EXIT_PASS if result.passed else EXIT_FAIL


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``auditcam`` command; returns the exit code (under torchrun, every
    process returns the same one)."""
    from auditcam.run import distributed

    argv = list(sys.argv[1:] if argv is None else argv)
    if not distributed.launched():
        return _run(argv)[0]
    try:
        with distributed.session() as group:
            return group.stop(*_run(argv))
    except InputError as exc:
        print(f"auditcam: error: {exc.render(PARAMETER_FLAGS)}", file=sys.stderr)
        return EXIT_INPUT


def _run(argv: list[str]) -> tuple[int, str]:
    """Run one command; map what escapes to an exit code and a one-line message."""
    from auditcam.run import distributed

    group = distributed.current()
    prefix = "auditcam" if group.world == 1 else f"auditcam[rank {group.rank}]"
    try:
        args = build_parser().parse_args(argv)
        if group.world > 1 and args.command != "audit":
            raise InputError(distributed.NOT_DISTRIBUTED.format(command=args.command))
        return args.handler(args, argv), ""
    except InputError as exc:
        message = exc.render(PARAMETER_FLAGS)
        print(f"{prefix}: error: {message}", file=sys.stderr)
        return EXIT_INPUT, message
    except distributed.PeerStopped as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return exc.code, str(exc)
    except Interrupted as exc:
        if group.leader:
            print(f"auditcam: {_resume_hint(exc, argv, group.world)}", file=sys.stderr)
        return EXIT_INTERRUPTED, "interrupted"
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED, "interrupted"
    except Exception as exc:
        traceback.print_exc()
        print(
            f"{prefix}: internal error — this is a bug; please report it with the traceback above at {ISSUES_URL}",
            file=sys.stderr,
        )
        return EXIT_BUG, f"internal error: {type(exc).__name__}"


def _resume_hint(exc: Interrupted, argv: Sequence[str], world: int) -> str:
    """What was kept and the command that continues the run."""
    kept = f"interrupted: {exc.done} of {exc.total} samples are saved in {exc.folder}"
    again = [arg for arg in argv if arg != "--overwrite"]
    again += [] if "--resume" in again else ["--resume"]
    if world > 1:
        return f"{kept}; resume with the same torchrun command, adding --resume"
    return f"{kept}; resume with: auditcam {shlex.join(again)}"
