"""The audit runner: iterate a labelled dataset, explain, score, and record one row per
(sample, method); then aggregate and decide the checks.

A sample that cannot be read, or whose mask/heatmap makes the metrics meaningless, still gets
its rows, with ``status`` (``error`` / ``invalid``) and ``reason``: nothing is dropped.

Records never pile up in memory: each batch's rows go to the shard journal of its chunk
(:mod:`auditcam.shards`), finished chunks become Parquet shards, and the shards are streamed
into ``samples.parquet``. The analysis reads back only the columns it needs; the gallery is
picked in the same streaming way and only its few samples are explained again for display.
A run folder can be resumed after a crash (:mod:`auditcam.runfolder`), and under torchrun
every process explains its own chunks (:mod:`auditcam.distributed`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime as _dt
import os
import platform
import shutil
import sys
import tempfile
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from auditcam import distributed
from auditcam.analysis import Analysis, analyse
from auditcam.cam import UPSAMPLING, CaptumMethod, Explainer
from auditcam.checks import OUTCOMES, CheckResult, evaluate_checks, passed, required_intersections, validate_checks
from auditcam.config import AnalysisOptions, Checks
from auditcam.data import LabelledDataset, as_audit_dataset, collate, default_workers
from auditcam.device import amp_dtype, model_device, on_device, pin_memory, resolve_device, to_device
from auditcam.errors import InputError, Interrupted
from auditcam.gallery import Exemplar, Gallery
from auditcam.models import ModelInfo, Preprocessing, sha256_file
from auditcam.records import ANALYSIS_COLUMNS, POSITION, batch_records, samples_schema, score_explanation
from auditcam.runfolder import COMPLETE, RunFolder, fingerprint, fingerprint_settings, new_manifest, open_run
from auditcam.shards import Journal, Layout, default_shard_size, finish_chunk, journal_path, merge, salvage, scan

if TYPE_CHECKING:
    from auditcam.counterfactual import CounterfactualOptions, CounterfactualResult
    from auditcam.featuremaps import ExemplarGrid
    from auditcam.sanity import SanityOptions, SanityResult

SCHEMA_VERSION = 1  # of summary.json; see auditcam/schemas/summary.schema.json
TARGETS = ("pred", "label")
DEFAULT_BATCH_SIZE = 32


class AuditResult:
    """Everything an audit found: the tidy per-sample table, the analysis per method, check
    outcomes (decided on the first method), the gallery exemplars and the run's metadata; the
    counterfactual background test and the sanity check when they ran, and the feature-map
    grids of the exemplars.

    ``samples`` may live on disk (a ``samples.parquet``; read into memory only when
    :attr:`samples` is used) or be a DataFrame. :meth:`read_samples` reads a filtered part.
    """

    def __init__(
        self,
        samples: pd.DataFrame | str | Path,
        checks: Sequence[CheckResult],
        analyses: dict[str, Analysis],
        gallery: Gallery,
        meta: dict[str, Any] | None = None,
        *,
        counterfactual: CounterfactualResult | None = None,
        sanity: SanityResult | None = None,
        featuremaps: Sequence[ExemplarGrid] = (),
        temporary: Path | None = None,
    ) -> None:
        in_memory = isinstance(samples, pd.DataFrame)
        self._frame: pd.DataFrame | None = samples if in_memory else None
        self.samples_path: Path | None = None if in_memory else Path(samples)
        self.checks = tuple(checks)
        self.analyses = analyses
        self.gallery = gallery
        self.meta = {} if meta is None else meta
        self.counterfactual = counterfactual
        self.sanity = sanity
        self.featuremaps = tuple(featuremaps)
        if temporary is not None:  # the folder that holds samples_path goes with the result
            weakref.finalize(self, shutil.rmtree, str(temporary), True)

    @property
    def samples(self) -> pd.DataFrame:
        """One row per (sample, method), in dataset order (read from disk on first use)."""
        if self._frame is None:
            self._frame = pd.read_parquet(self.samples_path)
        return self._frame

    def _dataset(self) -> ds.Dataset:
        if self.samples_path is not None:
            return ds.dataset(self.samples_path, format="parquet")
        return ds.dataset(pa.Table.from_pandas(self._frame, preserve_index=False))

    def read_samples(
        self,
        method: str | None = None,
        *,
        columns: Sequence[str] | None = None,
        where: pc.Expression | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Rows of ``method`` (all methods: None) matching the pyarrow expression ``where``, at
        most ``limit`` of them, only ``columns``: read without loading the whole table."""
        scanner = self._dataset().scanner(
            columns=None if columns is None else list(columns), filter=_where(method, where)
        )
        table = scanner.head(limit) if limit is not None else scanner.to_table()
        return table.to_pandas()

    def count_samples(self, method: str | None = None, *, where: pc.Expression | None = None) -> int:
        """How many rows of ``method`` match ``where``."""
        return self._dataset().count_rows(filter=_where(method, where))

    def write_samples(self, path: str | Path) -> None:
        """Write ``samples.parquet`` to ``path`` (temporary name, then rename); a table already
        on disk is copied as a file, never loaded."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        if self.samples_path is None:
            self._frame.to_parquet(tmp, index=False)
        elif path.resolve() == self.samples_path.resolve():
            return
        else:
            shutil.copyfile(self.samples_path, tmp)
        os.replace(tmp, path)

    @property
    def passed(self) -> bool:
        """True when no check blocks: none failed, and none lacks data unless the checks say
        ``insufficient_data = "skip"``."""
        return passed(self.checks)

    @property
    def failed_checks(self) -> list[CheckResult]:
        """The checks that stop the audit from passing."""
        return [check for check in self.checks if check.blocking]

    @cached_property
    def aggregates(self) -> dict[str, Any]:
        """JSON-ready aggregates with CIs and disparities, per method."""
        return {method: analysis.to_dict() for method, analysis in self.analyses.items()}

    def summary(self) -> dict[str, Any]:
        """The JSON-ready summary written to ``summary.json`` (schema: ``auditcam/schemas``)."""
        n_samples = self.meta.get("dataset", {}).get("n_samples")
        return {
            "schema_version": SCHEMA_VERSION,
            "passed": self.passed,
            "n_samples": int(self.samples["id"].nunique() if n_samples is None else n_samples),
            "outcomes": {o: sum(c.outcome == o for c in self.checks) for o in OUTCOMES},
            "checks": [check.to_dict() for check in self.checks],
            "aggregates": self.aggregates,
            "meta": self.meta,
            **self._beyond_summary(),
        }

    def _beyond_summary(self) -> dict[str, Any]:
        """``bg_gap`` (headline) and ``counterfactual`` (detail), ``sanity``: present when run."""
        out: dict[str, Any] = {}
        if self.counterfactual is not None:
            out["bg_gap"] = self.counterfactual.bg_gap
            out["counterfactual"] = self.counterfactual.to_dict()
        if self.sanity is not None:
            out["sanity"] = {**self.sanity.to_dict(), "check": _check_named(self.checks, "sanity:")}
        return out

    def write(self, out: str | Path) -> dict[str, Path]:
        """Write report.html, summary.json, junit.xml and samples.parquet into ``out``; return their paths."""
        from auditcam.report import write_bundle  # the report is a view over this result

        return write_bundle(self, out)


def _where(method: str | None, where: pc.Expression | None) -> pc.Expression | None:
    if method is None:
        return where
    chosen = pc.field("method") == method
    return chosen if where is None else chosen & where


def _version() -> str:
    from auditcam import __version__

    return __version__


def _check_outputs(logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str] | None) -> None:
    n_outputs = logits.shape[1]
    if classes is not None and len(classes) != n_outputs:
        raise InputError(
            f"the model has {n_outputs} outputs but the class list has {len(classes)} names; "
            "check --num-classes and --classes"
        )
    if labels.numel() and int(labels.max()) >= n_outputs:
        raise InputError(
            f"a label is {int(labels.max())} but the model has only {n_outputs} outputs; "
            "check --num-classes and the manifest's labels"
        )


def audit(
    model: nn.Module,
    dataset: LabelledDataset | Dataset,
    *,
    methods: Sequence[str | CaptumMethod] = ("gradcam",),
    layer: str | None = None,
    checks: Checks | None = None,
    analysis: AnalysisOptions | None = None,
    target: str = "pred",
    batch_size: int | None = None,
    num_workers: int | None = 0,
    reliance_threshold: float = 1.0,
    gallery_size: int = 8,
    model_info: ModelInfo | None = None,
    name: str | None = None,
    progress: bool = True,
    run_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    amp: bool | str | torch.dtype = False,
    shard_size: int | None = None,
    counterfactual: CounterfactualOptions | bool | None = None,
    sanity: SanityOptions | bool | None = None,
    featuremap_channels: int = 9,
) -> AuditResult | None:
    """Explain and score every sample of ``dataset`` with ``model``; aggregate; decide checks.

    ``target`` picks the class each heatmap explains: ``"pred"`` (the model's prediction) or
    ``"label"`` (the true class). The first method decides the checks and the gallery.
    ``name`` titles the report (default: the weights file's stem, else the model spec).
    ``dataset`` may be any torch Dataset yielding the item dict of :mod:`auditcam.data.custom`;
    ``num_workers`` decodes in worker processes (None: :func:`auditcam.data.default_workers`).
    ``analysis`` sets the minimum group size, bootstrap and intersections of the aggregates.
    ``counterfactual`` (True or options) adds the background-swap test and its ``max_bg_gap``
    check, ``sanity`` (True or options) the model-randomisation check of the explanations;
    ``featuremap_channels`` channels of the explained layer are drawn per exemplar (0: none).

    ``run_dir`` holds the run's manifest, shards and ``samples.parquet`` (default: a temporary
    folder that lives as long as the result); ``resume`` continues the run there, ``overwrite``
    replaces it (see :func:`auditcam.runfolder.open_run`). ``batch_size`` (default 32, or the
    resumed run's) and ``shard_size`` (samples per shard; default from the dataset size) fix
    the batches. ``device``: ``"cpu"``, ``"cuda"``, ``"auto"`` or None (where the model is);
    the model is moved there for the audit and back after. ``amp`` runs the model under
    autocast (True: bfloat16 on the CPU, float16 or bfloat16 on CUDA; or ``"bf16"``/``"fp16"``).

    Under torch.distributed (torchrun) every rank explains its share of the chunks into the
    shared ``run_dir``; rank 0 returns the result, the other ranks None. The counterfactual
    test, the sanity check and the feature maps run on rank 0 after the merge.
    """
    if target not in TARGETS:
        raise InputError(f"target {target!r}: choose from {', '.join(TARGETS)}")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    if resume and overwrite:
        raise InputError("--resume and --overwrite exclude each other: choose one")
    group = distributed.current()
    if group.world > 1 and run_dir is None:
        raise InputError("under torch.distributed, give a run folder (--out) that every process can reach")
    checks = Checks() if checks is None else checks
    dataset = as_audit_dataset(dataset)
    options = required_intersections(checks, AnalysisOptions() if analysis is None else analysis)
    validate_checks(checks, options, dataset.attributes)
    if model_info is not None and dataset.preprocessing != model_info.preprocessing:
        dataset = dataset.with_preprocessing(model_info.preprocessing)
    classes = dataset.classes or (model_info.classes if model_info else None)
    device = model_device(model) if device is None else resolve_device(device, group.local_rank)
    autocast = amp_dtype(device, amp)
    explainer = Explainer(model, layer=layer, methods=methods, autocast=autocast)
    methods = explainer.methods  # names, also for CaptumMethod objects
    with _run_folder(run_dir) as (folder, temporary):
        settings = {
            "methods": methods,
            "layer": layer,
            "target": target,
            "reliance_threshold": reliance_threshold,
            "preprocessing": dataset.preprocessing.describe(),
            "upsampling": UPSAMPLING,
            "device": device,
            "amp": autocast,
        }

        def make_fingerprint(batch: int, shard: int) -> dict[str, Any]:
            return fingerprint(
                model=model,
                model_spec=None
                if model_info is None
                else {"spec": model_info.spec, "weights_sha256": model_info.weights_sha256},
                dataset=dataset,
                settings=fingerprint_settings(**settings, batch_size=batch, shard_size=shard),
            )

        prepared = (
            _prepare(folder, dataset, methods, make_fingerprint, batch_size, shard_size, resume, overwrite)
            if group.leader
            else None
        )
        run: _Run = group.exchange("plan", prepared)[0]
        with on_device(model, device), explainer:
            shown = Gallery(size=gallery_size)  # this process's candidates, kept while it explains
            if not run.complete:
                _explain_share(
                    explainer,
                    dataset,
                    run,
                    group,
                    folder,
                    methods,
                    classes,
                    target,
                    reliance_threshold,
                    device,
                    num_workers,
                    progress,
                    shown,
                )
            group.exchange("explained")
            if not group.leader:
                return None
            if not run.complete:
                _merge(folder, run, dataset.attributes, len(methods))
            release_memory()
            analyses = {
                m: analyse(_analysis_frame(folder.samples, m, dataset.attributes), dataset.attributes, options)
                for m in methods
            }
            release_memory()
            seen = dict((*shown.background_reliant, *shown.subject_focused))
            gallery = _gallery(
                folder.samples, explainer, dataset, methods, gallery_size, run.layout.batch_size, device, seen
            )
            if explainer.layer is None:
                _find_layer(explainer, dataset, device)
            beyond = _beyond_heatmaps(
                model,
                dataset,
                gallery,
                counterfactual=counterfactual,
                sanity=sanity,
                featuremap_channels=featuremap_channels,
                method=methods[0],
                layer=explainer.layer,
                target=target,
                checks=checks,
                options=options,
                classes=classes,
                batch_size=run.layout.batch_size,
                num_workers=num_workers,
                progress=progress,
            )
        check_results = [*evaluate_checks(analyses[methods[0]], checks), *beyond.pop("checks")]
        meta = {
            "name": name or _default_name(model_info),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": {
                "auditcam": _version(),
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "python": platform.python_version(),
            },
            "model": None
            if model_info is None
            else {
                "spec": model_info.spec,
                "weights": model_info.weights,
                "weights_sha256": model_info.weights_sha256,
            },
            "dataset": {
                "source": dataset.source,
                "sha256": _index_sha256(dataset.source) if isinstance(dataset, LabelledDataset) else None,
                "n_samples": len(dataset),
                "attributes": list(dataset.attributes),
            },
            "classes": None if classes is None else list(classes),
            "methods": list(methods),
            "layer": explainer.layer,
            "target": target,
            "upsampling": UPSAMPLING,
            "reliance_threshold": reliance_threshold,
            "preprocessing": dataset.preprocessing.describe(),
            "checks": checks.to_dict(),
            "analysis": options.to_dict(),
            "run": {
                "device": str(device),
                "amp": None if autocast is None else str(autocast).removeprefix("torch."),
                "processes": group.world,
                **run.layout.to_dict(),
                "resumed_at": run.done,
                "folder": None if run_dir is None else str(run_dir),
            },
        }
        return AuditResult(folder.samples, check_results, analyses, gallery, meta, temporary=temporary, **beyond)


@contextlib.contextmanager
def _run_folder(run_dir: str | Path | None) -> Iterator[tuple[RunFolder, Path | None]]:
    """The run folder, or a temporary one (deleted if the audit fails, else with its result)."""
    if run_dir is not None:
        yield RunFolder(Path(run_dir)), None
        return
    path = Path(tempfile.mkdtemp(prefix="auditcam-run-"))
    try:
        yield RunFolder(path), path
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


@dataclass(frozen=True)
class _Run:
    """What rank 0 found in the run folder and every rank works from."""

    layout: Layout
    work: list[tuple[int, int]]  # (chunk, samples already in its journal) of each unfinished chunk
    complete: bool  # samples.parquet is merged: nothing to explain
    done: int  # samples explained before this run
    manifest: dict[str, Any]


def _prepare(
    folder: RunFolder,
    dataset: Any,
    methods: Sequence[str],
    make_fingerprint: Callable[[int, int], dict[str, Any]],
    batch_size: int | None,
    shard_size: int | None,
    resume: bool,
    overwrite: bool,
) -> _Run:
    """Open the run folder (rank 0): refuse, clear or resume it, then plan the remaining work."""
    recorded = folder.manifest() if resume and folder.path.is_dir() else None
    then = (recorded or {}).get("layout", {})
    batch = batch_size or then.get("batch_size") or DEFAULT_BATCH_SIZE
    shard = shard_size or (then.get("shard_size") if batch == then.get("batch_size") else None)
    layout = Layout(len(dataset), batch, shard or default_shard_size(len(dataset), batch))
    found = make_fingerprint(layout.batch_size, layout.shard_size)
    manifest = open_run(folder, found, resume=resume, overwrite=overwrite)
    folder.create()
    if manifest is None:
        manifest = new_manifest(found, layout.to_dict())
        folder.write_manifest(manifest)
    if manifest.get("state") == COMPLETE:
        if not folder.samples.is_file():
            raise InputError(
                f"--out {folder.path}: the finished run's samples.parquet is missing; pass --overwrite to start again"
            )
        return _Run(layout, [], True, layout.n_samples, manifest)
    progress = scan(folder.shards, layout, samples_schema(dataset.attributes, shard=True), len(methods))
    for name in progress.dropped:
        print(f"auditcam: deleted {folder.shards / name}: unreadable or incomplete", file=sys.stderr)
    return _Run(layout, progress.work(layout), False, progress.samples_done(layout), manifest)


class _Batches:
    """The batch sampler of one rank: the remaining batches of its chunks, in order."""

    def __init__(self, layout: Layout, work: Sequence[tuple[int, int]]) -> None:
        self.layout, self.work = layout, list(work)
        self.n_samples = sum(len(layout.chunk(c)) - done for c, done in self.work)

    def __iter__(self) -> Iterator[list[int]]:
        for c, done in self.work:
            for positions in self.layout.batches(c, done):
                yield list(positions)

    def __len__(self) -> int:
        return sum(len(range(0, len(self.layout.chunk(c)) - done, self.layout.batch_size)) for c, done in self.work)


def _explain_share(
    explainer: Explainer,
    dataset: Any,
    run: _Run,
    group: distributed.Group,
    folder: RunFolder,
    methods: Sequence[str],
    classes: Sequence[str] | None,
    target: str,
    reliance_threshold: float,
    device: torch.device,
    num_workers: int | None,
    progress: bool,
    shown: Gallery,
) -> None:
    """Explain this rank's chunks batch by batch into their journals; a finished chunk becomes
    its Parquet shard; ``shown`` keeps this rank's gallery candidates as (position, Exemplar).
    Ctrl-C keeps every finished batch and raises :class:`Interrupted`."""
    layout = run.layout
    mine = run.work[group.rank :: group.world]
    batches = _Batches(layout, mine)
    if not batches.n_samples:
        return
    kept = dict(mine)
    schema = samples_schema(dataset.attributes, shard=True)
    if num_workers is None:
        num_workers = default_workers(batches.n_samples, layout.batch_size, group.local_world)
    loader = DataLoader(
        dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate, pin_memory=pin_memory(device)
    )
    journal: Journal | None = None
    chunk, done, checked = -1, 0, False
    bar = tqdm(
        total=batches.n_samples, unit="img", desc="auditing", disable=not (progress and group.leader), file=sys.stderr
    )
    try:
        for positions, batch in zip(batches, loader, strict=True):
            if positions[0] // layout.shard_size != chunk:
                if journal is not None:
                    journal.close()
                    finish_chunk(folder.shards, chunk, schema)
                chunk = positions[0] // layout.shard_size
                path = journal_path(folder.shards, chunk)
                journal = Journal(path, schema, salvage(path, schema) if kept[chunk] else ())
            scored = explanation = None
            ok = batch["ok"]
            if ok.any():
                on_device_batch = to_device(batch, device)
                labels = batch["label"][ok]
                explanation = explainer(on_device_batch["image"], labels.to(device) if target == "label" else None)
                if not checked:
                    _check_outputs(explanation.logits, batch["label"], classes)
                    checked = True
                scored = score_explanation(explanation, on_device_batch["mask"], methods, reliance_threshold)
            records = batch_records(batch, positions, methods, classes, dataset.attributes, scored)
            journal.append(records)
            if explanation is not None:
                _offer(shown, records, batch, explanation, methods, dataset.preprocessing)
            done += len(positions)
            bar.update(len(positions))
        if journal is not None:
            journal.close()
            finish_chunk(folder.shards, chunk, schema)
            journal = None
    except KeyboardInterrupt:
        raise Interrupted(run.done + done, layout.n_samples, folder.path) from None
    finally:
        if journal is not None:
            journal.abort()
        bar.close()


def _merge(folder: RunFolder, run: _Run, attributes: Sequence[str], n_methods: int) -> None:
    """Stream every shard into samples.parquet, mark the run complete, delete the shards."""
    schema = samples_schema(attributes, shard=True)
    missing = scan(folder.shards, run.layout, schema, n_methods).work(run.layout)
    if missing:
        raise RuntimeError(f"shards of chunks {[c for c, _ in missing][:5]} are missing after every process finished")
    merge(folder.shards, run.layout, schema, folder.samples)
    folder.write_manifest({**run.manifest, "state": COMPLETE})
    shutil.rmtree(folder.shards, ignore_errors=True)


def _analysis_frame(path: Path, method: str, attributes: Sequence[str]) -> pd.DataFrame:
    """One method's rows with only the columns the analysis reads; repeated text (class names,
    status, group attributes) as categoricals."""
    table = pq.read_table(
        path,
        columns=[*ANALYSIS_COLUMNS, *attributes],
        filters=[("method", "==", method)],
        read_dictionary=["label_name", "status", *attributes],
    )
    frame = table.to_pandas()
    del table
    release_memory()
    return frame


def release_memory() -> None:
    """Hand memory freed by the finished phase back to the OS (Arrow's pool, glibc's heap), so
    the next phase's peak does not stack on pages the allocators merely kept."""
    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


GALLERY_READ_ROWS = 8192


def _gallery(
    path: Path,
    explainer: Explainer,
    dataset: Any,
    methods: Sequence[str],
    size: int,
    batch_size: int,
    device: torch.device,
    seen: dict[int, Exemplar],
) -> Gallery:
    """The exemplars at each end of the first method's subject_share, picked by streaming
    samples.parquet (sample k's rows are rows k*M .. k*M+M-1). Those this process kept while it
    explained (``seen``, by position) are used as they are; the others (explained by another
    process or before a resume) are read and explained again for display."""
    primary, width = methods[0], len(methods)
    picks = Gallery(size=size)
    offset = 0
    for rows in pq.ParquetFile(path).iter_batches(batch_size=GALLERY_READ_ROWS):
        scored = pc.and_(pc.equal(rows.column("method"), primary), pc.equal(rows.column("status"), "ok"))
        shares = rows.column("subject_share").to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(scored.to_numpy(zero_copy_only=False)):
            picks.offer(float(shares[i]), _pick(rows, int(i), (offset + int(i)) // width))
        offset += rows.num_rows
    chosen = {pick[0]: pick for pick in (*picks.background_reliant, *picks.subject_focused)}
    ordered = sorted(chosen)
    exemplars = {p: seen[p] for p in ordered if p in seen}
    missing = [p for p in ordered if p not in seen]
    for start in range(0, len(missing), batch_size):
        exemplars.update(
            _exemplars([chosen[p] for p in missing[start : start + batch_size]], explainer, dataset, primary, device)
        )
    gallery = Gallery(size=size)
    for position in ordered:
        if position in exemplars:
            gallery.offer(chosen[position][1]["subject_share"], lambda e=exemplars[position]: e)
    return gallery


def _pick(rows: pa.RecordBatch, i: int, position: int) -> Callable[[], tuple[int, dict[str, Any]]]:
    return lambda: (position, rows.slice(i, 1).to_pylist()[0])


def _exemplars(
    picks: Sequence[tuple[int, dict[str, Any]]], explainer: Explainer, dataset: Any, method: str, device: torch.device
) -> dict[int, Exemplar]:
    """Read and explain the picked samples (for the class recorded for them); skip any that
    can no longer be read."""
    items = [dataset[position] for position, _ in picks]
    batch = collate(items)
    if not batch["ok"].any():
        return {}
    readable = [pick for pick, ok in zip(picks, batch["ok"].tolist(), strict=True) if ok]
    targets = torch.tensor([record["target"] for _, record in readable], device=device)
    explanation = explainer(to_device(batch, device)["image"], targets)
    heatmaps = explanation.normalised(method)
    return {
        position: _exemplar(record, batch["image"][j], heatmaps[j], batch["mask"][j], dataset.preprocessing)
        for j, (position, record) in enumerate(readable)
    }


def _exemplar(
    record: dict[str, Any], image: torch.Tensor, heatmap: torch.Tensor, mask: torch.Tensor, preprocessing: Preprocessing
) -> Exemplar:
    """One sample as the report shows it: the displayed input, its [0, 1] heatmap and mask, on the host."""
    picture = preprocessing.denormalise(image.float().cpu())
    return Exemplar(
        record=record,
        image=(picture.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8),
        heatmap=heatmap.float().cpu().numpy().astype(np.float32),
        mask=mask.cpu().numpy().copy(),
    )


def _offer(
    shown: Gallery,
    records: pa.RecordBatch,
    batch: dict[str, Any],
    explanation: Any,
    methods: Sequence[str],
    preprocessing: Preprocessing,
) -> None:
    """Offer a batch's samples scored on the first method to ``shown``; pixels are copied only
    for the samples it keeps."""
    if shown.size <= 0:
        return
    width = len(methods)
    status = records.column("status").to_pylist()[::width]
    shares = records.column("subject_share").to_numpy()[::width]
    readable = np.cumsum(batch["ok"].numpy()) - 1

    def keep(i: int) -> Callable[[], tuple[int, Exemplar]]:
        def make() -> tuple[int, Exemplar]:
            record = records.slice(i * width, 1).to_pylist()[0]
            position = record.pop(POSITION)
            j = int(readable[i])
            heatmap = explanation.normalised(methods[0])[j]
            return position, _exemplar(record, batch["image"][j], heatmap, batch["mask"][j], preprocessing)

        return make

    for i, state in enumerate(status):
        if state == "ok":
            shown.offer(float(shares[i]), keep(i))


def _find_layer(explainer: Explainer, dataset: Any, device: torch.device) -> None:
    """Let the explainer find its layer on the first readable sample (when this process
    explained nothing, e.g. a resumed finished run with no gallery)."""
    for position in range(min(len(dataset), 64)):
        item = dataset[position]
        if "image" in item:
            explainer(item["image"][None].to(device))
            return


def _check_named(checks: Sequence[CheckResult], prefix: str) -> dict[str, Any] | None:
    return next((c.to_dict() for c in checks if c.name.startswith(prefix)), None)


def _beyond_heatmaps(
    model: nn.Module,
    dataset: Any,
    gallery: Gallery,
    *,
    counterfactual: CounterfactualOptions | bool | None,
    sanity: SanityOptions | bool | None,
    featuremap_channels: int,
    method: str,
    layer: str | None,
    target: str,
    checks: Checks,
    options: AnalysisOptions,
    classes: Sequence[str] | None,
    batch_size: int,
    num_workers: int | None,
    progress: bool,
) -> dict[str, Any]:
    """The counterfactual test, the sanity check (each with its check) and the exemplars'
    feature-map grids, as AuditResult fields plus ``checks``."""
    from auditcam.checks import bg_gap_check, sanity_check
    from auditcam.counterfactual import BG_GAP, CounterfactualOptions, run_counterfactual
    from auditcam.featuremaps import exemplar_grids
    from auditcam.sanity import SanityOptions, run_sanity

    out: dict[str, Any] = {"checks": []}
    if counterfactual:
        cf_options = counterfactual if isinstance(counterfactual, CounterfactualOptions) else CounterfactualOptions()
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
        worst = cf.largest_group_gap()
        detail = "" if worst is None else f"largest in {worst['dimension']}={worst['group']}: {worst['value']:.3f}"
        out["checks"].append(bg_gap_check(cf.estimate(BG_GAP), checks, options, detail))
    if sanity:
        sanity_options = sanity if isinstance(sanity, SanityOptions) else SanityOptions()
        result = run_sanity(
            model,
            dataset,
            sanity_options,
            method=method,
            layer=layer,
            target=target,
            analysis=options,
            batch_size=batch_size,
        )
        out["sanity"] = result
        final = result.stages[-1].name
        out["checks"].append(sanity_check(result.final, checks, options, f"after randomising down to {final}"))
    if featuremap_channels > 0 and layer is not None:
        shown = list({e.record["id"]: e for e in [*gallery.background_reliant, *gallery.subject_focused]}.values())
        out["featuremaps"] = exemplar_grids(model, shown, dataset.preprocessing, layer, featuremap_channels)
    out["checks"] = [c for c in out["checks"] if c is not None]
    return out


def _index_sha256(source: str | None) -> str | None:
    """sha256 of the dataset's index file (manifest, COCO JSON), so a report names exactly the
    data it audited; None for a folder layout or an in-memory Dataset."""
    path = Path(source) if source else None
    return sha256_file(path) if path is not None and path.is_file() else None


def _default_name(info: ModelInfo | None) -> str:
    if info is None:
        return "model"
    return Path(info.weights).stem if info.weights else info.spec
