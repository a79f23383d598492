"""End-to-end audit throughput, as a ratio to plain inference and against today's do-it-yourself pipeline.

Writes ``--n`` synthetic JPEG images (224 px) with PNG subject masks and a manifest to a temporary
folder, then times, over the same DataLoader settings (batch 32, the audit's default decoding
workers) and the same model (torchvision resnet50, random weights):

- ``inference``: decode + ``model(images)`` under ``torch.inference_mode`` — the floor;
- ``auditcam``: ``auditcam.audit(...)`` end to end — decode, Grad-CAM, every metric, records
  streamed to shards, merged samples.parquet, bootstrap analysis, gallery;
- ``pytorch-grad-cam + Quantus``: decode, ``pytorch_grad_cam.GradCAM`` maps, then Quantus
  ``RelevanceMassAccuracy`` (subject_share) per batch — what a user would write today for
  one of our metrics.

Cases are interleaved round by round; each ratio is the median over rounds of the per-round
ratio (the machine's load drifts between rounds, not within one). Run from the repository root:

    PYTHONPATH=$PWD python bench/throughput_bench.py                # 256 images, 3 rounds, 2 threads
    PYTHONPATH=$PWD python bench/throughput_bench.py --profile      # plus a profile of one audit
    PYTHONPATH=$PWD python bench/throughput_bench.py --device cuda  # on a GPU

Needs the ``bench`` extra (``pip install -e ".[bench]"``: grad-cam, quantus).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

from auditcam import audit
from auditcam.config import AuditSettings
from auditcam.data import LabelledDataset, default_workers, loader
from auditcam.demo.synthetic import CLASSES, make_split
from auditcam.run.device import to_device


def write_dataset(folder: Path, n: int, size: int) -> Path:
    split = make_split(n, agreement={"A": 0.0, "B": 0.0}, size=size, seed=1)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir(parents=True)
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "mask", "label", "site"])
        for i in range(n):
            Image.fromarray(split.images[i].permute(1, 2, 0).numpy()).save(folder / "images" / f"{i}.jpg", quality=90)
            Image.fromarray(split.masks[i].numpy().astype("uint8") * 255).save(folder / "masks" / f"{i}.png")
            writer.writerow([f"images/{i}.jpg", f"masks/{i}.png", CLASSES[int(split.labels[i])], split.sites[i]])
    return manifest


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def inference(model, dataset, args, device) -> Callable[[], int]:
    def run() -> int:
        seen = 0
        for batch in loader(dataset, args.batch, args.workers, pin_memory=device.type == "cuda"):
            with torch.inference_mode():
                model(to_device(batch, device)["image"])
            seen += len(batch["id"])
        sync(device)
        return seen

    return run


def auditcam_case(model, dataset, args, device, scratch: Path) -> Callable[[], int]:
    rounds = iter(range(1_000_000))

    def run() -> int:
        result = audit(
            model,
            dataset,
            AuditSettings(batch_size=args.batch, device=device, amp=args.amp),
            num_workers=args.workers,
            run_dir=scratch / f"audit-{next(rounds)}",
            progress=False,
        )
        return int(result.meta["dataset"]["n_samples"])

    return run


def grad_cam_quantus(model, dataset, args, device) -> Callable[[], int]:
    import quantus
    from pytorch_grad_cam import GradCAM

    metric = quantus.RelevanceMassAccuracy(disable_warnings=True, display_progressbar=False)

    def run() -> int:
        seen = 0
        with GradCAM(model=model, target_layers=[model.layer4]) as cam:
            for batch in loader(dataset, args.batch, args.workers, pin_memory=device.type == "cuda"):
                images = to_device(batch, device)["image"]
                maps = cam(input_tensor=images, targets=None)  # (N, H, W) numpy, each scaled to [0, 1]
                predicted = cam.outputs.argmax(dim=1).cpu().numpy()
                scores = metric(
                    model=model,
                    x_batch=images.cpu().numpy(),
                    y_batch=predicted,
                    a_batch=maps[:, None],
                    s_batch=batch["mask"][:, None].numpy().astype(np.float32),
                    channel_first=True,
                    device=str(device),
                )
                assert len(scores) == len(images)
                seen += len(images)
        sync(device)
        return seen

    return run


def timed(run: Callable[[], int]) -> float:
    """Images per second of one call."""
    start = time.perf_counter()
    seen = run()
    return seen / (time.perf_counter() - start)


def profile_audit(run: Callable[[], int]) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="images (default: 256)")
    parser.add_argument("--size", type=int, default=224, help="image size in pixels (default: 224)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--workers", type=int, help="decoding processes (default: the audit's default)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="auditcam under autocast (bf16 on CPU)")
    parser.add_argument("--skip-baseline", action="store_true", help="no pytorch-grad-cam + Quantus case")
    parser.add_argument("--profile", action="store_true", help="print a profile of one audit")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.workers is None:
        args.workers = default_workers(args.n, args.batch)
    torch.manual_seed(0)
    model = torchvision.models.get_model(args.model, num_classes=len(CLASSES)).eval().to(device)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        manifest = write_dataset(scratch / "data", args.n, args.size)
        dataset = LabelledDataset.from_manifest(manifest, classes=CLASSES)
        cases = {
            "inference": inference(model, dataset, args, device),
            "auditcam": auditcam_case(model, dataset, args, device, scratch),
        }
        if not args.skip_baseline:
            cases["pytorch-grad-cam + Quantus"] = grad_cam_quantus(model, dataset, args, device)
        print(
            f"{args.model}, {args.n} images of {args.size} px (JPEG + PNG mask), batch {args.batch}, "
            f"{args.workers} decoding workers, {args.threads} threads, {device}, {torchvision.__version__=}"
        )
        cases["inference"]()  # warm-up: page cache, allocator, lazy imports
        speeds: dict[str, list[float]] = {name: [] for name in cases}
        for r in range(args.rounds):
            for name, run in cases.items():
                speeds[name].append(timed(run))
            print(f"round {r + 1}: " + ", ".join(f"{name} {s[-1]:.2f} img/s" for name, s in speeds.items()), flush=True)
        floor = speeds["inference"]
        print(f"\n{'case':<28}{'img/s (median)':>16}{'x inference':>14}")
        for name, values in speeds.items():
            ratio = statistics.median(v / f for v, f in zip(values, floor, strict=True))
            print(f"{name:<28}{statistics.median(values):>16.2f}{ratio:>13.2f}x")
        if "pytorch-grad-cam + Quantus" in speeds:
            ours, theirs = speeds["auditcam"], speeds["pytorch-grad-cam + Quantus"]
            speedup = statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
            print(f"\nauditcam speed-up over pytorch-grad-cam + Quantus: {speedup:.2f}x")
        if args.profile:
            profile_audit(cases["auditcam"])


if __name__ == "__main__":
    main()
