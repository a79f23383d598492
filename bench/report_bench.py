"""How long does the HTML report take to render for a large audit, and how big is it?

A synthetic 10,000-sample AuditResult (no model run; records as in tests/records.py) with 20
classes, two group attributes, their intersection, 1 % invalid samples and a full gallery of
224 px exemplars, rendered the way ``auditcam audit`` writes report.html.

    PYTHONPATH=$PWD python bench/report_bench.py [--samples 10000] [--gallery 24] [--pixels 224]

Targets (issue 6): under 10 s and under 15 MB. Prints the render time (best of --repeat), the
file size and how it splits into thumbnails, charts and the rest. Timings on a shared machine
are noisy.
"""

from __future__ import annotations

import argparse
import re
import time

from auditcam.config import AnalysisOptions, Checks, GroupGap
from auditcam.report import render_html
from tests.records import audit_result, gallery, samples


def build(n: int, gallery_size: int, pixels: int):
    per_group = {"I": 0.30, "II": 0.25, "III": 0.25, "IV": 0.15, "V": 0.05}
    groups = {g: round(n * share) for g, share in per_group.items()}
    groups["I"] += n - sum(groups.values())
    classes = tuple(f"class {i:02d}" for i in range(20))
    frame = samples(groups, share={"V": 0.3}, invalid_rate=0.01, classes=classes, seed=1)
    checks = Checks(min_worst_group_accuracy=0.7, max_group_gap=(GroupGap("skin_tone", "subject_share_mean", 0.05),))
    options = AnalysisOptions(intersections=(("skin_tone", "site"),))
    exemplars = gallery(frame, size=gallery_size, pixels=pixels)
    return audit_result(frame, checks, options, exemplars=exemplars)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--gallery", type=int, default=24, help="exemplars kept at each end of the gallery")
    parser.add_argument("--pixels", type=int, default=224, help="side of the exemplar images")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    start = time.perf_counter()
    result = build(args.samples, args.gallery, args.pixels)
    result.aggregates  # noqa: B018 - the analysis is the audit's work, not the report's
    print(f"built a {args.samples}-sample audit result in {time.perf_counter() - start:.1f} s")

    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        html = render_html(result)
        times.append(time.perf_counter() - start)
    size = len(html.encode("utf-8"))
    thumbnails = sum(len(m) for m in re.findall(r"data:image/(?:webp|png);base64,[A-Za-z0-9+/=]+", html))
    charts = sum(len(m) for m in re.findall(r"data:image/svg\+xml;base64,[A-Za-z0-9+/=]+", html))
    print(f"render: {min(times):.2f} s (best of {args.repeat}; target < 10 s)")
    print(
        f"size:   {size / 1e6:.2f} MB (target < 15 MB): thumbnails {thumbnails / 1e6:.2f} MB, "
        f"charts {charts / 1e6:.2f} MB, tables and text {(size - thumbnails - charts) / 1e6:.2f} MB"
    )


if __name__ == "__main__":
    main()
