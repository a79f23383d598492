"""Peak memory of an audit does not grow with the dataset.

Audits N synthetic samples (a custom torch Dataset that makes each item from its index: no files
on disk) with a tiny CNN, writes the full bundle (samples.parquet, summary.json, junit.xml,
report.html), and prints the peak resident memory of the process, for each N in its own fresh
subprocess. The largest N must stay within 10 % of the smallest (exit code 1 otherwise). Run
from the repository root:

    PYTHONPATH=$PWD python bench/scale_bench.py                 # 10,000 and 100,000 samples
    PYTHONPATH=$PWD python bench/scale_bench.py --sizes 1000 10000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

SIZE = 32  # pixels
GROUPS = ("A", "B", "C", "D")


class Synthetic(Dataset):
    """Item ``i``: a noisy 32 px image with a bright square subject whose place depends on ``i``,
    its mask, a label and a group; nothing is stored, everything comes from the index."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        gen = torch.Generator().manual_seed(i)
        image = torch.randn(3, SIZE, SIZE, generator=gen) * 0.3
        top, left = (i * 7) % (SIZE - 12), (i * 13) % (SIZE - 12)
        mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        mask[top : top + 12, left : left + 12] = True
        image[:, mask] += 1.0
        return {
            "image": image,
            "mask": mask,
            "label": i % 3,
            "id": f"sample-{i:07d}",
            "attributes": {"group": GROUPS[i % len(GROUPS)]},
        }


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def child(n: int, batch_size: int, workers: int) -> dict:
    """One audit of ``n`` samples in this process; its peak RSS and wall time."""
    from auditcam import AnalysisOptions, audit
    from auditcam.config import AuditSettings

    torch.manual_seed(0)
    model = Tiny().eval()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = audit(
            model,
            Synthetic(n),
            AuditSettings(batch_size=batch_size),
            num_workers=workers,
            analysis=AnalysisOptions(min_group_size=30, bootstrap=1000),
            run_dir=Path(tmp) / "run",
            progress=False,
        )
        result.write(Path(tmp) / "run")
        rows = result.count_samples()
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "n": n,
        "rows": rows,
        "seconds": time.perf_counter() - start,
        "peak_rss_mb": self_kb / 1024,
        "worker_peak_rss_mb": children_kb / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: 0)")
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.batch_size, args.workers)))
        return 0
    results = []
    for n in args.sizes:
        command = [sys.executable, __file__, "--child", str(n), "--batch-size", str(args.batch_size)]
        command += ["--workers", str(args.workers)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        r = results[-1]
        print(
            f"{r['n']:>9,} samples  {r['rows']:>9,} rows  {r['seconds']:7.1f} s  "
            f"peak RSS {r['peak_rss_mb']:7.1f} MB"
            + (f"  (workers {r['worker_peak_rss_mb']:.1f} MB)" if args.workers else ""),
            flush=True,
        )
    ratio = results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
    verdict = "OK" if ratio <= 1 + args.tolerance else "FAIL"
    print(
        f"peak RSS {results[-1]['n']:,} / {results[0]['n']:,} samples = {ratio:.3f}x "
        f"({verdict}: limit {1 + args.tolerance:.2f}x)"
    )
    return 0 if verdict == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
