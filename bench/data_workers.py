"""How much decoding in DataLoader worker processes saves in an audit.

Writes a synthetic dataset of JPEG photos (PNG masks) to a temporary folder, audits it with the
demo's tiny CNN with 0, 1, 2 workers and the automatic choice, and prints each wall time as a
ratio to 0 workers (best of ``--repeats``). Run from the repository root:

    PYTHONPATH=$PWD python bench/data_workers.py --n 384 --size 256
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from auditcam import audit
from auditcam.config import AuditSettings
from auditcam.data import LabelledDataset, default_workers
from auditcam.demo import MODEL_SPEC
from auditcam.demo.synthetic import CLASSES, make_split
from auditcam.models import load_model_info


def write_photos(folder: Path, n: int, size: int) -> Path:
    split = make_split(n, agreement={"A": 0.0, "B": 0.0}, size=size, seed=1)
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "mask", "label", "site"])
        for i in range(n):
            Image.fromarray(split.images[i].permute(1, 2, 0).numpy()).save(folder / "images" / f"{i}.jpg", quality=90)
            Image.fromarray(split.masks[i].numpy().astype("uint8") * 255).save(folder / "masks" / f"{i}.png")
            writer.writerow([f"images/{i}.jpg", f"masks/{i}.png", CLASSES[int(split.labels[i])], split.sites[i]])
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=384, help="images (default: 384)")
    parser.add_argument("--size", type=int, default=256, help="photo side in pixels (default: 256)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, info = load_model_info(MODEL_SPEC)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = LabelledDataset.from_manifest(write_photos(Path(tmp), args.n, args.size), classes=CLASSES)
        auto = default_workers(len(dataset), args.batch_size)
        times = {}
        for workers in (0, 1, 2, None):
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                audit(
                    model,
                    dataset,
                    AuditSettings(batch_size=args.batch_size),
                    model_info=info,
                    num_workers=workers,
                    progress=False,
                )
                best = min(best, time.perf_counter() - start)
            times[f"auto ({auto})" if workers is None else str(workers)] = best
    base = times["0"]
    print(f"{args.n} JPEG photos of {args.size}x{args.size}, tiny CNN at 64x64, batch {args.batch_size}")
    for name, seconds in times.items():
        print(f"workers={name:>8}: {seconds:6.2f} s  ratio to 0 workers {seconds / base:.2f}")


if __name__ == "__main__":
    main()
