"""Benchmark: CAM explanations against plain inference, and against pytorch-grad-cam, Captum and torch-cam.

Not a test. Prints, for one model and batch, images/s of each way of explaining the batch as a
ratio to plain ``inference_mode`` inference measured in the same run (rounds interleaved, the
median of the per-round ratios), and the peak RSS of each explain step against inference's,
each measured in its own subprocess so that peaks never mix. Every case produces maps at the
input resolution (bilinear), for the predicted class of each image.

    python bench/cam_bench.py                      # resnet50, batch 32, 224 px, 2 threads, CPU
    python bench/cam_bench.py --quick              # batch 8, 3 rounds, no seven-method anchors
    python bench/cam_bench.py --device cuda        # on a GPU (peak memory: max_memory_allocated)

Needs the ``bench`` extra (``pip install -e ".[bench]"``: grad-cam, torchcam).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SEVEN = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "eigengradcam")
CASES = (
    "inference",
    "auditcam gradcam",
    "auditcam 7 methods",
    "pytorch-grad-cam GradCAM",
    "pytorch-grad-cam 7 methods",
    "captum LayerGradCam",
    "torch-cam GradCAM",
)
EXPENSIVE = ("pytorch-grad-cam 7 methods",)


def build(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = torchvision.models.get_model(args.model).eval().to(args.device)
    images = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    return model, images.to(args.device)


def make_case(name: str, model: torch.nn.Module, images: torch.Tensor, layer: str) -> Callable[[], object]:
    """A callable that explains ``images`` (or, for "inference", only runs the model)."""
    module = dict(model.named_modules())[layer]
    size = images.shape[-2:]
    if name == "inference":

        def run():
            with torch.inference_mode():
                return model(images)

        return run
    if name.startswith("auditcam"):
        from auditcam.cam import Explainer

        explainer = Explainer(model, layer=layer, methods=SEVEN if "7" in name else ("gradcam",))
        return lambda: explainer(images).maps
    if name.startswith("pytorch-grad-cam"):
        import pytorch_grad_cam as pgc

        classes = (
            [pgc.GradCAM]
            if "7" not in name
            else [
                pgc.GradCAM,
                pgc.GradCAMPlusPlus,
                pgc.XGradCAM,
                pgc.HiResCAM,
                pgc.LayerCAM,
                pgc.EigenCAM,
                pgc.EigenGradCAM,
            ]
        )

        def run():  # targets=None: it explains each predicted class; it resizes with cv2 (bilinear)
            maps = []
            for cls in classes:
                with cls(model, [module]) as cam:
                    maps.append(cam(images, None))
            return maps

        return run
    if name == "captum LayerGradCam":
        from captum.attr import LayerAttribution, LayerGradCam

        with torch.no_grad():  # the predicted classes, handed over for free
            targets = model(images).argmax(dim=1)
        gradcam = LayerGradCam(model, module)

        def run():
            raw = gradcam.attribute(images, target=targets, relu_attributions=True)
            return LayerAttribution.interpolate(raw, tuple(size), "bilinear").detach()

        return run
    if name == "torch-cam GradCAM":
        from torchcam.methods import GradCAM

        extractor = GradCAM(model, layer)

        def run():
            scores = model(images)
            (cams,) = extractor(class_idx=scores.argmax(dim=1).tolist(), scores=scores)
            return F.interpolate(cams[:, None], size=tuple(size), mode="bilinear", align_corners=False)

        return run
    raise ValueError(name)


def timed(run: Callable[[], object], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def speed(args: argparse.Namespace, cases: list[str]) -> dict[str, dict[str, float]]:
    """Per round, inference then each case, back to back: ratio = t_inference / t_case."""
    model, images = build(args)
    runs = {name: make_case(name, model, images, args.layer) for name in ["inference", *cases]}
    for name, run in runs.items():  # warm-up: allocator, oneDNN primitives, layer lookup
        for _ in range(0 if name in EXPENSIVE else args.warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    ratios: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(args.rounds):
        for name in cases:
            if name in EXPENSIVE and r >= args.expensive_rounds:
                continue
            t_inf = timed(runs["inference"], args.device)
            t_case = timed(runs[name], args.device)
            times["inference"].append(t_inf)
            times[name].append(t_case)
            ratios[name].append(t_inf / t_case)
        print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    out = {"inference": {"images_s": args.batch / statistics.median(times["inference"]), "ratio": 1.0}}
    for name in cases:
        out[name] = {
            "images_s": args.batch / statistics.median(times[name]),
            "ratio": statistics.median(ratios[name]),
            "ratio_min": min(ratios[name]),
            "ratio_max": max(ratios[name]),
        }
    return out


def _status_bytes(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process. Unlike ru_maxrss, VmHWM starts afresh at
    exec: a child does not inherit the parent's peak."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(args: argparse.Namespace) -> None:
    """One case, once, in a fresh process: its peak memory (same imports for every case)."""
    import captum.attr  # noqa: F401
    import pytorch_grad_cam  # noqa: F401
    import torchcam.methods  # noqa: F401

    import auditcam.cam  # noqa: F401

    model, images = build(args)
    run = make_case(args.child, model, images, args.layer)
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    before = _status_bytes("VmRSS")
    run()
    if args.device == "cuda":
        torch.cuda.synchronize()
        peak, step = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_allocated() - base
    else:
        peak = _status_bytes("VmHWM")
        step = peak - before
    print(json.dumps({"peak": peak, "step": step}))


def memory(args: argparse.Namespace, cases: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for name in ["inference", *cases]:
        peaks, steps = [], []
        for _ in range(args.memory_repeats):
            command = [sys.executable, __file__, "--child", name, *args.passthrough]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            measured = json.loads(result.stdout.strip().splitlines()[-1])
            peaks.append(measured["peak"])
            steps.append(measured["step"])
        out[name] = {"peak_mb": statistics.median(peaks) / 2**20, "step_mb": statistics.median(steps) / 2**20}
    base = out["inference"]["peak_mb"]
    for values in out.values():
        values["ratio"] = values["peak_mb"] / base
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--expensive-rounds", type=int, default=1, help="rounds for the seven-method anchors (minutes each at batch 32)"
    )
    parser.add_argument("--memory-repeats", type=int, default=1, help="subprocesses per case for peak memory")
    parser.add_argument("--cases", help="comma-separated subset of: " + ", ".join(CASES[1:]))
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--quick", action="store_true", help="batch 8, 3 rounds, without the seven-method anchors")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.batch, args.rounds = min(args.batch, 8), min(args.rounds, 3)
    torch.set_num_threads(args.threads)
    args.passthrough = [f"--{k}={getattr(args, k)}" for k in ("model", "layer", "batch", "size", "threads", "device")]
    if args.child:
        child(args)
        return
    cases = args.cases.split(",") if args.cases else [c for c in CASES[1:] if not (args.quick and c in EXPENSIVE)]
    setting = (
        f"{args.model} ({args.layer}), batch {args.batch}, {args.size}x{args.size}, {args.device}, "
        f"{args.threads} threads, torch {torch.__version__}"
    )
    print(f"# {setting}")
    results: dict[str, object] = {"setting": setting, "command": " ".join(sys.argv)}
    if not args.no_speed:
        results["speed"] = s = speed(args, cases)
        print(f"\n{'case':<30} {'images/s':>9} {'vs inference':>13} {'(min..max over rounds)':>24}")
        for name, v in s.items():
            spread = f"{v['ratio_min']:.2f}..{v['ratio_max']:.2f}" if "ratio_min" in v else ""
            print(f"{name:<30} {v['images_s']:>9.2f} {v['ratio']:>12.2f}x {spread:>24}")
    if not args.no_memory:
        results["memory"] = m = memory(args, cases)
        unit = "max_memory_allocated" if args.device == "cuda" else "peak RSS"
        print(f"\n{'case':<30} {unit + ' MB':>20} {'vs inference':>13} {'step MB':>9}")
        for name, v in m.items():
            print(f"{name:<30} {v['peak_mb']:>20.0f} {v['ratio']:>12.2f}x {v['step_mb']:>9.0f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
