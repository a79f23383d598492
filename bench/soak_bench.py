"""Soak: does memory grow when auditcam runs for a long time in one process?

Not a test. On the demo's tiny CNN, three loops of the same process:

- baseline: the model's forward and backward pass alone (what any training loop pays);
- explain + score: ``with Explainer(model) as ex`` on a small batch, then :func:`auditcam.score`
  of its maps against masks, ``--calls`` times (default 10,000; a new explainer each call, so
  hooks are put on and taken off every time);
- ``Monitor.step``: a whole audit of a fixed subset with the current weights, ``--steps`` times
  (default 1,000).

Each loop reads the resident set size (VmRSS, after ``gc.collect()`` and handing freed heap
pages back to the OS) every ``--every`` calls, skips the first reading (allocator warm-up), and
prints the growth per 1,000 calls: the least-squares slope of RSS over calls. The goal is under
1 MB per 1,000 calls, the baseline measured in the same run beside it. It also checks that no
hook is left on any module and that the monitor's temporary run folders were deleted. Exit code
1 when a loop misses the goal or a hook is left.

    PYTHONPATH=$PWD python bench/soak_bench.py                        # 10,000 calls, 1,000 steps
    PYTHONPATH=$PWD python bench/soak_bench.py --calls 2000 --steps 200 --every 100
"""

from __future__ import annotations

import argparse
import gc
import glob
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditcam import AnalysisOptions, Checks, Explainer, Monitor, score
from auditcam.data.custom import WrappedDataset
from auditcam.demo.models import PREPROCESSING, TinyCNN
from auditcam.demo.synthetic import CLASSES, make_split
from auditcam.run.memory import release_memory

GOAL_MB = 1.0  # per 1,000 calls
HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def rss_mb() -> float:
    """The resident set size now (not the peak), after collecting garbage and trimming the heap."""
    gc.collect()
    release_memory()
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def soak(name: str, call: Callable[[int], object], calls: int, every: int) -> dict:
    """Run ``call(i)`` ``calls`` times; RSS every ``every`` calls; the growth per 1,000 calls."""
    readings, start = [], time.perf_counter()
    for i in range(calls):
        call(i)
        if (i + 1) % every == 0:
            readings.append((i + 1, rss_mb()))
            print(f"  {name}: {i + 1:>6} calls  RSS {readings[-1][1]:8.1f} MB", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    x, y = np.array(readings[1:], dtype=float).T  # the first reading is the warm-up
    slope = float(np.polyfit(x, y, 1)[0]) * 1000 if len(x) > 1 else float("nan")
    return {"name": name, "calls": calls, "seconds": seconds, "per_1000_mb": slope, "rss_mb": readings[-1][1]}


def hooks_left(model: torch.nn.Module) -> list[str]:
    """Every module hook dict that is not empty, by module name."""
    return [f"{n or 'model'}.{h}" for n, m in model.named_modules() for h in HOOKS if getattr(m, h, None)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000, help="explain + score calls (default 10,000)")
    parser.add_argument("--steps", type=int, default=1_000, help="Monitor.step calls (default 1,000)")
    parser.add_argument("--every", type=int, default=500, help="read RSS every this many calls (default 500)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    parser.add_argument("--batch", type=int, default=4, help="images per explain call (default 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tempfile.tempdir = tempfile.mkdtemp(prefix="auditcam-soak-")  # the monitor's run folders, counted below
    torch.manual_seed(0)
    model = TinyCNN().eval()
    split = make_split(64, agreement={"A": 1.0, "B": 1.0}, size=args.size, seed=0)
    images = PREPROCESSING.normalise(split.images[: args.batch].float() / 255.0)
    masks = split.masks[: args.batch]

    def baseline(_i: int) -> None:
        model.zero_grad(set_to_none=True)
        model(images).sum().backward()
        model.zero_grad(set_to_none=True)

    def explain_and_score(_i: int) -> None:
        with Explainer(model, layer="features", methods=("gradcam",)) as explainer:
            maps = explainer(images).maps["gradcam"]
        score(maps, masks)

    class Items(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(split.labels)

        def __getitem__(self, i: int) -> dict:
            image = PREPROCESSING.normalise(split.images[i].float() / 255.0)
            return {"image": image, "mask": split.masks[i], "label": int(split.labels[i])}

    monitor = Monitor(
        WrappedDataset(Items(), classes=CLASSES, preprocessing=PREPROCESSING),
        samples=16,
        layer="features",
        checks=Checks(),
        analysis=AnalysisOptions(bootstrap=50, min_group_size=2),
        batch_size=16,
    )
    every_step = max(1, min(args.every, args.steps) // 5)
    results = [
        soak("baseline (forward + backward)", baseline, args.calls, args.every),
        soak("explain + score", explain_and_score, args.calls, args.every),
        soak("Monitor.step", lambda i: monitor.step(model, step=i), args.steps, every_step),
    ]
    left = hooks_left(model)
    gc.collect()
    stray = glob.glob(os.path.join(tempfile.gettempdir(), "auditcam-run-*"))
    print(f"\nsoak on the demo TinyCNN, {args.size} px, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'loop':<32}{'calls':>8}{'seconds':>9}{'RSS MB':>9}{'MB / 1,000 calls':>18}  goal < {GOAL_MB:g}")
    failed = False
    for r in results:
        verdict = "" if r["name"].startswith("baseline") else ("ok" if r["per_1000_mb"] < GOAL_MB else "OVER")
        failed |= verdict == "OVER"
        line = f"{r['name']:<32}{r['calls']:>8}{r['seconds']:>9.1f}{r['rss_mb']:>9.1f}{r['per_1000_mb']:>+18.3f}"
        print(f"{line}  {verdict}")
    print(f"hooks left on the model: {', '.join(left) if left else 'none'}")
    print(f"temporary run folders left by the monitor: {len(stray)}")
    return 1 if failed or left or stray else 0


if __name__ == "__main__":
    sys.exit(main())
