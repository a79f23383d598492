"""How fast is the analysis? Bootstrap CIs for every statistic of every group of a 10,000-sample
audit, against fairlearn's MetricFrame bootstrap (n_boot) for one statistic of one attribute.

    PYTHONPATH=$PWD python bench/analysis_bootstrap.py [--samples 10000] [--bootstrap 1000]

Prints wall times (best of --repeat) and the ratio per bootstrapped estimate; timings on a
shared machine are noisy, so compare ratios from one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from auditcam.config import AnalysisOptions
from auditcam.stats.analysis import analyse


def records(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    share = rng.beta(4, 3, n)
    area = rng.uniform(0.1, 0.4, n)
    label = rng.integers(0, 10, n)
    pred = np.where(rng.random(n) < 0.8, label, rng.integers(0, 10, n))
    status = np.where(rng.random(n) < 0.01, "invalid", "ok")
    frame = pd.DataFrame(
        {
            "id": [f"s{i}" for i in range(n)],
            "label": label,
            "label_name": [f"class{c}" for c in label],
            "pred": pd.array(pred, dtype="Int64"),
            "correct": pd.array(pred == label, dtype="boolean"),
            "status": status,
            "subject_share": share,
            "subject_area": area,
            "focus_lift": share / area,
            "background_reliant": (share / area < 1).astype(float),
            "pointing_hit": (rng.random(n) < share).astype(float),
            "skin_tone": rng.choice(["I", "II", "III", "IV", "V", "VI"], n),
            "site": rng.choice(["A", "B", "C"], n),
            "sex": rng.choice(["f", "m"], n),
        }
    )
    frame.loc[status != "ok", ["subject_share", "focus_lift", "background_reliant", "pointing_hit"]] = np.nan
    return frame


def best_of(repeat: int, run) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--fairlearn-boot", type=int, default=50, help="n_boot for fairlearn (it is slow)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    frame = records(args.samples)
    options = AnalysisOptions(bootstrap=args.bootstrap, intersections=(("skin_tone", "site"),))
    result = analyse(frame, ["skin_tone", "site", "sex"], options)
    n_estimates = len(result.estimates)
    ours = best_of(args.repeat, lambda: analyse(frame, ["skin_tone", "site", "sex"], options))
    print(
        f"auditcam analyse: {args.samples} samples, {len(result.counts)} groups x {n_estimates // len(result.counts)} "
        f"statistics = {n_estimates} estimates, {args.bootstrap} resamples: {ours:.2f} s"
    )
    from fairlearn.metrics import MetricFrame

    valid = frame[frame["status"] == "ok"]

    def fairlearn_run() -> None:
        MetricFrame(
            metrics=lambda y_true, y_pred: float(np.mean(y_true)),
            y_true=valid["subject_share"].to_numpy(),
            y_pred=valid["subject_share"].to_numpy(),
            sensitive_features=valid["site"].to_numpy(),
            n_boot=args.fairlearn_boot,
            ci_quantiles=[0.025, 0.975],
            random_state=0,
        )

    theirs = best_of(1, fairlearn_run)
    fairlearn_estimates = 4  # overall + 3 sites, one statistic
    per_ours = ours / (n_estimates * args.bootstrap)
    per_theirs = theirs / (fairlearn_estimates * args.fairlearn_boot)
    print(
        f"fairlearn MetricFrame(n_boot={args.fairlearn_boot}): 1 statistic x 3 sites + overall = "
        f"{fairlearn_estimates} estimates: {theirs:.2f} s"
    )
    print(f"time per bootstrapped estimate: fairlearn / auditcam = {per_theirs / per_ours:,.0f}x")


if __name__ == "__main__":
    main()
