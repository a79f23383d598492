"""CAM-family explanations computed from a classifier's feature maps."""

from auditcam.cam.captum import CaptumMethod
from auditcam.cam.engine import UPSAMPLING, Explainer, Explanation, HeadOnlyFallbackWarning
from auditcam.cam.layers import find_target_layer, preserved
from auditcam.cam.methods import FORWARD_METHODS, METHOD_NAMES, METHODS

__all__ = [
    "FORWARD_METHODS",
    "METHODS",
    "METHOD_NAMES",
    "UPSAMPLING",
    "CaptumMethod",
    "Explainer",
    "Explanation",
    "HeadOnlyFallbackWarning",
    "find_target_layer",
    "preserved",
]
