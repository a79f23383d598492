"""Cost of the strategy discovery and the location-shortcut test within an audit.

Audits N synthetic samples (bench/scale_bench.py's in-memory dataset and tiny CNN), each N in its
own fresh subprocess, timing the strategies step (:func:`auditcam.probes.occlusion.run_strategies`)
against the rest of the same audit, and the peak resident memory. Every class-0 image carries a
bright tag in its top-left corner and the CNN is first trained on such images (in this process,
untimed), so it learns the tag: the location test then has a spot to occlude, as on a model with
a shortcut, instead of finding nothing on a random model's maps. Prints two ratios measured in
this run: strategies time / rest of the audit at the first N (limit 1.10, i.e. at most +10 %),
and peak RSS at the last N / the first N (limit 1.10). Exit code 1 when either is over.

scikit-learn (the k-means and the silhouette) is imported before the audit and its import
timed apart: a process pays it once, whatever it audits, and on this toy CNN (well under a
millisecond a sample) it would otherwise read as a share of the audit that no real model shows.
Both are printed, the import included as the "first audit in a process" figure.

    PYTHONPATH=$PWD python bench/strategies_bench.py                  # 10,000 and 100,000 samples
    PYTHONPATH=$PWD python bench/strategies_bench.py --sizes 2000 20000
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
from scale_bench import Synthetic, Tiny

TAG = (slice(1, 7), slice(1, 7))  # rows, columns of the class-0 tag


class Tagged(Synthetic):
    """bench/scale_bench.py's items, with a bright 6 px tag near the top-left corner of every
    class-0 image (a fixed-position shortcut, like the source tag of the PASCAL VOC horses)."""

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        if item["label"] == 0:
            item["image"][(0, *TAG)] = 3.0
            item["image"][(1, *TAG)] = -3.0
        return item


def train(path: Path, n: int = 3000, epochs: int = 4) -> None:
    """Train the tiny CNN on ``n`` tagged images (seeded) and save its weights at ``path``."""
    torch.manual_seed(0)
    model = Tiny()
    data = Tagged(n)
    images = torch.stack([data[i]["image"] for i in range(n)])
    labels = torch.tensor([data[i]["label"] for i in range(n)])
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        for batch in torch.randperm(n).split(64):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimiser.step()
    torch.save(model.state_dict(), path)


def child(n: int, batch_size: int, weights: str) -> dict:
    """One audit of ``n`` samples in this process: total and strategies seconds, peak RSS, and
    how many strategies were occluded and flagged."""
    from auditcam import AnalysisOptions, AuditSettings, audit
    from auditcam.probes import occlusion as module  # beyond_heatmaps looks run_strategies up here

    spent = []
    original = module.run_strategies

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    module.run_strategies = timed
    model = Tiny()
    model.load_state_dict(torch.load(weights, weights_only=True))
    start = time.perf_counter()
    import sklearn.cluster
    import sklearn.metrics  # noqa: F401

    imported = time.perf_counter() - start
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = audit(
            model.eval(),
            Tagged(n),
            AuditSettings(batch_size=batch_size),
            num_workers=0,
            analysis=AnalysisOptions(min_group_size=30, bootstrap=1000),
            run_dir=Path(tmp) / "run",
            progress=False,
        )
    total = time.perf_counter() - start
    strategies = result.strategies.discovery.strategies
    return {
        "n": n,
        "seconds": total,
        "strategies_seconds": sum(spent),
        "import_seconds": imported,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "strategies": len(strategies),
        "occluded": sum(bool(s.occlusion and s.occlusion["measured"]) for s in strategies),
        "flagged": sum(bool(s.flagged) for s in strategies),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--time-limit", type=float, default=0.10)
    parser.add_argument("--memory-limit", type=float, default=0.10)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.batch_size, args.weights)))
        return 0
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "tiny.pt"
        train(weights)
        for n in args.sizes:
            command = [sys.executable, __file__, "--child", str(n), "--batch-size", str(args.batch_size)]
            command += ["--weights", str(weights)]
            results.append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout))
            r = results[-1]
            print(
                f"{r['n']:>9,} samples  audit {r['seconds']:7.1f} s  strategies {r['strategies_seconds']:6.2f} s  "
                f"(scikit-learn import before it {r['import_seconds']:4.2f} s)  "
                f"peak RSS {r['peak_rss_mb']:7.1f} MB  ({r['strategies']} strategies, {r['occluded']} occluded, "
                f"{r['flagged']} flagged)",
                flush=True,
            )
    first, last = results[0], results[-1]
    cost = first["strategies_seconds"] / (first["seconds"] - first["strategies_seconds"])
    memory = last["peak_rss_mb"] / first["peak_rss_mb"]
    ok_time, ok_memory = cost <= args.time_limit, memory <= 1 + args.memory_limit
    print(f"strategies / rest of the audit at {first['n']:,} samples = +{cost:.1%} ({'OK' if ok_time else 'FAIL'}: "
          f"limit +{args.time_limit:.0%})")  # fmt: skip
    cold = (first["strategies_seconds"] + first["import_seconds"]) / (first["seconds"] - first["strategies_seconds"])
    print(f"the same with scikit-learn's import, the first audit of a process = +{cold:.1%} (not gated)")
    print(f"peak RSS {last['n']:,} / {first['n']:,} samples = {memory:.3f}x ({'OK' if ok_memory else 'FAIL'}: "
          f"limit {1 + args.memory_limit:.2f}x)")  # fmt: skip
    return 0 if ok_time and ok_memory else 1


if __name__ == "__main__":
    sys.exit(main())
