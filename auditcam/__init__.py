"""auditcam: audit PyTorch image classifiers for background bias and group unfairness.

Grad-CAM heatmaps of the final feature maps are compared with labelled subject masks over a
whole dataset, broken down per class and per group, gated by pass/fail checks and written up
as a self-contained HTML report.
"""

__version__ = "0.1.0"

from auditcam.audit import AuditResult, audit
from auditcam.cam import Explainer, Explanation, find_target_layer
from auditcam.config import Checks
from auditcam.data import LabelledDataset, open_dataset
from auditcam.errors import InputError
from auditcam.models import Preprocessing, load_model
from auditcam.scoring import score

__all__ = [
    "AuditResult",
    "Checks",
    "Explainer",
    "Explanation",
    "InputError",
    "LabelledDataset",
    "Preprocessing",
    "__version__",
    "audit",
    "find_target_layer",
    "load_model",
    "open_dataset",
    "score",
]
