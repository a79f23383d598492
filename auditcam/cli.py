"""Command line: ``auditcam demo`` and ``auditcam audit``.

Exit codes: 0 every check passed, 1 a check failed, 2 bad input or usage (one line on stderr,
no traceback), 3 internal error (a bug: traceback and a request to report it).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from auditcam.config import DEFAULT_MAX_BACKGROUND_RELIANT_RATE
from auditcam.errors import InputError

EXIT_PASS, EXIT_FAIL, EXIT_INPUT, EXIT_BUG = 0, 1, 2, 3
ISSUES_URL = "https://github.com/auditcam/auditcam/issues"


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


def _methods(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The ``auditcam`` parser with its subcommands."""
    from auditcam import __version__

    parser = _Parser(prog="auditcam", description="Audit image classifiers for background bias with Grad-CAM.")
    parser.add_argument("--version", action="version", version=f"auditcam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="train a shortcut and a clean tiny model on synthetic data and audit both")
    demo.add_argument("--out", type=Path, default=Path("auditcam-demo"), help="output folder (default: auditcam-demo)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(handler=_run_demo)

    run = sub.add_parser("audit", help="audit a model on a labelled dataset with subject masks")
    model = run.add_argument_group("model")
    model.add_argument(
        "--model",
        required=True,
        metavar="SPEC",
        help="torchvision:NAME, path/to/file.py:function or package.module:function",
    )
    model.add_argument("--weights", type=Path, help="state dict: .safetensors, .pt or .pth")
    model.add_argument("--num-classes", type=_positive_int, help="number of model outputs, if the factory needs it")
    model.add_argument("--image-size", help="model input size: N or HxW (default: from the model spec)")
    model.add_argument("--mean", help="normalisation mean, three comma-separated numbers")
    model.add_argument("--std", help="normalisation std, three comma-separated numbers")
    data = run.add_argument_group("data")
    data.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="MANIFEST",
        help="CSV with columns image, label, mask; other columns are group attributes",
    )
    data.add_argument("--classes", type=Path, help="class names, one per line, in the model's output order")
    data.add_argument(
        "--allow-missing",
        action="store_true",
        help="record samples whose files are missing as errors instead of stopping",
    )
    explain = run.add_argument_group("explanations")
    explain.add_argument(
        "--method",
        type=_methods,
        default=["gradcam"],
        help="CAM method(s), comma-separated, from gradcam, gradcam++, xgradcam, hirescam, layercam, eigencam, "
        "eigengradcam, scorecam, or captum:NAME for a captum.attr attribution (e.g. captum:IntegratedGradients); "
        "the first decides the checks (default: gradcam)",
    )
    explain.add_argument(
        "--layer",
        help="module name of the layer to explain; several comma-separated are fused (default: found automatically)",
    )
    explain.add_argument(
        "--target",
        choices=("pred", "label"),
        default="pred",
        help="class each heatmap explains: the prediction or the true label (default: pred)",
    )
    explain.add_argument(
        "--reliance-threshold",
        type=float,
        default=1.0,
        help="focus_lift below this counts as background-reliant (default: 1.0)",
    )
    checks = run.add_argument_group("checks")
    checks.add_argument(
        "--max-background-reliant-rate",
        type=_rate,
        default=DEFAULT_MAX_BACKGROUND_RELIANT_RATE,
        help="fail if more than this share of samples is background-reliant (default: %(default)s)",
    )
    checks.add_argument(
        "--min-subject-share",
        type=_rate,
        default=None,
        help="fail if the mean subject_share is below this (default: off)",
    )
    runtime = run.add_argument_group("run")
    runtime.add_argument("--out", required=True, type=Path, help="output folder for the report and results")
    runtime.add_argument("--name", help="model name shown in the report (default: the weights file's stem)")
    runtime.add_argument("--batch-size", type=_positive_int, default=32, help="images per batch (default: 32)")
    runtime.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: 0)")
    runtime.add_argument("--gallery-size", type=int, default=8, help="samples shown at each end of the gallery")
    runtime.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(handler=_run_audit)
    return parser


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
    from auditcam.config import Checks
    from auditcam.data import LabelledDataset, read_classes
    from auditcam.models import load_model_info, parse_size, parse_triple

    if not args.method:
        raise InputError("--method: give at least one method, e.g. --method gradcam")
    model, info = load_model_info(
        args.model,
        args.weights,
        args.num_classes,
        image_size=None if args.image_size is None else parse_size(args.image_size),
        mean=None if args.mean is None else parse_triple(args.mean, "--mean"),
        std=None if args.std is None else parse_triple(args.std, "--std"),
    )
    classes = read_classes(args.classes) if args.classes else info.classes
    dataset = LabelledDataset.from_manifest(
        args.data, classes=classes, preprocessing=info.preprocessing, allow_missing=args.allow_missing
    )
    checks = Checks(
        max_background_reliant_rate=args.max_background_reliant_rate, min_subject_share=args.min_subject_share
    )
    result = audit(
        model,
        dataset,
        methods=args.method,
        layer=args.layer,
        checks=checks,
        target=args.target,
        batch_size=args.batch_size,
        num_workers=args.workers,
        reliance_threshold=args.reliance_threshold,
        gallery_size=args.gallery_size,
        model_info=info,
        name=args.name,
        progress=not args.no_progress,
    )
    result.meta["command"] = "auditcam " + shlex.join(argv)
    paths = result.write(args.out)
    for check in result.checks:
        value = "n/a" if check.value is None else f"{check.value:.3f}"
        print(f"{check.outcome.upper():>17}  {check.name} = {value} (rule {check.op} {check.threshold})")
    print(f"{'PASSED' if result.passed else 'FAILED'}: report {paths['report.html']}")
    return EXIT_PASS if result.passed else EXIT_FAIL


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``auditcam`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args, argv)
    except InputError as exc:
        print(f"auditcam: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("auditcam: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(
            f"auditcam: internal error — this is a bug; please report it with the traceback above at {ISSUES_URL}",
            file=sys.stderr,
        )
        return EXIT_BUG
