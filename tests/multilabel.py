"""Synthetic multi-label data and a tiny multi-label CNN trained on it in seconds.

Each 32 x 32 image holds, independently with probability 1/2, a red square and a blue disc at
random places on a noisy grey background: labels ``square`` and ``disc`` (either, both, or none),
each with its own mask. ``shapes_net`` is a model spec (``tests.multilabel:shapes_net``) that
declares its preprocessing and classes like any user's factory.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from auditcam.models import Preprocessing

CLASSES = ("square", "disc")
SIZE = 32
PREPROCESSING = Preprocessing(image_size=(SIZE, SIZE), resize=None, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def make_shapes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 images (n, SIZE, SIZE, 3), bool masks (n, 2, SIZE, SIZE) per class, bool labels (n, 2)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(100, 156, size=(n, SIZE, SIZE, 3)).astype(np.uint8)
    masks = np.zeros((n, 2, SIZE, SIZE), dtype=bool)
    labels = rng.random((n, 2)) < 0.5
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in range(n):
        # the square on the left half, the disc on the right: they never overlap
        if labels[i, 0]:
            y, x = rng.integers(2, SIZE - 12), rng.integers(1, SIZE // 2 - 10)
            masks[i, 0, y : y + 10, x : x + 10] = True
            images[i][masks[i, 0]] = (230, 30, 30)
        if labels[i, 1]:
            cy, cx = rng.integers(7, SIZE - 7), rng.integers(SIZE // 2 + 6, SIZE - 6)
            masks[i, 1] = (yy - cy) ** 2 + (xx - cx) ** 2 <= 25
            images[i][masks[i, 1]] = (30, 30, 230)
    return images, masks, labels


def write_shapes(folder: Path, n: int, seed: int = 0, *, shared_mask: bool = False) -> Path:
    """PNG images, a mask per present label and ``manifest.csv`` (columns image, labels
    ``square;disc``, mask:square, mask:disc, site); with ``shared_mask`` one ``mask`` column of
    the union instead. Return the manifest's path."""
    images, masks, labels = make_shapes(n, seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        Image.fromarray(images[i]).save(folder / "images" / f"{i:03d}.png")
        present = [c for c, on in zip(CLASSES, labels[i], strict=True) if on]
        row = {"image": f"images/{i:03d}.png", "labels": ";".join(present)}
        if shared_mask:
            union = masks[i].any(0)
            Image.fromarray(union.astype(np.uint8) * 255).save(folder / "masks" / f"{i:03d}.png")
            row["mask"] = f"masks/{i:03d}.png" if union.any() else ""
        else:
            for k, name in enumerate(CLASSES):
                path = f"masks/{i:03d}_{name}.png"
                if labels[i, k]:
                    Image.fromarray(masks[i, k].astype(np.uint8) * 255).save(folder / path)
                row[f"mask:{name}"] = path if labels[i, k] else ""
        row["site"] = "AB"[i % 2]
        rows.append(row)
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


class ShapesNet(nn.Module):
    """conv blocks (32 -> 8 px feature maps in ``features``), global average pool, linear: one logit per label."""

    def __init__(self, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def shapes_net(num_classes: int = len(CLASSES)) -> ShapesNet:
    """Model spec ``tests.multilabel:shapes_net``."""
    return ShapesNet(num_classes)


shapes_net.preprocessing = PREPROCESSING  # type: ignore[attr-defined]
shapes_net.classes = CLASSES  # type: ignore[attr-defined]


def train_shapes(n: int = 192, epochs: int = 8, seed: int = 0) -> ShapesNet:
    """A ShapesNet trained with a sigmoid (BCE) loss on ``n`` synthetic images; deterministic."""
    images, _, labels = make_shapes(n, seed + 1000)
    inputs = PREPROCESSING.normalise(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0)
    targets = torch.from_numpy(labels).float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ShapesNet()
    gen = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, 32):
            idx = order[start : start + 32]
            loss = loss_fn(model(inputs[idx]), targets[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return model.eval()
