"""Draw docs/concepts.png, the README's figure of the idea: feature maps -> Grad-CAM -> subject_share.

Trains the demo's shortcut and clean tiny CNNs (seeded, about half a minute on two cores) and
shows, for one held-out image, the most active channels of the explained layer, the Grad-CAM
heatmap over the image with the subject outline, and the score it gets. Run from the repository
root: ``python docs/concepts.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import auditcam
from auditcam.demo import CLEAN_AGREEMENT, SHORTCUT_AGREEMENT
from auditcam.demo.models import PREPROCESSING, train
from auditcam.demo.synthetic import CLASSES, make_split
from auditcam.probes.featuremaps import capture, top_channels
from auditcam.report.figures import outline, overlay

OUT = Path(__file__).with_name("concepts.png")
SAMPLE = 7  # a held-out image whose background texture disagrees with its class
CHANNELS = 4


def _panels(model: torch.nn.Module, image: torch.Tensor, mask: torch.Tensor) -> dict[str, object]:
    """Feature maps, heatmap and scores of one image under one model."""
    batch = PREPROCESSING.normalise(image[None].float() / 255.0)
    with auditcam.Explainer(model) as explainer:
        explanation = explainer(batch)
    (maps,) = capture(model, batch, layers=[explanation.layer])
    activations = maps.activations[0]
    channels = [activations[c] for c in top_channels(activations, CHANNELS)]
    heat = explanation.normalised("gradcam")[0].numpy()
    scores = auditcam.score(explanation.maps["gradcam"], mask[None])
    return {
        "channels": channels,
        "heat": heat,
        "pred": CLASSES[int(explanation.targets[0])],
        "subject_share": float(scores["subject_share"][0]),
        "subject_area": float(scores["subject_area"][0]),
    }


def main() -> None:
    """Train both demo models, explain one image with each, write the figure."""
    models = {
        "shortcut model": train(*_training_data(SHORTCUT_AGREEMENT, seed=1), seed=0),
        "clean model": train(*_training_data(CLEAN_AGREEMENT, seed=2), seed=0),
    }
    test = make_split(16, agreement=CLEAN_AGREEMENT, seed=3)
    image, mask = test.images[SAMPLE], test.masks[SAMPLE]
    rgb = image.permute(1, 2, 0).numpy()
    figure = Figure(figsize=(9.6, 4.6), dpi=110)
    grid = figure.add_gridspec(len(models), 2 + CHANNELS // 2 + 1, wspace=0.08, hspace=0.35)
    for row, (name, model) in enumerate(models.items()):
        panels = _panels(model, image, mask.float())
        axis = figure.add_subplot(grid[row, 0])
        axis.imshow(outline(rgb, mask.numpy(), target=192))
        axis.set_title(f"image, subject outlined\n(a {CLASSES[int(test.labels[SAMPLE])]})", fontsize=8)
        cells = grid[row, 1 : 1 + CHANNELS // 2].subgridspec(2, CHANNELS // 2, wspace=0.05, hspace=0.05)
        for i, channel in enumerate(panels["channels"]):
            cell = figure.add_subplot(cells[i // 2, i % 2])
            cell.imshow(channel, cmap="gray")
            cell.set_xticks([])
            cell.set_yticks([])
        figure.text(
            grid[row, 1 : 1 + CHANNELS // 2].get_position(figure).x0,
            grid[row, 0].get_position(figure).y1 + 0.01,
            f"{name}: feature maps A (top {CHANNELS} channels)",
            fontsize=8,
        )
        axis_heat = figure.add_subplot(grid[row, 1 + CHANNELS // 2])
        axis_heat.imshow(overlay(rgb, panels["heat"], target=192, mask=mask.numpy()))
        axis_heat.set_title(f"Grad-CAM  Σ w_c A_c\n(predicts {panels['pred']})", fontsize=8)
        axis_text = figure.add_subplot(grid[row, 2 + CHANNELS // 2])
        share, area = panels["subject_share"], panels["subject_area"]
        verdict = "on the subject" if share >= area else "background-reliant"
        axis_text.text(
            0.0,
            0.5,
            f"subject_share = {share:.2f}\nsubject_area = {area:.2f}\nfocus_lift = {share / area:.2f}\n→ {verdict}",
            fontsize=9,
            va="center",
            family="monospace",
        )
        for ax in (axis, axis_heat, axis_text):
            ax.set_axis_off()
    FigureCanvasAgg(figure).print_png(OUT)
    print(f"wrote {OUT}")


def _training_data(agreement: dict[str, float], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of a demo training split with the given background agreement."""
    split = make_split(1500, agreement=agreement, seed=seed)
    return split.images, split.labels


if __name__ == "__main__":
    main()
