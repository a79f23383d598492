"""The embedded default: build a synthetic shortcut dataset, train a *shortcut* and a *clean*
tiny CNN on CPU, audit both on a balanced held-out split and write one report per model.

A third model, *tag*, learned a location shortcut: a small magenta tag in the corner of every
circle it was trained on. It is audited on held-out images *without subject masks*, where the
tag sits on half the images of every class, independent of the class: the strategy discovery
finds the circles it predicts by the tag, and the location-shortcut test flags that strategy.

The audits include the counterfactual background test, with backgrounds taken from an
*in-distribution* split whose textures follow the class as in the shortcut training data (on
the balanced split a same-class background is no more typical than any other, so BG-gap would
be ~0 for any model), and the model-randomisation sanity check of the heatmaps.

Everything is generated locally and seeded: no network, no downloads, the same numbers on
every run on a given machine.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file

from auditcam.audit import audit
from auditcam.config import AuditSettings
from auditcam.data import LabelledDataset
from auditcam.demo.models import train
from auditcam.demo.synthetic import CLASSES, TEXTURES, Split, add_tag, make_split
from auditcam.files import atomic_write
from auditcam.models import load_model_info
from auditcam.report import render_index
from auditcam.result import AuditResult

MODEL_SPEC = "auditcam.demo.models:tiny_cnn"
# Probability that the background texture is forced to agree with the class, per site.
SHORTCUT_AGREEMENT = {"A": 0.97, "B": 0.5}
CLEAN_AGREEMENT = {"A": 0.0, "B": 0.0}
TRAINING = {
    "shortcut": "background agrees with the class",
    "clean": "background independent of the class",
    "tag": "a tag in the corner of every circle",
}


@dataclass(frozen=True)
class DemoRun:
    """Where the demo put things, and the audit of each model."""

    manifest: Path
    donors: Path
    weights: dict[str, Path]
    reports: dict[str, Path]
    results: dict[str, AuditResult]


def write_split(split: Split, folder: Path, *, background: bool = False, masks: bool = True) -> Path:
    """Write a split as PNG images (and masks, unless ``masks`` is False: a manifest without a
    mask column) plus ``manifest.csv``; return the manifest path. ``background`` adds a
    ``background`` group column naming each image's texture family, as datasets record a site,
    scanner or location."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    if masks:
        (folder / "masks").mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["id", "image", *(["mask"] if masks else []), "label", "site", *(["background"] if background else [])]
        )
        for i in range(len(split.labels)):
            name = f"{i:05d}.png"
            Image.fromarray(split.images[i].permute(1, 2, 0).numpy()).save(folder / "images" / name)
            mask = [f"masks/{name}"] if masks else []
            if masks:
                Image.fromarray(split.masks[i].numpy().astype("uint8") * 255).save(folder / "masks" / name)
            row = [f"demo-{i:05d}", f"images/{name}", *mask, CLASSES[int(split.labels[i])], split.sites[i]]
            writer.writerow([*row, *([TEXTURES[int(split.textures[i])]] if background else [])])
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    return manifest


