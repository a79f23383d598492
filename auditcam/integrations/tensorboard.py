"""Log an audit to TensorBoard event files: the metrics of :mod:`auditcam.integrations.scalars`
as scalars at the audit's step (of a trend: each checkpoint's at its step), the gallery's
heatmap overlays and each class's mean heatmap as images."""

from __future__ import annotations

import numpy as np

from auditcam.integrations.scalars import metric_name
from auditcam.integrations.targets import Logged
from auditcam.report.figures import heat_colours, overlay


def log_audit(logged: Logged, logdir: str) -> None:
    """Append the audit's scalars and images to the event files in ``logdir``."""
    from torch.utils.tensorboard import SummaryWriter

    step = logged.step or 0
    writer = SummaryWriter(log_dir=logdir)
    try:
        for at, scalars in logged.scalars():
            for name, value in scalars.items():
                writer.add_scalar(name, value, global_step=at)
        for end, exemplars in logged.exemplars.items():
            for rank, exemplar in enumerate(exemplars):  # tags by rank: one series per place in the gallery
                picture = overlay(exemplar.image, exemplar.heatmap, mask=exemplar.mask)
                tag = metric_name("gallery", end, f"{rank:02d}")
                writer.add_image(tag, picture, global_step=step, dataformats="HWC")
        for cls, heatmap in logged.class_heatmaps.items():
            peak = float(np.nanmax(heatmap)) if heatmap.size else 0.0
            scaled = heatmap / peak if peak > 0 else heatmap
            tag = metric_name("mean_heatmap", cls)
            writer.add_image(tag, heat_colours(scaled), global_step=step, dataformats="HWC")
    finally:
        writer.close()
