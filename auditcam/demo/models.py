"""The demo's tiny CNN and its few-second CPU training loop.

``auditcam.demo.models:tiny_cnn`` is a model spec like any user's factory: it declares its
preprocessing and class names as attributes, so ``auditcam audit`` needs no extra flags.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from auditcam.demo.synthetic import CLASSES
from auditcam.models import Preprocessing

PREPROCESSING = Preprocessing(image_size=(64, 64), resize=None, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class TinyCNN(nn.Module):
    """Four 3x3 conv blocks (64 -> 16 px feature maps in ``features``), global pooling, linear."""

    def __init__(self, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_block(3, 16),
            nn.MaxPool2d(2),
            *_block(16, 32),
            nn.MaxPool2d(2),
            *_block(32, 48),
            *_block(48, 64),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def tiny_cnn(num_classes: int = len(CLASSES)) -> TinyCNN:
    """Factory used as the model spec ``auditcam.demo.models:tiny_cnn``."""
    return TinyCNN(num_classes)


tiny_cnn.preprocessing = PREPROCESSING  # type: ignore[attr-defined]
tiny_cnn.classes = CLASSES  # type: ignore[attr-defined]


def train(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 6,
    batch_size: int = 64,
    seed: int = 0,
    on_epoch: Callable[[int, float, TinyCNN], None] | None = None,
) -> TinyCNN:
    """Train a fresh TinyCNN on uint8 images (N, 3, 64, 64); deterministic for a given seed.
    ``on_epoch(epoch, mean loss, model)`` is called after each epoch (e.g. to save a checkpoint).

    Uses a local generator for shuffling and forks the global RNG for the initial weights, so
    the caller's random state is left alone.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyCNN()
    gen = torch.Generator().manual_seed(seed)
    inputs = PREPROCESSING.normalise(images.float() / 255.0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * ((len(inputs) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(inputs), generator=gen)
        total = 0.0
        for start in range(0, len(inputs), batch_size):
            idx = order[start : start + batch_size]
            loss = loss_fn(model(inputs[idx]), labels[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        if on_epoch is not None:
            on_epoch(epoch, total / len(inputs), model)
    return model.eval()
