"""The run folder of an audit (``--out``): its manifest ``run.json``, its ``shards/`` and the
decision what to do with a folder that already holds a run.

The manifest records a *fingerprint* of everything that decides the per-sample records — the
model's weights, methods, layer, target, preprocessing, the dataset's rows, batch and shard
size, device type, autocast, versions. A resumed run must match it: shards of two
configurations are never mixed. Check thresholds and analysis options are not part of it:
``--resume`` on a finished run analyses its samples again with the current checks.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from auditcam.errors import InputError
from auditcam.files import atomic_write
from auditcam.version import __version__

MANIFEST_VERSION = 1
MANIFEST = "run.json"
SHARDS = "shards"
SAMPLES = "samples.parquet"
BUNDLE = ("report.html", "summary.json", "junit.xml", SAMPLES)
# the bundle's other parts, each <stem>.json with its .npz and .parquet files (auditcam.files.write_parts)
GALLERY, COUNTERFACTUAL, SANITY, FEATUREMAPS = "gallery", "counterfactual", "sanity", "featuremaps"
STRATEGIES = "strategies"
PARTS = (GALLERY, COUNTERFACTUAL, SANITY, FEATUREMAPS, STRATEGIES)
EXPLAINING, COMPLETE = "explaining", "complete"

# `name`: an API parameter, shown by the CLI as its flag (auditcam.errors.InputError.render)
FINISHED_RUN = (
    "`run_dir` {path} already holds a finished audit; pass `overwrite` to replace it, "
    "or `resume` to analyse its samples again with the current checks"
)
UNFINISHED_RUN = (
    "`run_dir` {path} holds an unfinished audit ({done} of {total} shards written); "
    "pass `resume` to continue it, or `overwrite` to start again"
)
OTHER_RESULTS = (
    "`run_dir` {path} already holds audit results ({names}) that this run would replace; "
    "pass `overwrite` to replace them, or choose another folder"
)
OTHER_CONFIGURATION = (
    "`resume`: the run in {path} was made with another configuration ({differences}); "
    "rerun it as it was, or pass `overwrite` to start again"
)
UNREADABLE_MANIFEST = "`run_dir` {path}: {manifest} cannot be read ({reason}); pass `overwrite` to start again"
NOT_WRITABLE = "`run_dir` {path}: cannot write there ({reason}); choose a writable folder"


def _sha256(chunks) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def state_sha256(model: nn.Module) -> str:
    """sha256 over the model's state dict (names, dtypes, shapes and bytes), on any device."""

    def chunks():
        for name, tensor in sorted(model.state_dict().items()):
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            yield f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode()
            yield flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""

    return _sha256(chunks())


def dataset_identity(dataset: Any) -> dict[str, Any]:
    """What identifies the samples: size, attributes, classes, and for a manifest-like dataset a
    sha256 over every row's id, image path, label, subject and attributes (file contents are not
    read; the manifest may move). A custom torch Dataset is identified by its source and size."""
    identity: dict[str, Any] = {
        "n_samples": len(dataset),
        "attributes": list(getattr(dataset, "attributes", ())),
        "classes": None if getattr(dataset, "classes", None) is None else list(dataset.classes),
    }
    rows = getattr(dataset, "rows", None)
    if rows is not None:
        identity["rows_sha256"] = _sha256(
            (
                f"{r.id}\t{r.image}\t{r.label}\t{r.subject!r}\t{sorted(r.attributes.items())}"
                + ("" if r.labels is None else f"\t{r.labels}\t{r.label_subjects!r}")
                + "\n"
            ).encode()
            for r in rows
        )
        identity["masks"] = repr(getattr(dataset, "masks", None))
    else:
        identity["source"] = str(getattr(dataset, "source", type(dataset).__name__))
    return identity


