"""Grad-CAM-family explanations computed from a classifier's final feature maps."""

from auditcam.cam.engine import UPSAMPLING, Explainer, Explanation
from auditcam.cam.layers import find_target_layer, preserved
from auditcam.cam.methods import METHODS

__all__ = ["METHODS", "UPSAMPLING", "Explainer", "Explanation", "find_target_layer", "preserved"]
