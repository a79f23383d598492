"""Charts for the report, drawn by matplotlib on an Agg canvas and embedded as SVG data URIs.

No pyplot: each chart is a bare :class:`~matplotlib.figure.Figure` on a ``FigureCanvasAgg``, so
rendering a report never switches the global backend of a notebook that imports auditcam. Text
is drawn as glyph paths from matplotlib's bundled DejaVu font (nothing is fetched) and never
parsed as mathtext, so a class named ``$x$`` or ``<script>`` is drawn as it is. Colours come from
the Okabe–Ito palette, which stays distinct under the common colour-vision deficiencies, and
every series also differs by marker, line style or hatch so colour is never the only cue.
"""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from auditcam.scoring import aggregates

# Okabe & Ito (2008), "Color Universal Design": blue, orange, green, pink, sky, vermillion, yellow, black
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")
MUTED = "#8c959f"
# the most groups one chart draws (the rest are named in its caption)
MAX_GROUPS = 20
MAX_SERIES = len(PALETTE)
MAX_SCATTER_POINTS = 4000
LABEL_CHARS = 28

RC = {
    "svg.fonttype": "path",  # glyphs as paths: the page needs no font, and fetches none
    "svg.hashsalt": "auditcam",  # stable element ids: the same result gives the same bytes
    "text.parse_math": False,  # data-borne labels are text, never mathtext
    "font.family": "DejaVu Sans",
    "font.size": 8.5,
    "axes.titlesize": 9.5,
    "axes.labelsize": 8.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#d8dee4",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.fontsize": 8,
}


@dataclass(frozen=True)
class Chart:
    """An embedded chart: ``uri`` (an SVG data URI), ``alt`` (what it shows, in words, with the
    numbers a screen-reader user needs) and ``caption`` (how to read it)."""

    key: str
    title: str
    uri: str
    alt: str
    caption: str


def new_figure(width: float, height: float) -> Figure:
    """A figure on an Agg canvas with a constrained layout (inches)."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def svg_data_uri(figure: Figure) -> str:
    """The figure as a ``data:image/svg+xml;base64,...`` URI (no date: the same chart, the same bytes)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": "auditcam"})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render(key: str, title: str, draw: Any, alt: str, caption: str, size: tuple[float, float]) -> Chart:
    """Draw ``draw(figure)`` under the report's style and embed it. A label with characters the
    bundled font lacks (CJK, emoji) is drawn with boxes: the tables carry the full text."""
    with matplotlib.rc_context(RC), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
        figure = new_figure(*size)
        draw(figure)
        uri = svg_data_uri(figure)
    return Chart(key=key, title=title, uri=uri, alt=alt, caption=caption)