def fingerprint(
    *,
    model: nn.Module,
    model_spec: Mapping[str, Any] | None,
    dataset: Any,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """The configuration a run's shards depend on (JSON-ready)."""
    return {
        "model": {**(model_spec or {}), "state_sha256": state_sha256(model)},
        "dataset": dataset_identity(dataset),
        **settings,
        "versions": {"auditcam": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__},
    }


def differences(then: Mapping[str, Any], now: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Human-readable keys whose values differ, e.g. ``methods: ['gradcam'] then, ['hirescam'] now``."""
    found = []
    for key in sorted(set(then) | set(now)):
        a, b = then.get(key), now.get(key)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found += differences(a, b, f"{prefix}{key}.")
        else:
            found.append(f"{prefix}{key}: {_short(a)} then, {_short(b)} now")
    return found


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:16] + "…"


@dataclass(frozen=True)
class RunFolder:
    """``--out``: the manifest, the shards and, once merged, ``samples.parquet``."""

    path: Path

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def shards(self) -> Path:
        return self.path / SHARDS

    @property
    def samples(self) -> Path:
        return self.path / SAMPLES

    def manifest(self) -> dict[str, Any] | None:
        """The manifest, or None when the folder holds no run; an unreadable one is an error."""
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            reason = UNREADABLE_MANIFEST.format(path=self.path, manifest=MANIFEST, reason=exc)
            raise InputError(reason, "run_dir") from None
        if not isinstance(data, dict) or data.get("manifest_version") != MANIFEST_VERSION:
            raise InputError(
                UNREADABLE_MANIFEST.format(path=self.path, manifest=MANIFEST, reason="not a manifest of this version"),
                "run_dir",
            )
        return data

    def write_manifest(self, data: dict[str, Any]) -> None:
        """Write run.json atomically (temporary name, then rename)."""
        data = {**data, "manifest_version": MANIFEST_VERSION, "updated": _now()}
        try:
            atomic_write(self.manifest_path, json.dumps(data, indent=2, default=str))
        except OSError as exc:
            raise InputError(NOT_WRITABLE.format(path=self.path, reason=exc.strerror or exc), "run_dir") from None

    def clear(self) -> None:
        """Delete this run's files (manifest, shards, bundle); anything else in the folder stays."""
        shutil.rmtree(self.shards, ignore_errors=True)
        for name in (MANIFEST, *BUNDLE):
            (self.path / name).unlink(missing_ok=True)
        for stem in PARTS:
            for path in (*self.path.glob(f"{stem}.*"), *self.path.glob(f"{stem}-*.parquet")):
                path.unlink(missing_ok=True)

    def create(self) -> None:
        try:
            self.shards.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(NOT_WRITABLE.format(path=self.path, reason=exc.strerror or exc), "run_dir") from None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def open_run(
    folder: RunFolder,
    fingerprint: dict[str, Any],
    *,
    resume: bool,
    overwrite: bool,
) -> dict[str, Any] | None:
    """Decide what to do with what ``folder`` holds; return the manifest of the run to continue
    (None: start a new one, the folder now holds none of our files).

    Without ``resume`` or ``overwrite`` a folder holding a run or results is refused with a
    one-line message; ``overwrite`` deletes them; ``resume`` continues a run of the same
    fingerprint (and starts one where there is none, so a restarted job can always pass it).
    """
    if folder.path.exists() and not folder.path.is_dir():
        raise InputError(NOT_WRITABLE.format(path=folder.path, reason="it is a file, not a folder"), "run_dir")
    if overwrite:
        folder.clear()
        return None
    manifest = folder.manifest()
    if manifest is None:
        present = [name for name in BUNDLE if (folder.path / name).exists()]
        if present:
            raise InputError(OTHER_RESULTS.format(path=folder.path, names=", ".join(present)), "run_dir")
        shutil.rmtree(folder.shards, ignore_errors=True)  # shards without a manifest cannot be trusted
        return None
    if not resume:
        if manifest.get("state") == COMPLETE:
            raise InputError(FINISHED_RUN.format(path=folder.path), "run_dir")
        layout = manifest.get("layout", {})
        total = math.ceil(layout.get("n_samples", 0) / max(layout.get("shard_size", 1), 1))
        written = len(list(folder.shards.glob("shard-*.parquet")))
        raise InputError(UNFINISHED_RUN.format(path=folder.path, done=written, total=total), "run_dir")
    changed = differences(manifest.get("fingerprint", {}), fingerprint)
    if changed:
        raise InputError(OTHER_CONFIGURATION.format(path=folder.path, differences="; ".join(changed)), "resume")
    return manifest


def new_manifest(fingerprint: dict[str, Any], layout: Mapping[str, int]) -> dict[str, Any]:
    return {"state": EXPLAINING, "created": _now(), "fingerprint": fingerprint, "layout": dict(layout)}
