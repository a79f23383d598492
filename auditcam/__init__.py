"""auditcam: audit PyTorch image classifiers for background bias and group unfairness.

Grad-CAM heatmaps of the final feature maps are compared with labelled subject masks over a
whole dataset, broken down per class and per group, gated by pass/fail checks and written up
as a self-contained HTML report.
"""

from auditcam import report  # noqa: F401  (registers report.html and junit.xml, the views of a bundle)
from auditcam.audit import audit
from auditcam.cam import Explainer, Explanation, find_target_layer
from auditcam.config import AnalysisOptions, AuditSettings, Checks, GroupGap, load_config
from auditcam.data import LabelledDataset, open_dataset
from auditcam.errors import InputError
from auditcam.integrations.monitor import Monitor
from auditcam.models import Preprocessing, load_model
from auditcam.probes.counterfactual import CounterfactualOptions
from auditcam.probes.sanity import SanityOptions
from auditcam.result import AuditResult, Comparison, Trend, compare
from auditcam.scoring import score
from auditcam.stats.analysis import Analysis, analyse
from auditcam.trend import trend
from auditcam.version import __version__

__all__ = [
    "Analysis",
    "AnalysisOptions",
    "AuditResult",
    "AuditSettings",
    "Checks",
    "Comparison",
    "CounterfactualOptions",
    "Explainer",
    "Explanation",
    "GroupGap",
    "InputError",
    "LabelledDataset",
    "Monitor",
    "Preprocessing",
    "SanityOptions",
    "Trend",
    "__version__",
    "analyse",
    "audit",
    "compare",
    "find_target_layer",
    "load_config",
    "load_model",
    "open_dataset",
    "score",
    "trend",
]