def legend(ax: Any, **options: Any) -> None:
    """A legend, only when something on the axes has a label."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**options)


def short(label: Any, limit: int = LABEL_CHARS) -> str:
    """A group name short enough for an axis label (the tables carry the full name)."""
    text = str(label)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _valid(frame: pd.DataFrame) -> pd.DataFrame:
    ok = (frame["status"].astype(str) == "ok").to_numpy()
    shares = frame["subject_share"].to_numpy(dtype=float)
    return frame[ok & np.isfinite(shares)]


def _largest_groups(labels: pd.Series, limit: int) -> tuple[list[str], int]:
    """The ``limit`` most frequent labels (report order: by size, then name) and how many were left out."""
    counts = labels.astype(str).value_counts()
    ordered = sorted(counts.index, key=lambda g: (-counts[g], g))
    return ordered[:limit], max(0, len(ordered) - limit)


# -- subject_share distributions -------------------------------------------------------------


def share_distribution(frame: pd.DataFrame, attributes: Sequence[str]) -> Chart | None:
    """Histogram of subject_share over the valid samples, with the uniform-heatmap baseline
    (mean subject_area), and one panel per group attribute with a step histogram per group."""
    valid = _valid(frame)
    if valid.empty:
        return None
    shares = valid["subject_share"].to_numpy(dtype=float)
    baseline = float(np.nanmean(valid["subject_area"].to_numpy(dtype=float)))
    bins = np.linspace(0, 1, 26)
    shown = list(attributes)[:3]
    panels = 1 + len(shown)
    left_out: list[str] = []

    def draw(figure: Figure) -> None:
        axes = figure.subplots(1, panels, sharey=False, squeeze=False)[0]
        ax = axes[0]
        ax.hist(shares, bins=bins, color=PALETTE[0], edgecolor="white", linewidth=0.5)
        ax.axvline(float(np.mean(shares)), color=PALETTE[5], linestyle="-", linewidth=1.6, label="mean subject_share")
        ax.axvline(
            baseline, color="#000000", linestyle="--", linewidth=1.2, label="uniform heatmap (mean subject_area)"
        )
        ax.set(title=f"all valid samples (n = {len(shares)})", xlabel="subject_share", ylabel="samples", xlim=(0, 1))
        legend(ax, loc="upper right")
        for ax, attribute in zip(axes[1:], shown, strict=True):
            groups, hidden = _largest_groups(valid[attribute].astype("string").fillna("(missing)"), MAX_SERIES)
            if hidden:
                left_out.append(f"{attribute}: {hidden} smaller group(s) not drawn")
            labels = valid[attribute].astype("string").fillna("(missing)").astype(str)
            for i, group in enumerate(groups):
                values = shares[(labels == group).to_numpy()]
                ax.hist(
                    values,
                    bins=bins,
                    density=True,
                    histtype="step",
                    linewidth=1.6,
                    color=PALETTE[i % len(PALETTE)],
                    linestyle=LINESTYLES[i % len(LINESTYLES)],
                    label=f"{short(group)} (n = {len(values)})",
                )
            ax.set(title=f"per {short(attribute)}", xlabel="subject_share", ylabel="density", xlim=(0, 1))
            legend(ax, loc="upper right")

    means = []
    for attribute in shown:
        labels = valid[attribute].astype("string").fillna("(missing)").astype(str)
        per = valid.groupby(labels.to_numpy())["subject_share"].mean()
        means.append(f"{attribute}: " + ", ".join(f"{g} {v:.3f}" for g, v in per.items()))
    alt = (
        f"Histogram of subject_share over {len(shares)} valid samples: mean {np.mean(shares):.3f}, "
        f"median {np.median(shares):.3f}; a uniform heatmap would score {baseline:.3f}."
        + ("" if not means else " Group means — " + "; ".join(means) + ".")
    )
    caption = (
        "How much of each heatmap lies on the subject. Mass left of the dashed line (what a heatmap "
        "spread evenly over the image would score) means heat drawn to the background."
    )
    chart = render("share-distribution", "Distribution of subject_share", draw, alt, caption, (3.3 * panels + 0.6, 3.0))
    if left_out:
        chart = Chart(chart.key, chart.title, chart.uri, chart.alt, chart.caption + " " + "; ".join(left_out) + ".")
    return chart


# -- per-group estimates with intervals --------------------------------------------------------

BAR_STATISTICS = tuple(
    (name, aggregates()[name][1].label) for name in ("subject_share_mean", "background_reliant_rate", "accuracy")
)


def group_bars(
    dimension: str,
    groups: Mapping[str, Mapping[str, Any]],
    worst: str | None,
    min_group_size: int,
    confidence: float = 0.95,
) -> Chart | None:
    """Horizontal bars of the main statistics per group of one breakdown, with their CIs as error
    bars; the worst group (lowest mean subject_share) is hatched and named, groups with too little
    data are white, dotted and labelled."""
    names = list(groups)
    if not names:
        return None
    hidden = 0
    if len(names) > MAX_GROUPS:  # keep the lowest subject_share groups: those the reader must see
        share = {g: groups[g].get("subject_share_mean") for g in names}
        ranked = sorted(names, key=lambda g: (share[g] is None, share[g] or 0.0))
        keep = set(ranked[:MAX_GROUPS])
        hidden = len(names) - MAX_GROUPS
        names = [g for g in names if g in keep]
    level = f"{100 * confidence:g}%"

    def draw(figure: Figure) -> None:
        axes = figure.subplots(1, len(BAR_STATISTICS), sharey=True, squeeze=False)[0]
        labels = []
        for g in names:
            tag = " ◀ worst" if g == worst else ""
            tag = " (insufficient)" if "subject_share_mean" in groups[g].get("insufficient", ()) else tag
            labels.append(short(g) + tag)
        for ax, (statistic, title) in zip(axes, BAR_STATISTICS, strict=True):
            values = np.array([np.nan if groups[g].get(statistic) is None else groups[g][statistic] for g in names])
            scarce = np.array([statistic in groups[g].get("insufficient", ()) for g in names])
            is_worst = np.array([g == worst for g in names])
            styles = (
                (~scarce & ~is_worst, {"color": PALETTE[0], "edgecolor": "#1f2328"}),
                (~scarce & is_worst, {"color": PALETTE[5], "edgecolor": "#1f2328", "hatch": "///"}),
                (scarce, {"color": "#ffffff", "edgecolor": MUTED, "hatch": "..."}),
            )
            for rows, style in styles:
                rows = np.flatnonzero(rows & np.isfinite(values))
                if len(rows):
                    ax.barh(rows, values[rows], height=0.7, linewidth=0.6, **style)
            intervals = [(groups[g].get("ci") or {}).get(statistic) for g in names]
            rows = np.array([i for i, c in enumerate(intervals) if c and np.isfinite(values[i])], dtype=int)
            if len(rows):
                low = np.array([intervals[i][0] for i in rows])
                high = np.array([intervals[i][1] for i in rows])
                err = np.clip([values[rows] - low, high - values[rows]], 0, None)
                ax.errorbar(values[rows], rows, xerr=err, fmt="none", ecolor="#000000", elinewidth=1.0, capsize=2.5)
            for i in np.flatnonzero(~np.isfinite(values)):
                ax.text(0.01, i, "no data", va="center", fontsize=7.5, color=MUTED)
            ax.set(title=title, xlim=(0, 1))
            ax.set_yticks(np.arange(len(names)), labels)
            ax.grid(axis="y", visible=False)
        axes[0].set_ylim(len(names) - 0.5, -0.5)  # first group on top, as in the table

    parts = []
    for g in names:
        s = groups[g]
        interval = (s.get("ci") or {}).get("subject_share_mean")
        around = f" (CI {interval[0]:.3f}–{interval[1]:.3f})" if interval else ""
        value = s.get("subject_share_mean")
        parts.append(f"{g}: {'no data' if value is None else f'{value:.3f}'}{around}, n = {s.get('n')}")
    alt = (
        f"Bar chart per {dimension} of mean subject_share, background-reliant rate and accuracy with {level} "
        f"intervals. Mean subject_share — {'; '.join(parts)}." + (f" Worst group: {worst}." if worst else "")
    )
    caption = (
        f"Bars: estimates per {dimension}; whiskers: {level} bootstrap intervals. Hatched, marked ◀ worst: the "
        f"group with the lowest mean subject_share. White dotted bars: fewer than {min_group_size} samples."
    )
    if hidden:
        caption += f" {hidden} more group(s) with higher subject_share are in the table only."
    height = max(1.8, 0.9 + 0.28 * len(names))
    return render(f"bars-{dimension}", f"Per {dimension}", draw, alt, caption, (9.6, height))


# -- subject_share against subject_area -----------------------------------------------------------


def share_vs_area(frame: pd.DataFrame, reliance_threshold: float, seed: int = 0) -> Chart | None:
    """Scatter of subject_share against subject_area, correct and wrong predictions apart; below
    the line subject_share = threshold × subject_area a sample counts as background-reliant."""
    valid = _valid(frame)
    if valid.empty:
        return None
    n = len(valid)
    drawn = valid
    if n > MAX_SCATTER_POINTS:
        drawn = valid.sample(MAX_SCATTER_POINTS, random_state=seed)
    area = drawn["subject_area"].to_numpy(dtype=float)
    share = drawn["subject_share"].to_numpy(dtype=float)
    correct = drawn["correct"].fillna(False).astype(bool).to_numpy()
    below = float(np.mean(valid["background_reliant"].to_numpy(dtype=float) > 0))

    def draw(figure: Figure) -> None:
        ax = figure.subplots()
        right = min(1.0, max(0.05, 1.1 * float(np.nanmax(area))))
        xs = np.linspace(0, right, 50)
        ax.fill_between(xs, 0, np.clip(reliance_threshold * xs, 0, 1), color="#fbe3d6", linewidth=0, zorder=0)
        ax.plot(
            xs,
            np.clip(reliance_threshold * xs, 0, 1),
            color="#000000",
            linestyle="--",
            linewidth=1.1,
            label=f"focus_lift = {reliance_threshold:g}",
        )
        for mask, label, marker, colour in (
            (correct, "correct", "o", PALETTE[0]),
            (~correct, "wrong", "x", PALETTE[5]),
        ):
            ax.scatter(
                area[mask],
                share[mask],
                s=9,
                marker=marker,
                color=colour,
                alpha=0.55,
                linewidths=0.8,
                label=f"{label} ({int(mask.sum())})",
                rasterized=True,
            )
        ax.text(
            0.97,
            0.03,
            "background-reliant\n(below the line)",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=7.5,
            color="#1f2328",
        )
        ax.set(
            xlabel="subject_area (share of the image the subject covers)",
            ylabel="subject_share",
            xlim=(0, right),
            ylim=(0, 1),
        )
        legend(ax, loc="upper left")

    sampled = f" ({MAX_SCATTER_POINTS} of {n} drawn at random)" if n > MAX_SCATTER_POINTS else ""
    alt = (
        f"Scatter plot of subject_share against subject_area for {n} valid samples{sampled}; "
        f"{below:.1%} lie below the line focus_lift = {reliance_threshold:g} (background-reliant)."
    )
    caption = (
        "Each point is a sample. On the dashed line the heatmap is no more on the subject than a uniform one "
        "would be; points in the shaded area below it count as background-reliant. Circles: correct predictions, "
        "crosses: wrong ones." + sampled
    )
    return render("share-vs-area", "subject_share against subject_area", draw, alt, caption, (5.2, 3.9))


# -- accuracy against subject_share -------------------------------------------------------------


def _wilson(k: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of k successes in n trials (it holds k / n; clamped there against
    rounding, which at k = n left the upper end a hair below 1)."""
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return np.minimum(centre - half, p), np.maximum(centre + half, p)


