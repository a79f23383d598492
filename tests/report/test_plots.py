"""Charts: self-contained SVG, stable bytes, data-borne labels drawn as text, the numbers they state."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from auditcam.config import AnalysisOptions
from auditcam.report import plots
from auditcam.stats.analysis import analyse
from tests.records import samples

SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}href"
HOSTILE_CLASSES = ("$x^2$", "a$b", "<script>alert(1)</script>")


@pytest.fixture(scope="module")
def frame():
    groups = {"light": 80, "dark": 80, "<b>x</b> $y$": 8}
    return samples(groups, share={"dark": 0.25}, invalid_rate=0.05, classes=HOSTILE_CLASSES, seed=2)


@pytest.fixture(scope="module")
def aggregates(frame):
    return analyse(frame, ["skin_tone", "site"], AnalysisOptions(bootstrap=100)).to_dict()


def _svg(chart: plots.Chart) -> bytes:
    prefix = "data:image/svg+xml;base64,"
    assert chart.uri.startswith(prefix)
    return base64.b64decode(chart.uri[len(prefix) :])


def _all_charts(frame, aggregates):
    return [
        plots.share_distribution(frame, ["skin_tone", "site"]),
        plots.group_bars("skin_tone", aggregates["by_group"]["skin_tone"], "dark", 30),
        plots.group_bars("class", aggregates["by_class"], None, 30),
        plots.share_vs_area(frame, 1.0),
        plots.accuracy_vs_share(frame),
    ]


def test_charts_are_self_contained_svg_with_hostile_labels(frame, aggregates):
    for chart in _all_charts(frame, aggregates):
        data = _svg(chart)
        root = ET.fromstring(data)  # well-formed XML, whatever the labels held
        assert root.tag == f"{SVG}svg"
        assert not root.findall(f".//{SVG}script") and not root.findall(f".//{SVG}foreignObject")
        assert not root.findall(f".//{SVG}text")  # glyphs as paths: no font to load
        for element in root.iter():
            href = element.get(XLINK) or element.get("href")
            assert href is None or href.startswith(("#", "data:image/png;base64,")), href
        # URLs only as XML namespace names (SVG, XLink, RDF, Dublin Core), which are never fetched
        hosts = {m.decode() for m in re.findall(rb"https?://([^/\"\s]+)", data)}
        assert hosts <= {"www.w3.org", "purl.org", "creativecommons.org"}, hosts
        assert chart.alt and chart.caption and chart.title


def test_the_same_result_draws_the_same_bytes(frame, aggregates):
    first = [c.uri for c in _all_charts(frame, aggregates)]
    assert first == [c.uri for c in _all_charts(frame, aggregates)]


def test_charts_neither_import_pyplot_nor_switch_the_backend():
    code = (
        "import matplotlib; matplotlib.use('svg'); import sys\n"
        "from auditcam.report import plots\n"
        "from tests.records import samples\n"
        "plots.share_vs_area(samples({'a': 50}), 1.0)\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_accuracy_per_share_bin_matches_a_brute_force_count(frame):
    chart = plots.accuracy_vs_share(frame, bins=4)
    valid = frame[(frame["status"] == "ok") & frame["pred"].notna()]
    shares = valid["subject_share"].to_numpy(float)
    correct = valid["correct"].astype(bool).to_numpy()
    edges = np.quantile(shares, [0, 0.25, 0.5, 0.75, 1])
    expected = []
    for b in range(4):
        last = b == 3
        members = [
            i for i, x in enumerate(shares) if edges[b] <= x and (x <= edges[b + 1] if last else x < edges[b + 1])
        ]
        expected.append(f"{np.median(shares[members]):.2f}: {np.mean(correct[members]):.0%}")
    assert "all classes: " + ", ".join(expected) + ";" in chart.alt


def test_group_bars_keep_the_lowest_groups_and_say_how_many_are_left_out():
    share = {f"g{i:02d}": 0.2 + 0.02 * i for i in range(plots.MAX_GROUPS + 5)}
    frame = samples(dict.fromkeys(share, 40), share=share, seed=1)
    groups = analyse(frame, ["skin_tone"], AnalysisOptions(bootstrap=50)).to_dict()["by_group"]["skin_tone"]
    chart = plots.group_bars("skin_tone", groups, "g00", 30, confidence=0.9)
    drawn = re.findall(r"(g\d\d): \d\.\d{3} \(CI", chart.alt)
    lowest = sorted(groups, key=lambda g: groups[g]["subject_share_mean"])[: plots.MAX_GROUPS]
    assert drawn == sorted(lowest)  # in report order; the 5 highest are left out
    assert "5 more group(s) with higher subject_share are in the table only." in chart.caption
    assert "90% intervals" in chart.alt and "Worst group: g00." in chart.alt
    g03 = groups["g03"]
    assert f"g03: {g03['subject_share_mean']:.3f} (CI {g03['ci']['subject_share_mean'][0]:.3f}–" in chart.alt


def test_scatter_states_the_background_reliant_share(frame):
    chart = plots.share_vs_area(frame, 1.0)
    valid = frame[frame["status"] == "ok"]
    assert f"{(valid['focus_lift'] < 1).mean():.1%} lie below the line focus_lift = 1" in chart.alt
    assert f"for {len(valid)} valid samples" in chart.alt


def test_nothing_to_draw_gives_no_chart(frame):
    unscored = frame.assign(status="invalid")
    assert plots.share_distribution(unscored, ["site"]) is None
    assert plots.share_vs_area(unscored, 1.0) is None
    assert plots.accuracy_vs_share(unscored) is None
    assert plots.group_bars("site", {}, None, 30) is None
