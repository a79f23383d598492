"""trend(): audit several checkpoints of one model on the same samples, in one process.

Orchestration only. Every checkpoint is read and checked against the model before the first
audit (a file that does not fit stops the trend, named, before any work); then each is loaded
into the model in turn and audited by :func:`auditcam.audit.audit` into its own run folder
(``checkpoints/<name>/`` under ``run_dir``), so ``resume`` reuses every sample a checkpoint
already explained, also after a checkpoint failed mid-way. The statistics across checkpoints
are :mod:`auditcam.stats.trend`'s; the result is a :class:`~auditcam.result.Trend`. The model's
own weights are put back afterwards, also when an error escapes.
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn
from torch.utils.data import Dataset

from auditcam.audit import audit
from auditcam.config import AnalysisOptions, AuditSettings, Checks
from auditcam.data import LabelledDataset, as_audit_dataset
from auditcam.errors import InputError
from auditcam.models import ModelInfo, read_weights, sha256_file
from auditcam.result import CHECKPOINTS, SUMMARY, Checkpoint, Trend
from auditcam.run import distributed

NO_MATCH = "--weights '{pattern}': matches no file"
NOT_FOUND = "--weights {path}: file not found"
BAD_STEP_PATTERN = "--step '{pattern}': not a regular expression ({reason})"
NO_STEP = "--step '{pattern}': finds no step number in {path}; give a pattern whose first group is the number"
SAME_STEP = "--step '{pattern}': {a} and {b} both have step {step}"
TOO_FEW_CHECKPOINTS = "`checkpoints`: a trend needs at least two checkpoints, got {n}"
STEPS_MISMATCH = "`steps`: {n_steps} steps for {n} checkpoints"
STEPS_ORDER = "`steps` must increase with the checkpoints' order, got {steps}"
ALREADY_WRITTEN = (
    "`run_dir` {path} already holds results ({name}); pass `resume` to continue or re-analyse the trend there, "
    "or `overwrite` to start again"
)
_GLOB = re.compile(r"[*?[]")


def _natural(path: Path) -> list[str | int]:
    """A sort key in which the numbers in a name compare as numbers (``epoch10`` after ``epoch9``)."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", str(path)))]


def find_checkpoints(patterns: Sequence[str | Path], step: str | None = None) -> list[tuple[Path, int]]:
    """The checkpoint files that ``patterns`` name (files, or globs such as ``ckpts/*.pt``), each
    once, with their steps, in trend order. With ``step`` (a regular expression) each file's step
    is the number its first group (else its whole match) finds in the path, and the order is by
    step; without, the order is by name (numbers in names compared as numbers) and the step is
    the position. A glob that matches nothing, a missing file, a path without a step number or
    two files with one step is an :class:`InputError` naming it."""
    paths: dict[Path, None] = {}
    for pattern in map(str, patterns):
        if Path(pattern).is_file():
            paths.setdefault(Path(pattern), None)
        elif _GLOB.search(pattern):
            matches = sorted(Path(m) for m in glob.glob(pattern, recursive=True) if Path(m).is_file())
            if not matches:
                raise InputError(NO_MATCH.format(pattern=pattern))
            paths.update(dict.fromkeys(matches))
        else:
            raise InputError(NOT_FOUND.format(path=pattern))
    unique = list({path.resolve(): path for path in paths}.values())
    if step is None:
        return [(path, i) for i, path in enumerate(sorted(unique, key=_natural))]
    try:
        finder = re.compile(step)
    except re.error as exc:
        raise InputError(BAD_STEP_PATTERN.format(pattern=step, reason=exc)) from None
    found: list[tuple[Path, int]] = []
    for path in unique:
        match = finder.search(str(path))
        text = None if match is None else match.group(1 if finder.groups else 0)
        if text is None or not text.strip().isdigit():
            raise InputError(NO_STEP.format(pattern=step, path=path))
        found.append((path, int(text)))
    found.sort(key=lambda item: item[1])
    for (a, first), (b, second) in itertools.pairwise(found):
        if first == second:
            raise InputError(SAME_STEP.format(pattern=step, a=a, b=b, step=first))
    return found