def accuracy_vs_share(frame: pd.DataFrame, bins: int = 5, min_bin: int = 5) -> Chart | None:
    """Accuracy per subject_share quantile bin, for all predicted valid samples (with Wilson 95%
    intervals) and per class (the largest classes): does the model get it right when it looks?
    (A multi-label row is right when its label's decision is.)"""
    valid = _valid(frame)
    valid = valid[valid["correct"].notna()]
    if len(valid) < min_bin:
        return None
    shares = valid["subject_share"].to_numpy(dtype=float)
    correct = valid["correct"].fillna(False).astype(bool).to_numpy()
    edges = np.unique(np.quantile(shares, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        edges = np.array([shares.min(), shares.max() + 1e-9])
    which = np.clip(np.searchsorted(edges, shares, side="right") - 1, 0, len(edges) - 2)
    classes, hidden = _largest_groups(valid["label_name"].astype(str), MAX_SERIES - 1)
    label_names = valid["label_name"].astype(str).to_numpy()
    summary = []

    def series(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        xs, ks, ns = [], [], []
        for b in range(len(edges) - 1):
            in_bin = rows & (which == b)
            if in_bin.sum() >= min_bin:
                xs.append(float(np.median(shares[in_bin])))
                ks.append(float(correct[in_bin].sum()))
                ns.append(float(in_bin.sum()))
        return np.array(xs), np.array(ks), np.array(ns)

    def draw(figure: Figure) -> None:
        ax = figure.subplots()
        everyone = np.ones(len(valid), dtype=bool)
        xs, ks, ns = series(everyone)
        if len(xs):
            low, high = _wilson(ks, ns)
            accuracy = ks / ns
            ax.errorbar(
                xs,
                accuracy,
                yerr=[accuracy - low, high - accuracy],
                color="#000000",
                marker="o",
                linewidth=2.0,
                capsize=3,
                label="all classes",
                zorder=3,
            )
            summary.extend(f"{x:.2f}: {a:.0%}" for x, a in zip(xs, accuracy, strict=True))
        for i, name in enumerate(classes):
            xs, ks, ns = series(label_names == name)
            if len(xs):
                ax.plot(
                    xs,
                    ks / ns,
                    color=PALETTE[i % len(PALETTE)],
                    marker=MARKERS[i % len(MARKERS)],
                    linestyle=LINESTYLES[i % len(LINESTYLES)],
                    linewidth=1.2,
                    markersize=4.5,
                    label=short(name),
                )
        right = min(1.0, max(0.05, 1.1 * float(edges[-1])))
        ax.set(
            xlabel="subject_share (median of each quantile bin)", ylabel="accuracy", ylim=(-0.02, 1.02), xlim=(0, right)
        )
        legend(ax, loc="best", ncols=2)

    chart = render("accuracy-vs-share", "Accuracy against subject_share", draw, "", "", (5.2, 3.9))
    caption = (
        f"Samples split into {len(edges) - 1} equal-count bins of subject_share; accuracy per bin (black: all "
        f"classes, with Wilson 95% intervals; coloured: per class, bins of at least {min_bin} samples). A rising "
        "line: the model is right more often when it looks at the subject."
    )
    if hidden:
        caption += f" {hidden} smaller class(es) not drawn."
    alt = (
        "Line chart of accuracy against subject_share bins for all classes"
        + (": " + ", ".join(summary) if summary else "")
        + f"; one line per class for {', '.join(classes)}."
    )
    return Chart(chart.key, chart.title, chart.uri, alt, caption)


# -- comparison of two models -----------------------------------------------------------------


DELTA_STATISTICS = BAR_STATISTICS
CHANGE_STYLE = {  # marker, colour, filled
    "improved": ("^", PALETTE[2], True),
    "worsened": ("s", PALETTE[5], True),
    "no clear change": ("o", "#57606a", False),
    "insufficient data": ("o", MUTED, False),
}


def delta_forest(rows: Sequence[Mapping[str, Any]], confidence: float = 0.95) -> Chart | None:
    """Forest plot of B − A per slice (overall first, then each group) with paired-bootstrap CIs;
    the marker says whether the change is an improvement, a worsening or unclear."""
    slices = list(dict.fromkeys((r["dimension"], r["group"]) for r in rows))
    if not slices:
        return None
    hidden = max(0, len(slices) - MAX_GROUPS)
    slices = slices[:MAX_GROUPS]
    index = {(r["dimension"], r["group"], r["statistic"]): r for r in rows}
    labels = ["overall" if d == "overall" else f"{short(d, 14)}: {short(g, 18)}" for d, g in slices]
    level = f"{100 * confidence:g}%"

    def draw(figure: Figure) -> None:
        axes = figure.subplots(1, len(DELTA_STATISTICS), sharey=True, squeeze=False)[0]
        for ax, (statistic, title) in zip(axes, DELTA_STATISTICS, strict=True):
            ax.axvline(0, color="#000000", linewidth=0.9)
            for i, key in enumerate(slices):
                row = index.get((*key, statistic))
                if row is None or row["delta"] is None:
                    continue
                marker, colour, filled = CHANGE_STYLE.get(row["change"], CHANGE_STYLE["no clear change"])
                if row.get("delta_ci"):
                    low, high = row["delta_ci"]
                    ax.plot([low, high], [i, i], color=colour, linewidth=1.4)
                ax.plot(
                    row["delta"],
                    i,
                    marker=marker,
                    markersize=6,
                    color=colour,
                    markerfacecolor=colour if filled else "white",
                    linestyle="none",
                )
            ax.set_title(f"{title}: B − A")
            ax.set_yticks(np.arange(len(slices)), labels)
            ax.grid(axis="y", visible=False)
        axes[0].invert_yaxis()
        handles = [
            Line2D([], [], marker=m, color=c, markerfacecolor=c if f else "white", linestyle="none", label=name)
            for name, (m, c, f) in CHANGE_STYLE.items()
        ]
        figure.legend(handles=handles, loc="outside lower center", ncols=len(handles))

    parts = []
    for key in slices:
        row = index.get((*key, "subject_share_mean"))
        if row and row["delta"] is not None:
            ci = row.get("delta_ci")
            interval = f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""
            where = "overall" if key[0] == "overall" else f"{key[0]} {key[1]}"
            parts.append(f"{where}: {row['delta']:+.3f}{interval} {row['change']}")
    alt = f"Forest plot of the change from model A to model B with paired {level} intervals. Mean subject_share: "
    alt += "; ".join(parts) + "."
    caption = (
        "Each row: a slice of the data; the point is B − A, the line its paired-bootstrap interval. "
        "Triangles: improved (the interval excludes 0 in the good direction); squares: worsened; "
        "open circles: no clear change or too little data."
    )
    if hidden:
        caption += f" {hidden} more slice(s) are in the tables only."
    return render("delta-forest", "Change from A to B", draw, alt, caption, (9.6, 1.3 + 0.27 * len(slices)))


def share_distributions(frames: Mapping[str, pd.DataFrame]) -> Chart | None:
    """Step histograms of subject_share of two or more models on the same samples."""
    valid = {name: _valid(frame)["subject_share"].to_numpy(dtype=float) for name, frame in frames.items()}
    if not any(len(v) for v in valid.values()):
        return None
    bins = np.linspace(0, 1, 26)

    def draw(figure: Figure) -> None:
        ax = figure.subplots()
        for i, (name, shares) in enumerate(valid.items()):
            ax.hist(
                shares,
                bins=bins,
                histtype="step",
                linewidth=1.8,
                color=PALETTE[i % len(PALETTE)],
                linestyle=LINESTYLES[i % len(LINESTYLES)],
                label=f"{short(name)} (mean {np.mean(shares):.3f})",
            )
        ax.set(xlabel="subject_share", ylabel="samples", xlim=(0, 1))
        legend(ax, loc="upper right")

    alt = (
        "Histograms of subject_share per model: "
        + "; ".join(
            f"{name}: mean {np.mean(v):.3f}, median {np.median(v):.3f}, n = {len(v)}"
            for name, v in valid.items()
            if len(v)
        )
        + "."
    )
    caption = "subject_share of each model on the same samples: the curve further right looks more at the subject."
    return render("share-distributions", "subject_share of both models", draw, alt, caption, (5.2, 3.2))


TREND_STATISTICS = tuple(
    (name, aggregates()[name][1].label)
    for name in ("background_reliant_rate", "subject_share_mean", "border_share_mean", "accuracy")
)


def trend_lines(overall: Sequence[Mapping[str, Any]], steps: Sequence[int], confidence: float = 0.95) -> Chart | None:
    """One panel per key statistic: its overall estimate at each checkpoint's step, the CI as
    whiskers; ``overall[i]`` maps each statistic of checkpoint i to ``{value, ci, ...}``. A
    statistic no checkpoint measured (no subjects) says so in its panel."""
    if len(overall) < 2:
        return None
    level = f"{100 * confidence:g}%"
    x = np.asarray(steps, dtype=float)

    def series(statistic: str) -> tuple[np.ndarray, list[Any]]:
        entries = [checkpoint.get(statistic) or {} for checkpoint in overall]
        values = np.array([np.nan if e.get("value") is None else e["value"] for e in entries], dtype=float)
        return values, [e.get("ci") for e in entries]

    def draw(figure: Figure) -> None:
        axes = figure.subplots(1, len(TREND_STATISTICS), squeeze=False)[0]
        for k, (ax, (statistic, title)) in enumerate(zip(axes, TREND_STATISTICS, strict=True)):
            values, intervals = series(statistic)
            colour = PALETTE[k % len(PALETTE)]
            measured = np.isfinite(values)
            if not measured.any():
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", color=MUTED, transform=ax.transAxes)
            ax.plot(x[measured], values[measured], color=colour, marker=MARKERS[k], linestyle=LINESTYLES[k % 4])
            rows = [i for i, c in enumerate(intervals) if c and measured[i]]
            if rows:
                low = np.array([intervals[i][0] for i in rows])
                high = np.array([intervals[i][1] for i in rows])
                err = np.clip([values[rows] - low, high - values[rows]], 0, None)
                ax.errorbar(x[rows], values[rows], yerr=err, fmt="none", ecolor=colour, elinewidth=1.0, capsize=3)
            ax.set(title=title, xlabel="step")
            if aggregates()[statistic][0].style == "pct":  # a rate: on its whole scale
                ax.set_ylim(0, 1)
            ax.set_xticks(x, [str(step) for step in steps])

    parts = []
    for statistic, title in TREND_STATISTICS:
        values, intervals = series(statistic)
        points = [
            f"step {step}: "
            + ("not measured" if not np.isfinite(v) else f"{v:.3f}" + (f" [{c[0]:.3f}, {c[1]:.3f}]" if c else ""))
            for step, v, c in zip(steps, values, intervals, strict=True)
        ]
        parts.append(f"{title} — " + ", ".join(points))
    alt = f"Line charts of the overall estimates per checkpoint with {level} intervals. " + "; ".join(parts) + "."
    caption = (
        f"Each panel: one statistic over all samples at each checkpoint (by step); whiskers: {level} bootstrap "
        "intervals. Whether two checkpoints differ is read from the paired changes below, not from overlapping "
        "whiskers: the checkpoints share their samples."
    )
    return render("trend-lines", "Key statistics by checkpoint", draw, alt, caption, (9.6, 2.6))
