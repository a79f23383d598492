"""Benchmark: auditcam's default layer over a zoo of timm architectures.

Not a test. For each architecture (random init, at its default size or a small ``--size``), prints
the default layer, whether its Grad-CAM maps are non-zero, the share of images whose map is all
zero, and the time of one explained batch as a ratio to plain ``inference_mode`` inference of the
same batch measured in the same run (median of ``--rounds`` interleaved rounds).

    python bench/zoo_bench.py                     # the zoo below, batch 4, 224 px
    python bench/zoo_bench.py --size 64 --quick   # small inputs, 1 round
    python bench/zoo_bench.py --models convit_tiny,xcit_nano_12_p16_224

Needs the ``timm`` extra.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ZOO = (
    "resnet18",
    "efficientnet_b0",
    "convnext_atto",
    "regnety_002",
    "mobilenetv3_small_100",
    "vit_tiny_patch16_224",
    "deit_tiny_distilled_patch16_224",
    "vit_small_r26_s32_224",
    "swin_tiny_patch4_window7_224",
    "convit_tiny",
    "xcit_nano_12_p16_224",
    "cait_xxs24_224",
    "levit_128s",
    "mobilevit_xxs",
    "coat_lite_tiny",
    "poolformer_s12",
)


def _timed(step, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def bench(name: str, size: int | None, batch: int, rounds: int) -> dict:
    """One architecture: default layer, non-zero maps, explain/inference time ratio."""
    from auditcam.cam import Explainer
    from auditcam.models import load_model_info

    kwargs = {} if size is None else {"img_size": size}
    try:
        model, info = load_model_info(f"timm:{name}", num_classes=10, model_args=kwargs)
    except Exception:  # an architecture that takes no img_size: its own size
        model, info = load_model_info(f"timm:{name}", num_classes=10)
    height, width = info.preprocessing.image_size
    images = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(0))
    explainer = Explainer(model)
    explanation = explainer(images)  # finds the layer (one probe) outside the timing
    ratios = []
    for _ in range(rounds):
        with torch.inference_mode():
            (plain,) = _timed(lambda: model(images), 1)
        (explained,) = _timed(lambda: explainer(images), 1)
        ratios.append(explained / plain)
    peaks = explanation.maps["gradcam"].flatten(1).amax(1)
    return {
        "model": name,
        "size": f"{height}x{width}",
        "layer": explanation.layer,
        "non_zero": bool(peaks.amax() > 0),
        "zero_share": float((peaks == 0).float().mean()),
        "ratio": statistics.median(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated timm names (default: the zoo)")
    parser.add_argument("--size", type=int, help="img_size for the models that take it (default: theirs)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.models.split(",") if args.models else ZOO
    rounds = 1 if args.quick else args.rounds
    print(f"{'model':<34} {'size':>9}  {'non-zero':>8} {'zero maps':>9} {'explain/infer':>13}  default layer")
    for name in names:
        try:
            row = bench(name, args.size, args.batch, rounds)
        except Exception as exc:
            print(f"{name:<34} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}")
            continue
        print(
            f"{row['model']:<34} {row['size']:>9}  {row['non_zero']!s:>8} {row['zero_share']:>9.0%} "
            f"{row['ratio']:>12.2f}x  {row['layer']}"
        )


if __name__ == "__main__":
    main()