def _names(paths: Sequence[Path]) -> list[str]:
    """Each checkpoint's name: its file's stem, made unique by its position where stems repeat."""
    stems = [path.stem for path in paths]
    return [stem if stems.count(stem) == 1 else f"{stem}-{i}" for i, stem in enumerate(stems)]


def trend(
    model: nn.Module,
    dataset: LabelledDataset | Dataset,
    checkpoints: Sequence[str | Path],
    settings: AuditSettings | None = None,
    *,
    steps: Sequence[int] | None = None,
    checks: Checks | None = None,
    analysis: AnalysisOptions | None = None,
    model_info: ModelInfo | None = None,
    name: str | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    num_workers: int | None = 0,
    progress: bool = True,
    command: str | None = None,
    config_sources: Sequence[str] = (),
    say: Callable[[str], object] | None = None,
) -> Trend:
    """Audit ``dataset`` with each of ``checkpoints`` (state-dict files, in trend order) loaded
    into ``model``; return the :class:`~auditcam.result.Trend`, its checks decided on the last
    checkpoint. ``steps`` are the checkpoints' training steps (default: their positions), and
    increase; the other arguments mean what they mean in :func:`auditcam.audit.audit`.

    ``run_dir`` holds one run folder per checkpoint, ``checkpoints/<stem>/`` (default: temporary
    folders), which :meth:`Trend.write` into the same folder completes into each checkpoint's
    audit bundle; ``resume`` reuses every sample already explained there. Every file is read and
    checked against the model first: one that does not fit is an :class:`InputError` naming it,
    before any audit. ``say`` gets one line per checkpoint (default: stderr, when ``progress``).
    """
    if distributed.current().world > 1:
        raise InputError(distributed.NOT_DISTRIBUTED.format(command="trend"))
    paths = [Path(path) for path in checkpoints]
    if len(paths) < 2:
        raise InputError(TOO_FEW_CHECKPOINTS.format(n=len(paths)), "checkpoints")
    steps = list(range(len(paths))) if steps is None else [int(step) for step in steps]
    if len(steps) != len(paths):
        raise InputError(STEPS_MISMATCH.format(n_steps=len(steps), n=len(paths)), "steps")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise InputError(STEPS_ORDER.format(steps=steps), "steps")
    if run_dir is not None and not (resume or overwrite) and (Path(run_dir) / SUMMARY).is_file():
        raise InputError(ALREADY_WRITTEN.format(path=run_dir, name=SUMMARY), "run_dir")
    for path in paths:
        read_weights(model, path)  # fits the model, or an InputError naming the file
    if say is None:
        say = (lambda line: print(line, file=sys.stderr)) if progress else (lambda line: None)
    dataset = as_audit_dataset(dataset)
    info = model_info or ModelInfo(
        spec=f"{type(model).__module__}.{type(model).__qualname__}",
        weights=None,
        weights_sha256=None,
        preprocessing=dataset.preprocessing,
        classes=dataset.classes,
    )
    names = _names(paths)
    found = [
        Checkpoint(name, step, str(path), sha256_file(path), f"{CHECKPOINTS}/{name}")
        for name, step, path in zip(names, steps, paths, strict=True)
    ]
    original = {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}
    results = []
    try:
        for i, checkpoint in enumerate(found):
            say(f"checkpoint {i + 1}/{len(found)}: {checkpoint.name} (step {checkpoint.step}), {checkpoint.weights}")
            model.load_state_dict(read_weights(model, checkpoint.weights))
            result = audit(
                model,
                dataset,
                settings,
                checks=checks,
                analysis=analysis,
                model_info=dataclasses.replace(
                    info, weights=checkpoint.weights, weights_sha256=checkpoint.weights_sha256
                ),
                name=checkpoint.name,
                run_dir=None if run_dir is None else Path(run_dir) / checkpoint.folder,
                resume=resume,
                overwrite=overwrite,
                num_workers=num_workers,
                progress=progress,
                command=command,
                config_sources=config_sources,
            )
            reused = result.meta["run"]["resumed_at"]
            said = f", {reused} samples reused" if reused else ""
            say(f"checkpoint {i + 1}/{len(found)}: {'passed' if result.passed else 'failed'} its checks{said}")
            results.append(result)
    finally:
        model.load_state_dict(original)
    return Trend.of(found, results, name or info.spec)