def run_demo(
    out: str | Path,
    *,
    seed: int = 0,
    n_train: int = 1500,
    n_test: int = 600,
    n_donors: int = 300,
    n_counterfactual: int = 240,
    epochs: int = 6,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DemoRun:
    """Generate data, train both models, audit them; reports go to ``out/<model>/report.html``."""
    out = Path(out)
    start = time.perf_counter()

    def step(text: str) -> None:
        log(f"[{time.perf_counter() - start:5.1f}s] {text}")

    step("generating the synthetic shortcut dataset (coloured shapes on textured backgrounds)")
    splits = {
        "shortcut": make_split(n_train, agreement=SHORTCUT_AGREEMENT, seed=seed * 10 + 1),
        "clean": make_split(n_train, agreement=CLEAN_AGREEMENT, seed=seed * 10 + 2),
    }
    manifest = write_split(make_split(n_test, agreement=CLEAN_AGREEMENT, seed=seed * 10 + 3), out / "data")
    step(f"wrote {n_test} held-out samples with subject masks to {manifest}")
    donors = write_split(make_split(n_donors, agreement=SHORTCUT_AGREEMENT, seed=seed * 10 + 4), out / "data-indist")
    step(f"wrote {n_donors} in-distribution samples (backgrounds follow the class) to {donors}")

    tagged = make_split(n_test, agreement=CLEAN_AGREEMENT, seed=seed * 10 + 5)
    tag_manifest = write_split(add_tag(tagged, torch.arange(n_test) % 2 == 0), out / "data-tag", masks=False)
    step(f"wrote {n_test} held-out samples without masks, a tag on half of every class, to {tag_manifest}")
    splits["tag"] = add_tag(splits["clean"], splits["clean"].labels == 0)

    weights: dict[str, Path] = {}
    (out / "models").mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        step(f"training the {name} model on {n_train} images ({TRAINING[name]})")
        model = train(split.images, split.labels, epochs=epochs, seed=seed)
        weights[name] = out / "models" / f"{name}.safetensors"
        save_file(model.state_dict(), str(weights[name]))

    results: dict[str, AuditResult] = {}
    reports: dict[str, Path] = {}
    for name, path in weights.items():
        step(f"auditing the {name} model")
        model, info = load_model_info(MODEL_SPEC, path)
        if name == "tag":  # no masks: the strategies and their location test are what can find it
            dataset = LabelledDataset.from_manifest(tag_manifest, classes=CLASSES, preprocessing=info.preprocessing)
            command = (
                f"auditcam audit --model {MODEL_SPEC} --weights {path} --data {tag_manifest} --out {out / name} "
                "--name 'tag model'"
            )
            result = audit(model, dataset, model_info=info, name="tag model", progress=progress, command=command)
            reports[name] = result.write(out / name)["report.html"]
            results[name] = result
            check = next(c for c in result.checks if c.name == "location_shortcut")
            step(f"  tag: {'PASSED' if result.passed else 'FAILED'} · {check.message}")
            continue
        dataset = LabelledDataset.from_manifest(manifest, classes=CLASSES, preprocessing=info.preprocessing)
        backgrounds = LabelledDataset.from_manifest(donors, classes=CLASSES, preprocessing=info.preprocessing)
        result = audit(
            model,
            dataset,
            AuditSettings(
                counterfactual=True,
                bg_donors=backgrounds,
                bg_match=("site",),
                counterfactual_samples=n_counterfactual,
                sanity=True,
            ),
            model_info=info,
            name=f"{name} model",
            progress=progress,
            command=(
                f"auditcam audit --model {MODEL_SPEC} --weights {path} --data {manifest} --out {out / name} "
                f"--name '{name} model' --counterfactual --bg-donors {donors} --bg-match site "
                f"--counterfactual-samples {n_counterfactual} --sanity"
            ),
        )
        reports[name] = result.write(out / name)["report.html"]
        results[name] = result
        overall = result.aggregates[result.meta["methods"][0]]["overall"]
        step(
            f"  {name}: {'PASSED' if result.passed else 'FAILED'} · accuracy {overall['accuracy']:.1%} · "
            f"mean subject_share {overall['subject_share_mean']:.3f} · "
            f"background-reliant {overall['background_reliant_rate']:.1%} · "
            f"BG-gap {result.counterfactual.bg_gap['value']:.3f} · "
            f"randomised-model heatmap correlation {result.sanity.final['value']:.2f}"
        )
    index = out / "index.html"
    atomic_write(
        index,
        render_index(
            "auditcam demo: shortcut, clean and tag models",
            "Tiny CNNs audited on held-out images where the background is independent of the class. "
            "The shortcut model was trained where the background texture gave the class away; the tag model "
            "where a corner tag marked every circle (audited without masks, on images tagged independently of "
            "the class).",
            {f"{name} model": (results[name], f"{name}/report.html") for name in results},
        ),
    )
    reports["index"] = index
    return DemoRun(manifest=manifest, donors=donors, weights=weights, reports=reports, results=results)
